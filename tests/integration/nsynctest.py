"""Harness for the nsyncfs integration tests: real nsyncfs processes on
127.0.0.1, one BACKING and one MOUNTPOINT per node, and the helpers the tests
share (bounded polling, file trees, HTTP).

Nothing here sleeps for a fixed time: every wait polls a predicate with a
deadline and fails with a message that says what it was waiting for.
"""
import errno
import hashlib
import http.client
import json
import os
import random
import signal
import socket
import ssl
import stat
import subprocess
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# NSYNCFS_BIN overrides the binary under test (e.g. another build directory).
BINARY = Path(os.environ.get("NSYNCFS_BIN") or REPO / "build" / "nsyncfs").resolve()
HOST = "127.0.0.1"
DATA_DIR = ".nsyncfs"

POLL_S = 0.005            # how often wait_for polls
READY_TIMEOUT = 30.0      # mount up + a leader agreed by every running node
SYNC_TIMEOUT = 20.0       # a change reaches every node
STOP_TIMEOUT = 20.0       # fusermount3 -u until the process has exited
LOG_TAIL_LINES = 80

# Every cluster alive right now (conftest attaches their logs to failures and
# its watchdog kills them when a test overruns).
ACTIVE = []
_ACTIVE_LOCK = threading.Lock()


class WaitTimeout(AssertionError):
    pass


class NodeDied(AssertionError):
    """A node's process exited while we waited on it: fail at once."""


