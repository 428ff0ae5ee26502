/* Reporting what was installed: deferred fsyncs of installed files and their
 * directories, and the SYNCED batches that tell the cluster this node has
 * them (sent when 10 ms old, full, or at the end of a long pass). */
#include <assert.h>

#include "transfer/fetch_int.h"

/* rel is in place: readers see it now; its directory entry is made durable
 * before the SYNCED that reports it (xfer_sync_installed), once per directory
 * for a whole batch instead of once per file. */
int xfer_installed(struct xfer_fetcher *f, const char *rel)
{
    xfer_invalidate(f, rel);
    const char *slash = strrchr(rel, '/');
    size_t n = slash ? (size_t)(slash - rel) : 0;
    pthread_mutex_lock(&f->dirs_mu);
    bool known = false;
    for (size_t i = 0; i < f->n_dirty && !known; i++)
        known = strlen(f->dirty_dirs[i]) == n && strncmp(f->dirty_dirs[i], rel, n) == 0;
    if (!known && f->n_dirty == f->cap_dirty) {
        size_t cap = f->cap_dirty ? 2 * f->cap_dirty : 16;
        char **grown = realloc(f->dirty_dirs, cap * sizeof *grown);
        if (grown) {
            f->dirty_dirs = grown;
            f->cap_dirty = cap;
        }
    }
    char *dir = known || f->n_dirty == f->cap_dirty ? NULL : strndup(rel, n);
    if (dir)
        f->dirty_dirs[f->n_dirty++] = dir;
    pthread_mutex_unlock(&f->dirs_mu);
    if (!known && !dir)
        xfer_sync_parent(f->ns->backing_fd, rel); /* out of memory: at once */
    return XFER_DONE;
}

/* fd (a file just renamed into place; the caller's) is fsynced and closed
 * before the SYNCED that reports it, or now if too many wait already.
 * Readers see the file at once; the cluster hears of it when it is
 * durable. A crash in between leaves this node unreported, and the
 * catch-up at the next start rehashes the file and fetches it again. */
int xfer_defer_fsync(struct xfer_fetcher *f, int fd, const struct xfer_item *it)
{
    char *path = strdup(it->path);
    pthread_mutex_lock(&f->dirs_mu);
    bool queued = path && f->n_sync_fds < XFER_SYNC_FDS;
    if (queued)
        f->sync_fds[f->n_sync_fds++] = (struct xfer_sync_fd){fd, path, it->version};
    pthread_mutex_unlock(&f->dirs_mu);
    if (queued)
        return 0;
    free(path);
    int rc = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return rc;
}

/* Make the files and renames since the last call durable: fsync each
 * deferred file, then each directory they touched. Manager thread, before a
 * SYNCED. A file that cannot be fsynced is taken out of b (when given) and
 * forgotten, so that it is not reported: the next pass checks it again
 * (and fsyncs it, or fetches it anew). */
void xfer_sync_installed(struct xfer_fetcher *f, struct xfer_batch *b)
{
    struct xfer_sync_fd fds[XFER_SYNC_FDS];
    pthread_mutex_lock(&f->dirs_mu);
    char **dirs = f->dirty_dirs;
    size_t n = f->n_dirty, nfd = f->n_sync_fds;
    memcpy(fds, f->sync_fds, nfd * sizeof *fds);
    f->n_sync_fds = 0;
    f->dirty_dirs = NULL;
    f->n_dirty = f->cap_dirty = 0;
    pthread_mutex_unlock(&f->dirs_mu);
    for (size_t i = 0; i < nfd; i++) {
        int fd = fds[i].fd;
        char *path = fds[i].path;
        if (fsync(fd) < 0) {
            int err = errno;
            log_warn("fsync of installed file %s: %s (not reported; will check it again)",
                     path, strerror(err));
            for (uint32_t k = 0; b && k < b->n; k++) {
                if (b->items[k].version == fds[i].version &&
                    strcmp(b->items[k].path, path) == 0) {
                    free((char *)b->items[k].path);
                    b->items[k] = b->items[--b->n];
                    break;
                }
            }
            struct xfer_retry *r = xfer_retry_get(f, path, fds[i].version);
            if (r) {
                r->installed = r->batched = false;
                r->need_sync = true;
                r->next_ms = nsync_mono_ms() + XFER_RETRY_MIN_MS;
                r->gen = f->gen;
            }
        }
        close(fd);
        free(path);
    }
    for (size_t i = 0; i < n; i++) {
        xfer_fsync_dir(f->ns->backing_fd, dirs[i]);
        free(dirs[i]);
    }
    free(dirs);
}

