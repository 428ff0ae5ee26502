/* The leader's answer to a forwarded POST /v1/propose-batch, as the
 * forwarding node reads it (cluster/peer.c): {"results": [[rc, status,
 * "version", "lock_holder", "path_version"], ...]}, one element per command
 * in order. Pure (cJSON only, any thread): the bytes come from the network,
 * so it is unit-tested and fuzzed. */
#ifndef NSYNC_CLUSTER_ANSWER_H
#define NSYNC_CLUSTER_ANSWER_H

#include <stddef.h>

struct cluster_item;

/* Fill items[0..n)'s rc and reply from data[0..len). An item past the end
 * of a shorter answer gets rc -ENOTCONN (not answered, so not applied). 0,
 * or -EPROTO for anything malformed (more results than commands, a wrong
 * shape, a value out of range); items are then partly filled and must be
 * taken as failed. */
int answer_decode(const char *data, size_t len, struct cluster_item *items, size_t n);

#endif
