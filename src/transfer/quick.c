/* The quick check's record (BACKING/.nsyncfs/quick): made at a clean stop
 * from the catalog and one stat per file, read and removed at the next
 * start, asked by the installer before it would hash a file already here. */
#include "transfer/quick.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "cluster/fsm.h"
#include "common/log.h"
#include "common/path.h"
#include "nsync.h"

#define QUICK_FILE "quick"
#define QUICK_TMP "quick.tmp"
#define QUICK_MAGIC "nsyncfs-quick 1\n" /* 16 bytes: the format's version */
#define QUICK_PATH_MAX 4096
/* A file changed this close to the record could have changed again after
 * its stat within the same timestamp tick (a jiffy, 10 ms at most) and kept
 * it: such files are left out, and hashed next time. */
#define QUICK_RACY_MS 100

_Static_assert(FSM_HASH_LEN == 16, "the record stores 16-byte hashes");

/* On disk, after the magic and a u64 count: per file this header and the
 * path; then the XXH3-64 of everything before it. Native byte order: the
 * record never leaves the machine that wrote it. */
struct quick_hdr {
    uint64_t ino, size;
    int64_t mtime_ns, ctime_ns;
    uint8_t hash[16];
    uint32_t len;
} __attribute__((packed));

static int64_t ts_ns(const struct timespec *t)
{
    return (int64_t)t->tv_sec * 1000000000LL + t->tv_nsec;
}

struct collect {
    uint64_t self;
    struct xfer_quick_rec *v;
    size_t n, cap;
    int err;
};

/* Under the catalog's read lock: copy what the stats need, nothing more. */
static int collect_one(const struct fsm_entry *e, void *arg)
{
    struct collect *c = arg;
    if (e->kind != FSM_FILE || !fsm_entry_has(e, c->self))
        return 0;
    if (c->n == c->cap) {
        size_t nc = c->cap ? 2 * c->cap : 1024;
        struct xfer_quick_rec *nv = realloc(c->v, nc * sizeof *nv);
        if (!nv) {
            c->err = -ENOMEM;
            return 1;
        }
        c->v = nv;
        c->cap = nc;
    }
    struct xfer_quick_rec *r = &c->v[c->n];
    if (!(r->path = strdup(e->path))) {
        c->err = -ENOMEM;
        return 1;
    }
    r->size = e->size;
    r->mtime_ns = e->mtime_ns;
    memcpy(r->hash, e->hash, sizeof r->hash);
    c->n++;
    return 0;
}

static void recs_free(struct xfer_quick_rec *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i].path);
    free(v);
}

