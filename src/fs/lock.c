/* The cluster lock of a path and the node's table of the locks it holds:
 * LOCK through raft with back-off, the wait for the local copy to be current,
 * and the sharing of one lock by every handle and operation of this node. */
#include <assert.h>

#include "fs/fs_int.h"

/* cluster_submit with the node filled in; a failure to reach the cluster is
 * logged here once, with the path, and becomes EROFS (no quorum). */
int fs_submit(struct fs *fs, struct fsm_cmd *cmd, struct cluster_reply *r)
{
    struct nsync *ns = fs->ns;
    cmd->node = ns->self_id;
    int rc = cluster_submit(ns->cluster, cmd, fs_submit_timeout(ns), r);
    if (rc < 0) {
        log_error("cluster command %u on %s failed: %s", (unsigned)cmd->op,
                  cmd->path ? cmd->path : "-", strerror(-rc));
        return rc == -EINVAL ? -EINVAL : -EROFS;
    }
    durable_note(fs, r->version);
    return 0;
}

/* Every change starts here: while the node knows it has no quorum it fails
 * at once (EROFS) rather than after submit_timeout, and reads go on. */
int fs_gate(struct fs *fs)
{
    return cluster_writable(fs->ns->cluster);
}

static bool lock_taken_elsewhere(struct fs *fs, const char *rel)
{
    struct nsync *ns = fs->ns;
    uint64_t holder = 0, expires = 0;
    pthread_rwlock_rdlock(&ns->fsm_lock);
    int has = fsm_lock_get(ns->fsm, rel, &holder, &expires);
    pthread_rwlock_unlock(&ns->fsm_lock);
    return has == 1 && holder != ns->self_id;
}

/* The local copy of rel is the catalog's version `want` (or newer), so a
 * writer starting now starts from the latest bytes. lock_version is the
 * version of the LOCK that granted us the path: until this node's own
 * catalog has applied that far, it may not even know `want` yet, and "no
 * entry" would wrongly read as "nothing to wait for". */
static bool lock_local_current(struct fs *fs, const char *rel, uint64_t want, uint64_t lock_version)
{
    struct nsync *ns = fs->ns;
    pthread_rwlock_rdlock(&ns->fsm_lock);
    bool ok = fsm_version(ns->fsm) >= lock_version;
    if (ok) {
        const struct fsm_entry *e = fsm_get(ns->fsm, rel);
        /* No entry: a settled tombstone was dropped, so every node has it. */
        ok = !e || (e->version >= want && fsm_node_has(ns->fsm, rel, ns->self_id));
    }
    pthread_rwlock_unlock(&ns->fsm_lock);
    return ok;
}

static void lock_send_unlock(struct fs *fs, const char *rel)
{
    struct fsm_cmd cmd = {.op = FSM_OP_UNLOCK, .path = rel};
    struct cluster_reply r;
    if (fs_submit(fs, &cmd, &r) == 0 && r.status != 0)
        log_error("unlock %s refused: %s", rel, strerror(-r.status));
}

/* Take rel's cluster lock for this node and wait until the local copy is
 * current. On success the node counts one more held lock (for RENEW). */
static int lock_cluster(struct fs *fs, const char *rel)
{
    struct nsync *ns = fs->ns;
    uint64_t deadline = nsync_mono_ms() + fs_lock_timeout(ns);
    unsigned backoff = BACKOFF_FIRST_MS;
    uint64_t seen = 0;
    struct cluster_reply r;
    for (;;) {
        struct fsm_cmd cmd = {.op = FSM_OP_LOCK, .path = rel, .lease_ms = ns->cfg.lease_ms};
        int rc = fs_submit(fs, &cmd, &r);
        if (rc < 0)
            return rc;
        if (r.status == 0)
            break;
        if (r.status != -EBUSY) {
            log_error("lock %s: unexpected answer %s", rel, strerror(-r.status));
            return r.status < 0 ? r.status : -EIO;
        }
        uint64_t now = nsync_mono_ms();
        if (now >= deadline) {
            log_warn("lock %s: still held by node %016llx after %u ms, giving up", rel,
                     (unsigned long long)r.lock_holder, fs_lock_timeout(ns));
            return -EBUSY;
        }
        /* Sleep the backoff, but retry at once when the local FSM shows the
         * holder let go (an UNLOCK is applied here too). */
        uint64_t until = now + backoff < deadline ? now + backoff : deadline;
        while ((now = nsync_mono_ms()) < until && lock_taken_elsewhere(fs, rel))
            cluster_wait_change(ns->cluster, &seen, (unsigned)(until - now));
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
    /* Renew from the grant on: the version wait may outlast a lease. */
    cluster_hold_locks(ns->cluster, +1);
    if (r.path_version > 0) {
        uint64_t vdeadline = nsync_mono_ms() + fs_lock_timeout(ns);
        while (!lock_local_current(fs, rel, r.path_version, r.version)) {
            uint64_t now = nsync_mono_ms();
            if (now >= vdeadline) {
                log_warn("lock %s: version %llu not installed here within %u ms", rel,
                         (unsigned long long)r.path_version, fs_lock_timeout(ns));
                lock_send_unlock(fs, rel);
                cluster_hold_locks(ns->cluster, -1);
                return -EBUSY;
            }
            unsigned slice = vdeadline - now > 200 ? 200 : (unsigned)(vdeadline - now);
            cluster_wait_change(ns->cluster, &seen, slice);
        }
    }
    return 0;
}

size_t lock_bucket(const char *path)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)path; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    return (size_t)(h % LOCK_BUCKETS);
}

