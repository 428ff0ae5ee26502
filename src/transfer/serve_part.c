/* The map and ranges answers of GET /v1/file (blockmap.h): generated while
 * libmicrohttpd sends them, so that a file of any size costs one block of
 * memory, and a hole is found with SEEK_DATA/SEEK_HOLE, never read. */
#include "transfer/serve_part.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/digest.h"
#include "common/log.h"
#include "transfer/blockmap.h"

#define XFER_PART_CHUNK (64 * 1024) /* what libmicrohttpd asks of a callback at most */

struct xfer_part {
    int fd;
    uint64_t size;
    /* a map */
    bool blocks;
    bool done;
    uint64_t cur;          /* where the scan goes on */
    uint8_t *buf;          /* one block, for its hash */
    uint8_t rec[XFER_BLOCK_REC]; /* a record not yet sent whole */
    size_t rec_len, rec_sent;
    /* ranges: the file's, and where each starts in the answer */
    size_t n, idx;
    uint64_t off[XFER_RANGES_PER_GET], len[XFER_RANGES_PER_GET], at[XFER_RANGES_PER_GET];
};

static void xfer_part_free(void *cls)
{
    struct xfer_part *p = cls;
    close(p->fd);
    free(p->buf);
    free(p);
}

static int xfer_pread_all(int fd, uint8_t *buf, size_t len, uint64_t off)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = pread(fd, buf + got, len - got, (off_t)(off + got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : -ENODATA; /* shrank under us */
        got += (size_t)n;
    }
    return 0;
}

/* The next record of the map into rec (*len its size); false at the end.
 * -errno in *err when the file cannot be read (the fetcher then sees a cut
 * answer and fetches the whole file). */
static bool xfer_map_next(struct xfer_part *p, uint8_t *rec, size_t *len, int *err)
{
    off_t d = p->cur < p->size ? lseek(p->fd, (off_t)p->cur, SEEK_DATA) : -1;
    if (d < 0 || (uint64_t)d >= p->size) {
        if (d < 0 && p->cur < p->size && errno != ENXIO)
            *err = -errno;
        return false;
    }
    uint64_t off = (uint64_t)d, n;
    if (p->blocks) {
        off -= off % XFER_BLOCK_SIZE;
        n = p->size - off < XFER_BLOCK_SIZE ? p->size - off : XFER_BLOCK_SIZE;
        int rc = xfer_pread_all(p->fd, p->buf, (size_t)n, off);
        if (rc < 0) {
            *err = rc;
            return false;
        }
        digest_buf(p->buf, (size_t)n, rec + 16);
        *len = XFER_BLOCK_REC;
    } else {
        off_t h = lseek(p->fd, d, SEEK_HOLE);
        if (h < 0) {
            *err = -errno;
            return false;
        }
        n = ((uint64_t)h < p->size ? (uint64_t)h : p->size) - off;
        *len = XFER_EXTENT_REC;
    }
    xfer_put_u64(rec, off);
    xfer_put_u64(rec + 8, n);
    p->cur = off + n;
    return true;
}

static ssize_t xfer_map_read(void *cls, uint64_t pos, char *out, size_t max)
{
    struct xfer_part *p = cls;
    size_t w = 0;
    int err = 0;
    while (w < max) {
        if (p->rec_sent == p->rec_len) { /* the next record */
            p->rec_sent = p->rec_len = 0;
            if (p->done || !xfer_map_next(p, p->rec, &p->rec_len, &err)) {
                p->done = true;
                break;
            }
        }
        /* libmicrohttpd may offer less room than a record: the rest goes next time */
        size_t n = p->rec_len - p->rec_sent < max - w ? p->rec_len - p->rec_sent : max - w;
        memcpy(out + w, p->rec + p->rec_sent, n);
        p->rec_sent += n;
        w += n;
    }
    if (err < 0) {
        log_warn("serving the map of a file: %s", strerror(-err));
        return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    if (w == 0)
        return MHD_CONTENT_READER_END_OF_STREAM;
    return (ssize_t)w;
}

static ssize_t xfer_ranges_read(void *cls, uint64_t pos, char *out, size_t max)
{
    struct xfer_part *p = cls;
    while (p->idx < p->n && pos >= p->at[p->idx] + p->len[p->idx])
        p->idx++;
    if (p->idx >= p->n || pos < p->at[p->idx])
        return MHD_CONTENT_READER_END_WITH_ERROR;
    uint64_t in = pos - p->at[p->idx], left = p->len[p->idx] - in;
    ssize_t n = pread(p->fd, out, left < max ? (size_t)left : max, (off_t)(p->off[p->idx] + in));
    /* A file that shrank ends the answer; the fetcher's checks refuse it. */
    return n > 0 ? n : MHD_CONTENT_READER_END_WITH_ERROR;
}

/* Strict decimal, then the expected separator (or the end). */
static const char *xfer_part_num(const char *s, uint64_t *v, char sep)
{
    uint64_t x = 0;
    const char *b = s;
    for (; *s >= '0' && *s <= '9'; s++) {
        unsigned d = (unsigned)(*s - '0');
        if (x > (UINT64_MAX - d) / 10)
            return NULL;
        x = x * 10 + d;
    }
    if (s == b || s - b > 20 || *s != sep)
        return NULL;
    *v = x;
    return sep ? s + 1 : s;
}

static int xfer_parse_ranges(struct xfer_part *p, const char *s)
{
    uint64_t end = 0, total = 0;
    while (*s) {
        uint64_t off, len;
        if (p->n == XFER_RANGES_PER_GET || !(s = xfer_part_num(s, &off, ':')))
            return -EINVAL;
        const char *next = strchr(s, ',');
        if (!(s = xfer_part_num(s, &len, next ? ',' : '\0')))
            return -EINVAL;
        if (len == 0 || off < end || off > p->size || len > p->size - off)
            return -EINVAL;
        p->off[p->n] = off;
        p->len[p->n] = len;
        p->at[p->n++] = total;
        total += len;
        end = off + len;
        if (next && !*s)
            return -EINVAL; /* a trailing comma */
    }
    return p->n ? 0 : -EINVAL;
}

struct MHD_Response *xfer_part_response(int fd, uint64_t size, const char *map,
                                        const char *ranges, bool tls, uint64_t *bytes,
                                        const char **err)
{
    *err = NULL;
    *bytes = 0;
    struct xfer_part *p = calloc(1, sizeof *p);
    if (!p) {
        close(fd);
        return NULL;
    }
    p->fd = fd;
    p->size = size;
    struct MHD_Response *r = NULL;
    if (map) {
        p->blocks = strcmp(map, "blocks") == 0;
        if (!p->blocks && strcmp(map, "extents") != 0)
            *err = "bad map: extents or blocks\n";
        else if (!p->blocks || (p->buf = malloc(XFER_BLOCK_SIZE)))
            r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, XFER_PART_CHUNK, xfer_map_read,
                                                  p, xfer_part_free);
    } else if (xfer_parse_ranges(p, ranges) < 0) {
        *err = "bad ranges: OFF:LEN,... increasing, within the file\n";
    } else {
        *bytes = p->at[p->n - 1] + p->len[p->n - 1];
        if (p->n == 1 && !tls) { /* sendfile, as for the whole file */
            r = MHD_create_response_from_fd_at_offset64(p->len[0], fd, p->off[0]);
            if (r) {
                free(p);
                return r; /* closes fd */
            }
        } else {
            r = MHD_create_response_from_callback(*bytes, XFER_PART_CHUNK, xfer_ranges_read, p,
                                                  xfer_part_free);
        }
    }
    if (!r)
        xfer_part_free(p);
    return r;
}
