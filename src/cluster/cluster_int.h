/* Private to src/cluster/: struct cluster, shared by the files that make up
 * the module (cluster.c start/stop, loop.c, submit.c, membership.c,
 * bootstrap.c, lease.c), and the functions they call in one another. */
#ifndef NSYNC_CLUSTER_INT_H
#define NSYNC_CLUSTER_INT_H

#include <limits.h>
#include <pthread.h>
#include <raft.h>
#include <raft/uv.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>
#include <uv.h>

#include "cluster/cluster.h"
#include "cluster/glue.h"
#include "nsync.h"

#define STATUS_TICK_MS 50
#define RENEW_EVERY_MS 1000
#define NSYNC_LEFT_MARK "left" /* in the data dir: this node left; rejoin, never bootstrap */
/* Without a leader, a node knows it has no quorum once a probe of the other
 * members reaches no majority (QUORUM_PROBE_MS each, from the lease thread
 * every QUORUM_PROBE_EVERY_MS), or once it has been leaderless longer than
 * any election with a majority takes (a candidate may wait up to one more
 * election timeout, 1 s, for the others' timers). */
#define QUORUM_PROBE_MS 300
#define QUORUM_PROBE_EVERY_MS 100
#define QUORUM_LEADERLESS_MAX_MS 3000
#define QUORUM_STARTUP_GRACE_MS 2000 /* the first election or join */
#define QUORUM_WARN_EVERY_MS 30000

struct outbox;

enum req_kind { REQ_PROPOSE, REQ_ADD, REQ_REMOVE, REQ_TRANSFER };

/* One request from another thread to the loop thread. */
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
    pthread_t thread;       /* the loop thread: the only one that touches raft */
    bool thread_started;
    struct raft raft;
    struct raft_io io;
    struct raft_uv_transport transport;
    struct glue glue;       /* the raft_fsm */
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

    /* quorum.c: when the leader went (monotonic ms, 0 while one is known;
     * written by the loop thread), the same in wall-clock ms for the status. */
    _Atomic uint64_t leaderless_since_ms;
    _Atomic uint64_t leaderless_wall_ms;
    uint64_t started_ms;
    atomic_bool had_leader;
    atomic_bool readonly_logged; /* the loss was logged: log the heal too */
    _Atomic uint64_t last_warn_ms;
    _Atomic uint64_t probe_lost_spell; /* leaderless_since_ms of the spell a probe found lost */

    /* members.c: what each other member answered last (members_mu). */
    pthread_t members_thread;
    bool members_started;
    pthread_mutex_t members_mu;
    pthread_cond_t members_cv;
    struct member_seen {
        uint64_t id;
        bool reachable;
        bool leaving;            /* it said it is leaving the cluster */
        uint64_t last_contact_ms, applied;
    } seen[CLUSTER_MEMBERS_MAX];
    atomic_bool leaving;         /* cluster_leave is under way */
    size_t n_seen;

    atomic_int held_locks;
    pthread_t renew_thread;
    bool renew_started;
    pthread_mutex_t renew_mu;
    pthread_cond_t renew_cv;
};

static inline void abs_deadline(struct timespec *ts, unsigned ms)
{
    nsync_deadline(ts, (uint64_t)ms * 1000u);
}

/* For asserts: the loop thread is the only one that touches c->raft.
 * c->thread is what pthread_create stored (glibc stores it before the
 * thread runs, so the loop thread itself sees it); 0 before the start. */
static inline bool on_loop_thread(const struct cluster *c)
{
    return pthread_equal(pthread_self(), c->thread);
}

/* loop.c: the loop thread and the queue where other threads meet it. */
void *loop_main(void *arg);
void loop_async_cb(uv_async_t *a);
void loop_timer_cb(uv_timer_t *t);
/* Answer r (loop thread); frees it if its caller gave up. */
void loop_req_complete(struct submit_req *r, int rc);
/* Propose a command nobody waits for (loop thread, leader). 0, or -1 if
 * raft refused it: the caller retries on a later tick. */
int loop_apply_unattended(struct cluster *c, const struct fsm_cmd *cmd);
/* Hand r to the loop thread and wait for it (takes ownership of r). Any
 * thread but the loop thread. */
int loop_queue_and_wait(struct cluster *c, struct submit_req *r, unsigned timeout_ms,
                        struct cluster_reply *reply);
/* Queue every item to the loop thread at once (one wake-up, consecutive
 * log entries) and wait for all of them until timeout_ms. 0 with each
 * item's rc (-EROFS for those not done in time: abandoned to the loop
 * thread), -ENOMEM, or -ESHUTDOWN. Any thread but the loop thread. */
int loop_submit_local_batch(struct cluster *c, struct cluster_item *items, size_t n,
                            unsigned timeout_ms);

/* membership.c */
/* Start a configuration change or leadership transfer (loop thread). */
int membership_start(struct cluster *c, struct submit_req *r);
/* A new leader records the configured members missing from the FSM. */
void membership_propose_missing(struct cluster *c);

/* submit.c */
/* One attempt to have items committed, in order, by the current leader:
 * straight to raft on the leader, else one POST /v1/propose-batch. 0 when a
 * leader answered (each item's rc says what happened to it; items after the
 * first not applied are not applied either), or -ENOTCONN (no leader known)
 * or a transport error for the whole batch. Outbox thread only. */
int cluster_deliver(struct cluster *c, struct cluster_item *items, size_t n, unsigned timeout_ms);
/* The file-server address of node id: from the member table, else from
 * --cluster. 0 or -ENOENT. */
int submit_leader_faddr(struct cluster *c, uint64_t id, char *out, size_t outsz);

/* bootstrap.c */
/* Before raft_start: does this node join a running cluster (*joining), or
 * bootstrap from --cluster (idempotent)? 0, or -EIO (logged). */
int bootstrap_decide(struct cluster *c, bool *joining);
/* After the threads run: join through the leader, then clear the left
 * mark. 0 or -EHOSTUNREACH. */
int bootstrap_join(struct cluster *c);

/* quorum.c */
void quorum_init(struct cluster *c);
/* The status the loop thread just published (loop thread). */
void quorum_note(struct cluster *c, const struct cluster_status *st);
/* While leaderless: probe the other members (blocks up to QUORUM_PROBE_MS
 * each) and decide whether the quorum is lost; warn (every 30 s) naming the
 * ones that do not answer. Lease thread. */
void quorum_probe(struct cluster *c);

/* members.c: the thread that probes the other members for the status. */
void members_start(struct cluster *c);
/* Wake and join it; c->stopping must be set. */
void members_stop(struct cluster *c);
/* Probe the other members now (blocks up to 500 ms each): how many answer
 * and are not leaving themselves. Any thread but the loop thread. */
size_t members_staying(struct cluster *c);

/* lease.c: the thread that renews this node's lock leases. */
void lease_start(struct cluster *c);
/* Wake and join it; c->stopping must be set. */
void lease_stop(struct cluster *c);

/* The member list (id and addresses only): the catalog's, else --cluster's
 * (before the first commit, or on a node that has not joined yet). At most
 * max into out; returns how many. Any thread. (members.c) */
size_t members_list(struct cluster *c, struct cluster_member_view *out, size_t max);

#endif
