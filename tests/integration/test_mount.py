"""Mounting the way an administrator does (issue 17): every option as -o
name=value, `mount -t fuse.nsyncfs`, an fstab line, a --config file, a daemon
that returns only once it serves (or with the reason and a non-zero code),
exit codes, SIGHUP that does not leave, df/findmnt showing BACKING."""
import json
import os
import signal
import subprocess
import time

import pytest

from nsynctest import HOST, free_ports, fusermount_u, http_get, is_mounted, wait_for


def pid_of(backing):
    """The nsyncfs process serving BACKING (daemonized: found by its argv)."""
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if len(argv) > 2 and argv[0].endswith(b"nsyncfs") and argv[1] == str(backing).encode():
            return int(d)
    return None


@pytest.fixture
def node(tmp_path, binary):
    """A single node's directories and ports; every mount and process made
    under tmp_path is removed afterwards, whatever the test did."""
    b, m = tmp_path / "b", tmp_path / "m"
    b.mkdir()
    m.mkdir()
    cp, fp = free_ports(2)
    n = {"b": b, "m": m, "cp": cp, "fp": fp, "bin": str(binary), "tmp": tmp_path,
         "o": f"host={HOST},cluster_port={cp},file_server_port={fp},cluster={HOST}:{cp}:{fp}"}
    yield n
    if is_mounted(m):
        fusermount_u(m, lazy=True)
    pid = pid_of(b)
    if pid:
        try:
            wait_for(lambda: pid_of(b) is None, 15, "the daemon to exit after the unmount")
        except AssertionError:
            os.kill(pid, signal.SIGKILL)


def run(args, timeout=60, env=None):
    r = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                       env=env)
    return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")


def status(n):
    code, body = http_get(n["fp"], "/v1/status")
    assert code == 200
    return json.loads(body)


def assert_serving(n):
    """Right after the start command returned: mounted, answering, writable."""
    assert is_mounted(n["m"]), "the command returned before the mount existed"
    st = status(n)
    assert st.get("role") == "leader", st
    p = n["m"] / "hello"
    p.write_bytes(b"hi\n")
    assert (n["b"] / "hello").read_bytes() == b"hi\n"


def stop(n):
    pid = pid_of(n["b"])
    fusermount_u(n["m"])
    if pid:
        wait_for(lambda: pid_of(n["b"]) is None, 15, "the daemon to exit after the unmount")


def test_daemon_with_o_options_returns_once_serving(node):
    rc, out, err = run([node["bin"], str(node["b"]), str(node["m"]), "-o", node["o"]])
    assert rc == 0, err
    assert_serving(node)
    # df and findmnt name where the data lives, and the type
    r = subprocess.run(["findmnt", "-n", "-o", "SOURCE,FSTYPE", str(node["m"])],
                       capture_output=True, text=True, check=True)
    assert r.stdout.split() == [str(node["b"]), "fuse.nsyncfs"], r.stdout
    stop(node)


def test_mount_t_and_fstab(node, tmp_path):
    # mount(8) -> mount.fuse3 -> `nsyncfs BACKING MOUNTPOINT -o rw,...,dev,suid`,
    # with the program named by the type (here by its path: it is not on PATH)
    fstype = "fuse." + node["bin"]
    rc, out, err = run(["mount", "-t", fstype, str(node["b"]), str(node["m"]), "-o",
                        node["o"] + ",_netdev"])
    assert rc == 0, err
    assert_serving(node)
    stop(node)
    # the same as an fstab line; the cluster list uses '+' (fstab takes the commas)
    cp2, fp2 = free_ports(2)
    o = node["o"] + f"+{HOST}:{cp2}:{fp2},lock_timeout=5,_netdev,noauto"
    fstab = tmp_path / "fstab"
    fstab.write_text(f"{node['b']} {node['m']} {fstype} {o} 0 0\n")
    rc, out, err = run(["mount", "-T", str(fstab), str(node["m"])])
    assert rc == 0, err
    assert is_mounted(node["m"])
    st = status(node)
    assert st.get("role") in ("follower", "candidate", "unavailable", "leader"), st
    stop(node)


