"""close() that does not wait for the commit, and creates that do not wait for
the lock (issue 6): what a user must still be able to count on.

- Changes of one node commit in the order they were made (one outbox per
  node), so create-then-rename and create-then-unlink end right everywhere.
- Two nodes that create the same new name at once both keep their bytes: the
  cluster takes one, the other becomes a conflict copy, everywhere.
- A node killed right after close() returned, before its announce could be
  committed, announces the change when it comes back (the journal).

Commits are held back deterministically by freezing the leader (SIGSTOP) or
killing it: changes made meanwhile are closed locally but cannot commit."""
import os
import signal

from nsynctest import SYNC_TIMEOUT, exists, read_bytes, tree, wait_for, write_file


class Frozen:
    """SIGSTOP node i's daemon for the with-block; SIGCONT even on failure."""

    def __init__(self, cluster, i):
        self.pid = cluster.node(i).proc.pid

    def __enter__(self):
        os.kill(self.pid, signal.SIGSTOP)
        return self

    def __exit__(self, *exc):
        try:
            os.kill(self.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        return False


def test_order_of_one_nodes_changes_is_kept(cluster):
    """Write-then-rename (the atomic-save pattern) and write-then-delete, in
    quick succession on a follower, end the same on every node."""
    c = cluster
    w = c.follower()
    m = c.node(w)
    os.mkdir(m.path("save"))
    for i in range(40):
        write_file(m.path(f"save/.tmp{i}"), f"version {i}\n".encode())
        os.rename(m.path(f"save/.tmp{i}"), m.path(f"save/doc{i % 4}"))
        write_file(m.path(f"save/scratch{i}"), b"gone soon")
        os.unlink(m.path(f"save/scratch{i}"))
    t = c.wait_trees_equal(sub="save")
    names = sorted(os.path.basename(p) for p in t)
    assert names == ["doc0", "doc1", "doc2", "doc3"], names
    for k in range(4):
        c.wait_file(f"save/doc{k}", f"version {36 + k}\n".encode())


def test_same_new_name_on_two_nodes_keeps_both(cluster_factory):
    """Both followers create x while the leader is frozen: both closes
    succeed locally; once commits flow again the cluster keeps one version
    under x and the other as x.nsync-conflict-*, on all three nodes."""
    c = cluster_factory(3, name="samename")
    lead = c.leader()
    a, b = [i for i in range(3) if i != lead]
    os.mkdir(c.node(a).path("d"))
    c.wait_trees_equal(sub="d")
    data = {a: b"from node a\n" * 100, b: b"from node b\n" * 77}
    with Frozen(c, lead):
        for i in (a, b):
            write_file(c.node(i).path("d/x"), data[i])
    c.wait_ready()

    def two_names_everywhere():
        trees = [tree(c.node(i).mnt / "d") for i in range(3)]
        return len(trees[0]) == 2 and all(t == trees[0] for t in trees) and trees[0]

    t = wait_for(two_names_everywhere, SYNC_TIMEOUT, "x and one conflict copy on every node")
    names = sorted(os.path.basename(p) for p in t)
    assert names[0] == "x" and names[1].startswith("x.nsync-conflict-"), names
    for i in range(3):
        got = {read_bytes(c.node(i).path("d/" + n)) for n in names}
        assert got == {data[a], data[b]}, f"node {i} lost a version: {[len(g or b'') for g in got]}"


def test_same_new_directory_on_two_nodes_is_one_directory(cluster_factory):
    """Both followers make directory d (fresh: no lock round trip) and a file
    in it while the leader is frozen: afterwards every node has one d, no
    conflict copy of it, holding both files."""
    c = cluster_factory(3, name="samedir")
    lead = c.leader()
    a, b = [i for i in range(3) if i != lead]
    with Frozen(c, lead):
        for i in (a, b):
            os.mkdir(c.node(i).path("d"))
            write_file(c.node(i).path(f"d/from{i}"), f"node {i}\n".encode())
    c.wait_ready()

    def both_files_everywhere():
        tops = [sorted(os.listdir(c.node(i).mnt)) for i in range(3)]
        inner = [sorted(os.listdir(c.node(i).path("d"))) for i in range(3)]
        want = sorted([f"from{a}", f"from{b}"])
        return all(t == ["d"] for t in tops) and all(n == want for n in inner) and inner

    wait_for(both_files_everywhere, SYNC_TIMEOUT, "one d holding both files on every node")
    c.wait_trees_equal()
    for i in range(3):
        for k in (a, b):
            assert read_bytes(c.node(i).path(f"d/from{k}")) == f"node {k}\n".encode()


def test_crash_right_after_close_loses_nothing(cluster_factory):
    """Just after the leader died, a follower closes a new file and deletes
    another (their announces have nowhere to go until a new leader is
    elected, a second later), and is killed at once. When it comes back, its
    journal makes it announce both, and every node follows."""
    c = cluster_factory(3, name="journal")
    lead = c.leader()
    w, other = [i for i in range(3) if i != lead]
    write_file(c.node(w).path("doomed.txt"), b"to be deleted")
    c.wait_file("doomed.txt", b"to be deleted")
    # An open writer holds the file's lock, so the delete below needs no new
    # lock (which would wait for the next leader and flush everything).
    fd = os.open(c.node(w).path("doomed.txt"), os.O_WRONLY)
    data = os.urandom(50_000)
    # Its stale mount is left for its restart: clearing it first could take
    # longer than the election timeout, after which w knows there is no
    # leader and would wait for the next one instead.
    c.kill9(lead, clear_mount=False)
    write_file(c.node(w).path("late.bin"), data)
    os.unlink(c.node(w).path("doomed.txt"))
    c.kill9(w)
    try:
        os.close(fd)  # the mount is gone with its daemon
    except OSError:
        pass
    assert read_bytes(c.node(w).bpath("late.bin")) == data
    c.start(lead)
    c.wait_ready([lead, other])
    assert not exists(c.node(other).bpath("late.bin")), "the announce got out before the kill"
    c.start(w)
    c.wait_file("late.bin", data)
    c.wait_gone("doomed.txt")
    c.wait_trees_equal()
    log = c.node(w).log_path.read_text(errors="replace")
    assert "announced late.bin, closed just before a crash" in log
    assert "announced the delete of doomed.txt, made just before a crash" in log
    journal = c.node(w).bpath(".nsyncfs/unsent")
    wait_for(lambda: not exists(journal) or os.path.getsize(journal) == 0, SYNC_TIMEOUT,
             "the journal emptied once its change was announced")


def test_strict_excl_is_exclusive_across_nodes(cluster_factory):
    """With -o strict_excl, O_EXCL creates of the same names on two nodes at
    once: for every name exactly one node succeeds, the other gets EEXIST."""
    import threading

    c = cluster_factory(3, extra_args=["-o", "strict_excl"], name="strictexcl")
    lead = c.leader()
    a, b = [i for i in range(3) if i != lead]
    os.mkdir(c.node(a).path("locks"))
    c.wait_trees_equal(sub="locks")
    names = [f"locks/l{k}" for k in range(20)]
    wins = {a: set(), b: set()}
    barrier = threading.Barrier(2)

    def creator(i):
        barrier.wait(timeout=30)
        for n in names:
            try:
                fd = os.open(c.node(i).path(n), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                continue
            os.write(fd, f"held by {i}\n".encode())
            os.close(fd)
            wins[i].add(n)

    ts = [threading.Thread(target=creator, args=(i,), daemon=True) for i in (a, b)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in ts), "a creator hung"
    assert wins[a] | wins[b] == set(names), "a name nobody created"
    assert not wins[a] & wins[b], f"both nodes created {sorted(wins[a] & wins[b])}"
    t = c.wait_trees_equal(sub="locks")
    assert not [p for p in t if "conflict" in p], sorted(t)
