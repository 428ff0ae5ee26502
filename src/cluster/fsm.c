/* The replicated state machine: catalog, cluster locks and members, and the
 * byte format raft carries between nodes. Every node applies the same log, so
 * this is a pure function of it: no clock, I/O, randomness or logging. */
#include "cluster/fsm.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "cluster/rlocks.h"
#include "common/path.h"
#include "common/xattrs.h"

#define FSM_CMD_FORMAT 1
#define FSM_FLAG_UNLOCK 0x01u
#define FSM_FLAG_FRESH 0x02u  /* ANNOUNCE, RENAME: only over nothing, a tombstone, or our own entry */
#define FSM_FLAG_INLINE 0x04u /* ANNOUNCE of a FILE: its bytes follow the hash */
#define FSM_FLAG_HELD 0x08u   /* ANNOUNCE: made under the node's lock (fsm_cmd.held) */
#define FSM_FLAG_KEEP 0x10u   /* ANNOUNCE: takes the lock too (fsm_cmd.keep); a lease follows */
#define FSM_FLAG_ATIME 0x20u  /* ANNOUNCE of a live kind: an atime follows the mtime (older
                               * commands lack it: their atime is their mtime) */
#define FSM_ANNOUNCE_FLAGS (FSM_FLAG_INLINE | FSM_FLAG_HELD | FSM_FLAG_KEEP | FSM_FLAG_ATIME | \
                            FSM_FLAG_XATTRS)
#define FSM_FLAG_PARENTS 0x40u /* ANNOUNCE, RENAME: parents' mtimes at the end (fsm_cmd.parents) */
#define FSM_FLAG_XATTRS 0x80u  /* ANNOUNCE of a FILE or DIR: its extended attributes follow
                                * (u32 length, the set) after the kind's own fields */

#define FSM_SNAP_MAGIC "NSFM"
#define FSM_SNAP_FORMAT 6u /* 2 added FSM_SNAP_DATA, 3 a lock's wanted, 4 atimes and the
                            * node kinds (fifo, socket, devices: rdev), 5 record locks,
                            * 6 extended attributes (FSM_SNAP_XATTRS); 1-5 still read */
#define FSM_SNAP_PENDING 0x01u
#define FSM_SNAP_TARGET 0x02u
#define FSM_SNAP_RENAMED 0x04u
#define FSM_SNAP_DATA 0x08u
#define FSM_SNAP_XATTRS 0x10u /* u32 length and the set follow the entry's target/renamed */

/* Smallest encodings, used to bound counts read from untrusted input before
 * anything is allocated for them. */
#define FSM_MIN_STR 6u /* u32 length, one byte, NUL */
#define FSM_MIN_ITEM (FSM_MIN_STR + 8u)
#define FSM_MIN_SNAP_MEMBER (8u + 2u * FSM_MIN_STR)
#define FSM_MIN_SNAP_LOCK (FSM_MIN_STR + 16u)
#define FSM_MIN_SNAP_ENTRY (FSM_MIN_STR + 2u + 16u + 12u + 8u)
#define FSM_MIN_SNAP_RLOCK (FSM_MIN_STR + 8u * 4u + 4u + 2u)

/* A catalog record: the public view, then bookkeeping, then the path in the
 * same allocation (one malloc per path keeps the per-path cost near 200
 * bytes). A synced array holds at least the next power of two >= n_synced,
 * so growing it needs no stored capacity. */
struct fsm_rec {
    struct fsm_entry e;
    uint32_t hash; /* low half of XXH3-64(path): probing and snapshot order */
    uint32_t pidx; /* index in fsm.pending while e.pending */
    uint32_t data_len; /* bytes at e.data (counted in fsm.inline_bytes) */
    char path[];
};

struct fsm_lock {
    char *path;
    uint64_t node;
    uint64_t expires_ms;
    uint64_t wanted; /* the first node refused it since it changed hands (0: none) */
};

struct fsm {
    uint64_t version;
    uint64_t now_ms;
    size_t inline_bytes; /* sum of data_len over the records */
    /* Open addressing, linear probing, power-of-two size, load <= 3/4. */
    struct fsm_rec **slots;
    size_t cap, count;
    /* Pending records in no order; removal swaps the last one in, so
     * fsm_foreach_pending never walks settled entries. */
    struct fsm_rec **pending;
    size_t n_pending, pending_cap;
    /* Few and short-lived: an array sorted by path is enough and gives the
     * snapshot a canonical order for free. */
    struct fsm_lock *locks;
    size_t n_locks, locks_cap;
    size_t n_wanted;            /* locks with a wanted mark: a cheap "anyone asking?" */
    struct fsm_member *members; /* sorted by id */
    size_t n_members, members_cap;
    struct rlocks *rlocks;      /* record locks (never NULL) */
};

/* ---------------- byte writer / reader ---------------- */

/* With p == NULL only len advances: encoders run once to measure, once to
 * write, so a large snapshot is allocated exactly once. */
struct fsm_wr {
    uint8_t *p;
    size_t len;
};

static void fsm_put(struct fsm_wr *w, const void *src, size_t n)
{
    if (w->p)
        memcpy(w->p + w->len, src, n);
    w->len += n;
}

static void fsm_put_u8(struct fsm_wr *w, uint8_t v)
{
    fsm_put(w, &v, 1);
}

static void fsm_put_u32(struct fsm_wr *w, uint32_t v)
{
    uint8_t b[4];
    for (int i = 0; i < 4; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    fsm_put(w, b, sizeof b);
}

static void fsm_put_u64(struct fsm_wr *w, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    fsm_put(w, b, sizeof b);
}

static void fsm_put_str(struct fsm_wr *w, const char *s)
{
    size_t n = strlen(s);
    fsm_put_u32(w, (uint32_t)n);
    fsm_put(w, s, n + 1);
}

/* Errors are sticky so a parser can read a whole record and check once. */
struct fsm_rd {
    const uint8_t *p;
    size_t len, off;
    bool bad;
};

static const uint8_t *fsm_take(struct fsm_rd *r, size_t n)
{
    if (r->bad || r->len - r->off < n) {
        r->bad = true;
        return NULL;
    }
    const uint8_t *at = r->p + r->off;
    r->off += n;
    return at;
}

static size_t fsm_left(const struct fsm_rd *r)
{
    return r->bad ? 0 : r->len - r->off;
}

static uint8_t fsm_get_u8(struct fsm_rd *r)
{
    const uint8_t *b = fsm_take(r, 1);
    return b ? b[0] : 0;
}

static uint32_t fsm_get_u32(struct fsm_rd *r)
{
    const uint8_t *b = fsm_take(r, 4);
    uint32_t v = 0;
    for (int i = 0; b && i < 4; i++)
        v |= (uint32_t)b[i] << (8 * i);
    return v;
}

static uint64_t fsm_get_u64(struct fsm_rd *r)
{
    const uint8_t *b = fsm_take(r, 8);
    uint64_t v = 0;
    for (int i = 0; b && i < 8; i++)
        v |= (uint64_t)b[i] << (8 * i);
    return v;
}

/* A string of at most max bytes, NUL-terminated where the length says and
 * without an earlier NUL; it points into the buffer. */
static const char *fsm_get_str(struct fsm_rd *r, size_t max)
{
    uint32_t n = fsm_get_u32(r);
    if (r->bad)
        return NULL;
    if (n > max) {
        r->bad = true;
        return NULL;
    }
    const uint8_t *s = fsm_take(r, (size_t)n + 1);
    if (!s || s[n] != '\0' || memchr(s, '\0', n) != NULL) {
        r->bad = true;
        return NULL;
    }
    return (const char *)s;
}

/* A path as the rest of nsyncfs accepts it; never the data directory, so no
 * command or snapshot, forged or buggy, can reach the raft log or staging. */
static const char *fsm_get_path(struct fsm_rd *r)
{
    const char *s = fsm_get_str(r, PATH_MAX - 1);
    if (s && (path_check(s) != 0 || path_is_internal(s))) {
        r->bad = true;
        return NULL;
    }
    return s;
}

/* Not strdup: C11 has none, and this one goes through malloc, where the
 * tests inject failures. */
static char *fsm_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    return p ? memcpy(p, s, n) : NULL;
}

_Static_assert(XATTRS_MAX <= UINT16_MAX, "fsm_entry.xattrs_len is 16 bits");

static void *fsm_memdup(const void *src, size_t n)
{
    void *p = malloc(n);
    return p ? memcpy(p, src, n) : NULL;
}

/* ---------------- commands ---------------- */

static bool fsm_path_ok(const char *p)
{
    return p && path_check(p) == 0 && !path_is_internal(p);
}

static bool fsm_target_ok(const char *t)
{
    return t && t[0] && strlen(t) < PATH_MAX;
}

static bool fsm_addr_ok(const char *a)
{
    return a && a[0] && strlen(a) < FSM_ADDR_MAX;
}

/* The one definition of a valid command, shared by encode and decode so the
 * two accept exactly the same set. */
