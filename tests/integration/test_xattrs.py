"""Extended attributes and POSIX ACLs (issue 16, point 3): set, read, listed
and removed through the mount, replicated as part of the file's version (so
a metadata-only change moves no bytes, and a reader never sees a version's
bytes with older attributes), enforced by the kernel with -o allow_other,
and carried by rsync -aAX and tar --xattrs --acls. Most tests share one
3-node cluster with allow_other, each under its own names."""
import errno
import hashlib
import json
import os
import subprocess
import sys
import threading

import pytest

import conftest
from nsynctest import SYNC_TIMEOUT, Node, free_ports, wait_for, write_file
from test_permissions import AS_NOBODY, NOBODY

SIZE = 16 << 20


@pytest.fixture(scope="module")
def xc(request, tmp_path_factory, binary):
    base = tmp_path_factory.mktemp("xattrs")
    return conftest._make(request, base, 3, ("-o", "allow_other"), "xattrs")


def xattrs_of(path):
    """Every replicated attribute of path (no symlink followed), or None if
    the path is gone."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
        return {n: os.getxattr(path, n, follow_symlinks=False) for n in sorted(names)}
    except FileNotFoundError:
        return None


def dump(root):
    """rel -> attributes of every file and directory below root (the data
    directory left out): the tree's xattrs as one value to compare."""
    out = {}
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if x != ".nsyncfs"]
        for name in dirs + files:
            p = os.path.join(d, name)
            if not os.path.islink(p):
                out[os.path.relpath(p, root)] = xattrs_of(p)
    return out


def same_everywhere(c, rel, want, idxs=None, what="attributes"):
    """rel shows exactly `want` on every node, through its mount and in its
    BACKING."""
    idxs = c.running_idx() if idxs is None else idxs
    last = {}

    def ok():
        for i in idxs:
            for p in (c.node(i).path(rel), c.node(i).bpath(rel)):
                got = xattrs_of(p)
                if got != want:
                    last["diff"] = f"node {i} {p}: {got}"
                    return False
        return True

    try:
        wait_for(ok, SYNC_TIMEOUT, f"{rel}'s {what} {want} on nodes {idxs}")
    except AssertionError as e:
        raise AssertionError(f"{e}; last seen: {last.get('diff')}") from None


def fetched_bytes(node):
    return int(node.status()["fetch"]["bytes"])


def test_set_list_replace_remove_replicate(xc):
    m = xc.node(0).path
    write_file(m("x1"), b"some bytes\n")
    os.mkdir(m("xd"))
    os.setxattr(m("x1"), "user.color", b"blue")
    os.setxattr(m("x1"), "user.empty", b"")
    os.setxattr(m("x1"), "trusted.ours", b"\x00\x01binary\xff")
    os.setxattr(m("x1"), "security.label", b"lbl")
    os.setxattr(m("xd"), "user.dir", b"on a directory")
    want = {"security.label": b"lbl", "trusted.ours": b"\x00\x01binary\xff",
            "user.color": b"blue", "user.empty": b""}
    assert xattrs_of(m("x1")) == want
    same_everywhere(xc, "x1", want)
    same_everywhere(xc, "xd", {"user.dir": b"on a directory"})

    # As setfattr/getfattr see it, from another node.
    subprocess.run(["setfattr", "-n", "user.color", "-v", "red", m("x1")], check=True, timeout=10)
    want["user.color"] = b"red"
    same_everywhere(xc, "x1", want)
    out = subprocess.run(["getfattr", "--absolute-names", "-n", "user.color", "--only-values",
                          xc.node(2).path("x1")], capture_output=True, check=True, timeout=10)
    assert out.stdout == b"red"

    os.removexattr(m("x1"), "user.empty")
    del want["user.empty"]
    same_everywhere(xc, "x1", want)
    # The bytes did not change with the attributes.
    for i in range(3):
        with open(xc.node(i).path("x1"), "rb") as f:
            assert f.read() == b"some bytes\n"


