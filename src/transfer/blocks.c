/* Fetching only the parts of a file this node lacks (blockmap.h): the data
 * extents of a sparse file, or the blocks that differ from the older copy
 * already here. The staging file is built at its final size (holes where
 * nothing is written), then read back whole to check its hash, so a part
 * that does not add up falls back to the whole-file fetch. */
#include <assert.h>

#include "transfer/blockmap.h"
#include "transfer/fetch_int.h"

#define XFER_PARTS_MIN (1u << 20)   /* smaller files: one whole GET, no map round trip */
#define XFER_PARTS_RANGES 4096      /* ranges to fetch, at most (32 GETs of XFER_RANGES_PER_GET) */
#define XFER_PAGE 4096              /* the unit of a hole made from a block's zeros */

struct xfer_range {
    uint64_t off, len;
};

/* One file's plan, filled while its map arrives: what to fetch. Unchanged
 * blocks go into the staging file as soon as they are compared. */
struct xfer_plan {
    struct xfer_fetcher *f;
    int dst, src;               /* staging; the older copy, or -1 */
    uint64_t size;
    bool blocks;                /* a block map, else an extent map */
    bool part;                  /* the holder answers with a part (not an older server's whole file) */
    int code;                   /* 0 unknown, 1 200, -1 other status */
    int err;                    /* local -errno */
    bool bad, costly;           /* the map made no sense; too much differs */
    uint8_t rec[XFER_BLOCK_REC];
    size_t have;                /* bytes of rec so far */
    uint64_t next;              /* a record may not start before */
    uint8_t *buf;               /* one block of the older copy */
    struct xfer_range *need;
    size_t n, cap;
    uint64_t need_bytes;
    /* while ranges arrive */
    size_t idx;
    uint64_t in;                /* into need[idx] */
    uint64_t got;
    uint64_t drained;           /* of an error text */
};

