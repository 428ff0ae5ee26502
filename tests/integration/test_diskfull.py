"""Disk full on a receiving node (design §8, issue 5): one node's BACKING is a
small tmpfs. A file larger than its free space, written on another node, must
never appear partially in that BACKING; the error is logged once per path, not
in a loop; the node stays up and keeps serving; once space is freed it catches
up with the right bytes.

The raft log lives in BACKING/.nsyncfs too, and canonical/raft preallocates its
open segments (3 x 8 MiB), so the tmpfs starts large enough for that and is
shrunk (mount -o remount,size=) to leave only a few MiB free once the node is up.
"""
import hashlib
import os
import subprocess
import time

import pytest

from nsynctest import Cluster, read_bytes, wait_for, write_file

MIB = 1 << 20
TMPFS_START = 48 * MIB     # room for raft's preallocated segments
FREE_WHILE_FULL = 4 * MIB  # free space left on the full node's BACKING
BIG = 12 * MIB             # larger than that
TMPFS_FREED = 96 * MIB
FULL = 0                   # the node whose BACKING fills up
LOG_WINDOW_S = 3.0
MAX_ERROR_LINES = 3        # "at most a few times" over LOG_WINDOW_S


def _mount_tmpfs(d, size):
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(d)],
                   check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _resize_tmpfs(d, size):
    r = subprocess.run(["mount", "-o", f"remount,size={size}", str(d)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert r.returncode == 0, f"remount {d} size={size}: {r.stdout.decode(errors='replace')}"


def _tmpfs_mounted(d):
    d = os.path.abspath(str(d))
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == d and line.split()[0] == "tmpfs" for line in f)


def _umount(d):
    for args in (["umount", str(d)], ["umount", "-l", str(d)]):
        if not _tmpfs_mounted(d):
            return
        subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _free(d):
    st = os.statvfs(d)
    return st.f_bavail * st.f_frsize


def _used(d):
    st = os.statvfs(d)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def _log_lines_since(nd, offset, needle):
    with open(nd.log_path, "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    return [ln for ln in text.splitlines() if needle in ln]


@pytest.fixture
def full_cluster(request, tmp_path, binary):
    """A 3-node cluster whose node FULL has its BACKING on a tmpfs. The
    finalizers run in reverse: the cluster is torn down (FUSE unmounted,
    processes gone) before the tmpfs is unmounted."""
    base = tmp_path / "diskfull"
    bdir = base / f"b{FULL}"
    bdir.mkdir(parents=True)
    _mount_tmpfs(bdir, TMPFS_START)
    request.addfinalizer(lambda: _umount(bdir))
    # Node.__init__ does mkdir(exist_ok=True): the mounted tmpfs is kept.
    c = Cluster(base, n=3, log_level="info", name="diskfull")
    request.addfinalizer(c.teardown)
    c.start_all()
    assert _tmpfs_mounted(c.node(FULL).backing)
    return c


@pytest.mark.deadline(240)
def test_disk_full_receiver(full_cluster):
    c = full_cluster
    full = c.node(FULL)
    w = c.node(1)
    bdir = full.backing

    write_file(w.path("before.txt"), b"written before the disk filled")
    c.wait_file("before.txt", b"written before the disk filled")

    # Leave FREE_WHILE_FULL bytes free on the full node's BACKING.
    size = (_used(bdir) + FREE_WHILE_FULL + 4095) // 4096 * 4096
    _resize_tmpfs(bdir, size)
    free = _free(bdir)
    assert FREE_WHILE_FULL // 2 < free <= FREE_WHILE_FULL + 64 * 1024, f"free {free}"

    log_off = full.log_path.stat().st_size
    big = os.urandom(BIG)
    write_file(w.path("big.bin"), big)          # the writer's disk has room: close() succeeds
    c.wait_file("big.bin", big, idxs=[i for i in range(3) if i != FULL], timeout=60)

    def never_partial():
        """BACKING has big.bin absent or complete, never short (or wrong)."""
        p = full.bpath("big.bin")
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            return
        assert st.st_size == BIG, f"partial file in BACKING: {st.st_size} of {BIG} bytes"
        got = read_bytes(p)
        assert got is None or got == big, "big.bin in BACKING has the wrong bytes"

    # The error is logged, naming the path (and saying why).
    def error_logged():
        never_partial()
        full.check_alive()
        return _log_lines_since(full, log_off, "big.bin")

    first = wait_for(error_logged, 30, f"node {FULL} to log the failed fetch of big.bin")
    assert any(k in " ".join(first).lower() for k in ("no space", "enospc", "disk full")), \
        f"the error does not say the disk is full: {first}"

    # Not in a tight loop: count the lines over a bounded window, checking
    # BACKING for a partial file all along.
    window_end = time.monotonic() + LOG_WINDOW_S
    while time.monotonic() < window_end:
        never_partial()
        full.check_alive()
        time.sleep(0.01)
    lines = _log_lines_since(full, log_off, "big.bin")
    assert len(lines) <= MAX_ERROR_LINES, \
        f"{len(lines)} log lines about big.bin in {LOG_WINDOW_S:.0f} s:\n" + "\n".join(lines[:20])
    assert not os.path.lexists(full.bpath("big.bin")), "big.bin cannot fit, yet it is in BACKING"

    # The node stays up and keeps serving: status, reads, and a small file.
    st = full.status()
    assert st.get("role") in ("leader", "follower"), st
    assert read_bytes(full.path("before.txt")) == b"written before the disk filled"
    small = b"small file while the disk is full\n" * 10
    write_file(w.path("small.txt"), small)

    def small_arrived():
        never_partial()
        full.check_alive()
        return read_bytes(full.bpath("small.txt")) == small and \
            read_bytes(full.path("small.txt")) == small
    wait_for(small_arrived, 45, f"small.txt on the full node {FULL}")
    c.wait_file("small.txt", small)

    # Free space: the node catches up with the right bytes.
    _resize_tmpfs(bdir, TMPFS_FREED)
    c.wait_file("big.bin", big, timeout=90)
    assert hashlib.sha256(read_bytes(full.bpath("big.bin"))).digest() == hashlib.sha256(big).digest()
    c.wait_trees_equal()

    # Nothing left behind in staging, and still a working writer.
    staging = bdir / ".nsyncfs" / "staging"
    if staging.is_dir():
        wait_for(lambda: not os.listdir(staging), 20, f"node {FULL}'s staging dir to be empty")
    write_file(full.path("after.txt"), b"the full node writes again")
    c.wait_file("after.txt", b"the full node writes again")
