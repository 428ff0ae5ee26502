/* Metadata changes under the path's lock: lock, change BACKING, queue the
 * announce of the result with unlock. One small function per operation. */
#include <assert.h>

#include "fs/fs_int.h"

/* Become rel's holder for a change: a create of a path nobody has takes
 * the lock without a round trip (its announce carries fresh and takes it
 * with it), anything else the usual way. fn runs inside for a fresh create
 * (*done set, *rc its result), so that a failed one gives the entry back. */
static int mutate_lock(struct fs *fs, const char *rel, enum after after, local_fn fn, void *arg,
                       struct held *h, bool *done, int *rc)
{
    *done = false;
    struct lock_ent *fe = NULL;
    if (after == AFTER_CREATE && fresh_eligible(fs, rel))
        fe = fresh_begin(fs, rel);
    if (!fe)
        return lock_path(fs, rel, h);
    *rc = fn(fs, rel, arg);
    *done = true;
    fresh_end(fs, fe, *rc == 0, false);
    if (*rc < 0)
        return *rc;
    *h = (struct held){.e = fe};
    return 0;
}

/* The shape of every metadata change: lock rel, change BACKING, queue the
 * announce of the result with unlock (not waited for, as at close: the
 * outbox keeps this node's changes in order), or (if the local change
 * failed) announce nothing and unlock. The root is not in the catalog:
 * changed locally only. */
int fs_mutate(struct fs *fs, const char *rel, local_fn fn, void *arg, enum after after)
{
    int rc = fs_gate(fs);
    if (rc < 0)
        return rc;
    if (fs_is_root(rel))
        return fn(fs, rel, arg);
    struct held h;
    bool done;
    int lrc = mutate_lock(fs, rel, after, fn, arg, &h, &done, &rc);
    if (lrc < 0)
        return lrc;
    announce_begin(fs, h.e);
    if (!done)
        rc = fn(fs, rel, arg);
    /* A content change ends the running hash of open handles and the kept
     * one; mode, owner and times leave the bytes alone. */
    if (after != AFTER_META)
        atomic_fetch_add(&h.e->mods, 1);
    lock_release_begin(fs, &h);
    bool sent = false;
    if (rc == 0) {
        struct fsm_cmd cmd = {.op = FSM_OP_ANNOUNCE, .path = rel};
        char target[PATH_MAX];
        int mrc = 0;
        struct stat st;
        memset(&st, 0, sizeof st);
        if (after == AFTER_TOMBSTONE)
            cmd.meta.kind = FSM_TOMBSTONE;
        else
            mrc = meta_of_locked(fs, h.e, rel, &cmd.meta, target, sizeof target, &st);
        if (mrc == 0) {
            if (h.e->fresh)
                fresh_lock_cancel(fs, h.e); /* as at close: the announce takes it */
            cmd.parents = meta_parent_mtime(fs, rel, &cmd.parent_mtime_ns) == 0;
            cmd.unlock = h.last;
            cmd.fresh = h.e->fresh;
            cmd.held = !cmd.fresh;
            cmd.keep = cmd.fresh && !h.last; /* a new file's lock, kept cached */
            cmd.lease_ms = fs->ns->cfg.lease_ms;
            rc = announce_async(fs, &cmd, h.e, h.last, &st);
            sent = rc == 0;
        } else if (mrc != -ENOTSUP) {
            log_error("cannot read back %s to announce it: %s", rel, strerror(-mrc));
            rc = mrc;
        }
    }
    announce_end(fs, h.e);
    if (!(sent && h.last))
        lock_release_end(fs, &h); /* else the announce's answer releases the lock */
    if (rc == 0 && sent && fs->ns->cfg.sync)
        rc = durable_committed(fs);
    return rc;
}

/* New nodes belong to the caller when we can arrange it (running as root).
 * A caller with our own ids already owns what we created, as in a native
 * create (a set-gid parent's group included). */
void mutate_own_by_caller(struct fs *fs, int dirfd, const char *rel, int flags)
{
    if (!fs->as_root)
        return;
    const struct ll_caller *c = ll_caller();
    if (c->uid == 0 && c->gid == fs->egid)
        return;
    if (fchownat(dirfd, rel, c->uid, c->gid, flags) < 0)
        log_warn("chown %s to %u:%u: %s", rel, (unsigned)c->uid, (unsigned)c->gid,
                 strerror(errno));
}

int mutate_unlink(struct fs *fs, const char *rel, void *arg)
{
    return unlinkat(fs->ns->backing_fd, rel, 0) < 0 ? -errno : 0;
}

int mutate_rmdir(struct fs *fs, const char *rel, void *arg)
{
    return unlinkat(fs->ns->backing_fd, rel, AT_REMOVEDIR) < 0 ? -errno : 0;
}

int mutate_mkdir(struct fs *fs, const char *rel, void *arg)
{
    mode_t mode = *(const mode_t *)arg & 07777;
    int bfd = fs->ns->backing_fd;
    if (mkdirat(bfd, rel, mode) < 0) /* the caller's umask is applied, ours is 0 */
        return -errno;
    mutate_own_by_caller(fs, bfd, rel, AT_SYMLINK_NOFOLLOW);
    return 0;
}

int mutate_mknod_reg(struct fs *fs, const char *rel, void *arg)
{
    mode_t mode = *(const mode_t *)arg & 07777;
    int fd = openat(fs->ns->backing_fd, rel, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                    mode);
    if (fd < 0)
        return -errno;
    mutate_own_by_caller(fs, fd, "", AT_EMPTY_PATH);
    close(fd);
    return 0;
}

int mutate_mknod_node(struct fs *fs, const char *rel, void *arg)
{
    const struct mknod_args *a = arg;
    int bfd = fs->ns->backing_fd;
    if (mknodat(bfd, rel, a->mode, a->rdev) < 0) /* the caller's umask is applied, ours is 0 */
        return -errno;
    mutate_own_by_caller(fs, bfd, rel, AT_SYMLINK_NOFOLLOW);
    return 0;
}

int mutate_symlink(struct fs *fs, const char *rel, void *arg)
{
    int bfd = fs->ns->backing_fd;
    if (symlinkat((const char *)arg, bfd, rel) < 0)
        return -errno;
    mutate_own_by_caller(fs, bfd, rel, AT_SYMLINK_NOFOLLOW);
    return 0;
}

int mutate_chmod(struct fs *fs, const char *rel, void *arg)
{
    return fchmodat(fs->ns->backing_fd, rel, *(const mode_t *)arg, 0) < 0 ? -errno : 0;
}

int mutate_chown(struct fs *fs, const char *rel, void *arg)
{
    const struct owner *o = arg;
    return fchownat(fs->ns->backing_fd, rel, o->uid, o->gid, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
}

int mutate_utimens(struct fs *fs, const char *rel, void *arg)
{
    return utimensat(fs->ns->backing_fd, rel, arg, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
}

int mutate_truncate(struct fs *fs, const char *rel, void *arg)
{
    int fd = openat(fs->ns->backing_fd, rel, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = ftruncate(fd, *(const off_t *)arg) < 0 ? -errno : 0;
    close(fd);
    return rc;
}

int mutate_nothing(struct fs *fs, const char *rel, void *arg)
{
    return 0;
}
