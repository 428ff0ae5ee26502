/* The cluster: canonical/raft on its own libuv loop thread, the FSM wired
 * into it, and the one blocking call through which every other thread
 * proposes a change. Only the loop thread touches struct raft. */
#ifndef NSYNC_CLUSTER_H
#define NSYNC_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster/fsm.h"

struct nsync;
struct cluster;

/* What a committed command left behind, read from the leader's FSM right
 * after it applied the command. */
struct cluster_reply {
    int status;             /* fsm_apply's result: 0, -EBUSY, -ENOENT, -EINVAL */
    uint64_t version;       /* fsm version of the command */
    uint64_t lock_holder;   /* LOCK: holder of the path's lock after apply (0: none) */
    uint64_t path_version;  /* LOCK/ANNOUNCE: version of path's catalog entry (0: none) */
};

/* Create the raft instance (data under ns->raft_dir), bootstrap it with the
 * configuration from ns->cfg.peers if its log is empty, and start the loop
 * thread. ns->fsm and ns->fsm_lock must exist. 0 or -errno (logged). */
int cluster_start(struct nsync *ns, struct cluster **out);

/* Stop the loop thread and close raft. Any thread but the loop thread. */
void cluster_stop(struct cluster *c);

/* Propose cmd and wait until it is committed and applied by the leader, or
 * timeout_ms passes. Every command of this node goes through one FIFO (the
 * outbox, see outbox.h), so commands commit in the order they were
 * submitted or sent, whichever thread sent them. now_ms is stamped by the
 * leader. Any thread but the loop thread and the outbox's own thread.
 * Returns 0 with *reply filled (reply->status may still be negative), or
 *   -EROFS     no leader / no quorum within timeout_ms
 *   -EINVAL    cmd does not encode
 *   -ESHUTDOWN the cluster is stopping */
int cluster_submit(struct cluster *c, const struct fsm_cmd *cmd, unsigned timeout_ms,
                   struct cluster_reply *reply);

/* The asynchronous form: queue cmd behind everything this node sent before
 * and return at once (0, -EINVAL, -ENOMEM or -ESHUTDOWN). done(arg, rc,
 * reply) is called exactly once, on the outbox thread, when the command was
 * applied (rc 0, reply->status its verdict) or given up (-EROFS after
 * timeout_ms, 0 = keep trying until the cluster stops; -ESHUTDOWN). done
 * must not block or submit. With timeout_ms 0, an ANNOUNCE without unlock
 * that finds an older one of the same path and flags still queued takes its
 * place (outbox_tag): the older's done then comes just before this one's,
 * with the same rc and reply status 0, version 0. */
typedef void (*cluster_done_fn)(void *arg, int rc, const struct cluster_reply *reply);
int cluster_send(struct cluster *c, const struct fsm_cmd *cmd, unsigned timeout_ms,
                 cluster_done_fn done, void *arg);

/* cluster_send for a command that may wait up to 2 ms for company (a new
 * file's LOCK: its close usually follows at once and both go in one
 * commit), and may be taken back with cluster_cancel(*token) until it is
 * sent. See outbox_send_lazy for the token's lifetime. */
int cluster_send_lazy(struct cluster *c, const struct fsm_cmd *cmd, cluster_done_fn done, void *arg,
                      void **token);
/* 0: taken back, done will not be called; -EALREADY: sent or answered. */
int cluster_cancel(struct cluster *c, void *token);

/* Age of the oldest command this node has queued and not yet had answered
 * (0: none): how far the cluster is behind this node. Any thread. */
unsigned cluster_backlog_ms(struct cluster *c);

/* Wait until everything sent so far has been applied or given up, at most
 * timeout_ms. 0, or -ETIMEDOUT. */
int cluster_drain(struct cluster *c, unsigned timeout_ms);

/* Wait until everything this node sent before the call has been answered
 * (committed and applied by the leader, or given up), at most timeout_ms:
 * 0, -ETIMEDOUT, or -EROFS once the node knows it has no quorum. Any thread
 * but the loop and outbox threads. */
int cluster_barrier(struct cluster *c, unsigned timeout_ms);

/* Wait until the local catalog has applied version `version` (a reply's),
 * at most timeout_ms: 0 or -ETIMEDOUT. Any thread but the loop thread. */
int cluster_wait_applied(struct cluster *c, uint64_t version, unsigned timeout_ms);

/* A read barrier: commit a harmless command of this node's (a RENEW) and wait
 * until the local catalog applied it, so that it holds everything the
 * leader had committed before the call. Right after a restart the catalog
 * is being rebuilt from the node's own log, whose commit index lags the
 * leader's: until this returns 0 it may show states long gone (a file live
 * again, reported held by this node's earlier life). 0, or what
 * cluster_submit returns, or -ETIMEDOUT. Any thread but the loop and outbox
 * threads. */
int cluster_sync_point(struct cluster *c, unsigned timeout_ms);

/* One encoded command of a batch and what became of it: rc 0 applied
 * (reply valid), -EINVAL malformed, anything else not applied as far as we
 * know (-ENOTCONN no leader, -EROFS timed out, -ESHUTDOWN). */
struct cluster_item {
    const void *buf;     /* borrowed */
    size_t len;
    int rc;
    struct cluster_reply reply;
};

/* Leader side of POST /v1/propose-batch: commit items in order here. 0 with
 * each item's rc; -ENOTCONN if this node is not the leader. */
