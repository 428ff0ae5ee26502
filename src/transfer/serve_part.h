/* Serving part of a file version (blockmap.h has the format): its map,
 * extents or block hashes, read and hashed while it is sent with one block
 * in memory, or a list of its byte ranges. server.c has opened and checked
 * the version; this builds the answer. libmicrohttpd's connection thread. */
#ifndef NSYNC_XFER_SERVE_PART_H
#define NSYNC_XFER_SERVE_PART_H

#include <stdbool.h>
#include <stdint.h>

#include <microhttpd.h>

/* The answer for fd (a regular file of size bytes: the version asked for),
 * which it takes in every case. map is "extents", "blocks" or NULL; ranges
 * the ranges parameter or NULL (one of the two is set). NULL on a bad
 * parameter (*err says which, for a 400) or ENOMEM (*err NULL). *bytes is
 * how many file bytes the answer will carry (0 for a map). */
struct MHD_Response *xfer_part_response(int fd, uint64_t size, const char *map,
                                        const char *ranges, bool tls, uint64_t *bytes,
                                        const char **err);

#endif
