"""Replication on one healthy 3-node cluster, shared by every test of this
module (each test works under its own names, so they do not disturb each
other). The prototype's scenarios first, then the secondary operations."""
import errno
import hashlib
import os
import threading

import pytest

from nsynctest import (DATA_DIR, SYNC_TIMEOUT, exists, read_bytes, sha256_file, tree,
                       wait_for, write_file)


def run_threads(fns):
    """Run the callables at once (released together by a barrier); re-raise
    the first exception any of them raised."""
    barrier = threading.Barrier(len(fns))
    errors = []

    def wrap(fn):
        try:
            barrier.wait(timeout=30)
            fn()
        except BaseException as e:  # noqa: BLE001 - re-raised below
            errors.append(e)

    ts = [threading.Thread(target=wrap, args=(fn,), daemon=True) for fn in fns]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=240)
        assert not t.is_alive(), "a writer thread is stuck (FUSE call not returning)"
    if errors:
        raise errors[0]


# ------------------------------------------------------------------ scenarios

def test_write_replicates(shared_cluster):
    c = shared_cluster
    data = b"hello from node 0\n" + os.urandom(1000)
    write_file(c.node(0).path("basic.txt"), data)
    assert read_bytes(c.node(0).bpath("basic.txt")) == data, "the writer's BACKING lacks the bytes"
    c.wait_file("basic.txt", data)


def test_delete_replicates(shared_cluster):
    c = shared_cluster
    data = os.urandom(5000)
    write_file(c.node(0).path("to-delete.bin"), data)
    c.wait_file("to-delete.bin", data)
    os.unlink(c.node(0).path("to-delete.bin"))
    assert not exists(c.node(0).bpath("to-delete.bin"))
    c.wait_gone("to-delete.bin")
    assert "to-delete.bin" not in os.listdir(c.node(2).mnt)


def test_delete_on_follower_replicates(shared_cluster):
    """A delete made on another node than the one that wrote the file."""
    c = shared_cluster
    data = os.urandom(3000)
    write_file(c.node(0).path("del-elsewhere.bin"), data)
    c.wait_file("del-elsewhere.bin", data)
    os.unlink(c.node(2).path("del-elsewhere.bin"))
    c.wait_gone("del-elsewhere.bin")


def test_concurrent_distinct_files(shared_cluster):
    c = shared_cluster
    per_node = 15
    os.mkdir(c.node(0).path("conc"))
    c.wait_trees_equal(sub="conc")
    payloads = {f"conc/n{i}-f{k}.bin": os.urandom(1024 + 997 * k + i)
                for i in range(3) for k in range(per_node)}

    def writer(i):
        def run():
            for k in range(per_node):
                rel = f"conc/n{i}-f{k}.bin"
                write_file(c.node(i).path(rel), payloads[rel])
        return run

    run_threads([writer(i) for i in range(3)])
    expect = {rel: ("file", hashlib.sha256(d).hexdigest()) for rel, d in payloads.items()}
    got = c.wait_trees_equal(sub="conc")
    got = {f"conc/{k}": v for k, v in got.items()}
    assert got == expect


def test_sequential_updates_last_wins(shared_cluster):
    c = shared_cluster
    rel = "seq.txt"
    last = None
    for k in range(20):
        # sizes go up and down, so that a stale tail would show
        last = (f"version {k}\n".encode()) * (1 + (k * 37) % 50)
        write_file(c.node(0).path(rel), last)
    c.wait_file(rel, last)


def test_sequential_updates_on_follower(shared_cluster):
    """The same from a node that is not the leader (its writes go through
    forwarding), with every update read back on the others."""
    c = shared_cluster
    f = c.follower()
    rel = "seq-follower.txt"
    for k in range(10):
        data = f"update {k} from node {f}\n".encode() * (k + 1)
        write_file(c.node(f).path(rel), data)
        c.wait_file(rel, data)


