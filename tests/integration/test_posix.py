"""One battery of POSIX behaviours, run on a 1-node and on a 3-node cluster
(as libfuse's test_examples.py runs one battery over every variant). Each
test acts through node 0's mount; on 3 nodes it then waits (bounded) until
the other nodes show the same result. Each test has its own names, so the
module's cluster is shared."""
import errno
import hashlib
import os
import stat

import pytest

import conftest
from nsynctest import wait_for

SYNC_S = 30


@pytest.fixture(scope="module", params=[1, 3], ids=["1node", "3node"])
def fs(request, tmp_path_factory, binary):
    n = request.param
    base = tmp_path_factory.mktemp(f"posix-{n}")
    return conftest._make(request, base, n, (), f"posix[{n}node]")


def root(c, i=0):
    return str(c.node(i).mnt)


def p(c, name, i=0):
    return os.path.join(root(c, i), name)


def everywhere(c, name, check, what):
    """check(path) on every other node until it holds."""
    for i in range(1, len(c.nodes)):
        wait_for(lambda: check(p(c, name, i)), SYNC_S, f"{what} on node {i}")


def content_is(data):
    def check(path):
        try:
            with open(path, "rb") as f:
                return f.read() == data
        except OSError:
            return False
    return check


def gone(path):
    return not os.path.lexists(path)


def test_create_write_read(fs):
    with open(p(fs, "cwr"), "wb") as f:
        f.write(b"hello\n")
    with open(p(fs, "cwr"), "rb") as f:
        assert f.read() == b"hello\n"
    everywhere(fs, "cwr", content_is(b"hello\n"), "the new file")


def test_append_and_o_append(fs):
    with open(p(fs, "app"), "wb") as f:
        f.write(b"a")
    fd = os.open(p(fs, "app"), os.O_WRONLY | os.O_APPEND)
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, b"b")  # O_APPEND: at the end whatever the offset
    finally:
        os.close(fd)
    with open(p(fs, "app"), "ab") as f:
        f.write(b"c")
    assert open(p(fs, "app"), "rb").read() == b"abc"
    everywhere(fs, "app", content_is(b"abc"), "the appended file")


def test_truncate_grow_shrink_and_ftruncate(fs):
    with open(p(fs, "tr"), "wb") as f:
        f.write(b"0123456789")
    os.truncate(p(fs, "tr"), 4)
    assert open(p(fs, "tr"), "rb").read() == b"0123"
    os.truncate(p(fs, "tr"), 6)
    assert open(p(fs, "tr"), "rb").read() == b"0123\0\0"
    fd = os.open(p(fs, "tr"), os.O_RDWR)
    try:
        os.ftruncate(fd, 2)
    finally:
        os.close(fd)
    assert open(p(fs, "tr"), "rb").read() == b"01"
    everywhere(fs, "tr", content_is(b"01"), "the truncated file")


def test_pwrite_in_the_middle_and_sparse(fs):
    with open(p(fs, "mid"), "wb") as f:
        f.write(b"x" * 10)
    fd = os.open(p(fs, "mid"), os.O_WRONLY)
    try:
        os.pwrite(fd, b"YY", 4)
        os.pwrite(fd, b"Z", 20)  # beyond the end: a hole in between
    finally:
        os.close(fd)
    want = b"xxxxYYxxxx" + b"\0" * 10 + b"Z"
    assert open(p(fs, "mid"), "rb").read() == want
    everywhere(fs, "mid", content_is(want), "the rewritten file")


def test_rename_file_over_file_into_dir_and_dir(fs):
    with open(p(fs, "rn-a"), "wb") as f:
        f.write(b"A")
    with open(p(fs, "rn-b"), "wb") as f:
        f.write(b"B")
    os.rename(p(fs, "rn-a"), p(fs, "rn-b"))
    assert open(p(fs, "rn-b"), "rb").read() == b"A" and gone(p(fs, "rn-a"))
    os.mkdir(p(fs, "rn-d"))
    os.rename(p(fs, "rn-b"), p(fs, "rn-d/b"))
    os.rename(p(fs, "rn-d"), p(fs, "rn-e"))
    assert open(p(fs, "rn-e/b"), "rb").read() == b"A"
    everywhere(fs, "rn-e/b", content_is(b"A"), "the renamed file in the renamed dir")
    everywhere(fs, "rn-d", gone, "the old directory name gone")
    everywhere(fs, "rn-a", gone, "the old file name gone")


def test_unlink_of_an_open_file(fs):
    with open(p(fs, "ul"), "wb") as f:
        f.write(b"still here")
    fd = os.open(p(fs, "ul"), os.O_RDONLY)
    try:
        os.unlink(p(fs, "ul"))
        assert gone(p(fs, "ul"))
        assert os.pread(fd, 100, 0) == b"still here"
    finally:
        os.close(fd)
    everywhere(fs, "ul", gone, "the unlinked file gone")


