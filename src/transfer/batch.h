/* The frame of POST /v1/propose-batch: u32 count, then count times (u32
 * length, encoded command), little-endian, nothing after. Pure; any thread;
 * fuzzed by tests/fuzz/fuzz_batch.c. */
#ifndef NSYNC_XFER_BATCH_H
#define NSYNC_XFER_BATCH_H

#include <stddef.h>
#include <stdint.h>

#define XFER_BATCH_MAX 1024 /* commands in one batch */

struct cluster_item;

/* Split body into *items (malloc'd, the caller frees; each item's buf points
 * into body) and *n. 0; -EINVAL for any frame that is not exactly as above
 * (count 0 or over XFER_BATCH_MAX, an empty command, a length past the end,
 * trailing bytes); -ENOMEM. */
int xfer_batch_split(const void *body, size_t len, struct cluster_item **items, uint32_t *n);

#endif
