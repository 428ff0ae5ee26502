/* The fetch worker (design §5): a manager thread copies the pending entries
 * this node lacks out of the catalog, applies them in version order (files
 * fetched by a small pool of transfer threads, everything else locally), and
 * reports what it installed in batched SYNCED commands. BACKING only ever
 * sees complete, verified files: bytes land in staging and are renamed in. */
#include "transfer/fetch.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <xxhash.h>

#include "cluster/cluster.h"
#include "cluster/fsm.h"
#include "common/digest.h"
#include "common/log.h"
#include "common/path.h"
#include "fs/fs.h"
#include "fs/reconcile.h"
#include "nsync.h"

#define XFER_WORKERS 4            /* parallel file transfers */
#define XFER_RUN_MAX 256          /* files handed to the pool per barrier */
#define XFER_BATCH_MAX 256        /* items per SYNCED command */
#define XFER_BATCH_AGE_MS 100     /* flush a partial batch this old during a long pass */
#define XFER_REPORT_DELAY_MS 10   /* ...and between passes: installs of a stream share a SYNCED */
#define XFER_RETRY_MIN_MS 250
#define XFER_SOFT_RETRY_MS 20     /* first retry when every holder said 409/404 */
#define XFER_SOFT_LOG_MS 2000     /* ...and log once retries have backed off this far */
#define XFER_RETRY_MAX_MS 30000
#define XFER_BUSY_RETRY_MS 200
#define XFER_SYNCED_WAIT_MS 1000  /* for this node's catalog to apply its own SYNCED */
#define XFER_PEER_MAX 64
#define XFER_RETRY_BUCKETS 1024
#define XFER_TMP_PREFIX "xfer-"
#define XFER_ERRBODY_MAX 4096     /* body of a non-200 answer we are willing to drain */
#define XFER_RECV_BUF (1024 * 1024) /* curl's receive buffer (its default: 16 KiB) */
#define XFER_BIG_FILE (8u << 20)    /* ...for files at least this big */
#define XFER_SYNC_FDS 64          /* installed files whose fsync waits for the SYNCED */

/* Outcome of one item. */
enum {
    XFER_DONE = 0, /* installed: report SYNCED */
    XFER_STALE = 1, /* the catalog moved on: nothing to do, the newer entry will come */
    XFER_BUSY = 2, /* a local writer has the path, or we are stopping: try again soon */
};

/* A private copy of one pending catalog entry: the catalog may change as soon
 * as the read lock is dropped. */
#define XFER_PROGRESS_MIN 64 /* fewer pending entries is normal traffic, not a catch-up */

struct xfer_item {
    char *path, *target, *renamed_from;
    uint8_t kind;
    uint64_t version, origin, size;
    uint32_t mode, uid, gid;
    int64_t mtime_ns;
    uint8_t hash[FSM_HASH_LEN];
    uint64_t *synced;
    uint32_t n_synced;
    bool inline_data;    /* the catalog holds the bytes (no fetch needed) */
    bool need_sync;      /* installed before, but its fsync failed: fsync if "already here" */
    int result;          /* XFER_* or -errno */
    char msg[256];       /* what failed, for the (once per version) log line */
};

/* Failure memory per path, so that a failing entry backs off and is logged
 * once per version. Owned by the manager thread only. */
struct xfer_retry {
    char *path;
    uint64_t version;
    uint64_t next_ms;
    unsigned delay_ms;
    bool logged;
    bool installed;      /* installed, but the SYNCED report has not gone through */
    bool batched;        /* ...and waiting in the fetcher's batch: nothing to do */
    bool need_sync;      /* its fsync failed: not reported, fsync it when seen again */
    uint64_t gen;        /* last pass that saw the entry pending */
    struct xfer_retry *next;
};

struct xfer_peer_state {
    uint64_t id;
    uint64_t until_ms;
    unsigned fails;
};

/* Installed items waiting for their SYNCED; the paths are owned. */
struct xfer_batch {
    struct fsm_synced_item items[XFER_BATCH_MAX];
    uint32_t n;
    uint64_t first_ms;
};

/* An installed file whose fsync waits for the SYNCED that reports it. */
struct xfer_sync_fd {
    int fd;
    char *path;      /* owned */
    uint64_t version;
};

struct xfer_fetcher;

struct xfer_worker {
    struct xfer_fetcher *f;
    CURL *curl;          /* one per thread: easy handles are not shareable */
    XXH3_state_t *xxh;
    pthread_t th;
    bool started;
};

struct xfer_fetcher {
    struct nsync *ns;
    pthread_t manager;
    bool manager_started;
    atomic_bool stop;

    _Atomic uint64_t st_pending, st_installed, st_bytes, st_errors;
    atomic_uint tmp_seq;

    struct xfer_retry *retry[XFER_RETRY_BUCKETS];
    uint64_t gen;

