"""`nsyncfs status` (issue 17): the table, --json and the exit codes on a
healthy cluster, a degraded one (one node of three killed, then a second: no
quorum) and an unreachable node, reached by MOUNTPOINT and by HOST:PORT; and
/v1/status's fields behind them (one id format: 16 hex digits)."""
import json
import re
import subprocess

import pytest

from nsynctest import BINARY, HOST, free_ports, wait_for

ID = re.compile(r"^[0-9a-f]{16}$")


def status(*args, timeout=20):
    r = subprocess.run([str(BINARY), "status", *map(str, args)], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stdout, r.stderr


def status_json(target):
    rc, out, err = status("--json", target)
    return rc, (json.loads(out) if out.strip() else None), err


def all_reachable(target, n):
    rc, st, _ = status_json(target)
    return rc == 0 and st and sum(m["reachable"] for m in st["members"]) == n


def test_healthy(cluster_factory):
    c = cluster_factory(3, name="status-ok")
    lead = c.leader()
    for i in range(3):
        wait_for(lambda: all_reachable(c.node(i).mnt, 3), 15,
                 f"node {i}'s status to see 3 reachable members")
    rc, st, err = status_json(c.node(lead).mnt)
    assert rc == 0, err
    assert st["health"] == {"state": "healthy", "reasons": [], "exit": 0,
                            "address": f"{HOST}:{c.node(lead).fport}"}
    assert st["role"] == "leader" and ID.match(st["node"]) and st["node"] == st["leader"]
    assert st["quorum"]["ok"] is True and st["quorum"]["reachable"] == 3
    ids = {m["id"] for m in st["members"]}
    assert len(ids) == 3 and all(ID.match(i) for i in ids) and st["leader"] in ids
    assert {m["caddr"] for m in st["members"]} == {f"{HOST}:{c.node(i).cport}" for i in range(3)}
    for m in st["members"]:
        assert m["last_contact_ms"] > 0 and m["pending_files"] == 0, m
    assert st["catchup"]["active"] is False and st["catchup"]["percent"] == 100
    # a follower, by HOST:PORT, as a table
    f = c.follower()
    rc, out, err = status(f"{HOST}:{c.node(f).fport}")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["state", "healthy"], out
    assert re.search(rf"^leader\s+{st['leader']} \({HOST}:{c.node(lead).cport}\)$", out, re.M), out
    assert re.search(r"^quorum\s+yes \(3 of 3 members reachable\)$", out, re.M), out
    assert re.search(r"^catch-up\s+in sync$", out, re.M), out
    for i in range(3):
        row = [ln for ln in lines if f"{HOST}:{c.node(i).cport} " in ln]
        assert len(row) == 1, out
        assert ("leader" if i == lead else "follower") in row[0].split() and " yes " in row[0], row
    # a clean leave and a join go through /v1/leave and /v1/join, whose ids
    # are in the same format: the node is back as a reachable member
    c.stop(f)
    wait_for(lambda: status_json(c.node(lead).mnt)[1]["quorum"]["members"] == 2, 15,
             "the leaver gone from the members")
    c.start(f)
    wait_for(lambda: all_reachable(c.node(lead).mnt, 3), 20, "the rejoined node reachable")


def test_degraded_then_no_quorum(cluster_factory):
    c = cluster_factory(3, name="status-degraded")
    lead = c.leader()
    victim = c.follower()
    other = next(i for i in range(3) if i not in (lead, victim))
    wait_for(lambda: all_reachable(c.node(lead).mnt, 3), 15, "3 reachable members")
    vid = c.node(victim).status()["node"]
    c.kill9(victim)
    # the leader's next probe (every 2 s) finds it gone
    wait_for(lambda: status(c.node(lead).mnt)[0] == 1, 15, "status to say degraded")
    rc, st, err = status_json(c.node(lead).mnt)
    assert rc == 1 and st["health"]["state"] == "degraded", (rc, err)
    assert st["health"]["reasons"] == [f"member {vid} ({HOST}:{c.node(victim).cport}) unreachable"]
    assert st["quorum"]["ok"] is True and st["quorum"]["reachable"] == 2
    dead = next(m for m in st["members"] if m["id"] == vid)
    assert dead["reachable"] is False and dead["last_contact_ms"] > 0
    rc, out, _ = status(c.node(lead).mnt)
    assert out.splitlines()[0].split() == ["state", "DEGRADED"], out
    assert any(f"{HOST}:{c.node(victim).cport} " in ln and " NO " in ln for ln in out.splitlines()), out
    # and without a majority: no quorum, said with since when
    c.kill9(lead)
    wait_for(lambda: "no quorum" in (status_json(c.node(other).mnt)[1] or {})
             .get("health", {}).get("reasons", []), 20, "status to say no quorum")
    # The members' reachability comes from a probe every 2 s: it may count the
    # leader a moment after the quorum is known to be gone.
    pat = re.compile(r"^quorum\s+NO since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(1 of 3 members", re.M)
    wait_for(lambda: pat.search(status(c.node(other).mnt)[1]), 10, "status to count 1 of 3 reachable")
    rc, out, _ = status(c.node(other).mnt)
    assert rc == 1 and pat.search(out), out


def test_unreachable_and_usage(cluster_factory, tmp_path):
    (port,) = free_ports(1)
    rc, out, err = status(f"{HOST}:{port}")
    assert rc == 2 and "unreachable" in err and out == "", (rc, out, err)
    rc, st, err = status_json(f"{HOST}:{port}")
    assert rc == 2 and st["health"]["state"] == "unreachable"
    # a directory that is no nsyncfs mount, a bad option
    rc, out, err = status(tmp_path)
    assert rc == 2 and "not an nsyncfs mount" in err, err
    rc, out, err = status("--bogus")
    assert rc == 2 and "unexpected argument" in err
    # a node killed with its mount left behind: the mount is there, the node is not
    c = cluster_factory(1, name="status-dead")
    assert status(c.node(0).mnt)[0] == 0
    c.kill9(0, clear_mount=False)
    rc, out, err = status(c.node(0).mnt)
    assert rc == 2 and "unreachable" in err, (rc, out, err)
