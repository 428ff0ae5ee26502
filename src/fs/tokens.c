/* Cached path locks (docs/locks.md): a node keeps a path's cluster lock after
 * its last local user is done, so its next change of the path needs no round
 * trip, and gives it up when another node asks (the catalog's wanted mark),
 * after lock_cache idle, or when too many are cached. Thread ns-tokens. */
#include <assert.h>

#include "fs/fs_int.h"

#define TOKENS_MAX 16384        /* cached at once; past it the idle ones go first */
#define TOKENS_SWEEP_MS 1000    /* idle expiry check */
#define TOKENS_RESCAN_MS 20     /* between two scans of wanted marks that freed nothing */

/* Outside fs->mu: may the last local user of path leave the lock cached? */
bool tokens_keep(struct fs *fs, const char *path)
{
    struct nsync *ns = fs->ns;
    if (ns->cfg.lock_cache_ms == 0 || atomic_load(&fs->n_cached) >= TOKENS_MAX)
        return false;
    pthread_rwlock_rdlock(&ns->fsm_lock);
    uint64_t wanted = fsm_lock_wanted(ns->fsm, path);
    pthread_rwlock_unlock(&ns->fsm_lock);
    return wanted == 0 || wanted == ns->self_id;
}

/* Caller holds fs->mu; e was just left by its last user, still held. */
void tokens_enter(struct fs *fs, struct lock_ent *e)
{
    assert(e->held && e->refs == 0 && !e->cached);
    e->cached = true;
    e->idle_ms = nsync_mono_ms();
    atomic_fetch_add(&fs->n_cached, 1);
}

/* Caller holds fs->mu. */
void tokens_leave(struct fs *fs, struct lock_ent *e)
{
    if (!e->cached)
        return;
    e->cached = false;
    atomic_fetch_sub(&fs->n_cached, 1);
}

/* Caller holds fs->mu; e is cached. Can a new user rely on it without asking
 * the cluster? Yes while an announce of ours for it is still queued (the
 * outbox commits what follows after it, and the catalog refuses a change
 * under a lock we lost), or while the catalog says the lock is ours. A lease
 * that lapsed during a partition, and another node that took the path
 * since, make it stale: the caller asks again. */
bool tokens_still_ours(struct fs *fs, const struct lock_ent *e)
{
    struct nsync *ns = fs->ns;
    if (e->lost)
        return false;
    if (e->inflight > 0)
        return true;
    uint64_t holder = 0;
    pthread_rwlock_rdlock(&ns->fsm_lock);
    int has = fsm_lock_get(ns->fsm, e->path, &holder, NULL);
    pthread_rwlock_unlock(&ns->fsm_lock);
    return has == 1 && holder == ns->self_id;
}

/* Caller holds fs->mu: e's UNLOCK is over (or was never sent); the entry
 * is no longer held here. */
static void tokens_released_locked(struct fs *fs, struct lock_ent *e)
{
    assert(e->releasing && e->inflight > 0 && fs->inflight > 0);
    e->inflight--;
    fs->inflight--;
    e->held = false;
    e->releasing = false;
    e->fresh = false;
    pthread_cond_broadcast(&fs->cv);
    lock_maybe_free(fs, e);
    cluster_hold_locks(fs->ns->cluster, -1);
}

/* Outbox thread: the UNLOCK was applied, or given up (the lease frees the
 * lock then). */
static void tokens_unlocked(void *arg, int rc, const struct cluster_reply *r)
{
    struct lock_ent *e = arg;
    struct fs *fs = e->fs_;
    if (rc < 0)
        log_debug("unlock of cached %s not committed (%s): its lease frees it", e->path,
                  strerror(-rc));
    pthread_mutex_lock(&fs->mu);
    tokens_released_locked(fs, e);
    pthread_mutex_unlock(&fs->mu);
}

/* Caller holds fs->mu; e is cached. The UNLOCK goes through the outbox, so
 * it commits after every announce this node queued for the path: whoever
 * gets the lock next starts from those bytes. Local users wait (releasing)
 * and then ask the cluster again. */
