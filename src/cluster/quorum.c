/* Knowing there is no quorum: the loop thread notes when this node lost its
 * leader, any thread asks whether changes may still be tried (else EROFS at
 * once instead of after submit_timeout), and the operator is told which
 * peers are missing: once at the loss, every 30 s after, and at the heal. */
#include "cluster/cluster_int.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cluster/peer.h"
#include "common/log.h"

void quorum_init(struct cluster *c)
{
    c->started_ms = nsync_mono_ms();
    atomic_store(&c->leaderless_since_ms, c->started_ms);
    atomic_store(&c->leaderless_wall_ms, nsync_now_ms());
}

void quorum_note(struct cluster *c, const struct cluster_status *st)
{
    assert(on_loop_thread(c));
    bool leader = st->leader_id != 0 && st->state != CLUSTER_UNAVAILABLE;
    uint64_t since = atomic_load(&c->leaderless_since_ms);
    if (leader && since != 0) {
        atomic_store(&c->leaderless_since_ms, 0);
        if (c->readonly_logged)
            log_warn("cluster: quorum back after %.1f s (leader %016" PRIx64 "): changes work again",
                     (double)(nsync_mono_ms() - since) / 1000.0, st->leader_id);
        c->readonly_logged = false;
        c->had_leader = true;
    } else if (!leader && since == 0) {
        atomic_store(&c->leaderless_since_ms, nsync_mono_ms());
        atomic_store(&c->leaderless_wall_ms, nsync_now_ms());
    }
}

int cluster_writable(struct cluster *c)
{
    uint64_t since = atomic_load(&c->leaderless_since_ms);
    if (since == 0)
        return 0;
    uint64_t now = nsync_mono_ms();
    /* A starting node has no leader until its first election or join. */
    if (!c->had_leader && now < c->started_ms + QUORUM_STARTUP_GRACE_MS)
        return 0;
    return now - since >= QUORUM_LOST_AFTER_MS ? -EROFS : 0;
}

uint64_t cluster_no_quorum_since(struct cluster *c)
{
    if (cluster_writable(c) == 0)
        return 0;
    return atomic_load(&c->leaderless_wall_ms);
}

/* Name the peers that do not answer: that is what an operator has to bring
 * back. A short status probe each, from the caller's thread (the lease
 * thread), at most once per QUORUM_WARN_EVERY_MS. */
void quorum_warn(struct cluster *c)
{
    uint64_t now = nsync_mono_ms(), last = atomic_load(&c->last_warn_ms);
    if (last && now - last < QUORUM_WARN_EVERY_MS)
        return;
    if (!atomic_compare_exchange_strong(&c->last_warn_ms, &last, now))
        return; /* another thread warns */
    c->readonly_logged = true; /* a benign race with the loop: only a log line */
    struct cluster_status st;
    cluster_get_status(c, &st);
    char peers[1024] = "";
    size_t off = 0;
    for (size_t i = 0; i < c->ns->cfg.n_peers; i++) {
        const struct nsync_peer *p = &c->ns->cfg.peers[i];
        if (p->id == c->ns->self_id)
            continue;
        char faddr[NSYNC_ADDR_MAX];
        snprintf(faddr, sizeof faddr, "%s:%u", p->host, p->fport);
        cJSON *js = NULL;
        if (cluster_peer_status(c->ns->client, faddr, 300, &js) == 0) {
            cJSON_Delete(js);
            continue;
        }
        int n = snprintf(peers + off, sizeof peers - off, "%s%s:%u", off ? ", " : "", p->host, p->cport);
        if (n > 0 && (size_t)n < sizeof peers - off)
            off += (size_t)n;
    }
    uint64_t since = atomic_load(&c->leaderless_since_ms);
    log_warn("cluster: no quorum (no leader for %.1f s, role %s): changes fail with EROFS until "
             "it is back; unreachable peers: %s",
             since ? (double)(now - since) / 1000.0 : 0.0, cluster_role_name(st.state),
             off ? peers : "none (a vote or a leader change is under way)");
}