    pthread_mutex_t peer_mu;
    struct xfer_peer_state peers[XFER_PEER_MAX];
    size_t n_peers;

    /* The job board: the manager posts a run of file items, the workers take
     * them one by one, the manager waits until all are done. */
    pthread_mutex_t mu;
    pthread_cond_t cv_job, cv_done;
    struct xfer_item **jobs;
    size_t n_jobs, next_job, done_jobs;

    struct xfer_worker mgr_w;  /* the manager's own context (fallback with no pool) */
    struct xfer_batch *batch;  /* installed, not yet reported (manager thread) */

    /* Parent directories of what was installed since the last SYNCED: each
     * is fsynced once, just before that SYNCED says the files are here. */
    pthread_mutex_t dirs_mu;
    char **dirty_dirs;
    size_t n_dirty, cap_dirty;
    /* Installed files, still open, to fsync before that SYNCED (dirs_mu). */
    struct xfer_sync_fd sync_fds[XFER_SYNC_FDS];
    size_t n_sync_fds;

    /* Catch-up progress in the log (manager thread only). */
    uint64_t progress_ms;
    bool catching_up;
    struct xfer_worker workers[XFER_WORKERS];
    size_t n_workers;
};

/* ---------------------------------------------------------------- helpers */


static bool xfer_stopping(struct xfer_fetcher *f)
{
    return atomic_load(&f->stop);
}

static bool xfer_busy(struct xfer_fetcher *f, const char *rel)
{
    return f->ns->fs && fs_path_busy(f->ns->fs, rel);
}

static void xfer_invalidate(struct xfer_fetcher *f, const char *rel)
{
    if (f->ns->fs)
        fs_invalidate(f->ns->fs, rel);
}