static int fsm_cmd_check(const struct fsm_cmd *c, bool check_items)
{
    if (c->node == 0)
        return -EINVAL;
    switch (c->op) {
    case FSM_OP_ANNOUNCE:
        if (!fsm_path_ok(c->path) || c->meta.kind < FSM_FILE || c->meta.kind > FSM_KIND_MAX ||
            c->meta.mode > 07777 || (c->meta.rdev && !fsm_kind_has_rdev(c->meta.kind)))
            return -EINVAL;
        if (c->meta.kind == FSM_SYMLINK && !fsm_target_ok(c->meta.target))
            return -EINVAL;
        if (c->meta.data && (c->meta.kind != FSM_FILE || c->meta.size > FSM_INLINE_MAX))
            return -EINVAL;
        if (c->meta.xattrs_len && (!fsm_kind_has_xattrs(c->meta.kind) ||
                                   xattrs_check(c->meta.xattrs, c->meta.xattrs_len) < 0))
            return -EINVAL;
        return 0;
    case FSM_OP_RENAME:
        if (!fsm_path_ok(c->path) || !fsm_path_ok(c->path2))
            return -EINVAL;
        /* Into its own subtree, or onto an ancestor: no rename(2) does that. */
        if (path_is_under(c->path2, c->path) || path_is_under(c->path, c->path2))
            return -EINVAL;
        return 0;
    case FSM_OP_LOCK:
    case FSM_OP_UNLOCK:
        return fsm_path_ok(c->path) ? 0 : -EINVAL;
    case FSM_OP_RLOCK:
    case FSM_OP_RUNLOCK:
        return fsm_path_ok(c->path) &&
                       rlocks_valid(c->rspace, c->op == FSM_OP_RLOCK ? c->rtype : RLOCK_READ,
                                    c->rstart, c->rend)
                   ? 0
                   : -EINVAL;
    case FSM_OP_RENEW:
    case FSM_OP_LEAVE:
        return 0;
    case FSM_OP_SYNCED:
        if (!check_items)
            return 0;
        if (c->n_items > 0 && !c->items)
            return -EINVAL;
        for (uint32_t i = 0; i < c->n_items; i++)
            if (!fsm_path_ok(c->items[i].path))
                return -EINVAL;
        return 0;
    case FSM_OP_JOIN:
        return fsm_addr_ok(c->caddr) && fsm_addr_ok(c->faddr) ? 0 : -EINVAL;
    default:
        return -EINVAL;
    }
}

static bool fsm_op_has_unlock(uint8_t op)
{
    return op == FSM_OP_ANNOUNCE || op == FSM_OP_RENAME;
}

/* Header: u8 format, u8 op, u8 flags, u64 node, u64 now_ms; then the op's
 * fields. now_ms travels with every op so the leader can stamp any of them. */
static void fsm_cmd_write(struct fsm_wr *w, const struct fsm_cmd *c)
{
    uint8_t flags = 0;
    if (fsm_op_has_unlock(c->op)) {
        flags |= c->unlock ? FSM_FLAG_UNLOCK : 0;
        flags |= c->fresh ? FSM_FLAG_FRESH : 0;
        flags |= c->held && c->op == FSM_OP_ANNOUNCE ? FSM_FLAG_HELD : 0;
        flags |= c->keep && !c->unlock && c->op == FSM_OP_ANNOUNCE ? FSM_FLAG_KEEP : 0;
        flags |= c->parents ? FSM_FLAG_PARENTS : 0;
    }
    if (c->op == FSM_OP_ANNOUNCE && c->meta.kind == FSM_FILE && c->meta.data)
        flags |= FSM_FLAG_INLINE;
    if (c->op == FSM_OP_ANNOUNCE && c->meta.kind != FSM_TOMBSTONE)
        flags |= FSM_FLAG_ATIME;
    if (c->op == FSM_OP_ANNOUNCE && c->meta.xattrs_len)
        flags |= FSM_FLAG_XATTRS;
    fsm_put_u8(w, FSM_CMD_FORMAT);
    fsm_put_u8(w, c->op);
    fsm_put_u8(w, flags);
    fsm_put_u64(w, c->node);
    fsm_put_u64(w, c->now_ms);
    switch (c->op) {
    case FSM_OP_ANNOUNCE:
        fsm_put_str(w, c->path);
        fsm_put_u8(w, c->meta.kind);
        fsm_put_u32(w, c->meta.mode);
        fsm_put_u32(w, c->meta.uid);
        fsm_put_u32(w, c->meta.gid);
        fsm_put_u64(w, (uint64_t)c->meta.mtime_ns);
        if (c->meta.kind != FSM_TOMBSTONE)
            fsm_put_u64(w, (uint64_t)c->meta.atime_ns);
        if (fsm_kind_has_rdev(c->meta.kind))
            fsm_put_u64(w, c->meta.rdev);
        if (c->meta.kind == FSM_FILE) {
            fsm_put_u64(w, c->meta.size);
            fsm_put(w, c->meta.hash, FSM_HASH_LEN);
            if (c->meta.data)
                fsm_put(w, c->meta.data, (size_t)c->meta.size);
        } else if (c->meta.kind == FSM_SYMLINK) {
            fsm_put_str(w, c->meta.target);
        }
        if (c->meta.xattrs_len) {
            fsm_put_u32(w, c->meta.xattrs_len);
            fsm_put(w, c->meta.xattrs, c->meta.xattrs_len);
        }
        if (c->keep && !c->unlock)
            fsm_put_u32(w, c->lease_ms);
        if (c->parents)
            fsm_put_u64(w, (uint64_t)c->parent_mtime_ns);
        break;
    case FSM_OP_RENAME:
        fsm_put_str(w, c->path);
        fsm_put_str(w, c->path2);
        if (c->parents) {
            fsm_put_u64(w, (uint64_t)c->parent_mtime_ns);
            fsm_put_u64(w, (uint64_t)c->parent2_mtime_ns);
        }
        break;
    case FSM_OP_LOCK:
        fsm_put_str(w, c->path);
        fsm_put_u32(w, c->lease_ms);
        break;
    case FSM_OP_RENEW:
        fsm_put_u32(w, c->lease_ms);
        break;
    case FSM_OP_UNLOCK:
        fsm_put_str(w, c->path);
        break;
    case FSM_OP_RLOCK:
    case FSM_OP_RUNLOCK:
        fsm_put_str(w, c->path);
        fsm_put_u8(w, c->rspace);
        fsm_put_u64(w, c->rstart);
        fsm_put_u64(w, c->rend);
        if (c->op == FSM_OP_RLOCK) {
            fsm_put_u8(w, c->rtype);
            fsm_put_u32(w, c->pid);
            fsm_put_u32(w, c->lease_ms);
        }
        break;
    case FSM_OP_SYNCED:
        fsm_put_u32(w, c->n_items);
        for (uint32_t i = 0; i < c->n_items; i++) {
            fsm_put_str(w, c->items[i].path);
            fsm_put_u64(w, c->items[i].version);
        }
        break;
    case FSM_OP_JOIN:
        fsm_put_str(w, c->caddr);
        fsm_put_str(w, c->faddr);
        break;
    default: /* LEAVE: nothing more */
        break;
    }
}

int fsm_cmd_encode(const struct fsm_cmd *cmd, void **buf, size_t *len)
{
    if (!cmd || !buf || !len || fsm_cmd_check(cmd, true) < 0)
        return -EINVAL;
    struct fsm_wr w = {NULL, 0};
    fsm_cmd_write(&w, cmd);
    uint8_t *p = malloc(w.len);
    if (!p)
        return -ENOMEM;
    size_t n = w.len;
    w = (struct fsm_wr){p, 0};
    fsm_cmd_write(&w, cmd);
    *buf = p;
    *len = n;
    return 0;
}

/* items_off != NULL: apply's mode. Items are validated but not collected (the
 * caller walks them in the buffer from *items_off), so applying a valid
 * command never fails for want of memory in the decoder. */
/* raft's disk log needs entries whose length is a multiple of 8, so the
 * cluster zero-pads each command: up to 7 zero bytes may follow its end.
 * Anything else after the end is garbage. */
static bool fsm_only_padding(const void *buf, size_t off, size_t len)
{
    if (off > len || len - off >= 8)
        return false;
    for (const uint8_t *p = (const uint8_t *)buf + off; p < (const uint8_t *)buf + len; p++)
        if (*p)
            return false;
    return true;
}