def test_errors_are_the_backing_filesystems(xc):
    m = xc.node(0).path
    write_file(m("xerr"), b"e")
    os.setxattr(m("xerr"), "user.a", b"1")
    with pytest.raises(OSError) as e:
        os.setxattr(m("xerr"), "user.a", b"2", os.XATTR_CREATE)
    assert e.value.errno == errno.EEXIST
    with pytest.raises(OSError) as e:
        os.setxattr(m("xerr"), "user.nope", b"2", os.XATTR_REPLACE)
    assert e.value.errno == errno.ENODATA
    with pytest.raises(OSError) as e:
        os.getxattr(m("xerr"), "user.nope")
    assert e.value.errno == errno.ENODATA
    with pytest.raises(OSError) as e:
        os.removexattr(m("xerr"), "user.nope")
    assert e.value.errno == errno.ENODATA
    # A buffer too small for the value: ERANGE, as getxattr(2) says.
    r = subprocess.run([sys.executable, "-c", _SMALL_BUFFER, m("xerr")], capture_output=True,
                       text=True, timeout=10)
    assert r.stdout.strip() == str(errno.ERANGE), r.stderr
    # More than BACKING (ext4: one block per inode) takes: its refusal.
    with pytest.raises(OSError) as e:
        os.setxattr(m("xerr"), "user.big", b"x" * 8000)
    assert e.value.errno in (errno.E2BIG, errno.ENOSPC)
    assert xattrs_of(m("xerr")) == {"user.a": b"1"}
    same_everywhere(xc, "xerr", {"user.a": b"1"})


# getxattr(2) with a one-byte buffer, through libc.
_SMALL_BUFFER = r"""
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
buf = ctypes.create_string_buffer(1)
n = libc.getxattr(sys.argv[1].encode(), b"user.a", buf, 0)
assert n == 1, n
libc.setxattr(sys.argv[1].encode(), b"user.a", b"12345", 5, 0)
n = libc.getxattr(sys.argv[1].encode(), b"user.a", buf, 1)
print(ctypes.get_errno() if n < 0 else "ok")
libc.setxattr(sys.argv[1].encode(), b"user.a", b"1", 1, 0)
"""


def test_an_attribute_set_after_a_write_moves_no_bytes(xc):
    """write, close, setxattr (what rsync -X and cp -a do): each replica
    fetches the bytes once and installs them with the attributes."""
    c = xc
    others = [1, 2]
    before = {i: fetched_bytes(c.node(i)) for i in others}
    names = []
    for k in range(3):
        rel = f"xonce-{k}.bin"
        names.append(rel)
        write_file(c.node(0).path(rel), os.urandom(SIZE))
        os.setxattr(c.node(0).path(rel), "user.k", str(k).encode())
        subprocess.run(["setfacl", "-m", f"u:{NOBODY}:r", c.node(0).path(rel)], check=True,
                       timeout=10)
    for rel in names:
        want = xattrs_of(c.node(0).path(rel))
        assert "system.posix_acl_access" in want
        same_everywhere(c, rel, want)
    for rel in names:
        digest = hashlib.sha256(open(c.node(0).bpath(rel), "rb").read()).hexdigest()
        for i in others:
            assert hashlib.sha256(open(c.node(i).bpath(rel), "rb").read()).hexdigest() == digest
    for i in others:
        got = fetched_bytes(c.node(i)) - before[i]
        assert got == len(names) * SIZE, (
            f"node {i} fetched {got / SIZE:.2f} times the bytes of {len(names)} files")


def test_a_reader_never_sees_new_bytes_with_old_attributes(xc):
    """The writer sets the attribute before its close: one version, bytes
    and attribute. A reader on another node that sees the new bytes sees
    the new attribute on the same open file."""
    c = xc
    rel = "xver.bin"
    old, new = os.urandom(SIZE), os.urandom(SIZE)
    write_file(c.node(0).path(rel), old)
    os.setxattr(c.node(0).path(rel), "user.ver", b"old")
    same_everywhere(c, rel, {"user.ver": b"old"})
    seen, bad = set(), []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            try:
                with open(c.node(1).path(rel), "rb") as f:
                    data = f.read()
                    v = os.getxattr(f.fileno(), "user.ver")
            except OSError as e:
                if e.errno in (errno.ESTALE, errno.ENOENT):
                    continue
                raise
            if data == new:
                seen.add("new")
                if v != b"new":
                    bad.append(v)
                return
            seen.add("old")

    t = threading.Thread(target=reader)
    t.start()
    try:
        with open(c.node(0).path(rel), "r+b") as f:
            f.write(new)
            f.flush()
            os.setxattr(f.fileno(), "user.ver", b"new")
        t.join(SYNC_TIMEOUT)
    finally:
        stop.set()
        t.join()
    assert "new" in seen, "the reader never saw the new bytes"
    assert not bad, f"new bytes with user.ver {bad[0]!r}"


