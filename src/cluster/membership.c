/* Membership: raft configuration changes (add, remove, leadership
 * transfer) started on the loop thread, the member table in the FSM kept in
 * step with them, and this node's own clean leave. */
#include "cluster/cluster_int.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/peer.h"
#include "common/log.h"

/* The member table lives in the FSM (raft addresses carry no file-server
 * port); a new leader records every configured node that is missing. */
void membership_propose_missing(struct cluster *c)
{
    assert(on_loop_thread(c));
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
        addr_format(caddr, sizeof caddr, p->host, p->cport);
        addr_format(faddr, sizeof faddr, p->host, p->fport);
        struct fsm_cmd cmd = {.op = FSM_OP_JOIN, .node = p->id, .caddr = caddr, .faddr = faddr};
        if (loop_apply_unattended(c, &cmd) < 0) {
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
        if (loop_apply_unattended(c, &cmd) < 0) {
            c->joins_proposed_term = 0;
            return;
        }
        log_info("cluster: dropping member %016" PRIx64 ", no longer in the configuration", id);
    }
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
    loop_req_complete(r, map_raft_err(status));
}

static void add_cb(struct raft_change *ch, int status)
{
    struct submit_req *r = ch->data;
    if (status != 0) {
        loop_req_complete(r, map_raft_err(status));
        return;
    }
    int rv = raft_assign(&r->c->raft, &r->change, r->node_id, RAFT_VOTER, assign_cb);
    if (rv == RAFT_BADROLE)
        rv = 0, loop_req_complete(r, 0);
    else if (rv != 0)
        loop_req_complete(r, map_raft_err(rv));
}

static void remove_cb(struct raft_change *ch, int status)
{
    struct submit_req *r = ch->data;
    loop_req_complete(r, map_raft_err(status));
}

static void transfer_cb(struct raft_transfer *t)
{
    loop_req_complete(t->data, 0);
}

/* Configuration changes and leadership transfer, on the loop thread. */
int membership_start(struct cluster *c, struct submit_req *r)
{
    assert(on_loop_thread(c));
    int rv;
    r->change.data = r;
    r->transfer.data = r;
    switch (r->kind) {
    case REQ_ADD:
        rv = raft_add(&c->raft, &r->change, r->node_id, r->caddr, add_cb);
        if (rv == RAFT_DUPLICATEID) { /* already there (a retry): make sure it votes */
            rv = raft_assign(&c->raft, &r->change, r->node_id, RAFT_VOTER, assign_cb);
            if (rv == RAFT_BADROLE) {
                loop_req_complete(r, 0);
                return 0;
            }
        }
        return map_raft_err(rv);
    case REQ_REMOVE:
        rv = raft_remove(&c->raft, &r->change, r->node_id, remove_cb);
        if (rv == RAFT_BADID) { /* not in the configuration any more */
            loop_req_complete(r, 0);
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
    return loop_queue_and_wait(c, r, timeout_ms, NULL);
}

int cluster_add_node(struct cluster *c, uint64_t id, const char *caddr, const char *faddr,
                     unsigned timeout_ms)
{
    assert(!on_loop_thread(c));
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
    assert(!on_loop_thread(c));
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

bool cluster_is_leaving(struct cluster *c)
{
    return atomic_load(&c->leaving);
}

int cluster_leave(struct cluster *c, unsigned timeout_ms)
{
    assert(!on_loop_thread(c));
    uint64_t deadline = nsync_mono_ms() + timeout_ms;
    uint64_t seen = 0;
    struct cluster_status st;
    cluster_get_status(c, &st);
    if (st.voters <= 1 && st.state == CLUSTER_LEADER)
        return -EALREADY;
    atomic_store(&c->leaving, true);
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
    bool told = false;
    while (nsync_mono_ms() < deadline) {
        unsigned left = (unsigned)(deadline - nsync_mono_ms());
        /* short attempts: between them, the checks below may end the wait */
        unsigned attempt = left < 2000 ? left : 2000;
        cluster_get_status(c, &st);
        if (st.state == CLUSTER_LEADER) {
            rc = cluster_remove_node(c, c->ns->self_id, attempt);
        } else if (st.leader_id) {
            char faddr[NSYNC_ADDR_MAX];
            rc = submit_leader_faddr(c, st.leader_id, faddr, sizeof faddr);
            if (rc == 0)
                rc = cluster_peer_membership(c->ns->client, faddr, false, c->ns->self_id, NULL, NULL,
                                             attempt);
        }
        if (rc == 0)
            return 0;
        /* When every other member is gone or leaving too (all nodes shut
         * down at once), leadership only bounces between leavers, each
         * handing it on: nobody will remove us, and waiting only delays
         * the unmount. Nor without a quorum. Either way this node stays a
         * member and restarts as one, which is what a whole-cluster
         * shutdown wants. */
        bool stuck = rc != 0 && (st.leader_id == 0 || rc == -ENOTCONN) &&
                     nsync_mono_ms() + timeout_ms >= deadline + 500;
        if (cluster_writable(c) < 0 || (stuck && members_staying(c) == 0)) {
            log_warn("cluster: cannot leave: %s; this node stays a member and keeps its state "
                     "for the next mount",
                     cluster_writable(c) < 0 ? "no quorum" : "every other member is gone or leaving too");
            return -EROFS;
        }
        if (!told && nsync_mono_ms() + timeout_ms >= deadline + 1000) {
            told = true;
            if (st.leader_id)
                log_info("cluster: leaving: waiting for leader %016" PRIx64 " to remove this node "
                         "(%s; up to %.0f s more)", st.leader_id, strerror(-rc), left / 1000.0);
            else
                log_info("cluster: leaving: waiting for a leader to remove this node (none known; "
                         "up to %.0f s more, less once the quorum is known lost)", left / 1000.0);
        }
        cluster_wait_change(c, &seen, backoff);
        if (backoff < 500)
            backoff *= 2;
    }
    log_warn("cluster: could not leave cleanly (%s); the others keep counting on this node",
             strerror(-rc));
    return rc;
}
