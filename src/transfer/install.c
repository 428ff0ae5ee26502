/* Installing one catalog entry into BACKING, one small function per kind
 * (file, directory, symlink, fifo/socket/device, delete), and the helpers they share: parents,
 * metadata, the checks that the catalog still wants what we are about to do. */
#include <assert.h>

#include "transfer/fetch_int.h"

static void xfer_timespec(int64_t ns, struct timespec *ts)
{
    int64_t sec = ns / 1000000000, nsec = ns % 1000000000;
    if (nsec < 0) {
        nsec += 1000000000;
        sec -= 1;
    }
    ts->tv_sec = (time_t)sec;
    ts->tv_nsec = (long)nsec;
}

/* The item's atime and mtime, as utimensat takes them. */
static void xfer_times(const struct xfer_item *it, struct timespec ts[2])
{
    xfer_timespec(it->atime_ns, &ts[0]);
    xfer_timespec(it->mtime_ns, &ts[1]);
}

/* mkdir -p of rel's parent directories under BACKING. Refuses to descend
 * through a symlink or a non-directory. */
static int xfer_mkparents(int dirfd, const char *rel)
{
    char buf[PATH_MAX];
    size_t len = strlen(rel);
    if (len >= sizeof buf)
        return -ENAMETOOLONG;
    memcpy(buf, rel, len + 1);
    for (char *p = strchr(buf, '/'); p; p = strchr(p + 1, '/')) {
        *p = '\0';
        struct stat st;
        if (fstatat(dirfd, buf, &st, AT_SYMLINK_NOFOLLOW) == 0) {
            if (!S_ISDIR(st.st_mode))
                return -ENOTDIR;
        } else if (errno != ENOENT) {
            return -errno;
        } else if (mkdirat(dirfd, buf, 0755) < 0 && errno != EEXIST) {
            return -errno;
        }
        *p = '/';
    }
    return 0;
}

/* fsync directory dir ("" for the top) of BACKING. */
void xfer_fsync_dir(int dirfd, const char *dir)
{
    int fd = dir[0] ? path_open_beneath(dirfd, dir, O_RDONLY | O_DIRECTORY)
                    : openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return;
    if (fsync(fd) < 0)
        log_warn("fsync of directory %s: %s", dir[0] ? dir : ".", strerror(errno));
    close(fd);
}

void xfer_sync_parent(int dirfd, const char *rel)
{
    char buf[PATH_MAX];
    const char *slash = strrchr(rel, '/');
    size_t n = slash ? (size_t)(slash - rel) : 0;
    if (n >= sizeof buf)
        return;
    memcpy(buf, rel, n);
    buf[n] = '\0';
    xfer_fsync_dir(dirfd, buf);
}

/* The catalog entry of it->path still is this version (and kind), or a
 * later one that changed only the file's metadata (a chmod, chown or
 * utimens right after the write, as cp -a, rsync -a and tar x do): then it
 * becomes that version, and the bytes fetched or being fetched serve it, so
 * the file is not fetched a second time. */
static int xfer_recheck(struct xfer_fetcher *f, struct xfer_item *it)
{
    struct nsync *ns = f->ns;
    pthread_rwlock_rdlock(&ns->fsm_lock);
    const struct fsm_entry *e = fsm_get(ns->fsm, it->path);
    bool same = e && e->version == it->version && e->kind == it->kind;
    if (!same && e && it->kind == FSM_FILE && e->kind == FSM_FILE && e->version > it->version &&
        e->size == it->size && memcmp(e->hash, it->hash, FSM_HASH_LEN) == 0 && !e->renamed_from &&
        (!e->pending || !fsm_entry_has(e, ns->self_id)) && xfer_item_take_xattrs(it, e) == 0) {
        xfer_item_take_meta(it, e);
        same = true;
    }
    pthread_rwlock_unlock(&ns->fsm_lock);
    if (!same)
        return XFER_STALE;
    return xfer_busy(f, it->path) ? XFER_BUSY : 0;
}

/* May we move the bytes at `from` away? Not if `from` is itself a live path
 * this node holds at its current version (it was re-created after the
 * rename): that copy belongs to the newer entry. */
