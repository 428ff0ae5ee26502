/* The wire format of a file's map, shared by the server that sends it and
 * the fetcher that reads it: the data extents of a version (so holes stay
 * holes), or the XXH3-128 of each fixed-size block holding data (so a
 * replica with an older copy fetches only the blocks that differ). */
#ifndef NSYNC_XFER_BLOCKMAP_H
#define NSYNC_XFER_BLOCKMAP_H

#include <stdint.h>
#include <string.h>

#include "common/digest.h"

/* Block size of the block map: docs/decisions.md says why 128 KiB. */
#define XFER_BLOCK_SIZE (128u << 10)

/* GET /v1/file?...&map=extents: one record per data extent (SEEK_DATA to
 * SEEK_HOLE), offset order: u64 offset, u64 length, little-endian.
 * GET /v1/file?...&map=blocks: one record per block that holds any data
 * (block i is [i * XFER_BLOCK_SIZE, min(+XFER_BLOCK_SIZE, size))), offset
 * order: u64 offset, u64 length, then the block's XXH3-128 (canonical).
 * A block or range that is not listed reads as zeros. */
#define XFER_EXTENT_REC 16
#define XFER_BLOCK_REC (16 + DIGEST_LEN)

/* GET /v1/file?...&ranges=OFF:LEN,OFF:LEN...: the bytes of those ranges,
 * one after the other. Increasing, not overlapping, within the file, at most
 * this many per request (they travel in the URL). */
#define XFER_RANGES_PER_GET 128

static inline void xfer_put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint64_t xfer_get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

#endif
