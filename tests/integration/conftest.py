"""pytest fixtures for the nsyncfs integration tests.

Fixtures
  binary            path of build/nsyncfs (fails clearly if it is missing)
  cluster_factory   make(n=3, extra_args=(), name=...) -> started Cluster; every
                    cluster it made is torn down after the test
  cluster           a fresh 3-node cluster for one test (destructive tests)
  shared_cluster    one 3-node cluster for a whole test module (tests that do
                    not disturb each other; each uses its own file names)

Every test fails (in its teardown) when a node it ran logged an error line
("nsyncfs[error]") that the test did not declare with
@pytest.mark.expect_log_errors(r"regex", ...): an error on a clean path is a
bug even when the test's own checks pass. Module-scoped clusters are judged
per test, by the lines written while it ran.

On any failure the tail of every running node's log is attached to the report
("nsyncfs node logs"). A watchdog SIGKILLs the nodes of a test that overruns
its deadline (default 300 s, @pytest.mark.deadline(S)), so that a hung FUSE
call fails the test instead of hanging the run. Teardown always unmounts and
kills every node it started, even when the test failed.
"""
import os
import re
import subprocess
import tempfile
import threading

import pytest

from netcut import NetCut
from nsynctest import BINARY, HOST, Cluster, ACTIVE, logs_report

DEFAULT_DEADLINE_S = 300


def pytest_configure(config):
    config.addinivalue_line("markers", "secondary: replication of secondary operations "
                            "(mkdir/rmdir, symlink, chmod, rename, mtime)")
    config.addinivalue_line("markers", "deadline(seconds): watchdog limit for one test")
    config.addinivalue_line("markers", "expect_log_errors(*regexes): error lines of the "
                            "nodes' logs that this test provokes on purpose")


# Every cluster the fixtures made, so that the error-line check also reads
# the logs of clusters already torn down by the time the test's teardown ends.
ALL_CLUSTERS = []
ERROR_MARK = b"nsyncfs[error]"


def _log_sizes():
    sizes = {}
    for c in ALL_CLUSTERS:
        for nd in c.nodes:
            try:
                sizes[nd.log_path] = nd.log_path.stat().st_size
            except OSError:
                sizes[nd.log_path] = 0
    return sizes


def _unexpected_errors(item):
    allowed = [re.compile(rx) for m in item.iter_markers("expect_log_errors") for rx in m.args]
    before = getattr(item, "_nsync_log_sizes", {})
    found = []
    for c in ALL_CLUSTERS:
        for nd in c.nodes:
            try:
                with open(nd.log_path, "rb") as f:
                    f.seek(before.get(nd.log_path, 0))
                    data = f.read()
            except OSError:
                continue
            for line in data.splitlines():
                if ERROR_MARK in line:
                    text = line.decode(errors="replace")
                    if not any(rx.search(text) for rx in allowed):
                        found.append(f"{c.name} node {nd.idx}: {text}")
    return found


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    item._nsync_log_sizes = _log_sizes()
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if call.when == "teardown" and rep.passed:
        errors = _unexpected_errors(item)
        if errors:
            rep.outcome = "failed"
            rep.longrepr = ("nodes logged unexpected error lines (declare provoked ones with "
                            "@pytest.mark.expect_log_errors):\n" + "\n".join(errors[:30]))
    if rep.failed and ACTIVE:
        rep.sections.append(("nsyncfs node logs (tails)", logs_report()))
    if rep.failed and getattr(item, "_nsync_watchdog_fired", False):
        rep.sections.append(("watchdog", "the test overran its deadline; its nodes were SIGKILLed"))


@pytest.fixture(autouse=True)
def _watchdog(request):
    m = request.node.get_closest_marker("deadline")
    limit = m.args[0] if m else DEFAULT_DEADLINE_S

    def fire():
        request.node._nsync_watchdog_fired = True
        for c in list(ACTIVE):
            c.kill_all_now()

    t = threading.Timer(limit, fire)
    t.daemon = True
    t.start()
    yield
    t.cancel()


@pytest.fixture(scope="session")
def binary():
    if not BINARY.exists():
        pytest.fail(f"{BINARY} does not exist: build first (scripts/test.sh builds it)",
                    pytrace=False)
    if os.geteuid() != 0:
        pytest.fail("the integration tests mount FUSE filesystems: run them as root",
                    pytrace=False)
    if not os.path.exists("/dev/fuse"):
        pytest.fail("/dev/fuse is missing: FUSE is not available here", pytrace=False)
    return BINARY


# NSYNC_TEST_SECRET=1: every cluster runs with one cluster secret (made once
# per session), so that any test file can be run over TLS (issue 13).
_SECRET = []


def _with_test_secret(extra_args):
    if not os.environ.get("NSYNC_TEST_SECRET") or "--secret-file" in extra_args:
        return tuple(extra_args)
    if not _SECRET:
        path = os.path.join(tempfile.mkdtemp(prefix="nsync-secret-"), "cluster.key")
        subprocess.run([str(BINARY), "keygen", path], check=True, capture_output=True, timeout=30)
        _SECRET.append(path)
    return tuple(extra_args) + ("--secret-file", _SECRET[0])


def _make(request, base, n, extra_args, name, log_level="debug", netcut=False, env=None,
          host=HOST, advertise=None):
    extra_args = _with_test_secret(extra_args)
    c = Cluster(base, n=n, extra_args=extra_args, name=name, log_level=log_level, host=host,
                advertise=advertise)
    c.env_hook = env
    ALL_CLUSTERS.append(c)
    # Registered before starting, so a cluster that fails to come up is still
    # torn down (and its logs reach the report first).
    request.addfinalizer(c.teardown)
    c.net = NetCut(c) if netcut else None
    c.start_all()
    return c


@pytest.fixture
def cluster_factory(request, tmp_path, binary):
    count = [0]

    def make(n=3, extra_args=(), name=None, log_level="debug", netcut=False, env=None,
             host=HOST, advertise=None):
        """netcut: each node in a cgroup of its own, c.net a NetCut to cut links.
        env: idx -> dict of extra environment variables for that node (or None).
        host, advertise: --host of every node, idx -> its --advertise (Cluster)."""
        count[0] += 1
        base = tmp_path / f"cluster{count[0]}"
        return _make(request, base, n, extra_args, name or f"cluster{count[0]}", log_level,
                     netcut, env, host, advertise)

    return make


@pytest.fixture
def cluster(cluster_factory):
    return cluster_factory(3, name="cluster")


@pytest.fixture(scope="module")
def shared_cluster(request, tmp_path_factory, binary):
    base = tmp_path_factory.mktemp(f"shared-{request.module.__name__}")
    return _make(request, base, 3, (), f"shared[{request.module.__name__}]")


@pytest.fixture(scope="module")
def single_node(request, tmp_path_factory, binary):
    """A one-node cluster (its own quorum) for a whole test module."""
    base = tmp_path_factory.mktemp(f"single-{request.module.__name__}")
    return _make(request, base, 1, (), f"single[{request.module.__name__}]")
