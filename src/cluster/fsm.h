/* The replicated state machine: the catalog of every path, the cluster locks
 * and the member table, plus the binary encoding of the commands that change
 * them. Pure and deterministic: no clock, no I/O, no randomness. Not thread
 * safe by itself: the caller serializes (nsync.fsm_lock). */
#ifndef NSYNC_FSM_H
#define NSYNC_FSM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define FSM_HASH_LEN 16
#define FSM_ADDR_MAX 264
/* A file this small may travel inside its ANNOUNCE, so that replicas install
 * it from the catalog without a fetch. One page: raft keeps the entries since
 * its last snapshot (some thousands) in memory, so this bounds that too. */
#define FSM_INLINE_MAX 4096u
/* The catalog keeps inline bytes only while an entry is pending, and at most
 * this many in all; an announce beyond it keeps just the hash (and replicas
 * fetch the file). Deterministic: every node drops the same ones. */
#define FSM_INLINE_BUDGET (8u << 20)

enum fsm_kind {
    FSM_FILE = 1,
    FSM_DIR = 2,
    FSM_SYMLINK = 3,
    FSM_TOMBSTONE = 4, /* deleted (file, symlink, empty directory or a node below) */
    /* Nodes without bytes: the object is what replicates (a fifo's or a
     * socket's traffic stays on its node). Devices carry an rdev. */
    FSM_FIFO = 5,
    FSM_SOCKET = 6,
    FSM_CHRDEV = 7,
    FSM_BLKDEV = 8,
};
#define FSM_KIND_MAX FSM_BLKDEV

/* The kinds that carry extended attributes in the catalog (Linux keeps
 * user.* off symlinks and nodes). */
static inline bool fsm_kind_has_xattrs(uint8_t kind)
{
    return kind == FSM_FILE || kind == FSM_DIR;
}

