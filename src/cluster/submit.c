/* Submitting: the cluster_submit/send family over the outbox, delivery of
 * a batch (to raft here on the leader, else forwarded to the leader over
 * HTTP); a change that finds no quorum fails at once (quorum.c). */
#include "cluster/cluster_int.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/outbox.h"
#include "cluster/peer.h"
#include "common/log.h"

int cluster_submit_encoded(struct cluster *c, const void *buf, size_t len, unsigned timeout_ms,
                           struct cluster_reply *reply)
{
    struct cluster_item it = {.buf = buf, .len = len};
    int rc = cluster_submit_batch_encoded(c, &it, 1, timeout_ms);
    if (rc == 0 && (rc = it.rc) == 0 && reply)
        *reply = it.reply;
    return rc;
}

int submit_leader_faddr(struct cluster *c, uint64_t id, char *out, size_t outsz)
{
    int found = 0;
    pthread_rwlock_rdlock(&c->ns->fsm_lock);
    const struct fsm_member *m = fsm_member_get(c->ns->fsm, id);
    if (m) {
        snprintf(out, outsz, "%s", m->faddr);
        found = 1;
    }
    pthread_rwlock_unlock(&c->ns->fsm_lock);
    if (found)
        return 0;
    const struct nsync_peer *p = nsync_peer_by_id(c->ns, id);
    if (!p)
        return -ENOENT;
    addr_format(out, outsz, p->host, p->fport);
    return 0;
}

/* What the outbox may merge: two announces of one path with the same
 * flags, no unlock, neither a delete (tar, cp -a and rsync send four of a
 * file within a millisecond: create or close, owner, mode, times). Any
 * other command about the path stops a merge across it, a rename any. */
static struct outbox_tag submit_tag(const struct fsm_cmd *cmd)
{
    struct outbox_tag t = {.key = cmd->path, .fence = cmd->op == FSM_OP_RENAME};
    if (cmd->op == FSM_OP_ANNOUNCE && !cmd->unlock && cmd->meta.kind != FSM_TOMBSTONE)
        t.merge = 1u | (cmd->fresh ? 2u : 0u) | (cmd->keep ? 4u : 0u) | (cmd->held ? 8u : 0u);
    return t;
}

int cluster_submit(struct cluster *c, const struct fsm_cmd *cmd, unsigned timeout_ms,
                   struct cluster_reply *reply)
{
    /* The outbox thread is checked by outbox_submit. */
    assert(!on_loop_thread(c));
    void *buf;
    size_t len;
    if (cluster_writable(c) < 0)
        return -EROFS; /* the lease thread tells the operator (quorum_probe) */
    if (fsm_cmd_encode(cmd, &buf, &len) < 0)
        return -EINVAL;
    struct outbox_tag tag = submit_tag(cmd);
    tag.merge = 0;
    return outbox_submit_tagged(c->outbox, buf, len, &tag, timeout_ms, reply);
}

int cluster_send(struct cluster *c, const struct fsm_cmd *cmd, unsigned timeout_ms,
                 cluster_done_fn done, void *arg)
{
    void *buf;
    size_t len;
    if (fsm_cmd_encode(cmd, &buf, &len) < 0)
        return -EINVAL;
    if (timeout_ms)
        return outbox_send(c->outbox, buf, len, timeout_ms, done, arg);
    struct outbox_tag tag = submit_tag(cmd);
    return outbox_send_tagged(c->outbox, buf, len, &tag, done, arg);
}

unsigned cluster_backlog_ms(struct cluster *c)
{
    return outbox_backlog_ms(c->outbox);
}

int cluster_send_lazy(struct cluster *c, const struct fsm_cmd *cmd, cluster_done_fn done, void *arg,
                      void **token)
{
    void *buf;
    size_t len;
    if (fsm_cmd_encode(cmd, &buf, &len) < 0)
        return -EINVAL;
    return outbox_send_lazy(c->outbox, buf, len, true, done, arg, token, 0);
}

