"""Record locks across nodes (docs/locks.md, "Record locks ride on the
token"): fcntl and flock locks taken through one node's mount conflict with
those taken through another's; blocked waits end when the holder lets go,
or with EINTR; a killed holder's locks go with its lease; lock coherence
(whoever takes a lock reads what the last holder wrote under it); and
writers whose handles stay open do not keep other nodes out."""
import errno
import fcntl
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import threading
import time

import pytest

from nsynctest import SYNC_TIMEOUT, read_bytes, wait_for, write_file

OPTS = ["-o", "lock_timeout=5,lease=3"]

# A helper process that takes a lock and waits for stdin to close, so that a
# test controls how long another process on another node holds it.
HOLDER = r"""
import fcntl, os, sys
kind, path, how = sys.argv[1:4]
fd = os.open(path, os.O_RDWR)
if kind == "flock":
    fcntl.flock(fd, fcntl.LOCK_EX if how == "ex" else fcntl.LOCK_SH)
else:
    fcntl.lockf(fd, fcntl.LOCK_EX if how == "ex" else fcntl.LOCK_SH, 10, 0)
print("locked", flush=True)
sys.stdin.read()
"""


def _hold(path, kind="lockf", how="ex"):
    p = subprocess.Popen([sys.executable, "-c", HOLDER, kind, path, how], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    assert line.strip() == "locked", f"the holder did not get its lock: {line!r}"
    return p


def _release(p):
    p.stdin.close()
    p.wait(timeout=10)


def _getlk(path, start=0, length=10):
    """F_GETLK for a write lock on [start, start+length): the conflicting
    lock's (type, start, len), or None."""
    fd = os.open(path, os.O_RDWR)
    try:
        req = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, start, length, 0)
        out = fcntl.fcntl(fd, fcntl.F_GETLK, req)
        t, _, s, ln, _ = struct.unpack("hhqqi", out)
        return None if t == fcntl.F_UNLCK else (t, s, ln)
    finally:
        os.close(fd)


def _try_lockf(path, start=0, length=10, shared=False):
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.lockf(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB, length, start)
        return True
    except OSError as e:
        assert e.errno in (errno.EAGAIN, errno.EACCES), e
        return False
    finally:
        os.close(fd)  # releases it


def test_fcntl_locks_exclude_across_nodes(cluster_factory):
    c = cluster_factory(3, extra_args=OPTS, name="rl-fcntl")
    write_file(c.node(0).path("db"), b"x" * 100)
    c.wait_file("db", b"x" * 100)
    p = _hold(c.node(0).path("db"))
    try:
        # Another node sees it in F_GETLK and cannot take it, neither can a
        # process on the holder's own node; byte ranges outside are free.
        assert _getlk(c.node(1).path("db")) == (fcntl.F_WRLCK, 0, 10)
        assert _getlk(c.node(0).path("db")) == (fcntl.F_WRLCK, 0, 10)
        assert not _try_lockf(c.node(1).path("db"))
        assert not _try_lockf(c.node(2).path("db"), shared=True)
        assert not _try_lockf(c.node(0).path("db"))
        assert _try_lockf(c.node(1).path("db"), start=10, length=10)
        # That lock went with its close; the release reaches the other nodes
        # with its commit, just after.
        wait_for(lambda: _getlk(c.node(2).path("db"), start=10) is None, SYNC_TIMEOUT,
                 "node 1's released range to be free on node 2")
    finally:
        _release(p)
    # Released at the holder's exit: another node gets it (the release is
    # queued behind the holder's close, so allow for its commit).
    wait_for(lambda: _try_lockf(c.node(1).path("db")), SYNC_TIMEOUT,
             "the lock to be free on node 1 once its holder on node 0 exited")
    assert _getlk(c.node(2).path("db")) is None
    # Shared locks share across nodes.
    p = _hold(c.node(0).path("db"), how="sh")
    try:
        assert _try_lockf(c.node(1).path("db"), shared=True)
        assert not _try_lockf(c.node(2).path("db"))
    finally:
        _release(p)


