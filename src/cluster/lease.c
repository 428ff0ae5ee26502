/* Lock leases: while this node holds cluster locks, a thread of its own
 * proposes a RENEW about once a second so that the leases do not run out.
 * The same thread tells the operator when the node has no quorum, since
 * naming the missing peers means probing them. */
#include "cluster/cluster_int.h"

#include <assert.h>
#include <errno.h>
#include <stdatomic.h>
#include <string.h>

#include "common/log.h"

void cluster_hold_locks(struct cluster *c, int delta)
{
    atomic_fetch_add(&c->held_locks, delta);
}

/* Keeps this node's lock leases alive while it holds any. A thread of its
 * own because a follower's RENEW is a blocking forward to the leader. */
static void *lease_main(void *arg)
{
    struct cluster *c = arg;
    uint64_t next_renew = nsync_mono_ms() + RENEW_EVERY_MS;
    pthread_mutex_lock(&c->renew_mu);
    for (;;) {
        struct timespec dl;
        /* Without a leader, wake often: the probe decides how soon changes
         * fail fast. */
        abs_deadline(&dl, atomic_load(&c->leaderless_since_ms) ? QUORUM_PROBE_EVERY_MS : RENEW_EVERY_MS);
        pthread_mutex_lock(&c->mu);
        bool stopping = c->stopping;
        pthread_mutex_unlock(&c->mu);
        if (stopping)
            break;
        pthread_cond_timedwait(&c->renew_cv, &c->renew_mu, &dl);
        pthread_mutex_lock(&c->mu);
        stopping = c->stopping;
        pthread_mutex_unlock(&c->mu);
        if (stopping)
            break;
        if (atomic_load(&c->leaderless_since_ms)) {
            pthread_mutex_unlock(&c->renew_mu);
            quorum_probe(c);
            pthread_mutex_lock(&c->renew_mu);
            if (cluster_writable(c) < 0)
                continue; /* nothing can be renewed; the leases are the leader's to expire */
        }
        uint64_t now = nsync_mono_ms();
        if (now < next_renew)
            continue;
        next_renew = now + RENEW_EVERY_MS;
        if (atomic_load(&c->held_locks) <= 0)
            continue;
        pthread_mutex_unlock(&c->renew_mu);
        struct fsm_cmd cmd = {.op = FSM_OP_RENEW, .node = c->ns->self_id, .lease_ms = c->ns->cfg.lease_ms};
        struct cluster_reply rep;
        int rc = cluster_submit(c, &cmd, RENEW_EVERY_MS, &rep);
        if (rc < 0)
            log_warn("cluster: lease renewal failed: %s", strerror(-rc));
        pthread_mutex_lock(&c->renew_mu);
    }
    pthread_mutex_unlock(&c->renew_mu);
    return NULL;
}

void lease_start(struct cluster *c)
{
    if (pthread_create(&c->renew_thread, NULL, lease_main, c) == 0) {
        c->renew_started = true;
        pthread_setname_np(c->renew_thread, "ns-renew");
    }
}

void lease_stop(struct cluster *c)
{
    assert(c->stopping); /* else the thread goes on renewing */
    pthread_mutex_lock(&c->renew_mu);
    pthread_cond_broadcast(&c->renew_cv);
    pthread_mutex_unlock(&c->renew_mu);
    if (c->renew_started)
        pthread_join(c->renew_thread, NULL);
}