static void xfer_times(int64_t mtime_ns, struct timespec ts[2])
{
    int64_t sec = mtime_ns / 1000000000, nsec = mtime_ns % 1000000000;
    if (nsec < 0) {
        nsec += 1000000000;
        sec -= 1;
    }
    ts[0].tv_sec = ts[1].tv_sec = (time_t)sec;
    ts[0].tv_nsec = ts[1].tv_nsec = (long)nsec;
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
static void xfer_fsync_dir(int dirfd, const char *dir)
{
    int fd = dir[0] ? path_open_beneath(dirfd, dir, O_RDONLY | O_DIRECTORY)
                    : openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return;
    if (fsync(fd) < 0)
        log_warn("fsync of directory %s: %s", dir[0] ? dir : ".", strerror(errno));
    close(fd);
}

static void xfer_sync_parent(int dirfd, const char *rel)
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

/* The catalog entry of it->path still is this version (and kind). */
static int xfer_recheck(struct xfer_fetcher *f, const struct xfer_item *it)
{
    struct nsync *ns = f->ns;
    pthread_rwlock_rdlock(&ns->fsm_lock);
    const struct fsm_entry *e = fsm_get(ns->fsm, it->path);
    bool same = e && e->version == it->version && e->kind == it->kind;
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

/* Mode, owner, mtime of an open regular file. */
static int xfer_fix_meta_fd(int fd, const struct xfer_item *it)
{
    struct timespec ts[2];
    xfer_times(it->mtime_ns, ts);
    xfer_set_owner_fd(fd, it);
    if (fchmod(fd, it->mode & 07777) < 0 || futimens(fd, ts) < 0)
        return -errno;
    return 0;
}

/* The same for a staging file this thread just created with the item's
 * mode (the daemon's umask is 0): it is ours, so a chown is needed only for
 * another owner, and then the mode again, since a chown clears set-id bits. */
static int xfer_fix_meta_new(int fd, const struct xfer_item *it)
{
    if (it->uid == geteuid() && it->gid == getegid()) {
        struct timespec ts[2];
        xfer_times(it->mtime_ns, ts);
        return futimens(fd, ts) < 0 ? -errno : 0;
    }
    return xfer_fix_meta_fd(fd, it);
}

/* fd's content has the item's size and hash. */
static bool xfer_fd_matches(int fd, const struct xfer_item *it)
{
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size != it->size)
        return false;
    uint8_t d[DIGEST_LEN];
    uint64_t n = 0;
    return digest_fd(fd, d, &n) == 0 && n == it->size && memcmp(d, it->hash, DIGEST_LEN) == 0;
}

static void xfer_fail(struct xfer_item *it, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void xfer_fail(struct xfer_item *it, int err, const char *fmt, ...)
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

/* ------------------------------------------------------------ peer backoff */

static bool xfer_peer_usable(struct xfer_fetcher *f, uint64_t id, uint64_t now)
{
    bool ok = true;
    pthread_mutex_lock(&f->peer_mu);
    for (size_t i = 0; i < f->n_peers; i++)
        if (f->peers[i].id == id)
            ok = f->peers[i].until_ms <= now;
    pthread_mutex_unlock(&f->peer_mu);
    return ok;
}

static void xfer_peer_result(struct xfer_fetcher *f, uint64_t id, bool ok)
{
    pthread_mutex_lock(&f->peer_mu);
    struct xfer_peer_state *p = NULL;
    for (size_t i = 0; i < f->n_peers; i++)
        if (f->peers[i].id == id)
            p = &f->peers[i];
    if (!p && !ok) {
        /* Forget the oldest slot if full: it is only a hint. */
        size_t slot = f->n_peers < XFER_PEER_MAX ? f->n_peers++ : 0;
        p = &f->peers[slot];
        p->id = id;
        p->fails = 0;
    }
    if (p) {
        if (ok) {
            p->fails = 0;
            p->until_ms = 0;
        } else {
            unsigned shift = p->fails < 6 ? p->fails : 6;
            p->fails++;
            p->until_ms = nsync_mono_ms() + (250u << shift); /* 250 ms .. 16 s */
        }
    }
    pthread_mutex_unlock(&f->peer_mu);
}

/* File-server address of a node: the catalog's member table, else the
 * --cluster list. */
static int xfer_peer_addr(struct xfer_fetcher *f, uint64_t id, char *out, size_t outsz)
{
    struct nsync *ns = f->ns;
    out[0] = '\0';
    pthread_rwlock_rdlock(&ns->fsm_lock);
    const struct fsm_member *m = fsm_member_get(ns->fsm, id);
    if (m && m->faddr[0])
        snprintf(out, outsz, "%s", m->faddr);
    pthread_rwlock_unlock(&ns->fsm_lock);
    if (out[0])
        return 0;
    const struct nsync_peer *p = nsync_peer_by_id(ns, id);
    if (!p)
        return -ENOENT;
    if (strchr(p->host, ':'))
        snprintf(out, outsz, "[%s]:%u", p->host, p->fport);
    else
        snprintf(out, outsz, "%s:%u", p->host, p->fport);
    return 0;
}

/* ------------------------------------------------------------ file transfer */

struct xfer_sink {
    struct xfer_fetcher *f;
    CURL *curl;
    XXH3_state_t *xxh;
    int fd;
    uint64_t off, limit, drained;
    int err;             /* local write error, or EPROTO for an oversized body */
    int code_checked;    /* 0 unknown, 1 200, -1 other status */
};

static size_t xfer_sink_write(char *ptr, size_t size, size_t nmemb, void *arg)
{
    struct xfer_sink *s = arg;
    size_t n = size * nmemb;
    if (!s->code_checked) {
        long code = 0;
        curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, &code);
        s->code_checked = code == 200 ? 1 : -1;
    }
    if (s->code_checked < 0) {
        s->drained += n; /* an error text: drop it, keep the connection */
        return s->drained > XFER_ERRBODY_MAX ? 0 : n;
    }
    if (s->off + n > s->limit) {
        s->err = EPROTO;
        return 0;
    }
    size_t done = 0;
    while (done < n) {
        ssize_t w = pwrite(s->fd, ptr + done, n - done, (off_t)(s->off + done));
        if (w < 0) {
            if (errno == EINTR)
                continue;
            s->err = errno;
            return 0;
        }
        done += (size_t)w;
    }
    XXH3_128bits_update(s->xxh, ptr, n);
    s->off += n;
    atomic_fetch_add(&s->f->st_bytes, n);
    return n;
}

static int xfer_sink_progress(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut,
                              curl_off_t un)
{
    struct xfer_sink *s = arg;
    return xfer_stopping(s->f) ? 1 : 0; /* abort long transfers at shutdown */
}

/* One GET from one holder into fd. 0 when fd holds exactly the item's bytes;
 * -EAGAIN to try another holder (peer failure marked); XFER_BUSY when
 * stopping; other -errno for a local failure that no holder can fix. */
static int xfer_get_from(struct xfer_worker *w, struct xfer_item *it, uint64_t holder,
                         const char *faddr, int fd)
{
    struct xfer_fetcher *f = w->f;
    char *esc = curl_easy_escape(w->curl, it->path, 0);
    if (!esc)
        return -ENOMEM;
    size_t ulen = strlen(faddr) + strlen(esc) + 64;
    char *url = malloc(ulen);
    if (!url) {
        curl_free(esc);
        return -ENOMEM;
    }
    snprintf(url, ulen, "http://%s/v1/file?path=%s&version=%" PRIu64, faddr, esc, it->version);
    curl_free(esc);

    if (ftruncate(fd, 0) < 0) {
        free(url);
        return -errno;
    }
    struct xfer_sink s = {
        .f = f, .curl = w->curl, .xxh = w->xxh, .fd = fd, .limit = it->size,
    };
    XXH3_128bits_reset(w->xxh);
    CURL *h = w->curl;
    curl_easy_reset(h); /* keeps the cached connections */
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(h, CURLOPT_PROXY, "");
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 1000L);
    /* Receiving a big file is CPU-bound (recv copy, page-cache copy, hash);
     * 16 KiB at a time adds a recv(), a pwrite() and a window update per
     * 16 KiB. With 1 MiB, a node receiving 1 GiB used ~1.8 instead of
     * ~2.6 s of CPU (2-core loopback cluster); on a shared disk the fsync
     * then waits longer, so the end-to-end gain there is small. One buffer
     * per handle: 5 MiB per node at most. Only for big files: the option
     * allocates the buffer anew on every transfer (the reset above drops
     * it), which for a 4 KiB file costs more than the transfer. */
    if (it->size >= XFER_BIG_FILE)
        curl_easy_setopt(h, CURLOPT_BUFFERSIZE, (long)XFER_RECV_BUF);
    /* No total timeout: a big file may take long; a stalled one may not. */
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, 10L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, xfer_sink_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &s);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, xfer_sink_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, &s);
    CURLcode cc = curl_easy_perform(h);
    long code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    free(url);

    if (cc == CURLE_ABORTED_BY_CALLBACK)
        return XFER_BUSY;
    if (s.err && s.err != EPROTO) {
        xfer_fail(it, -s.err, "writing staging file: %s", strerror(s.err));
        return -s.err;
    }
    if (cc != CURLE_OK && s.code_checked >= 0 && !s.err) {
        /* The peer is down or stalled: back off from it, try the next. */
        xfer_peer_result(f, holder, false);
        xfer_fail(it, -EHOSTUNREACH, "from %s: %s", faddr, curl_easy_strerror(cc));
        return -EAGAIN;
    }
    xfer_peer_result(f, holder, true);
    if (code != 200) {
        xfer_fail(it, -EAGAIN, "from %s: HTTP %ld", faddr, code);
        return -EAGAIN;
    }
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits_digest(w->xxh));
    if (s.err == EPROTO || s.off != it->size || memcmp(c.digest, it->hash, DIGEST_LEN) != 0) {
        xfer_fail(it, -EBADMSG, "from %s: got %" PRIu64 " bytes not matching size %" PRIu64
                  " / hash", faddr, s.off, it->size);
        return -EAGAIN;
    }
    return 0;
}

