"""Rejoin in time proportional to what changed (issue 18, point 5): a node that
left cleanly records the stat of the files it held (BACKING/.nsyncfs/quick)
and, mounted again, trusts those whose size, mtime, ctime and inode did not
change instead of hashing them. A file changed while the node was down, even
with its mtime put back or as another inode, is hashed and handled as before;
a crash never leaves a record behind to be trusted."""
import os
import shutil
import subprocess
import time

from nsynctest import SYNC_TIMEOUT, http_get, read_bytes, wait_for, write_file

QUICK = ".nsyncfs/quick"
N = 120  # files per test: enough to tell "all hashed" from "none"


def _fill(c, writers):
    """N small files under q/, written by turns through each node of writers,
    so that the node under test holds files it wrote and files it fetched."""
    for i in range(N):
        m = c.node(writers[i % len(writers)]).path
        if i < len(writers):
            os.makedirs(m(f"q/{i}"), exist_ok=True)
        write_file(m(f"q/{i % len(writers)}/f{i:04d}"), f"file {i}\n".encode() * (1 + i % 5))
    c.wait_trees_equal()


def _settled(c, v):
    """Every entry settled (so v is recorded as holding all of them), and no
    file of v's BACKING changed within the quick check's racy window (100 ms:
    those are left out of the record on purpose, and hashed next time)."""
    wait_for(lambda: all(c.node(i).status()["pending_entries"] == 0 for i in c.running_idx()),
             SYNC_TIMEOUT, "every entry settled")
    root = c.node(v).backing
    newest = max(os.lstat(os.path.join(d, f)).st_ctime_ns
                 for d, _, fs in os.walk(root) if ".nsyncfs" not in d for f in fs)
    wait_for(lambda: time.time_ns() > newest + 300_000_000, 2,
             "the newest file of the node to be older than the racy window")


def _fetch_counts(nd, at_least):
    """/v1/status fetch counters once the node, a member again, lacks nothing
    and has looked at (hashed or trusted) at least `at_least` files."""
    def ready():
        st = nd.try_status()
        if not st or "fetch" not in st or st["catchup"]["entries"] != 0:
            return None
        f = st["fetch"]
        return f if f["hashed"] + f["trusted"] >= at_least else None
    return wait_for(ready, SYNC_TIMEOUT, f"node {nd.idx} to catch up after its rejoin")


def _metric(nd, name):
    code, body = http_get(nd.fport, "/metrics")
    assert code == 200
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not on node {nd.idx}'s /metrics")


def test_unchanged_rejoin_hashes_nothing(cluster):
    c = cluster
    v = c.follower()
    w = next(i for i in range(3) if i != v)
    _fill(c, [v, w])
    _settled(c, v)
    nd = c.node(v)
    c.stop(v)
    assert os.path.exists(nd.bpath(QUICK)), "a clean leave writes the quick check's record"
    c.start(v)
    f = _fetch_counts(nd, N)
    assert f["hashed"] == 0 and f["trusted"] == N, f
    assert _metric(nd, "nsyncfs_install_trusted_files_total") == N
    assert _metric(nd, "nsyncfs_install_hashed_files_total") == 0
    # Consumed at start: a crash from here on finds no record to trust.
    assert not os.path.exists(nd.bpath(QUICK))
    c.wait_trees_equal()
    # Trusted, not touched: a second rejoin trusts them all again.
    _settled(c, v)
    c.stop(v)
    c.start(v)
    f = _fetch_counts(nd, N)
    assert f["hashed"] == 0 and f["trusted"] == N, f


def _change_while_away(c, change):
    """Fill, leave cleanly, change q/0/f0000 in the node's BACKING with
    change(path) (same size, same mtime), rejoin; the cluster's bytes come
    back on every node."""
    v = c.follower()
    w = next(i for i in range(3) if i != v)
    _fill(c, [w])
    _settled(c, v)
    nd = c.node(v)
    rel = "q/0/f0000"
    orig = read_bytes(c.node(w).path(rel))
    st0 = os.lstat(nd.bpath(rel))
    c.stop(v)
    change(nd.bpath(rel), orig)
    st1 = os.lstat(nd.bpath(rel))
    assert (st1.st_size, st1.st_mtime_ns) == (st0.st_size, st0.st_mtime_ns)
    assert read_bytes(nd.bpath(rel)) != orig
    c.start(v)
    f = _fetch_counts(nd, N)
    # The changed file was hashed; the others were trusted.
    assert f["hashed"] == 1 and f["trusted"] == N - 1, f
    c.wait_file(rel, orig)
    c.wait_trees_equal()
    for i in range(3):
        assert read_bytes(c.node(i).bpath(rel)) == orig


def _same_size(data):
    return bytes(b ^ 0x20 for b in data)


def test_edit_with_mtime_put_back_is_hashed(cluster):
    """touch -d puts the mtime back; the ctime moves, so the file is hashed."""
    def change(p, orig):
        st = os.lstat(p)
        with open(p, "r+b") as f:
            f.write(_same_size(orig))
        sec, nsec = divmod(st.st_mtime_ns, 1_000_000_000)
        subprocess.run(["touch", "-d", f"@{sec}.{nsec:09d}", str(p)], check=True)
    _change_while_away(cluster, change)


def test_file_replaced_by_another_inode_is_hashed(cluster):
    def change(p, orig):
        st = os.lstat(p)
        tmp = str(p) + ".new"
        with open(tmp, "wb") as f:
            f.write(_same_size(orig))
        os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.rename(tmp, p)
        assert os.lstat(p).st_ino != st.st_ino
    _change_while_away(cluster, change)


def test_kill9_restart_converges_without_a_stale_record(cluster):
    c = cluster
    v = c.follower()
    w = next(i for i in range(3) if i != v)
    _fill(c, [w])
    _settled(c, v)
    nd = c.node(v)
    c.stop(v)
    saved = nd.backing.parent / "quick.saved"
    shutil.copy(nd.bpath(QUICK), saved)
    c.start(v)
    _fetch_counts(nd, N)
    assert not os.path.exists(nd.bpath(QUICK))
    # A new version with the old size and mtime, installed on v by the fetch.
    m = c.node(w).path
    rel = "q/0/f0000"
    st = os.lstat(m(rel))
    new = _same_size(read_bytes(m(rel)))
    write_file(m(rel), new)
    os.utime(m(rel), ns=(st.st_atime_ns, st.st_mtime_ns))
    c.wait_file(rel, new)
    c.kill9(v)
    write_file(m("q/0/f0001"), b"written while node v was down")
    # Back to the first bytes, size and mtime: pending on v again. The record
    # of the clean leave, put back by hand, names those bytes' hash for this
    # path, but v's file is the inode the fetch installed since: the stat
    # differs, so it is hashed, never trusted.
    orig = _same_size(new)
    write_file(m(rel), orig)
    os.utime(m(rel), ns=(st.st_atime_ns, st.st_mtime_ns))
    shutil.copy(saved, nd.bpath(QUICK))
    c.start(v)
    c.wait_file("q/0/f0001", b"written while node v was down")
    c.wait_file(rel, orig)
    c.wait_trees_equal()
    assert read_bytes(nd.bpath(rel)) == orig
    assert not os.path.exists(nd.bpath(QUICK))