# As nobody, reads each file and prints 0 or the errno name.
_PROBE = AS_NOBODY + r"""
for p in sys.argv[2:]:
    try:
        open(p, "rb").read()
        out[p] = 0
    except OSError as e:
        out[p] = errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps(out))
"""


def read_as_nobody(mnt, *rels):
    r = subprocess.run([sys.executable, "-c", _PROBE, str(mnt)] + list(rels),
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def getfacl(path):
    return subprocess.run(["getfacl", "-cpn", path], capture_output=True, text=True, check=True,
                          timeout=10).stdout


def test_acls_replicate_and_the_kernel_enforces_them(xc):
    c = xc
    m = c.node(0).path
    os.chmod(m(""), 0o755)
    os.mkdir(m("acl"))
    os.chmod(m("acl"), 0o755)
    for name in ("denied", "allowed"):
        write_file(m(f"acl/{name}"), b"readable by others\n")
        os.chmod(m(f"acl/{name}"), 0o644)
    subprocess.run(["setfacl", "-m", f"u:{NOBODY}:---", m("acl/denied")], check=True, timeout=10)
    # A default ACL: what is made in the directory inherits it.
    os.mkdir(m("acl/inherit"))
    subprocess.run(["setfacl", "-d", "-m", f"u:{NOBODY}:---", m("acl/inherit")], check=True,
                   timeout=10)
    write_file(m("acl/inherit/child"), b"made under a default ACL\n")
    os.chmod(m("acl/inherit/child"), 0o644)
    assert f"user:{NOBODY}:---" in getfacl(m("acl/inherit/child"))

    for rel in ("acl/denied", "acl/allowed", "acl/inherit", "acl/inherit/child"):
        same_everywhere(c, rel, xattrs_of(m(rel)), what="ACL")
        for i in range(3):
            assert getfacl(c.node(i).path(rel)) == getfacl(m(rel)), f"{rel} on node {i}"
    for i in range(3):
        got = read_as_nobody(c.node(i).mnt, "acl/denied", "acl/allowed", "acl/inherit/child")
        assert got == {"acl/denied": "EACCES", "acl/allowed": 0,
                       "acl/inherit/child": "EACCES"}, f"node {i}: {got}"

    # Removing the ACL gives nobody the mode's access again, everywhere.
    subprocess.run(["setfacl", "-b", m("acl/denied")], check=True, timeout=10)
    same_everywhere(c, "acl/denied", {}, what="ACL")
    for i in range(3):
        wait_for(lambda i=i: read_as_nobody(c.node(i).mnt, "acl/denied") == {"acl/denied": 0},
                 SYNC_TIMEOUT, f"nobody reads acl/denied on node {i} once its ACL is gone")


def test_the_data_directory_and_other_names_are_refused(xc):
    m = xc.node(0).path
    write_file(m("xother"), b"o")
    with pytest.raises(OSError) as e:
        os.setxattr(m("xother"), "system.nfs4_acl", b"x")
    assert e.value.errno in (errno.ENOTSUP, errno.EOPNOTSUPP)
    with pytest.raises(OSError) as e:
        os.setxattr(m(".nsyncfs"), "user.x", b"1")
    assert e.value.errno == errno.ENOENT
    # A symlink has no user.* attributes on Linux; through the mount neither.
    os.symlink("xother", m("xlink"))
    with pytest.raises(OSError):
        os.setxattr(m("xlink"), "user.x", b"1", follow_symlinks=False)
    assert os.listxattr(m("xlink"), follow_symlinks=False) == []


def _tree_with_attributes(src):
    os.makedirs(src / "d" / "e")
    (src / "d" / "f.txt").write_bytes(b"with attributes\n")
    (src / "d" / "e" / "big.bin").write_bytes(os.urandom(300_000))
    (src / "plain").write_bytes(b"none\n")
    os.symlink("d/f.txt", src / "link")
    os.setxattr(src / "d" / "f.txt", "user.mime_type", b"text/plain")
    os.setxattr(src / "d" / "e" / "big.bin", "user.checksum", b"abc123")
    os.setxattr(src / "d", "user.tag", b"dir")
    subprocess.run(["setfacl", "-m", f"u:{NOBODY}:r,g:{NOBODY}:rw", str(src / "d" / "f.txt")],
                   check=True, timeout=10)
    subprocess.run(["setfacl", "-d", "-m", f"u:{NOBODY}:rx", str(src / "d" / "e")], check=True,
                   timeout=10)


def test_rsync_and_tar_round_trips(xc, tmp_path):
    c = xc
    src = tmp_path / "src"
    _tree_with_attributes(src)
    ref = dump(src)
    assert ref["d/f.txt"]["user.mime_type"] == b"text/plain"

    subprocess.run(["rsync", "-aAX", f"{src}/", str(c.node(0).path("rs"))], check=True, timeout=60)
    for i in range(3):
        wait_for(lambda i=i: dump(c.node(i).path("rs")) == ref, SYNC_TIMEOUT,
                 f"rsync's tree with its attributes on node {i}")
    # Nothing left to do, compared from another node's mount, contents and all.
    r = subprocess.run(["rsync", "-aAX", "--checksum", "-n", "-i", f"{src}/",
                        f"{c.node(2).path('rs')}/"], capture_output=True, text=True, check=True,
                       timeout=60)
    assert r.stdout == "", r.stdout

    archive = tmp_path / "t.tar"
    subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "--acls", "-cf", str(archive), "-C",
                    str(src), "."], check=True, timeout=60)
    os.mkdir(c.node(1).path("tr"))
    subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "--acls", "-xf", str(archive), "-C",
                    str(c.node(1).path("tr"))], check=True, timeout=60)
    for i in range(3):
        wait_for(lambda i=i: dump(c.node(i).path("tr")) == ref, SYNC_TIMEOUT,
                 f"tar's tree with its attributes on node {i}")
    # And back out of another node's mount.
    back = tmp_path / "back.tar"
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "--acls", "-cf", str(back), "-C",
                    str(c.node(0).path("tr")), "."], check=True, timeout=60)
    subprocess.run(["tar", "--xattrs", "--xattrs-include=*", "--acls", "-xf", str(back), "-C",
                    str(out)], check=True, timeout=60)
    assert dump(out) == ref


