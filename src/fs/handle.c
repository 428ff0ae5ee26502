/* Open files: open/create (with or without the cluster lock), the lock a
 * writer takes at its first write, flush (announce), fsync and release. */
#include <assert.h>

#include "cluster/rlocks.h"
#include "fs/fs_int.h"

/* Make h hold the lock of rel (h->rw held exclusively). A handle whose lock
 * went with an earlier flush takes it again; one whose file was renamed
 * moves to the new path's lock. If a newer version was installed meanwhile
 * (a rename over the path), the fd is switched to it so writes land in the
 * file everyone sees. */
/* Move h's fd to the file now at rel if that is another one (an install
 * replaced the file): writes then land in the file everyone sees, reads see
 * its bytes. h->rw held exclusively. True if it moved. -ESTALE: rel is gone
 * and h's file is an orphan (deleted or renamed on another node): a write
 * would vanish. */
static int handle_reopen(struct fs *fs, struct handle *h, const char *rel)
{
    int bfd = fs->ns->backing_fd;
    struct stat mine, now;
    if (fstat(h->fd, &mine) < 0)
        return 0;
    if (fstatat(bfd, rel, &now, AT_SYMLINK_NOFOLLOW) < 0)
        return errno == ENOENT && mine.st_nlink == 0 ? -ESTALE : 0;
    if (!S_ISREG(now.st_mode) || (mine.st_ino == now.st_ino && mine.st_dev == now.st_dev))
        return 0;
    int fd = openat(bfd, rel, (h->oflags & ~(O_CREAT | O_EXCL | O_TRUNC)) | O_NOFOLLOW | O_CLOEXEC);
    int rc = fd >= 0 && dup3(fd, h->fd, O_CLOEXEC) >= 0 ? 1 : 0;
    if (!rc)
        log_warn("reopen %s at its new version: %s", rel, strerror(errno));
    if (fd >= 0)
        close(fd);
    if (rc) {
        atomic_store(&h->replaced, false);
        pthread_mutex_lock(&h->hmu);
        meta_hash_stop(h);
        pthread_mutex_unlock(&h->hmu);
    }
    return rc;
}

/* Make h hold the lock of rel (h->rw held exclusively). A handle whose lock
 * went with an earlier flush, or to another node that asked (following
 * writes), takes it again; one whose file was renamed moves to the new
 * path's lock. If a newer version was installed meanwhile, the fd is
 * switched to it. */
static int handle_lock(struct fs *fs, struct handle *h, const char *rel)
{
    if (h->lk && strcmp(h->lk->path, rel) == 0)
        return 0;
    /* Without the lock, or under another name, others may have changed it. */
    pthread_mutex_lock(&h->hmu);
    meta_hash_stop(h);
    pthread_mutex_unlock(&h->hmu);
    if (h->lk) {
        struct held old = {.e = h->lk};
        h->lk = NULL;
        lock_release_now(fs, &old);
    }
    struct held n;
    int rc = lock_path(fs, rel, &n);
    if (rc < 0)
        return rc;
    h->lk = n.e;
    atomic_store(&h->last_write_ms, nsync_mono_ms());
    rc = handle_reopen(fs, h, rel);
    if (rc < 0) {
        log_warn("write to %s refused: the file was deleted or renamed on another node", rel);
        h->lk = NULL;
        lock_release_now(fs, &n);
        return rc;
    }
    return 0;
}

const char *handle_path(struct handle *h, const char *path, char *buf, size_t size)
{
    if (path || !h->rel || !atomic_load(&h->replaced))
        return path;
    int n = snprintf(buf, size, "/%s", h->rel);
    return n > 0 && (size_t)n < size ? buf : NULL;
}

bool handle_follow(struct fs *fs, struct handle *h, const char *rel)
{
    pthread_rwlock_wrlock(&h->rw);
    int rc = handle_reopen(fs, h, rel);
    pthread_rwlock_unlock(&h->rw);
    return rc > 0;
}

void handle_mark_replaced(struct fs *fs, const char *rel)
{
    pthread_mutex_lock(&fs->handles_mu);
    for (struct handle *h = fs->handles; h; h = h->next)
        if (h->rel && strcmp(h->rel, rel) == 0)
            atomic_store(&h->replaced, true);
    pthread_mutex_unlock(&fs->handles_mu);
}

/* h->rw held exclusively, h->lk set: announce what h wrote and give its
 * share of the lock up. */
