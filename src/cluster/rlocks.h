/* The record locks (fcntl, flock) each node holds, as part of the replicated
 * state: byte ranges per path, per node, under the node's lease. Conflicts
 * between nodes are decided here; conflicts between the processes of one
 * node are the node's own business (src/fs/rlock.c). Pure: no clock, no I/O.
 * Not thread safe: the FSM's caller serializes. */
#ifndef NSYNC_RLOCKS_H
#define NSYNC_RLOCKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum rlock_type { RLOCK_READ = 1, RLOCK_WRITE = 2 };
/* fcntl's and flock's locks never conflict with each other on Linux. */
enum rlock_space { RLOCK_POSIX = 0, RLOCK_FLOCK = 1 };
#define RLOCK_EOF UINT64_MAX /* end of a range that runs to the end of the file */

/* One range of one node. [start, end), end > start. */
struct rlock {
    const char *path;        /* owned by the table */
    uint64_t node;
    uint64_t start, end;
    uint64_t expires_ms;     /* live up to and including it */
    uint32_t pid;            /* the process that took it, on its node (for F_GETLK) */
    uint8_t space, type;
};

/* A node refused because another held a conflicting range: while it is
 * fresh, another node's new acquisition (of a range it holds none of) that
 * would conflict with the asker's request is refused too, so that a node
 * that releases and re-locks at once (a database's next transaction) cannot
 * starve another that polls (F_SETLK and a sleep, as SQLite does). Only a
 * refusal by a held range makes an ask, so two asks never hold each other
 * up, and an ask lasts RLOCK_ASK_MS from the first refusal. */
struct rlock_ask {
    const char *path;        /* owned by the table */
    uint64_t node;
    uint64_t start, end;
    uint64_t until_ms;       /* fresh up to and including it */
    uint8_t space, type;
};
#define RLOCK_ASK_MS 250

struct rlocks;

struct rlocks *rlocks_new(void);
void rlocks_free(struct rlocks *t);

/* Node takes [start, end) of path as type: granted (0) if no other node holds
 * a live overlapping range where either is a write lock, and (when node holds
 * none of [start, end)) no fresh ask of another node conflicts;
 * node's own ranges there are replaced (a downgrade or upgrade, as for one
 * owner in POSIX), and its ask goes. -EBUSY: refused; if by another node's
 * range, node's ask is recorded (a first one lasts RLOCK_ASK_MS, a repeat
 * keeps its end). -ENOMEM: nothing changed. Ranges whose lease ran out
 * (expires_ms < now), and stale asks, are dropped on the way. */
int rlocks_set(struct rlocks *t, const char *path, uint64_t node, uint8_t space, uint8_t type,
               uint64_t start, uint64_t end, uint32_t pid, uint64_t now, uint64_t expires_ms);
/* Node gives up [start, end) of path in space (a range it does not hold is
 * fine). -ENOMEM only when a range must be split and cannot be. */
int rlocks_clear(struct rlocks *t, const char *path, uint64_t node, uint8_t space, uint64_t start,
                 uint64_t end);
/* Every range of node: a new lease end. */
void rlocks_renew(struct rlocks *t, uint64_t node, uint64_t expires_ms);
/* Every range of node goes (it left the cluster). */
void rlocks_drop_node(struct rlocks *t, uint64_t node);
/* A live range of another node than `node` that conflicts with type over
 * [start, end) in space: 1 and *out (pointers valid until the next change),
 * else 0. */
int rlocks_test(const struct rlocks *t, const char *path, uint64_t node, uint8_t space, uint8_t type,
                uint64_t start, uint64_t end, uint64_t now, struct rlock *out);
/* Number of ranges, and each of them, sorted by path, then node, space,
 * start (the snapshot's canonical order). */
size_t rlocks_count(const struct rlocks *t);
const struct rlock *rlocks_at(const struct rlocks *t, size_t i);
size_t rlocks_of(const struct rlocks *t, uint64_t node);
/* Asks, in the canonical order (path, node, space), and their restore
 * (same rules as rlocks_restore_add). */
size_t rlocks_ask_count(const struct rlocks *t);
const struct rlock_ask *rlocks_ask_at(const struct rlocks *t, size_t i);
int rlocks_restore_ask(struct rlocks *t, const struct rlock_ask *a);
/* Restore: append r (path copied). Must come in rlocks_at's order and not
 * overlap the previous one of the same node, path and space: -EINVAL else,
 * -ENOMEM. */
int rlocks_restore_add(struct rlocks *t, const struct rlock *r);
/* A range as the FSM accepts it: start < end, type and space known. */
bool rlocks_valid(uint8_t space, uint8_t type, uint64_t start, uint64_t end);

#endif