/* Fill fd from some holder: the origin first (it surely had it), then the
 * others starting at a version-dependent offset to spread the load. */
static int xfer_download(struct xfer_worker *w, struct xfer_item *it, int fd)
{
    struct xfer_fetcher *f = w->f;
    uint64_t self = f->ns->self_id;
    uint64_t *order = malloc((it->n_synced + 1) * sizeof *order);
    size_t n = 0;
    if (!order) {
        xfer_fail(it, -ENOMEM, "out of memory");
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < it->n_synced; i++)
        if (it->synced[i] == it->origin && it->origin != self)
            order[n++] = it->origin;
    for (uint32_t k = 0; k < it->n_synced; k++) {
        uint64_t id = it->synced[(k + it->version) % it->n_synced];
        if (id != self && id != it->origin)
            order[n++] = id;
    }
    uint64_t now = nsync_mono_ms();
    bool tried = false;
    int rc = -EAGAIN;
    for (size_t i = 0; i < n && rc == -EAGAIN; i++) {
        if (xfer_stopping(f)) {
            rc = XFER_BUSY;
            break;
        }
        if (!xfer_peer_usable(f, order[i], now))
            continue;
        char faddr[FSM_ADDR_MAX + 8];
        if (xfer_peer_addr(f, order[i], faddr, sizeof faddr) < 0)
            continue;
        tried = true;
        rc = xfer_get_from(w, it, order[i], faddr, fd);
    }
    free(order);
    if (rc == -EAGAIN && !tried)
        xfer_fail(it, -EAGAIN, "no reachable node holds version %" PRIu64, it->version);
    return rc;
}

/* rel is in place: readers see it now; its directory entry is made durable
 * before the SYNCED that reports it (xfer_sync_installed), once per directory
 * for a whole batch instead of once per file. */
static int xfer_installed(struct xfer_fetcher *f, const char *rel)
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
static int xfer_defer_fsync(struct xfer_fetcher *f, int fd, const struct xfer_item *it)
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

static struct xfer_retry *xfer_retry_get(struct xfer_fetcher *f, const char *path,
                                         uint64_t version);

/* Make the files and renames since the last call durable: fsync each
 * deferred file, then each directory they touched. Manager thread, before a
 * SYNCED. A file that cannot be fsynced is taken out of b (when given) and
 * forgotten, so that it is not reported: the next pass checks it again
 * (and fsyncs it, or fetches it anew). */
static void xfer_sync_installed(struct xfer_fetcher *f, struct xfer_batch *b)
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

