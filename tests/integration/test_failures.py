"""Nodes going away and coming back. Destructive, so each test gets its own
fresh cluster."""
import errno
import os
import time

import pytest

from nsynctest import HOST, SYNC_TIMEOUT, _no_leader, exists, read_bytes, wait_for, write_file


def _prepare(c, w):
    m = c.node(w).path
    os.makedirs(m("d/sub"))
    write_file(m("keep.txt"), b"keep")
    write_file(m("mod.txt"), b"old content " * 100)
    write_file(m("del.txt"), b"to be deleted")
    write_file(m("d/sub/gone.txt"), b"gone")
    write_file(m("d/stays.txt"), b"stays")
    c.wait_trees_equal()


def _change_while_down(c, w, o):
    m = c.node(w).path
    write_file(m("mod.txt"), b"new content")
    os.unlink(m("del.txt"))
    os.unlink(m("d/sub/gone.txt"))
    os.rmdir(m("d/sub"))
    write_file(m("new.txt"), b"new file")
    os.makedirs(m("newdir/x"))
    write_file(m("newdir/x/f.bin"), os.urandom(300_000))
    write_file(c.node(o).path("from-other.txt"), b"written on the other survivor")
    c.wait_trees_equal([w, o])


@pytest.mark.parametrize("victim,how", [
    ("follower", "stop"), ("follower", "kill9"), ("leader", "stop"), ("leader", "kill9"),
])
def test_node_down_catches_up(cluster, victim, how):
    c = cluster
    lead = c.leader()
    v = lead if victim == "leader" else next(i for i in range(3) if i != lead)
    w, o = [i for i in range(3) if i != v]
    _prepare(c, w)

    if how == "stop":
        c.stop(v)          # fusermount3 -u must make it leave and exit 0
    else:
        c.kill9(v)
    assert not c.node(v).mounted()
    c.wait_ready([w, o])   # the survivors agree on a leader (a new one if it was the leader)

    _change_while_down(c, w, o)
    # v really missed all of it (else this test would prove nothing)
    assert read_bytes(c.node(v).bpath("del.txt")) == b"to be deleted"
    assert read_bytes(c.node(v).bpath("mod.txt")) == b"old content " * 100
    assert not exists(c.node(v).bpath("new.txt"))

    c.start(v)
    c.wait_trees_equal()
    nv = c.node(v)
    assert read_bytes(nv.path("mod.txt")) == b"new content"
    assert not exists(nv.path("del.txt")) and not exists(nv.bpath("del.txt"))
    assert not exists(nv.bpath("d/sub"))
    assert read_bytes(nv.path("keep.txt")) == b"keep"
    assert read_bytes(nv.path("from-other.txt")) == b"written on the other survivor"

    # and the returning node is a full writer again
    write_file(nv.path("after.txt"), b"after the return")
    c.wait_file("after.txt", b"after the return")


def test_restart_over_stale_mount(cluster):
    """kill -9 leaves a stale mount ("Transport endpoint is not connected");
    starting the node again over it must work, not hang."""
    c = cluster
    v = c.follower()
    write_file(c.node(v).path("before.txt"), b"before")
    c.wait_file("before.txt", b"before")
    c.kill9(v, clear_mount=False)

    def stale():
        # The kernel may answer from attributes it cached just before the
        # crash (attr_timeout), so the dead connection shows within a second.
        try:
            os.stat(c.node(v).mnt)
            return False
        except OSError as e:
            assert e.errno == errno.ENOTCONN, f"expected ENOTCONN, got {e!r}"
            return True
    wait_for(stale, 5, f"node {v}'s mount to report ENOTCONN after kill -9")
    w = next(i for i in range(3) if i != v)
    c.wait_ready([i for i in range(3) if i != v])
    write_file(c.node(w).path("while-down.txt"), b"missed")
    c.start(v)
    c.wait_file("while-down.txt", b"missed")
    c.wait_trees_equal()


def test_leave_shrinks_the_cluster(cluster):
    """A clean leave is not a crash: after two nodes unmount, the last one
    alone still has a quorum and accepts writes; both come back and catch up."""
    c = cluster
    lead = c.leader()
    last = next(i for i in range(3) if i != lead)
    gone = [i for i in range(3) if i != last]
    write_file(c.node(last).path("one.txt"), b"1")
    c.wait_file("one.txt", b"1")
    for i in gone:                       # the leader goes first
        c.stop(i)
    c.wait_ready([last])
    write_file(c.node(last).path("alone.txt"), b"written alone")
    os.unlink(c.node(last).path("one.txt"))
    for i in gone:
        c.start(i)
    c.wait_ready()
    c.wait_file("alone.txt", b"written alone")
    c.wait_gone("one.txt")
    c.wait_trees_equal()


