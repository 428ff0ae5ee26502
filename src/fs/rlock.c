/* Record locks (fcntl POSIX and OFD locks, flock) across the cluster: the
 * node's own processes are decided here, in a local table, without a round
 * trip; what the node as a whole holds is mirrored in the catalog (RLOCK,
 * RUNLOCK), where other nodes' conflicts are decided. See docs/locks.md. */
#include <assert.h>
#include <sys/file.h>

#include "cluster/rlocks.h"
#include "fs/fs_int.h"

#define RL_SLICE_MS 50 /* how often a blocked waiter looks for an interrupt */

/* One lock of one local owner (a process for POSIX locks, an open file for
 * OFD locks and flock). */
struct rl_ent {
    uint64_t owner;
    struct handle *h;          /* taken through it: goes at its release */
    uint64_t start, end;
    pid_t pid;
    uint8_t space, type;
};

/* The locks of one path on this node. */
struct rl_file {
    struct rl_file *next;
    char *path;                /* owned */
    struct rl_ent *v;
    size_t n, cap;
    bool changing;             /* a thread is changing what the node holds in the catalog */
    bool leased;               /* counted in cluster_hold_locks */
    unsigned users;            /* threads working on it: keeps it alive */
};

static uint8_t rl_type_of(short t)
{
    return t == F_WRLCK ? RLOCK_WRITE : t == F_RDLCK ? RLOCK_READ : 0;
}

static bool rl_overlap(const struct rl_ent *e, uint8_t space, uint64_t s, uint64_t end)
{
    return e->space == space && e->start < end && s < e->end;
}

/* Caller holds fs->rl_mu. */
static struct rl_file *rl_find(struct fs *fs, const char *rel, bool create)
{
    for (struct rl_file *f = fs->rl_files; f; f = f->next)
        if (strcmp(f->path, rel) == 0)
            return f;
    if (!create)
        return NULL;
    struct rl_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(rel))) {
        free(f);
        return NULL;
    }
    f->next = fs->rl_files;
    fs->rl_files = f;
    return f;
}

/* Caller holds fs->rl_mu. */
static void rl_maybe_free(struct fs *fs, struct rl_file *f)
{
    if (f->n || f->users || f->changing || f->leased)
        return;
    struct rl_file **pp = &fs->rl_files;
    while (*pp != f)
        pp = &(*pp)->next;
    *pp = f->next;
    free(f->v);
    free(f->path);
    free(f);
}

static int rl_reserve(struct rl_file *f, size_t more)
{
    if (f->n + more <= f->cap)
        return 0;
    size_t cap = f->cap ? 2 * f->cap : 4;
    while (cap < f->n + more)
        cap *= 2;
    struct rl_ent *v = realloc(f->v, cap * sizeof *v);
    if (!v)
        return -ENOMEM;
    f->v = v;
    f->cap = cap;
    return 0;
}

/* Another local owner's lock that conflicts, or NULL. */
static const struct rl_ent *rl_local_conflict(const struct rl_file *f, uint64_t owner, uint8_t space,
                                              uint8_t type, uint64_t s, uint64_t e)
{
    for (size_t i = 0; i < f->n; i++) {
        const struct rl_ent *x = &f->v[i];
        if (x->owner != owner && rl_overlap(x, space, s, e) &&
            (type == RLOCK_WRITE || x->type == RLOCK_WRITE))
            return x;
    }
    return NULL;
}

/* Cut [s, e) out of owner's locks (one may split: room for one more is
 * reserved by the caller). */
static void rl_cut(struct rl_file *f, uint64_t owner, uint8_t space, uint64_t s, uint64_t e)
{
    for (size_t i = 0; i < f->n;) {
        struct rl_ent *x = &f->v[i];
        if (x->owner != owner || !rl_overlap(x, space, s, e)) {
            i++;
            continue;
        }
        if (x->start >= s && x->end <= e) {
            f->v[i] = f->v[--f->n];
            continue;
        }
        if (x->start < s && x->end > e) {
            struct rl_ent right = *x;
            right.start = e;
            x->end = s;
            f->v[f->n++] = right;
        } else if (x->start < s) {
            x->end = s;
        } else {
            x->start = e;
        }
        i++;
    }
}

/* The strongest type any local lock in v[0..n) has at point x of space. */
static uint8_t rl_max_at(const struct rl_ent *v, size_t n, uint8_t space, uint64_t x)
{
    uint8_t t = 0;
    for (size_t i = 0; i < n; i++)
        if (v[i].space == space && v[i].start <= x && x < v[i].end && v[i].type > t)
            t = v[i].type;
    return t;
}

