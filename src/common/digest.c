/* XXH3-128 content hashing, streamed so that a file of any size costs one
 * fixed buffer. */
#include "common/digest.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#define CHUNK (256 * 1024)

int digest_fd(int fd, uint8_t out[DIGEST_LEN], uint64_t *size)
{
    XXH3_state_t *st = XXH3_createState();
    char *buf = malloc(CHUNK);
    if (!st || !buf) {
        XXH3_freeState(st);
        free(buf);
        return -ENOMEM;
    }
    XXH3_128bits_reset(st);
    off_t off = 0;
    int rc = 0;
    for (;;) {
        ssize_t n = pread(fd, buf, CHUNK, off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            break;
        }
        if (n == 0)
            break;
        XXH3_128bits_update(st, buf, (size_t)n);
        off += n;
    }
    if (rc == 0) {
        XXH128_canonical_t c;
        XXH128_canonicalFromHash(&c, XXH3_128bits_digest(st));
        memcpy(out, c.digest, DIGEST_LEN);
        if (size)
            *size = (uint64_t)off;
    }
    XXH3_freeState(st);
    free(buf);
    return rc;
}

void digest_buf(const void *buf, size_t len, uint8_t out[DIGEST_LEN])
{
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits(buf, len));
    memcpy(out, c.digest, DIGEST_LEN);
}

struct digest_stream {
    XXH3_state_t *st;
};

struct digest_stream *digest_stream_new(void)
{
    struct digest_stream *s = malloc(sizeof *s);
    if (!s)
        return NULL;
    if (!(s->st = XXH3_createState())) {
        free(s);
        return NULL;
    }
    XXH3_128bits_reset(s->st);
    return s;
}

void digest_stream_update(struct digest_stream *s, const void *buf, size_t len)
{
    XXH3_128bits_update(s->st, buf, len);
}

void digest_stream_peek(const struct digest_stream *s, uint8_t out[DIGEST_LEN])
{
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits_digest(s->st));
    memcpy(out, c.digest, DIGEST_LEN);
}

void digest_stream_free(struct digest_stream *s)
{
    if (!s)
        return;
    XXH3_freeState(s->st);
    free(s);
}

void digest_to_hex(const uint8_t d[DIGEST_LEN], char out[DIGEST_HEX_LEN])
{
    static const char hx[] = "0123456789abcdef";
    for (int i = 0; i < DIGEST_LEN; i++) {
        out[2 * i] = hx[d[i] >> 4];
        out[2 * i + 1] = hx[d[i] & 15];
    }
    out[2 * DIGEST_LEN] = '\0';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int digest_from_hex(const char *hex, uint8_t out[DIGEST_LEN])
{
    if (!hex || strlen(hex) != 2 * DIGEST_LEN)
        return -EINVAL;
    for (int i = 0; i < DIGEST_LEN; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -EINVAL;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}
