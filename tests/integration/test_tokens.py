"""Cached path locks (docs/locks.md): a node keeps a path's cluster lock after
its last local user is done and hands it over when another node asks. Every
test runs with a lock_timeout shorter than the lease, so a write on another
node can only get the path through a hand-over, never by waiting the holder's
lease out."""
import os

import pytest

from nsynctest import SYNC_TIMEOUT, read_bytes, wait_for, write_file

OPTS = ["-o", "lock_timeout=5,lease=10"]


def _locks(nd):
    return (nd.try_status() or {}).get("locks_held")


def test_lock_handed_over_on_request(cluster_factory):
    c = cluster_factory(3, extra_args=OPTS, name="handover")
    a, b = 0, 1
    write_file(c.node(a).path("f.txt"), b"from a")
    c.wait_file("f.txt", b"from a")
    wait_for(lambda: _locks(c.node(a)) == 1, SYNC_TIMEOUT, "node a to keep f.txt's lock cached")
    assert _locks(c.node(b)) == 0

    write_file(c.node(b).path("f.txt"), b"from b")  # EBUSY after 5 s without a hand-over
    c.wait_file("f.txt", b"from b")
    wait_for(lambda: _locks(c.node(a)) == 0 and _locks(c.node(b)) == 1, SYNC_TIMEOUT,
             "the lock to move from node a to node b")
    # and back, metadata this time
    os.chmod(c.node(a).path("f.txt"), 0o600)
    wait_for(lambda: all(os.stat(c.node(i).bpath("f.txt")).st_mode & 0o777 == 0o600
                         for i in range(3)), SYNC_TIMEOUT, "the chmod on every node")
    assert read_bytes(c.node(a).path("f.txt")) == b"from b"


def test_alternating_appenders(cluster_factory):
    """Two nodes append to one log in turn: every line lands, in order, on
    every node (each turn is a hand-over, and each writer starts from the
    other's bytes)."""
    c = cluster_factory(3, extra_args=OPTS, name="appenders")
    # Created first: two creates of one new name at once on two nodes are
    # a conflict (one of them becomes a conflict copy), not what this tests.
    write_file(c.node(0).path("log.txt"), b"")
    c.wait_file("log.txt", b"")
    want = b""
    for i in range(20):
        for n in (0, 2):
            line = b"node %d line %d\n" % (n, i)
            with open(c.node(n).path("log.txt"), "ab") as f:
                f.write(line)
            want += line
    c.wait_file("log.txt", want)


def test_cached_lock_expires_when_idle(cluster_factory):
    c = cluster_factory(3, extra_args=["-o", "lock_cache=1"], name="idle")
    write_file(c.node(0).path("idle.txt"), b"x")
    c.wait_file("idle.txt", b"x")
    wait_for(lambda: _locks(c.node(0)) == 0, 10, "the idle cached lock to be given back")


def test_no_cache(cluster_factory):
    """lock_cache=0: every last user gives the lock back with its announce."""
    c = cluster_factory(3, extra_args=["-o", "lock_cache=0"], name="nocache")
    write_file(c.node(0).path("n.txt"), b"x")
    os.chmod(c.node(0).path("n.txt"), 0o640)
    c.wait_file("n.txt", b"x")
    wait_for(lambda: _locks(c.node(0)) == 0, SYNC_TIMEOUT, "no lock left on node 0")


def test_metadata_and_renames_on_cached_locks(cluster_factory):
    """What rsync and tar do with each file (create a temporary name, write,
    set mode and times, rename over the final name), on one node, and a
    delete of some: every node ends with the same tree, modes and times."""
    c = cluster_factory(3, extra_args=OPTS, name="rsyncish")
    m = c.node(0).path
    os.makedirs(m("t"))
    for i in range(50):
        tmp, final = m(f"t/.f{i}.tmp"), m(f"t/f{i}")
        write_file(tmp, b"data %d" % i)
        os.chmod(tmp, 0o640)
        os.utime(tmp, ns=(1_000_000_000 + i, 1_000_000_000 + i))
        os.rename(tmp, final)
    for i in range(0, 50, 5):
        os.unlink(m(f"t/f{i}"))
    c.wait_trees_equal(modes=True)
    for i in range(1, 50, 5):
        st = os.stat(c.node(2).bpath(f"t/f{i}"))
        assert st.st_mode & 0o777 == 0o640 and st.st_mtime_ns == 1_000_000_000 + i
    assert not os.path.exists(c.node(2).bpath("t/f0"))


@pytest.mark.expect_log_errors(r"cluster command \d+ on \S+ failed",
                               r"not announced to the cluster")
def test_stale_cached_lock_after_partition(cluster_factory):
    """A node cut off past its lease loses its cached locks: another node
    takes the path meanwhile, and after the heal the first node's next write
    asks again and starts from the other's bytes (no conflict copy)."""
    c = cluster_factory(3, extra_args=["-o", "lock_timeout=5,lease=2,submit_timeout=3"],
                        name="stale", netcut=True)
    lead = c.leader()
    a = next(i for i in range(3) if i != lead)
    write_file(c.node(a).path("s.txt"), b"v1 from a")
    c.wait_file("s.txt", b"v1 from a")
    wait_for(lambda: _locks(c.node(a)) == 1, SYNC_TIMEOUT, "node a to keep s.txt's lock cached")

    c.net.isolate(a)
    wait_for(lambda: (c.node(a).try_status() or {}).get("writable") is False, 10,
             f"the cut-off node {a} to say writable=false")
    write_file(c.node(lead).path("s.txt"), b"v2 from the majority")
    c.net.heal()
    c.wait_ready()
    c.wait_file("s.txt", b"v2 from the majority")

    def write_again():
        try:
            with open(c.node(a).path("s.txt"), "ab") as f:
                f.write(b" + v3 from a")
            return True
        except OSError:
            return False  # EROFS until node a knows the quorum is back
    wait_for(write_again, SYNC_TIMEOUT, f"node {a} to write again after the heal", interval=0.2)
    c.wait_file("s.txt", b"v2 from the majority + v3 from a")
    t = c.wait_trees_equal()
    assert not [p for p in t if "conflict" in p], f"conflict copies: {sorted(t)}"


def test_rename_of_a_path_the_catalog_never_saw(cluster_factory):
    """A queued RENAME whose source the catalog does not know (put into
    BACKING behind the mount's back) is refused; the node then announces
    both paths as they are: the new name everywhere, the old one nowhere."""
    c = cluster_factory(3, extra_args=OPTS, name="unknown-src")
    write_file(c.node(0).path("seen.txt"), b"seen")
    c.wait_file("seen.txt", b"seen")
    write_file(c.node(0).bpath("behind.txt"), b"written behind the mount")
    os.rename(c.node(0).path("behind.txt"), c.node(0).path("renamed.txt"))
    os.rename(c.node(0).path("seen.txt"), c.node(0).path("seen2.txt"))
    c.wait_file("renamed.txt", b"written behind the mount")
    c.wait_file("seen2.txt", b"seen")
    t = c.wait_trees_equal()
    assert "behind.txt" not in t and "seen.txt" not in t
