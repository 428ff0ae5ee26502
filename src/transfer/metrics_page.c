/* What a Prometheus scrape of a node reads: names by the conventions
 * (nsyncfs_ prefix, _total counters, _seconds and _bytes units), one family
 * per figure, gathered from the modules' own counters at scrape time. */
#include "transfer/metrics_page.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/cluster.h"
#include "cluster/fsm.h"
#include "common/metrics.h"
#include "nsync.h"
#include "transfer/fetch.h"

static void one(struct metrics_buf *b, const char *name, const char *type, const char *help, double v)
{
    metrics_family(b, name, type, help);
    metrics_sample(b, name, NULL, v);
}

static void members(struct metrics_buf *b, struct nsync *ns)
{
    struct cluster_member_view *v = calloc(CLUSTER_MEMBERS_MAX, sizeof *v);
    size_t n = v && ns->cluster ? cluster_get_members(ns->cluster, v, CLUSTER_MEMBERS_MAX) : 0;
    size_t up = 0;
    for (size_t i = 0; i < n; i++)
        up += v[i].reachable;
    one(b, "nsyncfs_members", "gauge", "Members of the cluster, as this node's catalog lists them.",
        (double)n);
    one(b, "nsyncfs_members_reachable", "gauge",
        "Members that answered this node's last probe (itself included).", (double)up);
    metrics_family(b, "nsyncfs_member_up", "gauge",
                   "1 if the member answered this node's last probe (every 2 s), else 0.");
    char lab[3 * 300];
    for (size_t i = 0; i < n; i++) {
        char id[NSYNC_ID_STRLEN];
        nsync_id_str(v[i].id, id);
        lab[0] = '\0';
        metrics_label(lab, sizeof lab, "id", id);
        metrics_label(lab, sizeof lab, "address", v[i].caddr);
        metrics_sample(b, "nsyncfs_member_up", lab, v[i].reachable);
    }
    metrics_family(b, "nsyncfs_member_behind_entries", "gauge",
                   "Raft entries a member lacks of the highest index this node knows of.");
    for (size_t i = 0; i < n; i++) {
        char id[NSYNC_ID_STRLEN];
        nsync_id_str(v[i].id, id);
        lab[0] = '\0';
        metrics_label(lab, sizeof lab, "id", id);
        metrics_label(lab, sizeof lab, "address", v[i].caddr);
        metrics_sample(b, "nsyncfs_member_behind_entries", lab, (double)v[i].behind);
    }
    free(v);
}

int xfer_metrics_page(struct nsync *ns, char **out, size_t *len)
{
    struct metrics_buf b = {0};
    struct cluster_status cs = {.state = CLUSTER_UNAVAILABLE};
    if (ns->cluster)
        cluster_get_status(ns->cluster, &cs);
    char lab[128] = "";
    metrics_label(lab, sizeof lab, "version", NSYNC_VERSION);
    metrics_family(&b, "nsyncfs_build_info", "gauge", "Always 1; the version of the running binary.");
    metrics_sample(&b, "nsyncfs_build_info", lab, 1);

    const struct nsync_metrics *m = &ns->metrics;
    one(&b, "nsyncfs_commits_total", "counter",
        "Commands of this node committed and applied by the leader.",
        (double)atomic_load(&m->commits));
    metrics_histogram(&b, "nsyncfs_commit_latency_seconds",
                      "From handing a batch of commands to the leader until it applied them.",
                      &m->commit_latency);
    one(&b, "nsyncfs_served_bytes_total", "counter", "File bytes sent to fetching peers.",
        (double)atomic_load(&m->served_bytes));
    one(&b, "nsyncfs_served_files_total", "counter", "File versions sent to fetching peers.",
        (double)atomic_load(&m->served_files));

    struct xfer_fetch_status fst = {0};
    struct xfer_catchup cu = {.percent = 100.0, .eta_s = -1};
    if (ns->fetcher) {
        xfer_fetcher_get_status(ns->fetcher, &fst);
        xfer_fetcher_get_catchup(ns->fetcher, &cu);
    }
    one(&b, "nsyncfs_fetched_bytes_total", "counter", "File bytes fetched from other nodes.",
        (double)fst.bytes);
    one(&b, "nsyncfs_installs_total", "counter",
        "Catalog entries brought into BACKING (files, directories, deletes, metadata).",
        (double)fst.installed);
    one(&b, "nsyncfs_install_hashed_files_total", "counter",
        "Files already in BACKING when their version came, read to compare their hash.",
        (double)fst.hashed);
    one(&b, "nsyncfs_install_trusted_files_total", "counter",
        "Files already in BACKING trusted without a read: the stat recorded at the last "
        "clean stop is unchanged (the quick check).", (double)fst.trusted);
    one(&b, "nsyncfs_fetch_errors_total", "counter", "Failed fetch or install attempts.",
        (double)fst.errors);
    one(&b, "nsyncfs_pending_entries", "gauge", "Catalog entries this node still lacks.",
        (double)fst.pending);
    one(&b, "nsyncfs_catchup_remaining_bytes", "gauge",
        "Bytes of file content this node still lacks.", (double)(cu.bytes_total - cu.bytes_done));
    one(&b, "nsyncfs_catchup_done_bytes", "gauge",
        "Bytes fetched since this node began to lack entries (0 when in sync).", (double)cu.bytes_done);
    one(&b, "nsyncfs_catchup_active", "gauge", "1 while this node is catching up (lacks entries for 3 s or more).",
        cu.active);

    pthread_rwlock_rdlock(&ns->fsm_lock);
    double entries = (double)fsm_entry_count(ns->fsm);
    pthread_rwlock_unlock(&ns->fsm_lock);
    one(&b, "nsyncfs_catalog_entries", "gauge", "Paths in the replicated catalog.", entries);
    one(&b, "nsyncfs_raft_term", "gauge", "Current raft term.", (double)cs.term);
    one(&b, "nsyncfs_raft_applied_index", "gauge", "Last raft index applied here.",
        (double)cs.last_applied);
    one(&b, "nsyncfs_raft_commit_index", "gauge", "Raft commit index known here.",
        (double)cs.commit_index);
    one(&b, "nsyncfs_is_leader", "gauge", "1 if this node leads the cluster.",
        cs.state == CLUSTER_LEADER);
    one(&b, "nsyncfs_raft_voters", "gauge", "Voters in the raft configuration.", cs.voters);
    bool quorum = ns->cluster && cluster_writable(ns->cluster) == 0 && cs.leader_id != 0;
    one(&b, "nsyncfs_quorum", "gauge", "1 if a leader is known and changes are accepted, else 0.",
        quorum);
    members(&b, ns);
    if (b.err) {
        free(b.p);
        return -ENOMEM;
    }
    *out = b.p;
    *len = b.len;
    return 0;
}