static void handle_let_go(struct fs *fs, struct handle *h)
{
    char fp[PATH_MAX + 2];
    snprintf(fp, sizeof fp, "/%s", h->lk->path);
    if (atomic_load(&h->dirty) && handle_sync(fs, h, fp) < 0)
        return; /* keeps the lock: its release tries again */
    if (h->lk) {
        struct held hd = {.e = h->lk};
        h->lk = NULL;
        lock_release_now(fs, &hd);
    }
}

void handle_flush_path(struct fs *fs, const char *rel)
{
    char fp[PATH_MAX + 2];
    snprintf(fp, sizeof fp, "/%s", rel);
    pthread_mutex_lock(&fs->handles_mu);
    for (struct handle *h = fs->handles; h; h = h->next) {
        /* A handle busy right now belongs to a writer still at work (not
         * the releasing process, which is in fcntl): its own close
         * announces it; waiting for it here would hold handles_mu. */
        if (!h->writable || !atomic_load(&h->dirty) || pthread_rwlock_trywrlock(&h->rw) != 0)
            continue;
        if (h->lk && strcmp(h->lk->path, rel) == 0) {
            int rc = handle_sync(fs, h, fp);
            if (rc < 0)
                log_error("announce of %s before a record lock's release: %s", rel, strerror(-rc));
        }
        pthread_rwlock_unlock(&h->rw);
    }
    pthread_mutex_unlock(&fs->handles_mu);
}

unsigned handle_yield(struct fs *fs, const char *rel)
{
    unsigned held = 0;
    uint64_t now = nsync_mono_ms();
    pthread_mutex_lock(&fs->handles_mu);
    for (struct handle *h = fs->handles; h; h = h->next) {
        if (!h->writable)
            continue;
        if (pthread_rwlock_trywrlock(&h->rw) != 0) {
            held++; /* writing right now (or closing): not between two writes */
            continue;
        }
        if (h->lk && strcmp(h->lk->path, rel) == 0) {
            if (now - atomic_load(&h->last_write_ms) >= FOLLOW_MS) {
                log_debug("lock %s: a handle idle for %llu ms lets another node have it", rel,
                          (unsigned long long)(now - atomic_load(&h->last_write_ms)));
                handle_let_go(fs, h);
            }
            held += h->lk != NULL;
        }
        pthread_rwlock_unlock(&h->rw);
    }
    pthread_mutex_unlock(&fs->handles_mu);
    return held;
}

/* Before changing the file through h: returns with h->rw held shared and the
 * lock held (unless the file was unlinked: path NULL, nothing to replicate). */
int handle_write_begin(struct fs *fs, struct handle *h, const char *path)
{
    if (!h->writable)
        return -EBADF; /* its release would not give a lock back */
    char rel[PATH_MAX];
    if (path) {
        int rc = path_from_fuse(path, rel, sizeof rel);
        if (rc == 0)
            rc = fs_gate(fs);
        if (rc < 0)
            return rc;
    }
    for (;;) {
        pthread_rwlock_rdlock(&h->rw);
        if (!path || (h->lk && strcmp(h->lk->path, rel) == 0))
            return 0;
        pthread_rwlock_unlock(&h->rw);
        pthread_rwlock_wrlock(&h->rw);
        int rc = handle_lock(fs, h, rel);
        pthread_rwlock_unlock(&h->rw);
        if (rc < 0)
            return rc;
    }
}

/* h is about to change its file (h->rw held, shared or exclusive). Its first
 * change since the last announce names the path in the journal, so that a
 * crash before close() has the next start compare and announce it (the
 * bytes are in BACKING already). One write() per handle and announce. */
void handle_mark_dirty(struct fs *fs, struct handle *h)
{
    atomic_store(&h->dirty, true);
    if (!h->lk || atomic_exchange(&h->jrec, true))
        return; /* unlinked (nothing to replicate), or recorded already */
    pthread_mutex_lock(&fs->mu);
    unsigned g = journal_add(fs, h->lk->path);
    pthread_mutex_unlock(&fs->mu);
    journal_write(fs, g, h->lk->path);
    h->jgen = g;
}

/* The change h's record stood for is announced (its own journal record
 * took over) or needs nothing; rw held exclusively. A failed announce keeps
 * the record: the next start compares the path. */
static void handle_journal_done(struct fs *fs, struct handle *h)
{
    if (!atomic_exchange(&h->jrec, false))
        return;
    pthread_mutex_lock(&fs->mu);
    journal_answered(fs, h->jgen);
    pthread_mutex_unlock(&fs->mu);
}

/* Announce h's file (h->rw held exclusively, lock held for rel), unlocking
 * in the same command when h is the last holder on this node, unless keep
 * (fsync: the writer goes on writing under the lock). It does not
 * wait for the commit: the outbox commits it after everything this node
 * sent before and before anything it sends later, which is the order that
 * matters; announce_done deals with the answer. */