@pytest.mark.expect_log_errors(r"cluster command \d+ on \S+ failed: Read-only file system")
def test_quorum_loss_is_read_only_then_heals(cluster_factory):
    c = cluster_factory(3, extra_args=["-o", "submit_timeout=2,lock_timeout=2"], name="quorum")
    lead = c.leader()
    w = next(i for i in range(3) if i != lead)
    dead = [i for i in range(3) if i != w]
    write_file(c.node(w).path("exists.txt"), b"readable")
    c.wait_file("exists.txt", b"readable")
    dead_names = []
    for i in dead:
        st = c.node(i).status()
        dead_names += [f"{HOST}:{c.node(i).cport}"] + ([str(st["node"])] if "node" in st else [])
    for i in dead:
        c.kill9(i)

    # A new file closed in the first moment after the loss, before node w
    # notices it (an election timeout), is accepted and committed once the
    # quorum is back (test_fastpath.py); from then on writes are refused.
    wait_for(lambda: _no_leader(str(c.node(w).status().get("leader", ""))), 10,
             f"node {w} to notice it has no leader")
    log_start = c.node(w).log_path.stat().st_size
    t0 = time.monotonic()
    with pytest.raises(OSError) as ei:
        write_file(c.node(w).path("no-quorum.txt"), b"x")
    took = time.monotonic() - t0
    assert ei.value.errno == errno.EROFS, f"expected EROFS, got {ei.value!r}"
    assert took < 30, f"the failing write took {took:.1f} s (submit_timeout=2)"
    with pytest.raises(OSError) as ei:
        write_file(c.node(w).path("exists.txt"), b"overwrite")
    assert ei.value.errno == errno.EROFS
    # reads keep working
    assert read_bytes(c.node(w).path("exists.txt")) == b"readable"
    assert "exists.txt" in os.listdir(c.node(w).mnt)
    assert not exists(c.node(w).bpath("no-quorum.txt"))

    def log_names_a_peer():
        with open(c.node(w).log_path, "rb") as f:
            f.seek(log_start)
            new = f.read().decode(errors="replace")
        return any(n in new for n in dead_names)

    wait_for(log_names_a_peer, 10, f"a log line on node {w} naming an unreachable peer "
             f"(one of {dead_names})")

    # heal: the dead come back; node w was never restarted
    for i in dead:
        c.start(i, wait=False)
    c.wait_ready()
    wait_for(lambda: _try_write(c.node(w).path("healed.txt"), b"healed"), SYNC_TIMEOUT,
             "a write on the surviving node to succeed again once the quorum is back",
             interval=0.2)
    c.wait_file("healed.txt", b"healed")


def _try_write(path, data):
    try:
        write_file(path, data)
        return True
    except OSError:
        return False


@pytest.mark.parametrize("rounds", [3])
def test_settled_deletes_stay_deleted_after_restart(cluster, rounds):
    """A restarted node replays its raft log: each file goes live, is reported
    held by this node's earlier life, is deleted, and leaves the catalog in
    quick succession. Nothing of it may come back in its BACKING."""
    c = cluster
    lead = c.leader()
    v = next(i for i in range(3) if i != lead)
    w = next(i for i in range(3) if i not in (v, lead))
    m = c.node(w).path
    os.makedirs(m("d"))
    for r in range(rounds):
        for i in range(150):
            write_file(m(f"d/f{r}-{i}"), b"x" * (i + 1))
        c.wait_file(f"d/f{r}-149", b"x" * 150)
        for i in range(150):
            os.unlink(m(f"d/f{r}-{i}"))
        c.wait_gone(f"d/f{r}-149")

        def settled():  # every tombstone forgotten: "d" and the earlier rounds' "after" are left
            return all(c.node(i).status().get("catalog_entries") == 1 + r for i in range(3))
        wait_for(settled, SYNC_TIMEOUT, "tombstones forgotten on every node")
        c.kill9(v)
        c.start(v)
        c.wait_ready()

        def applied():
            s = c.node(v).status()
            return s.get("catalog_entries") == 1 + r and s.get("pending_entries") == 0
        wait_for(applied, SYNC_TIMEOUT, "restarted node caught up")
        # One more change after the restart, so the fetch worker has acted on
        # everything before it by the time this one is installed.
        write_file(m(f"after{r}"), b"after")
        c.wait_file(f"after{r}", b"after")
        left = sorted(os.listdir(c.node(v).bpath("d")))
        assert left == [], f"round {r}: deleted files back on node {v}: {left[:10]}"