static inline bool fsm_xattrs_equal(const void *a, uint32_t alen, const void *b, uint32_t blen)
{
    return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

/* A fifo, socket or device: made with mknod, never fetched or served. */
static inline bool fsm_kind_is_node(uint8_t kind)
{
    return kind >= FSM_FIFO && kind <= FSM_BLKDEV;
}

static inline bool fsm_kind_has_rdev(uint8_t kind)
{
    return kind == FSM_CHRDEV || kind == FSM_BLKDEV;
}

enum fsm_op {
    FSM_OP_ANNOUNCE = 1, /* path, node, meta, unlock */
    FSM_OP_RENAME = 2,   /* path -> path2 (whole subtree), node, unlock */
    FSM_OP_LOCK = 3,     /* path, node, now_ms, lease_ms */
    FSM_OP_RENEW = 4,    /* node, now_ms, lease_ms */
    FSM_OP_UNLOCK = 5,   /* path, node */
    FSM_OP_SYNCED = 6,   /* node, items[] */
    FSM_OP_JOIN = 7,     /* node, caddr, faddr */
    FSM_OP_LEAVE = 8,    /* node */
    FSM_OP_RLOCK = 9,    /* path, node, now_ms, lease_ms, range (rspace, rtype, rstart, rend, pid) */
    FSM_OP_RUNLOCK = 10, /* path, node, rspace, rstart, rend */
};

/* What a change says about the path. size/hash only for FSM_FILE, target only
 * for FSM_SYMLINK, rdev only for devices. */
struct fsm_meta {
    uint8_t kind;            /* enum fsm_kind */
    uint32_t mode;           /* permission bits (07777) */
    uint32_t uid, gid;
    uint32_t rdev;           /* FSM_CHRDEV, FSM_BLKDEV: st_rdev (Linux's dev_t; what mknod
                              * can make fits 32 bits: 12-bit major, 20-bit minor); else 0 */
    uint64_t size;
    int64_t mtime_ns;
    int64_t atime_ns;        /* as the writer's stat says (a user's utimensat survives) */
    uint8_t hash[FSM_HASH_LEN];
    const char *target;      /* symlink target, NUL-terminated; NULL otherwise */
    const void *data;        /* FSM_FILE: its `size` bytes (size <= FSM_INLINE_MAX), or NULL */
    /* FSM_FILE, FSM_DIR: the extended attributes (common/xattrs.h: the
     * canonical set, at most XATTRS_MAX bytes), part of this version as the
     * bytes are; NULL and 0 for none. */
    const void *xattrs;
    uint32_t xattrs_len;
};

struct fsm_synced_item {
    const char *path;
    uint64_t version;
};

/* A command. Pointers are borrowed: for encode they belong to the caller;
 * after fsm_cmd_decode they point into the decoded buffer or into storage
 * owned by the command (freed by fsm_cmd_release). */
struct fsm_cmd {
    uint8_t op;              /* enum fsm_op */
    uint64_t node;           /* the node the command is for (never 0) */
    uint64_t now_ms;         /* stamped by the leader (LOCK, RENEW, ANNOUNCE, RENAME) */
    uint32_t lease_ms;       /* LOCK, RENEW */
    bool unlock;             /* ANNOUNCE, RENAME: release path's (and path2's) lock of node */
    bool fresh;              /* ANNOUNCE, RENAME: made without the lock (an optimistic
                              * create): refused if path has a live entry of another node */
    bool keep;               /* ANNOUNCE without unlock: node takes path's lock (lease_ms)
                              * too, as a LOCK would: a new file's close that keeps its
                              * lock cached, in one command */
    bool held;               /* ANNOUNCE: made under node's lock on path: refused (-EBUSY)
                              * if node no longer holds it and the entry is another node's
                              * (the lease lapsed and someone else changed the path) */
    bool parents;            /* ANNOUNCE, RENAME: the mtimes of path's (and path2's) parent
                              * directories after the change follow, as the node saw them */
    int64_t parent_mtime_ns; /* path's parent */
    int64_t parent2_mtime_ns;/* RENAME: path2's parent */
    const char *path;        /* ANNOUNCE, RENAME (source), LOCK, UNLOCK */
    const char *path2;       /* RENAME target */
    struct fsm_meta meta;    /* ANNOUNCE */
    const struct fsm_synced_item *items; /* SYNCED */
    uint32_t n_items;
    /* RLOCK, RUNLOCK: a record-lock range (cluster/rlocks.h): [rstart, rend) */
    uint8_t rspace, rtype;   /* enum rlock_space, enum rlock_type (RLOCK only) */
    uint64_t rstart, rend;
    uint32_t pid;            /* RLOCK: the locking process, on node */
    const char *caddr;       /* JOIN: raft address "host:port" */
    const char *faddr;       /* JOIN: file server address "host:port" */
    void *owned_;            /* decoder's allocation; do not touch */
};

/* Encode: on success *buf is malloc'd (caller owns, free() it) and 0 is
 * returned; -EINVAL if a field is invalid (bad path per path_check, op
 * unknown, node 0, missing string). */
int fsm_cmd_encode(const struct fsm_cmd *cmd, void **buf, size_t *len);

/* Decode and validate buf (not modified, must outlive cmd: the strings point
 * into it). 0, or -EINVAL for anything malformed (truncated, bad op, bad path,
 * unterminated string, trailing bytes). Call fsm_cmd_release afterwards,
 * also after an error. */
int fsm_cmd_decode(const void *buf, size_t len, struct fsm_cmd *cmd);
void fsm_cmd_release(struct fsm_cmd *cmd);

/* A catalog entry as readers see it (valid until the next apply/restore). */
/* Fields ordered so that none pads: the record costs its path plus ~120
 * bytes. */
struct fsm_entry {
    const char *path;
    uint64_t version;        /* fsm version of the command that made it */
    uint64_t origin;         /* node that made the change */
    uint32_t mode, uid, gid;
    uint32_t rdev;           /* devices: as fsm_meta.rdev; else 0 */
    uint64_t size;
    int64_t mtime_ns;
    int64_t atime_ns;        /* entries from before atimes travelled: their mtime */
    uint8_t hash[FSM_HASH_LEN];
    const char *target;      /* symlink target or NULL */
    const char *renamed_from;/* set by RENAME while pending: where the bytes were; else NULL */
    const void *data;        /* the file's `size` bytes if its ANNOUNCE carried them and
                              * the budget allowed, while pending; else NULL */
    const void *xattrs;      /* FSM_FILE, FSM_DIR: as fsm_meta.xattrs (kept settled too) */
    const uint64_t *synced;  /* nodes that have this version (meaningful while pending) */
    uint32_t n_synced;
    uint16_t xattrs_len;     /* <= XATTRS_MAX (16 KiB): fits the padding the record had */
    uint8_t kind;            /* enum fsm_kind */
    bool pending;            /* some member lacks it */
};

struct fsm_member {
    uint64_t id;
    char caddr[FSM_ADDR_MAX];
    char faddr[FSM_ADDR_MAX];
};

struct fsm;

/* A new empty state (version 0, no members). NULL on ENOMEM. */
struct fsm *fsm_new(void);
void fsm_free(struct fsm *f);

/* Apply one encoded command. Each valid command increments the version
 * counter by one (also a refused LOCK), and the changes it makes carry that
 * version. Returns:
 *   0        applied
 *   -EINVAL  malformed (state and version untouched)
 *   -EBUSY   LOCK refused, or ANNOUNCE/RENAME on a path whose live lock is
 *            another node's (nothing changed but the version)
 *   -EEXIST  fresh ANNOUNCE/RENAME whose path has a live (not tombstone)
 *            entry made by another node (nothing changed but the version)
 *   -ENOENT  RENAME of a path the catalog does not have (nothing changed)
 *   -ENOMEM
 * Semantics:
 *   ANNOUNCE  sets the entry (replacing any), synced = {node}, pending.
 *             A FILE's inline data is kept if the budget has room for it
 *             (after dropping the replaced entry's); settling, a RENAME
 *             (which moves bytes, not data) and a delete drop it.
 *             A TOMBSTONE for a path never seen, or whose entry is already a
 *             settled tombstone, is still recorded (peers may have the file).
 *   RENAME    moves path and every entry below it to path2 (replacing
 *             anything at or below path2); each moved entry gets the new
 *             version, origin node, synced {node}, renamed_from = its old
 *             path; each old path becomes a TOMBSTONE of the new version.
 *   LOCK      granted if the path has no lock, its lock expired
 *             (expires_ms < now), or it is already node's; the grant sets
 *             expires_ms = now + lease_ms.
 *   RENEW     every lock of node: expires_ms = now + lease_ms.
 *   UNLOCK    releases path's lock if node holds it (else no-op, still 0).
 *   SYNCED    for each item whose entry exists with that exact version and
 *             is pending, adds node; stale items are ignored.
 *   ANNOUNCE, RENAME with parents: once applied, each parent that is a
 *             DIR entry takes the given mtime, without a new version (the
 *             writer stamped it by making or removing a name in it; replicas
 *             set it after installing the child, so the tree converges).
 *   JOIN      adds or updates a member.
 *   LEAVE     removes the member, its locks and its record locks.
 *   RLOCK     node takes a record-lock range (rlocks_set): -EBUSY if another
 *             node's live range conflicts. RENEW renews node's ranges too.
 *   RUNLOCK   node gives a range up (always 0).
 * Settlement: after any command, an entry whose synced set contains every
 * member is settled right there: pending=false, synced emptied,
 * renamed_from dropped, and a TOMBSTONE is removed from the catalog.
 * With no members yet, nothing settles.
 * now_ms is made monotonic: the state keeps the largest now_ms seen and uses
 * max(that, cmd.now_ms). */
int fsm_apply(struct fsm *f, const void *buf, size_t len);

/* Inline bytes the catalog holds (<= FSM_INLINE_BUDGET). */
size_t fsm_inline_bytes(const struct fsm *f);

/* Version of the last applied command (0 for a new state). */
uint64_t fsm_version(const struct fsm *f);

/* Serialize the whole state: *buf malloc'd, caller frees. Compact binary,
 * with a magic, a format version and an XXH64 checksum at the end. */
int fsm_snapshot(const struct fsm *f, void **buf, size_t *len);
/* Replace f's state with the snapshot's. On error (-EINVAL bad magic,
 * version or checksum, truncated; -ENOMEM) f is unchanged. */
int fsm_restore(struct fsm *f, const void *buf, size_t len);

/* ---- queries (the caller holds the read lock) ---- */

/* The entry for path, or NULL. Tombstones are returned too. */
const struct fsm_entry *fsm_get(const struct fsm *f, const char *path);
bool fsm_entry_has(const struct fsm_entry *e, uint64_t node);
/* True if node has the path's current version (entry settled, or node in
 * synced), or the catalog has no entry for it. */
bool fsm_node_has(const struct fsm *f, const char *path, uint64_t node);

/* True if the path's current state survives the loss of any minority of the
 * members: it lives inside the replicated catalog (a directory, symlink,
 * tombstone, empty file, or a file whose bytes the entry carries), or a
 * majority of the members have installed its bytes (synced, or settled), or
 * the catalog has no entry for it (a settled delete). fsync waits for it. */
bool fsm_on_majority(const struct fsm *f, const char *path);

/* Call fn for each pending entry that node lacks, in no particular order;
 * stops early and returns fn's value if it returns non-zero. */
typedef int (*fsm_visit_fn)(const struct fsm_entry *e, void *arg);
int fsm_foreach_pending(const struct fsm *f, uint64_t node, fsm_visit_fn fn, void *arg);
/* Every entry (tombstones included). */
int fsm_foreach(const struct fsm *f, fsm_visit_fn fn, void *arg);

size_t fsm_entry_count(const struct fsm *f);
size_t fsm_pending_count(const struct fsm *f);

/* Lock of path: 1 and *holder and *expires_ms if one is recorded (maybe expired),
 * else 0. */
int fsm_lock_get(const struct fsm *f, const char *path, uint64_t *holder, uint64_t *expires_ms);
/* Number of locks held by node. */
size_t fsm_locks_of(const struct fsm *f, uint64_t node);
/* The node another node's refused LOCK marked path's lock as wanted by (the
 * first since it last changed hands), 0 if none or no lock. */
uint64_t fsm_lock_wanted(const struct fsm *f, const char *path);
/* fn(path, wanted, arg) for every lock held by holder that another node
 * asked for; stops early with fn's non-zero value. Costs nothing while no
 * lock is wanted. */
typedef int (*fsm_wanted_fn)(const char *path, uint64_t wanted, void *arg);
int fsm_foreach_wanted(const struct fsm *f, uint64_t holder, fsm_wanted_fn fn, void *arg);

/* Record locks (cluster/rlocks.h), as of the last applied command's time:
 * 1 and *out if a live range of another node than `node` conflicts, else 0. */
struct rlock;
int fsm_rlock_test(const struct fsm *f, const char *path, uint64_t node, uint8_t space,
                   uint8_t type, uint64_t start, uint64_t end, struct rlock *out);
/* Record-lock ranges held by node. */
size_t fsm_rlocks_of(const struct fsm *f, uint64_t node);

/* Members, sorted by id. */
size_t fsm_member_count(const struct fsm *f);
const struct fsm_member *fsm_member_at(const struct fsm *f, size_t i);
const struct fsm_member *fsm_member_get(const struct fsm *f, uint64_t id);

#endif