def test_flock_excludes_across_nodes(cluster_factory):
    c = cluster_factory(2, extra_args=OPTS, name="rl-flock")
    write_file(c.node(0).path("lockfile"), b"")
    c.wait_file("lockfile", b"")
    p = _hold(c.node(0).path("lockfile"), kind="flock")
    try:
        r = subprocess.run(["flock", "-n", c.node(1).path("lockfile"), "true"])
        assert r.returncode != 0, "flock -n on node 1 got a lock node 0 holds"
        # A blocking flock on node 1 waits for node 0's holder...
        t0 = time.monotonic()
        w = subprocess.Popen(["flock", c.node(1).path("lockfile"), "true"])
        time.sleep(0.5)  # the waiter must still be waiting: nothing to poll for
        assert w.poll() is None, "flock on node 1 did not wait for node 0's lock"
    finally:
        _release(p)
    # ... and gets it once that one exits.
    assert w.wait(timeout=SYNC_TIMEOUT) == 0
    print(f"blocked flock on node 1 went through {time.monotonic() - t0:.2f} s after start")


def test_blocked_wait_is_interruptible(cluster_factory):
    c = cluster_factory(2, extra_args=OPTS, name="rl-intr")
    write_file(c.node(0).path("f"), b"data")
    c.wait_file("f", b"data")
    p = _hold(c.node(0).path("f"))
    try:
        code = ("import fcntl,os,signal,sys\n"
                "class Alarm(Exception): pass\n"
                "def ring(*a): raise Alarm()\n"
                "signal.signal(signal.SIGALRM, ring)\n"
                "signal.setitimer(signal.ITIMER_REAL, 0.5)\n"
                "fd = os.open(sys.argv[1], os.O_RDWR)\n"
                "try:\n"
                "    fcntl.lockf(fd, fcntl.LOCK_EX, 10, 0)\n"
                "    print('locked')\n"
                "except Alarm:\n"
                "    print('EINTR')\n"
                "except OSError as e:\n"
                "    print(e.errno)\n")
        r = subprocess.run([sys.executable, "-c", code, c.node(1).path("f")], capture_output=True,
                           text=True, timeout=30)
        assert r.stdout.strip() == "EINTR", r
    finally:
        _release(p)


def test_killed_holder_frees_its_locks_after_the_lease(cluster_factory):
    c = cluster_factory(3, extra_args=OPTS, name="rl-kill")
    write_file(c.node(0).path("f"), b"data")
    c.wait_file("f", b"data")
    lead = c.leader()
    h = next(i for i in range(3) if i != lead)
    o = next(i for i in range(3) if i not in (h, lead))
    p = _hold(c.node(h).path("f"))
    try:
        assert not _try_lockf(c.node(o).path("f"))
        c.kill9(h)
    finally:
        try:
            p.kill()
            p.wait(timeout=10)
        except OSError:
            pass
    t0 = time.monotonic()
    wait_for(lambda: _try_lockf(c.node(o).path("f")), 3 + SYNC_TIMEOUT,
             f"node {o} to get the lock of killed node {h} after its lease", interval=0.2)
    print(f"lock free {time.monotonic() - t0:.2f} s after the kill (lease 3 s)")


def test_lock_coherence_for_an_open_file(cluster_factory):
    """Two processes on two nodes keep one file open and take turns under an
    exclusive lock, each adding one to a counter in it: every turn reads the
    other's last value (the release announces, the grant waits for it and
    moves the handle to it)."""
    c = cluster_factory(2, extra_args=OPTS, name="rl-coh")
    write_file(c.node(0).path("counter"), b"0".ljust(16))
    c.wait_file("counter", b"0".ljust(16))
    code = r"""
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
for _ in range(int(sys.argv[2])):
    fcntl.lockf(fd, fcntl.LOCK_EX, 0, 0)
    v = int(os.pread(fd, 16, 0).decode().strip() or "0")
    os.pwrite(fd, str(v + 1).encode().ljust(16), 0)
    fcntl.lockf(fd, fcntl.LOCK_UN, 0, 0)
os.close(fd)
"""
    n = 40
    ps = [subprocess.Popen([sys.executable, "-c", code, c.node(i).path("counter"), str(n)])
          for i in (0, 1)]
    for p in ps:
        assert p.wait(timeout=120) == 0
    c.wait_file("counter", str(2 * n).encode().ljust(16))