int cluster_cancel(struct cluster *c, void *token)
{
    return outbox_cancel(c->outbox, token);
}

int cluster_drain(struct cluster *c, unsigned timeout_ms)
{
    return outbox_drain(c->outbox, timeout_ms);
}

int cluster_barrier(struct cluster *c, unsigned timeout_ms)
{
    assert(!on_loop_thread(c));
    return outbox_barrier(c->outbox, timeout_ms);
}

static int deliver_once(struct cluster *c, struct cluster_item *items, size_t n, unsigned timeout_ms)
{
    assert(outbox_on_thread(c->outbox));
    pthread_mutex_lock(&c->mu);
    bool stopping = c->stopping;
    pthread_mutex_unlock(&c->mu);
    if (stopping)
        return -ESHUTDOWN;
    struct cluster_status st;
    cluster_get_status(c, &st);
    if (st.state == CLUSTER_LEADER)
        return loop_submit_local_batch(c, items, n, timeout_ms);
    if (st.leader_id == 0 || st.leader_id == c->ns->self_id)
        return -ENOTCONN;
    char faddr[NSYNC_ADDR_MAX];
    if (submit_leader_faddr(c, st.leader_id, faddr, sizeof faddr) < 0)
        return -ENOTCONN;
    int rc = cluster_peer_propose_batch(c->ns->client, faddr, items, n, timeout_ms);
    if (rc < 0)
        log_debug("cluster: forwarding %zu commands to leader %s failed: %s", n, faddr, strerror(-rc));
    return rc;
}

/* The commit latency of /metrics: from handing the batch to the leader
 * (raft here, or one HTTP request) until it answered that it applied it. */
int cluster_deliver(struct cluster *c, struct cluster_item *items, size_t n, unsigned timeout_ms)
{
    uint64_t t0 = nsync_mono_us();
    int rc = deliver_once(c, items, n, timeout_ms);
    if (rc != 0)
        return rc;
    uint64_t us = nsync_mono_us() - t0;
    struct nsync_metrics *m = &c->ns->metrics;
    for (size_t i = 0; i < n; i++) {
        if (items[i].rc == 0) {
            atomic_fetch_add(&m->commits, 1);
            metrics_hist_observe_us(&m->commit_latency, us);
        }
    }
    return 0;
}

int cluster_submit_batch_encoded(struct cluster *c, struct cluster_item *items, size_t n,
                                 unsigned timeout_ms)
{
    struct cluster_status st;
    cluster_get_status(c, &st);
    if (st.state != CLUSTER_LEADER)
        return -ENOTCONN;
    return loop_submit_local_batch(c, items, n, timeout_ms);
}

int cluster_wait_applied(struct cluster *c, uint64_t version, unsigned timeout_ms)
{
    struct nsync *ns = c->ns;
    uint64_t seen = 0, end = nsync_mono_ms() + timeout_ms;
    for (;;) {
        pthread_rwlock_rdlock(&ns->fsm_lock);
        bool ok = fsm_version(ns->fsm) >= version;
        pthread_rwlock_unlock(&ns->fsm_lock);
        if (ok)
            return 0;
        uint64_t now = nsync_mono_ms();
        if (now >= end)
            return -ETIMEDOUT;
        cluster_wait_change(c, &seen, (unsigned)(end - now));
    }
}

int cluster_sync_point(struct cluster *c, unsigned timeout_ms)
{
    struct fsm_cmd cmd = {.op = FSM_OP_RENEW, .node = c->ns->self_id,
                          .lease_ms = c->ns->cfg.lease_ms};
    struct cluster_reply r;
    uint64_t t0 = nsync_mono_ms();
    int rc = cluster_submit(c, &cmd, timeout_ms, &r);
    if (rc < 0)
        return rc;
    uint64_t spent = nsync_mono_ms() - t0;
    return cluster_wait_applied(c, r.version, spent < timeout_ms ? (unsigned)(timeout_ms - spent) : 0);
}
