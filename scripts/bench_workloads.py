#!/usr/bin/python3
"""Workload driver for scripts/bench.sh (stdlib only; the same code for every target).

    bench_workloads.py run --target NAME=DIR [--target ...] [--settle NAME=URL[,URL...]]
                           [--runs 3] [--size-mib 1024] [--files 2000] [--fsync-files 500]
                           [--creates-only NAME ...] --json OUT
        Per round and per target (the order rotates each round): 4 KiB creates
        (open/write/close each, one process) in files/s; 4 KiB creates with
        fsync before close (FSYNC_FILES of them) in files/s; a stat of each of
        those files, as ls -l and make do (readdir with stats, then stat by
        path, twice) in stats/s; SIZE_MIB sequential write
        with fsync before close in MiB/s; cold sequential read of that file (page
        cache dropped first) in MiB/s. Before every timed step: the nsyncfs
        targets given with --settle are waited on until no node reports pending
        work (GET URL -> pending_entries == 0 and pending == 0), then sync().
        Targets named by --creates-only run the two create workloads only.
        With --tree TARBALL (and --tree-src DIR, the same tree extracted on the
        native disk): tar xf of it, rsync -a and cp -a of DIR into the target, each
        removed before the next, and rm -rf of the tar one, each in seconds.
    bench_workloads.py procs --proc NAME=PID [...] [--reset-hwm] [--idle-seconds S] --json OUT
        Resident memory (VmRSS, VmHWM) of each process; --reset-hwm then resets
        the peak (echo 5 > /proc/PID/clear_refs); --idle-seconds measures the CPU
        (utime+stime from /proc/PID/stat) each uses over S seconds.
    bench_workloads.py settle --url URL [...]
        Wait until those nodes report no pending work.
    bench_workloads.py populate --dir DIR --files N
        N small files (60-120 bytes each, distinct) in folders of 1,000 under
        DIR/rejoin-tree: the tree the rejoin workload unmounts and mounts again.
    bench_workloads.py rejoin --cmd-file F --mnt DIR --url STATUS_URL --files N --json OUT
        A rejoin with nothing changed, twice: fusermount3 -u DIR, wait for the
        node's process (command line in F) to exit (its clean leave), then
        start the command in F again (a daemon: it returns once mounted) and
        time until the node is caught up: a member again, its catalog lists at
        least N entries and it lacks none (/v1/status: members,
        catalog_entries, catchup.entries). First with the page cache as the
        leave left it, then with it dropped before the mount (as after a
        reboot). The node's /metrics counters of files hashed and trusted by
        the quick check are read at the end, when it has them.
    bench_workloads.py blocks --dir WRITER_DIR --check NAME=DIR,URL [...] --mib N --json OUT
        A 1 MiB change in the middle of an N MiB file: the file is written
        into WRITER_DIR and left to reach every checked node, then 1 MiB in
        its middle is rewritten (not on a block boundary); per checked node,
        the bytes it moved for the change (/v1/status fetch.bytes plus
        fetch.map_bytes) and the seconds from the close until it installed
        it; its copy is compared with the writer's at the end.
    bench_workloads.py report --workloads J [--syncbench J] [--syncbench-floor J] [--procs-before J]
                              [--procs-after J] [--meta K=V ...] --json OUT
        Print the table (medians, ratios) and write the combined JSON.
"""
import argparse
import errno
import hashlib
import json
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import time
import urllib.request

MIB = 1 << 20
CHUNK = MIB


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def pairs(values, what):
    out = []
    for v in values or []:
        name, sep, rest = v.partition("=")
        if not sep or not name or not rest:
            sys.exit(f"bench_workloads: {what} '{v}' is not NAME=VALUE")
        out.append((name, rest))
    return out


# ---------------------------------------------------------------- settle / sync

def node_pending(url):
    """Pending work a node reports, or None when it does not answer."""
    try:
        # A cluster with a secret serves its status over HTTPS with its own
        # self-signed certificate: nothing to verify it against here.
        ctx = ssl._create_unverified_context() if url.startswith("https:") else None
        with urllib.request.urlopen(url, timeout=2, context=ctx) as r:
            st = json.load(r)
    except Exception:
        return None
    return int(st.get("pending_entries") or 0) + int(st.get("pending") or 0)


