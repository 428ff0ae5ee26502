/* The FUSE path operations, served through ll.c, and their table. Each
 * passes through to BACKING; the changing ones go through mutate.c,
 * handle.c or announce.c. */
#include <assert.h>

#include <sys/file.h>

#include "cluster/rlocks.h"
#include "fs/fs_int.h"

static void *op_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
    /* Of cfg, ll.c reads the two timeouts (and gives every operation a
     * path while the node has one, reports BACKING's inode numbers, and
     * removes an open file for real: what use_ino, nullpath_ok=0 and
     * hard_remove did). Names and attributes are cached for 1 s: a file
     * the fetch worker replaces gets a new node whose name the kernel is
     * told to drop at once (ll_invalidate), and a file it changes in place
     * (its mode, say) loses its cached attributes, so the cache hides a
     * remote change only for the moment until that notice is read. A
     * negative lookup is never cached, so a file created remotely is
     * visible at once. */
    cfg->entry_timeout = 1.0;
    cfg->attr_timeout = 1.0;
    /* O_APPEND is passed through to BACKING, which is only right without
     * the kernel's writeback cache. */
    conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
    /* Pages cached for a file whose mtime changed (in place, through
     * another handle) are dropped. */
    if (conn->capable & FUSE_CAP_AUTO_INVAL_DATA)
        conn->want |= FUSE_CAP_AUTO_INVAL_DATA;
    /* With -o allow_other the kernel checks permissions (default_permissions);
     * ACLs count in those checks only if it knows we store them. BACKING
     * keeps the mode and the ACL in step and gives new nodes their default
     * ACLs, as a local disk does. */
    if (ll_caller()->ns->cfg.allow_other && (conn->capable & FUSE_CAP_POSIX_ACL))
        conn->want |= FUSE_CAP_POSIX_ACL;
    /* Read replies spliced from the backing file (op_read_buf). */
    if (conn->capable & FUSE_CAP_SPLICE_WRITE)
        conn->want |= FUSE_CAP_SPLICE_WRITE;
    return ll_caller()->ns;
}

static int op_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
    struct nsync *ns = fs_ctx_ns();
    if (fi && fi->fh)
        return fstat(fs_fh_handle(fi)->fd, st) < 0 ? -errno : 0;
    char rel[PATH_MAX];
    int rc = path_from_fuse(path, rel, sizeof rel);
    if (rc < 0)
        return rc;
    return fstatat(ns->backing_fd, rel, st, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
}

static int op_readlink(const char *path, char *buf, size_t size)
{
    struct nsync *ns = fs_ctx_ns();
    char rel[PATH_MAX];
    int rc = path_from_fuse(path, rel, sizeof rel);
    if (rc < 0)
        return rc;
    if (size == 0)
        return -EINVAL;
    ssize_t n = readlinkat(ns->backing_fd, rel, buf, size - 1);
    if (n < 0)
        return -errno;
    buf[n] = '\0';
    return 0;
}

/* Regular files, fifos, sockets (a bind) and devices: each has its catalog
 * kind (a device its rdev), so every node makes the same object. A device
 * number beyond what Linux's mknod can make is refused before anything is
 * made, as the catalog could not carry it. */
static int op_mknod(const char *path, mode_t mode, dev_t rdev)
{
    struct nsync *ns = fs_ctx_ns();
    char rel[PATH_MAX];
    int rc = path_from_fuse(path, rel, sizeof rel);
    if (rc < 0)
        return rc;
    log_debug("mknod %s %o", rel, (unsigned)mode);
    if (S_ISREG(mode))
        return fs_mutate(ns->fs, rel, mutate_mknod_reg, &mode, AFTER_CREATE);
    uint8_t kind = meta_kind_of_mode(mode);
    if (!fsm_kind_is_node(kind))
        return -EINVAL;
    if ((uint64_t)rdev > UINT32_MAX)
        return -EINVAL;
    struct mknod_args a = {mode, fsm_kind_has_rdev(kind) ? rdev : 0};
    return fs_mutate(ns->fs, rel, mutate_mknod_node, &a, AFTER_CREATE);
}

