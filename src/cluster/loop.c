/* The loop thread: runs libuv with raft on it, takes requests from other
 * threads through one queue drained on a uv_async_t, proposes them, answers
 * them when raft does, and publishes the role every tick for any thread. */
#include "cluster/cluster_int.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/transport.h"
#include "common/log.h"

/* ---------------- request completion (loop thread) ---------------- */

void loop_req_complete(struct submit_req *r, int rc)
{
    struct cluster *c = r->c;
    pthread_mutex_lock(&c->mu);
    r->rc = rc;
    r->done = true;
    bool free_it = r->abandoned;
    pthread_cond_broadcast(&c->done_cv);
    pthread_mutex_unlock(&c->mu);
    if (free_it) {
        free(r->buf);
        free(r);
    }
}

static void nudge_followers(struct cluster *c);

static void barrier_cb(struct raft_barrier *req, int status)
{
    struct cluster *c = req->data;
    c->barrier_inflight = false;
    if (c->nudge_again) {
        c->nudge_again = false;
        nudge_followers(c);
    }
}

/* Followers learn that an entry committed only with the next AppendEntries.
 * A barrier entry sends one at once, so peers apply (and start fetching) a
 * change now rather than a heartbeat later. At most one is in flight; a
 * commit that happens meanwhile is announced by one more barrier after it.
 * None while a later entry is still uncommitted: its own commit nudges, so
 * a stream of changes gets one barrier at its end instead of one per
 * commit (which doubled the raft entries, log writes and follower appends
 * per small file). None without followers. */
static void nudge_followers(struct cluster *c)
{
    assert(on_loop_thread(c));
    if (raft_state(&c->raft) != RAFT_LEADER || c->raft.configuration.n < 2)
        return;
    if (!c->barrier_inflight && raft_last_index(&c->raft) > c->raft.commit_index)
        return;
    if (c->barrier_inflight) {
        c->nudge_again = true;
        return;
    }
    c->barrier.data = c;
    if (raft_barrier(&c->raft, &c->barrier, barrier_cb) == 0)
        c->barrier_inflight = true;
}

static void apply_cb(struct raft_apply *areq, int status, void *result)
{
    struct submit_req *r = areq->data;
    struct cluster *c = r->c;
    assert(on_loop_thread(c));
    if (status != 0) {
        log_debug("cluster: proposal not applied: %s", raft_strerror(status));
        loop_req_complete(r, -ENOTCONN); /* leadership lost: the caller retries */
        return;
    }
    struct cluster_reply rep = {.status = (int)(intptr_t)result};
    struct fsm *f = c->ns->fsm; /* loop thread: the sole writer, no lock needed */
    rep.version = fsm_version(f);
    if (r->path[0]) {
        uint64_t holder = 0, exp = 0;
        if (fsm_lock_get(f, r->path, &holder, &exp) == 1)
            rep.lock_holder = holder;
        const struct fsm_entry *e = fsm_get(f, r->path);
        rep.path_version = e ? e->version : 0;
    }
    r->reply = rep;
    loop_req_complete(r, 0);
    nudge_followers(c);
}

/* raft's on-disk log assumes every entry's length is a multiple of 8 (it
 * reads entries back at padded offsets), so commands are zero-padded; the
 * FSM decoder accepts up to 7 zero bytes after a command. */
static int encode_for_log(const struct fsm_cmd *cmd, struct raft_buffer *rb)
{
    void *out;
    size_t len;
    if (fsm_cmd_encode(cmd, &out, &len) < 0)
        return -EINVAL;
    size_t padded = (len + 7) & ~(size_t)7;
    if (padded != len) {
        void *p = realloc(out, padded);
        if (!p) {
            free(out);
            return -ENOMEM;
        }
        memset((char *)p + len, 0, padded - len);
        out = p;
    }
    rb->base = out;
    rb->len = padded;
    return 0;
}

/* Decode, stamp the leader's clock, re-encode, and hand to raft. */
static int propose(struct cluster *c, struct submit_req *r)
{
    assert(on_loop_thread(c));
    struct fsm_cmd cmd;
    int rc = fsm_cmd_decode(r->buf, r->len, &cmd);
    if (rc < 0) {
        fsm_cmd_release(&cmd);
        return -EINVAL;
    }
    cmd.now_ms = nsync_now_ms();
    r->op = cmd.op;
    r->path[0] = '\0';
    if (cmd.path && strlen(cmd.path) < sizeof r->path)
        strcpy(r->path, cmd.path);
    struct raft_buffer rb;
    rc = encode_for_log(&cmd, &rb);
    fsm_cmd_release(&cmd);
    if (rc < 0)
        return rc;
    r->apply.data = r;
    rc = raft_apply(&c->raft, &r->apply, &rb, 1, apply_cb);
    if (rc != 0) {
        free(rb.base);
        log_debug("cluster: raft_apply: %s", raft_strerror(rc));
        return -ENOTCONN;
    }
    return 0;
}