def settle(urls, timeout=600.0):
    """Wait until every URL reports nothing pending. Returns the seconds waited,
    or None on timeout (the caller notes it and goes on)."""
    if not urls:
        return 0.0
    t0 = time.monotonic()
    while True:
        if all(node_pending(u) == 0 for u in urls):
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            return None
        time.sleep(0.05)


def drop_caches():
    """True if the page cache (and dentries/inodes) were dropped."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError as e:
        log(f"   cannot drop caches ({e}): the 'cold' read is not cold")
        return False


# ---------------------------------------------------------------- workloads

def w_creates(d, n, fsync=False):
    """n files of 4 KiB, each open/write/(fsync/)close, in a fresh folder. files/s."""
    os.mkdir(d)
    base = bytearray(os.urandom(4096))
    blobs = []
    for i in range(n):
        base[:8] = i.to_bytes(8, "little")
        blobs.append(bytes(base))
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    t0 = time.perf_counter()
    for i in range(n):
        fd = os.open(os.path.join(d, f"f{i:05d}"), flags, 0o644)
        try:
            if os.write(fd, blobs[i]) != 4096:
                raise OSError("short write")
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
    dt = time.perf_counter() - t0
    return n / dt, dt


def w_stats(d, n):
    """What ls -l and make do to the n files w_creates made: a readdir with a
    stat of each entry, then a stat of each by path, twice. stats/s."""
    t0 = time.perf_counter()
    count = 0
    for _ in range(2):
        for e in os.scandir(d):
            e.stat(follow_symlinks=False)
            count += 1
        for i in range(n):
            os.stat(os.path.join(d, f"f{i:05d}"))
            count += 1
    dt = time.perf_counter() - t0
    return count / dt, dt


def w_setxattr(d, n):
    """A user.* attribute set on each of the n files w_creates made (what
    rsync -X and cp -a do after each file). sets/s, or None where the target
    has no extended attributes (ENOTSUP)."""
    t0 = time.perf_counter()
    try:
        for i in range(n):
            os.setxattr(os.path.join(d, f"f{i:05d}"), "user.bench", b"checksum=%08d" % i)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return None, 0.0
        raise
    dt = time.perf_counter() - t0
    return n / dt, dt


def w_write(path, mib):
    """mib MiB written sequentially in 1 MiB writes, fsync, close. MiB/s
    (the time includes open, fsync and close: close is when nsyncfs commits)."""
    buf = bytearray(os.urandom(CHUNK))
    mv = memoryview(buf)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
    t0 = time.perf_counter()
    fd = os.open(path, flags, 0o644)
    try:
        for i in range(mib):
            buf[:8] = i.to_bytes(8, "little")
            off = 0
            while off < CHUNK:
                off += os.write(fd, mv[off:])
        os.fsync(fd)
    finally:
        os.close(fd)
    dt = time.perf_counter() - t0
    return mib / dt, dt


def w_read(path, mib):
    """Sequential read in 1 MiB reads until EOF. MiB/s."""
    buf = bytearray(CHUNK)
    total = 0
    t0 = time.perf_counter()
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        while True:
            n = os.readv(fd, [buf])
            if n == 0:
                break
            total += n
    finally:
        os.close(fd)
    dt = time.perf_counter() - t0
    if total != mib * MIB:
        raise RuntimeError(f"read {total} bytes of {path}, expected {mib * MIB}")
    return mib / dt, dt


def w_tree(d, tarball, src, r, prepare):
    """Seconds for tar xf, rsync -a and cp -a of one tree each, and for rm -rf
    of the tar one. One tree at a time: passthrough_ll keeps an fd per inode
    it knows, and three trees at once pass this machine's fd limit."""
    out = {}
    base = os.path.join(d, f"bench-tree-{os.getpid()}-{r}")
    steps = (("tar_s", ["tar", "xf", tarball, "-C", base]),
             ("rsync_s", ["rsync", "-a", src + "/", base]),
             ("cp_s", ["cp", "-a", src, base]))
    for key, cmd in steps:
        prepare(f"{key[:-2]} round {r + 1}")
        if key != "cp_s":
            os.makedirs(base)
        t0 = time.monotonic()
        subprocess.run(cmd, check=True)
        out[key] = time.monotonic() - t0
        prepare(f"rm after {key[:-2]} round {r + 1}")
        t0 = time.monotonic()
        shutil.rmtree(base)
        if key == "tar_s":
            out["rm_s"] = time.monotonic() - t0
    return out


