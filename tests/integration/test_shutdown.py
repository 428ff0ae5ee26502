"""Shutdown in reverse order of start (issue 12): a node's HTTP status page is
polled without pause while the node unmounts, leaves and exits. The status
page reads the fetch worker's counters; before the fix the worker was freed
while the server could still answer. Under AddressSanitizer (scripts/test.sh,
asan-integration) a read after free fails the run; here the node must exit
with 0 every time, and answer status requests until it stops listening."""
import threading

from nsynctest import http_get, wait_for




def poll_status(port, stop, counts):
    while not stop.is_set():
        try:
            code, _ = http_get(port, "/v1/status", timeout=2.0)
            counts["ok" if code == 200 else "other"] += 1
        except OSError:  # refused or reset once the node is gone
            counts["refused"] += 1


def test_status_polled_while_unmounting(cluster):
    for rnd in range(3):
        nd = cluster.node(1)
        stop = threading.Event()
        counts = {"ok": 0, "other": 0, "refused": 0}
        threads = [threading.Thread(target=poll_status, args=(nd.fport, stop, counts))
                   for _ in range(3)]
        for t in threads:
            t.start()
        try:
            # the pollers are in their loop before the unmount starts
            wait_for(lambda: counts["ok"] >= 10, 10, "status answers before the unmount")
            rc = cluster.stop(1)  # fusermount3 -u; fails the test unless exit code 0
            assert rc == 0, f"round {rnd}: node 1 exited with {rc}"
        finally:
            stop.set()
            for t in threads:
                t.join(10)
        assert counts["other"] == 0, f"round {rnd}: unexpected HTTP statuses: {counts}"
        log = nd.log_tail(400)
        for bad in ("AddressSanitizer", "runtime error:", "Assertion", "Segmentation"):
            assert bad not in log, f"round {rnd}: {bad} in node 1's log:\n{log}"
        cluster.start(1)  # rejoins