static int fsm_decode(const void *buf, size_t len, struct fsm_cmd *c, size_t *items_off)
{
    memset(c, 0, sizeof *c);
    if (!buf)
        return -EINVAL;
    struct fsm_rd r = {buf, len, 0, false};
    if (fsm_get_u8(&r) != FSM_CMD_FORMAT)
        return -EINVAL;
    c->op = fsm_get_u8(&r);
    uint8_t flags = fsm_get_u8(&r);
    c->node = fsm_get_u64(&r);
    c->now_ms = fsm_get_u64(&r);
    if (r.bad ||
        (flags & ~(FSM_FLAG_UNLOCK | FSM_FLAG_FRESH | FSM_FLAG_PARENTS | FSM_ANNOUNCE_FLAGS)) != 0 ||
        (flags && !fsm_op_has_unlock(c->op)) ||
        ((flags & FSM_ANNOUNCE_FLAGS) && c->op != FSM_OP_ANNOUNCE) ||
        ((flags & FSM_FLAG_KEEP) && (flags & FSM_FLAG_UNLOCK)))
        return -EINVAL;
    c->keep = (flags & FSM_FLAG_KEEP) != 0;
    c->held = (flags & FSM_FLAG_HELD) != 0;
    c->unlock = (flags & FSM_FLAG_UNLOCK) != 0;
    c->fresh = (flags & FSM_FLAG_FRESH) != 0;
    c->parents = (flags & FSM_FLAG_PARENTS) != 0;
    switch (c->op) {
    case FSM_OP_ANNOUNCE:
        c->path = fsm_get_path(&r);
        c->meta.kind = fsm_get_u8(&r);
        c->meta.mode = fsm_get_u32(&r);
        c->meta.uid = fsm_get_u32(&r);
        c->meta.gid = fsm_get_u32(&r);
        c->meta.mtime_ns = (int64_t)fsm_get_u64(&r);
        if ((flags & FSM_FLAG_ATIME) && c->meta.kind == FSM_TOMBSTONE)
            return -EINVAL;
        c->meta.atime_ns = (flags & FSM_FLAG_ATIME) ? (int64_t)fsm_get_u64(&r) : c->meta.mtime_ns;
        if (fsm_kind_has_rdev(c->meta.kind)) {
            uint64_t rdev = fsm_get_u64(&r);
            if (rdev > UINT32_MAX) /* no mknod makes it */
                return -EINVAL;
            c->meta.rdev = (uint32_t)rdev;
        }
        if (c->meta.kind == FSM_FILE) {
            c->meta.size = fsm_get_u64(&r);
            const uint8_t *h = fsm_take(&r, FSM_HASH_LEN);
            if (h)
                memcpy(c->meta.hash, h, FSM_HASH_LEN);
            if (flags & FSM_FLAG_INLINE) {
                if (r.bad || c->meta.size > FSM_INLINE_MAX)
                    return -EINVAL;
                c->meta.data = fsm_take(&r, (size_t)c->meta.size);
            }
        } else if (c->meta.kind == FSM_SYMLINK) {
            c->meta.target = fsm_get_str(&r, PATH_MAX - 1);
        }
        if ((flags & FSM_FLAG_INLINE) && c->meta.kind != FSM_FILE)
            return -EINVAL;
        if (flags & FSM_FLAG_XATTRS) {
            /* Bounded before it is looked at: a hostile length is refused,
             * never allocated (the set points into buf). */
            uint32_t xl = fsm_get_u32(&r);
            if (r.bad || xl == 0 || xl > XATTRS_MAX || !fsm_kind_has_xattrs(c->meta.kind))
                return -EINVAL;
            c->meta.xattrs = fsm_take(&r, xl);
            c->meta.xattrs_len = xl;
        }
        if (c->keep)
            c->lease_ms = fsm_get_u32(&r);
        if (c->parents)
            c->parent_mtime_ns = (int64_t)fsm_get_u64(&r);
        break;
    case FSM_OP_RENAME:
        c->path = fsm_get_path(&r);
        c->path2 = fsm_get_path(&r);
        if (c->parents) {
            c->parent_mtime_ns = (int64_t)fsm_get_u64(&r);
            c->parent2_mtime_ns = (int64_t)fsm_get_u64(&r);
        }
        break;
    case FSM_OP_LOCK:
        c->path = fsm_get_path(&r);
        c->lease_ms = fsm_get_u32(&r);
        break;
    case FSM_OP_RENEW:
        c->lease_ms = fsm_get_u32(&r);
        break;
    case FSM_OP_UNLOCK:
        c->path = fsm_get_path(&r);
        break;
    case FSM_OP_RLOCK:
    case FSM_OP_RUNLOCK:
        c->path = fsm_get_path(&r);
        c->rspace = fsm_get_u8(&r);
        c->rstart = fsm_get_u64(&r);
        c->rend = fsm_get_u64(&r);
        if (c->op == FSM_OP_RLOCK) {
            c->rtype = fsm_get_u8(&r);
            c->pid = fsm_get_u32(&r);
            c->lease_ms = fsm_get_u32(&r);
        }
        break;
    case FSM_OP_SYNCED: {
        uint32_t n = fsm_get_u32(&r);
        if (r.bad || n > fsm_left(&r) / FSM_MIN_ITEM)
            return -EINVAL;
        c->n_items = n;
        struct fsm_synced_item *items = NULL;
        if (items_off) {
            *items_off = r.off;
        } else if (n > 0) {
            items = calloc(n, sizeof *items);
            if (!items)
                return -ENOMEM;
            c->owned_ = items;
            c->items = items;
        }
        for (uint32_t i = 0; i < n && !r.bad; i++) {
            const char *p = fsm_get_path(&r);
            uint64_t v = fsm_get_u64(&r);
            if (items)
                items[i] = (struct fsm_synced_item){p, v};
        }
        break;
    }
    case FSM_OP_JOIN:
        c->caddr = fsm_get_str(&r, FSM_ADDR_MAX - 1);
        c->faddr = fsm_get_str(&r, FSM_ADDR_MAX - 1);
        break;
    case FSM_OP_LEAVE:
        break;
    default:
        return -EINVAL;
    }
    if (r.bad || !fsm_only_padding(buf, r.off, len) || fsm_cmd_check(c, false) < 0)
        return -EINVAL;
    return 0;
}

int fsm_cmd_decode(const void *buf, size_t len, struct fsm_cmd *cmd)
{
    if (!cmd)
        return -EINVAL;
    int rc = fsm_decode(buf, len, cmd, NULL);
    if (rc < 0)
        fsm_cmd_release(cmd);
    return rc;
}

void fsm_cmd_release(struct fsm_cmd *cmd)
{
    if (!cmd)
        return;
    if (cmd->owned_ && cmd->items == cmd->owned_)
        cmd->items = NULL;
    free(cmd->owned_);
    cmd->owned_ = NULL;
}

/* ---------------- records and the path table ---------------- */

static uint32_t fsm_hash(const char *path, size_t len)
{
    return (uint32_t)XXH3_64bits(path, len);
}

static uint64_t *fsm_synced_mut(struct fsm_rec *r)
{
    return (uint64_t *)r->e.synced; /* ours: const only to readers */
}

static size_t fsm_synced_cap(uint32_t n)
{
    size_t c = n ? 1 : 0;
    while (c < n)
        c <<= 1;
    return c;
}

static struct fsm_rec *fsm_rec_new(const char *path, size_t len)
{
    struct fsm_rec *r = malloc(sizeof *r + len + 1);
    if (!r)
        return NULL;
    memset(r, 0, sizeof *r);
    memcpy(r->path, path, len);
    r->path[len] = '\0';
    r->e.path = r->path;
    r->hash = fsm_hash(path, len);
    return r;
}

static void fsm_rec_free(struct fsm_rec *r)
{
    if (!r)
        return;
    free((void *)r->e.data);
    free((void *)r->e.xattrs);
    free((char *)r->e.target);
    free((char *)r->e.renamed_from);
    free(fsm_synced_mut(r));
    free(r);
}

static struct fsm_rec *fsm_lookup(const struct fsm *f, const char *path)
{
    if (f->cap == 0)
        return NULL;
    size_t len = strlen(path);
    uint32_t h = fsm_hash(path, len);
    size_t mask = f->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        struct fsm_rec *r = f->slots[i];
        if (!r)
            return NULL;
        if (r->hash == h && memcmp(r->path, path, len + 1) == 0)
            return r;
    }
}

static void fsm_slot_put(struct fsm_rec **slots, size_t cap, struct fsm_rec *r)
{
    size_t mask = cap - 1;
    size_t i = r->hash & mask;
    while (slots[i])
        i = (i + 1) & mask;
    slots[i] = r;
}

/* Room for n records without another allocation, so that the mutation half
 * of an apply cannot fail. */
static int fsm_table_reserve(struct fsm *f, size_t n)
{
    if (n <= f->cap / 4 * 3)
        return 0;
    size_t cap = f->cap ? f->cap : 16;
    while (n > cap / 4 * 3) {
        if (cap > SIZE_MAX / 2 / sizeof *f->slots)
            return -ENOMEM;
        cap *= 2;
    }
    struct fsm_rec **slots = calloc(cap, sizeof *slots);
    if (!slots)
        return -ENOMEM;
    for (size_t i = 0; i < f->cap; i++)
        if (f->slots[i])
            fsm_slot_put(slots, cap, f->slots[i]);
    free(f->slots);
    f->slots = slots;
    f->cap = cap;
    return 0;
}

static void fsm_table_insert(struct fsm *f, struct fsm_rec *r)
{
    fsm_slot_put(f->slots, f->cap, r);
    f->count++;
}

/* Backward-shift deletion: no tombstone slots, so probe chains stay short
 * however many paths come and go. */
static void fsm_table_remove(struct fsm *f, struct fsm_rec *r)
{
    size_t mask = f->cap - 1;
    size_t i = r->hash & mask;
    while (f->slots[i] != r)
        i = (i + 1) & mask;
    f->slots[i] = NULL;
    for (size_t j = (i + 1) & mask; f->slots[j]; j = (j + 1) & mask) {
        size_t home = f->slots[j]->hash & mask;
        /* Stays if its home lies cyclically in (i, j]. */
        bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            f->slots[i] = f->slots[j];
            f->slots[j] = NULL;
            i = j;
        }
    }
    f->count--;
}

static int fsm_pending_reserve(struct fsm *f, size_t n)
{
    if (n <= f->pending_cap)
        return 0;
    size_t cap = f->pending_cap ? f->pending_cap : 16;
    while (cap < n) {
        if (cap > SIZE_MAX / 2 / sizeof *f->pending)
            return -ENOMEM;
        cap *= 2;
    }
    struct fsm_rec **p = realloc(f->pending, cap * sizeof *p);
    if (!p)
        return -ENOMEM;
    f->pending = p;
    f->pending_cap = cap;
    return 0;
}