def test_two_writers_same_file(shared_cluster):
    c = shared_cluster
    rel = "contended.bin"
    rounds = 8
    # distinct payloads, larger than a page and of different sizes, so that a
    # torn or interleaved result matches none of them
    pay = {(i, r): bytes([65 + i]) * 16 + os.urandom(200_000 + 4096 * r + 13 * i)
           for i in (0, 1) for r in range(rounds)}

    def writer(i):
        def run():
            for r in range(rounds):
                write_file(c.node(i).path(rel), pay[(i, r)])
        return run

    run_threads([writer(0), writer(1)])
    final = {}

    def agreed():
        vals = [read_bytes(c.node(i).path(rel)) for i in range(3)]
        vals += [read_bytes(c.node(i).bpath(rel)) for i in range(3)]
        if vals[0] is None or any(v != vals[0] for v in vals):
            return False
        final["v"] = vals[0]
        return True

    wait_for(agreed, SYNC_TIMEOUT, f"{rel} identical on all nodes after two concurrent writers")
    v = final["v"]
    assert v in (pay[(0, rounds - 1)], pay[(1, rounds - 1)]), (
        "the final content is not one writer's last payload: "
        + ("it is an earlier payload (an update was lost)" if v in pay.values()
           else f"it matches no payload ({len(v)} bytes: torn or interleaved)"))


def test_large_binary_file(shared_cluster):
    c = shared_cluster
    rel = "big.bin"
    size = 48 << 20
    every_byte = bytes(range(256)) * 4096          # 1 MiB with every byte value
    chunks = [every_byte] + [os.urandom(1 << 20) for _ in range((size >> 20) - 2)] + [every_byte[::-1]]
    h = hashlib.sha256()
    with open(c.node(1).path(rel), "wb") as f:
        for ch in chunks:
            f.write(ch)
            h.update(ch)
    want = h.hexdigest()
    assert sha256_file(c.node(1).bpath(rel)) == want

    def same_everywhere():
        for i in range(3):
            for p in (c.node(i).path(rel), c.node(i).bpath(rel)):
                try:
                    if os.stat(p).st_size != size:
                        return False
                except OSError:
                    return False
        return all(sha256_file(p) == want
                   for i in range(3) for p in (c.node(i).path(rel), c.node(i).bpath(rel)))

    wait_for(same_everywhere, 120, f"the 48 MiB {rel} identical (sha256) on all nodes",
             interval=0.05)
    os.unlink(c.node(1).path(rel))
    c.wait_gone(rel)


def test_empty_file_and_truncate(shared_cluster):
    c = shared_cluster
    write_file(c.node(0).path("empty.txt"), b"")
    c.wait_file("empty.txt", b"")
    write_file(c.node(0).path("shrink.txt"), b"x" * 10000)
    c.wait_file("shrink.txt", b"x" * 10000)
    os.truncate(c.node(1).path("shrink.txt"), 10)
    c.wait_file("shrink.txt", b"x" * 10)


def test_append(shared_cluster):
    c = shared_cluster
    write_file(c.node(0).path("append.log"), b"line 1\n")
    c.wait_file("append.log", b"line 1\n")
    write_file(c.node(1).path("append.log"), b"line 2\n", mode="ab")
    c.wait_file("append.log", b"line 1\nline 2\n")


# ------------------------------------------------------------------ .nsyncfs

def test_data_dir_invisible(shared_cluster):
    c = shared_cluster
    for i in range(3):
        nd = c.node(i)
        assert (nd.backing / DATA_DIR).is_dir(), f"node {i}: BACKING/{DATA_DIR} missing"
        assert DATA_DIR not in os.listdir(nd.mnt), f"node {i}: {DATA_DIR} listed in the mount"
        p = nd.path(DATA_DIR)
        with pytest.raises(OSError):
            os.lstat(p)
        with pytest.raises(OSError):
            os.listdir(p)
        with pytest.raises(OSError):
            open(nd.path(f"{DATA_DIR}/raft/x"), "wb").close()
        with pytest.raises(OSError):
            open(nd.path(f"{DATA_DIR}/staging/x"), "rb").close()
        with pytest.raises(OSError):
            os.mkdir(p)
        with pytest.raises(OSError):
            open(p, "wb").close()
        with pytest.raises(OSError):
            os.symlink("elsewhere", p)
    # nor can something be renamed onto it or out of it
    write_file(c.node(0).path("victim.txt"), b"v")
    with pytest.raises(OSError):
        os.rename(c.node(0).path("victim.txt"), c.node(0).path(DATA_DIR))
    with pytest.raises(OSError):
        os.rename(c.node(0).path(f"{DATA_DIR}/raft"), c.node(0).path("stolen"))
    for i in range(3):
        assert (c.node(i).backing / DATA_DIR / "raft").is_dir(), f"node {i}: raft/ was harmed"
    assert not exists(c.node(0).path("stolen"))