static int handle_announce(struct fs *fs, struct handle *h, const char *rel, bool keep)
{
    struct held hd = {.e = h->lk};
    announce_begin(fs, hd.e);
    if (!keep)
        lock_release_begin(fs, &hd);
    struct stat st;
    bool sent = false;
    int rc = fstat(h->fd, &st) < 0 ? -errno : 0;
    if (rc == 0 && st.st_nlink > 0) {
        struct fsm_cmd cmd = {.op = FSM_OP_ANNOUNCE, .path = rel, .unlock = hd.last,
                              .fresh = hd.e->fresh, .held = !hd.e->fresh};
        if (hd.e->fresh) {
            /* Unsent, the new file's LOCK is not needed: a fresh announce with
             * unlock is a LOCK and an announce in one, and one with keep is a
             * LOCK kept (the lock stays cached here). */
            fresh_lock_cancel(fs, hd.e);
            cmd.keep = !hd.last;
            cmd.lease_ms = fs->ns->cfg.lease_ms;
        }
        uint64_t t0 = nsync_mono_us();
        uint64_t mods = atomic_load(&hd.e->mods);
        uint8_t inl[FSM_INLINE_MAX + 1];
        meta_of_file(&st, &cmd.meta);
        if (!(st.st_size > (off_t)FSM_INLINE_MAX && meta_hash_ready(h, &st, cmd.meta.hash))) {
            /* Alone in the cluster, nobody would install the inline bytes;
             * raft would only keep them in its log. */
            pthread_rwlock_rdlock(&fs->ns->fsm_lock);
            bool peers = fsm_member_count(fs->ns->fsm) > 1;
            pthread_rwlock_unlock(&fs->ns->fsm_lock);
            rc = meta_hash_fd(h->fd, &st, &cmd.meta, peers ? inl : NULL);
        }
        if (rc == 0) /* in the same version as the bytes */
            rc = meta_xattrs_fd(h->fd, rel, &cmd.meta);
        if (rc == 0) {
            uint64_t t1 = nsync_mono_us();
            if (atomic_load(&hd.e->mods) == mods)
                meta_hash_keep(hd.e, &st, &cmd.meta, mods);
            cmd.parents = meta_parent_mtime(fs, rel, &cmd.parent_mtime_ns) == 0;
            rc = announce_async(fs, &cmd, hd.e, hd.last, &st);
            sent = rc == 0;
            log_debug("announce %s: %llu bytes, hash %llu us, queued in %llu us%s%s", rel,
                      (unsigned long long)cmd.meta.size, (unsigned long long)(t1 - t0),
                      (unsigned long long)(nsync_mono_us() - t1), cmd.unlock ? " (unlock)" : "",
                      cmd.fresh ? " (fresh)" : "");
        } else {
            log_error("cannot hash %s to announce it: %s", rel, strerror(-rc));
        }
    }
    announce_end(fs, hd.e);
    if (rc == 0)
        handle_journal_done(fs, h);
    if (hd.last) {
        h->lk = NULL;
        if (!sent)
            lock_release_end(fs, &hd); /* else the announce's answer releases it */
    }
    return rc;
}

/* Keep e (and its ann_failed) alive while a caller waits for a commit
 * without holding the lock. */
static void handle_pin(struct fs *fs, struct lock_ent *e)
{
    pthread_mutex_lock(&fs->mu);
    e->waiters++;
    pthread_mutex_unlock(&fs->mu);
}

static void handle_unpin(struct fs *fs, struct lock_ent *e)
{
    pthread_mutex_lock(&fs->mu);
    assert(e->waiters > 0);
    e->waiters--;
    lock_maybe_free(fs, e);
    pthread_mutex_unlock(&fs->mu);
}

/* flush/release: announce what h wrote. rw held exclusively. With -o sync
 * (and only from flush, where a caller waits: sync_wait) the commit is
 * waited for, and a refusal of the announce is this close()'s error. */
static int handle_sync_wait(struct fs *fs, struct handle *h, const char *path, bool sync_wait);

int handle_sync(struct fs *fs, struct handle *h, const char *path)
{
    return handle_sync_wait(fs, h, path, false);
}

int handle_flush(struct fs *fs, struct handle *h, const char *path)
{
    return handle_sync_wait(fs, h, path, fs->ns->cfg.sync);
}

