"""What a write means (issue 14): fsync returns 0 only once the bytes are on
a majority of nodes, -o sync makes close() wait for the commit, and without
a quorum every change fails at once with EROFS while reads go on.

Real 3-node clusters; quorum loss is two kill -9s. Each test gets its own
cluster: they are destructive."""
import errno
import os
import subprocess
import sys
import time

import pytest

from nsynctest import HOST, SYNC_TIMEOUT, exists, read_bytes, wait_for, write_file

# Leaderless for 0.5 s after a candidate's election timeout (1-2 s) and the
# 50 ms status tick: the node knows well within this.
KNOWS_WITHIN_S = 6.0


# A file kept open in a process of its own: the harness forks (kill9 runs
# fusermount3), and a forked child's close of an inherited descriptor is a
# close() to FUSE: it would flush (announce) the file behind the test's back.
_HOLDER = r"""
import os, sys
fd = os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY, 0o644)
print("ok", flush=True)
for line in sys.stdin:
    cmd, _, arg = line.rstrip("\n").partition(" ")
    try:
        if cmd == "write":
            os.write(fd, arg.encode() + b"\n")
        elif cmd == "fsync":
            os.fsync(fd)
        elif cmd == "close":
            os.close(fd)
        print("ok", flush=True)
    except OSError as e:
        print(f"err {e.errno}", flush=True)
    if cmd == "close":
        break
"""


class Holder:
    """One open file in a helper process; each call returns 0 or an errno."""

    def __init__(self, path):
        self.p = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path)], text=True,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.p.stdout.readline().strip() == "ok", f"cannot open {path}"

    def do(self, cmd, arg=""):
        self.p.stdin.write(f"{cmd} {arg}\n")
        self.p.stdin.flush()
        out = self.p.stdout.readline().strip()
        assert out, f"the holder process died during {cmd}"
        return 0 if out == "ok" else int(out.split()[1])

    def end(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(timeout=10)


def _writable(nd):
    st = nd.try_status()
    return None if st is None else st.get("writable")


def _lose_quorum(c, w):
    """kill -9 both nodes other than w; return once w knows it has no quorum."""
    dead = [i for i in range(3) if i != w]
    names = [f"{HOST}:{c.node(i).cport}" for i in dead]
    t0 = time.monotonic()
    for i in dead:
        c.kill9(i)
    wait_for(lambda: _writable(c.node(w)) is False, KNOWS_WITHIN_S,
             f"node {w}'s status to say writable=false after losing both peers")
    return dead, names, time.monotonic() - t0


def _heal(c, dead):
    for i in dead:
        c.start(i, wait=False)
    c.wait_ready()


def _erofs(fn, *args):
    t0 = time.monotonic()
    with pytest.raises(OSError) as ei:
        fn(*args)
    assert ei.value.errno == errno.EROFS, f"{fn.__name__}{args}: expected EROFS, got {ei.value!r}"
    return time.monotonic() - t0


def test_no_quorum_fails_fast_and_heals(cluster):
    c = cluster
    w = c.follower()
    m = c.node(w).path
    write_file(m("exists.txt"), b"readable")
    os.mkdir(m("dir"))
    c.wait_file("exists.txt", b"readable")
    log_start = c.node(w).log_path.stat().st_size

    dead, names, knew = _lose_quorum(c, w)
    st = c.node(w).status()
    assert int(st["no_quorum_since"]) > 0, st
    # Every kind of change fails at once; nothing reaches BACKING.
    took = [
        _erofs(write_file, m("new.txt"), b"x"),
        _erofs(write_file, m("exists.txt"), b"more", "ab"),
        _erofs(os.mkdir, m("newdir")),
        _erofs(os.unlink, m("exists.txt")),
        _erofs(os.rename, m("exists.txt"), m("moved.txt")),
        _erofs(os.chmod, m("exists.txt"), 0o600),
        _erofs(os.rmdir, m("dir")),
        _erofs(os.truncate, m("exists.txt"), 1),
    ]
    assert max(took) < 0.5, f"changes took {['%.3f' % t for t in took]} s to fail"
    assert not exists(c.node(w).bpath("new.txt"))
    # Reads go on.
    assert read_bytes(m("exists.txt")) == b"readable"
    assert sorted(os.listdir(c.node(w).mnt)) == ["dir", "exists.txt"]

    def log_names_a_peer():
        with open(c.node(w).log_path, "rb") as f:
            f.seek(log_start)
            new = f.read().decode(errors="replace")
        return "no quorum" in new and any(n in new for n in names)

    wait_for(log_names_a_peer, 10, f"a warning on node {w} naming an unreachable peer ({names})")
    print(f"node {w} knew it had no quorum {knew:.2f} s after the kills; "
          f"changes failed in {max(took) * 1000:.1f} ms at most")

    _heal(c, dead)
    wait_for(lambda: _writable(c.node(w)) is True, SYNC_TIMEOUT, f"node {w} writable again")
    write_file(m("healed.txt"), b"healed")  # no restart of node w needed
    c.wait_file("healed.txt", b"healed")
    assert int(c.node(w).status()["no_quorum_since"]) == 0


def test_fsync_without_quorum_never_succeeds(cluster_factory):
    """A change made in the window before the node knows: its fsync fails
    (EROFS, or EIO at submit_timeout) and never returns 0; the change is
    kept and reaches every node once the quorum is back."""
    c = cluster_factory(3, extra_args=["-o", "submit_timeout=3"], name="fsync-noq")
    w = c.follower()
    h = Holder(c.node(w).path("window.bin"))
    try:
        assert h.do("write", "before the loss") == 0
        assert h.do("fsync") == 0                  # healthy: durable
        assert h.do("write", "in the window") == 0  # lock held: accepted locally
        dead = [i for i in range(3) if i != w]
        t0 = time.monotonic()
        for i in dead:
            c.kill9(i)
        err = h.do("fsync")
        took = time.monotonic() - t0
        assert err in (errno.EROFS, errno.EIO), f"fsync without a quorum: {err}"
        assert took < 3 + KNOWS_WITHIN_S, f"fsync failed only after {took:.1f} s"
        wait_for(lambda: _writable(c.node(w)) is False, KNOWS_WITHIN_S, "writable=false")
        assert h.do("fsync") == errno.EROFS
        _heal(c, dead)
        wait_for(lambda: _writable(c.node(w)) is True, SYNC_TIMEOUT, f"node {w} writable again")
        assert h.do("fsync") == 0  # the window's change now commits
        assert h.do("close") == 0
    finally:
        h.end()
    c.wait_file("window.bin", b"before the loss\nin the window\n")


@pytest.mark.parametrize("size", [64 << 10, 64 << 20], ids=["64KiB", "64MiB"])
def test_fsync_survives_the_writer(cluster, size):
    """kill -9 of the writer right after fsync returned: the other nodes
    still get the whole file, though the writer never closed it."""
    c = cluster
    w = c.follower()
    data = os.urandom(size)
    fd = os.open(c.node(w).path("durable.bin"), os.O_CREAT | os.O_WRONLY, 0o644)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view[:1 << 20]):]
    os.fsync(fd)
    c.kill9(w)   # fd dies with the mount; never closed by us
    try:
        os.close(fd)
    except OSError:
        pass
    others = [i for i in range(3) if i != w]
    c.wait_ready(others)
    c.wait_file("durable.bin", data, idxs=others, timeout=60)


