/* Announces: what this node changed goes to the cluster, synchronously or
 * through the outbox (close, metadata changes), and the conflict fixer
 * thread (ns-fixer) keeps this node's bytes when another node's version won. */
#include <assert.h>

#include "fs/fs_int.h"

/* Holders on this node share a path's lock, so several of them may announce
 * it at once. Raft commits their announces in the order they reach the
 * leader, not the order they read the file: a hash taken before another
 * handle's append could commit after that handle's announce, and the
 * catalog would end on a stale size and hash (an update lost, and a version
 * no peer can fetch). So one holder at a time goes from changing or reading
 * the path to the commit of its announce; the last committed announce then
 * describes the file as it is. Caller holds a ref on e. */
void announce_begin(struct fs *fs, struct lock_ent *e)
{
    pthread_mutex_lock(&fs->mu);
    while (e->announcing)
        pthread_cond_wait(&fs->cv, &fs->mu);
    e->announcing = true;
    pthread_mutex_unlock(&fs->mu);
}

void announce_end(struct fs *fs, struct lock_ent *e)
{
    pthread_mutex_lock(&fs->mu);
    e->announcing = false;
    pthread_cond_broadcast(&fs->cv);
    pthread_mutex_unlock(&fs->mu);
}

/* Propose cmd (ANNOUNCE or RENAME); it carries unlock=true when every lock
 * it covers is on its last holder. Returns 0 or a negative errno, including
 * the FSM's refusal (-EBUSY: our lock lapsed; -ENOENT: rename source
 * unknown). */
int announce_sync(struct fs *fs, struct fsm_cmd *cmd, struct held **cover, int n)
{
    bool all_last = n > 0;
    for (int i = 0; i < n; i++)
        all_last = all_last && cover[i]->last;
    cmd->unlock = all_last;
    cmd->fresh = n > 0 && cover[0]->e->fresh;
    struct cluster_reply r;
    int rc = fs_submit(fs, cmd, &r);
    if (rc < 0) {
        /* The cluster is unreachable: an UNLOCK would fail the same way
         * after another wait; the lease frees the lock instead. */
        for (int i = 0; i < n; i++)
            cover[i]->done = true;
        return rc;
    }
    if (r.status == 0) {
        if (all_last)
            for (int i = 0; i < n; i++)
                cover[i]->done = true;
        return 0;
    }
    if (!(r.status == -ENOENT && cmd->op == FSM_OP_RENAME))
        log_error("announce of %s refused by the cluster: %s", cmd->path, strerror(-r.status));
    return r.status < 0 ? r.status : -EIO;
}

/* The outbox answered (or the fixer fixed): drop what pa kept. When it
 * carried unlock, this is where the last holder's release completes. */
static void ann_release(struct fs *fs, struct pending_ann *pa)
{
    struct lock_ent *e = pa->e;
    pthread_mutex_lock(&fs->mu);
    assert(e->inflight > 0 && fs->inflight > 0); /* one per announce sent */
    e->inflight--;
    fs->inflight--;
    journal_answered(fs, pa->jgen);
    if (pa->e2) {
        assert(pa->e2->inflight > 0 && fs->inflight > 0);
        pa->e2->inflight--;
        fs->inflight--;
        journal_answered(fs, pa->jgen2);
        lock_maybe_free(fs, pa->e2);
    }
    if (pa->last) {
        lock_holder_drop(fs, e, true); /* the announce took over the last holder's ref */
    } else {
        pthread_cond_broadcast(&fs->cv);
        lock_maybe_free(fs, e);
    }
    pthread_mutex_unlock(&fs->mu);
    if (pa->last)
        cluster_hold_locks(fs->ns->cluster, -1);
    free(pa->from);
    free(pa);
}

/* Outbox thread: must not block or submit. A refusal that means another
 * node's version won goes to the fixer thread. */
static void announce_done(void *arg, int rc, const struct cluster_reply *r)
{
    struct pending_ann *pa = arg;
    struct fs *fs = pa->fs;
    int st = rc < 0 ? rc : r->status;
    if (rc == 0)
        durable_note(fs, r->version);
    if (st < 0)
        atomic_fetch_add(&pa->e->ann_failed, 1);
    log_debug("announce %s committed after %llu us: %s", pa->e->path,
              (unsigned long long)(nsync_mono_us() - pa->queued_us), st ? strerror(-st) : "ok");
    if (st == -EEXIST || st == -EBUSY || (pa->from && st == -ENOENT)) {
        pthread_mutex_lock(&fs->mu);
        if (st != -ENOENT) {
            pa->e->lost = true;
            if (pa->e2)
                pa->e2->lost = true;
        }
        struct pending_ann **pp = &fs->fix_head;
        while (*pp)
            pp = &(*pp)->next;
        pa->next = NULL;
        *pp = pa;
        pthread_cond_signal(&fs->fix_cv);
        pthread_mutex_unlock(&fs->mu);
        return;
    }
    if (st < 0)
        log_error("the change to %s was not announced to the cluster: %s; it stays on this node "
                  "only until written again", pa->e->path, strerror(-st));
    ann_release(fs, pa);
}

