/* Creates of a path nobody has, without waiting for the lock: the file is
 * made at once and its LOCK queued lazily behind it (docs/decisions.md,
 * "Creates of a path nobody has do not wait for the lock"). */
#include <assert.h>

#include "fs/fs_int.h"

#define FRESH_BACKLOG_MAX_MS 250 /* the cluster must be keeping up */

/* Nobody has rel, as far as this node knows: no catalog entry (or a
 * tombstone this node has), no lock, and the cluster answers. */
bool fresh_eligible(struct fs *fs, const char *rel)
{
    struct nsync *ns = fs->ns;
    struct cluster_status cs;
    cluster_get_status(ns->cluster, &cs);
    if (cs.leader_id == 0 || cluster_backlog_ms(ns->cluster) > FRESH_BACKLOG_MAX_MS)
        return false;
    pthread_rwlock_rdlock(&ns->fsm_lock);
    const struct fsm_entry *e = fsm_get(ns->fsm, rel);
    bool ok = (!e || (e->kind == FSM_TOMBSTONE && fsm_node_has(ns->fsm, rel, ns->self_id))) &&
              fsm_lock_get(ns->fsm, rel, NULL, NULL) == 0;
    pthread_rwlock_unlock(&ns->fsm_lock);
    return ok;
}

/* Claim rel's (absent) lock entry for a fresh create: it stays 'acquiring',
 * so local users wait, until fresh_end. NULL if an entry exists. */
struct lock_ent *fresh_begin(struct fs *fs, const char *rel)
{
    pthread_mutex_lock(&fs->mu);
    struct lock_ent *e = lock_find(fs, rel) ? NULL : calloc(1, sizeof *e);
    if (e && !(e->path = strdup(rel))) {
        free(e);
        e = NULL;
    }
    if (e) {
        size_t b = lock_bucket(rel);
        e->next = fs->buckets[b];
        fs->buckets[b] = e;
        e->acquiring = true;
        e->fresh = true;
    }
    pthread_mutex_unlock(&fs->mu);
    return e;
}

/* Outbox thread. e was kept alive for this answer (inflight). */
static void fresh_lock_done(void *arg, int rc, const struct cluster_reply *r)
{
    struct lock_ent *e = arg;
    struct fs *fs = e->fs_;
    if (rc < 0 || r->status != 0)
        log_debug("lock of new file %s: %s (its announce decides)", e->path,
                  strerror(rc < 0 ? -rc : -r->status));
    pthread_mutex_lock(&fs->mu);
    e->lock_token = NULL;
    assert(e->inflight > 0 && fs->inflight > 0); /* one per announce sent */
    e->inflight--;
    fs->inflight--;
    pthread_cond_broadcast(&fs->cv);
    lock_maybe_free(fs, e);
    pthread_mutex_unlock(&fs->mu);
}

/* created: the O_EXCL create made the file, so the entry becomes held
 * (one ref, the caller's) and, with lock, the LOCK follows it through the
 * outbox, to keep other nodes off a file that stays open here (a mkdir's
 * announce follows at once and takes the lock itself). Otherwise the entry
 * is given back; waiters then take the lock the usual way. */
void fresh_end(struct fs *fs, struct lock_ent *e, bool created, bool lock)
{
    pthread_mutex_lock(&fs->mu);
    e->acquiring = false;
    if (created) {
        e->held = true;
        e->refs++;
    }
    if (created && lock) {
        /* Lazy: a small file's close follows within the linger and then
         * takes the LOCK back (its fresh announce does the same job). Sent
         * under fs->mu, so its answer cannot clear lock_token before it is
         * set. */
        struct fsm_cmd cmd = {.op = FSM_OP_LOCK, .path = e->path, .node = fs->ns->self_id,
                              .lease_ms = fs->ns->cfg.lease_ms};
        e->fs_ = fs;
        if (cluster_send_lazy(fs->ns->cluster, &cmd, fresh_lock_done, e, &e->lock_token) == 0) {
            e->inflight++;
            fs->inflight++;
        } else {
            e->lock_token = NULL;
            log_debug("lock of new file %s not sent; its announce decides", e->path);
        }
    } else if (!created) {
        e->fresh = false;
    }
    pthread_cond_broadcast(&fs->cv);
    if (!created)
        lock_maybe_free(fs, e);
    pthread_mutex_unlock(&fs->mu);
    if (created)
        cluster_hold_locks(fs->ns->cluster, +1);
}

/* The last holder of a fresh entry announces with unlock: if the LOCK was
 * not sent yet, it is not needed (a fresh ANNOUNCE with unlock is a LOCK
 * and an announce in one step), so one raft entry less. */
void fresh_lock_cancel(struct fs *fs, struct lock_ent *e)
{
    pthread_mutex_lock(&fs->mu);
    if (e->lock_token && cluster_cancel(fs->ns->cluster, e->lock_token) == 0) {
        e->lock_token = NULL;
        assert(e->inflight > 0 && fs->inflight > 0); /* one per announce sent */
        e->inflight--;
        fs->inflight--;
    }
    pthread_mutex_unlock(&fs->mu);
}