static bool xfer_move_allowed(struct xfer_fetcher *f, const char *from)
{
    struct nsync *ns = f->ns;
    if (path_check(from) < 0 || path_is_internal(from) || xfer_busy(f, from))
        return false;
    pthread_rwlock_rdlock(&ns->fsm_lock);
    const struct fsm_entry *e = fsm_get(ns->fsm, from);
    bool live_here = e && e->kind != FSM_TOMBSTONE && fsm_node_has(ns->fsm, from, ns->self_id);
    pthread_rwlock_unlock(&ns->fsm_lock);
    return !live_here;
}

static void xfer_set_owner_fd(int fd, const struct xfer_item *it)
{
    if (geteuid() == 0 && fchown(fd, it->uid, it->gid) < 0 && errno != EPERM)
        log_debug("fetch %s: chown: %s", it->path, strerror(errno));
}

/* Owner, mode, extended attributes (after the chown, which drops
 * security.capability), mtime of an open regular file or directory. */
static int xfer_fix_meta_fd(int fd, const struct xfer_item *it)
{
    struct timespec ts[2];
    xfer_times(it, ts);
    xfer_set_owner_fd(fd, it);
    if (fchmod(fd, it->mode & 07777) < 0)
        return -errno;
    int rc = xfer_xattrs_apply(fd, it);
    if (rc < 0)
        return rc;
    return futimens(fd, ts) < 0 ? -errno : 0;
}

/* The same for a staging file this thread just created with the item's
 * mode (the daemon's umask is 0): it is ours, so a chown is needed only for
 * another owner, and then the mode again, since a chown clears set-id bits. */
static int xfer_fix_meta_new(int fd, const struct xfer_item *it)
{
    if (it->uid == geteuid() && it->gid == getegid() && !it->xattrs_len) {
        struct timespec ts[2];
        xfer_times(it, ts);
        return futimens(fd, ts) < 0 ? -errno : 0;
    }
    return xfer_fix_meta_fd(fd, it);
}

/* fd (the file now at path) holds the item's bytes: the quick check's
 * record vouches for its stat (quick.h), or else its hash says so. *st is
 * fd's stat when true. */
static bool xfer_fd_matches(struct xfer_fetcher *f, int fd, const char *path,
                            const struct xfer_item *it, struct stat *st)
{
    if (fstat(fd, st) < 0 || !S_ISREG(st->st_mode) || (uint64_t)st->st_size != it->size)
        return false;
    if (xfer_quick_trusts(&f->quick, path, st, it->hash, it->size)) {
        atomic_fetch_add(&f->st_trusted, 1);
        return true;
    }
    atomic_fetch_add(&f->st_hashed, 1);
    uint8_t d[DIGEST_LEN];
    uint64_t n = 0;
    return digest_fd(fd, d, &n) == 0 && n == it->size && memcmp(d, it->hash, DIGEST_LEN) == 0;
}

/* The file's mode, mtime, atime (and owner, for root) already are the item's. Then
 * nothing is changed: a chmod or utimens would move its ctime, and the
 * next quick check would have to hash it. */
static bool xfer_meta_same(const struct stat *st, const struct xfer_item *it)
{
    int64_t mt = (int64_t)st->st_mtim.tv_sec * 1000000000LL + st->st_mtim.tv_nsec;
    int64_t at = (int64_t)st->st_atim.tv_sec * 1000000000LL + st->st_atim.tv_nsec;
    return (st->st_mode & 07777) == (it->mode & 07777) && mt == it->mtime_ns && at == it->atime_ns &&
           (geteuid() != 0 || (st->st_uid == it->uid && st->st_gid == it->gid));
}

void xfer_fail(struct xfer_item *it, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(it->msg, sizeof it->msg, fmt, ap);
    va_end(ap);
    it->result = err < 0 ? err : -EIO;
}

/* Write the item's bytes from the catalog (they came in its ANNOUNCE) to fd.
 * -ENODATA if the catalog no longer has them (settled, replaced, or
 * restored without them): fetch instead. The bytes are copied out under the
 * read lock and written after it: the raft thread applies under the write
 * lock, and a manager installing a burst of small files would otherwise
 * hold it off (reads are preferred) for as long as the burst lasts. */
