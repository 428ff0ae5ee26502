/* Private to the fetch worker's files (src/transfer/): its structures and
 * the functions one file offers the others, grouped by the file that
 * defines them. */
#ifndef NSYNC_XFER_FETCH_INT_H
#define NSYNC_XFER_FETCH_INT_H

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
#include "nsync.h"
#include "transfer/fetch.h"
#include "transfer/quick.h"

#define XFER_WORKERS 4            /* parallel file transfers */

#define XFER_RUN_MAX 256          /* files handed to the pool per barrier */

#define XFER_BATCH_MAX 4096       /* items per SYNCED command: a rejoin reports 50,000 in 13 */

#define XFER_BATCH_BYTES (256u << 10) /* ...and their paths' bytes: far below the 1 MiB a
                                       * forwarded command may have (server.c) */

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
    uint32_t mode, uid, gid, rdev;
    int64_t mtime_ns, atime_ns;
    uint8_t hash[FSM_HASH_LEN];
    void *xattrs;        /* the version's extended attributes (xattrs.c), or NULL */
    uint32_t xattrs_len;
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
    size_t bytes;            /* of the items' paths */
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
    struct xfer_fetch_hooks hooks; /* the layer above, see fetch.h */
    bool stopped;              /* xfer_fetcher_stop ran: only status and free remain */
    struct nsync *ns;
    pthread_t manager;
    bool manager_started;
    atomic_bool stop;

    _Atomic uint64_t st_pending, st_installed, st_bytes, st_errors;
    /* Files already here when their version came: read to compare their
     * hash, or trusted by the quick check's record (quick.h). */
    _Atomic uint64_t st_hashed, st_trusted;
    _Atomic uint64_t st_map_bytes; /* extent and block maps received (blocks.c) */
    struct xfer_quick quick;   /* read-only while the threads run */
    /* The current catch-up spell (this node lacks something), written by
     * the manager at each pass: when it began (0: none), the counters then,
     * and the bytes of files still to fetch. */
    _Atomic uint64_t spell_mono_ms, spell_wall_ms, spell_installed0, spell_bytes0;
    _Atomic uint64_t st_pending_bytes;
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

static inline bool xfer_stopping(struct xfer_fetcher *f)
{
    return atomic_load(&f->stop);
}

static inline bool xfer_busy(struct xfer_fetcher *f, const char *rel)
{
    return f->hooks.path_busy && f->hooks.path_busy(f->hooks.data, rel);
}

/* The version of e and what it says of the object beyond its bytes: what a
 * metadata-only change moves on (xfer_recheck), and part of every item. */
static inline void xfer_item_take_meta(struct xfer_item *it, const struct fsm_entry *e)
{
    it->version = e->version;
    it->origin = e->origin;
    it->mode = e->mode;
    it->uid = e->uid;
    it->gid = e->gid;
    it->rdev = e->rdev;
    it->mtime_ns = e->mtime_ns;
    it->atime_ns = e->atime_ns;
}

static inline bool xfer_in_place(struct xfer_fetcher *f, const char *rel)
{
    return f->hooks.in_place && f->hooks.in_place(f->hooks.data, rel);
}

static inline void xfer_invalidate(struct xfer_fetcher *f, const char *rel)
{
    if (f->hooks.invalidate)
        f->hooks.invalidate(f->hooks.data, rel);
}

struct xfer_sink {
    struct xfer_fetcher *f;
    CURL *curl;
    XXH3_state_t *xxh;
    int fd;
    uint64_t off, limit, drained;
    int err;             /* local write error, or EPROTO for an oversized body */
    int code_checked;    /* 0 unknown, 1 200, -1 other status */
};

struct xfer_list {
    struct xfer_item **v;
    size_t n, cap;
    int err;
};

/* ---- install.c ---- */
void xfer_fsync_dir(int dirfd, const char *dir);
void xfer_sync_parent(int dirfd, const char *rel);
void xfer_fail(struct xfer_item *it, int err, const char *fmt, ...);
void xfer_process(struct xfer_worker *w, struct xfer_item *it);

/* ---- xattrs.c ---- */
/* it takes e's set (replacing its own): 0 or -ENOMEM. */
int xfer_item_take_xattrs(struct xfer_item *it, const struct fsm_entry *e);
/* fd's set becomes it's (names this node may not hold are skipped). 0 or -errno. */
int xfer_xattrs_apply(int fd, const struct xfer_item *it);
bool xfer_xattrs_same(int fd, const struct xfer_item *it);

/* ---- download.c ---- */
int xfer_download(struct xfer_worker *w, struct xfer_item *it, int fd);
/* The URL of the item's version at faddr, extra appended to its query.
 * NULL on ENOMEM; the caller frees it. */
char *xfer_file_url(struct xfer_worker *w, const struct xfer_item *it, const char *faddr,
                    const char *extra);
/* One GET on the worker's handle: the body to cb(arg), each header line to
 * hcb(arg) if set; big: a large receive buffer. *code the HTTP status. */
CURLcode xfer_http_get(struct xfer_worker *w, const char *url, bool big, curl_write_callback cb,
                       void *arg, curl_write_callback hcb, long *code);

/* ---- blocks.c ---- */
/* Fill fd (a staging file) with the item's bytes from the holder at faddr,
 * moving only what this node lacks: the data extents of a sparse file (its
 * holes stay holes), or the blocks that differ from the older copy at the
 * item's path (blockmap.h). The result is checked (size, hash) as a whole
 * fetch is. 0: fd holds the item's bytes; -ENOTSUP: fetch the whole file
 * instead (it is not worth it, the holder cannot, or the parts did not add
 * up); -EAGAIN: try another holder; -EHOSTUNREACH: the same, and this one
 * failed; XFER_BUSY: stopping; another -errno: a local failure. */
int xfer_parts_from(struct xfer_worker *w, struct xfer_item *it, const char *faddr, int fd);

/* ---- report.c ---- */
int xfer_installed(struct xfer_fetcher *f, const char *rel);
int xfer_defer_fsync(struct xfer_fetcher *f, int fd, const struct xfer_item *it);
void xfer_sync_installed(struct xfer_fetcher *f, struct xfer_batch *b);
void xfer_flush(struct xfer_fetcher *f, struct xfer_batch *b);
void xfer_batch_add(struct xfer_fetcher *f, struct xfer_batch *b, const struct xfer_item *it);
void xfer_account(struct xfer_fetcher *f, struct xfer_batch *b, struct xfer_item *it, uint64_t *wake_ms);
void xfer_run_and_account(struct xfer_fetcher *f, struct xfer_batch *b, struct xfer_item **run, size_t n, uint64_t *wake);

/* ---- retry.c ---- */
struct xfer_retry *xfer_retry_find(struct xfer_fetcher *f, const char *path);
struct xfer_retry *xfer_retry_get(struct xfer_fetcher *f, const char *path, uint64_t version);
void xfer_retry_drop(struct xfer_fetcher *f, const char *path);
void xfer_retry_sweep(struct xfer_fetcher *f, bool all);

/* ---- fetch.c ---- */
void xfer_run_files(struct xfer_fetcher *f, struct xfer_item **items, size_t n);

#endif
