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

void digest_to_hex(const uint8_t d[DIGEST_LEN], char out[DIGEST_HEX_LEN]);
/* 0, or -EINVAL unless hex is exactly 32 hex digits. */
int digest_from_hex(const char *hex, uint8_t out[DIGEST_LEN]);

#endif