const char *cluster_role_name(enum cluster_role role)
{
    switch (role) {
    case CLUSTER_LEADER: return "leader";
    case CLUSTER_FOLLOWER: return "follower";
    case CLUSTER_CANDIDATE: return "candidate";
    default: return "unavailable";
    }
}

static enum cluster_role cluster_role_of(int raft_st)
{
    switch (raft_st) {
    case RAFT_LEADER: return CLUSTER_LEADER;
    case RAFT_FOLLOWER: return CLUSTER_FOLLOWER;
    case RAFT_CANDIDATE: return CLUSTER_CANDIDATE;
    default: return CLUSTER_UNAVAILABLE;
    }
}

static void publish_status(struct cluster *c)
{
    assert(on_loop_thread(c));
    struct cluster_status st = {0};
    st.state = cluster_role_of(raft_state(&c->raft));
    raft_id lid = 0;
    const char *laddr = NULL;
    raft_leader(&c->raft, &lid, &laddr);
    st.leader_id = lid;
    st.term = c->raft.current_term;
    st.last_applied = raft_last_applied(&c->raft);
    st.commit_index = c->raft.commit_index;
    for (unsigned i = 0; i < c->raft.configuration.n; i++)
        if (c->raft.configuration.servers[i].role == RAFT_VOTER)
            st.voters++;
    pthread_mutex_lock(&c->mu);
    c->status = st;
    pthread_mutex_unlock(&c->mu);
    quorum_note(c, &st);
    if ((int)st.state != c->last_state) {
        log_info("cluster: now %s (term %" PRIu64 ", leader %016" PRIx64 ")",
                 cluster_role_name(st.state), st.term, st.leader_id);
        c->last_state = (int)st.state;
    }
}

static void unattended_cb(struct raft_apply *areq, int status, void *result)
{
    free(areq);
}

int loop_apply_unattended(struct cluster *c, const struct fsm_cmd *cmd)
{
    assert(on_loop_thread(c));
    struct raft_buffer rb;
    if (encode_for_log(cmd, &rb) < 0)
        return 0; /* cannot encode: retrying will not help */
    struct raft_apply *areq = calloc(1, sizeof *areq);
    if (!areq || raft_apply(&c->raft, areq, &rb, 1, unattended_cb) != 0) {
        free(areq);
        free(rb.base);
        return -1;
    }
    return 0;
}

static void nodelay_cb(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (h->type == UV_TCP && !uv_is_closing(h))
        uv_tcp_nodelay((uv_tcp_t *)h, 1);
}

void loop_timer_cb(uv_timer_t *t)
{
    struct cluster *c = t->data;
    publish_status(c);
    membership_propose_missing(c);
    /* libraft leaves Nagle's algorithm on for its connections: a message
     * that does not end on a full segment then waits for the peer's
     * delayed ACK, up to 40 ms. Since small files travel inside their
     * ANNOUNCE, AppendEntries messages are tens of KiB and a stream of
     * closes saw commits take 20-40 ms instead of 1-3. The only TCP
     * handles on this loop are raft's, so each tick switches Nagle off on
     * whatever connections appeared since (the listener passes it on to
     * the connections it accepts). */
    uv_walk(&c->loop, nodelay_cb, NULL);
}

static void raft_closed_cb(struct raft *r)
{
    struct cluster *c = r->data;
    raft_uv_close(&c->io);
    transport_close(&c->transport);
    uv_close((uv_handle_t *)&c->async, NULL);
}

void loop_async_cb(uv_async_t *a)
{
    struct cluster *c = a->data;
    assert(on_loop_thread(c));
    pthread_mutex_lock(&c->mu);
    struct submit_req *list = c->queue_head;
    c->queue_head = c->queue_tail = NULL;
    bool stopping = c->stopping;
    pthread_mutex_unlock(&c->mu);

    while (list) {
        struct submit_req *r = list;
        list = r->next;
        int rc;
        if (stopping)
            rc = -ESHUTDOWN;
        else if (raft_state(&c->raft) != RAFT_LEADER)
            rc = -ENOTCONN;
        else if (r->kind == REQ_PROPOSE)
            rc = propose(c, r);
        else
            rc = membership_start(c, r);
        if (rc < 0)
            loop_req_complete(r, rc);
    }
    if (stopping && !uv_is_closing((uv_handle_t *)&c->timer)) {
        uv_timer_stop(&c->timer);
        uv_close((uv_handle_t *)&c->timer, NULL);
        c->raft.data = c;
        raft_close(&c->raft, raft_closed_cb);
    }
}

void *loop_main(void *arg)
{
    struct cluster *c = arg;
    uv_run(&c->loop, UV_RUN_DEFAULT);
    return NULL;
}