static void tokens_release_locked(struct fs *fs, struct lock_ent *e)
{
    struct nsync *ns = fs->ns;
    assert(e->cached && e->held && e->refs == 0);
    tokens_leave(fs, e);
    e->releasing = true;
    e->fs_ = fs;
    e->inflight++;
    fs->inflight++;
    struct fsm_cmd cmd = {.op = FSM_OP_UNLOCK, .path = e->path, .node = ns->self_id};
    int rc = cluster_send(ns->cluster, &cmd, fs_submit_timeout(ns), tokens_unlocked, e);
    if (rc < 0) /* stopping: the leave or the lease frees it */
        tokens_released_locked(fs, e);
}

struct wanted_list {
    char **v;
    size_t n, cap;
};

static int collect_wanted(const char *path, uint64_t wanted, void *arg)
{
    struct wanted_list *l = arg;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        char **v = realloc(l->v, cap * sizeof *v);
        if (!v)
            return 1; /* the rest at the next scan */
        l->v = v;
        l->cap = cap;
    }
    if (!(l->v[l->n] = strdup(path)))
        return 1;
    l->n++;
    return 0;
}

/* Hand over every cached lock another node asked for, and the ones only
 * idle handles hold; returns how many were asked for. A wanted lock in use
 * here (a write in progress, or within FOLLOW_MS of one) goes when its
 * users are done; *busy tells that some are. */
static size_t tokens_hand_over(struct fs *fs, bool *busy)
{
    struct nsync *ns = fs->ns;
    struct wanted_list l = {0};
    pthread_rwlock_rdlock(&ns->fsm_lock);
    fsm_foreach_wanted(ns->fsm, ns->self_id, collect_wanted, &l);
    pthread_rwlock_unlock(&ns->fsm_lock);
    size_t n = 0;
    for (size_t i = 0; i < l.n; i++) {
        pthread_mutex_lock(&fs->mu);
        struct lock_ent *e = lock_find(fs, l.v[i]);
        bool in_use = e && !e->cached && e->held && !e->releasing;
        pthread_mutex_unlock(&fs->mu);
        /* Following writes: handles open on it that are between two
         * writes let go; the last one's announce unlocks (or leaves it
         * cached, handed over below). */
        if (in_use && handle_yield(fs, l.v[i]) > 0)
            *busy = true;
        pthread_mutex_lock(&fs->mu);
        e = lock_find(fs, l.v[i]);
        if (e && e->cached) {
            log_debug("lock %s: another node asks for it, handing it over", e->path);
            tokens_release_locked(fs, e);
        } else if (e && e->held && !e->releasing) {
            *busy = true;
        }
        pthread_mutex_unlock(&fs->mu);
        n++;
        free(l.v[i]);
    }
    free(l.v);
    return n;
}

/* Give up what stayed unused for lock_cache; while more than TOKENS_MAX are
 * cached, whatever is idle for a sweep already. */
static void tokens_sweep(struct fs *fs, uint64_t now)
{
    unsigned cache_ms = fs->ns->cfg.lock_cache_ms;
    pthread_mutex_lock(&fs->mu);
    bool crowded = atomic_load(&fs->n_cached) >= TOKENS_MAX;
    for (size_t b = 0; b < LOCK_BUCKETS; b++) {
        struct lock_ent *e = fs->buckets[b];
        while (e) {
            struct lock_ent *next = e->next; /* e may be freed */
            uint64_t idle = now - e->idle_ms;
            if (e->cached && (idle >= cache_ms || (crowded && idle >= TOKENS_SWEEP_MS)))
                tokens_release_locked(fs, e);
            e = next;
        }
    }
    pthread_mutex_unlock(&fs->mu);
}

void *tokens_main(void *arg)
{
    struct fs *fs = arg;
    uint64_t seen = 0, last_sweep = nsync_mono_ms(), last_scan = 0;
    for (;;) {
        pthread_mutex_lock(&fs->mu);
        bool stop = fs->fixer_stop;
        pthread_mutex_unlock(&fs->mu);
        if (stop)
            return NULL;
        uint64_t now = nsync_mono_ms();
        if (now - last_scan >= TOKENS_RESCAN_MS) {
            bool busy = false;
            tokens_hand_over(fs, &busy);
            if (busy)
                last_scan = now; /* asked for, but in use: not again at every apply */
        }
        if (now - last_sweep >= TOKENS_SWEEP_MS) {
            tokens_sweep(fs, now);
            last_sweep = now;
        }
        cluster_wait_change(fs->ns->cluster, &seen, 100);
    }
}