static int xfer_write_inline(struct xfer_fetcher *f, struct xfer_item *it, int fd)
{
    struct nsync *ns = f->ns;
    uint8_t buf[FSM_INLINE_MAX];
    size_t len = 0;
    bool have = false;
    pthread_rwlock_rdlock(&ns->fsm_lock);
    const struct fsm_entry *e = fsm_get(ns->fsm, it->path);
    if (e && e->version == it->version && e->data && e->size == it->size &&
        e->size <= sizeof buf) {
        len = (size_t)e->size;
        memcpy(buf, e->data, len);
        have = true;
    }
    pthread_rwlock_unlock(&ns->fsm_lock);
    if (!have)
        return -ENODATA;
    uint8_t d[DIGEST_LEN];
    digest_buf(buf, len, d);
    if (memcmp(d, it->hash, DIGEST_LEN) != 0) {
        xfer_fail(it, -EIO, "inline bytes do not match their hash");
        return -EIO; /* not what the announce promised: a bug somewhere */
    }
    ssize_t n = pwrite(fd, buf, len, 0);
    int rc = n < 0 ? -errno : (size_t)n == len ? 0 : -EIO;
    if (rc < 0)
        xfer_fail(it, rc, "writing staging file: %s", strerror(-rc));
    return rc;
}

/* The staging file tmp, complete, goes into the file at it->path that a
 * local process has open: same inode, new bytes, then the entry's metadata,
 * durable before it is reported. Readers without a lock may see it half
 * copied, as they would see a local writer's; lock users are kept out by
 * the record lock the writer held. */
static int xfer_copy_in_place(struct xfer_fetcher *f, struct xfer_item *it, const char *tmp)
{
    struct nsync *ns = f->ns;
    int src = openat(ns->staging_fd, tmp, O_RDONLY | O_CLOEXEC);
    int dst = src < 0 ? -1 : path_open_beneath(ns->backing_fd, it->path, O_WRONLY | O_NONBLOCK);
    int rc = src < 0 || dst < 0 ? -errno : 0;
    struct stat st;
    if (rc == 0 && fstat(dst, &st) < 0)
        rc = -errno;
    if (rc == 0 && !S_ISREG(st.st_mode))
        rc = -EINVAL;
    uint64_t done = 0;
    while (rc == 0 && done < it->size) {
        ssize_t n = copy_file_range(src, NULL, dst, NULL, (size_t)(it->size - done), 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = n < 0 ? -errno : -EIO;
            break;
        }
        done += (uint64_t)n;
    }
    if (rc == 0 && ftruncate(dst, (off_t)it->size) < 0)
        rc = -errno;
    if (rc == 0)
        rc = xfer_fix_meta_fd(dst, it);
    if (rc == 0 && fsync(dst) < 0)
        rc = -errno;
    if (rc < 0)
        xfer_fail(it, rc, "installing in place (the file is open here): %s", strerror(-rc));
    else
        xfer_invalidate(f, it->path);
    if (src >= 0)
        close(src);
    if (dst >= 0)
        close(dst);
    return rc;
}

