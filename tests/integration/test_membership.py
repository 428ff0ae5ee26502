"""Membership: a node that was never part of the cluster joins a running one
and receives the whole tree (the initial sync), a node that left rejoins and
catches up, and the catch-up shows in /v1/status."""
import os

from nsynctest import (SYNC_TIMEOUT, Node, free_ports, read_bytes, wait_for,
                       write_file)


def _add_node(c):
    """A new node object for cluster c (not started): its --cluster lists
    every node, the existing ones included."""
    cport, fport = free_ports(2)
    nd = Node(c, len(c.nodes), c.base, cport, fport)
    c.nodes.append(nd)
    return nd


def _populate(c, w):
    m = c.node(w).path
    os.makedirs(m("tree/a/b"))
    write_file(m("tree/top.txt"), b"top level\n")
    write_file(m("tree/a/b/deep.bin"), os.urandom(200_000))
    for i in range(40):
        write_file(m(f"tree/a/many-{i:02d}.txt"), f"file {i}\n".encode() * (i + 1))
    os.symlink("a/b/deep.bin", m("tree/link"))
    os.chmod(m("tree/top.txt"), 0o640)
    os.chmod(m("tree/a"), 0o750)
    os.utime(m("tree/top.txt"), ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))


def test_empty_node_joins_and_gets_the_whole_tree(cluster):
    c = cluster
    w = c.leader()
    _populate(c, w)
    c.wait_trees_equal(modes=True)

    new = _add_node(c)
    assert not os.listdir(new.backing)
    new.spawn()
    c.wait_ready()
    # Every node, the newcomer included, shows the same tree: files,
    # directories, the symlink, modes.
    c.wait_trees_equal(modes=True, timeout=SYNC_TIMEOUT * 2)
    assert os.readlink(new.path("tree/link")) == "a/b/deep.bin"
    assert os.stat(new.path("tree/top.txt")).st_mtime_ns == 1_600_000_000_000_000_000
    # Four members now; the newcomer has nothing left to fetch.
    st = new.status()
    assert len(st["members"]) == 4
    wait_for(lambda: new.status()["catchup"]["entries"] == 0, SYNC_TIMEOUT,
             "the newcomer's catch-up to reach 0 entries")
    assert new.status()["catchup"]["bytes"] == 0

    # It is a full member: its writes reach the others, theirs reach it.
    write_file(new.path("from-new.txt"), b"written on the newcomer")
    c.wait_file("from-new.txt", b"written on the newcomer")
    write_file(c.node(w).path("to-new.txt"), b"written for the newcomer")
    c.wait_file("to-new.txt", b"written for the newcomer")


def test_rejoin_after_leave_gets_writes_changes_and_deletes(cluster):
    c = cluster
    v = c.follower()
    w = next(i for i in range(3) if i != v)
    m = c.node(w).path
    write_file(m("keep.txt"), b"kept")
    write_file(m("change.txt"), b"old")
    write_file(m("delete.txt"), b"doomed")
    os.makedirs(m("dir/sub"))
    write_file(m("dir/sub/gone.txt"), b"gone too")
    c.wait_trees_equal()

    c.stop(v)  # a clean leave
    # The two remaining nodes still form a quorum and write.
    write_file(m("change.txt"), b"new content")
    write_file(m("added.txt"), b"added while away")
    os.unlink(m("delete.txt"))
    os.unlink(m("dir/sub/gone.txt"))
    os.rmdir(m("dir/sub"))
    c.wait_trees_equal([i for i in range(3) if i != v])
    assert read_bytes(c.node(v).bpath("delete.txt")) == b"doomed"
    # Written straight into BACKING while the node was out: never deleted,
    # announced to the cluster when it comes back.
    os.makedirs(c.node(v).bpath("local-only"))
    write_file(c.node(v).bpath("local-only/made-while-away.txt"), b"local bytes")
    # Changed here while away, and (change.txt) in the cluster too: the
    # cluster's version wins, the local edit is kept beside it.
    write_file(c.node(v).bpath("change.txt"), b"edited locally while away")

    c.start(v)
    c.wait_file("local-only/made-while-away.txt", b"local bytes")

    def conflict_copies():
        names = [n for n in os.listdir(c.node(w).mnt) if n.startswith("change.txt.nsync-conflict-")]
        return names if len(names) == 1 else None
    name = wait_for(conflict_copies, SYNC_TIMEOUT, "one conflict copy of change.txt")[0]
    c.wait_file(name, b"edited locally while away")
    c.wait_trees_equal()
    nd = c.node(v)
    assert read_bytes(nd.path("change.txt")) == b"new content"
    assert read_bytes(nd.path("added.txt")) == b"added while away"
    assert not os.path.exists(nd.bpath("delete.txt"))
    assert not os.path.exists(nd.bpath("dir/sub"))


def test_sigterm_is_a_clean_leave(cluster):
    """SIGTERM leaves like an unmount: the process exits 0 with its mount
    gone, and the two others go on as a cluster of two whose entries settle
    without waiting for it."""
    import signal
    c = cluster
    v = c.leader()  # the leader, so the hand-over is exercised too
    nd = c.node(v)
    nd.proc.send_signal(signal.SIGTERM)
    assert nd.proc.wait(timeout=SYNC_TIMEOUT) == 0
    wait_for(lambda: not nd.mounted(), 5, f"node {v}'s mount to go away")
    rest = [i for i in range(3) if i != v]
    c.wait_ready(rest)
    write_file(c.node(rest[0]).path("after-sigterm.txt"), b"two nodes")
    c.wait_file("after-sigterm.txt", b"two nodes", idxs=rest)
    for i in rest:
        wait_for(lambda i=i: len(c.node(i).status()["members"]) == 2 and
                 c.node(i).status()["pending_entries"] == 0, SYNC_TIMEOUT,
                 f"node {i}: two members and nothing pending")