/* Does what the node holds (the union of its local locks) give type over
 * all of [s, e)? */
static bool rl_covered(const struct rl_file *f, uint8_t space, uint8_t type, uint64_t s, uint64_t e)
{
    uint64_t x = s;
    while (x < e) {
        if (rl_max_at(f->v, f->n, space, x) < type)
            return false;
        /* Next boundary after x. */
        uint64_t next = e;
        for (size_t i = 0; i < f->n; i++) {
            if (f->v[i].space != space)
                continue;
            if (f->v[i].start > x && f->v[i].start < next)
                next = f->v[i].start;
            if (f->v[i].end > x && f->v[i].end < next)
                next = f->v[i].end;
        }
        x = next;
    }
    return true;
}

static int rl_u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The stretches where the node's strongest lock in space fell from old to
 * f's: out[i] = {start, end, type left (0: none)}, merged. *n_out, or
 * -ENOMEM. out is malloc'd, the caller frees it. */
static int rl_drops(const struct rl_ent *old, size_t n_old, const struct rl_file *f, uint8_t space,
                    struct rl_ent **out, size_t *n_out)
{
    *out = NULL;
    *n_out = 0;
    uint64_t *b = malloc((2 * n_old + 1) * sizeof *b);
    struct rl_ent *d = malloc((2 * n_old + 1) * sizeof *d);
    if (!b || !d) {
        free(b);
        free(d);
        return -ENOMEM;
    }
    size_t nb = 0, nd = 0;
    for (size_t i = 0; i < n_old; i++)
        if (old[i].space == space) {
            b[nb++] = old[i].start;
            b[nb++] = old[i].end;
        }
    qsort(b, nb, sizeof *b, rl_u64_cmp);
    for (size_t i = 0; i + 1 < nb; i++) {
        if (b[i] == b[i + 1])
            continue;
        uint8_t was = rl_max_at(old, n_old, space, b[i]), now = rl_max_at(f->v, f->n, space, b[i]);
        if (was <= now)
            continue;
        if (nd && d[nd - 1].end == b[i] && d[nd - 1].type == now)
            d[nd - 1].end = b[i + 1];
        else
            d[nd++] = (struct rl_ent){.start = b[i], .end = b[i + 1], .space = space, .type = now};
    }
    free(b);
    *out = d;
    *n_out = nd;
    return 0;
}

static void rl_sent(void *arg, int rc, const struct cluster_reply *r)
{
    (void)arg;
    (void)r;
    if (rc < 0)
        log_debug("record lock release not committed (%s): the lease frees it", strerror(-rc));
}

/* Give up what the node no longer needs: RUNLOCK where no local lock is
 * left, a downgrading RLOCK where only reads are. They go through the
 * outbox after the path's announces (handle_flush_path), so whoever takes
 * the range next reads what this node wrote under it. Caller holds
 * nothing; f is pinned (changing). */
static void rl_send_drops(struct fs *fs, const char *rel, const struct rl_ent *d, size_t nd)
{
    struct nsync *ns = fs->ns;
    if (nd == 0)
        return;
    handle_flush_path(fs, rel);
    for (size_t i = 0; i < nd; i++) {
        struct fsm_cmd cmd = {.op = d[i].type ? FSM_OP_RLOCK : FSM_OP_RUNLOCK, .path = rel,
                              .node = ns->self_id, .rspace = d[i].space, .rtype = d[i].type,
                              .rstart = d[i].start, .rend = d[i].end, .pid = (uint32_t)getpid(),
                              .lease_ms = ns->cfg.lease_ms};
        int rc = cluster_send(ns->cluster, &cmd, fs_submit_timeout(ns), rl_sent, NULL);
        if (rc < 0)
            log_warn("record lock release on %s not sent: %s (the lease frees it)", rel,
                     strerror(-rc));
    }
}

/* Caller holds fs->rl_mu: wait for f to be free of another thread's change
 * of the node's catalog ranges, then take that role. */
static void rl_begin_change(struct fs *fs, struct rl_file *f)
{
    while (f->changing)
        pthread_cond_wait(&fs->rl_cv, &fs->rl_mu);
    f->changing = true;
}

/* Caller holds fs->rl_mu. Keeps the lease accounting in step with whether
 * the node holds anything on f. */
static void rl_end_change(struct fs *fs, struct rl_file *f)
{
    f->changing = false;
    bool holds = f->n > 0;
    if (holds != f->leased) {
        cluster_hold_locks(fs->ns->cluster, holds ? +1 : -1);
        f->leased = holds;
    }
    pthread_cond_broadcast(&fs->rl_cv);
}