static int xfer_file(struct xfer_worker *w, struct xfer_item *it)
{
    struct xfer_fetcher *f = w->f;
    struct nsync *ns = f->ns;
    int rc = xfer_recheck(f, it);
    if (rc)
        return rc;

    /* Already here (catch-up after restart, or a rename that kept the bytes)? */
    int fd = path_open_noatime(ns->backing_fd, it->path, O_RDONLY | O_NONBLOCK, true);
    if (fd >= 0) {
        struct stat st;
        bool same = xfer_fd_matches(f, fd, it->path, it, &st);
        bool meta_same = same && xfer_meta_same(&st, it) && xfer_xattrs_same(fd, it);
        rc = same && !meta_same ? xfer_fix_meta_fd(fd, it) : 0;
        /* Installed by us before, but its fsync failed: the report that
         * follows says it is durable here. */
        if (same && rc == 0 && it->need_sync && fsync(fd) < 0)
            rc = -errno;
        close(fd);
        if (same) {
            if (rc < 0)
                xfer_fail(it, rc, "setting mode/mtime: %s", strerror(-rc));
            else
                xfer_invalidate(f, it->path);
            return rc;
        }
    }

    /* Renamed: the bytes may still sit at the old path. */
    if (it->renamed_from && xfer_move_allowed(f, it->renamed_from)) {
        fd = path_open_noatime(ns->backing_fd, it->renamed_from, O_RDONLY | O_NONBLOCK, true);
        if (fd >= 0) {
            struct stat st;
            bool same = xfer_fd_matches(f, fd, it->renamed_from, it, &st);
            if (same && xfer_fix_meta_fd(fd, it) == 0 &&
                xfer_mkparents(ns->backing_fd, it->path) == 0 &&
                renameat(ns->backing_fd, it->renamed_from, ns->backing_fd, it->path) == 0) {
                close(fd);
                xfer_invalidate(f, it->renamed_from);
                return xfer_installed(f, it->path);
            }
            close(fd);
        }
    }

    char tmp[64];
    snprintf(tmp, sizeof tmp, XFER_TMP_PREFIX "%d-%u", (int)getpid(),
             atomic_fetch_add(&f->tmp_seq, 1));
    /* O_RDWR: a file fetched in parts is read back to check it (blocks.c). */
    fd = openat(ns->staging_fd, tmp, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, it->mode & 07777);
    if (fd < 0) {
        rc = -errno;
        xfer_fail(it, rc, "creating staging file: %s", strerror(-rc));
        return rc;
    }
    uint8_t empty[DIGEST_LEN];
    digest_buf(NULL, 0, empty);
    uint64_t t0 = nsync_mono_us(), t1 = t0, t2 = t0;
    if (it->size == 0 && memcmp(empty, it->hash, DIGEST_LEN) == 0)
        rc = 0; /* nothing to transfer */
    else if (!it->inline_data || (rc = xfer_write_inline(f, it, fd)) == -ENODATA)
        rc = xfer_download(w, it, fd);
    if (rc == 0) {
        t1 = nsync_mono_us();
        rc = xfer_fix_meta_new(fd, it);
        /* Start the writeback now; the fsync that waits for it comes
         * after the rename (xfer_defer_fsync). */
        if (rc == 0 && it->size > 0 && sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE) < 0)
            rc = -errno;
        t2 = nsync_mono_us();
        if (rc < 0)
            xfer_fail(it, rc, "finishing staging file: %s", strerror(-rc));
    }
    uint64_t fetched_version = it->version;
    if (rc == 0)
        rc = xfer_recheck(f, it); /* the transfer took time: still wanted? */
    if (rc == 0 && it->version != fetched_version) /* a metadata change came meanwhile */
        rc = xfer_fix_meta_fd(fd, it);
    if (rc == 0) {
        rc = xfer_mkparents(ns->backing_fd, it->path);
        if (rc < 0)
            xfer_fail(it, rc, "creating parent directories: %s", strerror(-rc));
    }
    if (rc == 0)
        if (f->hooks.before_install) /* keeps a local edit beside */
            f->hooks.before_install(f->hooks.data, it->path);
    if (rc == 0 && xfer_in_place(f, it->path)) {
        close(fd);
        rc = xfer_copy_in_place(f, it, tmp);
        unlinkat(ns->staging_fd, tmp, 0);
        return rc < 0 ? rc : xfer_installed(f, it->path);
    }
    if (rc == 0 && renameat(ns->staging_fd, tmp, ns->backing_fd, it->path) < 0) {
        rc = -errno;
        xfer_fail(it, rc, "renaming into place: %s", strerror(-rc));
    }
    if (rc != 0) {
        close(fd);
        unlinkat(ns->staging_fd, tmp, 0);
        return rc;
    }
    rc = xfer_defer_fsync(f, fd, it);
    if (rc < 0) {
        xfer_fail(it, rc, "fsync of %s: %s", it->path, strerror(-rc));
        return rc;
    }
    rc = xfer_installed(f, it->path);
    uint64_t t3 = nsync_mono_us();
    log_debug("fetched %s: %" PRIu64 " bytes, download %" PRIu64 " ms (%.0f MiB/s), writeback "
              "start %" PRIu64 " ms, install %" PRIu64 " ms", it->path, it->size, (t1 - t0) / 1000,
              t1 > t0 ? (double)it->size / (double)(t1 - t0) * 1e6 / 1048576.0 : 0.0,
              (t2 - t1) / 1000, (t3 - t2) / 1000);
    return rc;
}

