/* The cluster thread: owns struct raft and its libuv loop, applies committed
 * commands to the FSM, and takes proposals through one queue drained on a
 * uv_async_t. Every proposal of this node goes through the outbox
 * (outbox.c), whose thread delivers batches here on the leader or forwards
 * them over HTTP to the leader, so the loop never blocks on the network. */
#include "cluster/cluster.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <raft.h>
#include <raft/uv.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "cluster/outbox.h"
#include "common/log.h"
#include "nsync.h"
#include "cluster/peer.h"

#include <cjson/cJSON.h>

#define STATUS_TICK_MS 50
#define RENEW_EVERY_MS 1000
#define NSYNC_LEFT_MARK "left" /* in the data dir: this node left; rejoin, never bootstrap */

enum req_kind { REQ_PROPOSE, REQ_ADD, REQ_REMOVE, REQ_TRANSFER };

struct submit_req {
    struct submit_req *next;
    struct cluster *c;
    enum req_kind kind;
    uint64_t node_id;               /* ADD, REMOVE */
    char caddr[NSYNC_ADDR_MAX];     /* ADD */
    struct raft_change change;
    struct raft_transfer transfer;
    void *buf;              /* encoded command as received (owned by the req) */
    size_t len;
    struct raft_apply apply;
    char path[PATH_MAX];    /* the command's path, to read the reply from the FSM */
    uint8_t op;
    bool done;
    bool abandoned;         /* the caller gave up: the loop thread frees the req */
    int rc;
    struct cluster_reply reply;
};

struct cluster {
    struct nsync *ns;
    uv_loop_t loop;
    pthread_t thread;
    bool thread_started;
    struct raft raft;
    struct raft_io io;
    struct raft_uv_transport transport;
    struct raft_fsm fsm_iface;
    uv_async_t async;
    uv_timer_t timer;
    char address[NSYNC_ADDR_MAX];

    /* mu guards the queue, the published status, stopping and every req's
     * done/abandoned/rc/reply; done_cv wakes submitters. */
    pthread_mutex_t mu;
    pthread_cond_t done_cv;
    struct submit_req *queue_head, *queue_tail;
    bool stopping;
    struct cluster_status status;

    /* Apply counter for cluster_wait_change. */
    pthread_mutex_t applied_mu;
    pthread_cond_t applied_cv;
    uint64_t applied_seq;

    /* Loop-thread only. */
    bool barrier_inflight;
    bool nudge_again;
    bool joined;            /* set once at start */
    struct raft_barrier barrier;
    int last_state;
    uint64_t joins_proposed_term;

    struct outbox *outbox;  /* every proposal of this node, in order */

    atomic_int held_locks;
    pthread_t renew_thread;
    bool renew_started;
    pthread_mutex_t renew_mu;
    pthread_cond_t renew_cv;
};


static void abs_deadline(struct timespec *ts, unsigned ms)
{
    nsync_deadline(ts, (uint64_t)ms * 1000u);
}

/* ---------------- FSM glue (loop thread) ---------------- */

static int fsm_iface_apply(struct raft_fsm *iface, const struct raft_buffer *buf, void **result)
{
    struct cluster *c = iface->data;
    pthread_rwlock_wrlock(&c->ns->fsm_lock);
    int rc = fsm_apply(c->ns->fsm, buf->base, buf->len);
    pthread_rwlock_unlock(&c->ns->fsm_lock);
    if (rc == -EINVAL) {
        char hex[3 * 24 + 1] = "";
        const uint8_t *b = buf->base;
        for (size_t i = 0; i < buf->len && i < 24; i++)
            snprintf(hex + 3 * i, 4, "%02x ", b[i]);
        log_warn("cluster: committed command rejected as malformed (%zu bytes: %s...)", buf->len, hex);
    }
    *result = (void *)(intptr_t)rc;

    pthread_mutex_lock(&c->applied_mu);
    c->applied_seq++;
    pthread_cond_broadcast(&c->applied_cv);
    pthread_mutex_unlock(&c->applied_mu);
    /* raft treats a non-zero return as fatal: the command's own verdict
     * travels in *result instead. */
    return 0;
}