static int handle_sync_wait(struct fs *fs, struct handle *h, const char *path, bool sync_wait)
{
    if (!atomic_load(&h->dirty))
        return 0;
    if (!path) {
        handle_journal_done(fs, h);
        atomic_store(&h->dirty, false); /* unlinked: its bytes go nowhere */
        return 0;
    }
    char rel[PATH_MAX];
    int rc = path_from_fuse(path, rel, sizeof rel);
    if (rc == 0)
        rc = handle_lock(fs, h, rel);
    if (rc < 0)
        return rc;
    struct lock_ent *e = h->lk;
    unsigned failed = atomic_load(&e->ann_failed);
    if (sync_wait)
        handle_pin(fs, e);
    rc = handle_announce(fs, h, rel, false);
    if (rc == 0)
        atomic_store(&h->dirty, false); /* on failure release tries once more */
    if (sync_wait) {
        if (rc == 0)
            rc = durable_committed(fs);
        if (rc == 0 && atomic_load(&e->ann_failed) != failed)
            rc = -EIO; /* refused: another node's version won (kept as a conflict copy) */
        handle_unpin(fs, e);
    }
    return rc;
}

/* fsync/fdatasync: the file as it is now is on a majority of nodes. A dirty
 * handle announces first, keeping its lock; the wait happens without h->rw,
 * so other handles' writes go on. */
int handle_fsync(struct fs *fs, struct handle *h, const char *path, int datasync)
{
    int rc = (datasync ? fdatasync(h->fd) : fsync(h->fd)) < 0 ? -errno : 0;
    if (rc < 0 || !path)
        return rc; /* unlinked while open: nothing of it is replicated */
    char rel[PATH_MAX];
    /* No fs_gate: a file already on a majority is durable without a quorum;
     * anything still to commit fails with EROFS in the wait instead. */
    if ((rc = path_from_fuse(path, rel, sizeof rel)) < 0)
        return rc;
    struct lock_ent *e = NULL;
    unsigned failed = 0;
    if (h->writable) {
        pthread_rwlock_wrlock(&h->rw);
        if (atomic_load(&h->dirty)) {
            rc = handle_lock(fs, h, rel);
            if (rc == 0) {
                e = h->lk;
                failed = atomic_load(&e->ann_failed);
                handle_pin(fs, e);
                rc = handle_announce(fs, h, rel, true);
            }
            if (rc == 0)
                atomic_store(&h->dirty, false);
        }
        pthread_rwlock_unlock(&h->rw);
    }
    uint64_t t0 = nsync_mono_us();
    if (rc == 0)
        rc = durable_on_majority(fs, rel);
    log_debug("fsync %s: %s after %llu us", rel, rc ? strerror(-rc) : "on a majority",
              (unsigned long long)(nsync_mono_us() - t0));
    if (e) {
        if (rc == 0 && atomic_load(&e->ann_failed) != failed)
            rc = -EIO;
        handle_unpin(fs, e);
    }
    return rc;
}

void handle_free(struct handle *h)
{
    struct fs *fs = h->fs;
    if (fs) { /* registered: see handle_open */
        pthread_mutex_lock(&fs->handles_mu);
        if (h->prev)
            h->prev->next = h->next;
        else
            fs->handles = h->next;
        if (h->next)
            h->next->prev = h->prev;
        pthread_mutex_unlock(&fs->handles_mu);
    }
    if (h->fd >= 0)
        close(h->fd);
    free(h->rel);
    digest_stream_free(h->hs);
    pthread_mutex_destroy(&h->hmu);
    pthread_rwlock_destroy(&h->rw);
    free(h);
}

static bool handle_locked_elsewhere(struct fs *fs, const char *rel)
{
    struct nsync *ns = fs->ns;
    pthread_rwlock_rdlock(&ns->fsm_lock);
    bool busy = fsm_rlock_test(ns->fsm, rel, ns->self_id, RLOCK_POSIX, RLOCK_WRITE, 0, RLOCK_EOF,
                               NULL) == 1;
    pthread_rwlock_unlock(&ns->fsm_lock);
    return busy;
}

/* open and create: lock first for writers, so the file is opened at its
 * latest version. */