static int xfer_dir(struct xfer_fetcher *f, struct xfer_item *it)
{
    struct nsync *ns = f->ns;
    int bfd = ns->backing_fd;
    int rc = xfer_recheck(f, it);
    if (rc)
        return rc;
    struct stat st;
    bool exists = fstatat(bfd, it->path, &st, AT_SYMLINK_NOFOLLOW) == 0;

    /* A renamed directory: move the old subtree over in one step, so its
     * children find their bytes already in place. */
    if (it->renamed_from && (!exists || S_ISDIR(st.st_mode)) &&
        xfer_move_allowed(f, it->renamed_from)) {
        struct stat sf;
        if (fstatat(bfd, it->renamed_from, &sf, AT_SYMLINK_NOFOLLOW) == 0 &&
            S_ISDIR(sf.st_mode) && !path_is_under(it->path, it->renamed_from) &&
            xfer_mkparents(bfd, it->path) == 0 &&
            renameat(bfd, it->renamed_from, bfd, it->path) == 0) {
            xfer_invalidate(f, it->renamed_from);
            exists = fstatat(bfd, it->path, &st, AT_SYMLINK_NOFOLLOW) == 0;
        }
    }
    if (exists && !S_ISDIR(st.st_mode)) {
        xfer_fail(it, -EEXIST, "a non-directory is in the way");
        return -EEXIST;
    }
    if (!exists) {
        rc = xfer_mkparents(bfd, it->path);
        if (rc == 0 && mkdirat(bfd, it->path, 0700) < 0 && errno != EEXIST)
            rc = -errno;
        if (rc < 0) {
            xfer_fail(it, rc, "mkdir: %s", strerror(-rc));
            return rc;
        }
    }
    int fd = path_open_beneath(bfd, it->path, O_RDONLY | O_DIRECTORY);
    if (fd < 0) {
        rc = -errno;
        xfer_fail(it, rc, "opening directory: %s", strerror(-rc));
        return rc;
    }
    rc = xfer_fix_meta_fd(fd, it);
    close(fd);
    if (rc < 0) {
        xfer_fail(it, rc, "setting mode/mtime: %s", strerror(-rc));
        return rc;
    }
    return xfer_installed(f, it->path);
}

static int xfer_symlink(struct xfer_fetcher *f, struct xfer_item *it)
{
    struct nsync *ns = f->ns;
    int rc = xfer_recheck(f, it);
    if (rc)
        return rc;
    if (!it->target) {
        xfer_fail(it, -EINVAL, "symlink without a target");
        return -EINVAL;
    }
    struct timespec ts[2];
    xfer_times(it, ts);

    char cur[PATH_MAX];
    ssize_t n = readlinkat(ns->backing_fd, it->path, cur, sizeof cur - 1);
    if (n >= 0) {
        cur[n] = '\0';
        if (strcmp(cur, it->target) == 0) {
            if (geteuid() == 0)
                fchownat(ns->backing_fd, it->path, it->uid, it->gid, AT_SYMLINK_NOFOLLOW);
            utimensat(ns->backing_fd, it->path, ts, AT_SYMLINK_NOFOLLOW);
            xfer_invalidate(f, it->path);
            return XFER_DONE;
        }
    }
    char tmp[64];
    snprintf(tmp, sizeof tmp, XFER_TMP_PREFIX "%d-%u", (int)getpid(),
             atomic_fetch_add(&f->tmp_seq, 1));
    if (symlinkat(it->target, ns->staging_fd, tmp) < 0) {
        rc = -errno;
        xfer_fail(it, rc, "creating symlink: %s", strerror(-rc));
        return rc;
    }
    if (geteuid() == 0)
        fchownat(ns->staging_fd, tmp, it->uid, it->gid, AT_SYMLINK_NOFOLLOW);
    utimensat(ns->staging_fd, tmp, ts, AT_SYMLINK_NOFOLLOW);
    rc = xfer_mkparents(ns->backing_fd, it->path);
    if (rc == 0 && renameat(ns->staging_fd, tmp, ns->backing_fd, it->path) < 0)
        rc = -errno;
    if (rc < 0) {
        unlinkat(ns->staging_fd, tmp, 0);
        xfer_fail(it, rc, "installing symlink: %s", strerror(-rc));
        return rc;
    }
    return xfer_installed(f, it->path);
}

/* The file type a node kind is made as. */
static mode_t xfer_node_type(uint8_t kind)
{
    switch (kind) {
    case FSM_FIFO: return S_IFIFO;
    case FSM_SOCKET: return S_IFSOCK;
    case FSM_CHRDEV: return S_IFCHR;
    default: return S_IFBLK;
    }
}

/* What st describes is the node the item asks for (kind, and rdev for a
 * device): only its metadata may differ. */