static int op_mkdir(const char *path, mode_t mode)
{
    struct nsync *ns = fs_ctx_ns();
    char rel[PATH_MAX];
    int rc = path_from_fuse(path, rel, sizeof rel);
    if (rc < 0)
        return rc;
    log_debug("mkdir %s", rel);
    return fs_mutate(ns->fs, rel, mutate_mkdir, &mode, AFTER_CREATE);
}

static int op_unlink(const char *path)
{
    struct nsync *ns = fs_ctx_ns();
    char rel[PATH_MAX];
    int rc = path_from_fuse(path, rel, sizeof rel);
    if (rc < 0)
        return rc;
    log_debug("unlink %s", rel);
    return fs_mutate(ns->fs, rel, mutate_unlink, NULL, AFTER_TOMBSTONE);
}

static int op_rmdir(const char *path)
{
    struct nsync *ns = fs_ctx_ns();
    char rel[PATH_MAX];
    int rc = path_from_fuse(path, rel, sizeof rel);
    if (rc < 0)
        return rc;
    log_debug("rmdir %s", rel);
    return fs_mutate(ns->fs, rel, mutate_rmdir, NULL, AFTER_TOMBSTONE);
}

static int op_symlink(const char *target, const char *path)
{
    struct nsync *ns = fs_ctx_ns();
    char rel[PATH_MAX];
    int rc = path_from_fuse(path, rel, sizeof rel);
    if (rc < 0)
        return rc;
    log_debug("symlink %s -> %s", rel, target);
    return fs_mutate(ns->fs, rel, mutate_symlink, (void *)target, AFTER_CREATE);
}

/* The catalog never saw the source (it predates the cluster): describe the
 * result from scratch instead, the new path as it is and the old one gone. */
static int ops_rename_fallback(struct fs *fs, const char *from, const char *to, struct held *hf,
                           struct held *ht)
{
    struct fsm_cmd cmd = {.op = FSM_OP_ANNOUNCE, .path = to};
    char target[PATH_MAX];
    struct stat st;
    int rc = meta_of_path(fs, to, &cmd.meta, target, sizeof target, &st);
    if (rc == 0) {
        struct held *cover[] = {ht};
        rc = announce_sync(fs, &cmd, cover, 1);
    } else if (rc == -ENOTSUP) {
        rc = 0;
    } else {
        log_error("cannot read back %s to announce it: %s", to, strerror(-rc));
    }
    if (rc < 0)
        return rc;
    struct fsm_cmd gone = {.op = FSM_OP_ANNOUNCE, .path = from, .meta.kind = FSM_TOMBSTONE};
    struct held *cover[] = {hf};
    return announce_sync(fs, &gone, cover, 1);
}

static int op_rename(const char *from_path, const char *to_path, unsigned int flags)
{
    struct nsync *ns = fs_ctx_ns();
    struct fs *fs = ns->fs;
    if (flags & ~(unsigned)RENAME_NOREPLACE)
        return -EINVAL; /* RENAME_EXCHANGE, RENAME_WHITEOUT: not replicable as one RENAME */
    char from[PATH_MAX], to[PATH_MAX];
    int rc = path_from_fuse(from_path, from, sizeof from);
    if (rc == 0)
        rc = path_from_fuse(to_path, to, sizeof to);
    if (rc < 0)
        return rc;
    if (fs_is_root(from) || fs_is_root(to))
        return -EBUSY;
    if (strcmp(from, to) == 0)
        return 0;
    if ((rc = fs_gate(fs)) < 0)
        return rc;
    log_debug("rename %s -> %s", from, to);
    /* Every node locks the two paths in the same (lexicographic) order, so
     * two renames cannot each hold one lock and wait for the other. */
    struct held hf, ht;
    bool from_first = strcmp(from, to) < 0;
    struct held *first = from_first ? &hf : &ht, *second = from_first ? &ht : &hf;
    rc = lock_path(fs, from_first ? from : to, first);
    if (rc < 0)
        return rc;
    rc = lock_path(fs, from_first ? to : from, second);
    if (rc < 0) {
        lock_release_now(fs, first);
        return rc;
    }
    /* In the lock order too: nobody takes a second announce slot while
     * waiting for one. */
    announce_begin(fs, first->e);
    announce_begin(fs, second->e);
    int bfd = ns->backing_fd;
    rc = (flags ? renameat2(bfd, from, bfd, to, flags) : renameat(bfd, from, bfd, to)) < 0 ? -errno : 0;
    lock_release_begin(fs, &hf);
    lock_release_begin(fs, &ht);
    bool queued = false;
    if (rc == 0) {
        struct fsm_cmd cmd = {.op = FSM_OP_RENAME, .path = from, .path2 = to};
        cmd.parents = meta_parent_mtime(fs, from, &cmd.parent_mtime_ns) == 0 &&
                      meta_parent_mtime(fs, to, &cmd.parent2_mtime_ns) == 0;
        if (!hf.last && !ht.last) {
            /* Both locks stay here: queued like a close, in order with every
             * other change of this node; a refusal is fixed up behind it. */
            cmd.fresh = hf.e->fresh;
            rc = announce_rename_async(fs, &cmd, hf.e, ht.e);
            queued = rc == 0;
        } else {
            struct held *cover[] = {&hf, &ht};
            rc = announce_sync(fs, &cmd, cover, 2);
            if (rc == -ENOENT)
                rc = ops_rename_fallback(fs, from, to, &hf, &ht);
        }
    }
    announce_end(fs, second->e);
    announce_end(fs, first->e);
    lock_release_end(fs, &hf);
    lock_release_end(fs, &ht);
    if (queued && ns->cfg.sync)
        rc = durable_committed(fs);
    return rc;
}

