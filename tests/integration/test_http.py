"""The file server under hostile input: every bad path is 400, unknown URLs
are 404, garbage does not bring it down, and it keeps answering /v1/status.
Runs against a one-node cluster (it is its own leader)."""
import http.client
import os
import socket

import pytest

from nsynctest import HOST, http_get, http_post, write_file


@pytest.fixture(scope="module")
def node(single_node):
    nd = single_node.node(0)
    # something real to be served, and to be reached by traversal attempts
    write_file(nd.path("served.txt"), b"served bytes")
    os.makedirs(nd.path("dir/sub"), exist_ok=True)
    write_file(nd.path("dir/sub/inner.txt"), b"inner")
    return nd


def assert_alive(nd):
    code, body = http_get(nd.fport, "/v1/status")
    assert code == 200, f"/v1/status answered {code} after hostile input"
    nd.check_alive()


def test_status_fields(node):
    st = node.status()
    for k in ("role", "leader", "members", "pending"):
        assert k in st, f"/v1/status lacks {k!r}: {st}"
    assert st["role"] == "leader", st
    assert str(st["leader"]).strip() not in ("", "0"), st
    if "node" in st:
        assert str(st["node"]) == str(st["leader"]), st


BAD_PATHS = [
    "..%2Fetc%2Fpasswd",       # ../etc/passwd
    "../etc/passwd",
    "%2Fetc%2Fpasswd",         # /etc/passwd
    "/etc/passwd",
    "..",
    "dir%2F..%2F..%2Fetc%2Fpasswd",
    "dir/../served.txt",       # not normalized, even if it stays inside
    "./served.txt",
    "dir//sub/inner.txt",
    "served.txt/",
    "",
    ".nsyncfs",
    ".nsyncfs%2Fraft%2Fx",
    ".nsyncfs/raft/x",
    ".nsyncfs/raft/metadata1",
    "%00",
    "served.txt%00",
    "served.txt%00.jpg",
    "a%00%2F..%2F..%2Fetc%2Fpasswd",
]


@pytest.mark.parametrize("path", BAD_PATHS)
def test_bad_file_path_is_400(node, path):
    code, body = http_get(node.fport, f"/v1/file?path={path}&version=1")
    assert code == 400, f"path={path!r}: {code} {body[:200]!r}"
    assert b"root:" not in body
    assert_alive(node)


def test_file_without_path_is_400(node):
    code, _ = http_get(node.fport, "/v1/file")
    assert code == 400
    code, _ = http_get(node.fport, "/v1/file?version=1")
    assert code == 400
    assert_alive(node)


def test_valid_but_absent_path_is_404(node):
    """A well-formed path is not rejected as hostile: it is simply not there."""
    code, _ = http_get(node.fport, "/v1/file?path=no%2Fsuch%2Ffile&version=1")
    assert code == 404
    assert_alive(node)


def test_wrong_version_is_409(node):
    code, _ = http_get(node.fport, "/v1/file?path=served.txt&version=999999999")
    assert code == 409
    assert_alive(node)


@pytest.mark.parametrize("target", [
    "/", "/v1", "/v1/", "/v2/status", "/v1/statuss", "/etc/passwd", "/../../etc/passwd",
    "/v1/file/../../etc/passwd", "/%00", "/" + "A" * 3000,
], ids=lambda t: t if len(t) < 40 else f"{t[:10]}...({len(t)})")
def test_garbage_url_is_404(node, target):
    code, body = http_get(node.fport, target)
    assert code == 404, f"{target[:60]!r}: {code}"
    assert b"root:" not in body
    assert_alive(node)


def test_wrong_method(node):
    conn_code, _ = http_post(node.fport, "/v1/status", b"x")
    assert 400 <= conn_code < 500
    assert_alive(node)


def test_garbage_propose_is_rejected(node):
    for body in (b"", b"\x00" * 7, os.urandom(4096), b"\xff" * 65536):
        code, _ = http_post(node.fport, "/v1/propose", body,
                            headers={"Content-Type": "application/octet-stream"})
        assert code == 400, f"garbage proposal of {len(body)} bytes: {code}"
    assert_alive(node)
    # and nothing was applied: the mount is unchanged and still writable
    assert sorted(os.listdir(node.mnt)) == ["dir", "served.txt"]
    write_file(node.path("after-garbage.txt"), b"ok")
    os.unlink(node.path("after-garbage.txt"))


