"""The cluster secret (issue 13): a 3-node cluster run with --secret-file, and
a client that does not hold the secret. It gets no file bytes, its forged
proposals, batches, joins and leaves change nothing, raw bytes or a replayed
libraft handshake on the raft port do not disturb raft, and a node with
another secret cannot join, while one with the right secret does. Also the
start-up checks: keygen, bad secret files, no secret on a reachable address."""
import http.client
import json
import os
import socket
import ssl
import stat
import struct
import subprocess
import time

import pytest

import conftest
from nsynctest import (BINARY, HOST, Node, free_ports, http_get, http_post, read_bytes,
                       tls_context, tree, wait_for, write_file)

SECRET_DATA = b"the secret file contents 0123456789\n"


def keygen(path):
    r = subprocess.run([str(BINARY), "keygen", str(path)], capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return path


@pytest.fixture(scope="module")
def secret(tmp_path_factory, binary):
    return keygen(tmp_path_factory.mktemp("secret") / "cluster.key")


@pytest.fixture(scope="module")
def secure(request, tmp_path_factory, binary, secret):
    base = tmp_path_factory.mktemp("secure")
    c = conftest._make(request, base, 3, ("--secret-file", str(secret)), "secure")
    m = c.node(0).path
    write_file(m("secret.txt"), SECRET_DATA)
    os.makedirs(m("dir"))
    write_file(m("dir/keep.txt"), b"keep me\n")
    c.wait_file("secret.txt", SECRET_DATA)
    c.wait_file("dir/keep.txt", b"keep me\n")
    return c


def trees(c):
    return [tree(nd.backing) for nd in c.nodes if nd.running]


def members(c, nodes=None):
    nodes = [nd for nd in c.nodes if nd.running] if nodes is None else nodes
    return [sorted(m["id"] for m in nd.status()["members"]) for nd in nodes]


def snapshot(c):
    """Everything a forged request could change: every tree and every
    node's view of the membership."""
    return trees(c), members(c)


def assert_unchanged(before, after):
    """Trees and membership as before, but for the commit_round files."""
    def strip(t):
        return {k: v for k, v in t.items() if not k.startswith("round-")}
    assert after[1] == before[1]
    assert [strip(t) for t in after[0]] == [strip(t) for t in before[0]]


def commit_round(c, name):
    """A change through the leader, seen by every node: whatever an attack
    sent before it has been processed by then."""
    data = f"round {name}\n".encode()
    write_file(c.node(c.leader()).path(f"round-{name}.txt"), data)
    c.wait_file(f"round-{name}.txt", data)


def commit_round_on(c, nodes, name):
    data = f"round {name}\n".encode()
    write_file(nodes[0].path(f"round-{name}.txt"), data)
    c.wait_file(f"round-{name}.txt", data, idxs=[nd.idx for nd in nodes])


def encode_str(s):
    b = s.encode()
    return struct.pack("<I", len(b)) + b + b"\0"


def forged_delete(node_id, path):
    """FSM command: ANNOUNCE of a tombstone (a delete) for path by node_id."""
    return (struct.pack("<BBBQQ", 1, 1, 0, node_id, 0) + encode_str(path) +
            struct.pack("<BIIIQ", 4, 0, 0, 0, 0))


def assert_no_plain_http(fn):
    """The port speaks TLS only: a plain HTTP request gets no answer."""
    try:
        code, _ = fn()
    except (OSError, http.client.HTTPException):
        return
    raise AssertionError(f"plain HTTP was answered {code}")


def post_refused(port, target, body, headers=None):
    """POST without the secret: over TLS without a certificate it is
    answered 403; over plain HTTP it is no HTTP at all."""
    code, reply = http_post(port, target, body, headers=headers, tls=tls_context())
    assert code == 403, (target, code, reply)
    assert_no_plain_http(lambda: http_post(port, target, body, headers=headers, timeout=3))


# ------------------------------------------------------------ start-up checks

def run_start(tmp_path, *args, timeout=30):
    b, m = tmp_path / "b", tmp_path / "m"
    b.mkdir(exist_ok=True)
    m.mkdir(exist_ok=True)
    cport, fport = free_ports(2)
    cmd = [str(BINARY), str(b), str(m), "--cluster-port", str(cport),
           "--file-server-port", str(fport), "-f"] + list(args)
    return subprocess.run(cmd, capture_output=True, timeout=timeout)


def test_keygen_writes_a_private_file_once(tmp_path, binary):
    p = tmp_path / "k"
    keygen(p)
    st = os.stat(p)
    assert stat.S_IMODE(st.st_mode) == 0o600
    text = read_bytes(p)
    assert b"PRIVATE KEY" in text and b"CERTIFICATE" in text
    r = subprocess.run([str(BINARY), "keygen", str(p)], capture_output=True, timeout=30)
    assert r.returncode == 2 and read_bytes(p) == text, r.stderr
    q = tmp_path / "k2"
    keygen(q)
    assert read_bytes(q) != text, "two keygens made the same secret"


@pytest.mark.parametrize("case", ["group-readable", "other-readable", "empty", "garbage",
                                  "cert-only", "missing"])
def test_bad_secret_file_refused(tmp_path, binary, case):
    good = keygen(tmp_path / "good")
    p = tmp_path / "secret"
    text = read_bytes(good)
    if case == "empty":
        text = b""
    elif case == "garbage":
        text = b"not a key\n" * 10
    elif case == "cert-only":
        text = text[text.index(b"-----BEGIN CERTIFICATE"):]
    if case != "missing":
        write_file(p, text)
        os.chmod(p, {"group-readable": 0o640, "other-readable": 0o604}.get(case, 0o600))
    r = run_start(tmp_path, "--host", HOST, "--secret-file", str(p))
    err = r.stderr.decode()
    assert r.returncode == 2, (case, r.returncode, err)
    assert len(err.strip().splitlines()) == 1 and str(p) in err, err


def test_no_secret_on_reachable_address_refused(tmp_path, binary):
    # 0.0.0.0 (known by others as its --advertise) is refused before anything is bound.
    r = run_start(tmp_path, "--host", "0.0.0.0", "--advertise", "127.0.0.2")
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert "--secret-file" in err and "nsyncfs keygen" in err, err


def test_insecure_warns_at_every_start(cluster_factory):
    # -o insecure passes the check (the --cluster error comes after it) ...
    r = subprocess.run([str(BINARY), "/nonexistent-b", "/nonexistent-m", "--host", "0.0.0.0",
                        "--advertise", "127.0.0.2",
                        "--cluster-port", "1", "--file-server-port", "2", "-o", "insecure"],
                       capture_output=True, timeout=30)
    assert r.returncode == 2 and b"--secret-file" not in r.stderr, r.stderr
    # ... and a node started with it warns, at each start.
    c = cluster_factory(1, extra_args=("-o", "insecure"))
    nd = c.node(0)
    c.stop(0)
    c.start(0)
    assert read_bytes(nd.log_path).count(b"[warn] -o insecure: no cluster secret") == 2


# ------------------------------------------------------------ outsiders

def test_status_is_open_and_names_no_path(secure):
    nd = secure.node(0)
    code, body = http_get(nd.fport, "/v1/status", tls=tls_context())
    assert code == 200, body
    st = json.loads(body)
    assert st["role"] in ("leader", "follower"), st
    assert b"secret.txt" not in body and b"dir" not in body and SECRET_DATA not in body


def test_file_get_without_secret_gets_no_bytes(secure, secret):
    c = secure
    for nd in c.nodes:
        top = int(nd.status()["fsm_version"])
        got = set()
        for v in range(1, top + 1):
            target = f"/v1/file?path=secret.txt&version={v}"
            code, body = http_get(nd.fport, target, tls=tls_context())
            assert code == 403 and SECRET_DATA not in body, (v, code, body)
            assert_no_plain_http(lambda: http_get(nd.fport, target, timeout=3))
            # The same request with the secret finds the file: the loop
            # above did ask for the right version.
            code, body = http_get(nd.fport, target, tls=tls_context(secret))
            if code == 200:
                got.add(body)
        assert got == {SECRET_DATA}, f"node {nd.idx}: with the secret no version served the file"


def test_forged_proposals_refused(secure):
    c = secure
    lead = c.node(c.leader())
    victim = int(c.node((c.leader() + 1) % 3).status()["node"], 16)
    before = snapshot(c)
    cmd = forged_delete(victim, "secret.txt")
    post_refused(lead.fport, "/v1/propose", cmd)
    batch = struct.pack("<I", 2) + b"".join(struct.pack("<I", len(x)) + x for x in
                                            (cmd, forged_delete(victim, "dir/keep.txt")))
    post_refused(lead.fport, "/v1/propose-batch", batch)
    commit_round(c, "proposals")
    assert_unchanged(before, snapshot(c))


def test_forged_membership_refused(secure):
    c = secure
    lead = c.node(c.leader())
    victim = c.node((c.leader() + 1) % 3).status()["node"]
    before = members(c)
    hdr = {"Content-Type": "application/json"}
    post_refused(lead.fport, "/v1/join",
                 json.dumps({"id": f"{12345:016x}", "caddr": "127.0.0.1:1", "faddr": "127.0.0.1:2"}), hdr)
    post_refused(lead.fport, "/v1/leave", json.dumps({"id": str(victim)}), hdr)
    commit_round(c, "membership")
    assert members(c) == before


def raft_hello(node_id, address):
    a = address.encode() + b"\0"
    a += b"\0" * (-len(a) % 8)
    return struct.pack("<QQQ", 1, node_id, len(a)) + a


def request_vote(term, candidate):
    # libraft message: u64 type (3: RequestVote), u64 body length; body:
    # term, candidate id, last log index, last log term, flags.
    body = struct.pack("<QQQQQ", term, candidate, 1 << 40, 1 << 40, 1)
    return struct.pack("<QQ", 3, len(body)) + body


def raft_view(c):
    views = [nd.status() for nd in c.nodes if nd.running]
    return {(v["leader"], v["term"]) for v in views}


def test_raft_port_garbage_and_replay_do_not_disturb(secure, tmp_path):
    c = secure
    c.leader()
    before = raft_view(c)
    assert len(before) == 1, before
    lead_id = int(next(iter(before))[0], 16)
    attacks = [
        os.urandom(4096),
        raft_hello(lead_id, f"{HOST}:1") + request_vote(2**64 - 1, lead_id),
        raft_hello(12345, f"{HOST}:1") + request_vote(2**63, 12345),
    ]
    other = keygen(tmp_path / "other.key")
    for nd in c.nodes:
        for data in attacks:
            with socket.create_connection((HOST, nd.cport), timeout=5) as s:
                try:
                    s.sendall(data)
                    s.recv(65536)
                except OSError:
                    pass
            # TLS without a certificate, and with another cluster's.
            for ctx in (tls_context(), tls_context(other)):
                try:
                    with socket.create_connection((HOST, nd.cport), timeout=5) as raw:
                        with ctx.wrap_socket(raw) as s:
                            s.sendall(data)
                            s.recv(1)
                except (OSError, ssl.SSLError):
                    pass
    # Refused on the TLS layer, each one logged by the node it reached.
    for nd in c.nodes:
        wait_for(lambda: read_bytes(nd.log_path).count(b"raft port: ") >= 3 * len(attacks),
                 10, f"node {nd.idx} logs the refused raft connections")
    commit_round(c, "raft")
    assert raft_view(c) == before


def test_raft_port_idle_connections_are_closed(secure):
    c = secure
    lead = c.node(c.leader())
    before = raft_view(c)
    socks = []
    try:
        for _ in range(100):
            s = socket.socket()
            s.settimeout(5)
            s.bind(("127.0.0.2", 0))
            try:
                s.connect((HOST, lead.cport))
                socks.append(s)
            except OSError:
                s.close()
        commit_round(c, "raft-idle")

        def all_closed():
            for s in socks:
                s.setblocking(False)
                try:
                    if s.recv(1) != b"":
                        return False
                except BlockingIOError:
                    return False
                except OSError:
                    pass
            return True
        # Without a handshake within 5 s a connection goes.
        wait_for(all_closed, 20, "the idle raft connections are closed")
    finally:
        for s in socks:
            s.close()
    commit_round(c, "raft-idle-after")
    assert raft_view(c) == before


# ------------------------------------------------------------ members

def post_as(port, target, body, tls, node=None, source=HOST):
    """POST with the cluster certificate, naming node as the sender, from
    the loopback address source."""
    conn = http.client.HTTPSConnection(HOST, port, timeout=5, context=tls,
                                       source_address=(source, 0))
    try:
        hdr = {"X-Nsync-Node": str(node)} if node is not None else {}
        conn.request("POST", target, body=body, headers=hdr)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def unlock(node_id, path):
    return struct.pack("<BBBQQ", 1, 5, 0, node_id, 0) + encode_str(path)


def test_a_command_speaks_for_its_sender_only(secure, secret):
    c = secure
    li = c.leader()
    lead = c.node(li)
    a, b = c.node((li + 1) % 3), c.node((li + 2) % 3)
    aid, bid = int(a.status()["node"], 16), int(b.status()["node"], 16)
    tls = tls_context(secret)
    before = snapshot(c)
    port = lead.fport
    # A control: a harmless command of a's own, sent as a, is taken.
    code, body = post_as(port, "/v1/propose", unlock(aid, "nothing-locked"), tls, aid)
    assert code == 200, body
    refused = [
        ("/v1/propose", forged_delete(bid, "secret.txt"), None, HOST),    # no sender named
        ("/v1/propose", forged_delete(bid, "secret.txt"), aid, HOST),     # a speaking for b
        ("/v1/propose", forged_delete(bid, "secret.txt"), bid, "127.0.0.2"),  # not b's address
        ("/v1/propose", struct.pack("<BBBQQ", 1, 8, 0, aid, 0), aid, HOST),   # LEAVE as a command
        ("/v1/propose-batch", struct.pack("<I", 2) + b"".join(
            struct.pack("<I", len(x)) + x for x in (unlock(aid, "x"), forged_delete(bid, "secret.txt"))),
         aid, HOST),
        ("/v1/leave", json.dumps({"id": f"{bid:016x}"}), aid, HOST),          # a removing b
        ("/v1/join", json.dumps({"id": f"{12345:016x}", "caddr": f"{HOST}:1", "faddr": f"{HOST}:2"}),
         12345, HOST),                                                    # a phantom
    ]
    for target, body, node, source in refused:
        code, reply = post_as(port, target, body, tls, node, source)
        assert code == 403, (target, node, source, code, reply)
    commit_round(c, "members")
    assert_unchanged(before, snapshot(c))


# ------------------------------------------------------------ joining nodes


def test_node_with_another_secret_cannot_join(secure, tmp_path):
    c = secure
    other = keygen(tmp_path / "other.key")
    old = list(c.nodes)
    before = members(c, old)
    saved = list(c.extra_args)
    cport, fport = free_ports(2)
    nd = Node(c, len(c.nodes), c.base, cport, fport)
    c.nodes.append(nd)
    c.extra_args = ["--secret-file", str(other)]
    seen = {m.idx: read_bytes(m.log_path).count(b"does not hold the cluster secret") for m in old}
    try:
        nd.spawn()
    finally:
        c.extra_args = saved
    try:
        # It finds no member it can talk to (their certificate is not its
        # own), so it cannot even ask to join; its raft connections are
        # refused by every member.
        wait_for(lambda: read_bytes(nd.log_path).count(b"SSL peer certificate") >= 3, 30,
                 "the node with another secret tries the members")
        for m in old:
            wait_for(lambda: read_bytes(m.log_path).count(b"does not hold the cluster secret") >
                     seen[m.idx], 30,
                     f"node {m.idx} refuses the stranger's raft connection")
        commit_round_on(c, old, "stranger")
        assert members(c, old) == before
        # Nothing of the cluster reaches it.
        assert sorted(os.listdir(nd.backing)) == [".nsyncfs"], os.listdir(nd.backing)
        assert os.listdir(nd.mnt) == [], os.listdir(nd.mnt)
    finally:
        c.kill9(nd.idx)


def test_node_with_the_secret_joins(secure):
    c = secure
    cport, fport = free_ports(2)
    nd = Node(c, len(c.nodes), c.base, cport, fport)
    c.nodes.append(nd)
    nd.spawn()
    c.wait_ready()
    c.wait_trees_equal()
    assert read_bytes(nd.path("secret.txt")) == SECRET_DATA
    wait_for(lambda: all(len(m) == 4 for m in members(c)), 20, "every node counts 4 members")


def test_operator_removes_a_dead_node(secure, secret):
    """The leader's own word (an operator on its machine, with the secret)
    removes another node: here the one that joined above, killed first."""
    c = secure
    joined = c.nodes[-1]
    jid = joined.status()["node"]
    c.kill9(joined.idx)
    li = c.leader()
    lead = c.node(li)
    lid = int(lead.status()["node"], 16)
    code, body = post_as(lead.fport, "/v1/leave", json.dumps({"id": str(jid)}), tls_context(secret), lid)
    assert code == 200, body
    wait_for(lambda: all(len(m) == 3 and jid not in m for m in members(c)), 20,
             "the dead node is no member any more")