static bool xfer_node_matches(const struct stat *st, const struct xfer_item *it)
{
    return (st->st_mode & S_IFMT) == xfer_node_type(it->kind) &&
           (!fsm_kind_has_rdev(it->kind) || st->st_rdev == (dev_t)it->rdev);
}

/* Owner, then mode (a chown clears set-id bits), then times of the node
 * name under dirfd. Never opened: opening a fifo would wait for its other end. */
static int xfer_fix_meta_at(int dirfd, const char *name, const struct xfer_item *it)
{
    struct timespec ts[2];
    xfer_times(it, ts);
    if (geteuid() == 0 && fchownat(dirfd, name, it->uid, it->gid, AT_SYMLINK_NOFOLLOW) < 0 &&
        errno != EPERM)
        log_debug("fetch %s: chown: %s", it->path, strerror(errno));
    if (fchmodat(dirfd, name, it->mode & 07777, 0) < 0 ||
        utimensat(dirfd, name, ts, AT_SYMLINK_NOFOLLOW) < 0)
        return -errno;
    return 0;
}

/* A fifo, socket or device node: made under a staging name and renamed
 * into place, as a file is, so the path never shows a half-made node. The
 * same node already there (a restart's catch-up), or at the path it was
 * renamed from, is kept and only gets the item's metadata. */
static int xfer_node(struct xfer_fetcher *f, struct xfer_item *it)
{
    struct nsync *ns = f->ns;
    int bfd = ns->backing_fd;
    int rc = xfer_recheck(f, it);
    if (rc)
        return rc;
    struct stat st;
    if (fstatat(bfd, it->path, &st, AT_SYMLINK_NOFOLLOW) == 0 && xfer_node_matches(&st, it)) {
        rc = xfer_fix_meta_at(bfd, it->path, it);
        if (rc < 0) {
            xfer_fail(it, rc, "setting mode/owner/times: %s", strerror(-rc));
            return rc;
        }
        return xfer_installed(f, it->path);
    }
    if (it->renamed_from && xfer_move_allowed(f, it->renamed_from) &&
        fstatat(bfd, it->renamed_from, &st, AT_SYMLINK_NOFOLLOW) == 0 && xfer_node_matches(&st, it) &&
        xfer_fix_meta_at(bfd, it->renamed_from, it) == 0 && xfer_mkparents(bfd, it->path) == 0 &&
        renameat(bfd, it->renamed_from, bfd, it->path) == 0) {
        xfer_invalidate(f, it->renamed_from);
        return xfer_installed(f, it->path);
    }
    char tmp[64];
    snprintf(tmp, sizeof tmp, XFER_TMP_PREFIX "%d-%u", (int)getpid(),
             atomic_fetch_add(&f->tmp_seq, 1));
    mode_t mode = xfer_node_type(it->kind) | (it->mode & 07777);
    if (mknodat(ns->staging_fd, tmp, mode, fsm_kind_has_rdev(it->kind) ? (dev_t)it->rdev : 0) < 0) {
        rc = -errno;
        xfer_fail(it, rc, "mknod: %s", strerror(-rc));
        return rc;
    }
    rc = xfer_fix_meta_at(ns->staging_fd, tmp, it);
    if (rc == 0)
        rc = xfer_mkparents(bfd, it->path);
    if (rc == 0 && renameat(ns->staging_fd, tmp, bfd, it->path) < 0)
        rc = -errno;
    if (rc < 0) {
        unlinkat(ns->staging_fd, tmp, 0);
        xfer_fail(it, rc, "installing the node: %s", strerror(-rc));
        return rc;
    }
    return xfer_installed(f, it->path);
}

static int xfer_tombstone(struct xfer_fetcher *f, struct xfer_item *it)
{
    struct nsync *ns = f->ns;
    int rc = xfer_recheck(f, it);
    if (rc)
        return rc;
    if (unlinkat(ns->backing_fd, it->path, 0) < 0) {
        rc = -errno;
        if (rc == -EISDIR || rc == -EPERM)
            rc = unlinkat(ns->backing_fd, it->path, AT_REMOVEDIR) < 0 ? -errno : 0;
        if (rc == -ENOENT || rc == -ENOTDIR)
            rc = 0; /* already gone */
        if (rc < 0) {
            /* ENOTEMPTY: local-only children; children tombstones sort first,
             * so anything left is not ours to delete. Retry later. */
            xfer_fail(it, rc, "delete: %s", strerror(-rc));
            return rc;
        }
    }
    return xfer_installed(f, it->path);
}