/* How long a leader waits for a follower to install a snapshot before it
 * gives up and starts over. libraft's default, 30 s, is also how long a
 * follower killed during an install got nothing from the leader once it was
 * back: its writers waited on its catalog until their lock timeout (chaos
 * runs). 3 s plus 1 s per MiB of snapshot keeps a big catalog on a slow link
 * possible. Loop thread. */
static void cluster_snapshot_timeout(struct cluster *c, size_t len)
{
    raft_set_install_snapshot_timeout(&c->raft, 3000u + (unsigned)(len >> 20) * 1000u);
}

static int fsm_iface_snapshot(struct raft_fsm *iface, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    struct cluster *c = iface->data;
    void *data;
    size_t len;
    /* The loop thread is the only writer, so reading without the lock is safe. */
    int rc = fsm_snapshot(c->ns->fsm, &data, &len);
    if (rc < 0) {
        log_error("cluster: snapshot failed: %s", strerror(-rc));
        return RAFT_NOMEM;
    }
    *bufs = raft_malloc(sizeof(struct raft_buffer));
    if (!*bufs) {
        free(data);
        return RAFT_NOMEM;
    }
    (*bufs)[0].base = data; /* raft_free is free() with the default heap */
    (*bufs)[0].len = len;
    *n_bufs = 1;
    cluster_snapshot_timeout(c, len);
    log_debug("cluster: snapshot of %zu bytes (%zu entries)", len, fsm_entry_count(c->ns->fsm));
    return 0;
}

static int fsm_iface_restore(struct raft_fsm *iface, struct raft_buffer *buf)
{
    struct cluster *c = iface->data;
    pthread_rwlock_wrlock(&c->ns->fsm_lock);
    int rc = fsm_restore(c->ns->fsm, buf->base, buf->len);
    pthread_rwlock_unlock(&c->ns->fsm_lock);
    if (rc < 0) {
        log_error("cluster: cannot restore snapshot (%zu bytes): %s", buf->len, strerror(-rc));
        return RAFT_CORRUPT;
    }
    cluster_snapshot_timeout(c, buf->len);
    raft_free(buf->base); /* on success the buffer is ours */
    pthread_mutex_lock(&c->applied_mu);
    c->applied_seq++;
    pthread_cond_broadcast(&c->applied_cv);
    pthread_mutex_unlock(&c->applied_mu);
    log_info("cluster: restored snapshot: %zu entries, version %" PRIu64, fsm_entry_count(c->ns->fsm),
             fsm_version(c->ns->fsm));
    return 0;
}

/* ---------------- request completion (loop thread) ---------------- */

