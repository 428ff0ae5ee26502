"""/metrics (issue 17): a scrape of every node of a 3-node cluster parsed by
the real Prometheus parser (python3-prometheus-client), with the families,
types and units named by the conventions, values that follow what the
cluster did (writes commit, a follower fetches, the leader serves), and a
histogram whose buckets are cumulative and end at the count."""
import pytest

from nsynctest import http_get, wait_for, write_file

parser = pytest.importorskip("prometheus_client.parser",
                             reason="python3-prometheus-client (scripts/deps.sh) is missing")


def scrape(node):
    code, body = http_get(node.fport, "/metrics")
    assert code == 200, body[:200]
    fams = {f.name: f for f in parser.text_string_to_metric_families(body.decode())}
    return fams


def value(fams, name, sample=None, **labels):
    """A sample's value; name is the family's or (for a counter) the sample's."""
    f = fams.get(name) or fams[name.removesuffix("_total")]
    for s in f.samples:
        if s.name == (sample or name) and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise KeyError(f"{name} {labels}")


EXPECTED = {
    # family name as the parser reports it (counters lose _total) -> type
    "nsyncfs_build_info": "gauge",
    "nsyncfs_commits": "counter",
    "nsyncfs_commit_latency_seconds": "histogram",
    "nsyncfs_served_bytes": "counter",
    "nsyncfs_fetched_bytes": "counter",
    "nsyncfs_installs": "counter",
    "nsyncfs_fetch_errors": "counter",
    "nsyncfs_pending_entries": "gauge",
    "nsyncfs_catchup_remaining_bytes": "gauge",
    "nsyncfs_raft_term": "gauge",
    "nsyncfs_is_leader": "gauge",
    "nsyncfs_members": "gauge",
    "nsyncfs_member_up": "gauge",
    "nsyncfs_quorum": "gauge",
}


def test_scrape_follows_the_cluster(cluster):
    c = cluster
    lead = c.leader()
    f = c.follower()
    before = {i: scrape(c.node(i)) for i in range(3)}
    for i, fams in before.items():
        for name, typ in EXPECTED.items():
            assert name in fams, f"node {i}: no family {name}"
            assert fams[name].type == typ, f"node {i}: {name} is {fams[name].type}, want {typ}"
        assert value(fams, "nsyncfs_is_leader") == (1 if i == lead else 0)
        assert value(fams, "nsyncfs_members") == 3 and value(fams, "nsyncfs_quorum") == 1
        assert value(fams, "nsyncfs_raft_term") >= 1
        assert value(fams, "nsyncfs_build_info", version=c.node(i).status()["version"]) == 1
    # writes on the follower: its commands commit (through the leader), the
    # others fetch the bytes, which the writer's file server serves
    data = b"m" * 300_000
    for k in range(5):
        write_file(c.node(f).path(f"metrics-{k}.bin"), data)
    for k in range(5):
        c.wait_file(f"metrics-{k}.bin", data)
    after = {i: scrape(c.node(i)) for i in range(3)}
    commits = value(after[f], "nsyncfs_commits_total") - value(before[f], "nsyncfs_commits_total")
    assert commits >= 5, commits
    fetched = sum(value(after[i], "nsyncfs_fetched_bytes_total") for i in range(3) if i != f)
    assert fetched >= 2 * 5 * len(data), fetched
    served = sum(value(after[i], "nsyncfs_served_bytes_total") for i in range(3))
    assert served >= 2 * 5 * len(data), served
    # The files are everywhere; the replicas' reports of them settle the
    # catalog a moment later (they wait a few ms for company).
    wait_for(lambda: all(value(scrape(c.node(i)), "nsyncfs_pending_entries") == 0
                         for i in range(3)), 10, "no pending entries on any node")
    # the histogram: cumulative buckets, +Inf == _count, a plausible _sum
    h = after[f]["nsyncfs_commit_latency_seconds"]
    buckets = [(float(s.labels["le"]), s.value) for s in h.samples
               if s.name == "nsyncfs_commit_latency_seconds_bucket"]
    assert buckets == sorted(buckets) and buckets[-1][0] == float("inf")
    assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:])), buckets
    count = value(after[f], "nsyncfs_commit_latency_seconds",
                  "nsyncfs_commit_latency_seconds_count")
    total = value(after[f], "nsyncfs_commit_latency_seconds", "nsyncfs_commit_latency_seconds_sum")
    assert buckets[-1][1] == count == value(after[f], "nsyncfs_commits_total")
    assert 0 < total < count * 10
    # per-member gauges: every member up, by id and address
    ups = [s for s in after[lead]["nsyncfs_member_up"].samples]
    wait_for(lambda: all(s.value == 1 for s in scrape(c.node(lead))["nsyncfs_member_up"].samples),
             10, "every member up in the leader's scrape")
    assert {s.labels["address"] for s in ups} == {f"127.0.0.1:{c.node(i).cport}" for i in range(3)}
