/* The fetch worker: watches the catalog for entries this node lacks, brings
 * each into BACKING (files over HTTP from a node that has them, streamed into
 * staging, verified, renamed into place; deletes, dirs, symlinks and metadata
 * applied locally), invalidates the kernel cache for the path, and reports
 * SYNCED in batches. */
#ifndef NSYNC_XFER_FETCH_H
#define NSYNC_XFER_FETCH_H

#include <stdint.h>

struct nsync;
struct xfer_fetcher;

struct xfer_fetch_status {
    uint64_t pending;        /* entries this node still lacks */
    uint64_t installed;      /* entries installed since start */
    uint64_t bytes;          /* bytes fetched since start */
    uint64_t errors;         /* failed attempts since start */
};

/* Start the worker thread(s). ns->cluster, ns->fs must exist. 0 or -errno. */
int xfer_fetcher_start(struct nsync *ns, struct xfer_fetcher **out);
void xfer_fetcher_stop(struct xfer_fetcher *f);
/* Any thread. */
void xfer_fetcher_get_status(struct xfer_fetcher *f, struct xfer_fetch_status *st);

#endif