/* Queue cmd (an ANNOUNCE of the file st describes) behind everything this
 * node sent before, keeping e alive until it is answered. last: cmd
 * carries unlock and takes over the holder's ref on e. */
int announce_async(struct fs *fs, struct fsm_cmd *cmd, struct lock_ent *e, bool last,
                          const struct stat *st)
{
    struct pending_ann *pa = calloc(1, sizeof *pa);
    if (!pa)
        return -ENOMEM;
    *pa = (struct pending_ann){.fs = fs, .e = e, .last = last, .dev = st->st_dev, .ino = st->st_ino,
                               .queued_us = nsync_mono_us()};
    pthread_mutex_lock(&fs->mu);
    e->inflight++;
    fs->inflight++;
    pa->jgen = journal_add(fs, cmd->path);
    pthread_mutex_unlock(&fs->mu);
    journal_write(fs, pa->jgen, cmd->path);
    cmd->node = fs->ns->self_id;
    int rc = cluster_send(fs->ns->cluster, cmd, 0, announce_done, pa);
    if (rc < 0) {
        pthread_mutex_lock(&fs->mu);
        assert(e->inflight > 0 && fs->inflight > 0); /* one per announce sent */
        e->inflight--;
        fs->inflight--;
        journal_answered(fs, pa->jgen);
        pthread_mutex_unlock(&fs->mu);
        free(pa);
        log_error("cannot queue the announce of %s: %s", cmd->path, strerror(-rc));
        return rc == -ESHUTDOWN ? -EROFS : rc;
    }
    return 0;
}

/* Queue cmd (a RENAME whose two locks this node keeps: no unlock) behind
 * everything this node sent before, journaled under both names: a crash
 * before the commit has the next start announce both paths as they are. */
int announce_rename_async(struct fs *fs, struct fsm_cmd *cmd, struct lock_ent *ef,
                          struct lock_ent *et)
{
    struct pending_ann *pa = calloc(1, sizeof *pa);
    char *from = strdup(cmd->path);
    if (!pa || !from) {
        free(pa);
        free(from);
        return -ENOMEM;
    }
    *pa = (struct pending_ann){.fs = fs, .e = et, .e2 = ef, .from = from,
                               .queued_us = nsync_mono_us()};
    pthread_mutex_lock(&fs->mu);
    et->inflight++;
    ef->inflight++;
    fs->inflight += 2;
    pa->jgen = journal_add(fs, cmd->path2);
    pa->jgen2 = journal_add(fs, cmd->path);
    pthread_mutex_unlock(&fs->mu);
    journal_write(fs, pa->jgen, cmd->path2);
    journal_write(fs, pa->jgen2, cmd->path);
    cmd->node = fs->ns->self_id;
    cmd->unlock = false;
    int rc = cluster_send(fs->ns->cluster, cmd, 0, announce_done, pa);
    if (rc < 0) {
        pthread_mutex_lock(&fs->mu);
        et->inflight--;
        ef->inflight--;
        fs->inflight -= 2;
        journal_answered(fs, pa->jgen);
        journal_answered(fs, pa->jgen2);
        lock_maybe_free(fs, et);
        lock_maybe_free(fs, ef);
        pthread_mutex_unlock(&fs->mu);
        free(pa->from);
        free(pa);
        log_error("cannot queue the rename %s -> %s: %s", cmd->path, cmd->path2, strerror(-rc));
        return rc == -ESHUTDOWN ? -EROFS : rc;
    }
    return 0;
}

/* Announce rel as it is here now: its state, or its absence. */
static int announce_as_here(struct fs *fs, const char *rel)
{
    struct stat st;
    if (fstatat(fs->ns->backing_fd, rel, &st, AT_SYMLINK_NOFOLLOW) < 0 && errno == ENOENT)
        return fs_mutate(fs, rel, mutate_nothing, NULL, AFTER_TOMBSTONE);
    return fs_announce_local(fs, rel);
}

