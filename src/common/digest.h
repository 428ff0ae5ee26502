/* Content hashes: XXH3-128 of a file's bytes, in canonical (big-endian) form,
 * and their hex spelling for HTTP headers. Any thread. */
#ifndef NSYNC_DIGEST_H
#define NSYNC_DIGEST_H

#include <stddef.h>
#include <stdint.h>

#define DIGEST_LEN 16
#define DIGEST_HEX_LEN (2 * DIGEST_LEN + 1)

/* Hash the whole content of fd (read with pread from offset 0, streamed in
 * chunks; the file offset is untouched). Size read goes to *size if non-NULL.
 * 0 or -errno from the read. */
int digest_fd(int fd, uint8_t out[DIGEST_LEN], uint64_t *size);

/* Hash of a buffer (the empty file's hash is digest_buf(NULL, 0)). */
void digest_buf(const void *buf, size_t len, uint8_t out[DIGEST_LEN]);

/* The same hash fed piece by piece, for a file written front to back (the
 * caller's; one owner, no locking). digest_stream_new: NULL on ENOMEM. */
struct digest_stream;
struct digest_stream *digest_stream_new(void);
void digest_stream_update(struct digest_stream *s, const void *buf, size_t len);
/* The hash of everything fed so far; feeding may go on afterwards. */
void digest_stream_peek(const struct digest_stream *s, uint8_t out[DIGEST_LEN]);
void digest_stream_free(struct digest_stream *s);

void digest_to_hex(const uint8_t d[DIGEST_LEN], char out[DIGEST_HEX_LEN]);
/* 0, or -EINVAL unless hex is exactly 32 hex digits. */
int digest_from_hex(const char *hex, uint8_t out[DIGEST_LEN]);

#endif