static int xfer_file(struct xfer_worker *w, struct xfer_item *it)
{
    struct xfer_fetcher *f = w->f;
    struct nsync *ns = f->ns;
    int rc = xfer_recheck(f, it);
    if (rc)
        return rc;

    /* Already here (catch-up after restart, or a rename that kept the bytes)? */
    int fd = path_open_beneath(ns->backing_fd, it->path, O_RDONLY | O_NONBLOCK);
    if (fd >= 0) {
        bool same = xfer_fd_matches(fd, it);
        rc = same ? xfer_fix_meta_fd(fd, it) : 0;
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
        fd = path_open_beneath(ns->backing_fd, it->renamed_from, O_RDONLY | O_NONBLOCK);
        if (fd >= 0) {
            bool same = xfer_fd_matches(fd, it);
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
    fd = openat(ns->staging_fd, tmp, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, it->mode & 07777);
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
    if (rc == 0)
        rc = xfer_recheck(f, it); /* the transfer took time: still wanted? */
    if (rc == 0) {
        rc = xfer_mkparents(ns->backing_fd, it->path);
        if (rc < 0)
            xfer_fail(it, rc, "creating parent directories: %s", strerror(-rc));
    }
    if (rc == 0)
        reconcile_before_install(ns->reconcile, it->path); /* keeps a local edit beside */
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

/* ------------------------------------------------------ local-only changes */

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
    xfer_times(it->mtime_ns, ts);

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

static void xfer_process(struct xfer_worker *w, struct xfer_item *it)
{
    struct xfer_fetcher *f = w->f;
    int rc;
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
    default:
        xfer_fail(it, -EINVAL, "unknown kind %u", it->kind);
        rc = -EINVAL;
        break;
    }
    it->result = rc;
    if (rc == XFER_DONE)
        atomic_fetch_add(&f->st_installed, 1);
    else if (rc < 0)
        atomic_fetch_add(&f->st_errors, 1);
}

/* ------------------------------------------------------------ worker pool */

/* Replication is background work: on a busy node the applications' own
 * I/O (the FUSE threads) goes first, and catch-up takes what is left.
 * Linux applies nice per thread. */
#define XFER_NICE 10
static void xfer_background(void)
{
    if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), XFER_NICE) < 0)
        log_debug("fetch: cannot lower the priority of a fetch thread: %s", strerror(errno));
}

static void *xfer_worker_main(void *arg)
{
    xfer_background();
    struct xfer_worker *w = arg;
    struct xfer_fetcher *f = w->f;
    pthread_mutex_lock(&f->mu);
    for (;;) {
        while (!xfer_stopping(f) && f->next_job >= f->n_jobs)
            pthread_cond_wait(&f->cv_job, &f->mu);
        if (xfer_stopping(f) && f->next_job >= f->n_jobs)
            break;
        struct xfer_item *it = f->jobs[f->next_job++];
        pthread_mutex_unlock(&f->mu);
        if (xfer_stopping(f))
            it->result = XFER_BUSY;
        else
            xfer_process(w, it);
        pthread_mutex_lock(&f->mu);
        if (++f->done_jobs == f->n_jobs)
            pthread_cond_broadcast(&f->cv_done);
    }
    pthread_mutex_unlock(&f->mu);
    return NULL;
}

/* Run a set of independent file items (distinct paths, no directory change
 * in between) on the pool and wait for all of them. */
static void xfer_run_files(struct xfer_fetcher *f, struct xfer_item **items, size_t n)
{
    if (n == 0)
        return;
    if (f->n_workers == 0) {
        for (size_t i = 0; i < n; i++)
            xfer_process(&f->mgr_w, items[i]);
        return;
    }
    pthread_mutex_lock(&f->mu);
    f->jobs = items;
    f->n_jobs = n;
    f->next_job = 0;
    f->done_jobs = 0;
    pthread_cond_broadcast(&f->cv_job);
    while (f->done_jobs < f->n_jobs)
        pthread_cond_wait(&f->cv_done, &f->mu);
    f->jobs = NULL;
    f->n_jobs = f->next_job = f->done_jobs = 0;
    pthread_mutex_unlock(&f->mu);
}

/* ------------------------------------------------------------ retry table */

static size_t xfer_bucket(const char *path)
{
    return (size_t)(XXH3_64bits(path, strlen(path)) % XFER_RETRY_BUCKETS);
}

static struct xfer_retry *xfer_retry_find(struct xfer_fetcher *f, const char *path)
{
    for (struct xfer_retry *r = f->retry[xfer_bucket(path)]; r; r = r->next)
        if (strcmp(r->path, path) == 0)
            return r;
    return NULL;
}

static struct xfer_retry *xfer_retry_get(struct xfer_fetcher *f, const char *path,
                                         uint64_t version)
{
    struct xfer_retry *r = xfer_retry_find(f, path);
    if (r && r->version != version) {
        /* A new version: a fresh start. */
        r->version = version;
        r->next_ms = 0;
        r->delay_ms = 0;
        r->logged = false;
        r->installed = false;
        r->batched = false;
        r->need_sync = false;
    }
    if (r)
        return r;
    r = calloc(1, sizeof *r);
    if (!r || !(r->path = strdup(path))) {
        free(r);
        return NULL;
    }
    r->version = version;
    r->gen = f->gen;
    size_t b = xfer_bucket(path);
    r->next = f->retry[b];
    f->retry[b] = r;
    return r;
}

