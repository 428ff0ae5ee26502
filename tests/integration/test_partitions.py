"""Partitions and pauses (issue 14): links between nodes cut with nftables
(netcut.py: each node in its own cgroup, rules on what its sockets send),
a node paused with SIGSTOP. After every heal the cluster converges, and
nothing a node acknowledged is lost."""
import errno
import hashlib
import os
import signal
import time

import pytest

from nsynctest import SYNC_TIMEOUT, read_bytes, wait_for, write_file

OPTS = ["-o", "submit_timeout=3,lock_timeout=5"]
# Leaderless 0.5 s after a candidate's election timeout (1-2 s), or a leader
# stepping down after its election timeout without a majority.
KNOWS_WITHIN_S = 8.0


def F(data):
    """A file with these bytes, as nsynctest.tree shows it."""
    return ("file", hashlib.sha256(data).hexdigest())


def _status(nd):
    return nd.try_status() or {}


def _try_write(path, data):
    try:
        write_file(path, data)
        return 0
    except OSError as e:
        return e.errno


def _new_leader(c, idxs, not_this):
    def ok():
        v = c.leader_view(idxs)
        return v is not None and v != not_this and (v,)
    return wait_for(ok, 15, f"nodes {idxs} to elect a leader other than node {not_this}")[0]


def _heal_and_converge(c):
    c.net.heal()
    c.wait_ready()
    return c.wait_trees_equal(timeout=30)


@pytest.mark.expect_log_errors(r"cluster command \d+ on \S+ failed",
                               r"not announced to the cluster")
def test_leader_cut_off_steps_down(cluster_factory):
    c = cluster_factory(3, extra_args=OPTS, name="cut-leader", netcut=True)
    old = c.leader()
    others = [i for i in range(3) if i != old]
    write_file(c.node(old).path("before.txt"), b"before")
    c.wait_file("before.txt", b"before")

    c.net.isolate(old)
    new = _new_leader(c, others, old)
    # The old leader steps down and knows it has no quorum: its changes fail.
    wait_for(lambda: _status(c.node(old)).get("writable") is False, KNOWS_WITHIN_S,
             f"the cut-off leader (node {old}) to say writable=false")
    assert _status(c.node(old)).get("role") != "leader"
    assert _try_write(c.node(old).path("minority.txt"), b"x") == errno.EROFS
    assert read_bytes(c.node(old).path("before.txt")) == b"before"  # still readable
    # The majority goes on.
    write_file(c.node(new).path("majority.txt"), b"written while the old leader was cut off")
    c.wait_file("majority.txt", b"written while the old leader was cut off", idxs=others)

    t = _heal_and_converge(c)
    assert "minority.txt" not in t
    assert t["majority.txt"] == F(b"written while the old leader was cut off")
    wait_for(lambda: _try_write(c.node(old).path("after.txt"), b"healed") == 0, SYNC_TIMEOUT,
             f"node {old} to write again after the heal", interval=0.2)
    c.wait_file("after.txt", b"healed")


def test_follower_cut_off(cluster_factory):
    # The follower keeps shared.txt's lock cached after its write: the others
    # get it once its lease (2 s here) runs out, within their lock_timeout.
    c = cluster_factory(3, extra_args=["-o", "submit_timeout=3,lock_timeout=5,lease=2"],
                        name="cut-follower", netcut=True)
    lead = c.leader()
    f = next(i for i in range(3) if i != lead)
    o = next(i for i in range(3) if i not in (lead, f))
    write_file(c.node(f).path("shared.txt"), b"v1")
    c.wait_file("shared.txt", b"v1")

    c.net.isolate(f)
    wait_for(lambda: _status(c.node(f)).get("writable") is False, KNOWS_WITHIN_S,
             f"the cut-off follower (node {f}) to say writable=false")
    # Pre-vote: the cut-off node's elections do not disturb the majority.
    assert c.leader_view([lead, o]) == lead
    write_file(c.node(o).path("shared.txt"), b"v2")
    os.mkdir(c.node(o).path("m"))
    for i in range(20):
        write_file(c.node(o).path(f"m/{i}.txt"), f"v2 {i}".encode())
    assert read_bytes(c.node(f).path("shared.txt")) == b"v1"  # it missed them
    c.wait_file("m/1.txt", b"v2 1", idxs=[lead, o])
    os.unlink(c.node(lead).path("m/1.txt"))

    t = _heal_and_converge(c)
    assert t["shared.txt"] == F(b"v2")
    assert "m/1.txt" not in t and t["m/19.txt"] == F(b"v2 19")
    assert c.leader_view() == lead, "the healed follower disturbed the leader"