# ------------------------------------------------------------------ secondary

@pytest.mark.secondary
def test_mkdir_nested_rmdir(shared_cluster):
    c = shared_cluster
    m = c.node(0).path
    os.makedirs(m("tree/a/b/c"))
    write_file(m("tree/a/one.txt"), b"1")
    write_file(m("tree/a/b/c/deep.txt"), b"deep")
    os.mkdir(m("tree/empty"))
    want = {
        "a": ("dir",), "a/b": ("dir",), "a/b/c": ("dir",),
        "a/one.txt": ("file", hashlib.sha256(b"1").hexdigest()),
        "a/b/c/deep.txt": ("file", hashlib.sha256(b"deep").hexdigest()),
        "empty": ("dir",),
    }
    assert c.wait_trees_equal(sub="tree") == want
    # rmdir of an empty dir, and a whole subtree removed from another node
    os.rmdir(c.node(1).path("tree/empty"))
    os.unlink(c.node(2).path("tree/a/b/c/deep.txt"))
    os.rmdir(c.node(2).path("tree/a/b/c"))
    os.rmdir(c.node(2).path("tree/a/b"))
    want = {"a": ("dir",), "a/one.txt": ("file", hashlib.sha256(b"1").hexdigest())}
    assert c.wait_trees_equal(sub="tree") == want
    # rmdir of a non-empty directory fails and changes nothing
    with pytest.raises(OSError) as ei:
        os.rmdir(c.node(0).path("tree/a"))
    assert ei.value.errno in (errno.ENOTEMPTY, errno.EEXIST)


@pytest.mark.secondary
def test_symlink(shared_cluster):
    c = shared_cluster
    os.mkdir(c.node(0).path("links"))
    write_file(c.node(0).path("links/target.txt"), b"target")
    os.symlink("target.txt", c.node(0).path("links/rel-link"))
    os.symlink("/nonexistent/absolute", c.node(0).path("links/dangling"))
    t = c.wait_trees_equal(sub="links")
    assert t["rel-link"] == ("link", "target.txt")
    assert t["dangling"] == ("link", "/nonexistent/absolute")
    for i in range(3):
        assert read_bytes(c.node(i).path("links/rel-link")) == b"target"
    os.unlink(c.node(1).path("links/rel-link"))
    c.wait_gone("links/rel-link")


@pytest.mark.secondary
def test_chmod(shared_cluster):
    c = shared_cluster
    write_file(c.node(0).path("mode.sh"), b"#!/bin/sh\n")
    os.chmod(c.node(0).path("mode.sh"), 0o751)
    os.mkdir(c.node(0).path("mode-dir"))
    os.chmod(c.node(0).path("mode-dir"), 0o705)

    def modes_ok():
        for i in range(3):
            for base in (c.node(i).mnt, c.node(i).backing):
                if (os.stat(base / "mode.sh").st_mode & 0o7777) != 0o751:
                    return False
                if (os.stat(base / "mode-dir").st_mode & 0o7777) != 0o705:
                    return False
        return True

    wait_for(modes_ok, SYNC_TIMEOUT, "mode 0751 on mode.sh and 0705 on mode-dir everywhere")


def test_create_modes_follow_the_callers_umask(shared_cluster):
    """The mode a create asks for, less the caller's umask, on every node
    (the daemon's own umask must not strip more); owners and set-id bits
    travel too."""
    c = shared_cluster
    n0 = c.node(0)
    old = os.umask(0o027)
    try:
        fd = os.open(n0.path("umask-file"), os.O_WRONLY | os.O_CREAT, 0o666)
        os.write(fd, b"u")
        os.close(fd)
        os.mkdir(n0.path("umask-dir"), 0o777)
        os.umask(0)
        fd = os.open(n0.path("umask-open"), os.O_WRONLY | os.O_CREAT, 0o4777)
        os.close(fd)
        write_file(n0.path("umask-other"), b"o")
        os.chown(n0.path("umask-other"), 1234, 5678)
    finally:
        os.umask(old)
    want = {"umask-file": (0o100640, 0, 0), "umask-dir": (0o040750, 0, 0),
            "umask-open": (0o104777, 0, 0), "umask-other": (None, 1234, 5678)}

    def got(base, name):
        st = os.lstat(base / name)
        return (st.st_mode, st.st_uid, st.st_gid)

    def same(have, w):
        return (w[0] is None or have[0] == w[0]) and have[1:] == w[1:]

    for name, w in want.items():
        assert same(got(n0.mnt, name), w), (name, oct(got(n0.mnt, name)[0]))

    def everywhere():
        return all(same(got(base, name), w) for i in range(3)
                   for base in (c.node(i).mnt, c.node(i).backing) for name, w in want.items())

    wait_for(everywhere, SYNC_TIMEOUT, "modes and owners of the new nodes on every node")