def wait_for(pred, timeout, what, interval=POLL_S):
    """Poll pred() every `interval` s until it returns something truthy, and
    return that. After `timeout` s raise WaitTimeout naming `what` (and the
    last exception pred raised, if any)."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = pred()
            if v:
                return v
            last_exc = None
        except NodeDied:
            raise
        except Exception as e:  # noqa: BLE001 - reported on timeout
            last_exc = e
        if time.monotonic() >= deadline:
            msg = f"timed out after {timeout:.1f} s waiting for {what}"
            if last_exc is not None:
                msg += f" (last error: {last_exc!r})"
            raise WaitTimeout(msg)
        time.sleep(interval)


# ---------------------------------------------------------------- ports

_handed_out = set()
_ports_lock = threading.Lock()


def _ephemeral_range():
    try:
        lo, hi = open("/proc/sys/net/ipv4/ip_local_port_range").read().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def _bindable(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((HOST, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def free_ports(n):
    """n distinct TCP ports that are free on 127.0.0.1 now and were not handed
    out before in this session.

    Ports are verified by binding them. They are taken below the kernel's
    ephemeral range when possible: the nodes' own outgoing connections get
    ephemeral local ports, and one of those could otherwise occupy the port of
    a node that is being restarted. If that range is exhausted, fall back to
    binding port 0 (the kernel's choice)."""
    out = []
    with _ports_lock:
        lo_eph, _ = _ephemeral_range()
        lo, hi = 20000, min(lo_eph, 32768) - 1
        rnd = random.Random(os.getpid() ^ int(time.monotonic_ns()))
        tries = 0
        while len(out) < n and hi > lo and tries < 2000:
            tries += 1
            p = rnd.randint(lo, hi)
            if p in _handed_out or p in out or not _bindable(p):
                continue
            out.append(p)
        socks = []
        try:
            while len(out) < n:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.bind((HOST, 0))
                socks.append(s)  # keep bound so the kernel does not repeat it
                p = s.getsockname()[1]
                if p not in _handed_out and p not in out:
                    out.append(p)
        finally:
            for s in socks:
                s.close()
        _handed_out.update(out)
    return out


# ---------------------------------------------------------------- files

def read_bytes(path):
    """The file's bytes, or None if it cannot be read (absent, a directory,
    a stale mount...)."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def write_file(path, data, mode="wb"):
    with open(path, mode) as f:
        f.write(data)


def sha256_file(path):
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while True:
                b = f.read(1 << 20)
                if not b:
                    break
                h.update(b)
    except OSError:
        return None
    return h.hexdigest()


def exists(path):
    return os.path.lexists(path)


def tree(root, modes=False, skip_data_dir=True):
    """A comparable picture of the tree under root: {relpath: entry}, where
    entry is ("file", sha256[, mode]), ("dir"[, mode]), ("link", target) or,
    for a fifo, socket or device, ("node", file type, rdev[, mode, uid, gid]).
    The top-level .nsyncfs is skipped (it is per node)."""
    root = str(root)
    out = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir == ".":
            rel_dir = ""
            if skip_data_dir and DATA_DIR in dirnames:
                dirnames.remove(DATA_DIR)
            if skip_data_dir and DATA_DIR in filenames:
                filenames.remove(DATA_DIR)
        for name in sorted(dirnames + filenames):
            rel = os.path.join(rel_dir, name) if rel_dir else name
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", oct(stat.S_IMODE(st.st_mode))) if modes else ("dir",)
            elif stat.S_ISREG(st.st_mode):
                e = ("file", sha256_file(p))
                out[rel] = e + (oct(stat.S_IMODE(st.st_mode)),) if modes else e
            else:
                e = ("node", stat.S_IFMT(st.st_mode), st.st_rdev)
                out[rel] = e + (oct(stat.S_IMODE(st.st_mode)), st.st_uid, st.st_gid) if modes else e
        # os.walk lists symlinks to directories among dirnames but does not
        # descend into them (followlinks=False), which is what we want.
    return out


def tree_diff(a, b, limit=10):
    keys = sorted(set(a) | set(b))
    diffs = [f"{k}: {a.get(k)} != {b.get(k)}" for k in keys if a.get(k) != b.get(k)]
    more = f" (+{len(diffs) - limit} more)" if len(diffs) > limit else ""
    return "; ".join(diffs[:limit]) + more


# ---------------------------------------------------------------- HTTP

def tls_context(secret=None):
    """A TLS client context for a node run with --secret-file: the server is
    not checked (tests talk to their own nodes); with secret (the file), our
    client certificate is the cluster's."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if secret:
        ctx.load_cert_chain(str(secret))
    return ctx


def _http_conn(host, port, timeout, tls):
    if tls is None:
        return http.client.HTTPConnection(host, port, timeout=timeout)
    return http.client.HTTPSConnection(host, port, timeout=timeout, context=tls)


def http_get(port, target, timeout=5.0, host=HOST, tls=None):
    """(status, body bytes) of GET target (sent as given, not re-quoted).
    tls: an ssl context (tls_context) for a node with a secret."""
    conn = _http_conn(host, port, timeout, tls)
    try:
        conn.request("GET", target)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def http_post(port, target, body, timeout=5.0, host=HOST, headers=None, tls=None):
    conn = _http_conn(host, port, timeout, tls)
    try:
        conn.request("POST", target, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def fusermount_u(mnt, lazy=False, timeout=15):
    cmd = ["fusermount3", "-u"] + (["-z"] if lazy else []) + [str(mnt)]
    try:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=timeout, check=False)
        return r.returncode, r.stdout.decode(errors="replace").strip()
    except subprocess.TimeoutExpired:
        return -1, "fusermount3 timed out"


def is_mounted(mnt):
    """True if mnt is a mount point in /proc/self/mountinfo (also when it is
    stale, where os.path.ismount says False)."""
    mnt = os.path.abspath(str(mnt))
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split(" ")
                if len(fields) > 4 and _unescape(fields[4]) == mnt:
                    return True
    except OSError:
        pass
    return False


def _unescape(s):
    return (s.replace("\\040", " ").replace("\\011", "\t")
            .replace("\\012", "\n").replace("\\134", "\\"))


def _is_stale(mnt):
    try:
        os.stat(mnt)
        return False
    except OSError as e:
        return e.errno == errno.ENOTCONN


# ---------------------------------------------------------------- nodes

def fmt_addr(host, *ports):
    """host:port[:port] as nsyncfs spells it: an IPv6 host in brackets."""
    h = f"[{host}]" if ":" in host else host
    return ":".join([h] + [str(p) for p in ports])


class Node:
    def __init__(self, cluster, idx, base, cport, fport, host=HOST, advertise=None):
        self.cluster = cluster
        self.idx = idx
        self.host = host                # --host: listened on
        self.advertise = advertise      # --advertise, or None: known by host
        self.reach = advertise or host  # where the others (and the tests) reach it
        self.backing = base / f"b{idx}"
        self.mnt = base / f"m{idx}"
        self.log_path = base / f"node{idx}.log"
        self.cport = cport
        self.fport = fport
        self.proc = None
        self.starts = 0
        self.backing.mkdir(parents=True, exist_ok=True)
        self.mnt.mkdir(parents=True, exist_ok=True)

    def __repr__(self):
        return f"<node {self.idx} {fmt_addr(self.reach, self.cport)}/{self.fport} {self.mnt}>"

    @property
    def addr(self):
        return fmt_addr(self.reach, self.cport, self.fport)

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def command(self):
        return [str(BINARY), str(self.backing), str(self.mnt),
                "--host", self.host, "--cluster-port", str(self.cport),
                "--file-server-port", str(self.fport),
                "--cluster", self.cluster.cluster_arg(),
                "-f", "--log-level", self.cluster.log_level] + \
            (["--advertise", self.advertise] if self.advertise else []) + list(self.cluster.extra_args)

    def spawn(self):
        assert not self.running, f"node {self.idx} is already running"
        self.starts += 1
        cmd = self.command()
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== [harness] start #{self.starts} of node {self.idx}: "
                      f"{' '.join(cmd)}\n".encode())
            log.flush()
            hook = self.cluster.spawn_hook
            extra = self.cluster.env_hook(self.idx) if self.cluster.env_hook else None
            env = dict(os.environ, **extra) if extra else None
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=hook(self.idx) if hook else None, env=env)

    def mounted(self):
        """The mount is up and answers (lstat through it works)."""
        return os.path.ismount(self.mnt)

    def try_status(self, timeout=1.0):
        try:
            code, body = http_get(self.fport, "/v1/status", timeout=timeout, host=self.reach,
                                  tls=self.cluster.tls)
            if code != 200:
                return None
            return json.loads(body)
        except (OSError, ValueError, http.client.HTTPException):
            return None

    def status(self, timeout=2.0):
        """GET /v1/status as a dict; raises if the node does not answer."""
        code, body = http_get(self.fport, "/v1/status", timeout=timeout, host=self.reach,
                              tls=self.cluster.tls)
        assert code == 200, f"node {self.idx}: /v1/status answered {code}: {body[:200]!r}"
        return json.loads(body)

    def path(self, rel):
        return self.mnt / rel

    def bpath(self, rel):
        return self.backing / rel

    def log_tail(self, n=LOG_TAIL_LINES):
        try:
            lines = self.log_path.read_bytes().decode(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:])

    def check_alive(self):
        if self.proc is not None and self.proc.poll() is not None:
            raise NodeDied(
                f"node {self.idx} exited with code {self.proc.returncode}; log tail:\n"
                + self.log_tail(30))


