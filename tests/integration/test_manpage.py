"""The man page nsyncfs(8) (issue 17): lint-clean for mandoc and groff, and
it documents every key of src/cli.c's option table, every exit code and
the status command."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "man" / "nsyncfs.8"


def test_mandoc_lint_is_clean():
    if not shutil.which("mandoc"):
        pytest.fail("mandoc is missing: scripts/deps.sh installs it", pytrace=False)
    r = subprocess.run(["mandoc", "-T", "lint", "-W", "style", str(PAGE)], capture_output=True,
                       text=True)
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr


def test_groff_warns_nothing():
    r = subprocess.run(["groff", "-ww", "-z", "-man", str(PAGE)], capture_output=True, text=True)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr


def rendered():
    r = subprocess.run(["mandoc", "-T", "utf8", "-O", "width=200", str(PAGE)], capture_output=True,
                       text=True, check=True)
    return re.sub(r".\x08", "", r.stdout)  # drop overstrike bold/underline


def test_every_option_and_exit_code_is_documented():
    cli = (REPO / "src" / "cli.c").read_text()
    table = cli[cli.index("key_names[K_N_]"):cli.index("};", cli.index("key_names[K_N_]"))]
    keys = re.findall(r'= "([a-z_]+)"', table)
    assert len(keys) >= 15, keys
    text = rendered()
    missing = [k for k in keys if not re.search(rf"(-o |\b){k}\b", text)]
    assert not missing, f"options of src/cli.c not in the man page: {missing}"
    for long_opt in ("--host", "--cluster-port", "--file-server-port", "--cluster", "--config",
                     "--log-level", "--log-file"):
        assert long_opt in text, long_opt
    for drop in re.findall(r'FUSE_OPT_KEY\("(\w+)", K_DROP\)', cli):
        assert drop in text, f"mount option {drop} (ignored) not documented"
    exit_sec = text[text.index("EXIT STATUS"):text.index("FILES")]
    for code in ("0", "1", "2", "3"):
        assert re.search(rf"^\s+{code}\s+\S", exit_sec, re.M), f"exit code {code}"
    for what in ("nsyncfs status", "SIGTERM", "SIGHUP", "fuse.nsyncfs", "nsyncfs@.service",
                 "READY=1", "/metrics", "network-online.target"):
        assert what in text, what