/* Hard links: the catalog tracks paths, not inodes, so a second name would
 * arrive on the other nodes as an independent copy and the two names would
 * drift apart there. Refused instead of silently diverging. */
static int op_link(const char *from, const char *to)
{
    return -EPERM;
}

static int op_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    struct nsync *ns = fs_ctx_ns();
    if (!path) /* open but unlinked: nothing to replicate */
        return !fi ? -ESTALE : fchmod(fs_fh_handle(fi)->fd, mode) < 0 ? -errno : 0;
    char rel[PATH_MAX];
    int rc = path_from_fuse(path, rel, sizeof rel);
    if (rc < 0)
        return rc;
    log_debug("chmod %s %o", rel, (unsigned)mode);
    return fs_mutate(ns->fs, rel, mutate_chmod, &mode, AFTER_META);
}

static int op_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi)
{
    struct nsync *ns = fs_ctx_ns();
    if (!path)
        return !fi ? -ESTALE : fchown(fs_fh_handle(fi)->fd, uid, gid) < 0 ? -errno : 0;
    char rel[PATH_MAX];
    int rc = path_from_fuse(path, rel, sizeof rel);
    if (rc < 0)
        return rc;
    struct owner o = {uid, gid};
    log_debug("chown %s %d:%d", rel, (int)uid, (int)gid);
    return fs_mutate(ns->fs, rel, mutate_chown, &o, AFTER_META);
}

static int op_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi)
{
    struct nsync *ns = fs_ctx_ns();
    if (!path)
        return !fi ? -ESTALE : futimens(fs_fh_handle(fi)->fd, tv) < 0 ? -errno : 0;
    char rel[PATH_MAX];
    int rc = path_from_fuse(path, rel, sizeof rel);
    if (rc < 0)
        return rc;
    log_debug("utimens %s", rel);
    return fs_mutate(ns->fs, rel, mutate_utimens, (void *)tv, AFTER_META);
}

static int op_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
    struct nsync *ns = fs_ctx_ns();
    struct fs *fs = ns->fs;
    if (fi && fi->fh) {
        /* Through a writer's handle: it is announced when that closes. */
        struct handle *h = fs_fh_handle(fi);
        int rc = handle_write_begin(fs, h, path);
        if (rc < 0)
            return rc;
        rc = ftruncate(h->fd, size) < 0 ? -errno : 0;
        if (rc == 0)
            handle_mark_dirty(fs, h);
        if (path)
            meta_hash_note(h, NULL, 0, size);
        pthread_rwlock_unlock(&h->rw);
        return rc;
    }
    char rel[PATH_MAX];
    int rc = path_from_fuse(path, rel, sizeof rel);
    if (rc < 0)
        return rc;
    log_debug("truncate %s %lld", rel, (long long)size);
    return fs_mutate(fs, rel, mutate_truncate, &size, AFTER_CONTENT);
}