/* A queued RENAME was refused: its source was not in the catalog (it
 * predates the cluster), or a lock had lapsed meanwhile. The rename is done
 * here; describe both paths from scratch instead, as they are now (taking
 * their locks again). Fixer thread. */
static void fix_rename(struct fs *fs, struct pending_ann *pa)
{
    const char *to = pa->e->path, *from = pa->from;
    log_info("rename %s -> %s was not taken by the cluster as a rename: announcing both paths "
             "as they are here", from, to);
    int rc = announce_as_here(fs, to);
    if (rc < 0)
        log_error("cannot announce %s after its rename: %s", to, strerror(-rc));
    rc = announce_as_here(fs, from);
    if (rc < 0)
        log_error("cannot announce %s after its rename: %s", from, strerror(-rc));
    ann_release(fs, pa);
}

/* Another node's version of pa's path won (its fresh create came first, or
 * our lock had lapsed): this node's file is set aside as a conflict copy,
 * announced under that name, and the winner's version is fetched in its
 * place once the entry is released. Fixer thread. */
static void fix_conflict(struct fs *fs, struct pending_ann *pa)
{
    if (pa->from) {
        fix_rename(fs, pa);
        return;
    }
    struct nsync *ns = fs->ns;
    const char *rel = pa->e->path;
    char conflict[PATH_MAX];
    struct stat st;
    int rc = fstatat(ns->backing_fd, rel, &st, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
    if (rc == -ENOENT || (rc == 0 && (st.st_dev != pa->dev || st.st_ino != pa->ino)))
        rc = -ESTALE; /* a delete, or already moved or replaced: nothing of ours there */
    if (rc == 0 && S_ISDIR(st.st_mode)) {
        /* Two nodes made the same directory: it is one directory, with the
         * winner's mode and times (installed here as for any change) and
         * the entries both put in it. */
        log_info("%s was made here and on another node at the same time: one directory", rel);
        rc = -ESTALE;
    }
    if (rc == 0)
        rc = fs_keep_conflict_copy(ns, rel, conflict, sizeof conflict);
    if (rc == 0) {
        log_warn("%s was written here and on another node at the same time; the cluster keeps the "
                 "other node's version, this node's is kept as %s", rel, conflict);
        int arc = fs_announce_local(fs, conflict);
        if (arc < 0)
            log_error("cannot announce the conflict copy %s: %s", conflict, strerror(-arc));
        fs_invalidate(fs, rel);
        fs_invalidate(fs, conflict);
    } else if (rc != -ESTALE) {
        log_error("%s: another node's version won, and this node's could not be set aside: %s",
                  rel, strerror(-rc));
    }
    if (pa->last) {
        /* Our LOCK may have been granted after all: let the winner in. */
        struct fsm_cmd un = {.op = FSM_OP_UNLOCK, .path = rel};
        struct cluster_reply r;
        fs_submit(fs, &un, &r);
    }
    ann_release(fs, pa);
}

void *announce_fixer_main(void *arg)
{
    struct fs *fs = arg;
    pthread_mutex_lock(&fs->mu);
    for (;;) {
        while (!fs->fix_head && !fs->fixer_stop)
            pthread_cond_wait(&fs->fix_cv, &fs->mu);
        struct pending_ann *pa = fs->fix_head;
        if (!pa)
            break;
        fs->fix_head = pa->next;
        pthread_mutex_unlock(&fs->mu);
        fix_conflict(fs, pa);
        pthread_mutex_lock(&fs->mu);
    }
    pthread_mutex_unlock(&fs->mu);
    return NULL;
}

int fs_announce_local(struct fs *fs, const char *rel)
{
    return fs_mutate(fs, rel, mutate_nothing, NULL, AFTER_CONTENT);
}

int fs_keep_conflict_copy(const struct nsync *ns, const char *rel, char *out, size_t outsz)
{
    char stamp[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
    int len = snprintf(out, outsz, "%s.nsync-conflict-%08" PRIx32 "-%s", rel,
                       (uint32_t)(ns->self_id >> 32), stamp);
    if (len < 0 || (size_t)len >= outsz || path_check(out) < 0)
        return -ENAMETOOLONG;
    /* A second name for the bytes, not a rename: rel must not vanish under
     * the kernel's cached name (an open of it would fail with ENOENT until
     * the winner arrives); the winner's install replaces rel atomically and
     * the conflict copy keeps this node's inode. */
    if (linkat(ns->backing_fd, rel, ns->backing_fd, out, 0) < 0 &&
        renameat(ns->backing_fd, rel, ns->backing_fd, out) < 0)
        return -errno;
    return 0;
}
