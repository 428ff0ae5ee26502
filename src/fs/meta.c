/* From BACKING to catalog metadata: stat -> struct fsm_meta, the XXH3-128
 * of a file, and the running hash a handle keeps of a file written front to
 * back so that its announce need not read it again. */
#include <assert.h>

#include "common/xattrs.h"
#include "fs/fs_int.h"

/* A set read for an announce lives here until this thread's next one: every
 * caller builds one command at a time and encodes it before the next. */
static _Thread_local uint8_t meta_xbuf[XATTRS_MAX];

static void meta_from_stat(const struct stat *st, struct fsm_meta *m)
{
    m->mode = st->st_mode & 07777;
    m->uid = st->st_uid;
    m->gid = st->st_gid;
    m->mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
    m->atime_ns = (int64_t)st->st_atim.tv_sec * 1000000000 + st->st_atim.tv_nsec;
}

uint8_t meta_kind_of_mode(mode_t mode)
{
    switch (mode & S_IFMT) {
    case S_IFREG: return FSM_FILE;
    case S_IFDIR: return FSM_DIR;
    case S_IFLNK: return FSM_SYMLINK;
    case S_IFIFO: return FSM_FIFO;
    case S_IFSOCK: return FSM_SOCKET;
    case S_IFCHR: return FSM_CHRDEV;
    case S_IFBLK: return FSM_BLKDEV;
    default: return 0;
    }
}

/* A FILE meta from the stat of a regular file, all but its hash. */
void meta_of_file(const struct stat *st, struct fsm_meta *m)
{
    memset(m, 0, sizeof *m);
    m->kind = FSM_FILE;
    meta_from_stat(st, m);
    m->size = (uint64_t)st->st_size;
}

/* The size and hash of the file open at fd (st: its fstat) into m. Read
 * through a second open of the same inode (via /proc) with O_NOATIME, unless
 * fd has it already: hashing is our read, not the user's, and must leave the
 * atime as the user last saw or set it (without O_NOATIME, relatime would
 * move an atime older than the mtime to now). With inl (the caller's, FSM_INLINE_MAX + 1 bytes), a
 * file of at most FSM_INLINE_MAX bytes is read once into it and travels in
 * the announce_sync (m->data = inl): replicas then install it without a fetch,
 * and hash and bytes come from the same read. */
int meta_hash_fd(int fd, const struct stat *st, struct fsm_meta *m, uint8_t *inl)
{
    int rfd = fd;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return -errno;
    if ((fl & O_ACCMODE) == O_WRONLY || !(fl & O_NOATIME)) {
        char proc[64];
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
        rfd = path_open_noatime(AT_FDCWD, proc, O_RDONLY, false);
        if (rfd < 0 && (fl & O_ACCMODE) != O_WRONLY)
            rfd = fd; /* the user's fd reads too: the old way, atime and all */
        else if (rfd < 0)
            return -errno;
    }
    int rc = 1;
    if (inl && st->st_size > 0 && st->st_size <= (off_t)FSM_INLINE_MAX) {
        /* A short read of a regular file is its end (or a writer that
         * truncated it meanwhile: we announce what we read). */
        ssize_t n = pread(rfd, inl, FSM_INLINE_MAX + 1, 0);
        if (n < 0) {
            rc = -errno;
        } else if ((size_t)n <= FSM_INLINE_MAX) {
            m->size = (uint64_t)n;
            digest_buf(inl, (size_t)n, m->hash);
            m->data = n > 0 ? inl : NULL;
            rc = 0;
        } /* else it grew: hash it the usual way */
    }
    if (rc > 0)
        rc = digest_fd(rfd, m->hash, &m->size);
    if (rfd != fd)
        close(rfd);
    return rc;
}

int meta_xattrs_fd(int fd, const char *rel, struct fsm_meta *m)
{
    m->xattrs = NULL;
    m->xattrs_len = 0;
    int n = xattrs_read_fd(fd, meta_xbuf);
    if (n == -E2BIG) {
        /* Put there behind our back (ops refuse it): the bytes still go. */
        log_warn("%s: its extended attributes take more than %u bytes: not replicated", rel,
                 XATTRS_MAX);
        return 0;
    }
    if (n < 0) {
        log_error("%s: cannot read its extended attributes: %s", rel, strerror(-n));
        return n;
    }
    m->xattrs = n ? meta_xbuf : NULL;
    m->xattrs_len = (uint32_t)n;
    return 0;
}

/* The current state of rel in BACKING as an announce; *st receives the
 * stat of what it describes. target receives a symlink's target. -ENOTSUP
 * for what the catalog cannot carry (a device number no mknod makes). */