int handle_open(struct fs *fs, const char *rel, int flags, mode_t mode, bool create,
                       struct fuse_file_info *fi)
{
    bool writable = (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC) || create;
    if (writable) {
        int rc = fs_gate(fs);
        if (rc < 0)
            return rc;
    }
    struct handle *h = calloc(1, sizeof *h);
    if (!h)
        return -ENOMEM;
    h->fd = -1;
    h->writable = writable;
    if (pthread_rwlock_init(&h->rw, NULL) != 0) {
        free(h);
        return -ENOMEM;
    }
    pthread_mutex_init(&h->hmu, NULL);
    uint64_t t_lock = nsync_mono_us();
    int bfd = fs->ns->backing_fd;
    int oflags = (flags & ~(O_CREAT | O_EXCL | O_NOCTTY)) | O_NOFOLLOW | O_CLOEXEC;
    /* Read access too, so that flush can hash through the same fd. */
    if ((oflags & O_ACCMODE) == O_WRONLY)
        oflags = (oflags & ~O_ACCMODE) | O_RDWR;
    bool created = false;
    int fd = -1;
    /* A new file nobody has: create it without waiting for the lock (see
     * fresh_eligible). O_EXCL is then exclusive on this node; across nodes
     * two simultaneous creators both succeed and one ends as a conflict
     * copy. strict_excl makes O_EXCL wait for the lock instead, for
     * applications that coordinate nodes through lock files. */
    struct lock_ent *fe = NULL;
    if (create && !((flags & O_EXCL) && fs->ns->cfg.strict_excl) && fresh_eligible(fs, rel))
        fe = fresh_begin(fs, rel);
    if (fe) {
        fd = openat(bfd, rel, oflags | O_CREAT | O_EXCL, mode & 07777);
        int err = errno;
        fresh_end(fs, fe, fd >= 0, true);
        if (fd >= 0) {
            created = true;
            h->lk = fe;
        } else if (err != EEXIST || (flags & O_EXCL)) {
            handle_free(h);
            return -err;
        }
    }
    /* A writer that does not truncate takes the lock at its first write
     * (handle_write_begin), not here: a handle held open for writing does
     * not keep other nodes out while it is idle (following writes). */
    if (writable && !h->lk && (create || (flags & O_TRUNC))) {
        struct held hd;
        int rc = lock_path(fs, rel, &hd);
        if (rc < 0) {
            handle_free(h);
            return rc;
        }
        h->lk = hd.e;
    }
    t_lock = nsync_mono_us() - t_lock;
    for (int tries = 0; fd < 0 && tries < 4; tries++) {
        if (create) {
            fd = openat(bfd, rel, oflags | O_CREAT | O_EXCL, mode & 07777);
            if (fd >= 0) {
                created = true;
                break;
            }
            if (errno != EEXIST || (flags & O_EXCL))
                break;
        }
        fd = openat(bfd, rel, oflags);
        if (fd < 0 && errno == EACCES && (oflags & O_ACCMODE) == O_RDWR &&
            (flags & O_ACCMODE) == O_WRONLY) {
            oflags = (oflags & ~O_ACCMODE) | O_WRONLY; /* write-only file: hash via /proc */
            fd = openat(bfd, rel, oflags);
        }
        if (fd < 0 && !(create && errno == ENOENT))
            break; /* ENOENT after EEXIST: it vanished in between, create again */
    }
    if (fd < 0) {
        int rc = -errno;
        if (h->lk) {
            struct held hd = {.e = h->lk};
            h->lk = NULL;
            lock_release_now(fs, &hd);
        }
        handle_free(h);
        return rc;
    }
    if (created)
        mutate_own_by_caller(fs, fd, "", AT_EMPTY_PATH); /* mode: as for mkdir */
    h->fd = fd;
    h->oflags = oflags;
    h->rel = strdup(rel); /* NULL on ENOMEM: the handle then only loses following an install */
    /* An open (a truncating one above all) counts as a write for
     * following: the first write comes right after it. */
    atomic_store(&h->last_write_ms, nsync_mono_ms());
    if (create || (writable && (flags & O_TRUNC)))
        handle_mark_dirty(fs, h);
    if (h->lk) {
        h->hash_mods = atomic_load(&h->lk->mods);
        h->hash_live = true;
    }
    h->fs = fs;
    pthread_mutex_lock(&fs->handles_mu);
    h->next = fs->handles;
    if (h->next)
        h->next->prev = h;
    fs->handles = h;
    pthread_mutex_unlock(&fs->handles_mu);
    fi->fh = (uint64_t)(uintptr_t)h;
    /* keep_cache stays 0: each open drops cached pages, so bytes a peer
     * installed since are seen even without an invalidation. */
    fi->keep_cache = 0;
    /* Another node's processes lock this file: they coordinate through it,
     * and may share it as memory (SQLite's WAL index, the -shm file), which
     * cannot work across machines. Without the page cache, a shared
     * writable mmap of it fails here (ENODEV) and the program reports an
     * error instead of reading an index that the other node changes
     * unseen. Reads and writes stay coherent under the locks. */
    if (handle_locked_elsewhere(fs, rel))
        fi->direct_io = 1;
    log_debug("open %s flags %#x%s, lock %llu us", rel, (unsigned)flags,
              fe && created ? " (fresh create)" : create ? " (create)" : "", (unsigned long long)t_lock);
    return 0;
}
