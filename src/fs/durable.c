/* What fsync and -o sync wait for: this node's changes committed (the
 * outbox answered everything sent before, and the local catalog applied
 * that far), and for fsync also the file's bytes on a majority of nodes. */
#include <assert.h>

#include "fs/fs_int.h"

#define DURABLE_SLICE_MS 100 /* re-check the quorum at least this often */

void durable_note(struct fs *fs, uint64_t version)
{
    uint64_t cur = atomic_load(&fs->committed_version);
    while (cur < version && !atomic_compare_exchange_weak(&fs->committed_version, &cur, version))
        ;
}

/* Wait for pred(fs, arg) under the catalog's read lock, until the node knows
 * it has no quorum (EROFS) or submit_timeout passes (EIO). */
static int durable_until(struct fs *fs, bool (*pred)(struct fs *, const void *), const void *arg,
                         uint64_t end, const char *what, const char *rel)
{
    struct nsync *ns = fs->ns;
    uint64_t seen = 0;
    for (;;) {
        pthread_rwlock_rdlock(&ns->fsm_lock);
        bool ok = pred(fs, arg);
        pthread_rwlock_unlock(&ns->fsm_lock);
        if (ok)
            return 0;
        int rc = fs_gate(fs);
        if (rc < 0)
            return rc;
        uint64_t now = nsync_mono_ms();
        if (now >= end) {
            log_warn("%s%s: %s not reached within %u ms (submit_timeout)", rel ? "fsync of " : "sync",
                     rel ? rel : "", what, fs_submit_timeout(ns));
            return -EIO;
        }
        cluster_wait_change(ns->cluster, &seen,
                            end - now < DURABLE_SLICE_MS ? (unsigned)(end - now) : DURABLE_SLICE_MS);
    }
}

static bool applied_here(struct fs *fs, const void *arg)
{
    return fsm_version(fs->ns->fsm) >= *(const uint64_t *)arg;
}

static bool bytes_on_majority(struct fs *fs, const void *arg)
{
    return fsm_on_majority(fs->ns->fsm, arg);
}

static int durable_committed_by(struct fs *fs, uint64_t end, const char *rel)
{
    struct nsync *ns = fs->ns;
    uint64_t now = nsync_mono_ms();
    int rc = cluster_barrier(ns->cluster, end > now ? (unsigned)(end - now) : 0);
    if (rc == -ETIMEDOUT) {
        log_warn("%s%s: changes of this node not committed within %u ms (submit_timeout)",
                 rel ? "fsync of " : "sync", rel ? rel : "", fs_submit_timeout(ns));
        return -EIO;
    }
    if (rc < 0)
        return rc;
    /* The leader applied them; this node's catalog answers the questions. */
    uint64_t want = atomic_load(&fs->committed_version);
    return durable_until(fs, applied_here, &want, end, "the local catalog", rel);
}

int durable_committed(struct fs *fs)
{
    return durable_committed_by(fs, nsync_mono_ms() + fs_submit_timeout(fs->ns), NULL);
}

int durable_on_majority(struct fs *fs, const char *rel)
{
    uint64_t end = nsync_mono_ms() + fs_submit_timeout(fs->ns);
    int rc = durable_committed_by(fs, end, rel);
    if (rc == 0)
        rc = durable_until(fs, bytes_on_majority, rel, end, "a majority of nodes with its bytes", rel);
    return rc;
}
