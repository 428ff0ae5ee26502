"""A clean stop is quick (issue 17): the last node of a cluster exits soon
after its unmount, and when every node is unmounted at once (a whole-cluster
shutdown) none waits the full leave timeout (10 s) for a removal that no
staying member can make: each gives up once the others are all leaving."""
import threading
import time

from nsynctest import fusermount_u


def test_last_node_exits_quickly(cluster):
    c = cluster
    for i in range(3):
        t = time.monotonic()
        c.stop(i)
        took = time.monotonic() - t
        assert took < 3.0, f"node {i} took {took:.1f} s to exit after its unmount"


def test_every_node_unmounted_at_once(cluster):
    c = cluster
    c.leader()
    t0 = time.monotonic()
    gone = {}

    def unmount(i):
        fusermount_u(c.node(i).mnt)
        c.node(i).proc.wait(timeout=30)
        gone[i] = time.monotonic() - t0

    ts = [threading.Thread(target=unmount, args=(i,)) for i in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=40)
    assert len(gone) == 3, f"not every node exited: {gone}"
    assert all(c.node(i).proc.returncode == 0 for i in range(3))
    # the leave timeout is 10 s (submit_timeout + 2 s); seen: at most ~6 s
    assert max(gone.values()) < 8.0, {i: round(v, 2) for i, v in gone.items()}