/* 0 if every existing ancestor of rel is a real directory (a missing one is
 * fine: it will be created), -ENOTDIR if one is a symlink or a file: a path
 * through a symlink would act outside BACKING or on the wrong tree. */
static int xfer_parents_ok(int dirfd, const char *rel)
{
    char buf[PATH_MAX];
    size_t len = strlen(rel);
    if (len >= sizeof buf)
        return -ENAMETOOLONG;
    memcpy(buf, rel, len + 1);
    for (char *p = strchr(buf, '/'); p; p = strchr(p + 1, '/')) {
        struct stat st;
        *p = '\0';
        int rc = fstatat(dirfd, buf, &st, AT_SYMLINK_NOFOLLOW);
        *p = '/';
        if (rc < 0)
            return errno == ENOENT ? 0 : -errno;
        if (!S_ISDIR(st.st_mode))
            return -ENOTDIR;
    }
    return 0;
}

/* Installing it->path here stamped its directory with this node's clock;
 * the catalog has the writer's stamp (fsm_cmd.parents), the same on every
 * node: set that one. The top directory is not in the catalog. */
static void xfer_fix_parent(struct xfer_fetcher *f, const char *rel)
{
    struct nsync *ns = f->ns;
    char dir[PATH_MAX];
    if (path_parent(rel, dir, sizeof dir) < 0 || !dir[0])
        return;
    pthread_rwlock_rdlock(&ns->fsm_lock);
    const struct fsm_entry *e = fsm_get(ns->fsm, dir);
    bool dir_entry = e && e->kind == FSM_DIR;
    int64_t mtime = dir_entry ? e->mtime_ns : 0;
    pthread_rwlock_unlock(&ns->fsm_lock);
    if (!dir_entry)
        return;
    struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT}};
    xfer_timespec(mtime, &ts[1]);
    if (utimensat(ns->backing_fd, dir, ts, AT_SYMLINK_NOFOLLOW) < 0 && errno != ENOENT)
        log_debug("fetch %s: setting the mtime of %s: %s", rel, dir, strerror(errno));
}

void xfer_process(struct xfer_worker *w, struct xfer_item *it)
{
    struct xfer_fetcher *f = w->f;
    int rc;
    /* The FSM already refuses such paths; checked again here because this is
     * where a bad one would act on the disk. */
    if (path_check(it->path) < 0 || path_is_internal(it->path) ||
        (it->renamed_from && (path_check(it->renamed_from) < 0 || path_is_internal(it->renamed_from)))) {
        xfer_fail(it, -EINVAL, "refused: not a clean path outside .nsyncfs");
        it->result = -EINVAL;
        atomic_fetch_add(&f->st_errors, 1);
        return;
    }
    if (xfer_busy(f, it->path)) {
        it->result = XFER_BUSY;
        return;
    }
    rc = xfer_parents_ok(f->ns->backing_fd, it->path);
    if (rc < 0 && !(rc == -ENOTDIR && it->kind == FSM_TOMBSTONE)) {
        xfer_fail(it, rc, "a parent is not a directory: %s", strerror(-rc));
        it->result = rc;
        atomic_fetch_add(&f->st_errors, 1);
        return;
    }
    if (rc == -ENOTDIR) {
        /* Deleting below a non-directory: nothing of ours can be there. */
        rc = xfer_recheck(f, it);
        it->result = rc ? rc : XFER_DONE;
        return;
    }
    switch (it->kind) {
    case FSM_FILE: rc = xfer_file(w, it); break;
    case FSM_DIR: rc = xfer_dir(f, it); break;
    case FSM_SYMLINK: rc = xfer_symlink(f, it); break;
    case FSM_TOMBSTONE: rc = xfer_tombstone(f, it); break;
    case FSM_FIFO:
    case FSM_SOCKET:
    case FSM_CHRDEV:
    case FSM_BLKDEV: rc = xfer_node(f, it); break;
    default:
        xfer_fail(it, -EINVAL, "unknown kind %u", it->kind);
        rc = -EINVAL;
        break;
    }
    it->result = rc;
    if (rc == XFER_DONE) {
        xfer_fix_parent(f, it->path);
        atomic_fetch_add(&f->st_installed, 1);
    } else if (rc < 0) {
        atomic_fetch_add(&f->st_errors, 1);
    }
}