static int op_open(const char *path, struct fuse_file_info *fi)
{
    struct nsync *ns = fs_ctx_ns();
    char rel[PATH_MAX];
    int rc = path_from_fuse(path, rel, sizeof rel);
    if (rc < 0)
        return rc;
    return handle_open(ns->fs, rel, fi->flags, 0, false, fi);
}

static int op_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    struct nsync *ns = fs_ctx_ns();
    char rel[PATH_MAX];
    int rc = path_from_fuse(path, rel, sizeof rel);
    if (rc < 0)
        return rc;
    if (fs_is_root(rel))
        return -EISDIR;
    return handle_open(ns->fs, rel, fi->flags, mode, true, fi);
}

/* A read hands libfuse the backing fd and offset rather than bytes: with
 * splice, the pages go from BACKING's page cache to /dev/fuse without being
 * copied through this process. libfuse frees *bufp. */
static int op_read_buf(const char *path, struct fuse_bufvec **bufp, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    struct fuse_bufvec *src = malloc(sizeof *src);
    if (!src)
        return -ENOMEM;
    *src = FUSE_BUFVEC_INIT(size);
    src->buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
    src->buf[0].fd = fs_fh_handle(fi)->fd;
    src->buf[0].pos = off;
    *bufp = src;
    return 0;
}

static int op_write(const char *path, const char *buf, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    struct nsync *ns = fs_ctx_ns();
    struct handle *h = fs_fh_handle(fi);
    char own[PATH_MAX + 2];
    path = handle_path(h, path, own, sizeof own);
    int rc = handle_write_begin(ns->fs, h, path);
    if (rc < 0)
        return rc;
    atomic_store(&h->last_write_ms, nsync_mono_ms());
    /* Dirty before the bytes land: a flush waits for us (rw) and then must
     * see the flag. */
    handle_mark_dirty(ns->fs, h);
    ssize_t n = pwrite(h->fd, buf, size, off);
    rc = n < 0 ? -errno : (int)n;
    if (path)
        meta_hash_note(h, buf, n > 0 ? (size_t)n : 0, off);
    pthread_rwlock_unlock(&h->rw);
    return rc;
}

static int op_statfs(const char *path, struct statvfs *sv)
{
    struct nsync *ns = fs_ctx_ns();
    return fstatvfs(ns->backing_fd, sv) < 0 ? -errno : 0;
}

/* Every close(): the file is complete in BACKING and its announce is queued
 * in this node's outbox, in order with every other change of this node; the
 * lock goes with the announce. close() does not wait for the commit (a
 * round trip and a log write); the rare refusal is dealt with afterwards
 * (announce_done). */
static int op_flush(const char *path, struct fuse_file_info *fi)
{
    struct nsync *ns = fs_ctx_ns();
    struct handle *h = fs_fh_handle(fi);
    char own[PATH_MAX + 2];
    path = handle_path(h, path, own, sizeof own);
    int rc = 0;
    if (h->writable) {
        pthread_rwlock_wrlock(&h->rw);
        rc = handle_flush(ns->fs, h, path);
        pthread_rwlock_unlock(&h->rw);
    }
    /* A close() ends every POSIX lock its process holds on the file, after
     * the announce above: the next holder reads these bytes. */
    if (h->rel)
        rlock_release_owner(ns->fs, h->rel, fi->lock_owner, RLOCK_POSIX);
    return rc;
}