int meta_of_path(struct fs *fs, const char *rel, struct fsm_meta *m, char *target,
                        size_t tsz, struct stat *st)
{
    int bfd = fs->ns->backing_fd;
    if (fstatat(bfd, rel, st, AT_SYMLINK_NOFOLLOW) < 0)
        return -errno;
    if (S_ISREG(st->st_mode)) {
        int fd = path_open_noatime(bfd, rel, O_RDONLY, true);
        if (fd < 0)
            return -errno;
        int rc = fstat(fd, st) < 0 ? -errno : 0; /* the file opened, if it changed */
        if (rc == 0) {
            meta_of_file(st, m);
            rc = meta_hash_fd(fd, st, m, NULL);
        }
        if (rc == 0)
            rc = meta_xattrs_fd(fd, rel, m);
        close(fd);
        return rc;
    }
    memset(m, 0, sizeof *m);
    meta_from_stat(st, m);
    if (S_ISDIR(st->st_mode)) {
        m->kind = FSM_DIR;
        int fd = path_open_beneath(bfd, rel, O_RDONLY | O_DIRECTORY);
        if (fd < 0)
            return -errno;
        int rc = meta_xattrs_fd(fd, rel, m);
        close(fd);
        return rc;
    }
    if (S_ISLNK(st->st_mode)) {
        ssize_t n = readlinkat(bfd, rel, target, tsz - 1);
        if (n < 0)
            return -errno;
        target[n] = '\0';
        m->kind = FSM_SYMLINK;
        m->target = target;
        return 0;
    }
    m->kind = meta_kind_of_mode(st->st_mode);
    if (!fsm_kind_is_node(m->kind) || (uint64_t)st->st_rdev > UINT32_MAX)
        return -ENOTSUP;
    m->rdev = fsm_kind_has_rdev(m->kind) ? (uint32_t)st->st_rdev : 0;
    return 0;
}

void meta_hash_keep(struct lock_ent *e, const struct stat *st, const struct fsm_meta *m,
                    uint64_t mods)
{
    assert(e->announcing);
    e->hash_kept = true;
    memcpy(e->kept_hash, m->hash, DIGEST_LEN);
    e->kept_mods = mods;
    e->kept_size = (uint64_t)st->st_size;
    e->kept_dev = st->st_dev;
    e->kept_ino = st->st_ino;
    e->kept_attempts = e->attempts;
}

/* tar, cp -a and rsync set owner, mode and times of each file right after
 * writing it: without the kept hash each of those re-reads the whole file. */
int meta_of_locked(struct fs *fs, struct lock_ent *e, const char *rel, struct fsm_meta *m,
                   char *target, size_t tsz, struct stat *st)
{
    assert(e->announcing);
    uint64_t mods = atomic_load(&e->mods);
    if (e->hash_kept && e->kept_mods == mods && e->kept_attempts == e->attempts) {
        /* A failed open (the path is now a symlink, say) is meta_of_path's
         * to describe below. */
        int fd = path_open_noatime(fs->ns->backing_fd, rel, O_RDONLY, true);
        bool same = fd >= 0 && fstat(fd, st) == 0 && S_ISREG(st->st_mode) &&
                    st->st_dev == e->kept_dev && st->st_ino == e->kept_ino &&
                    (uint64_t)st->st_size == e->kept_size;
        int rc = 0;
        if (same) {
            meta_of_file(st, m);
            memcpy(m->hash, e->kept_hash, DIGEST_LEN);
            rc = meta_xattrs_fd(fd, rel, m); /* they may be what changed */
        }
        if (fd >= 0)
            close(fd);
        if (same)
            return rc;
    }
    e->hash_kept = false;
    int rc = meta_of_path(fs, rel, m, target, tsz, st);
    /* A write that raced with the read leaves mods moved: nothing kept. */
    if (rc == 0 && m->kind == FSM_FILE && atomic_load(&e->mods) == mods)
        meta_hash_keep(e, st, m, mods);
    return rc;
}

int meta_parent_mtime(struct fs *fs, const char *rel, int64_t *out)
{
    *out = 0;
    char dir[PATH_MAX];
    int rc = path_parent(rel, dir, sizeof dir);
    if (rc < 0 || !dir[0])
        return rc; /* "": the top directory, which the catalog does not hold */
    struct stat st;
    if (fstatat(fs->ns->backing_fd, dir, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return -errno;
    *out = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    return 0;
}

/* hmu held. */
void meta_hash_stop(struct handle *h)
{
    digest_stream_free(h->hs);
    h->hs = NULL;
    h->hash_live = false;
}

/* A content change through h at [off, off + n) (n bytes of buf; buf NULL for
 * a truncate to off). Every change under the lock counts in lk->mods; h's
 * running hash survives only if the count was still what h left it at (no
 * other handle, no truncate elsewhere) and the change extends [0, hashed)
 * exactly. Called after the change, with h->rw held shared. */
void meta_hash_note(struct handle *h, const void *buf, size_t n, off_t off)
{
    struct lock_ent *e = h->lk;
    pthread_mutex_lock(&h->hmu);
    uint64_t want = h->hash_mods;
    bool ours = e && atomic_compare_exchange_strong(&e->mods, &want, want + 1);
    if (!ours && e)
        atomic_fetch_add(&e->mods, 1);
    if (!h->hash_live || !ours) {
        meta_hash_stop(h);
    } else if (!buf && off == 0) {
        digest_stream_free(h->hs); /* emptied: start again */
        h->hs = NULL;
        h->hashed = 0;
        h->hash_mods = want + 1;
    } else if (buf && (uint64_t)off == h->hashed && (h->hs || (h->hs = digest_stream_new()))) {
        digest_stream_update(h->hs, buf, n);
        h->hashed += n;
        h->hash_mods = want + 1;
    } else {
        meta_hash_stop(h);
    }
    pthread_mutex_unlock(&h->hmu);
}

/* h's running hash is the hash of the whole file st describes (h->rw held
 * exclusively, so no write of h is in flight). */
bool meta_hash_ready(struct handle *h, const struct stat *st, uint8_t out[DIGEST_LEN])
{
    pthread_mutex_lock(&h->hmu);
    bool ok = h->hash_live && h->hs && h->lk && atomic_load(&h->lk->mods) == h->hash_mods &&
              (uint64_t)st->st_size == h->hashed;
    if (ok)
        digest_stream_peek(h->hs, out);
    pthread_mutex_unlock(&h->hmu);
    return ok;
}