TIME_KEYS = ("tar_s", "rsync_s", "cp_s", "rm_s")   # seconds: lower is better


def summary(values):
    if not values:
        return {"median": None, "runs": []}
    return {"median": statistics.median(values), "min": min(values),
            "max": max(values), "runs": values}


def cmd_run(a):
    targets = pairs(a.target, "--target")
    settle_urls = [u for _, v in pairs(a.settle, "--settle") for u in v.split(",") if u]
    names = [n for n, _ in targets]
    res = {n: {"creates_files_per_s": [], "fsync_creates_files_per_s": [], "stats_per_s": [],
               "setxattr_per_s": [], "write_mib_per_s": [], "read_mib_per_s": [],
               "tar_s": [], "rsync_s": [], "cp_s": [], "rm_s": []} for n in names}
    only_creates = set(a.creates_only or [])
    notes = []
    cold = True
    tag = f"{os.getpid()}"

    def prepare(what):
        waited = settle(settle_urls, a.settle_timeout)
        if waited is None:
            notes.append(f"{what}: cluster not settled after {a.settle_timeout:.0f} s")
            log(f"   warning: {notes[-1]}")
        os.sync()

    for r in range(a.runs):
        k = r % len(targets)
        order = targets[k:] + targets[:k]   # rotate: no target always goes first
        log(f"== round {r + 1}/{a.runs}: {', '.join(n for n, _ in order)}")
        for name, d in order:
            prepare(f"{name} creates round {r + 1}")
            cdir = os.path.join(d, f"bench-creates-{tag}-{r}")
            rate, dt = w_creates(cdir, a.files)
            res[name]["creates_files_per_s"].append(rate)
            log(f"   {name:16s} creates  {rate:10.0f} files/s ({dt:.2f} s)")
            prepare(f"{name} fsync creates round {r + 1}")
            rate, dt = w_creates(cdir + "-fsync", a.fsync_files, fsync=True)
            res[name]["fsync_creates_files_per_s"].append(rate)
            log(f"   {name:16s} +fsync   {rate:10.0f} files/s ({dt:.2f} s)")
            if name in only_creates:
                continue
            prepare(f"{name} stats round {r + 1}")
            rate, dt = w_stats(cdir, a.files)
            res[name]["stats_per_s"].append(rate)
            log(f"   {name:16s} stats    {rate:10.0f} stats/s ({dt:.2f} s)")
            prepare(f"{name} setxattr round {r + 1}")
            rate, dt = w_setxattr(cdir, a.files)
            if rate is not None:
                res[name]["setxattr_per_s"].append(rate)
                log(f"   {name:16s} setxattr {rate:10.0f} sets/s ({dt:.2f} s)")
        for name, d in order:
            if name in only_creates:
                continue
            path = os.path.join(d, f"bench-seq-{tag}-{r}.bin")
            prepare(f"{name} write round {r + 1}")
            rate, dt = w_write(path, a.size_mib)
            res[name]["write_mib_per_s"].append(rate)
            log(f"   {name:16s} write    {rate:10.1f} MiB/s ({dt:.2f} s)")
            prepare(f"{name} read round {r + 1}")
            if a.drop_caches:
                cold = drop_caches() and cold
            rate, dt = w_read(path, a.size_mib)
            res[name]["read_mib_per_s"].append(rate)
            log(f"   {name:16s} read     {rate:10.1f} MiB/s ({dt:.2f} s)")
            os.unlink(path)   # untimed; frees the disk (and replicates the delete)
        for name, d in order:
            if not a.tree or name in only_creates:
                continue
            out = w_tree(d, a.tree, a.tree_src, r, lambda what: prepare(f"{name} {what}"))
            for k, v in out.items():
                res[name][k].append(v)
            log(f"   {name:16s} tree     " +
                ", ".join(f"{k[:-2]} {v:.2f} s" for k, v in out.items()))
    settle(settle_urls, a.settle_timeout)
    out = {
        "runs": a.runs, "size_mib": a.size_mib, "files": a.files, "fsync_files": a.fsync_files,
        "cold_read": bool(a.drop_caches and cold),
        "targets": {n: {k: summary(v) for k, v in res[n].items()} for n in names},
        "dirs": dict(targets), "notes": notes,
    }
    with open(a.json, "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")