/* Hand r to the loop thread and wait for its completion. Takes ownership
 * of r (freed here, or by the loop thread if we give up first). */
int loop_queue_and_wait(struct cluster *c, struct submit_req *r, unsigned timeout_ms,
                        struct cluster_reply *reply)
{
    assert(!on_loop_thread(c)); /* the loop would wait on itself */
    r->c = c;
    pthread_mutex_lock(&c->mu);
    if (c->stopping) {
        pthread_mutex_unlock(&c->mu);
        free(r->buf);
        free(r);
        return -ESHUTDOWN;
    }
    if (c->queue_tail)
        c->queue_tail->next = r;
    else
        c->queue_head = r;
    c->queue_tail = r;
    pthread_mutex_unlock(&c->mu);
    uv_async_send(&c->async);

    struct timespec dl;
    abs_deadline(&dl, timeout_ms);
    pthread_mutex_lock(&c->mu);
    while (!r->done) {
        if (pthread_cond_timedwait(&c->done_cv, &c->mu, &dl) == ETIMEDOUT && !r->done) {
            r->abandoned = true; /* the loop thread frees it on completion */
            pthread_mutex_unlock(&c->mu);
            return -EROFS;
        }
    }
    int rc = r->rc;
    if (rc == 0 && reply)
        *reply = r->reply;
    pthread_mutex_unlock(&c->mu);
    free(r->buf);
    free(r);
    return rc;
}

/* Contract in cluster_int.h. */
int loop_submit_local_batch(struct cluster *c, struct cluster_item *items, size_t n,
                            unsigned timeout_ms)
{
    assert(!on_loop_thread(c)); /* the loop would wait on itself */
    struct submit_req **reqs = calloc(n ? n : 1, sizeof *reqs);
    if (!reqs)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        struct submit_req *r = calloc(1, sizeof *r);
        void *b = r ? malloc(items[i].len ? items[i].len : 1) : NULL;
        if (!b) {
            free(r);
            for (size_t j = 0; j < i; j++) {
                free(reqs[j]->buf);
                free(reqs[j]);
            }
            free(reqs);
            return -ENOMEM;
        }
        memcpy(b, items[i].buf, items[i].len);
        r->c = c;
        r->kind = REQ_PROPOSE;
        r->buf = b;
        r->len = items[i].len;
        reqs[i] = r;
    }
    pthread_mutex_lock(&c->mu);
    if (c->stopping) {
        pthread_mutex_unlock(&c->mu);
        for (size_t i = 0; i < n; i++) {
            free(reqs[i]->buf);
            free(reqs[i]);
        }
        free(reqs);
        return -ESHUTDOWN;
    }
    for (size_t i = 0; i < n; i++) {
        if (c->queue_tail)
            c->queue_tail->next = reqs[i];
        else
            c->queue_head = reqs[i];
        c->queue_tail = reqs[i];
    }
    pthread_mutex_unlock(&c->mu);
    uv_async_send(&c->async);

    struct timespec dl;
    abs_deadline(&dl, timeout_ms);
    pthread_mutex_lock(&c->mu);
    bool late = false;
    for (size_t i = 0; i < n; i++) {
        struct submit_req *r = reqs[i];
        while (!r->done && !late)
            late = pthread_cond_timedwait(&c->done_cv, &c->mu, &dl) == ETIMEDOUT;
        if (!r->done) {
            r->abandoned = true; /* the loop thread frees it on completion */
            items[i].rc = -EROFS;
            continue;
        }
        items[i].rc = r->rc;
        if (r->rc == 0)
            items[i].reply = r->reply;
        free(r->buf);
        free(r);
    }
    pthread_mutex_unlock(&c->mu);
    free(reqs);
    return 0;
}

bool cluster_wait_change(struct cluster *c, uint64_t *seen, unsigned timeout_ms)
{
    struct timespec dl;
    abs_deadline(&dl, timeout_ms);
    pthread_mutex_lock(&c->applied_mu);
    while (c->applied_seq == *seen) {
        if (pthread_cond_timedwait(&c->applied_cv, &c->applied_mu, &dl) == ETIMEDOUT)
            break;
    }
    bool changed = c->applied_seq != *seen;
    *seen = c->applied_seq;
    pthread_mutex_unlock(&c->applied_mu);
    return changed;
}

void cluster_kick(struct cluster *c)
{
    pthread_mutex_lock(&c->applied_mu);
    c->applied_seq++;
    pthread_cond_broadcast(&c->applied_cv);
    pthread_mutex_unlock(&c->applied_mu);
}

void cluster_get_status(struct cluster *c, struct cluster_status *st)
{
    pthread_mutex_lock(&c->mu);
    *st = c->status;
    pthread_mutex_unlock(&c->mu);
}