def _node_id_str(v):
    if v is None:
        return ""
    return str(v).strip()


def _no_leader(lid):
    return lid in ("", "0", "none", "null", "None") or set(lid) == {"0"}


class Cluster:
    """n nsyncfs nodes on 127.0.0.1 under `base` (b<i>/ BACKING, m<i>/ mount,
    node<i>.log). Not started by the constructor: call start_all().
    host: what every node listens on (--host); advertise: idx -> the address
    node idx is known by (--advertise), or None."""

    def __init__(self, base, n=3, extra_args=(), log_level="debug", name="cluster", host=HOST,
                 advertise=None):
        self.base = Path(base)
        self.base.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.extra_args = list(extra_args)
        # With --secret-file the nodes speak TLS; /v1/status needs no certificate.
        self.tls = tls_context() if "--secret-file" in self.extra_args else None
        self.log_level = log_level
        self.spawn_hook = None      # idx -> preexec function (netcut.NetCut)
        self.env_hook = None        # idx -> extra environment variables (dict) or None
        self.teardown_hooks = []    # called at the end of teardown, always
        ports = free_ports(2 * n)
        self.nodes = [Node(self, i, self.base, ports[2 * i], ports[2 * i + 1], host=host,
                           advertise=advertise(i) if advertise else None) for i in range(n)]
        with _ACTIVE_LOCK:
            ACTIVE.append(self)

    def __len__(self):
        return len(self.nodes)

    def node(self, i):
        return self.nodes[i]

    def cluster_arg(self):
        return ",".join(nd.addr for nd in self.nodes)

    def running_idx(self):
        return [nd.idx for nd in self.nodes if nd.running]

    # ------------------------------------------------------------ start/stop

    def start_all(self, timeout=READY_TIMEOUT):
        for nd in self.nodes:
            nd.spawn()
        self.wait_ready(timeout=timeout)
        return self

    def start(self, i, wait=True, timeout=READY_TIMEOUT):
        """Start node i again with the same command line; by default wait until
        it is mounted and agrees with the others on a leader."""
        self.nodes[i].spawn()
        if wait:
            self.wait_ready(timeout=timeout)

    def stop(self, i, timeout=STOP_TIMEOUT, check=True):
        """Leave cleanly: fusermount3 -u, then wait for the process to exit.
        Falls back to SIGKILL and a lazy unmount; with check=True that
        fallback, or a non-zero exit, fails the test."""
        nd = self.nodes[i]
        problems = []
        deadline = time.monotonic() + timeout
        if nd.running or is_mounted(nd.mnt):
            last = None
            while is_mounted(nd.mnt) and time.monotonic() < deadline:
                rc, out = fusermount_u(nd.mnt, timeout=max(1.0, deadline - time.monotonic()))
                if rc == 0:
                    break
                last = out
                time.sleep(0.05)  # EBUSY: a file is still open; retry until the deadline
            if is_mounted(nd.mnt):
                problems.append(f"fusermount3 -u {nd.mnt} kept failing: {last}")
        if nd.proc is not None:
            try:
                nd.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                if nd.proc.returncode != 0:
                    problems.append(f"node {i} exited with code {nd.proc.returncode} after unmount")
            except subprocess.TimeoutExpired:
                problems.append(f"node {i} did not exit within {timeout:.0f} s of fusermount3 -u")
                self._kill(nd)
        if is_mounted(nd.mnt):
            fusermount_u(nd.mnt, lazy=True)
        if check and problems:
            raise AssertionError("; ".join(problems) + "\nlog tail:\n" + nd.log_tail(40))
        return nd.proc.returncode if nd.proc is not None else None

    def kill9(self, i, clear_mount=True):
        """Crash node i (SIGKILL). With clear_mount, lazily unmount the stale
        mount it leaves behind; without, leave it for the next start."""
        nd = self.nodes[i]
        self._kill(nd)
        if clear_mount:
            wait_for(lambda: _clear_mount(nd.mnt), 10, f"clearing node {i}'s stale mount")

    def _kill(self, nd):
        if nd.proc is None:
            return
        if nd.proc.poll() is None:
            try:
                os.killpg(nd.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                nd.proc.kill()
            except ProcessLookupError:
                pass
        try:
            nd.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def kill_all_now(self):
        """Watchdog: SIGKILL every node (in-flight FUSE calls fail with
        ENOTCONN instead of hanging the test)."""
        for nd in self.nodes:
            if nd.running:
                try:
                    os.killpg(nd.proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass

    def teardown(self):
        """Always leaves nothing behind: every process gone, every mount gone."""
        try:
            for nd in self.nodes:
                if nd.running and is_mounted(nd.mnt):
                    fusermount_u(nd.mnt, timeout=5)
            for nd in self.nodes:
                if nd.proc is not None and nd.proc.poll() is None:
                    try:
                        nd.proc.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        pass
                self._kill(nd)
                if is_mounted(nd.mnt) or _is_stale(nd.mnt):
                    fusermount_u(nd.mnt, lazy=True)
        finally:
            for hook in self.teardown_hooks:
                hook()
            with _ACTIVE_LOCK:
                if self in ACTIVE:
                    ACTIVE.remove(self)

    # ------------------------------------------------------------ readiness

    def leader_view(self, idxs=None):
        """Index of the leader if every node in idxs (default: the running
        ones) answers /v1/status, all name the same leader, and exactly one
        of them says role == "leader" and is that node. Else None."""
        idxs = self.running_idx() if idxs is None else list(idxs)
        if not idxs:
            return None
        views = {}
        for i in idxs:
            st = self.nodes[i].try_status()
            if not isinstance(st, dict):
                return None
            views[i] = st
        leaders = {_node_id_str(st.get("leader")) for st in views.values()}
        if len(leaders) != 1:
            return None
        lid = leaders.pop()
        if _no_leader(lid):
            return None
        lead = [i for i, st in views.items() if st.get("role") == "leader"]
        if len(lead) != 1:
            return None
        own = views[lead[0]].get("node")
        if own is not None and _node_id_str(own) != lid:
            return None
        return lead[0]

    def wait_ready(self, idxs=None, timeout=READY_TIMEOUT):
        """Every node in idxs (default: the running ones) is mounted, and they
        agree on a leader. Returns the leader's index."""
        idxs = self.running_idx() if idxs is None else list(idxs)

        def mounted():
            for i in idxs:
                self.nodes[i].check_alive()
            return all(self.nodes[i].mounted() for i in idxs)

        deadline = time.monotonic() + timeout
        wait_for(mounted, timeout, f"the mounts of nodes {idxs}")

        def agreed():
            for i in idxs:
                self.nodes[i].check_alive()
            return self.leader_view(idxs) is not None

        try:
            wait_for(agreed, max(0.5, deadline - time.monotonic()),
                     f"nodes {idxs} to agree on a leader (/v1/status)")
        except WaitTimeout as e:
            seen = "; ".join(f"node {i}: {str(self.nodes[i].try_status())[:300]}" for i in idxs)
            raise WaitTimeout(f"{e}; last statuses: {seen}") from None
        return self.leader_view(idxs)

    def leader(self, timeout=READY_TIMEOUT):
        try:
            # Wrapped in a tuple: node 0 is a leader too, but 0 is falsy.
            return wait_for(lambda: (lambda v: v is not None and (v,))(self.leader_view()),
                            timeout, "a leader")[0]
        except WaitTimeout as e:
            seen = "; ".join(f"node {i}: {str(self.nodes[i].try_status())[:300]}"
                             for i in self.running_idx())
            raise WaitTimeout(f"{e}; last statuses: {seen}") from None

    def follower(self, timeout=READY_TIMEOUT):
        lead = self.leader(timeout)
        return next(nd.idx for nd in self.nodes if nd.running and nd.idx != lead)

    # ------------------------------------------------------------ convergence

    def wait_file(self, rel, data, idxs=None, timeout=SYNC_TIMEOUT, backing=True,
                  interval=POLL_S):
        """rel has exactly `data` on every node's mount (and BACKING)."""
        idxs = self.running_idx() if idxs is None else list(idxs)
        last = {}

        def ok():
            for i in idxs:
                self.nodes[i].check_alive()
            for i in idxs:
                nd = self.nodes[i]
                places = [(nd.path(rel), "mount")] + ([(nd.bpath(rel), "backing")] if backing else [])
                for p, what in places:
                    got = read_bytes(p)
                    if got != data:
                        last["diff"] = (f"node {i} {what}: " +
                                        ("absent/unreadable" if got is None else
                                         f"{len(got)} bytes, sha256 {hashlib.sha256(got).hexdigest()[:16]}"))
                        return False
            return True

        try:
            wait_for(ok, timeout, f"{rel!r} ({len(data)} bytes, sha256 "
                     f"{hashlib.sha256(data).hexdigest()[:16]}) identical on nodes {idxs}",
                     interval=interval)
        except WaitTimeout as e:
            raise WaitTimeout(f"{e}; last seen: {last.get('diff')}") from None

    def wait_gone(self, rel, idxs=None, timeout=SYNC_TIMEOUT, backing=True):
        idxs = self.running_idx() if idxs is None else list(idxs)

        def ok():
            for i in idxs:
                self.nodes[i].check_alive()
            for i in idxs:
                nd = self.nodes[i]
                if exists(nd.path(rel)) or (backing and exists(nd.bpath(rel))):
                    return False
            return True

        wait_for(ok, timeout, f"{rel!r} gone on nodes {idxs}")

    def wait_trees_equal(self, idxs=None, timeout=SYNC_TIMEOUT, modes=False, sub="",
                         interval=0.02):
        """Every node's mount (and BACKING) under `sub` shows the same tree.
        Returns that tree."""
        idxs = self.running_idx() if idxs is None else list(idxs)
        last = {}

        def ok():
            for i in idxs:
                self.nodes[i].check_alive()
            if sub:
                for i in idxs:
                    for root in (self.nodes[i].mnt, self.nodes[i].backing):
                        if not os.path.isdir(root / sub):
                            last["diff"] = f"node {i}: {root / sub} is not a directory"
                            return False
            ref = tree(self.nodes[idxs[0]].mnt / sub, modes=modes)
            last["ref"] = ref
            for i in idxs:
                nd = self.nodes[i]
                for root, what in ((nd.mnt, "mount"), (nd.backing, "backing")):
                    t = tree(root / sub, modes=modes)
                    if t != ref:
                        last["diff"] = f"node {i} {what} vs node {idxs[0]} mount: {tree_diff(t, ref)}"
                        return False
            return True

        try:
            wait_for(ok, timeout, f"identical trees under {sub or '/'} on nodes {idxs}",
                     interval=interval)
        except WaitTimeout as e:
            raise WaitTimeout(f"{e}; last difference: {last.get('diff')}") from None
        return last["ref"]


def _clear_mount(mnt):
    if is_mounted(mnt) or _is_stale(mnt):
        fusermount_u(mnt, lazy=True)
    return not is_mounted(mnt) and not _is_stale(mnt)


def logs_report(clusters=None):
    """Log tails of every node of the given (default: active) clusters."""
    with _ACTIVE_LOCK:
        cl = list(ACTIVE if clusters is None else clusters)
    parts = []
    for c in cl:
        for nd in c.nodes:
            state = ("running" if nd.running else
                     f"exited {nd.proc.returncode}" if nd.proc is not None else "never started")
            parts.append(f"----- {c.name} node {nd.idx} ({nd.addr}, {state}) {nd.log_path} -----\n"
                         + nd.log_tail())
    return "\n".join(parts)
