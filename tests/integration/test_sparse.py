"""Sparse files stay sparse on every node (issue 18, point 3): a replica
asks the holder for the map of a file's data extents (SEEK_DATA/SEEK_HOLE),
fetches only those, and installs the rest as holes."""
import errno
import os

from nsynctest import SYNC_TIMEOUT, sha256_file, wait_for

MIB = 1 << 20


def extents(path):
    """The data extents of path as (start, end) pairs, from SEEK_DATA/SEEK_HOLE."""
    out = []
    fd = os.open(path, os.O_RDONLY)
    try:
        size, pos = os.fstat(fd).st_size, 0
        while pos < size:
            try:
                d = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:
                    break
                raise
            pos = os.lseek(fd, d, os.SEEK_HOLE)
            out.append((d, pos))
    finally:
        os.close(fd)
    return out


def write_at(path, pieces, size=None):
    """Write each (offset, bytes) of pieces into path, then set its size."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for off, data in pieces:
            os.pwrite(fd, data, off)
        if size is not None:
            os.ftruncate(fd, size)
    finally:
        os.close(fd)


def check_sparse_everywhere(c, w, rel):
    """rel has the writer's bytes on every node, allocated as sparsely, with
    the same data extents in BACKING."""
    want = sha256_file(c.node(w).bpath(rel))
    size = os.stat(c.node(w).bpath(rel)).st_size
    wext = extents(c.node(w).bpath(rel))
    assert os.stat(c.node(w).bpath(rel)).st_blocks * 512 < MIB, "the writer's own copy is not sparse"
    for i in range(len(c)):
        nd = c.node(i)
        wait_for(lambda nd=nd: sha256_file(nd.bpath(rel)) == want and sha256_file(nd.path(rel)) == want,
                 SYNC_TIMEOUT, f"{rel} ({size} bytes) identical on node {i}")
        for p in (nd.bpath(rel), nd.path(rel)):
            st = os.stat(p)
            assert st.st_size == size
            assert st.st_blocks * 512 < MIB, (
                f"node {i}: {p} has {st.st_blocks * 512} bytes allocated for {size} bytes with "
                f"{sum(e - s for s, e in wext)} of data")
        assert extents(nd.bpath(rel)) == wext, f"node {i}: data extents differ from the writer's"


def test_sparse_file_replicates_sparse(cluster):
    c = cluster
    rel = "sparse.bin"
    write_at(c.node(0).path(rel), [(100 * MIB, os.urandom(4096))])
    check_sparse_everywhere(c, 0, rel)


def test_sparse_file_with_several_extents_and_a_trailing_hole(cluster):
    """Data at the start, in the middle and near the end, then a hole to the
    end of the file, written on a follower."""
    c = cluster
    w = c.follower()
    rel = "holes/several.bin"
    os.mkdir(c.node(w).path("holes"))
    write_at(c.node(w).path(rel), [(0, os.urandom(4096)), (50 * MIB, os.urandom(64 << 10)),
                                   (100 * MIB + 8192, os.urandom(12288))], size=120 * MIB)
    assert len(extents(c.node(w).bpath(rel))) == 3
    check_sparse_everywhere(c, w, rel)