def test_fsync_and_fsyncdir_on_a_healthy_cluster(cluster):
    c = cluster
    w = c.follower()
    m = c.node(w).path
    os.mkdir(m("d"))
    fd = os.open(m("d/f.txt"), os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, b"x" * 100_000)
        os.fdatasync(fd)
        os.write(fd, b"y")
        os.fsync(fd)
    finally:
        os.close(fd)
    dfd = os.open(m("d"), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    c.wait_file("d/f.txt", b"x" * 100_000 + b"y")
    # a reader's fsync of a durable file works too
    with open(m("d/f.txt"), "rb") as f:
        os.fsync(f.fileno())


def test_sync_option(cluster_factory):
    """-o sync: close() returns once committed; without a quorum a close
    with changes fails (EROFS) and the change is delivered after the heal."""
    c = cluster_factory(3, extra_args=["-o", "sync"], name="osync")
    w = c.follower()
    m = c.node(w).path
    write_file(m("a.txt"), b"committed at close")
    os.mkdir(m("sub"))
    c.wait_file("a.txt", b"committed at close")
    h = Holder(m("b.txt"))
    try:
        assert h.do("write", "written before the loss") == 0
        dead, _, _ = _lose_quorum(c, w)
        assert h.do("close") == errno.EROFS, "close() with changes and no quorum under -o sync"
    finally:
        h.end()
    _heal(c, dead)
    c.wait_file("b.txt", b"written before the loss\n")


def test_kill_before_close_is_reconciled(cluster):
    """A handle's first write names the path in the journal: kill -9 of the
    node before close(), and its restart still announces what is in BACKING."""
    c = cluster
    w = c.follower()
    write_file(c.node(w).path("open.txt"), b"old")
    c.wait_file("open.txt", b"old")
    h = Holder(c.node(w).path("open.txt"))
    try:
        assert h.do("write", "written, never closed") == 0
        c.kill9(w)  # the write is in BACKING; close() never came
    finally:
        h.end()
    assert read_bytes(c.node(w).bpath("open.txt")).startswith(b"written, never closed")
    c.start(w)
    c.wait_file("open.txt", b"written, never closed\n")
