"""Where the log goes (issue 17): with -f under journald (stderr is the
stream $JOURNAL_STREAM names) every line carries its syslog priority as
"<N>"; -o log_file=PATH appends there; a daemon on a machine without a
syslog socket says on stderr which file it logs to, and logs there."""
import os
import re
import signal
import subprocess

import pytest

from nsynctest import HOST, free_ports, fusermount_u, is_mounted, wait_for


@pytest.fixture
def one(tmp_path, binary):
    b, m = tmp_path / "b", tmp_path / "m"
    b.mkdir()
    m.mkdir()
    cp, fp = free_ports(2)
    args = [str(binary), str(b), str(m), "--host", HOST, "--cluster-port", str(cp),
            "--file-server-port", str(fp), "--cluster", f"{HOST}:{cp}:{fp}"]
    procs = []
    yield {"b": b, "m": m, "args": args, "tmp": tmp_path, "procs": procs}
    if is_mounted(m):
        fusermount_u(m)
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    if is_mounted(m):
        fusermount_u(m, lazy=True)


def run_foreground(one, extra, env_of_stderr=None):
    """Start with -f, stderr to a file; env_of_stderr(stat) -> extra env."""
    err_path = one["tmp"] / "stderr.log"
    err = open(err_path, "wb")
    env = dict(os.environ)
    env.pop("JOURNAL_STREAM", None)
    if env_of_stderr:
        env.update(env_of_stderr(os.fstat(err.fileno())))
    p = subprocess.Popen(one["args"] + ["-f"] + extra, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=err, env=env, start_new_session=True)
    err.close()
    one["procs"].append(p)
    wait_for(lambda: is_mounted(one["m"]) or p.poll() is not None, 20, "the mount")
    assert p.poll() is None, err_path.read_text()
    return p, err_path


def stop(one, p):
    fusermount_u(one["m"])
    assert p.wait(timeout=20) == 0


def test_journal_priority_prefix(one):
    p, err = run_foreground(one, ["--log-level", "debug"],
                            lambda st: {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    stop(one, p)
    lines = [ln for ln in err.read_text().splitlines() if ln]
    assert lines, "nothing logged"
    bad = [ln for ln in lines if not re.match(r"^<[0-7]>nsyncfs\[(error|warn|info|debug)\] ", ln)]
    assert not bad, bad[:5]
    levels = {"error": 3, "warn": 4, "info": 6, "debug": 7}
    for ln in lines:
        n, name = re.match(r"^<(\d)>nsyncfs\[(\w+)\]", ln).groups()
        assert int(n) == levels[name], ln
    assert any(ln.startswith("<6>") and "mounted" in ln for ln in lines)


def test_no_prefix_when_stderr_is_not_the_journal(one):
    # JOURNAL_STREAM inherited from a unit but stderr redirected elsewhere
    p, err = run_foreground(one, [], lambda st: {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})
    stop(one, p)
    lines = [ln for ln in err.read_text().splitlines() if ln]
    assert lines and all(re.match(r"^\d\d:\d\d:\d\d\.\d{3} nsyncfs\[", ln) for ln in lines), lines[:5]


def test_log_file_option(one):
    log = one["tmp"] / "logs" / "node.log"
    log.parent.mkdir()
    p, err = run_foreground(one, ["-o", f"log_file={log}"])
    stop(one, p)
    text = log.read_text()
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} nsyncfs\[info\] mounted ", text, re.M), text
    assert "unmounting" in text
    assert "nsyncfs[" not in err.read_text(), "with log_file, lines go to the file only"


def test_bad_log_file_is_a_usage_error(one):
    r = subprocess.run(one["args"] + ["-f", "-o", f"log_file={one['tmp']}/no/such/dir/x.log"],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20)
    assert r.returncode == 2 and "log_file" in r.stderr and "No such file" in r.stderr, r.stderr
    assert not is_mounted(one["m"])


@pytest.mark.skipif(os.path.exists("/dev/log"), reason="this machine has a syslog socket")
def test_daemon_without_syslog_logs_to_a_file(one):
    r = subprocess.run(one["args"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    path = one["b"] / ".nsyncfs" / "nsyncfs.log"
    assert f"logging to {path}" in r.stderr, r.stderr
    assert is_mounted(one["m"])
    wait_for(lambda: "mounted" in path.read_text(), 10, "the start-up lines in the file")
    fusermount_u(one["m"])
    wait_for(lambda: "left the cluster" in path.read_text()
             or "keeping its state" in path.read_text(), 20, "the stop lines in the file")