/* Caller holds fs->mu. */
struct lock_ent *lock_find(struct fs *fs, const char *path)
{
    for (struct lock_ent *e = fs->buckets[lock_bucket(path)]; e; e = e->next)
        if (strcmp(e->path, path) == 0)
            return e;
    return NULL;
}

/* Caller holds fs->mu. Frees e once nobody needs it. */
void lock_maybe_free(struct fs *fs, struct lock_ent *e)
{
    if (e->refs || e->waiters || e->held || e->acquiring || e->releasing || e->announcing ||
        e->inflight)
        return;
    assert(!e->cached);
    struct lock_ent **pp = &fs->buckets[lock_bucket(e->path)];
    while (*pp != e)
        pp = &(*pp)->next;
    *pp = e->next;
    free(e->path);
    free(e);
}

/* Become a holder of rel's lock: share it if this node already holds it,
 * else take it through the cluster (one thread does, the others wait). */
int lock_path(struct fs *fs, const char *rel, struct held *out)
{
    pthread_mutex_lock(&fs->mu);
    struct lock_ent *e = lock_find(fs, rel);
    if (!e) {
        e = calloc(1, sizeof *e);
        char *p = e ? strdup(rel) : NULL;
        if (!p) {
            free(e);
            pthread_mutex_unlock(&fs->mu);
            return -ENOMEM;
        }
        e->path = p;
        size_t b = lock_bucket(rel);
        e->next = fs->buckets[b];
        fs->buckets[b] = e;
    }
    e->waiters++;
    int rc;
    for (;;) {
        if (e->held && !e->releasing && e->cached && !tokens_still_ours(fs, e)) {
            /* Cached, but lost meanwhile (lease lapsed, another node took it). */
            log_debug("lock %s: the cached lock is no longer ours, asking again", rel);
            tokens_leave(fs, e);
            e->held = false;
            e->fresh = false;
            cluster_hold_locks(fs->ns->cluster, -1);
        }
        if (e->held && !e->releasing) {
            tokens_leave(fs, e);
            e->refs++;
            rc = 0;
            break;
        }
        if (e->acquiring) {
            unsigned a = e->attempts;
            while (e->acquiring)
                pthread_cond_wait(&fs->cv, &fs->mu);
            if (!e->held && e->attempts != a) {
                rc = e->last_err; /* the attempt we waited on failed: so do we */
                break;
            }
            continue;
        }
        if (e->releasing) {
            pthread_cond_wait(&fs->cv, &fs->mu);
            continue;
        }
        e->acquiring = true;
        pthread_mutex_unlock(&fs->mu);
        rc = lock_cluster(fs, rel);
        pthread_mutex_lock(&fs->mu);
        e->acquiring = false;
        e->attempts++;
        e->held = rc == 0;
        if (rc == 0)
            e->lost = false;
        e->last_err = rc;
        pthread_cond_broadcast(&fs->cv);
        if (rc < 0)
            break;
    }
    assert(e->waiters > 0);
    e->waiters--;
    if (rc < 0)
        lock_maybe_free(fs, e);
    pthread_mutex_unlock(&fs->mu);
    if (rc == 0)
        *out = (struct held){.e = e};
    return rc;
}

/* Decide whether this holder is the last; if so, block new holders until
 * lock_release_end, so nobody relies on a lock that is going away. */
void lock_release_begin(struct fs *fs, struct held *h)
{
    bool keep = tokens_keep(fs, h->e->path);
    pthread_mutex_lock(&fs->mu);
    h->last = h->e->refs == 1 && !(keep && !h->e->lost);
    h->done = false;
    if (h->last)
        h->e->releasing = true;
    pthread_mutex_unlock(&fs->mu);
}

/* Drop one holder's ref; the last one gives the lock up on this node (the
 * cluster side went with an UNLOCK or an announce with unlock). Caller
 * holds fs->mu; it calls cluster_hold_locks(-1) after unlocking if last. */
void lock_holder_drop(struct fs *fs, struct lock_ent *e, bool last)
{
    assert(e->refs > 0); /* only a holder lets go */
    e->refs--;
    if (last) {
        e->held = false;
        e->releasing = false;
        e->fresh = false;
    } else if (e->refs == 0 && e->held && !e->releasing) {
        tokens_enter(fs, e);
    }
    pthread_cond_broadcast(&fs->cv);
    lock_maybe_free(fs, e);
}

/* Drop the holder's ref; the last one sends UNLOCK unless an announce with
 * unlock=true already released the lock. */
void lock_release_end(struct fs *fs, struct held *h)
{
    struct lock_ent *e = h->e;
    if (h->last && !h->done)
        lock_send_unlock(fs, e->path);
    pthread_mutex_lock(&fs->mu);
    lock_holder_drop(fs, e, h->last);
    pthread_mutex_unlock(&fs->mu);
    if (h->last)
        cluster_hold_locks(fs->ns->cluster, -1);
    h->e = NULL;
}

void lock_release_now(struct fs *fs, struct held *h)
{
    lock_release_begin(fs, h);
    lock_release_end(fs, h);
}
