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


def test_announce_hash_of_files_written_in_many_ways(cluster):
    """A big file written front to back is announced with the hash computed
    while it was written; any other way of writing it (a seek back, two
    handles, a truncate from elsewhere, an append) must still announce the
    hash of what the file really holds: every replica installs exactly the
    writer's bytes (a wrong hash would make every fetch fail its check)."""
    c = cluster
    m = c.node(0).path
    os.mkdir(m("ways"))
    want = {}

    seq = os.urandom(3 << 20)
    with open(m("ways/sequential"), "wb") as f:
        for k in range(0, len(seq), 128 << 10):
            f.write(seq[k:k + (128 << 10)])
    want["ways/sequential"] = seq

    back = bytearray(os.urandom(1 << 20))
    with open(m("ways/seek-back"), "wb") as f:
        f.write(back)
        f.seek(4096)
        f.write(b"X" * 5000)
    back[4096:9096] = b"X" * 5000
    want["ways/seek-back"] = bytes(back)

    two = bytearray(os.urandom(600_000))
    with open(m("ways/two-handles"), "wb") as a, open(m("ways/two-handles"), "r+b") as b:
        a.write(two[:300_000])
        a.flush()
        b.seek(300_000)
        b.write(two[300_000:])
        b.flush()
        a.write(b"Y" * 10_000)  # at 300_000, over b's bytes
    two[300_000:310_000] = b"Y" * 10_000
    want["ways/two-handles"] = bytes(two)

    cut = os.urandom(400_000)
    with open(m("ways/truncated"), "wb") as f:
        f.write(cut)
        f.flush()
        os.truncate(m("ways/truncated"), 100_000)  # by path, not through f
        f.write(b"Z" * 50_000)  # at 400_000: a hole from 100_000
    want["ways/truncated"] = cut[:100_000] + bytes(300_000) + b"Z" * 50_000

    base = os.urandom(20_000)
    write_file(m("ways/appended"), base)
    with open(m("ways/appended"), "ab") as f:
        f.write(b"tail" * 5000)
    want["ways/appended"] = base + b"tail" * 5000

    for rel, data in want.items():
        assert read_bytes(m(rel)) == data, f"node 0 itself: {rel}"
    for rel, data in want.items():
        c.wait_file(rel, data)
