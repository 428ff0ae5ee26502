"""A metadata change right after a write (what cp -a, rsync -a and tar x do
to every file: write, close, then chmod, chown, utimens) travels as
metadata: each replica fetches the file's bytes once, whichever version it
was fetching when the change came (issue 18, point 2)."""
import os

from nsynctest import SYNC_TIMEOUT, wait_for, write_file

SIZE = 16 << 20


def fetched_bytes(node):
    return int(node.status()["fetch"]["bytes"])


def test_chmod_and_utime_after_a_write_fetch_once(cluster):
    c = cluster
    w = c.follower()
    others = [i for i in range(3) if i != w]
    before = {i: fetched_bytes(c.node(i)) for i in others}
    names = []
    for k in range(4):
        rel = f"once-{k}.bin"
        names.append(rel)
        write_file(c.node(w).path(rel), os.urandom(SIZE))
        os.chmod(c.node(w).path(rel), 0o640)
        os.utime(c.node(w).path(rel), ns=(1_600_000_000_000_000_000 + k, 1_600_000_000_000_000_000 + k))
    # The same through the open file, before its close (fchmod, futimens).
    rel = "once-fd.bin"
    names.append(rel)
    with open(c.node(w).path(rel), "wb") as f:
        f.write(os.urandom(SIZE))
        f.flush()
        os.fchmod(f.fileno(), 0o600)
        os.utime(f.fileno(), ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    for rel in names:
        want = os.stat(c.node(w).bpath(rel))
        wait_for(lambda rel=rel, want=want: all(
            (lambda st: st is not None and st.st_mode == want.st_mode and st.st_size == want.st_size
             and st.st_mtime_ns == want.st_mtime_ns)(_stat(c.node(i).bpath(rel))) for i in others),
            SYNC_TIMEOUT, f"{rel} with its final mode and mtime on every node")
    c.wait_trees_equal(modes=True)
    for i in others:
        got = fetched_bytes(c.node(i)) - before[i]
        assert got == len(names) * SIZE, (
            f"node {i} fetched {got / SIZE:.2f} times the bytes of {len(names)} files "
            f"({got} bytes, expected {len(names) * SIZE})")


def _stat(p):
    try:
        return os.stat(p)
    except FileNotFoundError:
        return None
