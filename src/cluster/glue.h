/* The raft_fsm of the cluster: committed commands go to struct fsm under
 * the catalog's write lock; snapshots are fsm_snapshot / fsm_restore. It
 * knows nothing else of the cluster, so a test can run it under raft's fixture. */
#ifndef NSYNC_CLUSTER_GLUE_H
#define NSYNC_CLUSTER_GLUE_H

#include <pthread.h>
#include <raft.h>
#include <stddef.h>

struct fsm;

struct glue {
    struct raft_fsm iface;        /* what raft_init takes; iface.data is the glue */
    struct raft *raft;            /* borrowed: its snapshot-install timeout follows our size */
    struct fsm *fsm;              /* borrowed */
    pthread_rwlock_t *fsm_lock;   /* borrowed: held for writing while the FSM changes */
    /* Called after every apply and restore (on the thread raft calls us
     * on), so that waiters for a change wake up. May be NULL. */
    void (*applied)(void *data);
    void *data;
};

/* Fill g; nothing to free. raft may not be initialised yet (its address is
 * enough): raft_init(raft, io, &g->iface, ...) comes after. */
void glue_init(struct glue *g, struct raft *raft, struct fsm *fsm, pthread_rwlock_t *fsm_lock,
               void (*applied)(void *data), void *data);

/* How long the leader waits for a follower to install a snapshot of len
 * bytes. Set at start (len 0) and after each snapshot taken or restored.
 * The thread that owns raft. */
void glue_snapshot_timeout(struct glue *g, size_t len);

#endif