int cluster_submit_batch_encoded(struct cluster *c, struct cluster_item *items, size_t n,
                                 unsigned timeout_ms);

/* Leader side of POST /v1/propose: apply an encoded command here if this node
 * leads. Returns 0 with *reply, -ENOTCONN if this node is not the leader
 * (the caller answers so the follower retries), -EROFS on timeout, -EINVAL
 * malformed. The body is copied. */
int cluster_submit_encoded(struct cluster *c, const void *buf, size_t len, unsigned timeout_ms,
                           struct cluster_reply *reply);

/* Wait until the local FSM has applied something after *seen (a counter of
 * applies; start with 0), or timeout_ms passes. Updates *seen. Returns true
 * if something changed. Any thread. */
bool cluster_wait_change(struct cluster *c, uint64_t *seen, unsigned timeout_ms);
/* Wake every cluster_wait_change waiter (e.g. at shutdown). */
void cluster_kick(struct cluster *c);

/* This node's part in the cluster, in the cluster's own terms, so that callers
 * need not include raft.h. */
enum cluster_role {
    CLUSTER_UNAVAILABLE = 0, /* not started, stopping, or raft is not running */
    CLUSTER_FOLLOWER,
    CLUSTER_CANDIDATE,
    CLUSTER_LEADER,
};
/* "unavailable", "follower", "candidate", "leader". */
const char *cluster_role_name(enum cluster_role role);

/* Role as last published by the loop thread (cheap, any thread). */
struct cluster_status {
    enum cluster_role state;
    uint64_t leader_id;      /* 0: unknown */
    uint64_t term;
    uint64_t last_applied;   /* raft index */
    uint64_t commit_index;
    unsigned voters;         /* voters in the raft configuration */
};
void cluster_get_status(struct cluster *c, struct cluster_status *st);

/* One member as this node sees it, for /v1/status and /metrics. The other
 * members are asked for their status every CLUSTER_MEMBER_PROBE_MS (a
 * thread of the cluster's); what they answered last is kept here. */
#define CLUSTER_MEMBER_PROBE_MS 2000
#define CLUSTER_MEMBERS_MAX 64
struct cluster_member_view {
    uint64_t id;
    char caddr[FSM_ADDR_MAX];     /* raft address */
    char faddr[FSM_ADDR_MAX];     /* file-server address */
    bool self;
    bool reachable;               /* answered the last probe (self: always) */
    uint64_t last_contact_ms;     /* wall clock of its last answer; 0: never */
    uint64_t applied;             /* raft index it had applied then */
    uint64_t behind;              /* raft entries it lacks: the highest index known here - applied */
};
/* The members (from the catalog; from --cluster before the first commit),
 * at most max of them, into out. Returns how many. Any thread. */
size_t cluster_get_members(struct cluster *c, struct cluster_member_view *out, size_t max);

/* Leader side of POST /v1/join: add node id (raft address caddr) as a voter
 * and record it as a member (JOIN), which makes every entry pending for it:
 * the newcomer's fetch worker then brings the whole tree. Blocks up to
 * timeout_ms. 0; -ENOTCONN not the leader; -EBUSY another configuration
 * change is under way (retry); -EROFS timed out. Any thread but the loop. */
int cluster_add_node(struct cluster *c, uint64_t id, const char *caddr, const char *faddr,
                     unsigned timeout_ms);

/* Leader side of POST /v1/leave: remove the node from the raft
 * configuration, then LEAVE (nobody waits for it any more, its locks go).
 * Same returns. */
int cluster_remove_node(struct cluster *c, uint64_t id, unsigned timeout_ms);

/* This node leaves the cluster cleanly: hands leadership over if it leads,
 * then has the leader remove it. 0 when removed; -EALREADY when it is the
 * only voter (nothing to leave: its state is kept); -EROFS no quorum in time.
 * Call before cluster_stop, after the FUSE loop ended. */
int cluster_leave(struct cluster *c, unsigned timeout_ms);

/* Whether cluster_leave is under way (shown in /v1/status, so that the
 * others know not to wait for this node). Any thread. */
bool cluster_is_leaving(struct cluster *c);

/* After a successful leave and cluster_stop: mark the node as having left
 * (in data_fd, the .nsyncfs dir) and delete the raft log and snapshots, so
 * the next mount joins as a newcomer and never bootstraps. 0 or -errno. */
int cluster_wipe_state(const char *raft_dir, int data_fd);

/* True if this start joined a running cluster (a new node, or one that had
 * left) instead of restarting a member. */
bool cluster_joined(const struct cluster *c);

/* May this node try a change? 0, or -EROFS once it knows it has no quorum:
 * no leader, and a probe reached no majority of the members, or no leader
 * for 3 s (a leader cut off from the majority steps down after its election
 * timeout, 1 s). Cheap (atomics), any thread. */
int cluster_writable(struct cluster *c);
/* Wall-clock ms since which this node has had no quorum, 0 while it has. */
uint64_t cluster_no_quorum_since(struct cluster *c);
/* Wall-clock ms since which this node has known no leader, 0 while it knows
 * one (the quorum is in doubt from then on; changes fail once
 * cluster_writable says so). */
uint64_t cluster_leaderless_since(struct cluster *c);

/* Tell the cluster whether this node holds cluster locks; while it does, a
 * RENEW is proposed about once a second. Any thread. */
void cluster_hold_locks(struct cluster *c, int delta);

#endif