@pytest.mark.expect_log_errors(r"cluster command \d+ on \S+ failed",
                               r"not announced to the cluster")
def test_asymmetric_cut(cluster_factory):
    """The leader reaches a follower, the follower does not reach the leader
    (its raft answers and its forwarded changes are lost)."""
    c = cluster_factory(3, extra_args=OPTS, name="cut-oneway", netcut=True)
    lead = c.leader()
    f = next(i for i in range(3) if i != lead)
    o = next(i for i in range(3) if i not in (lead, f))
    os.mkdir(c.node(lead).path("a"))
    c.wait_trees_equal()
    c.net.block(f, lead)
    # The cluster goes on, led from a side that has a majority.
    deadline = time.monotonic() + 30
    done = 0
    while time.monotonic() < deadline and done < 10:
        lv = c.leader_view([lead, o]) or c.leader_view([f, o])
        w = lv if lv is not None else o
        if _try_write(c.node(w).path(f"a/{done}.txt"), f"{done}".encode()) == 0:
            done += 1
    assert done >= 10, "the cluster made no progress with one link cut one way"
    # Whatever the cut-off follower tries either fails cleanly or is kept.
    err = _try_write(c.node(f).path("from-f.txt"), b"f")
    assert err in (0, errno.EROFS, errno.EBUSY), f"write on node {f}: {os.strerror(err)}"
    t = _heal_and_converge(c)
    if err == 0:
        assert t.get("from-f.txt") == F(b"f"), "a write node f acknowledged was lost"


@pytest.mark.expect_log_errors(r"cluster command \d+ on \S+ failed",
                               r"not announced to the cluster",
                               r"lease renewal failed")
def test_pause_longer_than_lease(cluster_factory):
    """SIGSTOP a node that holds a file's lock, longer than its lease: the
    others take the lock and go on; resumed, the paused node's change is not
    lost (it is the file, or kept as a conflict copy) and all trees agree."""
    c = cluster_factory(3, extra_args=["-o", "lease=2,submit_timeout=3,lock_timeout=10"],
                        name="pause", netcut=False)
    lead = c.leader()
    p = next(i for i in range(3) if i != lead)
    o = next(i for i in range(3) if i not in (lead, p))
    write_file(c.node(p).path("held.txt"), b"v0")
    c.wait_file("held.txt", b"v0")
    fd = os.open(c.node(p).path("held.txt"), os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, b"paused node's bytes")  # p holds the lock now
        pid = c.node(p).proc.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            write_file(c.node(o).path("held.txt"), b"other node's bytes")  # after the lease
            took = time.monotonic() - t0
            c.wait_file("held.txt", b"other node's bytes", idxs=[lead, o])
        finally:
            os.kill(pid, signal.SIGCONT)
        assert took >= 1.0, f"node {o} wrote a locked file after {took:.2f} s, before the lease ran out"
    finally:
        try:
            os.close(fd)
        except OSError:
            pass
    t = c.wait_trees_equal(timeout=30)
    copies = [k for k in t if k.startswith("held.txt.nsync-conflict-")]
    kept = [t["held.txt"]] + [t[k] for k in copies]
    assert F(b"paused node's bytes") in kept, f"the paused node's change was lost: {sorted(t)}"
    assert F(b"other node's bytes") in kept, f"the other node's change was lost: {sorted(t)}"