# ---------------------------------------------------------------- processes

def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "Threads"):
                out[k] = int(v.split()[0])
    return {"rss_kib": out.get("VmRSS"), "hwm_kib": out.get("VmHWM"),
            "threads": out.get("Threads")}


def proc_cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # after the ')' field 3 (state) is index 0, so utime (14) is 11 and stime (15) is 12
    return int(fields[11]) + int(fields[12])


def cmd_procs(a):
    procs = pairs(a.proc, "--proc")
    out = {}
    for name, pid in procs:
        out[name] = {"pid": int(pid), **proc_status(pid)}
    if a.reset_hwm:
        for name, pid in procs:
            try:
                with open(f"/proc/{pid}/clear_refs", "w") as f:
                    f.write("5\n")
                out[name]["hwm_reset"] = True
            except OSError as e:
                out[name]["hwm_reset"] = False
                log(f"   cannot reset the peak RSS of {name} ({e})")
    if a.idle_seconds > 0:
        hz = os.sysconf("SC_CLK_TCK")
        t0 = time.monotonic()
        before = {n: proc_cpu_ticks(p) for n, p in procs}
        time.sleep(a.idle_seconds)
        after = {n: proc_cpu_ticks(p) for n, p in procs}
        dt = time.monotonic() - t0
        for name, _ in procs:
            secs = (after[name] - before[name]) / hz
            out[name]["idle_cpu_s"] = secs
            out[name]["idle_cpu_pct"] = 100.0 * secs / dt
            out[name]["idle_window_s"] = dt
    with open(a.json, "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")


def cmd_settle(a):
    w = settle(a.url, a.timeout)
    if w is None:
        log(f"   warning: not settled after {a.timeout:.0f} s")
        sys.exit(1)


# ---------------------------------------------------------------- rejoin

REJOIN_DIR = "rejoin-tree"
REJOIN_PER_DIR = 1000


def cmd_populate(a):
    root = os.path.join(a.dir, REJOIN_DIR)
    t0 = time.monotonic()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for i in range(a.files):
        sub = os.path.join(root, f"d{i // REJOIN_PER_DIR:03d}")
        if i % REJOIN_PER_DIR == 0:
            os.makedirs(sub)
        fd = os.open(os.path.join(sub, f"f{i:06d}"), flags, 0o644)
        try:
            os.write(fd, (f"file {i} " * (8 + i % 8)).encode())
        finally:
            os.close(fd)
    log(f"   {a.files} files in {root}: {time.monotonic() - t0:.1f} s")


def http_json(url, timeout=2):
    ctx = ssl._create_unverified_context() if url.startswith("https:") else None
    with urllib.request.urlopen(url, timeout=timeout, context=ctx) as r:
        return json.load(r)


def metric(url, name):
    """One sample of the node's /metrics page (next to url's /v1/status), or None."""
    ctx = ssl._create_unverified_context() if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(url.replace("/v1/status", "/metrics"), timeout=2,
                                    context=ctx) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
    except Exception:
        return None
    return None