/* The node's locks in space went from `from` to f's: send what it gives up
 * (rl_drops, rl_send_drops), without fs->rl_mu while sending. Caller holds
 * fs->rl_mu and the change role. Out of memory, the node keeps more than it
 * needs until its next release there. */
static void rl_send_fall(struct fs *fs, struct rl_file *f, const struct rl_ent *from, size_t n,
                         uint8_t space)
{
    struct rl_ent *d;
    size_t nd;
    if (rl_drops(from, n, f, space, &d, &nd) < 0)
        return;
    pthread_mutex_unlock(&fs->rl_mu);
    rl_send_drops(fs, f->path, d, nd);
    pthread_mutex_lock(&fs->rl_mu);
    free(d);
}

/* Apply a change of owner's locks (type 0: unlock) to the local table, then
 * send what the node gives up. Caller holds fs->rl_mu and the change role;
 * returns with the same. */
static int rl_apply_local(struct fs *fs, struct rl_file *f, struct handle *h, uint64_t owner,
                          uint8_t space, uint8_t type, uint64_t s, uint64_t e, pid_t pid)
{
    struct rl_ent *old = malloc((f->n + 1) * sizeof *old);
    if (!old || rl_reserve(f, 2) < 0) {
        free(old);
        return -ENOLCK;
    }
    size_t n_old = f->n;
    memcpy(old, f->v, n_old * sizeof *old);
    rl_cut(f, owner, space, s, e);
    if (type)
        f->v[f->n++] = (struct rl_ent){owner, h, s, e, pid, space, type};
    rl_send_fall(fs, f, old, n_old, space);
    free(old);
    return 0;
}

/* A grant the caller cannot use (the copies did not arrive): give back what
 * it added to what the node holds, leaving the owner's locks as they were,
 * as a failed F_SETLK does. Caller holds fs->rl_mu and the change role. */
static void rl_revert_grant(struct fs *fs, struct rl_file *f, struct handle *h, uint64_t owner,
                            uint8_t space, uint8_t type, uint64_t s, uint64_t e, pid_t pid)
{
    size_t n = f->n;
    struct rl_ent *kept = malloc((n + 1) * sizeof *kept), *granted = malloc((n + 2) * sizeof *granted);
    if (!kept || !granted || rl_reserve(f, 2) < 0) {
        free(kept);
        free(granted);
        return; /* the node keeps the range until its lease or its next release there */
    }
    memcpy(kept, f->v, n * sizeof *kept);
    rl_cut(f, owner, space, s, e);
    f->v[f->n++] = (struct rl_ent){owner, h, s, e, pid, space, type};
    size_t ng = f->n;
    memcpy(granted, f->v, ng * sizeof *granted);
    memcpy(f->v, kept, n * sizeof *kept);
    f->n = n;
    free(kept);
    rl_send_fall(fs, f, granted, ng, space);
    free(granted);
}

struct rl_scan {
    const char *rel;
    size_t dl;         /* length of rel's directory part ("" at the root) */
    uint64_t version;
};

/* A pending entry this node lacks, in rel's directory, from before the grant. */
static int rl_lacking(const struct fsm_entry *e, void *arg)
{
    const struct rl_scan *sc = arg;
    if (e->version > sc->version)
        return 0;
    const char *slash = strrchr(e->path, '/');
    size_t dl = slash ? (size_t)(slash - e->path) : 0;
    return dl == sc->dl && strncmp(e->path, sc->rel, dl) == 0;
}

/* Before a local process relies on a range the node just got from the
 * catalog (the grant's version): this node's copies of the path, and of
 * every entry of its directory (a database's journal beside it), are at
 * least as new as what the catalog had then. */
static bool rl_dir_current(struct fs *fs, const char *rel, uint64_t version)
{
    struct nsync *ns = fs->ns;
    const char *slash = strrchr(rel, '/');
    struct rl_scan sc = {rel, slash ? (size_t)(slash - rel) : 0, version};
    pthread_rwlock_rdlock(&ns->fsm_lock);
    bool ok = fsm_version(ns->fsm) >= version &&
              fsm_foreach_pending(ns->fsm, ns->self_id, rl_lacking, &sc) == 0;
    pthread_rwlock_unlock(&ns->fsm_lock);
    return ok;
}

/* Take [s, e) as type for the node in the catalog, waiting (if wait) while
 * another node holds a conflicting range; then wait until the local copies
 * are current. 0, -EAGAIN (held elsewhere, !wait), -EINTR (interrupted),
 * -EROFS, -EIO (copies not current within lock_timeout). No lock held. */
