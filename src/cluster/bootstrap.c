/* Starting raft on a node: bootstrap from --cluster, or join a running
 * cluster that does not list this node (a newcomer, or one that left: the
 * "left" mark), and wiping the raft state after a clean leave. */
#include "cluster/cluster_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cluster/peer.h"
#include "common/log.h"

/* ---------------- joining a running cluster ---------------- */

static bool raft_has_state(const char *dir)
{
    char p[4200];
    struct stat st;
    snprintf(p, sizeof p, "%s/metadata1", dir);
    if (stat(p, &st) == 0)
        return true;
    snprintf(p, sizeof p, "%s/metadata2", dir);
    return stat(p, &st) == 0;
}

static bool json_id_eq(const cJSON *it, uint64_t v)
{
    uint64_t got;
    return cJSON_IsString(it) && nsync_id_parse(it->valuestring, &got) == 0 && got == v;
}

/* Ask a peer who leads and whether its cluster lists this node. Returns 1 if
 * the peer is in a cluster with a leader that does not list us (we must
 * join), 0 if it lists us or has no leader yet, -errno if unreachable. The
 * leader's file-server address goes to leader_faddr. */
static int probe_peer(struct nsync *ns, const struct nsync_peer *p, char *leader_faddr, size_t sz)
{
    char faddr[NSYNC_ADDR_MAX];
    addr_format(faddr, sizeof faddr, p->host, p->fport);
    cJSON *st = NULL;
    int rc = cluster_peer_status(ns->client, faddr, 500, &st);
    if (rc < 0)
        return rc;
    const cJSON *leader = cJSON_GetObjectItemCaseSensitive(st, "leader");
    const cJSON *members = cJSON_GetObjectItemCaseSensitive(st, "members");
    int verdict = 0;
    uint64_t lid = 0;
    if (cJSON_IsString(leader) && nsync_id_parse(leader->valuestring, &lid) == 0 && lid != 0 &&
        cJSON_IsArray(members) && cJSON_GetArraySize(members) > 0) {
        bool listed = false;
        const cJSON *m;
        leader_faddr[0] = '\0';
        cJSON_ArrayForEach(m, members) {
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(m, "id");
            const cJSON *fa = cJSON_GetObjectItemCaseSensitive(m, "faddr");
            if (json_id_eq(id, ns->self_id))
                listed = true;
            if (json_id_eq(id, lid) && cJSON_IsString(fa) && fa->valuestring)
                snprintf(leader_faddr, sz, "%s", fa->valuestring);
        }
        verdict = listed ? 0 : 1;
    }
    cJSON_Delete(st);
    return verdict;
}

/* A node without raft state either starts a new cluster (bootstrap from
 * --cluster, the same on every node) or joins one that is running without
 * it: a clean leave removed it, or it is new. */
static bool should_join(struct nsync *ns)
{
    char lf[NSYNC_ADDR_MAX];
    for (size_t i = 0; i < ns->cfg.n_peers; i++) {
        const struct nsync_peer *p = &ns->cfg.peers[i];
        if (p->id != ns->self_id && probe_peer(ns, p, lf, sizeof lf) == 1)
            return true;
    }
    return false;
}

static int join_cluster(struct cluster *c, unsigned timeout_ms)
{
    struct nsync *ns = c->ns;
    uint64_t deadline = nsync_mono_ms() + timeout_ms;
    char my_faddr[NSYNC_ADDR_MAX];
    addr_format(my_faddr, sizeof my_faddr, ns->cfg.advertise, ns->cfg.fport);
    int rc = -EHOSTUNREACH;
    while (nsync_mono_ms() < deadline) {
        for (size_t i = 0; i < ns->cfg.n_peers; i++) {
            const struct nsync_peer *p = &ns->cfg.peers[i];
            char lf[NSYNC_ADDR_MAX] = "";
            if (p->id == ns->self_id || probe_peer(ns, p, lf, sizeof lf) < 0 || !lf[0])
                continue;
            uint64_t now = nsync_mono_ms();
            if (now >= deadline)
                break;
            rc = cluster_peer_membership(ns->client, lf, true, ns->self_id, c->address, my_faddr,
                                        (unsigned)(deadline - now));
            if (rc == 0) {
                log_info("cluster: joined the running cluster through its leader at %s", lf);
                return 0;
            }
            log_debug("cluster: join through %s: %s", lf, strerror(-rc));
        }
        usleep(200 * 1000);
    }
    log_error("cluster: could not join the running cluster: %s", strerror(-rc));
    return rc;
}

int bootstrap_decide(struct cluster *c, bool *joining)
{
    struct nsync *ns = c->ns;
    int rc = 0;
    /* A node that left cleanly must never bootstrap again: its old peers
     * went on without it, and a fresh configuration would split the cluster. */
    bool has_state = raft_has_state(ns->raft_dir);
    bool left_before = !has_state && faccessat(ns->data_fd, NSYNC_LEFT_MARK, F_OK, 0) == 0;
    *joining = !has_state && (left_before || should_join(ns));
    if (*joining) {
        log_info("cluster: a running cluster does not list this node: joining it");
        return 0;
    }
    /* Every node computes the same configuration from --cluster, so
     * bootstrapping everywhere is idempotent; a node with state skips it. */
    struct raft_configuration conf;
    raft_configuration_init(&conf);
    for (size_t i = 0; i < ns->cfg.n_peers && rc == 0; i++) {
        char addr[NSYNC_ADDR_MAX];
        addr_format(addr, sizeof addr, ns->cfg.peers[i].host, ns->cfg.peers[i].cport);
        rc = raft_configuration_add(&conf, ns->cfg.peers[i].id, addr, RAFT_VOTER);
    }
    if (rc == 0)
        rc = raft_bootstrap(&c->raft, &conf);
    raft_configuration_close(&conf);
    if (rc == RAFT_CANTBOOTSTRAP) {
        rc = 0;
    } else if (rc != 0) {
        log_error("cluster: bootstrap: %s", raft_strerror(rc));
        return -EIO;
    }
    return 0;
}

int bootstrap_join(struct cluster *c)
{
    struct nsync *ns = c->ns;
    if (join_cluster(c, 120000) < 0)
        return -EHOSTUNREACH;
    unlinkat(ns->data_fd, NSYNC_LEFT_MARK, 0);
    c->joined = true;
    return 0;
}

int cluster_wipe_state(const char *raft_dir, int data_fd)
{
    int mark = openat(data_fd, NSYNC_LEFT_MARK, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (mark < 0)
        return -errno; /* without the mark a wipe could lead to a split cluster */
    fsync(mark);
    close(mark);
    DIR *d = opendir(raft_dir);
    if (!d)
        return -errno;
    int rc = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        if (unlinkat(dirfd(d), de->d_name, 0) < 0 && errno != ENOENT) {
            rc = -errno;
            log_error("cluster: cannot remove %s/%s: %s", raft_dir, de->d_name, strerror(errno));
        }
    }
    closedir(d);
    return rc;
}

bool cluster_joined(const struct cluster *c)
{
    return c->joined;
}