def caught_up(url, files):
    try:
        st = http_json(url)
    except Exception:
        return False
    me = any(m.get("self") for m in st.get("members") or [])
    return (me and int(st.get("catalog_entries") or 0) >= files and
            int((st.get("catchup") or {}).get("entries", 1)) == 0)


def node_pid(cmd):
    """The pid of the process whose command line is cmd, or None."""
    want = "\0".join(cmd) + "\0"
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline") as f:
                    if f.read() == want:
                        return int(d)
            except OSError:
                pass
    return None


def gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def rejoin_once(a, cmd, cold):
    pid = node_pid(cmd)
    subprocess.run(["fusermount3", "-u", a.mnt], check=True)
    t0 = time.monotonic()
    while pid and not gone(pid) and time.monotonic() - t0 < a.timeout:
        time.sleep(0.02)
    leave_s = time.monotonic() - t0
    if cold:
        drop_caches()
    t0 = time.monotonic()
    subprocess.run(cmd, check=True)
    mounted_s = time.monotonic() - t0
    while not caught_up(a.url, a.files):
        if time.monotonic() - t0 > a.timeout:
            sys.exit(f"bench_workloads: {a.url} not caught up after {a.timeout:.0f} s")
        time.sleep(0.02)
    took = time.monotonic() - t0
    out = {"leave_s": leave_s, "mounted_s": mounted_s, "rejoin_s": took,
           "hashed": metric(a.url, "nsyncfs_install_hashed_files_total"),
           "trusted": metric(a.url, "nsyncfs_install_trusted_files_total")}
    log(f"   rejoin of {a.files} unchanged files, {'cold' if cold else 'warm'} page cache: left in "
        f"{leave_s:.2f} s; mounted after {mounted_s:.2f} s, caught up after {took:.2f} s "
        f"(hashed {out['hashed']}, trusted by the quick check {out['trusted']})")
    return out


def cmd_rejoin(a):
    with open(a.cmd_file) as f:
        cmd = f.read().split()
    out = {"files": a.files,
           "warm": rejoin_once(a, cmd, cold=False),   # page cache as the leave left it
           "cold": rejoin_once(a, cmd, cold=True)}    # dropped first: as after a reboot
    with open(a.json, "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")


# ---------------------------------------------------------------- report

def load(path):
    if not path:
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def fmt(v, nd=0):
    if v is None:
        return "-"
    return f"{v:,.{nd}f}"


def ratio(a, b):
    if a is None or not b:
        return "-"
    return f"{a / b:.2f}x"