static int op_release(const char *path, struct fuse_file_info *fi)
{
    struct nsync *ns = fs_ctx_ns();
    struct fs *fs = ns->fs;
    struct handle *h = fs_fh_handle(fi);
    char own[PATH_MAX + 2];
    path = handle_path(h, path, own, sizeof own);
    if (h->writable) {
        pthread_rwlock_wrlock(&h->rw);
        /* Writes after the last flush (through an mmap, or a failed flush):
         * announce them now; nobody waits for the result any more. */
        int rc = handle_sync(fs, h, path);
        if (rc < 0)
            log_error("%s: changes not announced at release: %s", path ? path : "(unlinked)",
                      strerror(-rc));
        if (h->lk) {
            struct held hd = {.e = h->lk};
            h->lk = NULL;
            lock_release_now(fs, &hd);
        }
        pthread_rwlock_unlock(&h->rw);
    }
    /* The last close of an open file: its flock and OFD locks go. */
    if (fi->flock_release && h->rel)
        rlock_release_owner(fs, h->rel, fi->lock_owner, RLOCK_FLOCK);
    rlock_release_handle(fs, h);
    handle_free(h);
    return 0;
}

/* The handle a lock request comes through, marked as a lock user's (its
 * file is then updated in place), or NULL if it has no path to lock. */
static struct handle *op_lock_handle(struct fuse_file_info *fi)
{
    struct handle *h = fs_fh_handle(fi);
    if (!h->rel)
        return NULL;
    atomic_store(&h->locker, true);
    return h;
}

/* fcntl locks (POSIX and OFD): see rlock.c. 1 from rlock_set (the handle
 * moved to a newer version) is passed on for ll.c to drop cached pages. */
static int op_lock(const char *path, struct fuse_file_info *fi, int cmd, struct flock *fl)
{
    struct nsync *ns = fs_ctx_ns();
    struct handle *h = op_lock_handle(fi);
    (void)path;
    if (!h)
        return -ENOLCK;
    if (cmd == F_GETLK)
        return rlock_get(ns->fs, h->rel, fi->lock_owner, RLOCK_POSIX, fl);
    if (cmd != F_SETLK && cmd != F_SETLKW)
        return -EINVAL;
    if (fl->l_start < 0 || fl->l_len < 0)
        return -EINVAL;
    uint64_t s = (uint64_t)fl->l_start;
    uint64_t e = fl->l_len == 0 ? RLOCK_EOF : s + (uint64_t)fl->l_len;
    pid_t pid = fl->l_pid > 0 ? fl->l_pid : ll_caller()->pid;
    return rlock_set(ns->fs, h, h->rel, fi->lock_owner, RLOCK_POSIX, fl->l_type, s, e, pid,
                     cmd == F_SETLKW);
}

static int op_flock(const char *path, struct fuse_file_info *fi, int op)
{
    struct nsync *ns = fs_ctx_ns();
    struct handle *h = op_lock_handle(fi);
    (void)path;
    if (!h)
        return -ENOLCK;
    int what = op & (LOCK_SH | LOCK_EX | LOCK_UN);
    short t = what == LOCK_SH ? F_RDLCK : what == LOCK_EX ? F_WRLCK : what == LOCK_UN ? F_UNLCK : -1;
    if (t < 0)
        return -EINVAL;
    return rlock_set(ns->fs, h, h->rel, fi->lock_owner, RLOCK_FLOCK, t, 0, RLOCK_EOF,
                     ll_caller()->pid, !(op & LOCK_NB));
}

/* The durability point (durable.c): 0 only once the file's bytes as they
 * are now are on a majority of nodes. */
static int op_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
    struct nsync *ns = fs_ctx_ns();
    struct handle *h = fs_fh_handle(fi);
    char own[PATH_MAX + 2];
    return handle_fsync(ns->fs, h, handle_path(h, path, own, sizeof own), datasync);
}

static int op_opendir(const char *path, struct fuse_file_info *fi)
{
    struct nsync *ns = fs_ctx_ns();
    char rel[PATH_MAX];
    int rc = path_from_fuse(path, rel, sizeof rel);
    if (rc < 0)
        return rc;
    struct dir_handle *d = calloc(1, sizeof *d);
    if (!d)
        return -ENOMEM;
    int fd = openat(ns->backing_fd, rel, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 || !(d->dp = fdopendir(fd))) {
        rc = -errno;
        if (fd >= 0)
            close(fd);
        free(d);
        return rc;
    }
    d->root = fs_is_root(rel);
    fi->fh = (uint64_t)(uintptr_t)d;
    return 0;
}

