"""Addresses (issue 17, point 11): a cluster on IPv6 ([::1]:P:Q in --cluster,
bracketed URLs, plain and with the cluster secret), a cluster whose nodes
listen on 0.0.0.0 and are known by --advertise, and the refusal of bad
address values at start (one line, exit 2, nothing mounted)."""
import json
import subprocess

import pytest

from nsynctest import BINARY, HOST, free_ports, fmt_addr, write_file
from test_cli import expect_usage_error


def _ipv6_loopback():
    """None if ::1 is on lo and bindable, else why not."""
    try:
        out = subprocess.run(["ip", "-6", "addr", "show", "lo"], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.SubprocessError) as e:
        return f"cannot run 'ip -6 addr show lo': {e}"
    if "::1/128" not in out:
        return "::1 is not configured on lo ('ip -6 addr show lo' does not list it)"
    import socket
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError as e:
        return f"cannot bind ::1: {e}"
    return None


needs_ipv6 = pytest.mark.skipif(_ipv6_loopback() is not None, reason=str(_ipv6_loopback()))


def keygen(path):
    subprocess.run([str(BINARY), "keygen", str(path)], check=True, capture_output=True, timeout=30)
    return path


def _status_address(target):
    """The address `nsyncfs status --json TARGET` reached (MOUNTPOINT or HOST:PORT)."""
    r = subprocess.run([str(BINARY), "status", "--json", str(target)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout)["health"]["address"]


def _members_addrs(st):
    return sorted((m.get("caddr", ""), m.get("faddr", "")) for m in st.get("members", []))


def _replicate_and_survive_leader_kill(c):
    lead = c.leader()
    f = next(i for i in range(3) if i != lead)
    # written on a follower: forwarded to the leader over the address under test
    write_file(c.node(f).path("v6.txt"), b"over the address under test\n")
    c.wait_file("v6.txt", b"over the address under test\n")
    c.kill9(lead)
    rest = [i for i in range(3) if i != lead]
    c.wait_ready(rest)
    write_file(c.node(rest[0]).path("after.txt"), b"after the leader died\n")
    c.wait_file("after.txt", b"after the leader died\n", idxs=rest)
    c.start(lead)
    c.wait_file("after.txt", b"after the leader died\n")


@needs_ipv6
@pytest.mark.parametrize("secret", [False, True], ids=["plain", "secret"])
def test_ipv6_cluster_replicates_and_survives_a_leader_kill(cluster_factory, tmp_path, secret):
    extra = ("--secret-file", str(keygen(tmp_path / "cluster.key"))) if secret else ()
    c = cluster_factory(3, extra_args=extra, host="::1")
    assert c.cluster_arg().startswith("[::1]:"), c.cluster_arg()
    st = c.node(0).status()
    nd = c.node(0)
    assert st["caddr"] == f"[::1]:{nd.cport}" and st["faddr"] == f"[::1]:{nd.fport}", st
    _replicate_and_survive_leader_kill(c)
    # every member as the catalog knows it: bracketed, as given
    want = sorted((fmt_addr("::1", n.cport), fmt_addr("::1", n.fport)) for n in c.nodes)
    assert _members_addrs(c.node(0).status()) == want
    # the status command takes a bracketed HOST:PORT and finds a mount's node
    assert _status_address(f"[::1]:{nd.fport}") == f"[::1]:{nd.fport}"
    assert _status_address(nd.mnt) == f"[::1]:{nd.fport}"


@pytest.mark.parametrize("secret", [False, True], ids=["insecure", "secret"])
def test_wildcard_host_with_advertise_replicates(cluster_factory, tmp_path, secret):
    # 0.0.0.0 is reachable by others: without a secret only with -o insecure.
    # With the secret the leader checks that a forwarded write comes from
    # the address its sender is known by: requests leave from --advertise
    # (the kernel would pick 127.0.0.1 for every 127.0.0.x here).
    extra = ("--secret-file", str(keygen(tmp_path / "cluster.key"))) if secret else ("-o", "insecure")
    c = cluster_factory(3, extra_args=extra, host="0.0.0.0", advertise=lambda i: f"127.0.0.{i + 2}")
    st = c.node(1).status()
    assert st["host"] == "0.0.0.0" and st["advertise"] == "127.0.0.3", st
    want = sorted((fmt_addr(n.reach, n.cport), fmt_addr(n.reach, n.fport)) for n in c.nodes)
    lead = c.leader()
    f = next(i for i in range(3) if i != lead)
    write_file(c.node(f).path("adv.txt"), b"through the advertised addresses\n")
    c.wait_file("adv.txt", b"through the advertised addresses\n")
    assert _members_addrs(c.node(lead).status()) == want
    # the status command finds a wildcard node through its loopback
    assert _status_address(c.node(0).mnt) == f"127.0.0.1:{c.node(0).fport}"


@pytest.fixture
def bare(tmp_path, binary):
    b, m = tmp_path / "b", tmp_path / "m"
    b.mkdir()
    m.mkdir()
    cp, fp = free_ports(2)
    return {"b": b, "m": m, "cp": cp, "fp": fp, "bin": binary, "tmp": tmp_path}


def _args(s, host=HOST, cluster=None, extra=()):
    return [str(s["b"]), str(s["m"]), "--host", host, "--cluster-port", str(s["cp"]),
            "--file-server-port", str(s["fp"]),
            "--cluster", cluster or fmt_addr(host.strip("[]"), s["cp"], s["fp"]),
            "-f", "-o", "insecure"] + list(extra)


@pytest.mark.parametrize("host,extra,what", [
    ("0.0.0.0", (), "--advertise"),
    ("::", (), "--advertise"),
    ("[::]", (), "--advertise"),
    ("0.0.0.0", ("--advertise", "0.0.0.0"), "wildcard"),
    ("0.0.0.0", ("--advertise", "::"), "wildcard"),
    ("0.0.0.0", ("-o", "advertise=[::]"), "wildcard"),
    ("0.0.0.0", ("--advertise", "[::1"), "--advertise"),
    ("0.0.0.0", ("--advertise", "1.2.3.4:5"), "--advertise"),
    ("[::1", (), "--host"),
    ("::1]", (), "--host"),
    ("a b", (), "--host"),
])
def test_bad_host_or_advertise_refused(bare, host, extra, what):
    cl = fmt_addr("127.0.0.2", bare["cp"], bare["fp"])
    line = expect_usage_error(bare, _args(bare, host=host, cluster=cl, extra=extra), f"{host} {extra}")
    assert what in line, line


@pytest.mark.parametrize("entry", [
    "[::1:7001:8001", "::1]:7001:8001", "::1:7001:8001", "[::1]:7001", "[::1]:7001:8001:9",
    "[]:7001:8001", "[::1]:0:8001", "[::1]:7001:65536", "[127.0.0.1]:7001:8001", "[::1]7001:8001",
])
def test_bad_ipv6_cluster_entry_refused(bare, entry):
    ok = fmt_addr(HOST, bare["cp"], bare["fp"])
    line = expect_usage_error(bare, _args(bare, cluster=f"{ok},{entry}"), f"--cluster {entry}")
    assert "--cluster" in line, line
    # the same through -o cluster= with '+' separators
    line = expect_usage_error(bare, _args(bare, cluster=ok, extra=("-o", f"cluster={ok}+{entry}")),
                              f"-o cluster=...+{entry}")
    assert "--cluster" in line, line


def test_status_refuses_a_bare_ipv6_target(binary):
    r = subprocess.run([str(binary), "status", "::1:8001"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "[::1]:8001" in r.stderr, (r.returncode, r.stderr)