static int write_all(int fd, const void *p, size_t len)
{
    const char *b = p;
    while (len > 0) {
        ssize_t w = write(fd, b, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        b += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Buffered writes of the record to fd, the checksum fed as they go. */
struct out {
    int fd;
    XXH3_state_t *x;
    char buf[1 << 16];
    size_t len;
    int err;
};

static void out_put(struct out *o, const void *p, size_t len)
{
    if (o->err)
        return;
    XXH3_64bits_update(o->x, p, len);
    if (o->len + len > sizeof o->buf) {
        o->err = write_all(o->fd, o->buf, o->len);
        o->len = 0;
    }
    if (len > sizeof o->buf) {
        if (!o->err)
            o->err = write_all(o->fd, p, len);
        return;
    }
    memcpy(o->buf + o->len, p, len);
    o->len += len;
}

static int out_finish(struct out *o)
{
    if (!o->err && o->len)
        o->err = write_all(o->fd, o->buf, o->len);
    uint64_t sum = XXH3_64bits_digest(o->x);
    if (!o->err)
        o->err = write_all(o->fd, &sum, sizeof sum);
    return o->err;
}

static int quick_write(struct nsync *ns, const struct xfer_quick_rec *v, size_t n, size_t kept)
{
    int fd = openat(ns->data_fd, QUICK_TMP, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    struct out *o = calloc(1, sizeof *o);
    XXH3_state_t *x = XXH3_createState();
    int rc = (!o || !x) ? -ENOMEM : 0;
    if (rc == 0) {
        o->fd = fd;
        o->x = x;
        XXH3_64bits_reset(x);
        uint64_t count = kept;
        out_put(o, QUICK_MAGIC, 16);
        out_put(o, &count, sizeof count);
        for (size_t i = 0; i < n; i++) {
            if (!v[i].path[0])
                continue; /* left out (see xfer_quick_save) */
            struct quick_hdr h = {.ino = v[i].ino, .size = v[i].size, .mtime_ns = v[i].mtime_ns,
                                  .ctime_ns = v[i].ctime_ns, .len = (uint32_t)strlen(v[i].path)};
            memcpy(h.hash, v[i].hash, sizeof h.hash);
            out_put(o, &h, sizeof h);
            out_put(o, v[i].path, h.len);
        }
        rc = out_finish(o);
    }
    if (rc == 0 && fsync(fd) < 0)
        rc = -errno;
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && renameat(ns->data_fd, QUICK_TMP, ns->data_fd, QUICK_FILE) < 0)
        rc = -errno;
    if (rc == 0 && fsync(ns->data_fd) < 0)
        rc = -errno;
    if (rc < 0)
        unlinkat(ns->data_fd, QUICK_TMP, 0);
    XXH3_freeState(x);
    free(o);
    return rc;
}

int xfer_quick_save(struct nsync *ns)
{
    uint64_t t0 = nsync_mono_ms();
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now); /* the clock file timestamps come from */
    int64_t racy_from = ts_ns(&now) - (int64_t)QUICK_RACY_MS * 1000000;
    struct collect c = {.self = ns->self_id};
    pthread_rwlock_rdlock(&ns->fsm_lock);
    fsm_foreach(ns->fsm, collect_one, &c);
    pthread_rwlock_unlock(&ns->fsm_lock);
    size_t kept = 0, racy = 0;
    for (size_t i = 0; i < c.n && c.err == 0; i++) {
        struct xfer_quick_rec *r = &c.v[i];
        struct stat st;
        /* Only what is here as the catalog says: an edit nobody announced
         * (a refused announce, a write into BACKING while mounted) has
         * another mtime or size, and is hashed at the next start. */
        bool ok = fstatat(ns->backing_fd, r->path, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                  S_ISREG(st.st_mode) && (uint64_t)st.st_size == r->size &&
                  ts_ns(&st.st_mtim) == r->mtime_ns;
        if (ok && ts_ns(&st.st_ctim) >= racy_from) {
            ok = false;
            racy++;
        }
        if (!ok) {
            r->path[0] = '\0';
            continue;
        }
        r->ino = (uint64_t)st.st_ino;
        r->ctime_ns = ts_ns(&st.st_ctim);
        kept++;
    }
    int rc = c.err ? c.err : quick_write(ns, c.v, c.n, kept);
    recs_free(c.v, c.n);
    if (rc < 0)
        log_error("cannot save the quick check's record %s/%s/%s: %s; the next start hashes "
                  "every file", ns->cfg.backing, NSYNC_DATA_DIR, QUICK_FILE, strerror(-rc));
    else
        log_info("quick check: recorded %zu of %zu held files in %" PRIu64 " ms (%zu changed "
                 "too recently to trust)", kept, c.n, nsync_mono_ms() - t0, racy);
    return rc;
}

static int rec_cmp(const void *a, const void *b)
{
    return strcmp(((const struct xfer_quick_rec *)a)->path,
                  ((const struct xfer_quick_rec *)b)->path);
}

static bool read_all(FILE *f, void *p, size_t len, XXH3_state_t *x)
{
    if (fread(p, 1, len, f) != len)
        return false;
    XXH3_64bits_update(x, p, len);
    return true;
}

/* Parse an open record into q; -EBADMSG if it is not intact. */
static int quick_parse(FILE *f, uint64_t file_size, struct xfer_quick *q)
{
    XXH3_state_t *x = XXH3_createState();
    if (!x)
        return -ENOMEM;
    XXH3_64bits_reset(x);
    char magic[16];
    uint64_t count = 0, sum;
    int rc = 0;
    struct xfer_quick_rec *v = NULL;
    size_t n = 0;
    if (!read_all(f, magic, sizeof magic, x) || memcmp(magic, QUICK_MAGIC, 16) != 0 ||
        !read_all(f, &count, sizeof count, x) || count > file_size / (sizeof(struct quick_hdr) + 1))
        rc = -EBADMSG;
    if (rc == 0 && count && !(v = calloc(count, sizeof *v)))
        rc = -ENOMEM;
    while (rc == 0 && n < count) {
        struct quick_hdr h;
        if (!read_all(f, &h, sizeof h, x) || h.len == 0 || h.len >= QUICK_PATH_MAX) {
            rc = -EBADMSG;
            break;
        }
        char *p = malloc(h.len + 1);
        if (!p) {
            rc = -ENOMEM;
            break;
        }
        if (!read_all(f, p, h.len, x)) {
            free(p);
            rc = -EBADMSG;
            break;
        }
        p[h.len] = '\0';
        v[n] = (struct xfer_quick_rec){.path = p, .ino = h.ino, .size = h.size,
                                       .mtime_ns = h.mtime_ns, .ctime_ns = h.ctime_ns};
        memcpy(v[n].hash, h.hash, sizeof h.hash);
        n++;
        if (path_check(p) < 0 || path_is_internal(p))
            rc = -EBADMSG;
    }
    if (rc == 0 && (fread(&sum, sizeof sum, 1, f) != 1 || sum != XXH3_64bits_digest(x) ||
                    fgetc(f) != EOF))
        rc = -EBADMSG;
    XXH3_freeState(x);
    if (rc < 0) {
        recs_free(v, n);
        return rc;
    }
    if (n)
        qsort(v, n, sizeof *v, rec_cmp);
    q->v = v;
    q->n = n;
    return 0;
}

int xfer_quick_load(struct nsync *ns, struct xfer_quick *q)
{
    q->v = NULL;
    q->n = 0;
    int fd = openat(ns->data_fd, QUICK_FILE, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : -errno;
    FILE *f = fdopen(fd, "r");
    if (!f) {
        close(fd);
        return -ENOMEM;
    }
    uint64_t t0 = nsync_mono_ms();
    struct stat st;
    int rc = fstat(fd, &st) < 0 ? -errno : quick_parse(f, (uint64_t)st.st_size, q);
    fclose(f);
    /* Gone from disk before anything is installed: once files change,
     * only this process's copy (checked against each file's stat) exists. */
    if (unlinkat(ns->data_fd, QUICK_FILE, 0) < 0 || fsync(ns->data_fd) < 0) {
        int e = errno;
        log_error("cannot remove the quick check's record %s/%s/%s: %s; not using it",
                  ns->cfg.backing, NSYNC_DATA_DIR, QUICK_FILE, strerror(e));
        xfer_quick_free(q);
        return -e;
    }
    if (rc < 0) {
        log_warn("the quick check's record %s/%s/%s is not intact (%s): every file already "
                 "here is hashed", ns->cfg.backing, NSYNC_DATA_DIR, QUICK_FILE, strerror(-rc));
        return rc;
    }
    log_info("quick check: %zu files recorded at the last stop, read in %" PRIu64 " ms", q->n,
             nsync_mono_ms() - t0);
    return 0;
}

void xfer_quick_free(struct xfer_quick *q)
{
    recs_free(q->v, q->n);
    q->v = NULL;
    q->n = 0;
}

bool xfer_quick_trusts(const struct xfer_quick *q, const char *path, const struct stat *st,
                       const uint8_t hash[16], uint64_t size)
{
    if (!q->n)
        return false;
    struct xfer_quick_rec key = {.path = (char *)path};
    const struct xfer_quick_rec *r = bsearch(&key, q->v, q->n, sizeof key, rec_cmp);
    /* ctime catches a touch -d after an edit (the mtime put back), and the
     * inode a file replaced by another one with the same size and times. */
    return r && S_ISREG(st->st_mode) && r->ino == (uint64_t)st->st_ino &&
           r->size == (uint64_t)st->st_size && r->size == size &&
           r->mtime_ns == ts_ns(&st->st_mtim) && r->ctime_ns == ts_ns(&st->st_ctim) &&
           memcmp(r->hash, hash, sizeof r->hash) == 0;
}