def test_open_reader_keeps_its_version_when_replaced(shared_cluster):
    """A reader that has a file open on one node while another node replaces
    it keeps reading the version it opened, whole, and fstat on its fd gives
    that version's size; the path (stat, a new open) gives the new version.
    Each installed version is a new inode for the kernel, so the two never
    share a cached size or page cache."""
    c = shared_cluster
    rel = "replaced-under-reader.bin"
    v1 = b"1" * 100 + os.urandom(20000)
    v2 = b"2" * 100 + os.urandom(3000)
    write_file(c.node(0).path(rel), v1)
    c.wait_file(rel, v1)
    with open(c.node(1).path(rel), "rb", buffering=0) as f:
        head = f.read(100)
        write_file(c.node(0).path(rel), v2)
        c.wait_file(rel, v2, idxs=[1], backing=True)
        assert os.stat(c.node(1).path(rel)).st_size == len(v2)
        assert os.fstat(f.fileno()).st_size == len(v1)
        assert read_bytes(c.node(1).path(rel)) == v2
        rest = f.read()
        assert os.fstat(f.fileno()).st_size == len(v1)
    assert head + rest == v1, f"the reader got {len(head + rest)} bytes, not its version's"


@pytest.mark.secondary
def test_mtime(shared_cluster):
    c = shared_cluster
    write_file(c.node(0).path("mtime.txt"), b"old")
    when = 1_500_000_000_123_456_789
    os.utime(c.node(0).path("mtime.txt"), ns=(when, when))
    wait_for(lambda: all(os.stat(c.node(i).path("mtime.txt")).st_mtime_ns == when
                         for i in range(3)),
             SYNC_TIMEOUT, "the set mtime on every node")


@pytest.mark.secondary
def test_rename(shared_cluster):
    c = shared_cluster
    os.makedirs(c.node(0).path("ren/dir/sub"))
    write_file(c.node(0).path("ren/a.txt"), b"A" * 3000)
    write_file(c.node(0).path("ren/dir/sub/x.txt"), b"x")
    write_file(c.node(0).path("ren/over.txt"), b"to be replaced")
    c.wait_trees_equal(sub="ren")
    # file rename, rename over an existing file, directory rename (subtree)
    os.rename(c.node(1).path("ren/a.txt"), c.node(1).path("ren/b.txt"))
    write_file(c.node(1).path("ren/new.txt"), b"new")
    os.rename(c.node(1).path("ren/new.txt"), c.node(1).path("ren/over.txt"))
    os.rename(c.node(2).path("ren/dir"), c.node(2).path("ren/moved"))
    want = {
        "b.txt": ("file", hashlib.sha256(b"A" * 3000).hexdigest()),
        "over.txt": ("file", hashlib.sha256(b"new").hexdigest()),
        "moved": ("dir",), "moved/sub": ("dir",),
        "moved/sub/x.txt": ("file", hashlib.sha256(b"x").hexdigest()),
    }
    assert c.wait_trees_equal(sub="ren") == want


@pytest.mark.secondary
def test_hard_link_refused(shared_cluster):
    """docs/decisions.md: link() fails with EPERM."""
    c = shared_cluster
    write_file(c.node(0).path("hl.txt"), b"h")
    with pytest.raises(OSError) as ei:
        os.link(c.node(0).path("hl.txt"), c.node(0).path("hl2.txt"))
    assert ei.value.errno == errno.EPERM


# ------------------------------------------------------------------ overall

def test_zz_all_trees_identical(shared_cluster):
    """After everything above (it is the module's last test): every node's mount and
    BACKING show one tree, modes included."""
    c = shared_cluster
    t = c.wait_trees_equal(modes=True, timeout=60, interval=0.1)
    assert tree(c.node(0).mnt) == tree(c.node(0).backing)
    assert t, "the shared tree is empty"