def test_garbage_batch_is_rejected(node):
    """POST /v1/propose-batch: a malformed frame is refused whole (400); a
    well-framed command that does not decode is refused alone (rc EINVAL)."""
    import json
    import struct

    hdr = {"Content-Type": "application/octet-stream"}
    bad_frames = [
        b"",
        struct.pack("<I", 0),                                  # no commands
        struct.pack("<I", 5000),                               # too many
        struct.pack("<II", 1, 100) + b"short",                 # length past the end
        struct.pack("<II", 1, 0),                              # empty command
        struct.pack("<II", 1, 3) + b"abc" + b"trailing",       # bytes after the last
        struct.pack("<I", 2) + struct.pack("<I", 3) + b"abc",  # one of two missing
    ]
    for body in bad_frames:
        code, _ = http_post(node.fport, "/v1/propose-batch", body, headers=hdr)
        assert code == 400, f"malformed batch {body[:16]!r}: {code}"
    code, answer = http_post(node.fport, "/v1/propose-batch",
                             struct.pack("<II", 1, 8) + os.urandom(8), headers=hdr)
    assert code == 200, code
    results = json.loads(answer)["results"]
    assert len(results) == 1 and results[0][0] == -22, results
    assert_alive(node)
    write_file(node.path("after-batch.txt"), b"ok")
    os.unlink(node.path("after-batch.txt"))


def test_huge_url(node):
    try:
        code, _ = http_get(node.fport, "/v1/file?path=" + "a/" * 60000 + "b&version=1")
        assert 400 <= code < 500, code
    except (OSError, http.client.HTTPException):
        pass  # dropping such a request is fine too
    assert_alive(node)


@pytest.mark.parametrize("raw", [
    b"\x00\x01\x02garbage\r\n\r\n",
    b"GET\r\n\r\n",
    b"GET /v1/status HTTP/9.9\r\n\r\n",
    b"GET /v1/file?path=%zz&version=1 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /v1/propose HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\nshort",
    b"GET /v1/status HTTP/1.1\r\nHost: x\r\n" + b"X: " + b"y" * 100000 + b"\r\n\r\n",
], ids=["binary", "bare-get", "http-9.9", "bad-escape", "short-body", "huge-header"])
def test_raw_garbage(node, raw):
    reply = b""
    s = socket.create_connection((HOST, node.fport), timeout=5)
    try:
        s.sendall(raw)
        s.shutdown(socket.SHUT_WR)
        reply = s.recv(4096)
    except OSError:  # reset, broken pipe, timeout: the server may drop us
        pass
    finally:
        s.close()
    if reply:
        assert reply.startswith(b"HTTP/1."), reply[:80]
        if b"HTTP/9.9" not in raw:
            assert reply[9:10] in (b"4", b"5"), reply[:80]
    assert_alive(node)


def test_many_connections_then_status(node):
    socks = []
    try:
        for _ in range(50):
            socks.append(socket.create_connection((HOST, node.fport), timeout=5))
    finally:
        for s in socks:
            s.close()
    assert_alive(node)


def test_connections_are_kept_alive(node):
    """Fetches and forwarded batches reuse one connection (a new TCP
    connection and server thread per request cost more than the request)."""
    conn = http.client.HTTPConnection(HOST, node.fport, timeout=5)
    socks = []
    try:
        for target in ("/v1/status", "/v1/file?path=nothing-here&version=1", "/v1/status"):
            conn.request("GET", target)
            r = conn.getresponse()
            r.read()
            assert (r.getheader("Connection") or "").lower() != "close", target
            socks.append(conn.sock)
    finally:
        conn.close()
    assert socks[0] is not None and all(s is socks[0] for s in socks), \
        "the server closed the connection between requests"


def _served_version(nd):
    """The catalog version at which served.txt is served (found by asking)."""
    for v in range(int(nd.status()["fsm_version"]), 0, -1):
        if http_get(nd.fport, f"/v1/file?path=served.txt&version={v}")[0] == 200:
            return v
    pytest.fail("served.txt is served at no version")


@pytest.mark.parametrize("query", [
    "map=holes", "map=", "ranges=", "ranges=0", "ranges=0:", "ranges=:2",
    "ranges=0:0", "ranges=5:100", "ranges=13:1", "ranges=4:2,0:2", "ranges=0:2,1:2",
    "ranges=-1:2", "ranges=+1:2", "ranges=0:2,", "ranges=0:18446744073709551615",
    "ranges=99999999999999999999999:1", "ranges=0x1:1", "ranges=1:1;2:1",
    "ranges=" + ",".join(f"{i}:1" for i in range(200)),
])
def test_bad_map_or_ranges_is_400(node, query):
    v = _served_version(node)
    code, _ = http_get(node.fport, f"/v1/file?path=served.txt&version={v}&{query}")
    assert code == 400, query
    assert_alive(node)


def test_ranges_and_map_answer_those_parts(node):
    v = _served_version(node)
    code, body = http_get(node.fport, f"/v1/file?path=served.txt&version={v}&ranges=0:2,7:5")
    assert (code, body) == (200, b"sebytes")
    code, body = http_get(node.fport, f"/v1/file?path=served.txt&version={v}&ranges=11:1")
    assert (code, body) == (200, b"s")
    code, body = http_get(node.fport, f"/v1/file?path=served.txt&version={v}&map=extents")
    assert (code, body) == (200, (0).to_bytes(8, "little") + (12).to_bytes(8, "little"))
    code, body = http_get(node.fport, f"/v1/file?path=served.txt&version={v}&map=blocks")
    assert code == 200 and len(body) == 32 and body[:16] == (0).to_bytes(8, "little") + (12).to_bytes(8, "little")
    assert_alive(node)