static bool xfer_zero(const uint8_t *p, size_t n)
{
    return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

/* Write len bytes at off, leaving whole zero pages unwritten: the staging
 * file was made at its size and reads zeros there, as a hole. */
static int xfer_write_holey(int fd, const uint8_t *p, size_t len, uint64_t off, bool holes)
{
    while (len > 0) {
        size_t n = len;
        if (holes) {
            n = XFER_PAGE - (size_t)(off % XFER_PAGE);
            n = n < len ? n : len;
            if (n == XFER_PAGE && xfer_zero(p, n)) {
                p += n, off += n, len -= n;
                continue;
            }
        }
        ssize_t w = pwrite(fd, p, n, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? -errno : -EIO;
        p += w, off += (uint64_t)w, len -= (size_t)w;
    }
    return 0;
}

static int xfer_plan_need(struct xfer_plan *p, uint64_t off, uint64_t len)
{
    p->need_bytes += len;
    if (p->n && p->need[p->n - 1].off + p->need[p->n - 1].len == off) {
        p->need[p->n - 1].len += len;
        return 0;
    }
    if (p->n == XFER_PARTS_RANGES)
        return -E2BIG;
    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 64;
        struct xfer_range *v = realloc(p->need, cap * sizeof *v);
        if (!v)
            return -ENOMEM;
        p->need = v;
        p->cap = cap;
    }
    p->need[p->n++] = (struct xfer_range){off, len};
    return 0;
}

/* The older copy's block at off holds the bytes whose hash is h. */
static bool xfer_block_same(struct xfer_plan *p, uint64_t off, size_t len, const uint8_t *h)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = pread(p->src, p->buf + got, len - got, (off_t)(off + got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false; /* shorter, or unreadable: fetch it */
        got += (size_t)n;
    }
    uint8_t d[DIGEST_LEN];
    digest_buf(p->buf, len, d);
    return memcmp(d, h, DIGEST_LEN) == 0;
}

/* One record of the map: checked, then the block kept from the older copy
 * or the range put on the list. */
static void xfer_plan_record(struct xfer_plan *p)
{
    uint64_t off = xfer_get_u64(p->rec), len = xfer_get_u64(p->rec + 8);
    if (off < p->next || len == 0 || off > p->size || len > p->size - off ||
        (p->blocks && (off % XFER_BLOCK_SIZE ||
                       len != (p->size - off < XFER_BLOCK_SIZE ? p->size - off : XFER_BLOCK_SIZE)))) {
        p->bad = true;
        return;
    }
    p->next = off + len;
    if (p->blocks && p->src >= 0 && xfer_block_same(p, off, (size_t)len, p->rec + 16)) {
        p->err = xfer_write_holey(p->dst, p->buf, (size_t)len, off, true);
        return;
    }
    int rc = xfer_plan_need(p, off, len);
    if (rc == -E2BIG || (p->blocks && p->need_bytes > p->size / 2))
        p->costly = true;
    else if (rc < 0)
        p->err = rc;
}

/* The body of an answer that is not a part: an error text is drained (the
 * connection is kept), a whole file is cut off. n, or 0 to stop. */
static size_t xfer_plan_other(struct xfer_plan *p, size_t n)
{
    if (p->code == 1)
        return 0;
    p->drained += n;
    return p->drained > XFER_ERRBODY_MAX ? 0 : n;
}

/* The holder's status, and whether its answer is a part: a server that
 * does not know maps sends the whole file instead. */
static size_t xfer_plan_header(char *ptr, size_t size, size_t nmemb, void *arg)
{
    struct xfer_plan *p = arg;
    size_t n = size * nmemb;
    if (n >= 13 && strncasecmp(ptr, "X-Nsync-Part:", 13) == 0)
        p->part = true;
    if (n >= 5 && strncmp(ptr, "HTTP/", 5) == 0) {
        const char *sp = memchr(ptr, ' ', n);
        p->code = sp && n - (size_t)(sp - ptr) > 3 && strncmp(sp + 1, "200", 3) == 0 ? 1 : -1;
        p->part = false; /* a new answer (after a 100 Continue, say) */
    }
    return n;
}

static size_t xfer_map_write(char *ptr, size_t size, size_t nmemb, void *arg)
{
    struct xfer_plan *p = arg;
    size_t n = size * nmemb;
    if (p->code != 1 || !p->part)
        return xfer_plan_other(p, n);
    atomic_fetch_add(&p->f->st_map_bytes, n);
    size_t rec = p->blocks ? XFER_BLOCK_REC : XFER_EXTENT_REC;
    for (size_t i = 0; i < n;) {
        size_t take = rec - p->have < n - i ? rec - p->have : n - i;
        memcpy(p->rec + p->have, ptr + i, take);
        p->have += take;
        i += take;
        if (p->have == rec) {
            p->have = 0;
            xfer_plan_record(p);
            if (p->bad || p->costly || p->err)
                return 0;
        }
    }
    return n;
}

static size_t xfer_ranges_write(char *ptr, size_t size, size_t nmemb, void *arg)
{
    struct xfer_plan *p = arg;
    size_t n = size * nmemb;
    if (p->code != 1 || !p->part)
        return xfer_plan_other(p, n);
    const uint8_t *b = (const uint8_t *)ptr;
    for (size_t left = n; left > 0;) {
        if (p->idx >= p->n) {
            p->bad = true; /* more than asked for */
            return 0;
        }
        struct xfer_range *r = &p->need[p->idx];
        size_t take = r->len - p->in < left ? (size_t)(r->len - p->in) : left;
        p->err = xfer_write_holey(p->dst, b, take, r->off + p->in, p->blocks);
        if (p->err)
            return 0;
        b += take, left -= take, p->in += take, p->got += take;
        if (p->in == r->len)
            p->idx++, p->in = 0;
    }
    atomic_fetch_add(&p->f->st_bytes, n);
    return n;
}

/* What a finished GET says: 0 ok; else the verdict for xfer_parts_from. */
static int xfer_plan_result(struct xfer_plan *p, struct xfer_item *it, const char *faddr,
                            CURLcode cc, long code)
{
    if (p->err) {
        xfer_fail(it, p->err, "writing staging file: %s", strerror(-p->err));
        return p->err;
    }
    if (cc == CURLE_ABORTED_BY_CALLBACK)
        return XFER_BUSY;
    if (p->bad || p->costly)
        return -ENOTSUP;
    if (code == 404 || code == 409) {
        xfer_fail(it, -EAGAIN, "from %s: HTTP %ld", faddr, code);
        return -EAGAIN;
    }
    if (cc == CURLE_OUT_OF_MEMORY)
        return -ENOMEM;
    if (cc != CURLE_OK && cc != CURLE_WRITE_ERROR) {
        xfer_fail(it, -EHOSTUNREACH, "from %s: %s", faddr, curl_easy_strerror(cc));
        return -EHOSTUNREACH;
    }
    return cc == CURLE_OK && code == 200 && p->part ? 0 : -ENOTSUP;
}

/* GET the listed ranges, XFER_RANGES_PER_GET at a time, into the staging file. */
static int xfer_plan_fetch(struct xfer_worker *w, struct xfer_plan *p, struct xfer_item *it,
                           const char *faddr)
{
    char *extra = malloc(16 + XFER_RANGES_PER_GET * 42);
    if (!extra)
        return -ENOMEM;
    int rc = 0;
    for (size_t first = 0; rc == 0 && first < p->n; first += XFER_RANGES_PER_GET) {
        size_t last = first + XFER_RANGES_PER_GET < p->n ? first + XFER_RANGES_PER_GET : p->n;
        uint64_t want = 0;
        int k = sprintf(extra, "&ranges=");
        for (size_t i = first; i < last; i++) {
            k += sprintf(extra + k, "%s%" PRIu64 ":%" PRIu64, i > first ? "," : "",
                         p->need[i].off, p->need[i].len);
            want += p->need[i].len;
        }
        char *url = xfer_file_url(w, it, faddr, extra);
        if (!url) {
            rc = -ENOMEM;
            break;
        }
        p->idx = first;
        p->in = p->got = 0;
        p->code = 0;
        p->part = false;
        p->drained = 0;
        long code = 0;
        CURLcode cc = xfer_http_get(w, url, want >= XFER_BIG_FILE, xfer_ranges_write, p,
                                    xfer_plan_header, &code);
        free(url);
        rc = xfer_plan_result(p, it, faddr, cc, code);
        if (rc == 0 && (p->got != want || p->idx != last))
            rc = -ENOTSUP; /* cut short: the whole file then */
    }
    free(extra);
    return rc;
}

/* The staging file now is the item's version, whole. */
static bool xfer_plan_verify(struct xfer_plan *p, const struct xfer_item *it)
{
    uint8_t d[DIGEST_LEN];
    uint64_t n = 0;
    return digest_fd(p->dst, d, &n) == 0 && n == it->size && memcmp(d, it->hash, DIGEST_LEN) == 0;
}

int xfer_parts_from(struct xfer_worker *w, struct xfer_item *it, const char *faddr, int fd)
{
    struct xfer_fetcher *f = w->f;
    assert(fd >= 0 && it->kind == FSM_FILE);
    if (it->size < XFER_PARTS_MIN)
        return -ENOTSUP;
    struct xfer_plan p = {.f = f, .dst = fd, .src = -1, .size = it->size};
    /* An older copy here: compare blocks with it. Not one far smaller: most
     * of its blocks would differ, and the holder would hash them for nothing. */
    p.src = path_open_noatime(f->ns->backing_fd, it->path, O_RDONLY | O_NONBLOCK, true);
    struct stat st;
    if (p.src >= 0 && (fstat(p.src, &st) < 0 || !S_ISREG(st.st_mode) ||
                       (uint64_t)st.st_size < it->size / 4 || st.st_size == 0)) {
        close(p.src);
        p.src = -1;
    }
    p.blocks = p.src >= 0;
    int rc = 0;
    if (p.blocks && !(p.buf = malloc(XFER_BLOCK_SIZE)))
        rc = -ENOMEM;
    if (rc == 0 && (ftruncate(fd, 0) < 0 || ftruncate(fd, (off_t)it->size) < 0)) {
        rc = -errno;
        xfer_fail(it, rc, "sizing staging file: %s", strerror(-rc));
    }
    char *url = rc ? NULL : xfer_file_url(w, it, faddr, p.blocks ? "&map=blocks" : "&map=extents");
    if (rc == 0 && !url)
        rc = -ENOMEM;
    if (rc == 0) {
        long code = 0;
        CURLcode cc = xfer_http_get(w, url, false, xfer_map_write, &p, xfer_plan_header, &code);
        rc = xfer_plan_result(&p, it, faddr, cc, code);
        if (rc == 0 && p.have)
            rc = -ENOTSUP; /* a record cut in two */
    }
    free(url);
    /* A file that is one extent is a whole GET (sendfile, hashed on the way). */
    if (rc == 0 && !p.blocks && p.n == 1 && p.need[0].off == 0 && p.need[0].len == it->size)
        rc = -ENOTSUP;
    if (rc == 0 && p.n)
        rc = xfer_plan_fetch(w, &p, it, faddr);
    if (rc == 0 && !xfer_plan_verify(&p, it)) {
        log_debug("fetch %s from %s: the parts do not add up to version %" PRIu64
                  ", fetching it whole", it->path, faddr, it->version);
        rc = -ENOTSUP;
    }
    if (rc == 0)
        log_debug("fetched %s from %s in parts: %" PRIu64 " of %" PRIu64 " bytes in %zu ranges (%s)",
                  it->path, faddr, p.need_bytes, it->size, p.n,
                  p.blocks ? "the rest from the older copy" : "the rest holes");
    if (p.src >= 0)
        close(p.src);
    free(p.buf);
    free(p.need);
    return rc;
}