def test_mkdir_rmdir_notempty_and_link_count(fs):
    os.mkdir(p(fs, "dd"))
    os.mkdir(p(fs, "dd/sub"))
    assert os.stat(p(fs, "dd")).st_nlink >= 3  # ., its name, sub's ..
    with open(p(fs, "dd/sub/f"), "wb") as f:
        f.write(b"f")
    with pytest.raises(OSError) as ei:
        os.rmdir(p(fs, "dd/sub"))
    assert ei.value.errno == errno.ENOTEMPTY
    os.unlink(p(fs, "dd/sub/f"))
    os.rmdir(p(fs, "dd/sub"))
    everywhere(fs, "dd/sub", gone, "the removed directory gone")
    everywhere(fs, "dd", os.path.isdir, "the remaining directory")


def test_symlink_readlink(fs):
    os.symlink("some/target", p(fs, "sl"))
    assert os.readlink(p(fs, "sl")) == "some/target"
    everywhere(fs, "sl", lambda q: os.path.islink(q) and os.readlink(q) == "some/target",
               "the symlink")


def test_chmod_and_utimens(fs):
    with open(p(fs, "md"), "wb") as f:
        f.write(b"m")
    os.chmod(p(fs, "md"), 0o640)
    os.utime(p(fs, "md"), ns=(1_000_000_000_123, 1_500_000_000_456_000_000))
    st = os.stat(p(fs, "md"))
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert st.st_mtime_ns == 1_500_000_000_456_000_000

    def same(q):
        s = os.stat(q)
        return stat.S_IMODE(s.st_mode) == 0o640 and s.st_mtime_ns == 1_500_000_000_456_000_000
    everywhere(fs, "md", same, "mode and mtime")


def test_large_file_streamed(fs):
    h = hashlib.sha256()
    chunk = bytes(range(256)) * 4096  # 1 MiB
    with open(p(fs, "big"), "wb") as f:
        for i in range(20):
            b = chunk[i:] + chunk[:i]
            h.update(b)
            f.write(b)

    def digest(q):
        try:
            d = hashlib.sha256()
            with open(q, "rb") as f:
                for blk in iter(lambda: f.read(1 << 20), b""):
                    d.update(blk)
            return d.hexdigest() == h.hexdigest()
        except OSError:
            return False
    assert digest(p(fs, "big"))
    everywhere(fs, "big", digest, "the 20 MiB file, whole")


def test_many_files_and_readdir(fs):
    os.mkdir(p(fs, "many"))
    names = {f"f{i:03d}" for i in range(300)}
    for n in names:
        with open(p(fs, "many/" + n), "wb") as f:
            f.write(n.encode())
    assert set(os.listdir(p(fs, "many"))) == names
    everywhere(fs, "many", lambda q: set(os.listdir(q)) == names if os.path.isdir(q) else False,
               "all 300 names")


def test_o_excl_of_an_existing_name(fs):
    with open(p(fs, "ex"), "wb") as f:
        f.write(b"1")
    with pytest.raises(FileExistsError):
        os.open(p(fs, "ex"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    assert open(p(fs, "ex"), "rb").read() == b"1"


def test_error_codes(fs):
    cases = [
        (lambda: os.stat(p(fs, "no-such")), errno.ENOENT),
        (lambda: os.open(p(fs, "no-such"), os.O_RDONLY), errno.ENOENT),
        (lambda: os.rmdir(p(fs, "no-such")), errno.ENOENT),
    ]
    with open(p(fs, "plain"), "wb") as f:
        f.write(b"p")
    os.makedirs(p(fs, "adir"), exist_ok=True)
    cases += [
        (lambda: os.stat(p(fs, "plain/x")), errno.ENOTDIR),
        (lambda: os.mkdir(p(fs, "plain/x")), errno.ENOTDIR),
        (lambda: os.open(p(fs, "adir"), os.O_WRONLY), errno.EISDIR),
        (lambda: os.rmdir(p(fs, "plain")), errno.ENOTDIR),
        (lambda: os.unlink(p(fs, "adir")), errno.EISDIR),
        (lambda: os.mkdir(p(fs, "adir")), errno.EEXIST),
    ]
    for fn, want in cases:
        with pytest.raises(OSError) as ei:
            fn()
        assert ei.value.errno == want, (fn, ei.value)


def test_statvfs(fs):
    st = os.statvfs(root(fs))
    assert st.f_bsize > 0 and st.f_blocks > 0 and st.f_bavail <= st.f_blocks