void xfer_flush(struct xfer_fetcher *f, struct xfer_batch *b)
{
    if (b->n == 0)
        return;
    xfer_sync_installed(f, b);
    if (b->n == 0)
        return;
    struct nsync *ns = f->ns;
    struct fsm_cmd cmd;
    memset(&cmd, 0, sizeof cmd);
    cmd.op = FSM_OP_SYNCED;
    cmd.node = ns->self_id;
    cmd.items = b->items;
    cmd.n_items = b->n;
    struct cluster_reply reply;
    unsigned tmo = ns->cfg.submit_timeout_ms ? ns->cfg.submit_timeout_ms : 5000;
    int rc = cluster_submit(ns->cluster, &cmd, tmo, &reply);
    if (rc == 0 && reply.status < 0)
        rc = reply.status;
    if (rc == 0) {
        /* The leader has applied it; wait (briefly) until this node's own
         * catalog has too. Otherwise the next pass still sees these entries
         * as lacking here and installs them again, and by then a local
         * writer may have written a newer version over them. */
        uint64_t seen = 0, until = nsync_mono_ms() + XFER_SYNCED_WAIT_MS;
        for (;;) {
            pthread_rwlock_rdlock(&ns->fsm_lock);
            bool applied = fsm_version(ns->fsm) >= reply.version;
            pthread_rwlock_unlock(&ns->fsm_lock);
            uint64_t now = nsync_mono_ms();
            if (applied || now >= until || xfer_stopping(f))
                break;
            cluster_wait_change(ns->cluster, &seen, (unsigned)(until - now));
        }
    }
    for (uint32_t i = 0; i < b->n; i++) {
        struct xfer_retry *r = xfer_retry_find(f, b->items[i].path);
        if (rc == 0) {
            if (r && r->version == b->items[i].version)
                xfer_retry_drop(f, b->items[i].path);
        } else if ((r = xfer_retry_get(f, b->items[i].path, b->items[i].version)) != NULL) {
            /* Installed but unreported: remember, so that the next pass
             * re-reports it without redoing the work. */
            r->installed = true;
            r->batched = false;
            r->gen = f->gen;
        }
        free((char *)b->items[i].path);
    }
    if (rc < 0 && rc != -ESHUTDOWN)
        log_warn("reporting %u synced entries failed: %s (will retry)", b->n, strerror(-rc));
    b->n = 0;
    b->bytes = 0;
}

/* it is installed: report it with the next SYNCED. The batch owns a copy of
 * the path (it outlives the pass); the retry entry marks the item as
 * batched, so that passes before that SYNCED leave it alone. Without
 * memory for either, the item is simply installed again later ("already
 * here") and reported then. */
void xfer_batch_add(struct xfer_fetcher *f, struct xfer_batch *b,
                           const struct xfer_item *it)
{
    char *path = strdup(it->path);
    struct xfer_retry *r = path ? xfer_retry_get(f, it->path, it->version) : NULL;
    if (!r) {
        free(path);
        return;
    }
    r->installed = true;
    r->batched = true;
    r->gen = f->gen;
    if (b->n == 0)
        b->first_ms = nsync_mono_ms();
    b->items[b->n].path = path;
    b->items[b->n].version = it->version;
    b->bytes += strlen(path) + 16; /* its length and version beside it */
    if (++b->n == XFER_BATCH_MAX || b->bytes >= XFER_BATCH_BYTES)
        xfer_flush(f, b);
}

/* Book-keeping after an item ran: batch it, or schedule its retry. */
void xfer_account(struct xfer_fetcher *f, struct xfer_batch *b, struct xfer_item *it,
                         uint64_t *wake_ms)
{
    uint64_t now = nsync_mono_ms();
    if (it->result == XFER_DONE) {
        xfer_batch_add(f, b, it);
        return;
    }
    if (it->result == XFER_STALE) {
        xfer_retry_drop(f, it->path);
        return;
    }
    struct xfer_retry *r = xfer_retry_get(f, it->path, it->version);
    if (!r)
        return;
    r->gen = f->gen;
    if (it->result == XFER_BUSY) {
        r->next_ms = now + XFER_BUSY_RETRY_MS;
    } else {
        /* No holder could serve it yet (typically 409: the origin's writer
         * handle is still closing right after its announce): that is normal
         * for a moment, so retry quickly and only complain if it lasts. */
        bool soft = it->result == -EAGAIN;
        unsigned first = soft ? XFER_SOFT_RETRY_MS : XFER_RETRY_MIN_MS;
        r->delay_ms = r->delay_ms ? r->delay_ms * 2 : first;
        if (r->delay_ms > XFER_RETRY_MAX_MS)
            r->delay_ms = XFER_RETRY_MAX_MS;
        r->next_ms = now + r->delay_ms;
        if (!r->logged && (!soft || r->delay_ms >= XFER_SOFT_LOG_MS)) {
            r->logged = true;
            int err = -it->result;
            log_warn("fetch %s (version %" PRIu64 "): %s%s%s", it->path, it->version,
                     it->msg[0] ? it->msg : strerror(err),
                     err == ENOSPC ? " (disk full)" : "", "; will retry");
        }
    }
    if (r->next_ms < *wake_ms)
        *wake_ms = r->next_ms;
}

void xfer_run_and_account(struct xfer_fetcher *f, struct xfer_batch *b,
                                 struct xfer_item **run, size_t n, uint64_t *wake)
{
    xfer_run_files(f, run, n);
    for (size_t k = 0; k < n; k++)
        xfer_account(f, b, run[k], wake);
}
