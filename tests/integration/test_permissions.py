"""Who may do what through a mount. Without -o allow_other only the user who
mounted reaches it (FUSE refuses everyone else); with it, the kernel checks
every other user's permissions (default_permissions), as on BACKING."""
import json
import os
import subprocess
import sys

from nsynctest import write_file

NOBODY = 65534

# The start of a probe run as root: it enters the mount (argv[1]; the test's
# directories above it are private) and drops to nobody (test_xattrs too).
AS_NOBODY = r"""
import errno, json, os, sys
os.chdir(sys.argv[1])
os.setgroups([])
os.setgid(%d)
os.setuid(%d)
out = {}
""" % (NOBODY, NOBODY)

# Then tries each step and prints what happened to each (0 or the errno name).
_PROBE = AS_NOBODY + r"""
def attempt(name, fn):
    try:
        fn()
        out[name] = 0
    except OSError as e:
        out[name] = errno.errorcode.get(e.errno, str(e.errno))
attempt("list_root", lambda: os.listdir("."))
attempt("read_private", lambda: open("private", "rb").read())
attempt("read_public", lambda: open("public", "rb").read())
attempt("write_public", lambda: open("public", "ab").write(b"x"))
attempt("create_in_root", lambda: open("new-by-nobody", "wb").close())
attempt("create_in_open_dir", lambda: open("open/by-nobody", "wb").close())
attempt("chmod_private", lambda: os.chmod("private", 0o666))
print(json.dumps(out))
"""


def probe_as_nobody(mnt):
    r = subprocess.run([sys.executable, "-c", _PROBE, str(mnt)], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    return json.loads(r.stdout)


def prepare(nd):
    os.chmod(nd.path(""), 0o755)
    write_file(nd.path("private"), b"secret")
    os.chmod(nd.path("private"), 0o600)
    write_file(nd.path("public"), b"hello")
    os.chmod(nd.path("public"), 0o644)
    os.mkdir(nd.path("open"))
    os.chmod(nd.path("open"), 0o777)


def test_other_users_are_checked_with_allow_other(cluster_factory):
    c = cluster_factory(2, extra_args=["-o", "allow_other"])
    n1, n2 = c.node(0), c.node(1)
    prepare(n1)
    got = probe_as_nobody(n1.mnt)
    assert got == {"list_root": 0, "read_private": "EACCES", "read_public": 0,
                   "write_public": "EACCES", "create_in_root": "EACCES",
                   "create_in_open_dir": 0, "chmod_private": "EPERM"}, got
    with open(n1.path("private"), "rb") as f:
        assert f.read() == b"secret"
    assert os.stat(n1.path("private")).st_mode & 0o777 == 0o600
    # what nobody was allowed to do is a change like any other
    c.wait_file("open/by-nobody", b"", idxs=[1])
    assert not os.path.exists(n2.path("new-by-nobody"))


def test_only_the_mounting_user_reaches_a_mount_without_allow_other(cluster_factory):
    c = cluster_factory(1)
    n1 = c.node(0)
    prepare(n1)
    got = probe_as_nobody(n1.mnt)
    assert set(got.values()) == {"EACCES"}, got
    with open(n1.path("private"), "rb") as f:
        assert f.read() == b"secret"
