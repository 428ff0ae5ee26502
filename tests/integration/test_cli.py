"""Command-line contract: bad input is one line on stderr and exit code 2,
with nothing mounted; --help and --version exit 0."""
import socket
import subprocess

import pytest

from nsynctest import HOST, free_ports, fusermount_u, is_mounted


def run(binary, args, mnt=None, timeout=15):
    try:
        r = subprocess.run([str(binary)] + args, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
        return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
    except subprocess.TimeoutExpired:
        return None, "", f"still running after {timeout} s"
    finally:
        # an invocation that wrongly mounted must not leak its mount
        if mnt is not None and is_mounted(mnt):
            fusermount_u(mnt, lazy=True)


@pytest.fixture
def setup(tmp_path, binary):
    b = tmp_path / "b"
    m = tmp_path / "m"
    b.mkdir()
    m.mkdir()
    cp, fp, cp2, fp2 = free_ports(4)
    cl = f"{HOST}:{cp}:{fp},{HOST}:{cp2}:{fp2}"

    def args(backing=str(b), mnt=str(m), cluster=cl, cport=cp, fport=fp, extra=()):
        a = [backing, mnt, "--host", HOST, "--cluster-port", str(cport),
             "--file-server-port", str(fport)]
        if cluster is not None:
            a += ["--cluster", cluster]
        return a + ["-f"] + list(extra)

    return {"b": b, "m": m, "cp": cp, "fp": fp, "args": args, "tmp": tmp_path, "bin": binary}


def expect_usage_error(s, args, what):
    rc, out, err = run(s["bin"], args, mnt=s["m"])
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, f"{what}: exit code {rc}, want 2; stderr: {err!r}"
    assert len(lines) == 1, f"{what}: want exactly one line on stderr, got {lines!r}"
    assert not is_mounted(s["m"]), f"{what}: something was mounted"
    return lines[0]


def test_help(binary):
    rc, out, err = run(binary, ["--help"])
    assert rc == 0, err
    assert "usage" in out.lower() and "--cluster" in out


def test_version(binary):
    rc, out, err = run(binary, ["--version"])
    assert rc == 0, err
    assert "nsyncfs" in out and any(ch.isdigit() for ch in out)


def test_missing_backing(setup):
    s = setup
    line = expect_usage_error(s, s["args"](backing=str(s["tmp"] / "nope")), "missing BACKING")
    assert "nope" in line or "BACKING" in line


def test_backing_is_a_file(setup):
    s = setup
    f = s["tmp"] / "afile"
    f.write_bytes(b"x")
    expect_usage_error(s, s["args"](backing=str(f)), "BACKING is a file")


def test_mountpoint_not_a_directory(setup):
    s = setup
    f = s["tmp"] / "notadir"
    f.write_bytes(b"x")
    expect_usage_error(s, s["args"](mnt=str(f)), "MOUNTPOINT is a file")
    assert f.read_bytes() == b"x"


def test_mountpoint_missing(setup):
    s = setup
    expect_usage_error(s, s["args"](mnt=str(s["tmp"] / "absent")), "missing MOUNTPOINT")


@pytest.mark.parametrize("entry", [
    "127.0.0.1:abc:1", "127.0.0.1:1", "127.0.0.1:1:2:3", ":1:2", "127.0.0.1:70000:1",
    "127.0.0.1:0:1", "127.0.0.1:1:", "127.0.0.1:-5:7",
])
def test_malformed_cluster_entry(setup, entry):
    s = setup
    cl = f"{HOST}:{s['cp']}:{s['fp']},{entry}"
    expect_usage_error(s, s["args"](cluster=cl), f"--cluster {cl!r}")


@pytest.mark.parametrize("which", ["cport", "fport"])
def test_port_already_taken(setup, which):
    s = setup
    port = s["cp"] if which == "cport" else s["fp"]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((HOST, port))
        sock.listen(1)
        line = expect_usage_error(s, s["args"](), f"{which} {port} taken")
        assert str(port) in line, f"the message should name the port: {line!r}"
    finally:
        sock.close()


@pytest.mark.parametrize("bad", [
    ["--cluster-port", "notaport"], ["--file-server-port", "0"], ["--log-level", "loud"],
    ["--no-such-option"],
], ids=["cport-notaport", "fport-zero", "log-level", "unknown-option"])
def test_bad_options(setup, bad):
    s = setup
    expect_usage_error(s, s["args"]() + bad, f"options {bad}")


def test_missing_host(setup):
    s = setup
    a = [x for x in s["args"]()]
    i = a.index("--host")
    del a[i:i + 2]
    expect_usage_error(s, a, "no --host")


def test_missing_mountpoint_argument(setup):
    s = setup
    a = s["args"]()
    del a[1]
    expect_usage_error(s, a, "only one positional argument")


def test_same_ports(setup):
    s = setup
    expect_usage_error(s, s["args"](fport=s["cp"]), "cluster port == file-server port")


def test_already_mounted(setup, cluster_factory):
    """Mounting over a live nsyncfs mount is refused."""
    c = cluster_factory(1, name="single")
    s = setup
    rc, out, err = run(s["bin"], s["args"](mnt=str(c.node(0).mnt)))
    assert rc == 2, f"exit code {rc}; stderr {err!r}"
    assert len([ln for ln in err.splitlines() if ln.strip()]) == 1
    assert c.node(0).running and c.node(0).mounted()
