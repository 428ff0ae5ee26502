"""Fifos, unix sockets and device nodes made through node 0's mount arrive as
the same kind of object (mode, owner, rdev) on every node; their chmod,
chown, rename and unlink replicate; a restarted node and a freshly joined
empty node get them. And times: an atime set by the user survives nsyncfs's
own reads (hashing, serving, installing) on every node."""
import os
import stat
import subprocess
import sys

from nsynctest import SYNC_TIMEOUT, Node, free_ports, wait_for, write_file

ATIME_NS = 100_000_000 * 1_000_000_000  # touch -a -d @100000000


def _make_nodes(c, w, sub):
    """A fifo, a bound unix socket, a char and a block device under sub on node w."""
    m = c.node(w).path
    os.makedirs(m(sub))
    os.mkfifo(m(f"{sub}/fifo"), 0o640)
    os.mknod(m(f"{sub}/null"), 0o640 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(m(f"{sub}/loop"), 0o600 | stat.S_IFBLK, os.makedev(7, 200))
    # bind(2) makes the socket's node through the mount (a relative name: the
    # absolute path may pass sun_path's 108 bytes).
    subprocess.run([sys.executable, "-c",
                    "import socket; s = socket.socket(socket.AF_UNIX); s.bind('sock')"],
                   cwd=m(sub), check=True, timeout=30)
    os.chown(m(f"{sub}/fifo"), 1234, 5678)


def _picture(root):
    """{name: (type, mode, uid, gid, rdev)} of the entries directly in root."""
    out = {}
    for name in sorted(os.listdir(root)):
        st = os.lstat(os.path.join(root, name))
        out[name] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                     st.st_rdev)
    return out


def _same_everywhere(c, sub, want, idxs=None):
    """Every node's mount and BACKING show exactly want under sub."""
    idxs = c.running_idx() if idxs is None else idxs
    last = {}

    def ok():
        for i in idxs:
            for root in (c.node(i).mnt, c.node(i).backing):
                try:
                    got = _picture(os.path.join(root, sub))
                except OSError as e:
                    got = repr(e)
                if got != want:
                    last["diff"] = f"node {i} {root}: {got} != {want}"
                    return False
        return True

    try:
        wait_for(ok, SYNC_TIMEOUT, f"the nodes under {sub} on nodes {idxs}")
    except AssertionError as e:
        raise AssertionError(f"{e}: {last.get('diff')}") from None


def _expected(sock_path):
    """What _make_nodes made (the socket's mode is bind's: 0777 less the umask)."""
    return {
        "fifo": (stat.S_IFIFO, 0o640, 1234, 5678, 0),
        "loop": (stat.S_IFBLK, 0o600, 0, 0, os.makedev(7, 200)),
        "null": (stat.S_IFCHR, 0o640, 0, 0, os.makedev(1, 3)),
        "sock": (stat.S_IFSOCK, stat.S_IMODE(os.lstat(sock_path).st_mode), 0, 0, 0),
    }


def test_nodes_replicate_with_kind_mode_owner_rdev(cluster):
    c = cluster
    _make_nodes(c, 0, "k")
    want = _expected(c.node(0).path("k/sock"))
    assert _picture(c.node(0).path("k")) == want
    _same_everywhere(c, "k", want)

    # A fifo made through the mount works as one on its node.
    fifo = c.node(1).path("k/fifo")
    r = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    w = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    os.write(w, b"x")
    assert os.read(r, 1) == b"x"
    os.close(w)
    os.close(r)

    # chmod, chown, rename, unlink of them replicate.
    m = c.node(0).path
    os.chmod(m("k/fifo"), 0o604)
    os.chown(m("k/null"), 42, 43)
    os.rename(m("k/loop"), m("k/loop2"))
    os.unlink(m("k/sock"))
    want["fifo"] = (stat.S_IFIFO, 0o604, 1234, 5678, 0)
    want["null"] = (stat.S_IFCHR, 0o640, 42, 43, os.makedev(1, 3))
    want["loop2"] = want.pop("loop")
    del want["sock"]
    _same_everywhere(c, "k", want)


def test_restarted_and_joined_nodes_get_them(cluster):
    c = cluster
    c.stop(2)
    _make_nodes(c, 0, "r")
    want = _expected(c.node(0).path("r/sock"))
    _same_everywhere(c, "r", want, idxs=[0, 1])
    c.start(2)
    _same_everywhere(c, "r", want)

    # A node that was never a member, with an empty BACKING.
    cport, fport = free_ports(2)
    new = Node(c, len(c.nodes), c.base, cport, fport)
    c.nodes.append(new)
    assert not os.path.exists(new.backing) or not os.listdir(new.backing)
    new.spawn()
    c.wait_ready()
    _same_everywhere(c, "r", want)
    c.wait_trees_equal(modes=True)


def _atime(path):
    return os.stat(path).st_atime_ns


def test_user_set_atime_survives_on_every_node(cluster):
    c = cluster
    m = c.node(0).path
    # Inline (small) and fetched (large) files: the large one is read by
    # node 0's file server for the others.
    write_file(m("t"), b"small\n")
    write_file(m("big"), os.urandom(300_000))
    for name in ("t", "big"):
        mt = os.stat(m(name)).st_mtime_ns
        os.utime(m(name), ns=(ATIME_NS, mt))  # touch -a -d @100000000
        os.chmod(m(name), 0o600)
        assert _atime(m(name)) == ATIME_NS
    for name in ("t", "big"):
        for i in range(3):
            for path in (c.node(i).path(name), str(c.node(i).backing / name)):
                wait_for(lambda: os.path.exists(path) and _atime(path) == ATIME_NS and
                         stat.S_IMODE(os.stat(path).st_mode) == 0o600, SYNC_TIMEOUT,
                         f"{name}'s atime and mode on node {i} ({path})")
    # `stat -c %X` as the issue reads it.
    for i in range(3):
        out = subprocess.run(["stat", "-c", "%X", c.node(i).path("t")], capture_output=True,
                             text=True, check=True, timeout=10).stdout.strip()
        assert out == "100000000", f"node {i}"


def test_directory_mtimes_converge_to_the_writers(cluster):
    """Making and removing names stamps a directory; every node ends with the
    writer's stamp, not the time it installed the child itself."""
    c = cluster
    m = c.node(0).path
    os.makedirs(m("dm/a/b"))
    os.makedirs(m("dm/c"))
    write_file(m("dm/a/f"), b"one\n")
    write_file(m("dm/a/b/big"), os.urandom(200_000))  # fetched, not inline
    os.symlink("f", m("dm/a/l"))
    os.mkfifo(m("dm/a/b/p"))
    write_file(m("dm/c/gone"), b"x")
    os.unlink(m("dm/c/gone"))
    os.rename(m("dm/a/f"), m("dm/c/f"))
    dirs = ("dm", "dm/a", "dm/a/b", "dm/c")
    want = {d: os.stat(m(d)).st_mtime_ns for d in dirs}
    c.wait_trees_equal(sub="dm")
    for i in (1, 2):
        for d in dirs:
            for path in (c.node(i).path(d), str(c.node(i).backing / d)):
                wait_for(lambda: os.stat(path).st_mtime_ns == want[d], SYNC_TIMEOUT,
                         f"{d}'s mtime on node {i} ({path}) to be the writer's")
