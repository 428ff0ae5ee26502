"""Small files travel inside their ANNOUNCE (issue 6): replicas install a file
of at most 4 KiB from the catalog without fetching it over HTTP, and once the
catalog's budget for such bytes is full the rest are fetched as before.

What a replica fetched over HTTP is read from its GET /v1/status
(fetch.bytes): it counts downloaded bytes only."""
import os
import signal

from nsynctest import SYNC_TIMEOUT, read_bytes, wait_for, write_file

INLINE_MAX = 4096
INLINE_BUDGET = 8 << 20


def fetched_bytes(node):
    return int(node.status()["fetch"]["bytes"])


def test_small_files_arrive_without_a_fetch(cluster):
    """Files of 1 byte up to exactly 4 KiB arrive on the replicas with no
    byte downloaded; one byte more goes over HTTP, counted to the byte."""
    c = cluster
    w = c.follower()  # its announces go through the leader's forwarding too
    others = [i for i in range(3) if i != w]
    before = {i: fetched_bytes(c.node(i)) for i in others}
    os.mkdir(c.node(w).path("inl"))
    files = {}
    for n in (1, 100, 4095, INLINE_MAX):
        files[f"inl/f{n}"] = os.urandom(n)
    files["inl/text"] = b"a config file\n" * 10
    files["inl/big"] = os.urandom(INLINE_MAX + 1)
    for rel, data in files.items():
        write_file(c.node(w).path(rel), data)
    for rel, data in files.items():
        c.wait_file(rel, data)
    for i in others:
        got = fetched_bytes(c.node(i)) - before[i]
        assert got == INLINE_MAX + 1, f"node {i} downloaded {got} bytes, expected only inl/big's"
    # Settled everywhere: the catalog let go of the bytes.
    for i in range(3):
        wait_for(lambda i=i: c.node(i).status()["catalog_inline_bytes"] == 0, SYNC_TIMEOUT,
                 f"node {i}: no inline bytes left in the catalog")


def test_small_files_beyond_the_budget_still_arrive(cluster):
    """With one replica frozen, nothing settles, so the catalog's 8 MiB for
    inline bytes fills up: the files after that carry only their hash. The
    running replica gets them all at once, the frozen one when it wakes up,
    and then has downloaded some over HTTP but not all."""
    c = cluster
    lead = c.leader()
    frozen = (lead + 1) % 3
    other = (lead + 2) % 3
    n = INLINE_BUDGET // INLINE_MAX + 100
    blobs = {f"budget/f{i:05d}": os.urandom(INLINE_MAX) for i in range(n)}
    before = fetched_bytes(c.node(frozen))
    pid = c.node(frozen).proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        os.mkdir(c.node(lead).path("budget"))
        for rel, data in blobs.items():
            write_file(c.node(lead).path(rel), data)
        last = sorted(blobs)[-1]
        c.wait_file(last, blobs[last], idxs=[lead, other], timeout=SYNC_TIMEOUT)
        st = c.node(lead).status()
        assert 0 < st["catalog_inline_bytes"] <= INLINE_BUDGET, st["catalog_inline_bytes"]
    finally:
        os.kill(pid, signal.SIGCONT)
    c.wait_trees_equal(sub="budget", timeout=3 * SYNC_TIMEOUT)
    for rel in (sorted(blobs)[0], sorted(blobs)[-1]):
        for i in range(3):
            assert read_bytes(c.node(i).bpath(rel)) == blobs[rel], f"node {i}: {rel}"
    got = fetched_bytes(c.node(frozen)) - before
    assert 0 < got < n * INLINE_MAX, f"the frozen node downloaded {got} bytes"