static void xfer_retry_drop(struct xfer_fetcher *f, const char *path)
{
    for (struct xfer_retry **pp = &f->retry[xfer_bucket(path)]; *pp; pp = &(*pp)->next) {
        if (strcmp((*pp)->path, path) == 0) {
            struct xfer_retry *r = *pp;
            *pp = r->next;
            free(r->path);
            free(r);
            return;
        }
    }
}

/* Forget entries the catalog no longer lists as pending for us. */
static void xfer_retry_sweep(struct xfer_fetcher *f, bool all)
{
    for (size_t b = 0; b < XFER_RETRY_BUCKETS; b++) {
        struct xfer_retry **pp = &f->retry[b];
        while (*pp) {
            struct xfer_retry *r = *pp;
            if (all || r->gen != f->gen) {
                *pp = r->next;
                free(r->path);
                free(r);
            } else {
                pp = &r->next;
            }
        }
    }
}

/* ------------------------------------------------------------ the pass */

struct xfer_list {
    struct xfer_item **v;
    size_t n, cap;
    int err;
};

static void xfer_item_free(struct xfer_item *it)
{
    if (!it)
        return;
    free(it->path);
    free(it->target);
    free(it->renamed_from);
    free(it->synced);
    free(it);
}

static int xfer_collect(const struct fsm_entry *e, void *arg)
{
    struct xfer_list *l = arg;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 256;
        struct xfer_item **nv = realloc(l->v, cap * sizeof *nv);
        if (!nv)
            goto oom;
        l->v = nv;
        l->cap = cap;
    }
    struct xfer_item *it = calloc(1, sizeof *it);
    if (!it)
        goto oom;
    l->v[l->n++] = it;
    it->path = strdup(e->path);
    it->target = e->target ? strdup(e->target) : NULL;
    it->inline_data = e->data != NULL;
    it->renamed_from = e->renamed_from ? strdup(e->renamed_from) : NULL;
    it->synced = e->n_synced ? malloc(e->n_synced * sizeof *it->synced) : NULL;
    if (!it->path || (e->target && !it->target) || (e->renamed_from && !it->renamed_from) ||
        (e->n_synced && !it->synced))
        goto oom;
    if (e->n_synced)
        memcpy(it->synced, e->synced, e->n_synced * sizeof *it->synced);
    it->n_synced = e->n_synced;
    it->kind = e->kind;
    it->version = e->version;
    it->origin = e->origin;
    it->size = e->size;
    it->mode = e->mode;
    it->uid = e->uid;
    it->gid = e->gid;
    it->mtime_ns = e->mtime_ns;
    memcpy(it->hash, e->hash, sizeof it->hash);
    return 0;
oom:
    l->err = -ENOMEM;
    return -ENOMEM;
}

/* Version order; within one version (a RENAME moves a whole subtree at once)
 * creations before deletions, parents created first and children deleted
 * first. */
static int xfer_item_cmp(const void *a, const void *b)
{
    const struct xfer_item *x = *(struct xfer_item *const *)a;
    const struct xfer_item *y = *(struct xfer_item *const *)b;
    if (x->version != y->version)
        return x->version < y->version ? -1 : 1;
    bool tx = x->kind == FSM_TOMBSTONE, ty = y->kind == FSM_TOMBSTONE;
    if (tx != ty)
        return tx ? 1 : -1;
    int c = strcmp(x->path, y->path);
    return tx ? -c : c;
}

static void xfer_flush(struct xfer_fetcher *f, struct xfer_batch *b)
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
}

/* it is installed: report it with the next SYNCED. The batch owns a copy of
 * the path (it outlives the pass); the retry entry marks the item as
 * batched, so that passes before that SYNCED leave it alone. Without
 * memory for either, the item is simply installed again later ("already
 * here") and reported then. */
static void xfer_batch_add(struct xfer_fetcher *f, struct xfer_batch *b,
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
    if (++b->n == XFER_BATCH_MAX)
        xfer_flush(f, b);
}

