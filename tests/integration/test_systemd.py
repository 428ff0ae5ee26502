"""systemd integration (issue 17): the readiness protocol on a real AF_UNIX
datagram socket that the test opens and hands over as $NOTIFY_SOCKET (a path
and an abstract name), started the way the shipped unit starts a node
(--config FILE -f, stopped by SIGTERM), and the unit file itself."""
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from nsynctest import HOST, free_ports, fusermount_u, is_mounted, wait_for

REPO = Path(__file__).resolve().parents[2]


class NotifySocket:
    """A datagram socket like systemd's: bound at a path or an abstract name."""

    def __init__(self, name):
        self.name = name
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + name[1:] if name.startswith("@") else name)
        self.messages = []

    def wait(self, pred, timeout, what):
        """Read datagrams until one satisfies pred; return its fields."""
        deadline = time.monotonic() + timeout
        while True:
            for m in self.messages:
                if pred(m):
                    return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no datagram with {what} within {timeout} s; "
                                     f"got {self.messages!r}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            fields = {}
            for line in data.decode().split("\n"):
                if "=" in line:
                    k, v = line.split("=", 1)
                    fields[k] = v
            self.messages.append(fields)

    def close(self):
        self.sock.close()
        if not self.name.startswith("@"):
            try:
                os.unlink(self.name)
            except FileNotFoundError:
                pass


@pytest.fixture
def sockets(tmp_path):
    made = []

    def make(name):
        s = NotifySocket(name)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def test_ready_status_stopping_on_three_nodes(cluster_factory, sockets, tmp_path):
    """Node 0 gets a socket at a path, node 1 an abstract one, node 2 none
    (it must serve all the same)."""
    path_sock = sockets(str(tmp_path / "notify0.sock"))
    abstract = sockets(f"@nsyncfs-test-{os.getpid()}-{time.monotonic_ns()}")
    env = {0: {"NOTIFY_SOCKET": path_sock.name}, 1: {"NOTIFY_SOCKET": abstract.name}}
    c = cluster_factory(3, name="notify", env=lambda i: env.get(i))
    for i, s in ((0, path_sock), (1, abstract)):
        nd = c.node(i)
        first = s.wait(lambda m: "STATUS" in m, 10, "a STATUS")
        assert first["STATUS"].startswith("starting"), s.messages
        ready = s.wait(lambda m: m.get("READY") == "1", 30, "READY=1")
        assert ready.get("MAINPID") == str(nd.proc.pid), ready
        # STATUS before READY: the start-up; after it, the role and the state
        assert s.messages.index(first) < s.messages.index(ready)
        assert is_mounted(nd.mnt), "READY=1 came before the mount served"
        st = s.wait(lambda m: "STATUS" in m and s.messages.index(m) > s.messages.index(ready)
                    and ("leader" in m["STATUS"] or "follower" in m["STATUS"]), 10,
                    "a STATUS with the role after READY")
        assert "in sync" in st["STATUS"] or "catching up" in st["STATUS"], st
    c.stop(1)
    abstract.wait(lambda m: m.get("STOPPING") == "1", 10, "STOPPING=1")
    assert not any(m.get("STOPPING") for m in path_sock.messages), \
        "node 0 said STOPPING without being stopped"


def test_started_like_the_unit(tmp_path, binary, sockets):
    """ExecStart=nsyncfs --config FILE -f with backing= and mountpoint= in the
    file; systemd stops it with SIGTERM: STOPPING=1, exit 0, unmounted."""
    b, m = tmp_path / "b", tmp_path / "m"
    b.mkdir()
    m.mkdir()
    cp, fp = free_ports(2)
    conf = tmp_path / "demo.conf"
    conf.write_text(f"# as in /etc/nsyncfs/demo.conf\nbacking = {b}\nmountpoint = {m}\n"
                    f"host = {HOST}\ncluster_port = {cp}\nfile_server_port = {fp}\n"
                    f"cluster = {HOST}:{cp}:{fp}\n")
    s = sockets(str(tmp_path / "notify.sock"))
    log = open(tmp_path / "node.log", "wb")
    p = subprocess.Popen([str(binary), "--config", str(conf), "-f"], stdin=subprocess.DEVNULL,
                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                         env=dict(os.environ, NOTIFY_SOCKET=s.name))
    try:
        ready = s.wait(lambda msg: msg.get("READY") == "1", 30, "READY=1")
        assert ready.get("MAINPID") == str(p.pid)
        assert is_mounted(m)
        p.send_signal(signal.SIGTERM)
        s.wait(lambda msg: msg.get("STOPPING") == "1", 10, "STOPPING=1")
        assert p.wait(timeout=20) == 0, (tmp_path / "node.log").read_text()
        assert not is_mounted(m)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        if is_mounted(m):
            fusermount_u(m, lazy=True)
        log.close()


def test_unit_file():
    """The shipped unit says what the issue asks, and systemd accepts it."""
    text = (REPO / "systemd" / "nsyncfs@.service.in").read_text()
    keys = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            keys.setdefault(k.strip(), v.strip())
    assert keys["Type"] == "notify"
    assert keys["After"] == "network-online.target" and keys["Wants"] == "network-online.target"
    assert keys["Restart"] == "on-failure"
    assert "--config /etc/nsyncfs/%i.conf" in keys["ExecStart"] and " -f" in keys["ExecStart"]
    unit = REPO / "build" / "nsyncfs@.service"
    assert unit.exists(), "cmake generates build/nsyncfs@.service from the template"
    analyze = subprocess.run(["systemd-analyze", "--version"], capture_output=True)
    if analyze.returncode != 0:
        pytest.skip("systemd-analyze does not run here")
    # verify wants the ExecStart binary and the man page installed: check a
    # copy that names this build's binary and no Documentation= (the man page
    # has a test of its own).
    copy = Path("/tmp") / f"nsyncfs-verify-{os.getpid()}@.service"
    lines = []
    for line in unit.read_text().splitlines():
        if line.startswith("ExecStart="):
            line = f"ExecStart={REPO / 'build' / 'nsyncfs'} " + line.split(" ", 1)[1]
        if not line.startswith("Documentation="):
            lines.append(line)
    copy.write_text("\n".join(lines) + "\n")
    try:
        r = subprocess.run(["systemd-analyze", "verify", str(copy).replace("@", "@x")],
                           capture_output=True, text=True)
    finally:
        copy.unlink()
    assert r.returncode == 0, r.stdout + r.stderr
