/* The outbox: the one FIFO through which this node proposes commands. A
 * single thread sends what has queued up as one batch (group commit) and
 * completes each command in order, so commands from any thread commit in
 * the order they were queued and a writer need not wait for a commit. */
#ifndef NSYNC_OUTBOX_H
#define NSYNC_OUTBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster/cluster.h"

struct outbox;

/* How the outbox reaches the cluster: cluster.c wires the real one, a test
 * its own. Both functions are called on the outbox thread only. */
struct outbox_io {
    void *data;
    /* One attempt to have items committed, in order (cluster_deliver): 0
     * with each item's rc set (-EINVAL: answered as malformed; any other
     * error: it and the items after it go again), -ESHUTDOWN (answer
     * everything -ESHUTDOWN and stop), or another error for the whole batch
     * (retried after wait_change). */
    int (*deliver)(void *data, struct cluster_item *items, size_t n, unsigned timeout_ms);
    /* Back-off before a retry: return early if something changed since
     * *seen (cluster_wait_change). */
    bool (*wait_change)(void *data, uint64_t *seen, unsigned timeout_ms);
    /* Optional: 0, or -EROFS while the node knows it has no quorum; then
     * every item with a deadline is answered -EROFS at once (its caller
     * waits for it), and items without one stay queued for the heal. */
    int (*writable)(void *data);
};

/* Start the sender thread; it delivers through io (copied), each attempt
 * bounded by attempt_ms (or an item's nearer deadline). 0 or -ENOMEM /
 * -EAGAIN. Called by cluster_start. */
int outbox_start(const struct outbox_io *io, unsigned attempt_ms, struct outbox **out);

/* Stop: what is still queued completes with -ESHUTDOWN; joins the thread.
 * Nothing may be sent afterwards. */
void outbox_stop(struct outbox *o);

/* Queue an encoded command (buf is taken over: freed by the outbox, also on
 * error). timeout_ms 0 = no deadline. done is called once, on the outbox
 * thread, outside any lock. 0, or -ESHUTDOWN (done is not called). Any
 * thread. */
int outbox_send(struct outbox *o, void *buf, size_t len, unsigned timeout_ms, cluster_done_fn done,
                void *arg);

/* outbox_send with two more things: a lazy item lets the sender wait up to
 * 2 ms for more items to send with it (when nothing but lazy items is
 * queued), and *token (if not NULL) names it for outbox_cancel. The token
 * is valid until done is called; the caller must make sure done cannot run
 * to completion while it cancels (e.g. done takes a lock the canceller
 * holds). */
int outbox_send_lazy(struct outbox *o, void *buf, size_t len, bool lazy, cluster_done_fn done,
                     void *arg, void **token, unsigned timeout_ms);

/* What the outbox may know of a command, to merge two of them. */
struct outbox_tag {
    const char *key; /* the path it changes (copied), or NULL */
    uint32_t merge;  /* 0: never merged. Else its class: a command queued
                      * with a class replaces the last queued one with the
                      * same key if that has the same class, is not yet in
                      * a delivery, and no fence was queued after it. The
                      * new command then takes the old one's place in the
                      * queue (only the newer state of the path is sent),
                      * and the old one's done is called just before the
                      * new one's, with the same rc and an empty reply
                      * (never the new one's refusal). */
    bool fence;      /* no merge reaches back across it (a rename) */
};

/* outbox_send (no deadline) with a tag. */
int outbox_send_tagged(struct outbox *o, void *buf, size_t len, const struct outbox_tag *tag,
                       cluster_done_fn done, void *arg);

/* Take back an item not yet handed to a delivery: 0 (removed, done will
 * never be called) or -EALREADY (sent or answered: done will be called). */
int outbox_cancel(struct outbox *o, void *token);

/* Queue and wait for the outcome: 0 with *reply, or -EROFS / -EINVAL /
 * -ESHUTDOWN. Any thread but the outbox's. */
int outbox_submit(struct outbox *o, void *buf, size_t len, unsigned timeout_ms,
                  struct cluster_reply *reply);

/* outbox_submit with a tag (key and fence only: a waiter's command is never
 * merged, but other commands about its key do not merge across it). */
int outbox_submit_tagged(struct outbox *o, void *buf, size_t len, const struct outbox_tag *tag,
                         unsigned timeout_ms, struct cluster_reply *reply);

/* Wait until the queue is empty, at most timeout_ms: 0 or -ETIMEDOUT. */
int outbox_drain(struct outbox *o, unsigned timeout_ms);

/* Wait until every item queued before this call has been answered (applied
 * or given up), at most timeout_ms; items queued meanwhile are not waited
 * for. 0, -ETIMEDOUT, or -EROFS as soon as io.writable says so. Any thread
 * but the outbox's. */
int outbox_barrier(struct outbox *o, unsigned timeout_ms);

/* True on the outbox's own sender thread (for asserts). */
bool outbox_on_thread(const struct outbox *o);

/* How long the oldest queued command has been waiting (0: none). A cluster
 * that keeps up answers within a few milliseconds. Any thread. */
unsigned outbox_backlog_ms(struct outbox *o);

#endif