static int op_readdir(const char *path, void *buf, fuse_fill_dir_t filler, off_t offset,
                      struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
    struct dir_handle *d = (struct dir_handle *)(uintptr_t)fi->fh;
    if (offset != d->offset) {
        seekdir(d->dp, offset);
        d->entry = NULL;
        d->offset = offset;
    }
    for (;;) {
        if (!d->entry) {
            errno = 0;
            d->entry = readdir(d->dp);
            if (!d->entry)
                return errno ? -errno : 0;
        }
        off_t next = telldir(d->dp);
        const char *name = d->entry->d_name;
        if (!(d->root && strcmp(name, NSYNC_DATA_DIR) == 0)) {
            struct stat st = {.st_ino = d->entry->d_ino, .st_mode = DTTOIF(d->entry->d_type)};
            if (filler(buf, name, &st, next, 0))
                return 0; /* buffer full: this entry goes first next time */
        }
        d->entry = NULL;
        d->offset = next;
    }
}

static int op_releasedir(const char *path, struct fuse_file_info *fi)
{
    struct dir_handle *d = (struct dir_handle *)(uintptr_t)fi->fh;
    closedir(d->dp);
    free(d);
    return 0;
}

static int op_fsyncdir(const char *path, int datasync, struct fuse_file_info *fi)
{
    /* Entries are metadata in the catalog: committed is durable. This waits
     * for every change this node made, not only those in this directory. */
    struct nsync *ns = fs_ctx_ns();
    struct dir_handle *d = (struct dir_handle *)(uintptr_t)fi->fh;
    if (fsync(dirfd(d->dp)) < 0)
        return -errno;
    return durable_committed(ns->fs);
}

static int op_access(const char *path, int mask)
{
    struct nsync *ns = fs_ctx_ns();
    char rel[PATH_MAX];
    int rc = path_from_fuse(path, rel, sizeof rel);
    if (rc < 0)
        return rc;
    return faccessat(ns->backing_fd, rel, mask, AT_EACCESS) < 0 ? -errno : 0;
}

static int op_fallocate(const char *path, int mode, off_t off, off_t len,
                        struct fuse_file_info *fi)
{
    struct nsync *ns = fs_ctx_ns();
    struct handle *h = fs_fh_handle(fi);
    char own[PATH_MAX + 2];
    path = handle_path(h, path, own, sizeof own);
    int rc = handle_write_begin(ns->fs, h, path);
    if (rc < 0)
        return rc;
    atomic_store(&h->last_write_ms, nsync_mono_ms());
    handle_mark_dirty(ns->fs, h);
    rc = fallocate(h->fd, mode, off, len) < 0 ? -errno : 0;
    if (path)
        meta_hash_note(h, NULL, 0, -1); /* ends the running hash */
    pthread_rwlock_unlock(&h->rw);
    return rc;
}

static off_t op_lseek(const char *path, off_t off, int whence, struct fuse_file_info *fi)
{
    off_t r = lseek(fs_fh_handle(fi)->fd, off, whence);
    return r < 0 ? -errno : r;
}

static const struct fuse_operations fs_ops = {
    .init = op_init,
    .getattr = op_getattr,
    .readlink = op_readlink,
    .mknod = op_mknod,
    .mkdir = op_mkdir,
    .unlink = op_unlink,
    .rmdir = op_rmdir,
    .symlink = op_symlink,
    .rename = op_rename,
    .link = op_link,
    .chmod = op_chmod,
    .chown = op_chown,
    .truncate = op_truncate,
    .open = op_open,
    .read_buf = op_read_buf,
    .write = op_write,
    .statfs = op_statfs,
    .flush = op_flush,
    .release = op_release,
    .lock = op_lock,
    .flock = op_flock,
    .fsync = op_fsync,
    .opendir = op_opendir,
    .readdir = op_readdir,
    .releasedir = op_releasedir,
    .fsyncdir = op_fsyncdir,
    .access = op_access,
    .create = op_create,
    .utimens = op_utimens,
    .fallocate = op_fallocate,
    .lseek = op_lseek,
    .setxattr = op_setxattr,
    .getxattr = op_getxattr,
    .listxattr = op_listxattr,
    .removexattr = op_removexattr,
};

const struct fuse_operations *fs_operations(void)
{
    return &fs_ops;
}
