"""Bounded resources of the file server (issue 13): a host holding hundreds
of idle connections, or sending a request one byte at a time, does not stop
a node from serving its peers. The hostile client connects from 127.0.0.2
(another loopback address, as another host would be), the cluster runs on
127.0.0.1."""
import socket
import time

from nsynctest import HOST, http_get, wait_for, write_file

ATTACKER = "127.0.0.2"


def connect_from(port, source=ATTACKER):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(5)
    s.bind((source, 0))
    s.connect((HOST, port))
    return s


def closed_by_server(s):
    """True if the server closed (or reset) s; False if it is still open."""
    s.setblocking(False)
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        s.setblocking(True)


def test_idle_connections_do_not_stop_a_node(cluster):
    c = cluster
    src = c.node(c.leader())
    idle = []
    try:
        for _ in range(300):
            try:
                idle.append(connect_from(src.fport))
            except OSError:
                pass  # refused at the cap: fine
        code, _ = http_get(src.fport, "/v1/status")
        assert code == 200
        # A fetch from that node: the others get the file from it.
        data = b"fetched despite the idle connections\n" * 1000
        write_file(src.path("big-enough.bin"), data)
        c.wait_file("big-enough.bin", data)
        # One host got no more than its share, and the idle ones are
        # dropped after the request deadline.
        open_now = [s for s in idle if not closed_by_server(s)]
        assert len(open_now) <= 64, len(open_now)
        wait_for(lambda: all(closed_by_server(s) for s in idle), 30,
                 "the idle connections are dropped")
    finally:
        for s in idle:
            s.close()


def test_slow_sender_is_dropped(single_node):
    nd = single_node.node(0)
    s = connect_from(nd.fport)
    try:
        req = b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 100
        t0 = time.monotonic()
        sent = 0
        # One byte every 2 s: far more than MHD's idle timeout needs to see
        # the connection as alive; our deadline (10 s) must end it anyway.
        while not closed_by_server(s):
            assert time.monotonic() - t0 < 25, "a slow sender kept its connection past 25 s"
            try:
                s.sendall(req[sent:sent + 1])
            except OSError:
                break
            sent += 1
            time.sleep(2)  # the attacker's pace, not a wait for our side
        assert sent < len(req), "the whole request got through"
        code, _ = http_get(nd.fport, "/v1/status")
        assert code == 200
    finally:
        s.close()