/* Book-keeping after an item ran: batch it, or schedule its retry. */
static void xfer_account(struct xfer_fetcher *f, struct xfer_batch *b, struct xfer_item *it,
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

static void xfer_run_and_account(struct xfer_fetcher *f, struct xfer_batch *b,
                                 struct xfer_item **run, size_t n, uint64_t *wake)
{
    xfer_run_files(f, run, n);
    for (size_t k = 0; k < n; k++)
        xfer_account(f, b, run[k], wake);
}

/* A node that joins or returns may lack thousands of entries: say how many
 * and how many bytes, every few seconds, and when it is done. */
static void xfer_log_progress(struct xfer_fetcher *f, const struct xfer_list *l)
{
    uint64_t now = nsync_mono_ms();
    if (l->n >= XFER_PROGRESS_MIN) {
        if (!f->catching_up || now - f->progress_ms >= 5000) {
            uint64_t bytes = 0;
            for (size_t i = 0; i < l->n; i++)
                if (l->v[i]->kind == FSM_FILE)
                    bytes += l->v[i]->size;
            log_info("catch-up: %zu entries, %" PRIu64 " bytes of files still to fetch", l->n, bytes);
            f->progress_ms = now;
            f->catching_up = true;
        }
    } else if (f->catching_up && l->n == 0) {
        log_info("catch-up: done");
        f->catching_up = false;
    }
}

/* One scan of the catalog and one attempt at everything due. Returns the
 * monotonic time at which a deferred item wants another try (UINT64_MAX if
 * none). */
static uint64_t xfer_pass(struct xfer_fetcher *f)
{
    struct nsync *ns = f->ns;
    struct xfer_list l = { 0 };
    pthread_rwlock_rdlock(&ns->fsm_lock);
    fsm_foreach_pending(ns->fsm, ns->self_id, xfer_collect, &l);
    pthread_rwlock_unlock(&ns->fsm_lock);
    atomic_store(&f->st_pending, (uint64_t)l.n);
    uint64_t wake = UINT64_MAX;
    if (l.err) {
        log_error("fetch: out of memory copying %zu pending entries", l.n);
        wake = nsync_mono_ms() + 1000;
    }
    f->gen++;
    if (l.n > 1) /* qsort(NULL, 0) is undefined */
        qsort(l.v, l.n, sizeof *l.v, xfer_item_cmp);
    xfer_log_progress(f, &l);

    struct xfer_batch *b = f->batch;
    struct xfer_item **run = malloc(XFER_RUN_MAX * sizeof *run);
    if (l.err || !run) {
        /* A partial copy is not in version order with what it misses. */
        wake = nsync_mono_ms() + 1000;
        goto out;
    }
    size_t nrun = 0;
    uint64_t now = nsync_mono_ms();
    for (size_t i = 0; i < l.n && !xfer_stopping(f); i++) {
        struct xfer_item *it = l.v[i];
        struct xfer_retry *r = xfer_retry_find(f, it->path);
        if (r && r->version == it->version) {
            r->gen = f->gen;
            it->need_sync = r->need_sync;
            if (r->batched)
                continue; /* installed, its report waits in the batch */
            if (r->installed) {
                xfer_batch_add(f, b, it);
                continue;
            }
            if (r->next_ms > now) {
                if (r->next_ms < wake)
                    wake = r->next_ms;
                continue;
            }
        }
        /* Plain file transfers are independent of each other and go to the
         * pool in runs. Anything else is a barrier: a mkdir, delete or
         * local rename may depend on what came before it, and a rename
         * moves bytes another file item could be installing at that path. */
        if (it->kind == FSM_FILE && !it->renamed_from && it->inline_data) {
            /* Bytes at hand: a local write and rename, cheaper here than a
             * hand-over to the pool. Independent of the run, like it. */
            xfer_process(&f->mgr_w, it);
            xfer_account(f, b, it, &wake);
        } else if (it->kind == FSM_FILE && !it->renamed_from) {
            run[nrun++] = it;
            if (nrun == XFER_RUN_MAX) {
                xfer_run_and_account(f, b, run, nrun, &wake);
                nrun = 0;
            }
        } else {
            xfer_run_and_account(f, b, run, nrun, &wake);
            nrun = 0;
            xfer_process(&f->mgr_w, it);
            xfer_account(f, b, it, &wake);
        }
        now = nsync_mono_ms();
        if (b->n && now - b->first_ms >= XFER_BATCH_AGE_MS)
            xfer_flush(f, b);
    }
    xfer_run_and_account(f, b, run, nrun, &wake);
    /* In a stream of small changes each pass installs one or two: their
     * reports wait a moment for company, so that two replicas do not add
     * two raft entries to every change. Readers see the files already. */
    now = nsync_mono_ms();
    if (b->n && now - b->first_ms >= XFER_REPORT_DELAY_MS)
        xfer_flush(f, b);
    else if (b->n && b->first_ms + XFER_REPORT_DELAY_MS < wake)
        wake = b->first_ms + XFER_REPORT_DELAY_MS;
    if (!xfer_stopping(f))
        xfer_retry_sweep(f, false);
out:
    for (size_t i = 0; i < l.n; i++)
        xfer_item_free(l.v[i]);
    free(l.v);
    free(run);
    return wake;
}

static void *xfer_manager_main(void *arg)
{
    xfer_background();
    struct xfer_fetcher *f = arg;
    uint64_t seen = 0;
    while (!xfer_stopping(f)) {
        uint64_t wake = xfer_pass(f);
        if (xfer_stopping(f))
            break;
        uint64_t now = nsync_mono_ms();
        unsigned tmo = 1000;
        if (wake != UINT64_MAX)
            tmo = wake <= now ? 10 : (wake - now < 1000 ? (unsigned)(wake - now) : 1000);
        cluster_wait_change(f->ns->cluster, &seen, tmo);
    }
    return NULL;
}

/* ------------------------------------------------------------ lifecycle */

/* Staging files left by a crashed predecessor are garbage. */
static void xfer_clean_staging(struct nsync *ns)
{
    int fd = openat(ns->staging_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strncmp(de->d_name, XFER_TMP_PREFIX, strlen(XFER_TMP_PREFIX)) == 0)
            unlinkat(ns->staging_fd, de->d_name, 0);
    closedir(d);
}

static int xfer_worker_init(struct xfer_fetcher *f, struct xfer_worker *w)
{
    w->f = f;
    w->curl = curl_easy_init();
    w->xxh = XXH3_createState();
    if (!w->curl || !w->xxh) {
        if (w->curl)
            curl_easy_cleanup(w->curl);
        XXH3_freeState(w->xxh);
        w->curl = NULL;
        w->xxh = NULL;
        return -ENOMEM;
    }
    return 0;
}

static void xfer_worker_fini(struct xfer_worker *w)
{
    if (w->curl)
        curl_easy_cleanup(w->curl);
    XXH3_freeState(w->xxh);
    w->curl = NULL;
    w->xxh = NULL;
}

int xfer_fetcher_start(struct nsync *ns, struct xfer_fetcher **out)
{
    struct xfer_fetcher *f = calloc(1, sizeof *f);
    if (!f)
        return -ENOMEM;
    f->ns = ns;
    atomic_init(&f->stop, false);
    if (pthread_mutex_init(&f->peer_mu, NULL) != 0) {
        free(f);
        return -ENOMEM;
    }
    pthread_mutex_init(&f->mu, NULL);
    pthread_mutex_init(&f->dirs_mu, NULL);
    pthread_cond_init(&f->cv_job, NULL);
    pthread_cond_init(&f->cv_done, NULL);
    int rc = xfer_worker_init(f, &f->mgr_w);
    if (rc == 0 && !(f->batch = calloc(1, sizeof *f->batch)))
        rc = -ENOMEM;
    if (rc < 0) {
        xfer_fetcher_stop(f);
        return rc;
    }
    xfer_clean_staging(ns);
    for (size_t i = 0; i < XFER_WORKERS; i++) {
        struct xfer_worker *w = &f->workers[i];
        if (xfer_worker_init(f, w) < 0)
            break;
        if (pthread_create(&w->th, NULL, xfer_worker_main, w) != 0) {
            xfer_worker_fini(w);
            break;
        }
        w->started = true;
        pthread_setname_np(w->th, "ns-fetch-pool");
        f->n_workers++;
    }
    rc = pthread_create(&f->manager, NULL, xfer_manager_main, f);
    if (rc != 0) {
        log_error("fetch: cannot start the manager thread: %s", strerror(rc));
        xfer_fetcher_stop(f);
        return -rc;
    }
    f->manager_started = true;
    pthread_setname_np(f->manager, "ns-fetch");
    *out = f;
    return 0;
}

void xfer_fetcher_stop(struct xfer_fetcher *f)
{
    if (!f)
        return;
    atomic_store(&f->stop, true);
    if (f->ns->cluster)
        cluster_kick(f->ns->cluster);
    pthread_mutex_lock(&f->mu);
    pthread_cond_broadcast(&f->cv_job);
    pthread_mutex_unlock(&f->mu);
    if (f->manager_started)
        pthread_join(f->manager, NULL);
    for (size_t i = 0; i < XFER_WORKERS; i++) {
        if (f->workers[i].started)
            pthread_join(f->workers[i].th, NULL);
        xfer_worker_fini(&f->workers[i]);
    }
    xfer_worker_fini(&f->mgr_w);
    xfer_sync_installed(f, NULL); /* installed but not reported: durable all the same */
    if (f->batch) {
        /* Unreported: the next start finds them here and reports them. */
        for (uint32_t i = 0; i < f->batch->n; i++)
            free((char *)f->batch->items[i].path);
        free(f->batch);
    }
    xfer_retry_sweep(f, true);
    pthread_cond_destroy(&f->cv_done);
    pthread_cond_destroy(&f->cv_job);
    pthread_mutex_destroy(&f->mu);
    pthread_mutex_destroy(&f->peer_mu);
    pthread_mutex_destroy(&f->dirs_mu);
    free(f);
}

void xfer_fetcher_get_status(struct xfer_fetcher *f, struct xfer_fetch_status *st)
{
    st->pending = atomic_load(&f->st_pending);
    st->installed = atomic_load(&f->st_installed);
    st->bytes = atomic_load(&f->st_bytes);
    st->errors = atomic_load(&f->st_errors);
}