static void req_complete(struct submit_req *r, int rc)
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
    if (status != 0) {
        log_debug("cluster: proposal not applied: %s", raft_strerror(status));
        req_complete(r, -ENOTCONN); /* leadership lost: the caller retries */
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
    req_complete(r, 0);
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

/* Propose a command nobody waits for (loop thread, leader). 0, or -1 if raft
 * refused it: the caller retries on a later tick. */
static int apply_unattended(struct cluster *c, const struct fsm_cmd *cmd)
{
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

/* The member table lives in the FSM (raft addresses carry no file-server
 * port); a new leader records every configured node that is missing. */
static void propose_missing_members(struct cluster *c)
{
    if (raft_state(&c->raft) != RAFT_LEADER || c->joins_proposed_term == c->raft.current_term)
        return;
    c->joins_proposed_term = c->raft.current_term;
    /* Only voters of the current configuration: a node that left is still
     * on the command line, and recording it again would make every entry
     * wait for it. */
    for (unsigned k = 0; k < c->raft.configuration.n; k++) {
        const struct raft_server *srv = &c->raft.configuration.servers[k];
        if (srv->role != RAFT_VOTER || fsm_member_get(c->ns->fsm, srv->id))
            continue;
        const struct nsync_peer *p = nsync_peer_by_id(c->ns, srv->id);
        if (!p)
            continue; /* joined through /v1/join: JOIN carried its addresses */
        char caddr[NSYNC_ADDR_MAX], faddr[NSYNC_ADDR_MAX];
        snprintf(caddr, sizeof caddr, "%s:%u", p->host, p->cport);
        snprintf(faddr, sizeof faddr, "%s:%u", p->host, p->fport);
        struct fsm_cmd cmd = {.op = FSM_OP_JOIN, .node = p->id, .caddr = caddr, .faddr = faddr};
        if (apply_unattended(c, &cmd) < 0) {
            c->joins_proposed_term = 0; /* try again on the next tick */
            return;
        }
        log_info("cluster: recording member %016" PRIx64 " (%s, files at %s)", p->id, caddr, faddr);
    }
    /* And the other way round: a member that is no longer in the
     * configuration (its leave was cut short between the two steps) would
     * keep every entry pending. */
    for (size_t i = 0; i < fsm_member_count(c->ns->fsm); i++) {
        uint64_t id = fsm_member_at(c->ns->fsm, i)->id;
        bool in_conf = false;
        for (unsigned k = 0; k < c->raft.configuration.n; k++)
            if (c->raft.configuration.servers[k].id == id)
                in_conf = true;
        if (in_conf)
            continue;
        struct fsm_cmd cmd = {.op = FSM_OP_LEAVE, .node = id};
        if (apply_unattended(c, &cmd) < 0) {
            c->joins_proposed_term = 0;
            return;
        }
        log_info("cluster: dropping member %016" PRIx64 ", no longer in the configuration", id);
    }
}

static void nodelay_cb(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (h->type == UV_TCP && !uv_is_closing(h))
        uv_tcp_nodelay((uv_tcp_t *)h, 1);
}

static void timer_cb(uv_timer_t *t)
{
    struct cluster *c = t->data;
    publish_status(c);
    propose_missing_members(c);
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
    raft_uv_tcp_close(&c->transport);
    uv_close((uv_handle_t *)&c->async, NULL);
}

static int map_raft_err(int rv)
{
    switch (rv) {
    case 0: return 0;
    case RAFT_NOTLEADER:
    case RAFT_LEADERSHIPLOST: return -ENOTCONN;
    case RAFT_CANTCHANGE: return -EBUSY;
    case RAFT_SHUTDOWN: return -ESHUTDOWN;
    case RAFT_NOMEM: return -ENOMEM;
    default: return -EIO;
    }
}

static void assign_cb(struct raft_change *ch, int status)
{
    struct submit_req *r = ch->data;
    if (status != 0)
        log_warn("cluster: promoting %016" PRIx64 " to voter: %s", r->node_id, raft_strerror(status));
    req_complete(r, map_raft_err(status));
}

static void add_cb(struct raft_change *ch, int status)
{
    struct submit_req *r = ch->data;
    if (status != 0) {
        req_complete(r, map_raft_err(status));
        return;
    }
    int rv = raft_assign(&r->c->raft, &r->change, r->node_id, RAFT_VOTER, assign_cb);
    if (rv == RAFT_BADROLE)
        rv = 0, req_complete(r, 0);
    else if (rv != 0)
        req_complete(r, map_raft_err(rv));
}

static void remove_cb(struct raft_change *ch, int status)
{
    struct submit_req *r = ch->data;
    req_complete(r, map_raft_err(status));
}

static void transfer_cb(struct raft_transfer *t)
{
    req_complete(t->data, 0);
}

/* Configuration changes and leadership transfer, on the loop thread. */
static int start_membership(struct cluster *c, struct submit_req *r)
{
    int rv;
    r->change.data = r;
    r->transfer.data = r;
    switch (r->kind) {
    case REQ_ADD:
        rv = raft_add(&c->raft, &r->change, r->node_id, r->caddr, add_cb);
        if (rv == RAFT_DUPLICATEID) { /* already there (a retry): make sure it votes */
            rv = raft_assign(&c->raft, &r->change, r->node_id, RAFT_VOTER, assign_cb);
            if (rv == RAFT_BADROLE) {
                req_complete(r, 0);
                return 0;
            }
        }
        return map_raft_err(rv);
    case REQ_REMOVE:
        rv = raft_remove(&c->raft, &r->change, r->node_id, remove_cb);
        if (rv == RAFT_BADID) { /* not in the configuration any more */
            req_complete(r, 0);
            return 0;
        }
        return map_raft_err(rv);
    case REQ_TRANSFER:
        rv = raft_transfer(&c->raft, &r->transfer, 0, transfer_cb);
        return rv == RAFT_NOTFOUND ? -ENOENT : map_raft_err(rv);
    default:
        return -EINVAL;
    }
}

static void raft_failed_closed_cb(struct raft *r)
{
    struct cluster *c = r->data;
    raft_uv_close(&c->io);
    raft_uv_tcp_close(&c->transport);
}

static void async_cb(uv_async_t *a)
{
    struct cluster *c = a->data;
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
            rc = start_membership(c, r);
        if (rc < 0)
            req_complete(r, rc);
    }
    if (stopping && !uv_is_closing((uv_handle_t *)&c->timer)) {
        uv_timer_stop(&c->timer);
        uv_close((uv_handle_t *)&c->timer, NULL);
        c->raft.data = c;
        raft_close(&c->raft, raft_closed_cb);
    }
}

static void *loop_main(void *arg)
{
    struct cluster *c = arg;
    uv_run(&c->loop, UV_RUN_DEFAULT);
    return NULL;
}


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

static bool json_u64_eq(const cJSON *it, uint64_t v)
{
    char buf[24];
    snprintf(buf, sizeof buf, "%" PRIu64, v);
    return cJSON_IsString(it) && it->valuestring && strcmp(it->valuestring, buf) == 0;
}

/* Ask a peer who leads and whether its cluster lists this node. Returns 1 if
 * the peer is in a cluster with a leader that does not list us (we must
 * join), 0 if it lists us or has no leader yet, -errno if unreachable. The
 * leader's file-server address goes to leader_faddr. */
static int probe_peer(struct nsync *ns, const struct nsync_peer *p, char *leader_faddr, size_t sz)
{
    char faddr[NSYNC_ADDR_MAX];
    snprintf(faddr, sizeof faddr, "%s:%u", p->host, p->fport);
    cJSON *st = NULL;
    int rc = cluster_peer_status(ns->client, faddr, 500, &st);
    if (rc < 0)
        return rc;
    const cJSON *leader = cJSON_GetObjectItemCaseSensitive(st, "leader");
    const cJSON *members = cJSON_GetObjectItemCaseSensitive(st, "members");
    int verdict = 0;
    if (cJSON_IsString(leader) && leader->valuestring && strcmp(leader->valuestring, "0") &&
        cJSON_IsArray(members) && cJSON_GetArraySize(members) > 0) {
        bool listed = false;
        const cJSON *m;
        leader_faddr[0] = '\0';
        cJSON_ArrayForEach(m, members) {
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(m, "id");
            const cJSON *fa = cJSON_GetObjectItemCaseSensitive(m, "faddr");
            if (json_u64_eq(id, ns->self_id))
                listed = true;
            if (cJSON_IsString(id) && cJSON_IsString(fa) && fa->valuestring &&
                strcmp(id->valuestring, leader->valuestring) == 0)
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
    snprintf(my_faddr, sizeof my_faddr, "%s:%u", ns->cfg.host, ns->cfg.fport);
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

/* ---------------- public API ---------------- */

static void *renew_main(void *arg);

int cluster_start(struct nsync *ns, struct cluster **out)
{
    struct cluster *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->ns = ns;
    c->last_state = -1;
    pthread_mutex_init(&c->mu, NULL);
    nsync_cond_init_mono(&c->done_cv);
    pthread_mutex_init(&c->applied_mu, NULL);
    nsync_cond_init_mono(&c->applied_cv);
    pthread_mutex_init(&c->renew_mu, NULL);
    nsync_cond_init_mono(&c->renew_cv);
    snprintf(c->address, sizeof c->address, "%s:%u", ns->cfg.host, ns->cfg.cport);

    int rc = uv_loop_init(&c->loop);
    if (rc != 0) {
        log_error("cluster: uv_loop_init: %s", uv_strerror(rc));
        free(c);
        return -EIO;
    }
    rc = raft_uv_tcp_init(&c->transport, &c->loop);
    if (rc == 0)
        rc = raft_uv_init(&c->io, &c->loop, ns->raft_dir, &c->transport);
    if (rc != 0) {
        log_error("cluster: cannot open raft storage in %s: %s", ns->raft_dir, raft_strerror(rc));
        uv_loop_close(&c->loop);
        free(c);
        return -EIO;
    }
    raft_uv_set_connect_retry_delay(&c->io, 200);
    /* raft preallocates a few log segments ahead; at the 8 MiB default that
     * is 24 MiB, and a node whose disk cannot give it stops applying (a
     * leader even crashes inside libraft). Our commands are small: 1 MiB
     * segments hold thousands and keep the reservation at 3 MiB. */
    raft_uv_set_segment_size(&c->io, 1024 * 1024);
    c->fsm_iface.version = 1;
    c->fsm_iface.data = c;
    c->fsm_iface.apply = fsm_iface_apply;
    c->fsm_iface.snapshot = fsm_iface_snapshot;
    c->fsm_iface.restore = fsm_iface_restore;
    rc = raft_init(&c->raft, &c->io, &c->fsm_iface, ns->self_id, c->address);
    if (rc != 0) {
        log_error("cluster: raft_init: %s", raft_strerror(rc));
        goto fail_io;
    }
    raft_set_election_timeout(&c->raft, 1000);
    raft_set_heartbeat_timeout(&c->raft, 100);
    raft_set_pre_vote(&c->raft, true);
    /* raft keeps every entry since its last snapshot in memory, and a small
     * file's entry carries its bytes (up to 4 KiB): 2048 + 512 entries keep
     * that near 10 MiB. Measured against 4096 + 1024 on a 3-node burst of
     * 6000 creates: ~10 MiB less peak RSS per node, the same create rate. */
    raft_set_snapshot_threshold(&c->raft, 2048);
    raft_set_snapshot_trailing(&c->raft, 512);
    cluster_snapshot_timeout(c, 0);

    /* A node that left cleanly must never bootstrap again: its old peers
     * went on without it, and a fresh configuration would split the cluster. */
    bool has_state = raft_has_state(ns->raft_dir);
    bool left_before = !has_state && faccessat(ns->data_fd, NSYNC_LEFT_MARK, F_OK, 0) == 0;
    bool joining = !has_state && (left_before || should_join(ns));
    if (joining) {
        log_info("cluster: a running cluster does not list this node: joining it");
        goto start;
    }
    /* Every node computes the same configuration from --cluster, so
     * bootstrapping everywhere is idempotent; a node with state skips it. */
    struct raft_configuration conf;
    raft_configuration_init(&conf);
    for (size_t i = 0; i < ns->cfg.n_peers && rc == 0; i++) {
        char addr[NSYNC_ADDR_MAX];
        snprintf(addr, sizeof addr, "%s:%u", ns->cfg.peers[i].host, ns->cfg.peers[i].cport);
        rc = raft_configuration_add(&conf, ns->cfg.peers[i].id, addr, RAFT_VOTER);
    }
    if (rc == 0)
        rc = raft_bootstrap(&c->raft, &conf);
    raft_configuration_close(&conf);
    if (rc == RAFT_CANTBOOTSTRAP) {
        rc = 0;
    } else if (rc != 0) {
        log_error("cluster: bootstrap: %s", raft_strerror(rc));
        goto fail_raft;
    }
start:
    rc = raft_start(&c->raft);
    if (rc != 0) {
        log_error("cluster: raft_start: %s (%s)", raft_strerror(rc), raft_errmsg(&c->raft));
        goto fail_raft;
    }
    uv_async_init(&c->loop, &c->async, async_cb);
    c->async.data = c;
    uv_timer_init(&c->loop, &c->timer);
    c->timer.data = c;
    uv_timer_start(&c->timer, timer_cb, 0, STATUS_TICK_MS);

    if (pthread_create(&c->thread, NULL, loop_main, c) != 0) {
        log_error("cluster: cannot start the loop thread");
        goto fail_raft;
    }
    c->thread_started = true;
    pthread_setname_np(c->thread, "ns-raft"); /* names for top -H and perf */
    int orc = outbox_start(c, ns->cfg.submit_timeout_ms ? ns->cfg.submit_timeout_ms : 8000, &c->outbox);
    if (orc < 0) {
        log_error("cluster: cannot start the outbox thread: %s", strerror(-orc));
        cluster_stop(c);
        return orc;
    }
    if (pthread_create(&c->renew_thread, NULL, renew_main, c) == 0) {
        c->renew_started = true;
        pthread_setname_np(c->renew_thread, "ns-renew");
    }
    if (joining) {
        if (join_cluster(c, 120000) < 0) {
            cluster_stop(c);
            return -EHOSTUNREACH;
        }
        unlinkat(ns->data_fd, NSYNC_LEFT_MARK, 0);
        c->joined = true;
    }
    *out = c;
    log_info("cluster: node %016" PRIx64 " at %s, %zu configured nodes", ns->self_id, c->address,
             ns->cfg.n_peers);
    return 0;

fail_raft:
    /* raft_close is asynchronous: run the loop until it is done. */
    c->raft.data = c;
    raft_close(&c->raft, raft_failed_closed_cb);
    uv_run(&c->loop, UV_RUN_DEFAULT);
    uv_loop_close(&c->loop);
    free(c);
    return -EIO;
fail_io:
    raft_uv_close(&c->io);
    raft_uv_tcp_close(&c->transport);
    uv_run(&c->loop, UV_RUN_DEFAULT);
    uv_loop_close(&c->loop);
    free(c);
    return -EIO;
}

void cluster_stop(struct cluster *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    c->stopping = true;
    pthread_mutex_unlock(&c->mu);
    if (c->thread_started)
        uv_async_send(&c->async); /* answers queued proposals, closes raft */
    /* The outbox before the loop thread: a delivery in progress is answered
     * by the loop (-ESHUTDOWN), and the renew thread may be waiting on it. */
    outbox_stop(c->outbox);
    c->outbox = NULL;
    pthread_mutex_lock(&c->renew_mu);
    pthread_cond_broadcast(&c->renew_cv);
    pthread_mutex_unlock(&c->renew_mu);
    if (c->renew_started)
        pthread_join(c->renew_thread, NULL);
    if (c->thread_started)
        pthread_join(c->thread, NULL);
    uv_loop_close(&c->loop);
    cluster_kick(c);
    /* Submitters that were waiting have been answered (-ESHUTDOWN) or will
     * time out; requests still in raft were completed by raft_close. */
    free(c);
}

/* Hand r to the loop thread and wait for its completion. Takes ownership
 * of r (freed here, or by the loop thread if we give up first). */
static int queue_and_wait(struct cluster *c, struct submit_req *r, unsigned timeout_ms,
                          struct cluster_reply *reply)
{
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

/* Queue every item to the loop thread at once (one wake-up, consecutive
 * log entries) and wait for all of them until timeout_ms. 0 with each
 * item's rc (-EROFS for those not done in time: abandoned to the loop
 * thread), -ENOMEM, or -ESHUTDOWN. */
static int submit_local_batch(struct cluster *c, struct cluster_item *items, size_t n,
                              unsigned timeout_ms)
{
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

static int membership_local(struct cluster *c, enum req_kind kind, uint64_t id, const char *caddr,
                            unsigned timeout_ms)
{
    struct submit_req *r = calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    r->kind = kind;
    r->node_id = id;
    if (caddr)
        snprintf(r->caddr, sizeof r->caddr, "%s", caddr);
    return queue_and_wait(c, r, timeout_ms, NULL);
}

int cluster_submit_encoded(struct cluster *c, const void *buf, size_t len, unsigned timeout_ms,
                           struct cluster_reply *reply)
{
    struct cluster_item it = {.buf = buf, .len = len};
    int rc = cluster_submit_batch_encoded(c, &it, 1, timeout_ms);
    if (rc == 0 && (rc = it.rc) == 0 && reply)
        *reply = it.reply;
    return rc;
}

static int leader_faddr(struct cluster *c, uint64_t id, char *out, size_t outsz)
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
    snprintf(out, outsz, "%s:%u", p->host, p->fport);
    return 0;
}

/* Name the peers that do not answer: that is what an operator has to bring
 * back. A short status probe each, from the caller's thread. */
static void warn_no_quorum(struct cluster *c, unsigned timeout_ms)
{
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
    log_warn("cluster: no quorum: change not committed within %u ms (role %s, leader %016" PRIx64
             "); unreachable peers: %s",
             timeout_ms, cluster_role_name(st.state), st.leader_id, off ? peers : "none (a vote or a leader change is under way)");
}

int cluster_submit(struct cluster *c, const struct fsm_cmd *cmd, unsigned timeout_ms,
                   struct cluster_reply *reply)
{
    void *buf;
    size_t len;
    if (fsm_cmd_encode(cmd, &buf, &len) < 0)
        return -EINVAL;
    int rc = outbox_submit(c->outbox, buf, len, timeout_ms, reply);
    if (rc == -EROFS)
        warn_no_quorum(c, timeout_ms);
    return rc;
}

int cluster_send(struct cluster *c, const struct fsm_cmd *cmd, unsigned timeout_ms,
                 cluster_done_fn done, void *arg)
{
    void *buf;
    size_t len;
    if (fsm_cmd_encode(cmd, &buf, &len) < 0)
        return -EINVAL;
    return outbox_send(c->outbox, buf, len, timeout_ms, done, arg);
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

int cluster_deliver(struct cluster *c, struct cluster_item *items, size_t n, unsigned timeout_ms)
{
    pthread_mutex_lock(&c->mu);
    bool stopping = c->stopping;
    pthread_mutex_unlock(&c->mu);
    if (stopping)
        return -ESHUTDOWN;
    struct cluster_status st;
    cluster_get_status(c, &st);
    if (st.state == CLUSTER_LEADER)
        return submit_local_batch(c, items, n, timeout_ms);
    if (st.leader_id == 0 || st.leader_id == c->ns->self_id)
        return -ENOTCONN;
    char faddr[NSYNC_ADDR_MAX];
    if (leader_faddr(c, st.leader_id, faddr, sizeof faddr) < 0)
        return -ENOTCONN;
    int rc = cluster_peer_propose_batch(c->ns->client, faddr, items, n, timeout_ms);
    if (rc < 0)
        log_debug("cluster: forwarding %zu commands to leader %s failed: %s", n, faddr, strerror(-rc));
    return rc;
}

int cluster_submit_batch_encoded(struct cluster *c, struct cluster_item *items, size_t n,
                                 unsigned timeout_ms)
{
    struct cluster_status st;
    cluster_get_status(c, &st);
    if (st.state != CLUSTER_LEADER)
        return -ENOTCONN;
    return submit_local_batch(c, items, n, timeout_ms);
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

void cluster_hold_locks(struct cluster *c, int delta)
{
    atomic_fetch_add(&c->held_locks, delta);
}

/* Keeps this node's lock leases alive while it holds any. A thread of its
 * own because a follower's RENEW is a blocking forward to the leader. */
static void *renew_main(void *arg)
{
    struct cluster *c = arg;
    pthread_mutex_lock(&c->renew_mu);
    for (;;) {
        struct timespec dl;
        abs_deadline(&dl, RENEW_EVERY_MS);
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

int cluster_add_node(struct cluster *c, uint64_t id, const char *caddr, const char *faddr,
                     unsigned timeout_ms)
{
    uint64_t deadline = nsync_mono_ms() + timeout_ms;
    int rc = membership_local(c, REQ_ADD, id, caddr, timeout_ms);
    if (rc < 0)
        return rc;
    uint64_t now = nsync_mono_ms();
    struct fsm_cmd cmd = {.op = FSM_OP_JOIN, .node = id, .caddr = caddr, .faddr = faddr};
    struct cluster_reply rep;
    rc = cluster_submit(c, &cmd, now < deadline ? (unsigned)(deadline - now) : 1, &rep);
    if (rc == 0)
        log_info("cluster: node %016" PRIx64 " (%s, files at %s) joined", id, caddr, faddr);
    return rc;
}

int cluster_remove_node(struct cluster *c, uint64_t id, unsigned timeout_ms)
{
    /* Configuration first, member table second: a new leader re-records
     * every voter missing from the table, so the other order could bring a
     * half-gone node back as a member that every entry waits for. */
    uint64_t deadline = nsync_mono_ms() + timeout_ms;
    int rc = membership_local(c, REQ_REMOVE, id, NULL, timeout_ms);
    if (rc < 0)
        return rc;
    uint64_t now = nsync_mono_ms();
    struct fsm_cmd cmd = {.op = FSM_OP_LEAVE, .node = id};
    struct cluster_reply rep;
    rc = cluster_submit(c, &cmd, now < deadline ? (unsigned)(deadline - now) : 1, &rep);
    if (rc == 0)
        log_info("cluster: node %016" PRIx64 " left", id);
    return rc;
}

int cluster_leave(struct cluster *c, unsigned timeout_ms)
{
    uint64_t deadline = nsync_mono_ms() + timeout_ms;
    uint64_t seen = 0;
    struct cluster_status st;
    cluster_get_status(c, &st);
    if (st.voters <= 1 && st.state == CLUSTER_LEADER)
        return -EALREADY;
    /* A leader cannot vote on its own removal gracefully: hand over first,
     * so the remaining nodes elect nobody and lose no time. */
    while (st.state == CLUSTER_LEADER && nsync_mono_ms() < deadline) {
        if (membership_local(c, REQ_TRANSFER, 0, NULL, 2000) < 0)
            break;
        cluster_wait_change(c, &seen, 100);
        cluster_get_status(c, &st);
    }
    int rc = -EROFS;
    unsigned backoff = 20;
    while (nsync_mono_ms() < deadline) {
        unsigned left = (unsigned)(deadline - nsync_mono_ms());
        cluster_get_status(c, &st);
        if (st.state == CLUSTER_LEADER) {
            rc = cluster_remove_node(c, c->ns->self_id, left);
        } else if (st.leader_id) {
            char faddr[NSYNC_ADDR_MAX];
            rc = leader_faddr(c, st.leader_id, faddr, sizeof faddr);
            if (rc == 0)
                rc = cluster_peer_membership(c->ns->client, faddr, false, c->ns->self_id, NULL, NULL, left);
        }
        if (rc == 0)
            return 0;
        cluster_wait_change(c, &seen, backoff);
        if (backoff < 500)
            backoff *= 2;
    }
    log_warn("cluster: could not leave cleanly (%s); the others keep counting on this node",
             strerror(-rc));
    return rc;
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
