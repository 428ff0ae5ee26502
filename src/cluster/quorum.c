/* Knowing there is no quorum: the loop thread notes when this node lost its
 * leader; while it has none, the lease thread probes the other members, and
 * once a majority cannot be reached (or no leader came for a long while)
 * every change fails at once with EROFS instead of after submit_timeout.
 * The operator is told which peers are missing, and when the quorum is back. */
#include "cluster/cluster_int.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
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
        if (atomic_exchange(&c->readonly_logged, false))
            log_warn("cluster: quorum back after %.1f s (leader %016" PRIx64 "): changes work again",
                     (double)(nsync_mono_ms() - since) / 1000.0, st->leader_id);
        atomic_store(&c->had_leader, true);
    } else if (!leader && since == 0) {
        atomic_store(&c->leaderless_wall_ms, nsync_now_ms());
        atomic_store(&c->leaderless_since_ms, nsync_mono_ms());
    }
}

int cluster_writable(struct cluster *c)
{
    uint64_t since = atomic_load(&c->leaderless_since_ms);
    if (since == 0)
        return 0;
    uint64_t now = nsync_mono_ms();
    /* A starting node has no leader until its first election or join. */
    if (!atomic_load(&c->had_leader) && now < c->started_ms + QUORUM_STARTUP_GRACE_MS)
        return 0;
    /* The probe of this leaderless spell (not of an earlier one) found too
     * few members; or the spell outlasted any election with a majority. */
    if (atomic_load(&c->probe_lost_spell) == since)
        return -EROFS;
    return now - since >= QUORUM_LEADERLESS_MAX_MS ? -EROFS : 0;
}

uint64_t cluster_no_quorum_since(struct cluster *c)
{
    if (cluster_writable(c) == 0)
        return 0;
    return atomic_load(&c->leaderless_wall_ms);
}

uint64_t cluster_leaderless_since(struct cluster *c)
{
    return atomic_load(&c->leaderless_since_ms) ? atomic_load(&c->leaderless_wall_ms) : 0;
}

void quorum_probe(struct cluster *c)
{
    uint64_t since = atomic_load(&c->leaderless_since_ms);
    uint64_t t = nsync_mono_ms(), warned = atomic_load(&c->last_warn_ms);
    if (since == 0)
        return;
    /* Known lost: probe again only to name the missing peers once more. */
    if (cluster_writable(c) < 0 && warned && t - warned < QUORUM_WARN_EVERY_MS)
        return;
    if (!atomic_load(&c->had_leader) && t < c->started_ms + QUORUM_STARTUP_GRACE_MS)
        return;
    struct cluster_member_view *peers = calloc(CLUSTER_MEMBERS_MAX, sizeof *peers);
    if (!peers)
        return;
    size_t total = members_list(c, peers, CLUSTER_MEMBERS_MAX);
    size_t reached = 1; /* this node */
    char missing[1024] = "";
    size_t off = 0;
    for (size_t i = 0; i < total; i++) {
        if (peers[i].id == c->ns->self_id)
            continue;
        cJSON *js = NULL;
        if (cluster_peer_status(c->ns->client, peers[i].faddr, QUORUM_PROBE_MS, &js) == 0) {
            cJSON_Delete(js);
            reached++;
            continue;
        }
        int k = snprintf(missing + off, sizeof missing - off, "%s%s", off ? ", " : "", peers[i].caddr);
        if (k > 0 && (size_t)k < sizeof missing - off)
            off += (size_t)k;
    }
    free(peers);
    bool lost = 2 * reached <= total;
    if (lost && atomic_load(&c->leaderless_since_ms) == since)
        atomic_store(&c->probe_lost_spell, since);
    if (cluster_writable(c) == 0)
        return;
    uint64_t now = nsync_mono_ms(), last = atomic_load(&c->last_warn_ms);
    if (last && now - last < QUORUM_WARN_EVERY_MS)
        return;
    atomic_store(&c->last_warn_ms, now);
    atomic_store(&c->readonly_logged, true);
    struct cluster_status st;
    cluster_get_status(c, &st);
    log_warn("cluster: no quorum (this node is %s, no leader for %.1f s; %zu of %zu members "
             "reachable): changes fail with EROFS until it is back; unreachable peers: %s",
             cluster_role_name(st.state), (double)(now - since) / 1000.0, reached, total,
             off ? missing : "none (they answer, but no leader is elected)");
}
