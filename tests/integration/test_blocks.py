"""Changed blocks only (issue 18, point 3): a replica that holds an older
version of a file asks the holder for the block hashes of the new one,
keeps the blocks it already has and fetches the others, so a 1 MiB rewrite
in the middle of a big file moves about 1 MiB per replica, not the file."""
import hashlib
import os

from nsynctest import SYNC_TIMEOUT, sha256_file, wait_for

MIB = 1 << 20
SIZE = 64 * MIB


def moved(node):
    """Bytes this node has fetched so far: file bytes and the maps."""
    f = node.status()["fetch"]
    return int(f["bytes"]) + int(f["map_bytes"])


def write_big(path):
    """SIZE random bytes, written 4 MiB at a time."""
    with open(path, "wb") as f:
        for _ in range(SIZE // (4 * MIB)):
            f.write(os.urandom(4 * MIB))


def rewrite_middle(path, off=SIZE // 2 + 12345, n=MIB):
    """n new bytes at off (not on a block boundary), through the mount."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, os.urandom(n), off)
    finally:
        os.close(fd)


def wait_same(c, rel, want, idxs):
    for i in idxs:
        nd = c.node(i)
        wait_for(lambda nd=nd: sha256_file(nd.bpath(rel)) == want and sha256_file(nd.path(rel)) == want,
                 SYNC_TIMEOUT, f"{rel} identical on node {i}")


def written_everywhere(c, w, rel):
    """A big random file written on node w and installed on the others:
    those others, and what each had moved so far."""
    others = [i for i in range(len(c)) if i != w]
    write_big(c.node(w).path(rel))
    wait_same(c, rel, sha256_file(c.node(w).bpath(rel)), others)
    return others, {i: moved(c.node(i)) for i in others}


def test_a_rewrite_in_the_middle_moves_only_the_changed_blocks(cluster):
    c = cluster
    w = c.follower()
    rel = "big.bin"
    others, before = written_everywhere(c, w, rel)
    rewrite_middle(c.node(w).path(rel))
    wait_same(c, rel, sha256_file(c.node(w).bpath(rel)), others)
    for i in others:
        got = moved(c.node(i)) - before[i]
        assert 0 < got < 8 * MIB, f"node {i} moved {got / MIB:.2f} MiB for a 1 MiB change in 64 MiB"


def test_changed_blocks_into_a_file_held_open_on_the_replica(cluster):
    """The replica has the file open for writing (a database would): the new
    bytes go into that same inode (an install in place), still fetching only
    the blocks that changed, and the open handle reads them."""
    c = cluster
    w = c.leader()
    r = next(i for i in range(3) if i != w)
    rel = "held.bin"
    write_big(c.node(w).path(rel))
    wait_same(c, rel, sha256_file(c.node(w).bpath(rel)), [r])
    fd = os.open(c.node(r).path(rel), os.O_RDWR)
    try:
        ino = os.fstat(fd).st_ino
        before = moved(c.node(r))
        rewrite_middle(c.node(w).path(rel), off=10 * MIB)
        want = sha256_file(c.node(w).bpath(rel))
        wait_for(lambda: sha256_file(c.node(r).bpath(rel)) == want, SYNC_TIMEOUT,
                 f"{rel} identical on node {r}")

        def through_fd():
            h = hashlib.sha256()
            for off in range(0, SIZE, 4 * MIB):
                h.update(os.pread(fd, 4 * MIB, off))
            return h.hexdigest()
        wait_for(lambda: through_fd() == want, SYNC_TIMEOUT, "the new bytes through the open handle")
        assert os.stat(c.node(r).path(rel)).st_ino == ino, "installed by rename, not in place"
        got = moved(c.node(r)) - before
        assert 0 < got < 8 * MIB, f"node {r} moved {got / MIB:.2f} MiB for a 1 MiB change in 64 MiB"
    finally:
        os.close(fd)


def test_scattered_changes_take_several_range_requests(cluster):
    """200 small changes, each in a block of its own: more ranges than one
    request carries, all fetched, the file identical everywhere."""
    c = cluster
    w = c.follower()
    rel = "scattered.bin"
    others, before = written_everywhere(c, w, rel)
    fd = os.open(c.node(w).path(rel), os.O_WRONLY)
    try:
        for k in range(200):
            os.pwrite(fd, os.urandom(4096), k * (320 << 10) + 777)
    finally:
        os.close(fd)
    wait_same(c, rel, sha256_file(c.node(w).bpath(rel)), others)
    for i in others:
        got = moved(c.node(i)) - before[i]
        assert 0 < got < 32 * MIB, f"node {i} moved {got / MIB:.2f} MiB for 200 changed blocks"