def test_idle_writer_does_not_keep_others_out(cluster_factory):
    """Following writes: a handle open for appending and idle does not keep
    the path; another node appends at once, and the idle writer's next
    append lands after it."""
    c = cluster_factory(3, extra_args=OPTS, name="rl-follow")
    write_file(c.node(0).path("log"), b"")
    c.wait_file("log", b"")
    f = open(c.node(0).path("log"), "ab", buffering=0)
    try:
        f.write(b"a1\n")
        t0 = time.monotonic()
        with open(c.node(2).path("log"), "ab") as g:  # EBUSY after 5 s if the lock stayed
            g.write(b"b1\n")
        took = time.monotonic() - t0
        c.wait_file("log", b"a1\nb1\n")
        f.write(b"a2\n")
        # Idle for longer than lock_timeout (5 s) while the other node
        # appends: nothing waits for the idle handle, nothing is lost.
        want = b"a1\nb1\na2\n"
        deadline = time.monotonic() + 6
        i = 0
        while time.monotonic() < deadline:
            with open(c.node(2).path("log"), "ab") as g:
                g.write(b"b%d\n" % (i + 2))
            want += b"b%d\n" % (i + 2)
            i += 1
            time.sleep(0.5)
        c.wait_file("log", want)
        f.write(b"a3\n")
        want += b"a3\n"
    finally:
        f.close()
    c.wait_file("log", want)
    print(f"append on node 2 beside an idle writer on node 0: {took * 1000:.0f} ms")
    assert took < 5


def test_sqlite_rollback_two_writers(cluster_factory):
    c = cluster_factory(2, extra_args=OPTS, name="rl-sqlite")
    db0 = c.node(0).path("r.db")
    con = sqlite3.connect(db0, isolation_level=None)
    con.execute("create table t(node, i)")
    con.close()
    c.wait_trees_equal()
    code = r"""
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
for i in range(int(sys.argv[3])):
    con.execute("insert into t values (?, ?)", (sys.argv[2], i))
con.close()
"""
    n = 200
    t0 = time.monotonic()
    ps = [subprocess.Popen([sys.executable, "-c", code, c.node(i).path("r.db"), str(i), str(n)])
          for i in (0, 1)]
    for p in ps:
        assert p.wait(timeout=300) == 0
    took = time.monotonic() - t0
    print(f"{2 * n} inserts from two nodes: {took:.1f} s")
    c.wait_trees_equal()
    for i in (0, 1):
        con = sqlite3.connect(c.node(i).path("r.db"))
        assert con.execute("select count(*) from t").fetchone()[0] == 2 * n
        assert con.execute("pragma integrity_check").fetchone()[0] == "ok"
        con.close()


WAL_WRITER = r"""
import sqlite3, subprocess, sys
db, reader_db = sys.argv[1], sys.argv[2]
c = sqlite3.connect(db, isolation_level=None)
c.execute("pragma journal_mode=wal")
c.execute("create table t(x)")
c.execute("insert into t values (1)")
# the reader on another node opens, reads and closes, while this connection
# stays open (its -wal and -shm open, locked)
r = subprocess.run(["sqlite3", reader_db, "select count(*) from t"], capture_output=True, text=True)
print("reader:", r.returncode, r.stdout.strip(), r.stderr.strip(), flush=True)
c.execute("insert into t values (2)")
print("writer sees", c.execute("select count(*) from t").fetchone()[0], flush=True)
c.close()
"""


def test_sqlite_wal_loses_nothing(cluster_factory):
    """The issue's reproduction: a WAL writer on node 0 keeps its connection
    open while a reader on node 2 opens, reads and closes the database. The
    reader cannot share the writer's WAL index across machines: it fails
    loudly (its open of the locked -shm file is uncached, so the shared
    mapping SQLite needs is refused). The writer's rows all survive, on
    every node, and the database is intact."""
    c = cluster_factory(3, extra_args=OPTS, name="rl-wal")
    r = subprocess.run([sys.executable, "-c", WAL_WRITER, c.node(0).path("r.db"),
                        c.node(2).path("r.db")], capture_output=True, text=True, timeout=120)
    print(r.stdout, r.stderr)
    assert r.returncode == 0, r
    assert "writer sees 2" in r.stdout
    reader = next(line for line in r.stdout.splitlines() if line.startswith("reader:"))
    # Either the reader got a clear error, or (never silently stale) the
    # whole first row.
    rc, rest = reader.split(None, 2)[1], reader.split(None, 2)[2:]
    assert (rc != "0" and "I/O error" in reader) or (rc == "0" and rest == ["1"]), reader
    c.wait_trees_equal()
    for i in range(3):
        out = subprocess.run(["sqlite3", c.node(i).path("r.db"),
                              "select count(*) from t; pragma integrity_check"],
                             capture_output=True, text=True, timeout=60)
        assert out.stdout.split() == ["2", "ok"], (i, out)