static int rl_cluster_take(struct fs *fs, const char *rel, uint8_t space, uint8_t type, uint64_t s,
                           uint64_t e, pid_t pid, bool wait)
{
    struct nsync *ns = fs->ns;
    unsigned backoff = BACKOFF_FIRST_MS;
    uint64_t seen = 0;
    struct cluster_reply r;
    for (;;) {
        struct fsm_cmd cmd = {.op = FSM_OP_RLOCK, .path = rel, .lease_ms = ns->cfg.lease_ms,
                              .rspace = space, .rtype = type, .rstart = s, .rend = e,
                              .pid = (uint32_t)pid};
        int rc = fs_submit(fs, &cmd, &r);
        if (rc < 0)
            return rc;
        if (r.status == 0)
            break;
        if (r.status != -EBUSY)
            return r.status == -ENOMEM ? -ENOLCK : -EIO;
        if (!wait)
            return -EAGAIN;
        /* Retry when the local catalog shows the range free, and at least
         * every backoff (a holder whose lease ran out frees it only in the
         * apply of a command stamped later). */
        uint64_t until = nsync_mono_ms() + backoff;
        for (;;) {
            if (ll_interrupted())
                return -EINTR;
            uint64_t now = nsync_mono_ms();
            if (now >= until)
                break;
            pthread_rwlock_rdlock(&ns->fsm_lock);
            int busy = fsm_rlock_test(ns->fsm, rel, ns->self_id, space, type, s, e, NULL);
            pthread_rwlock_unlock(&ns->fsm_lock);
            if (!busy)
                break;
            unsigned slice = until - now > RL_SLICE_MS ? RL_SLICE_MS : (unsigned)(until - now);
            cluster_wait_change(ns->cluster, &seen, slice);
        }
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
    uint64_t deadline = nsync_mono_ms() + fs_lock_timeout(ns);
    while (!rl_dir_current(fs, rel, r.version)) {
        uint64_t now = nsync_mono_ms();
        if (now >= deadline) {
            log_warn("record lock on %s: the newest copies not installed here within %u ms", rel,
                     fs_lock_timeout(ns));
            return -EIO; /* the caller gives the range back */
        }
        cluster_wait_change(ns->cluster, &seen, RL_SLICE_MS);
    }
    return 0;
}

int rlock_set(struct fs *fs, struct handle *h, const char *rel, uint64_t owner, uint8_t space,
              short ltype, uint64_t s, uint64_t e, pid_t pid, bool wait)
{
    uint8_t type = rl_type_of(ltype);
    if (ltype != F_UNLCK && !type)
        return -EINVAL;
    if (s >= e)
        return type ? -EINVAL : 0;
    pthread_mutex_lock(&fs->rl_mu);
    struct rl_file *f = rl_find(fs, rel, type != 0);
    if (!f) {
        pthread_mutex_unlock(&fs->rl_mu);
        return type ? -ENOLCK : 0; /* nothing held: nothing to unlock */
    }
    f->users++;
    int rc = 0;
    bool moved = false;
    for (;;) {
        if (type && rl_local_conflict(f, owner, space, type, s, e)) {
            if (!wait) {
                rc = -EAGAIN;
                break;
            }
            if (ll_interrupted()) {
                rc = -EINTR;
                break;
            }
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_nsec += RL_SLICE_MS * 1000000L;
            if (ts.tv_nsec >= 1000000000L)
                ts.tv_sec++, ts.tv_nsec -= 1000000000L;
            pthread_cond_timedwait(&fs->rl_cv, &fs->rl_mu, &ts);
            continue;
        }
        if (f->changing) {
            pthread_cond_wait(&fs->rl_cv, &fs->rl_mu);
            continue; /* look at the local locks again */
        }
        rl_begin_change(fs, f);
        if (type && !rl_covered(f, space, type, s, e)) {
            pthread_mutex_unlock(&fs->rl_mu);
            rc = fs_gate(fs);
            if (rc == 0)
                rc = rl_cluster_take(fs, rel, space, type, s, e, pid, wait);
            if (rc == 0 && h)
                moved = handle_follow(fs, h, rel);
            pthread_mutex_lock(&fs->rl_mu);
            if (rc == -EIO)
                rl_revert_grant(fs, f, h, owner, space, type, s, e, pid);
            if (rc < 0) {
                rl_end_change(fs, f);
                break;
            }
        }
        rc = rl_apply_local(fs, f, h, owner, space, type, s, e, pid);
        if (rc == 0 && type)
            atomic_store(&fs->rl_used, true);
        rl_end_change(fs, f);
        break;
    }
    f->users--;
    rl_maybe_free(fs, f);
    pthread_mutex_unlock(&fs->rl_mu);
    return rc < 0 ? rc : moved ? 1 : 0;
}

int rlock_get(struct fs *fs, const char *rel, uint64_t owner, uint8_t space, struct flock *fl)
{
    struct nsync *ns = fs->ns;
    uint8_t type = rl_type_of(fl->l_type);
    if (!type)
        return -EINVAL;
    uint64_t s = (uint64_t)fl->l_start;
    uint64_t e = fl->l_len == 0 ? RLOCK_EOF : s + (uint64_t)fl->l_len;
    pthread_mutex_lock(&fs->rl_mu);
    struct rl_file *f = rl_find(fs, rel, false);
    const struct rl_ent *x = f ? rl_local_conflict(f, owner, space, type, s, e) : NULL;
    if (x) {
        fl->l_type = x->type == RLOCK_WRITE ? F_WRLCK : F_RDLCK;
        fl->l_start = (off_t)x->start;
        fl->l_len = x->end == RLOCK_EOF ? 0 : (off_t)(x->end - x->start);
        fl->l_pid = x->pid;
        fl->l_whence = SEEK_SET;
        pthread_mutex_unlock(&fs->rl_mu);
        return 0;
    }
    pthread_mutex_unlock(&fs->rl_mu);
    /* A read barrier: the catalog here then has every lock another node's
     * process got before this call (SQLite tests a journal's owner so). */
    int rc = cluster_sync_point(ns->cluster, fs_submit_timeout(ns));
    if (rc < 0)
        return rc == -ETIMEDOUT ? -EIO : -EROFS;
    struct rlock other;
    pthread_rwlock_rdlock(&ns->fsm_lock);
    int busy = fsm_rlock_test(ns->fsm, rel, ns->self_id, space, type, s, e, &other);
    pthread_rwlock_unlock(&ns->fsm_lock);
    if (busy) {
        /* Another node's process: its pid means nothing here, and a local
         * process with that number must not be blamed. */
        fl->l_type = other.type == RLOCK_WRITE ? F_WRLCK : F_RDLCK;
        fl->l_start = (off_t)other.start;
        fl->l_len = other.end == RLOCK_EOF ? 0 : (off_t)(other.end - other.start);
        fl->l_pid = 0;
        fl->l_whence = SEEK_SET;
    } else {
        fl->l_type = F_UNLCK;
    }
    return 0;
}

/* Drop every lock of the table that matches (owner in space, or taken
 * through h), file by file. */
static void rl_drop_matching(struct fs *fs, const char *only, uint64_t owner, int space,
                             const struct handle *h)
{
    pthread_mutex_lock(&fs->rl_mu);
    for (struct rl_file *f = fs->rl_files, *next; f; f = next) {
        f->users++;
        if (!only || strcmp(f->path, only) == 0) {
            for (;;) {
                size_t i;
                for (i = 0; i < f->n; i++)
                    if (h ? f->v[i].h == h : f->v[i].owner == owner && f->v[i].space == space)
                        break;
                if (i == f->n)
                    break;
                struct rl_ent x = f->v[i];
                rl_begin_change(fs, f);
                rl_apply_local(fs, f, NULL, x.owner, x.space, 0, x.start, x.end, 0);
                rl_end_change(fs, f);
            }
        }
        next = f->next;
        f->users--;
        rl_maybe_free(fs, f);
    }
    pthread_mutex_unlock(&fs->rl_mu);
}

void rlock_release_owner(struct fs *fs, const char *rel, uint64_t owner, uint8_t space)
{
    if (!atomic_load(&fs->rl_used))
        return; /* nobody here ever locked: the common close() */
    rl_drop_matching(fs, rel, owner, space, NULL);
}

void rlock_release_handle(struct fs *fs, struct handle *h)
{
    if (!atomic_load(&fs->rl_used))
        return;
    rl_drop_matching(fs, NULL, 0, 0, h);
}

void rlock_free_all(struct fs *fs)
{
    for (struct rl_file *f = fs->rl_files, *next; f; f = next) {
        next = f->next;
        free(f->v);
        free(f->path);
        free(f);
    }
    fs->rl_files = NULL;
    pthread_cond_destroy(&fs->rl_cv);
    pthread_mutex_destroy(&fs->rl_mu);
}