def test_config_file_and_command_line_wins(node, tmp_path):
    conf = tmp_path / "nsyncfs.conf"
    conf.write_text("# one file for every server\n"
                    f"host = {HOST}\n"
                    f"cluster_port = {node['cp']}\n"
                    f"file_server_port = {node['fp']}\n"
                    f"cluster = {HOST}:{node['cp']}:{node['fp']}\n"
                    "lock_timeout = not-a-number\n"
                    "strict_excl\n")
    # the file's bad lock_timeout alone is refused, naming the option
    rc, out, err = run([node["bin"], str(node["b"]), str(node["m"]), "--config", str(conf)])
    assert rc == 2, err
    assert "lock_timeout" in err and not is_mounted(node["m"])
    # given on the command line, the command line's value wins
    rc, out, err = run([node["bin"], str(node["b"]), str(node["m"]), "-o",
                        f"config={conf},lock_timeout=7"])
    assert rc == 0, err
    assert_serving(node)
    stop(node)


@pytest.mark.parametrize("text, what", [
    ("no_such_key = 1\n", "no_such_key"),
    ("host\n", "host"),
    ("strict_excl = yes\n", "strict_excl"),
], ids=["unknown-key", "missing-value", "flag-with-value"])
def test_bad_config_file(node, tmp_path, text, what):
    conf = tmp_path / "bad.conf"
    conf.write_text(text)
    rc, out, err = run([node["bin"], str(node["b"]), str(node["m"]), "--config", str(conf),
                        "-o", node["o"]])
    assert rc == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and what in lines[0] and "bad.conf:1" in lines[0], lines
    assert not is_mounted(node["m"])


def test_start_up_failure_after_fork_exits_3_with_reason(node):
    # raft's directory is a file: found only once the cluster starts, in the
    # daemon, after the caller was left waiting
    (node["b"] / ".nsyncfs").mkdir()
    (node["b"] / ".nsyncfs" / "raft").write_bytes(b"not a directory")
    rc, out, err = run([node["bin"], str(node["b"]), str(node["m"]), "-o", node["o"]])
    assert rc == 3, f"exit code {rc}; stderr {err!r}"
    assert "raft" in err, err
    assert not is_mounted(node["m"])
    assert pid_of(node["b"]) is None


def test_bad_fuse_option_in_daemon_mode_is_usage(node):
    rc, out, err = run([node["bin"], str(node["b"]), str(node["m"]), "-o",
                        node["o"] + ",no_such_fuse_option"])
    assert rc == 2, err
    assert "no_such_fuse_option" in err
    assert not is_mounted(node["m"])


def test_sighup_does_not_leave_and_d_is_debug(node):
    p = subprocess.Popen([node["bin"], str(node["b"]), str(node["m"]), "-d", "-o", node["o"]],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    try:
        wait_for(lambda: is_mounted(node["m"]) and status(node).get("role") == "leader", 30,
                 "the -d node to serve")
        # ignored, not handled: the kernel drops it, so nothing can race below
        with open(f"/proc/{p.pid}/status") as f:
            ign = int(next(ln for ln in f if ln.startswith("SigIgn:")).split()[1], 16)
        assert ign & (1 << (signal.SIGHUP - 1)), "SIGHUP is not ignored"
        p.send_signal(signal.SIGHUP)
        (node["m"] / "after-hup").write_bytes(b"x")  # still serving, same process
        assert p.poll() is None and is_mounted(node["m"])
        assert not (node["b"] / ".nsyncfs" / "left").exists()
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=30)
        err = p.stderr.read().decode(errors="replace")
        assert rc == 0, err
        assert "[debug]" in err, "-d should log at debug level to stderr"
        assert not is_mounted(node["m"])
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