def test_restarted_and_joined_nodes_get_them(cluster):
    c = cluster
    m = c.node(0).path
    write_file(m("kept"), b"there before the stop\n")
    os.setxattr(m("kept"), "user.v", b"1")
    c.wait_file("kept", b"there before the stop\n")
    same_everywhere(c, "kept", {"user.v": b"1"})
    c.stop(2)
    # While node 2 is away: a new file, a changed attribute on a file it has
    # (its bytes stay), an ACL on a directory, a removed attribute.
    os.makedirs(m("r/sub"))
    write_file(m("r/f"), os.urandom(200_000))
    os.setxattr(m("r/f"), "user.a", b"A")
    os.setxattr(m("kept"), "user.v", b"2")
    os.setxattr(m("kept"), "user.w", b"W")
    os.removexattr(m("kept"), "user.w")
    subprocess.run(["setfacl", "-m", f"u:{NOBODY}:rx", "-d", "-m", f"u:{NOBODY}:r",
                    m("r/sub")], check=True, timeout=10)
    want = {"kept": xattrs_of(m("kept")), "r/f": xattrs_of(m("r/f")),
            "r/sub": xattrs_of(m("r/sub"))}
    assert want["kept"] == {"user.v": b"2"}
    assert "system.posix_acl_default" in want["r/sub"]
    c.start(2)
    for rel, w in want.items():
        same_everywhere(c, rel, w)

    # A node that was never a member, with an empty BACKING.
    cport, fport = free_ports(2)
    new = Node(c, len(c.nodes), c.base, cport, fport)
    c.nodes.append(new)
    new.spawn()
    c.wait_ready()
    for rel, w in want.items():
        same_everywhere(c, rel, w)
    c.wait_trees_equal(modes=True)
    assert dump(new.mnt) == dump(c.node(0).mnt)
