/* Every member as this node sees it: a thread asks each other member's file
 * server for its status every CLUSTER_MEMBER_PROBE_MS and keeps whether it
 * answered, when it last did and how far its raft log had got, so that the
 * status page can say who is reachable and who lags without asking anyone. */
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

#define MEMBER_PROBE_TIMEOUT_MS 500

size_t members_list(struct cluster *c, struct cluster_member_view *out, size_t max)
{
    struct nsync *ns = c->ns;
    size_t n = 0;
    pthread_rwlock_rdlock(&ns->fsm_lock);
    size_t nm = fsm_member_count(ns->fsm);
    for (size_t i = 0; i < nm && n < max; i++) {
        const struct fsm_member *m = fsm_member_at(ns->fsm, i);
        memset(&out[n], 0, sizeof out[n]);
        out[n].id = m->id;
        snprintf(out[n].caddr, sizeof out[n].caddr, "%s", m->caddr);
        snprintf(out[n].faddr, sizeof out[n].faddr, "%s", m->faddr);
        n++;
    }
    pthread_rwlock_unlock(&ns->fsm_lock);
    if (nm > 0)
        return n;
    for (size_t i = 0; i < ns->cfg.n_peers && n < max; i++) {
        const struct nsync_peer *p = &ns->cfg.peers[i];
        memset(&out[n], 0, sizeof out[n]);
        out[n].id = p->id;
        addr_format(out[n].caddr, sizeof out[n].caddr, p->host, p->cport);
        addr_format(out[n].faddr, sizeof out[n].faddr, p->host, p->fport);
        n++;
    }
    return n;
}

static struct member_seen *members_find(struct cluster *c, uint64_t id, bool add)
{
    for (size_t i = 0; i < c->n_seen; i++)
        if (c->seen[i].id == id)
            return &c->seen[i];
    if (!add || c->n_seen == CLUSTER_MEMBERS_MAX)
        return NULL;
    struct member_seen *s = &c->seen[c->n_seen++];
    memset(s, 0, sizeof *s);
    s->id = id;
    return s;
}

static void members_probe_all(struct cluster *c)
{
    struct cluster_member_view *v = calloc(CLUSTER_MEMBERS_MAX, sizeof *v);
    if (!v)
        return;
    size_t n = members_list(c, v, CLUSTER_MEMBERS_MAX);
    for (size_t i = 0; i < n; i++) {
        if (v[i].id == c->ns->self_id)
            continue;
        cJSON *js = NULL;
        int rc = cluster_peer_status(c->ns->client, v[i].faddr, MEMBER_PROBE_TIMEOUT_MS, &js);
        const cJSON *ap = rc == 0 ? cJSON_GetObjectItemCaseSensitive(js, "applied") : NULL;
        bool leaving = rc == 0 && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(js, "leaving"));
        uint64_t applied = 0;
        if (cJSON_IsString(ap) && ap->valuestring)
            applied = strtoull(ap->valuestring, NULL, 10);
        cJSON_Delete(js);
        pthread_mutex_lock(&c->members_mu);
        struct member_seen *s = members_find(c, v[i].id, true);
        if (s) {
            if (rc == 0 && !s->reachable && s->last_contact_ms)
                log_info("cluster: member %016" PRIx64 " (%s) answers again", v[i].id, v[i].caddr);
            else if (rc < 0 && s->reachable)
                log_info("cluster: member %016" PRIx64 " (%s) does not answer at %s: %s", v[i].id,
                         v[i].caddr, v[i].faddr, strerror(-rc));
            s->reachable = rc == 0;
            s->leaving = leaving;
            if (rc == 0) {
                s->last_contact_ms = nsync_now_ms();
                s->applied = applied;
            }
        }
        pthread_mutex_unlock(&c->members_mu);
    }
    free(v);
}

size_t cluster_get_members(struct cluster *c, struct cluster_member_view *out, size_t max)
{
    size_t n = members_list(c, out, max);
    struct cluster_status st;
    cluster_get_status(c, &st);
    uint64_t top = st.commit_index > st.last_applied ? st.commit_index : st.last_applied;
    pthread_mutex_lock(&c->members_mu);
    for (size_t i = 0; i < c->n_seen; i++)
        if (c->seen[i].applied > top)
            top = c->seen[i].applied;
    for (size_t i = 0; i < n; i++) {
        struct cluster_member_view *m = &out[i];
        if (m->id == c->ns->self_id) {
            m->self = m->reachable = true;
            m->last_contact_ms = nsync_now_ms();
            m->applied = st.last_applied;
        } else {
            const struct member_seen *s = members_find(c, m->id, false);
            if (s) {
                m->reachable = s->reachable;
                m->last_contact_ms = s->last_contact_ms;
                m->applied = s->applied;
            }
        }
        /* A member never heard from lags by an unknown amount: 0 here, and
         * reachable false says why. */
        m->behind = m->last_contact_ms && top > m->applied ? top - m->applied : 0;
    }
    pthread_mutex_unlock(&c->members_mu);
    return n;
}

size_t members_staying(struct cluster *c)
{
    members_probe_all(c);
    size_t n = 0;
    pthread_mutex_lock(&c->members_mu);
    for (size_t i = 0; i < c->n_seen; i++)
        n += c->seen[i].id != c->ns->self_id && c->seen[i].reachable && !c->seen[i].leaving;
    pthread_mutex_unlock(&c->members_mu);
    return n;
}

static bool members_stopping(struct cluster *c)
{
    pthread_mutex_lock(&c->mu);
    bool s = c->stopping;
    pthread_mutex_unlock(&c->mu);
    return s;
}

static void *members_main(void *arg)
{
    struct cluster *c = arg;
    while (!members_stopping(c)) {
        members_probe_all(c);
        struct timespec dl;
        abs_deadline(&dl, CLUSTER_MEMBER_PROBE_MS);
        pthread_mutex_lock(&c->members_mu);
        if (!members_stopping(c))
            pthread_cond_timedwait(&c->members_cv, &c->members_mu, &dl);
        pthread_mutex_unlock(&c->members_mu);
    }
    return NULL;
}

void members_start(struct cluster *c)
{
    if (pthread_create(&c->members_thread, NULL, members_main, c) == 0) {
        c->members_started = true;
        pthread_setname_np(c->members_thread, "ns-members");
    } else {
        log_warn("cluster: cannot start the member probe thread: the status shows no reachability");
    }
}

void members_stop(struct cluster *c)
{
    assert(c->stopping);
    pthread_mutex_lock(&c->members_mu);
    pthread_cond_broadcast(&c->members_cv);
    pthread_mutex_unlock(&c->members_mu);
    if (c->members_started)
        pthread_join(c->members_thread, NULL);
    c->members_started = false;
}