def table(rows, header, left=1):
    """Columns padded to width; the first `left` columns left-aligned, the others right."""
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) if i < left else str(c).rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths))).rstrip()
    out = [line(header), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    return "\n".join(out)


def cmd_report(a):
    wl = load(a.workloads) or {}
    sb = load(a.syncbench)
    before = load(a.procs_before) or {}
    after = load(a.procs_after) or {}
    meta = dict(pairs(a.meta, "--meta"))
    T = wl.get("targets", {})
    cols = [c for c in ("native", "passthrough_ll", "nsyncfs-1", "nsyncfs-3", "nsyncfs-3-secret",
                        "nsyncfs-3-osync", "base-1", "base-3") if c in T]
    med = lambda t, k: ((T.get(t) or {}).get(k) or {}).get("median")
    lines = []
    p = lines.append
    p(f"nsyncfs bench  {meta.get('date', '')}  {meta.get('machine', '')}")
    p(f"medians of {wl.get('runs')} runs; {wl.get('files')} x 4 KiB creates; "
      f"{wl.get('size_mib')} MiB sequential write (+fsync) and "
      f"{'cold' if wl.get('cold_read') else 'NOT cold (caches not dropped)'} read")
    if meta.get("load"):
        p(f"load average (1, 5, 15 min) {meta['load']}")
    p("")
    header = ["workload"] + cols
    ratios = [("nsyncfs-1", "passthrough_ll", "1n/pt"), ("nsyncfs-3", "passthrough_ll", "3n/pt"),
              ("nsyncfs-1", "native", "1n/native"), ("nsyncfs-3", "native", "3n/native"),
              ("passthrough_ll", "native", "pt/native"),
              ("nsyncfs-3-osync", "passthrough_ll", "3s/pt"),
              ("base-1", "passthrough_ll", "b1/pt"), ("base-3", "passthrough_ll", "b3/pt"),
              ("nsyncfs-1", "base-1", "1n/b1"), ("nsyncfs-3", "base-3", "3n/b3"),
              ("nsyncfs-3-secret", "nsyncfs-3", "3t/3n")]
    ratios = [r for r in ratios if r[0] in T and r[1] in T]
    header += [r[2] for r in ratios]
    rows = []
    for key, label, nd in (("creates_files_per_s", "4 KiB creates (files/s)", 0),
                           ("fsync_creates_files_per_s", "4 KiB creates+fsync (files/s)", 0),
                           ("stats_per_s", "stat of those (stats/s)", 0),
                           ("setxattr_per_s", "setxattr of those (sets/s)", 0),
                           ("write_mib_per_s", "seq write+fsync (MiB/s)", 1),
                           ("read_mib_per_s", "cold seq read (MiB/s)", 1),
                           ("tar_s", "tar xf of the tree (s)", 2),
                           ("rsync_s", "rsync -a of the tree (s)", 2),
                           ("cp_s", "cp -a of the tree (s)", 2),
                           ("rm_s", "rm -rf of the tree (s)", 2)):
        if not any(med(c, key) for c in cols):
            continue
        # Ratios are speeds: for a time, the other's time over this one's.
        speed = (lambda x, y: ratio(med(y, key), med(x, key))) if key in TIME_KEYS else \
            (lambda x, y: ratio(med(x, key), med(y, key)))
        rows.append([label] + [fmt(med(c, key), nd) for c in cols] +
                    [speed(x, y) for x, y, _ in ratios])
    p(table(rows, header))
    rng = lambda t, k, nd: (f"{fmt((T.get(t) or {}).get(k, {}).get('min'), nd)}-"
                            f"{fmt((T.get(t) or {}).get(k, {}).get('max'), nd)}")
    rows = [[label] + [rng(c, key, nd) for c in cols]
            for key, label, nd in (("creates_files_per_s", "4 KiB creates (files/s)", 0),
                                   ("fsync_creates_files_per_s", "4 KiB creates+fsync (files/s)", 0),
                                   ("stats_per_s", "stat of those (stats/s)", 0),
                                   ("setxattr_per_s", "setxattr of those (sets/s)", 0),
                                   ("write_mib_per_s", "seq write+fsync (MiB/s)", 0),
                                   ("read_mib_per_s", "cold seq read (MiB/s)", 0),
                                   ("tar_s", "tar xf of the tree (s)", 2),
                                   ("rsync_s", "rsync -a of the tree (s)", 2),
                                   ("cp_s", "cp -a of the tree (s)", 2),
                                   ("rm_s", "rm -rf of the tree (s)", 2))
            if any(med(c, key) for c in cols)]
    p("")
    p("range over the runs (min-max), to judge the noise:")
    p(table(rows, ["workload"] + cols))
    for n in wl.get("notes", []):
        p(f"note: {n}")

    sb_secret = load(a.syncbench_secret)
    for one, title in ((sb, "3-node cluster"), (sb_secret, "3-node cluster with the secret (TLS)")):
        if not one:
            continue
        w = one.get("workloads", {})
        p("")
        p(f"{title}, syncbench (write on node 1, check nodes 2 and 3):")
        rows = []
        if "latency" in w:
            x = w["latency"]
            rows.append(["replication latency 4 KiB",
                         f"p50 {fmt(x.get('p50_ms'), 1)} ms, p95 {fmt(x.get('p95_ms'), 1)} ms, "
                         f"max {fmt(x.get('max_ms'), 1)} ms ({x.get('files')} files, "
                         f"{x.get('missed')} missed)"])
        if "small" in w:
            x = w["small"]
            rows.append([f"burst of {x.get('files')} x 4 KiB",
                         f"{fmt(x.get('local_files_per_s'))} files/s on node 1; on all nodes "
                         f"after {fmt(x.get('replicated_s'), 2)} s "
                         f"({fmt(x.get('replicated_files_per_s'))} files/s, {x.get('missing')} missing)"])
        if "large" in w:
            x = w["large"]
            nat = med("native", "write_mib_per_s")
            rows.append([f"large file {x.get('mib')} MiB",
                         f"written at {fmt(x.get('local_write_mib_per_s'), 1)} MiB/s; identical on "
                         f"nodes 2 and 3 after {fmt(x.get('replicated_s'), 2)} s = "
                         f"{fmt(x.get('replicated_mib_per_s'), 1)} MiB/s "
                         f"({ratio(x.get('replicated_mib_per_s'), nat)} native write)"])
            fl = ((load(a.syncbench_floor) or {}).get("workloads") or {}).get("large")
            if fl:
                rows.append(["  yardstick floor",
                             f"the same workload with one native folder as writer and both "
                             f"checks (nothing to replicate): {fmt(fl.get('replicated_s'), 2)} s "
                             f"= {fmt(fl.get('replicated_mib_per_s'), 1)} MiB/s "
                             f"({ratio(fl.get('replicated_mib_per_s'), nat)} native write)"])
        if "delete" in w:
            x = w["delete"]
            rows.append([f"delete {x.get('files')} files",
                         f"gone everywhere after {fmt(x.get('gone_s'), 2)} s "
                         f"({x.get('remaining')} remaining)"])
        p(table(rows, ["workload", "result"], left=2))
    if after:
        p("")
        p("processes (peak RSS = VmHWM since reset just before syncbench; "
          "lifetime = VmHWM before that reset):")
        rows = []
        for name, x in after.items():
            b = before.get(name, {})
            rows.append([name, fmt((x.get("hwm_kib") or 0) / 1024, 1),
                         fmt((b.get("hwm_kib") or 0) / 1024, 1) if b else "-",
                         fmt((x.get("rss_kib") or 0) / 1024, 1),
                         fmt(x.get("idle_cpu_pct"), 2)])
        win = next((x.get("idle_window_s") for x in after.values()), None)
        p(table(rows, ["process", "peak RSS MiB", "lifetime peak MiB", "RSS now MiB",
                       f"idle CPU % ({fmt(win, 0)} s)"]))
    text = "\n".join(lines)
    print(text)
    out = {"meta": meta, "workloads": wl, "syncbench": sb, "syncbench_secret": sb_secret,
           "syncbench_floor": load(a.syncbench_floor),
           "procs_before_syncbench": before, "procs_after": after, "table": text}
    with open(a.json, "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")


# ---------------------------------------------------------------- blocks

def moved_and_installed(url):
    f = http_json(url)["fetch"]
    return int(f["bytes"]) + int(f.get("map_bytes", 0)), int(f["installed"])


def file_sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(CHUNK)
            if not b:
                return h.hexdigest()
            h.update(b)


def cmd_blocks(a):
    checks = []
    for c in a.check:
        name, rest = c.split("=", 1)
        d, url = rest.split(",", 1)
        checks.append((name, d, url))
    rel, size = "blocks-bench.bin", a.mib * MIB
    path = os.path.join(a.dir, rel)
    with open(path, "wb") as f:
        for _ in range(0, size, 4 * MIB):
            f.write(os.urandom(4 * MIB))
    want = file_sha(path)
    t0 = time.monotonic()
    while not all(os.path.exists(os.path.join(d, rel)) and file_sha(os.path.join(d, rel)) == want
                  for _, d, _ in checks):
        if time.monotonic() - t0 > a.timeout:
            sys.exit(f"bench_workloads: {rel} did not reach every node in {a.timeout:.0f} s")
        time.sleep(0.5)
    before = {name: moved_and_installed(url) for name, _, url in checks}
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, os.urandom(MIB), size // 2 + 12345)
    finally:
        os.close(fd)
    t0 = time.monotonic()
    out = {"file_mib": a.mib, "change_mib": 1, "nodes": {}}
    for name, d, url in checks:
        while True:
            moved, inst = moved_and_installed(url)
            if inst > before[name][1] and int(http_json(url)["catchup"]["entries"]) == 0:
                break
            if time.monotonic() - t0 > a.timeout:
                sys.exit(f"bench_workloads: {name} did not install the change in {a.timeout:.0f} s")
            time.sleep(0.02)
        out["nodes"][name] = {"moved_mib": (moved - before[name][0]) / MIB,
                              "installed_s": time.monotonic() - t0}
    want = file_sha(path)  # after the timing: reading 512 MiB would slow the nodes down
    for name, d, _ in checks:
        n = out["nodes"][name]
        n["identical"] = file_sha(os.path.join(d, rel)) == want
        log(f"   {name}: moved {n['moved_mib']:.2f} MiB for a 1 MiB change in {a.mib} MiB, installed "
            f"{n['installed_s']:.2f} s after the close{'' if n['identical'] else ', NOT IDENTICAL'}")
    os.unlink(path)
    with open(a.json, "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--target", action="append", required=True)
    r.add_argument("--settle", action="append")
    r.add_argument("--settle-timeout", type=float, default=600.0)
    r.add_argument("--runs", type=int, default=3)
    r.add_argument("--size-mib", type=int, default=1024)
    r.add_argument("--files", type=int, default=2000)
    r.add_argument("--fsync-files", type=int, default=500)
    r.add_argument("--tree", help="tarball for the tree workload (tar, rsync, cp, rm)")
    r.add_argument("--tree-src", help="the same tree extracted on the native disk")
    r.add_argument("--creates-only", action="append")
    r.add_argument("--no-drop-caches", dest="drop_caches", action="store_false")
    r.add_argument("--json", required=True)
    r.set_defaults(fn=cmd_run)
    q = sub.add_parser("procs")
    q.add_argument("--proc", action="append", required=True)
    q.add_argument("--reset-hwm", action="store_true")
    q.add_argument("--idle-seconds", type=float, default=0.0)
    q.add_argument("--json", required=True)
    q.set_defaults(fn=cmd_procs)
    s = sub.add_parser("settle")
    s.add_argument("--url", action="append", required=True)
    s.add_argument("--timeout", type=float, default=600.0)
    s.set_defaults(fn=cmd_settle)
    p = sub.add_parser("populate")
    p.add_argument("--dir", required=True)
    p.add_argument("--files", type=int, required=True)
    p.set_defaults(fn=cmd_populate)
    j = sub.add_parser("rejoin")
    j.add_argument("--cmd-file", required=True)
    j.add_argument("--mnt", required=True)
    j.add_argument("--url", required=True)
    j.add_argument("--files", type=int, required=True)
    j.add_argument("--timeout", type=float, default=900.0)
    j.add_argument("--json", required=True)
    j.set_defaults(fn=cmd_rejoin)
    b = sub.add_parser("blocks")
    b.add_argument("--dir", required=True)
    b.add_argument("--check", action="append", required=True)
    b.add_argument("--mib", type=int, default=512)
    b.add_argument("--timeout", type=float, default=600.0)
    b.add_argument("--json", required=True)
    b.set_defaults(fn=cmd_blocks)
    t = sub.add_parser("report")
    t.add_argument("--workloads", required=True)
    t.add_argument("--syncbench")
    t.add_argument("--syncbench-floor")
    t.add_argument("--syncbench-secret")
    t.add_argument("--procs-before")
    t.add_argument("--procs-after")
    t.add_argument("--meta", action="append")
    t.add_argument("--json", required=True)
    t.set_defaults(fn=cmd_report)
    a = ap.parse_args()
    if getattr(a, "runs", 1) < 1 or getattr(a, "size_mib", 1) < 1:
        sys.exit("bench_workloads: --runs and --size-mib must be >= 1")
    a.fn(a)


if __name__ == "__main__":
    main()