static void fsm_pending_add(struct fsm *f, struct fsm_rec *r)
{
    r->e.pending = true;
    r->pidx = (uint32_t)f->n_pending;
    f->pending[f->n_pending++] = r;
}

static void fsm_pending_del(struct fsm *f, struct fsm_rec *r)
{
    struct fsm_rec *last = f->pending[--f->n_pending];
    f->pending[r->pidx] = last;
    last->pidx = r->pidx;
    r->e.pending = false;
}

/* Forget r's inline bytes (its entry settled, changed or went). */
static void fsm_data_drop(struct fsm *f, struct fsm_rec *r)
{
    free((void *)r->e.data);
    r->e.data = NULL;
    f->inline_bytes -= r->data_len;
    r->data_len = 0;
}

/* Drop a record from the catalog entirely. */
static void fsm_rec_drop(struct fsm *f, struct fsm_rec *r)
{
    fsm_data_drop(f, r);
    if (r->e.pending)
        fsm_pending_del(f, r);
    fsm_table_remove(f, r);
    fsm_rec_free(r);
}

/* ---------------- members and settlement ---------------- */

/* Index of id, or where it would go (with *found false). */
static size_t fsm_member_pos(const struct fsm *f, uint64_t id, bool *found)
{
    size_t lo = 0, hi = f->n_members;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (f->members[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = lo < f->n_members && f->members[lo].id == id;
    return lo;
}

static bool fsm_synced_has(const struct fsm_entry *e, uint64_t node)
{
    for (uint32_t i = 0; i < e->n_synced; i++)
        if (e->synced[i] == node)
            return true;
    return false;
}

/* Settle r if every member has it; a settled tombstone has nothing left to
 * tell anyone, so it leaves the catalog. With no members nothing is known to
 * be complete, so nothing settles. */
static void fsm_settle_maybe(struct fsm *f, struct fsm_rec *r)
{
    if (!r->e.pending || f->n_members == 0)
        return;
    for (size_t i = 0; i < f->n_members; i++)
        if (!fsm_synced_has(&r->e, f->members[i].id))
            return;
    if (r->e.kind == FSM_TOMBSTONE) {
        fsm_rec_drop(f, r);
        return;
    }
    fsm_pending_del(f, r);
    fsm_data_drop(f, r);
    free(fsm_synced_mut(r));
    r->e.synced = NULL;
    r->e.n_synced = 0;
    free((char *)r->e.renamed_from);
    r->e.renamed_from = NULL;
}

/* Backwards, because settling swaps the last pending record into the hole:
 * that one has been looked at already. */
static void fsm_settle_all(struct fsm *f)
{
    for (size_t i = f->n_pending; i-- > 0;)
        fsm_settle_maybe(f, f->pending[i]);
}

/* After a command that set synced = {node} on the records of version v, only
 * a cluster of exactly that node can settle them: skip the scan otherwise. */
static void fsm_settle_version(struct fsm *f, uint64_t v, uint64_t node)
{
    if (f->n_members != 1 || f->members[0].id != node)
        return;
    for (size_t i = f->n_pending; i-- > 0;)
        if (f->pending[i]->e.version == v)
            fsm_settle_maybe(f, f->pending[i]);
}

/* ---------------- locks ---------------- */

static size_t fsm_lock_pos(const struct fsm *f, const char *path, bool *found)
{
    size_t lo = 0, hi = f->n_locks;
    *found = false;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(f->locks[mid].path, path);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* A live lock held by someone else. Expiry is inclusive: a lock is live up
 * to and including its expires_ms. */
static bool fsm_lock_busy(const struct fsm *f, const char *path, uint64_t node, uint64_t now)
{
    bool found;
    size_t i = fsm_lock_pos(f, path, &found);
    return found && f->locks[i].node != node && f->locks[i].expires_ms >= now;
}

static void fsm_lock_remove_at(struct fsm *f, size_t i)
{
    if (f->locks[i].wanted)
        f->n_wanted--;
    free(f->locks[i].path);
    memmove(&f->locks[i], &f->locks[i + 1], (f->n_locks - i - 1) * sizeof *f->locks);
    f->n_locks--;
}

static void fsm_lock_release(struct fsm *f, const char *path, uint64_t node)
{
    bool found;
    size_t i = fsm_lock_pos(f, path, &found);
    if (found && f->locks[i].node == node)
        fsm_lock_remove_at(f, i);
}

static uint64_t fsm_expiry(uint64_t now, uint32_t lease_ms)
{
    return now > UINT64_MAX - lease_ms ? UINT64_MAX : now + lease_ms;
}

/* ---------------- apply ---------------- */

/* A fresh change was made without waiting for the path's lock, on the
 * belief that nobody had the path: it may not replace a live entry that
 * another node made meanwhile. */
static bool fsm_fresh_conflict(const struct fsm *f, const struct fsm_cmd *c)
{
    if (!c->fresh)
        return false;
    const struct fsm_rec *r = fsm_lookup(f, c->path);
    return r && r->e.kind != FSM_TOMBSTONE && r->e.origin != c->node;
}

/* A change made under a lock the node has since lost (its lease ran out
 * while it was paused or cut off) to a path another node changed meanwhile:
 * applying it would silently drop the other node's version. Refused; the
 * node keeps its bytes as a conflict copy. */
static bool fsm_lock_lost(const struct fsm *f, const struct fsm_cmd *c)
{
    if (!c->held)
        return false;
    const struct fsm_rec *r = fsm_lookup(f, c->path);
    if (!r || r->e.origin == c->node)
        return false;
    bool found;
    size_t i = fsm_lock_pos(f, c->path, &found);
    return !found || f->locks[i].node != c->node;
}

/* Each apply allocates everything it needs first and mutates after, so on
 * ENOMEM the state is as it was: a half-applied command would be a state no
 * other node has. */

/* Room for one more lock record. */
static int fsm_lock_reserve(struct fsm *f)
{
    if (f->n_locks < f->locks_cap)
        return 0;
    size_t cap = f->locks_cap ? 2 * f->locks_cap : 8;
    struct fsm_lock *l = realloc(f->locks, cap * sizeof *l);
    if (!l)
        return -ENOMEM;
    f->locks = l;
    f->locks_cap = cap;
    return 0;
}

/* Give the lock at position i (found: the record there is path's; else a
 * new record goes there with path p, owned, and room reserved) to node. */
static void fsm_lock_put(struct fsm *f, size_t i, bool found, char *p, uint64_t node, uint64_t exp)
{
    if (found) {
        struct fsm_lock *l = &f->locks[i];
        if (l->node != node && l->wanted) {
            l->wanted = 0;
            f->n_wanted--;
        }
        l->node = node;
        l->expires_ms = exp;
        return;
    }
    memmove(&f->locks[i + 1], &f->locks[i], (f->n_locks - i) * sizeof *f->locks);
    f->locks[i] = (struct fsm_lock){p, node, exp, 0};
    f->n_locks++;
}

static int fsm_apply_announce(struct fsm *f, const struct fsm_cmd *c, uint64_t v, uint64_t now)
{
    if (fsm_lock_busy(f, c->path, c->node, now) || fsm_lock_lost(f, c))
        return -EBUSY;
    if (fsm_fresh_conflict(f, c))
        return -EEXIST;
    struct fsm_rec *r = fsm_lookup(f, c->path);
    struct fsm_rec *fresh = NULL;
    char *target = NULL;
    uint64_t *synced = NULL;
    void *data = NULL;
    char *lock_path = NULL;
    void *xattrs = NULL;
    if (c->meta.kind == FSM_SYMLINK && !(target = fsm_strdup(c->meta.target)))
        goto nomem;
    if (c->meta.xattrs_len && !(xattrs = fsm_memdup(c->meta.xattrs, c->meta.xattrs_len)))
        goto nomem;
    /* Out of budget (or of memory): the hash alone, replicas fetch. Either
     * way every node decides alike, since all of them count the same bytes
     * (an allocation failure is the one exception, and only changes how
     * replicas get the file, never what they install). */
    size_t old_len = r ? r->data_len : 0;
    if (c->meta.data && c->meta.size > 0 &&
        f->inline_bytes - old_len + c->meta.size <= FSM_INLINE_BUDGET &&
        (data = malloc((size_t)c->meta.size)) != NULL)
        memcpy(data, c->meta.data, (size_t)c->meta.size);
    if (!r) {
        if (!(fresh = fsm_rec_new(c->path, strlen(c->path))) || fsm_table_reserve(f, f->count + 1) < 0)
            goto nomem;
    }
    if ((!r || r->e.n_synced == 0) && !(synced = malloc(sizeof *synced)))
        goto nomem;
    if ((!r || !r->e.pending) && fsm_pending_reserve(f, f->n_pending + 1) < 0)
        goto nomem;
    bool lock_found = false;
    size_t lock_i = c->keep ? fsm_lock_pos(f, c->path, &lock_found) : 0;
    if (c->keep && !lock_found && (fsm_lock_reserve(f) < 0 || !(lock_path = fsm_strdup(c->path))))
        goto nomem;

    if (fresh) {
        fsm_table_insert(f, fresh);
        r = fresh;
    }
    fsm_data_drop(f, r);
    if (data) {
        r->e.data = data;
        r->data_len = (uint32_t)c->meta.size;
        f->inline_bytes += r->data_len;
    }
    free((char *)r->e.target);
    free((char *)r->e.renamed_from);
    free((void *)r->e.xattrs);
    r->e.xattrs = xattrs;
    r->e.xattrs_len = (uint16_t)c->meta.xattrs_len;
    if (synced) {
        free(fsm_synced_mut(r));
        r->e.synced = synced;
    }
    r->e.kind = c->meta.kind;
    r->e.version = v;
    r->e.origin = c->node;
    r->e.mode = c->meta.mode;
    r->e.uid = c->meta.uid;
    r->e.gid = c->meta.gid;
    r->e.rdev = c->meta.rdev;
    r->e.size = c->meta.size;
    r->e.mtime_ns = c->meta.mtime_ns;
    r->e.atime_ns = c->meta.atime_ns;
    memcpy(r->e.hash, c->meta.hash, FSM_HASH_LEN);
    r->e.target = target;
    r->e.renamed_from = NULL;
    fsm_synced_mut(r)[0] = c->node;
    r->e.n_synced = 1;
    if (!r->e.pending)
        fsm_pending_add(f, r);
    if (c->unlock)
        fsm_lock_release(f, c->path, c->node);
    if (c->keep) /* free or ours: fsm_lock_busy refused the command otherwise */
        fsm_lock_put(f, lock_i, lock_found, lock_path, c->node, fsm_expiry(now, c->lease_ms));
    fsm_settle_maybe(f, r);
    return 0;

nomem:
    free(lock_path);
    free(data);
    free(xattrs);
    free(target);
    free(fresh);
    free(synced);
    return -ENOMEM;
}

/* Turn r into a pending tombstone of version v; spare is used (and cleared)
 * when r has no synced array to reuse. */
static void fsm_make_tombstone(struct fsm *f, struct fsm_rec *r, uint64_t v, uint64_t node, uint64_t **spare)
{
    fsm_data_drop(f, r);
    free((char *)r->e.target);
    free((char *)r->e.renamed_from);
    free((void *)r->e.xattrs);
    r->e.target = NULL;
    r->e.renamed_from = NULL;
    r->e.xattrs = NULL;
    r->e.xattrs_len = 0;
    r->e.kind = FSM_TOMBSTONE;
    r->e.version = v;
    r->e.origin = node;
    r->e.mode = r->e.uid = r->e.gid = r->e.rdev = 0;
    r->e.size = 0;
    r->e.mtime_ns = r->e.atime_ns = 0;
    memset(r->e.hash, 0, FSM_HASH_LEN);
    if (r->e.n_synced == 0) {
        r->e.synced = *spare;
        *spare = NULL;
    }
    fsm_synced_mut(r)[0] = node;
    r->e.n_synced = 1;
    if (!r->e.pending)
        fsm_pending_add(f, r);
}

static int fsm_apply_rename(struct fsm *f, const struct fsm_cmd *c, uint64_t v, uint64_t now)
{
    if (fsm_lock_busy(f, c->path, c->node, now) || fsm_lock_busy(f, c->path2, c->node, now))
        return -EBUSY;
    if (fsm_fresh_conflict(f, c))
        return -EEXIST;
    struct fsm_rec *top = fsm_lookup(f, c->path);
    if (!top || top->e.kind == FSM_TOMBSTONE)
        return -ENOENT;

    size_t plen = strlen(c->path), p2len = strlen(c->path2);
    size_t n_src = 0, n_dst = 0;
    for (size_t i = 0; i < f->cap; i++) {
        struct fsm_rec *r = f->slots[i];
        if (r && path_is_under(r->path, c->path))
            n_src++;
        else if (r && path_is_under(r->path, c->path2))
            n_dst++;
    }
    /* One block: sources, their replacements, then the targets. */
    struct fsm_rec **src = calloc(2 * n_src + n_dst, sizeof *src);
    uint64_t **spares = calloc(n_src + n_dst, sizeof *spares);
    char *buf = NULL;
    int rc = -ENOMEM;
    if (!src || !spares)
        goto out;
    struct fsm_rec **moved = src + n_src, **dst = moved + n_src;
    size_t a = 0, b = 0;
    for (size_t i = 0; i < f->cap; i++) {
        struct fsm_rec *r = f->slots[i];
        if (r && path_is_under(r->path, c->path))
            src[a++] = r;
        else if (r && path_is_under(r->path, c->path2))
            dst[b++] = r;
    }

    for (size_t i = 0; i < n_src; i++) {
        size_t tail = strlen(src[i]->path) - plen;
        if (p2len + tail >= PATH_MAX) {
            /* The new path would not survive path_check in a snapshot. */
            rc = -ENAMETOOLONG;
            goto out;
        }
    }
    if (!(buf = malloc(PATH_MAX)))
        goto out;
    for (size_t i = 0; i < n_src; i++) {
        const struct fsm_entry *o = &src[i]->e;
        size_t tail = strlen(o->path) - plen;
        memcpy(buf, c->path2, p2len);
        memcpy(buf + p2len, o->path + plen, tail + 1);
        struct fsm_rec *r = moved[i] = fsm_rec_new(buf, p2len + tail);
        if (!r)
            goto out;
        r->e.kind = o->kind;
        r->e.version = v;
        r->e.origin = c->node;
        r->e.mode = o->mode;
        r->e.uid = o->uid;
        r->e.gid = o->gid;
        r->e.rdev = o->rdev;
        r->e.size = o->size;
        r->e.mtime_ns = o->mtime_ns;
        r->e.atime_ns = o->atime_ns;
        memcpy(r->e.hash, o->hash, FSM_HASH_LEN);
        uint64_t *syn = malloc(sizeof *syn);
        r->e.synced = syn;
        if (!syn || !(r->e.renamed_from = fsm_strdup(o->path)))
            goto out;
        if (o->target && !(r->e.target = fsm_strdup(o->target)))
            goto out;
        if (o->xattrs_len && !(r->e.xattrs = fsm_memdup(o->xattrs, o->xattrs_len)))
            goto out;
        r->e.xattrs_len = o->xattrs_len;
        syn[0] = c->node;
        r->e.n_synced = 1;
    }
    size_t n_spare = 0;
    for (size_t i = 0; i < n_src + n_dst; i++) {
        struct fsm_rec *r = i < n_src ? src[i] : dst[i - n_src];
        if (r->e.n_synced == 0 && !(spares[n_spare++] = malloc(sizeof(uint64_t))))
            goto out;
    }
    if (fsm_table_reserve(f, f->count + n_src) < 0 ||
        fsm_pending_reserve(f, f->n_pending + 2 * n_src + n_dst) < 0)
        goto out;

    /* Nothing below can fail. */
    size_t k = 0;
    for (size_t i = 0; i < n_src + n_dst; i++) {
        struct fsm_rec *r = i < n_src ? src[i] : dst[i - n_src];
        fsm_make_tombstone(f, r, v, c->node, r->e.n_synced == 0 ? &spares[k++] : NULL);
    }
    for (size_t i = 0; i < n_src; i++) {
        struct fsm_rec *old = fsm_lookup(f, moved[i]->path);
        if (old)
            fsm_rec_drop(f, old); /* below path2 and overwritten */
        fsm_table_insert(f, moved[i]);
        fsm_pending_add(f, moved[i]);
        moved[i] = NULL;
    }
    if (c->unlock) {
        fsm_lock_release(f, c->path, c->node);
        fsm_lock_release(f, c->path2, c->node);
    }
    fsm_settle_version(f, v, c->node);
    rc = 0;

out:
    free(buf);
    if (src)
        for (size_t i = 0; i < n_src; i++)
            fsm_rec_free(src[n_src + i]);
    if (spares)
        for (size_t i = 0; i < n_src + n_dst; i++)
            free(spares[i]);
    free(spares);
    free(src);
    return rc;
}

static int fsm_apply_lock(struct fsm *f, const struct fsm_cmd *c, uint64_t now)
{
    bool found;
    size_t i = fsm_lock_pos(f, c->path, &found);
    if (found) {
        struct fsm_lock *l = &f->locks[i];
        if (l->node != c->node && l->expires_ms >= now) {
            /* The holder may be keeping it cached: this mark asks for it. */
            if (l->wanted == 0) {
                l->wanted = c->node;
                f->n_wanted++;
            }
            return -EBUSY;
        }
        fsm_lock_put(f, i, true, NULL, c->node, fsm_expiry(now, c->lease_ms));
        return 0;
    }
    char *p = fsm_strdup(c->path);
    if (!p || fsm_lock_reserve(f) < 0) {
        free(p);
        return -ENOMEM;
    }
    fsm_lock_put(f, i, false, p, c->node, fsm_expiry(now, c->lease_ms));
    return 0;
}

/* A node that joins a cluster with members lacks everything until it says
 * otherwise: every settled live entry becomes pending again, held by the
 * members it had. That is the whole initial sync (and a rejoin's catch-up):
 * the newcomer's fetch worker walks the pending entries like any others.
 * All allocations come first, so ENOMEM changes nothing. */
static int fsm_unsettle_for_newcomer(struct fsm *f)
{
    size_t n = 0;
    for (size_t s = 0; s < f->cap; s++)
        if (f->slots[s] && !f->slots[s]->e.pending && f->slots[s]->e.kind != FSM_TOMBSTONE)
            n++;
    if (n == 0)
        return 0;
    if (fsm_pending_reserve(f, f->n_pending + n) < 0)
        return -ENOMEM;
    size_t cap = fsm_synced_cap((uint32_t)f->n_members);
    uint64_t **arrays = malloc(n * sizeof *arrays);
    if (!arrays)
        return -ENOMEM;
    for (size_t k = 0; k < n; k++) {
        if (!(arrays[k] = malloc(cap * sizeof **arrays))) {
            while (k-- > 0)
                free(arrays[k]);
            free(arrays);
            return -ENOMEM;
        }
    }
    size_t k = 0;
    for (size_t s = 0; s < f->cap; s++) {
        struct fsm_rec *r = f->slots[s];
        if (!r || r->e.pending || r->e.kind == FSM_TOMBSTONE)
            continue;
        uint64_t *syn = arrays[k++];
        for (size_t m = 0; m < f->n_members; m++)
            syn[m] = f->members[m].id;
        free(fsm_synced_mut(r));
        r->e.synced = syn;
        r->e.n_synced = (uint32_t)f->n_members;
        fsm_pending_add(f, r);
    }
    free(arrays);
    return 0;
}

static int fsm_apply_join(struct fsm *f, const struct fsm_cmd *c)
{
    bool found;
    size_t i = fsm_member_pos(f, c->node, &found);
    if (!found) {
        if (f->n_members == f->members_cap) {
            size_t cap = f->members_cap ? 2 * f->members_cap : 4;
            struct fsm_member *m = realloc(f->members, cap * sizeof *m);
            if (!m)
                return -ENOMEM;
            f->members = m;
            f->members_cap = cap;
        }
        if (f->n_members > 0 && fsm_unsettle_for_newcomer(f) < 0)
            return -ENOMEM;
        memmove(&f->members[i + 1], &f->members[i], (f->n_members - i) * sizeof *f->members);
        f->n_members++;
    }
    struct fsm_member *m = &f->members[i];
    memset(m, 0, sizeof *m);
    m->id = c->node;
    strcpy(m->caddr, c->caddr); /* lengths checked by the decoder */
    strcpy(m->faddr, c->faddr);
    /* A new member only adds a requirement, except to a cluster that had
     * none: then entries it already has settle. */
    if (!found)
        fsm_settle_all(f);
    return 0;
}

static void fsm_apply_leave(struct fsm *f, uint64_t node)
{
    bool found;
    size_t i = fsm_member_pos(f, node, &found);
    if (found) {
        memmove(&f->members[i], &f->members[i + 1], (f->n_members - i - 1) * sizeof *f->members);
        f->n_members--;
    }
    size_t k = 0;
    for (size_t j = 0; j < f->n_locks; j++) {
        struct fsm_lock *l = &f->locks[j];
        if (l->wanted && (l->node == node || l->wanted == node)) {
            l->wanted = 0; /* a gone node neither hands over nor waits */
            f->n_wanted--;
        }
        if (l->node == node)
            free(l->path);
        else
            f->locks[k++] = *l;
    }
    f->n_locks = k;
    rlocks_drop_node(f->rlocks, node);
    if (found)
        fsm_settle_all(f);
}

/* Items were validated by the decoder; walk them in place. The first pass
 * makes room in every synced array that will grow, so the second cannot fail
 * half way through. */
static int fsm_apply_synced(struct fsm *f, const void *buf, size_t len, size_t off, uint32_t n, uint64_t node)
{
    for (int pass = 0; pass < 2; pass++) {
        struct fsm_rd r = {buf, len, off, false};
        for (uint32_t i = 0; i < n; i++) {
            const char *p = fsm_get_str(&r, PATH_MAX - 1);
            uint64_t v = fsm_get_u64(&r);
            struct fsm_rec *rec = fsm_lookup(f, p);
            if (!rec || !rec->e.pending || rec->e.version != v || fsm_synced_has(&rec->e, node))
                continue;
            uint32_t ns = rec->e.n_synced;
            if (pass == 0) {
                if (fsm_synced_cap(ns) < (size_t)ns + 1) {
                    uint64_t *s = realloc(fsm_synced_mut(rec), fsm_synced_cap(ns + 1) * sizeof *s);
                    if (!s)
                        return -ENOMEM;
                    rec->e.synced = s;
                }
            } else {
                fsm_synced_mut(rec)[ns] = node;
                rec->e.n_synced = ns + 1;
                fsm_settle_maybe(f, rec);
            }
        }
    }
    return 0;
}

/* path's parent, if the catalog has it as a directory, takes mtime (the
 * top directory is not in the catalog). Cannot fail. */
static void fsm_touch_parent(struct fsm *f, const char *path, int64_t mtime)
{
    char dir[PATH_MAX];
    if (path_parent(path, dir, sizeof dir) < 0 || !dir[0])
        return;
    struct fsm_rec *r = fsm_lookup(f, dir);
    if (r && r->e.kind == FSM_DIR)
        r->e.mtime_ns = mtime;
}

static void fsm_touch_parents(struct fsm *f, const struct fsm_cmd *c)
{
    if (!c->parents)
        return;
    fsm_touch_parent(f, c->path, c->parent_mtime_ns);
    if (c->op == FSM_OP_RENAME)
        fsm_touch_parent(f, c->path2, c->parent2_mtime_ns);
}

int fsm_apply(struct fsm *f, const void *buf, size_t len)
{
    struct fsm_cmd c;
    size_t items_off = 0;
    if (!f || fsm_decode(buf, len, &c, &items_off) < 0)
        return -EINVAL;
    /* Every valid command counts, refused or not, even on ENOMEM: versions
     * name changes across nodes and must stay aligned with the log. */
    uint64_t v = ++f->version;
    if (c.now_ms > f->now_ms)
        f->now_ms = c.now_ms;
    uint64_t now = f->now_ms;
    switch (c.op) {
    case FSM_OP_ANNOUNCE:
    case FSM_OP_RENAME: {
        int rc = c.op == FSM_OP_ANNOUNCE ? fsm_apply_announce(f, &c, v, now)
                                         : fsm_apply_rename(f, &c, v, now);
        if (rc == 0)
            fsm_touch_parents(f, &c);
        return rc;
    }
    case FSM_OP_LOCK:
        return fsm_apply_lock(f, &c, now);
    case FSM_OP_RENEW:
        for (size_t i = 0; i < f->n_locks; i++)
            if (f->locks[i].node == c.node)
                f->locks[i].expires_ms = fsm_expiry(now, c.lease_ms);
        rlocks_renew(f->rlocks, c.node, fsm_expiry(now, c.lease_ms));
        return 0;
    case FSM_OP_UNLOCK:
        fsm_lock_release(f, c.path, c.node);
        return 0;
    case FSM_OP_RLOCK:
        return rlocks_set(f->rlocks, c.path, c.node, c.rspace, c.rtype, c.rstart, c.rend, c.pid,
                          now, fsm_expiry(now, c.lease_ms));
    case FSM_OP_RUNLOCK:
        return rlocks_clear(f->rlocks, c.path, c.node, c.rspace, c.rstart, c.rend);
    case FSM_OP_SYNCED:
        return fsm_apply_synced(f, buf, len, items_off, c.n_items, c.node);
    case FSM_OP_JOIN:
        return fsm_apply_join(f, &c);
    case FSM_OP_LEAVE:
        fsm_apply_leave(f, c.node);
        return 0;
    default:
        return -EINVAL; /* unreachable: the decoder knows every op */
    }
}

/* ---------------- lifetime ---------------- */

struct fsm *fsm_new(void)
{
    struct fsm *f = calloc(1, sizeof(struct fsm));
    if (f && !(f->rlocks = rlocks_new())) {
        free(f);
        return NULL;
    }
    return f;
}

void fsm_free(struct fsm *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->cap; i++)
        fsm_rec_free(f->slots[i]);
    free(f->slots);
    free(f->pending);
    for (size_t i = 0; i < f->n_locks; i++)
        free(f->locks[i].path);
    free(f->locks);
    free(f->members);
    rlocks_free(f->rlocks);
    free(f);
}

size_t fsm_inline_bytes(const struct fsm *f)
{
    return f->inline_bytes;
}

uint64_t fsm_version(const struct fsm *f)
{
    return f->version;
}

/* ---------------- snapshot ---------------- */

/* Hash first for speed, path to break ties: the order depends only on the
 * set of paths, so equal states give equal bytes whatever their history. */
static int fsm_rec_cmp(const void *a, const void *b)
{
    const struct fsm_rec *x = *(struct fsm_rec *const *)a, *y = *(struct fsm_rec *const *)b;
    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    return strcmp(x->path, y->path);
}

static void fsm_snap_write(struct fsm_wr *w, const struct fsm *f, struct fsm_rec *const *recs)
{
    fsm_put(w, FSM_SNAP_MAGIC, 4);
    fsm_put_u32(w, FSM_SNAP_FORMAT);
    fsm_put_u64(w, f->version);
    fsm_put_u64(w, f->now_ms);
    fsm_put_u32(w, (uint32_t)f->n_members);
    for (size_t i = 0; i < f->n_members; i++) {
        fsm_put_u64(w, f->members[i].id);
        fsm_put_str(w, f->members[i].caddr);
        fsm_put_str(w, f->members[i].faddr);
    }
    fsm_put_u32(w, (uint32_t)f->n_locks);
    for (size_t i = 0; i < f->n_locks; i++) {
        fsm_put_str(w, f->locks[i].path);
        fsm_put_u64(w, f->locks[i].node);
        fsm_put_u64(w, f->locks[i].expires_ms);
        fsm_put_u64(w, f->locks[i].wanted);
    }
    fsm_put_u64(w, f->count);
    for (size_t i = 0; i < f->count; i++) {
        const struct fsm_entry *e = &recs[i]->e;
        uint8_t flags = (e->pending ? FSM_SNAP_PENDING : 0) | (e->target ? FSM_SNAP_TARGET : 0) |
                        (e->renamed_from ? FSM_SNAP_RENAMED : 0) | (e->data ? FSM_SNAP_DATA : 0) |
                        (e->xattrs_len ? FSM_SNAP_XATTRS : 0);
        fsm_put_str(w, e->path);
        fsm_put_u8(w, e->kind);
        fsm_put_u8(w, flags);
        fsm_put_u64(w, e->version);
        fsm_put_u64(w, e->origin);
        fsm_put_u32(w, e->mode);
        fsm_put_u32(w, e->uid);
        fsm_put_u32(w, e->gid);
        fsm_put_u64(w, (uint64_t)e->mtime_ns);
        if (e->kind != FSM_TOMBSTONE)
            fsm_put_u64(w, (uint64_t)e->atime_ns);
        if (fsm_kind_has_rdev(e->kind))
            fsm_put_u64(w, e->rdev);
        if (e->kind == FSM_FILE) {
            fsm_put_u64(w, e->size);
            fsm_put(w, e->hash, FSM_HASH_LEN);
        }
        if (e->data)
            fsm_put(w, e->data, recs[i]->data_len);
        if (e->target)
            fsm_put_str(w, e->target);
        if (e->renamed_from)
            fsm_put_str(w, e->renamed_from);
        if (e->xattrs_len) {
            fsm_put_u32(w, e->xattrs_len);
            fsm_put(w, e->xattrs, e->xattrs_len);
        }
        if (e->pending) {
            fsm_put_u32(w, e->n_synced);
            for (uint32_t j = 0; j < e->n_synced; j++)
                fsm_put_u64(w, e->synced[j]);
        }
    }
    size_t nr = rlocks_count(f->rlocks);
    fsm_put_u32(w, (uint32_t)nr);
    for (size_t i = 0; i < nr; i++) {
        const struct rlock *l = rlocks_at(f->rlocks, i);
        fsm_put_str(w, l->path);
        fsm_put_u64(w, l->node);
        fsm_put_u64(w, l->start);
        fsm_put_u64(w, l->end);
        fsm_put_u64(w, l->expires_ms);
        fsm_put_u32(w, l->pid);
        fsm_put_u8(w, l->space);
        fsm_put_u8(w, l->type);
    }
    size_t na = rlocks_ask_count(f->rlocks);
    fsm_put_u32(w, (uint32_t)na);
    for (size_t i = 0; i < na; i++) {
        const struct rlock_ask *a = rlocks_ask_at(f->rlocks, i);
        fsm_put_str(w, a->path);
        fsm_put_u64(w, a->node);
        fsm_put_u64(w, a->start);
        fsm_put_u64(w, a->end);
        fsm_put_u64(w, a->until_ms);
        fsm_put_u8(w, a->space);
        fsm_put_u8(w, a->type);
    }
}

int fsm_snapshot(const struct fsm *f, void **buf, size_t *len)
{
    if (!f || !buf || !len)
        return -EINVAL;
    struct fsm_rec **recs = malloc((f->count ? f->count : 1) * sizeof *recs);
    if (!recs)
        return -ENOMEM;
    size_t n = 0;
    for (size_t i = 0; i < f->cap; i++)
        if (f->slots[i])
            recs[n++] = f->slots[i];
    qsort(recs, n, sizeof *recs, fsm_rec_cmp);

    struct fsm_wr w = {NULL, 0};
    fsm_snap_write(&w, f, recs);
    size_t body = w.len;
    uint8_t *p = malloc(body + 8);
    if (!p) {
        free(recs);
        return -ENOMEM;
    }
    w = (struct fsm_wr){p, 0};
    fsm_snap_write(&w, f, recs);
    free(recs);
    fsm_put_u64(&w, XXH64(p, body, 0));
    *buf = p;
    *len = w.len;
    return 0;
}

static int fsm_restore_entry(struct fsm *nf, struct fsm_rd *r, uint32_t format)
{
    const char *path = fsm_get_path(r);
    uint8_t kind = fsm_get_u8(r), flags = fsm_get_u8(r);
    uint64_t version = fsm_get_u64(r), origin = fsm_get_u64(r);
    uint32_t mode = fsm_get_u32(r), uid = fsm_get_u32(r), gid = fsm_get_u32(r);
    int64_t mtime = (int64_t)fsm_get_u64(r);
    int64_t atime = format >= 4 && kind != FSM_TOMBSTONE ? (int64_t)fsm_get_u64(r) : mtime;
    uint64_t rdev = format >= 4 && fsm_kind_has_rdev(kind) ? fsm_get_u64(r) : 0;
    uint8_t max_kind = format >= 4 ? FSM_KIND_MAX : FSM_TOMBSTONE;
    if (r->bad || kind < FSM_FILE || kind > max_kind || rdev > UINT32_MAX || mode > 07777 ||
        origin == 0 || version == 0 ||
        version > nf->version ||
        (flags & ~(FSM_SNAP_PENDING | FSM_SNAP_TARGET | FSM_SNAP_RENAMED |
                   (format >= 2 ? FSM_SNAP_DATA : 0) | (format >= 6 ? FSM_SNAP_XATTRS : 0))) ||
        ((flags & FSM_SNAP_XATTRS) && !fsm_kind_has_xattrs(kind)) ||
        ((flags & FSM_SNAP_DATA) && (kind != FSM_FILE || !(flags & FSM_SNAP_PENDING))) ||
        !(flags & FSM_SNAP_TARGET) != (kind != FSM_SYMLINK) ||
        ((flags & FSM_SNAP_RENAMED) && !(flags & FSM_SNAP_PENDING)) ||
        (kind == FSM_TOMBSTONE && !(flags & FSM_SNAP_PENDING)) || fsm_lookup(nf, path))
        return -EINVAL;
    struct fsm_rec *rec = fsm_rec_new(path, strlen(path));
    if (!rec)
        return -ENOMEM;
    int rc = -EINVAL;
    rec->e.kind = kind;
    rec->e.version = version;
    rec->e.origin = origin;
    rec->e.mode = mode;
    rec->e.uid = uid;
    rec->e.gid = gid;
    rec->e.rdev = (uint32_t)rdev;
    rec->e.mtime_ns = mtime;
    rec->e.atime_ns = atime;
    if (kind == FSM_FILE) {
        rec->e.size = fsm_get_u64(r);
        const uint8_t *h = fsm_take(r, FSM_HASH_LEN);
        if (h)
            memcpy(rec->e.hash, h, FSM_HASH_LEN);
    }
    if (flags & FSM_SNAP_DATA) {
        if (r->bad || rec->e.size == 0 || rec->e.size > FSM_INLINE_MAX ||
            nf->inline_bytes + rec->e.size > FSM_INLINE_BUDGET)
            goto fail;
        const uint8_t *d = fsm_take(r, (size_t)rec->e.size);
        if (!d)
            goto fail;
        void *copy = malloc((size_t)rec->e.size);
        if (!copy)
            goto nomem;
        memcpy(copy, d, (size_t)rec->e.size);
        rec->e.data = copy;
        rec->data_len = (uint32_t)rec->e.size;
    }
    if (flags & FSM_SNAP_TARGET) {
        const char *t = fsm_get_str(r, PATH_MAX - 1);
        if (!t || !t[0])
            goto fail;
        if (!(rec->e.target = fsm_strdup(t)))
            goto nomem;
    }
    if (flags & FSM_SNAP_RENAMED) {
        const char *from = fsm_get_path(r);
        if (!from)
            goto fail;
        if (!(rec->e.renamed_from = fsm_strdup(from)))
            goto nomem;
    }
    if (flags & FSM_SNAP_XATTRS) {
        uint32_t xl = fsm_get_u32(r);
        if (r->bad || xl == 0 || xl > XATTRS_MAX || xl > fsm_left(r))
            goto fail;
        const uint8_t *x = fsm_take(r, xl);
        if (!x || xattrs_check(x, xl) < 0)
            goto fail;
        if (!(rec->e.xattrs = fsm_memdup(x, xl)))
            goto nomem;
        rec->e.xattrs_len = (uint16_t)xl;
    }
    if (flags & FSM_SNAP_PENDING) {
        uint32_t ns = fsm_get_u32(r);
        if (r->bad || ns == 0 || ns > fsm_left(r) / 8)
            goto fail;
        uint64_t *s = malloc(fsm_synced_cap(ns) * sizeof *s);
        if (!s)
            goto nomem;
        rec->e.synced = s;
        rec->e.n_synced = ns;
        for (uint32_t i = 0; i < ns; i++)
            if ((s[i] = fsm_get_u64(r)) == 0)
                goto fail;
    }
    if (r->bad)
        goto fail;
    if (fsm_table_reserve(nf, nf->count + 1) < 0 ||
        ((flags & FSM_SNAP_PENDING) && fsm_pending_reserve(nf, nf->n_pending + 1) < 0))
        goto nomem;
    fsm_table_insert(nf, rec);
    nf->inline_bytes += rec->data_len;
    if (flags & FSM_SNAP_PENDING)
        fsm_pending_add(nf, rec);
    return 0;
nomem:
    rc = -ENOMEM;
fail:
    fsm_rec_free(rec);
    return rc;
}

static int fsm_restore_into(struct fsm *nf, const uint8_t *p, size_t len)
{
    if (len < 4 + 4 + 8 || memcmp(p, FSM_SNAP_MAGIC, 4) != 0)
        return -EINVAL;
    size_t body = len - 8;
    struct fsm_rd sum = {p, len, body, false};
    if (XXH64(p, body, 0) != fsm_get_u64(&sum))
        return -EINVAL;
    struct fsm_rd r = {p, body, 4, false};
    uint32_t format = fsm_get_u32(&r);
    if (format < 1 || format > FSM_SNAP_FORMAT)
        return -EINVAL;
    nf->version = fsm_get_u64(&r);
    nf->now_ms = fsm_get_u64(&r);

    uint32_t nm = fsm_get_u32(&r);
    if (r.bad || nm > fsm_left(&r) / FSM_MIN_SNAP_MEMBER)
        return -EINVAL;
    if (nm && !(nf->members = calloc(nm, sizeof *nf->members)))
        return -ENOMEM;
    nf->members_cap = nm;
    for (uint32_t i = 0; i < nm; i++) {
        struct fsm_member *m = &nf->members[i];
        m->id = fsm_get_u64(&r);
        const char *ca = fsm_get_str(&r, FSM_ADDR_MAX - 1), *fa = fsm_get_str(&r, FSM_ADDR_MAX - 1);
        if (r.bad || m->id == 0 || (i > 0 && m->id <= m[-1].id) || !ca[0] || !fa[0])
            return -EINVAL;
        strcpy(m->caddr, ca);
        strcpy(m->faddr, fa);
        nf->n_members++;
    }

    uint32_t nl = fsm_get_u32(&r);
    if (r.bad || nl > fsm_left(&r) / FSM_MIN_SNAP_LOCK)
        return -EINVAL;
    if (nl && !(nf->locks = calloc(nl, sizeof *nf->locks)))
        return -ENOMEM;
    nf->locks_cap = nl;
    for (uint32_t i = 0; i < nl; i++) {
        const char *path = fsm_get_path(&r);
        uint64_t node = fsm_get_u64(&r), exp = fsm_get_u64(&r);
        uint64_t wanted = format >= 3 ? fsm_get_u64(&r) : 0;
        if (r.bad || node == 0 || wanted == node ||
            (i > 0 && strcmp(nf->locks[i - 1].path, path) >= 0))
            return -EINVAL;
        if (!(nf->locks[i].path = fsm_strdup(path)))
            return -ENOMEM;
        nf->locks[i].node = node;
        nf->locks[i].expires_ms = exp;
        nf->locks[i].wanted = wanted;
        nf->n_wanted += wanted != 0;
        nf->n_locks++;
    }

    uint64_t ne = fsm_get_u64(&r);
    if (r.bad || ne > fsm_left(&r) / FSM_MIN_SNAP_ENTRY)
        return -EINVAL;
    if (fsm_table_reserve(nf, (size_t)ne) < 0)
        return -ENOMEM;
    for (uint64_t i = 0; i < ne; i++) {
        int rc = fsm_restore_entry(nf, &r, format);
        if (rc < 0)
            return rc;
    }
    if (format >= 5) {
        uint32_t nr = fsm_get_u32(&r);
        if (r.bad || nr > fsm_left(&r) / FSM_MIN_SNAP_RLOCK)
            return -EINVAL;
        for (uint32_t i = 0; i < nr; i++) {
            struct rlock l = {.path = fsm_get_path(&r)};
            l.node = fsm_get_u64(&r);
            l.start = fsm_get_u64(&r);
            l.end = fsm_get_u64(&r);
            l.expires_ms = fsm_get_u64(&r);
            l.pid = fsm_get_u32(&r);
            l.space = fsm_get_u8(&r);
            l.type = fsm_get_u8(&r);
            if (r.bad)
                return -EINVAL;
            int rc = rlocks_restore_add(nf->rlocks, &l);
            if (rc < 0)
                return rc;
        }
        uint32_t na = fsm_get_u32(&r);
        if (r.bad || na > fsm_left(&r) / FSM_MIN_SNAP_RLOCK)
            return -EINVAL;
        for (uint32_t i = 0; i < na; i++) {
            struct rlock_ask a = {.path = fsm_get_path(&r)};
            a.node = fsm_get_u64(&r);
            a.start = fsm_get_u64(&r);
            a.end = fsm_get_u64(&r);
            a.until_ms = fsm_get_u64(&r);
            a.space = fsm_get_u8(&r);
            a.type = fsm_get_u8(&r);
            if (r.bad)
                return -EINVAL;
            int rc = rlocks_restore_ask(nf->rlocks, &a);
            if (rc < 0)
                return rc;
        }
    }
    return r.off == body ? 0 : -EINVAL;
}

int fsm_restore(struct fsm *f, const void *buf, size_t len)
{
    if (!f || !buf)
        return -EINVAL;
    struct fsm *nf = fsm_new();
    if (!nf)
        return -ENOMEM;
    int rc = fsm_restore_into(nf, buf, len);
    if (rc == 0) {
        struct fsm old = *f;
        *f = *nf;
        *nf = old;
    }
    fsm_free(nf);
    return rc;
}

/* ---------------- queries ---------------- */

const struct fsm_entry *fsm_get(const struct fsm *f, const char *path)
{
    struct fsm_rec *r = path ? fsm_lookup(f, path) : NULL;
    return r ? &r->e : NULL;
}

bool fsm_entry_has(const struct fsm_entry *e, uint64_t node)
{
    return !e->pending || fsm_synced_has(e, node);
}

bool fsm_node_has(const struct fsm *f, const char *path, uint64_t node)
{
    const struct fsm_entry *e = fsm_get(f, path);
    return !e || fsm_entry_has(e, node);
}

bool fsm_on_majority(const struct fsm *f, const char *path)
{
    const struct fsm_entry *e = fsm_get(f, path);
    if (!e || !e->pending || e->kind != FSM_FILE || e->size == 0 || e->data)
        return true;
    size_t have = 0;
    for (size_t i = 0; i < f->n_members; i++)
        if (fsm_synced_has(e, f->members[i].id))
            have++;
    return 2 * have > f->n_members;
}

int fsm_foreach_pending(const struct fsm *f, uint64_t node, fsm_visit_fn fn, void *arg)
{
    for (size_t i = 0; i < f->n_pending; i++) {
        const struct fsm_entry *e = &f->pending[i]->e;
        if (fsm_synced_has(e, node))
            continue;
        int rc = fn(e, arg);
        if (rc)
            return rc;
    }
    return 0;
}

int fsm_foreach(const struct fsm *f, fsm_visit_fn fn, void *arg)
{
    for (size_t i = 0; i < f->cap; i++) {
        if (!f->slots[i])
            continue;
        int rc = fn(&f->slots[i]->e, arg);
        if (rc)
            return rc;
    }
    return 0;
}

size_t fsm_entry_count(const struct fsm *f)
{
    return f->count;
}

size_t fsm_pending_count(const struct fsm *f)
{
    return f->n_pending;
}

int fsm_lock_get(const struct fsm *f, const char *path, uint64_t *holder, uint64_t *expires_ms)
{
    bool found;
    size_t i = path ? fsm_lock_pos(f, path, &found) : 0;
    if (!path || !found)
        return 0;
    if (holder)
        *holder = f->locks[i].node;
    if (expires_ms)
        *expires_ms = f->locks[i].expires_ms;
    return 1;
}

size_t fsm_locks_of(const struct fsm *f, uint64_t node)
{
    size_t n = 0;
    for (size_t i = 0; i < f->n_locks; i++)
        n += f->locks[i].node == node;
    return n;
}

uint64_t fsm_lock_wanted(const struct fsm *f, const char *path)
{
    bool found;
    size_t i = fsm_lock_pos(f, path, &found);
    return found ? f->locks[i].wanted : 0;
}

int fsm_foreach_wanted(const struct fsm *f, uint64_t holder, fsm_wanted_fn fn, void *arg)
{
    for (size_t i = 0, seen = 0; i < f->n_locks && seen < f->n_wanted; i++) {
        const struct fsm_lock *l = &f->locks[i];
        if (!l->wanted)
            continue;
        seen++;
        if (l->node == holder) {
            int rc = fn(l->path, l->wanted, arg);
            if (rc)
                return rc;
        }
    }
    return 0;
}

int fsm_rlock_test(const struct fsm *f, const char *path, uint64_t node, uint8_t space,
                   uint8_t type, uint64_t start, uint64_t end, struct rlock *out)
{
    return rlocks_test(f->rlocks, path, node, space, type, start, end, f->now_ms, out);
}

size_t fsm_rlocks_of(const struct fsm *f, uint64_t node)
{
    return rlocks_of(f->rlocks, node);
}

size_t fsm_member_count(const struct fsm *f)
{
    return f->n_members;
}

const struct fsm_member *fsm_member_at(const struct fsm *f, size_t i)
{
    return i < f->n_members ? &f->members[i] : NULL;
}

const struct fsm_member *fsm_member_get(const struct fsm *f, uint64_t id)
{
    bool found;
    size_t i = fsm_member_pos(f, id, &found);
    return found ? &f->members[i] : NULL;
}
