/* The /metrics page of the file server: the node's counters, gauges and the
 * commit-latency histogram in the Prometheus text format. Private to
 * src/transfer/ (server.c serves it). */
#ifndef NSYNC_XFER_METRICS_PAGE_H
#define NSYNC_XFER_METRICS_PAGE_H

#include <stddef.h>

struct nsync;

/* The whole page into *out (malloc'd, the caller frees), its length in *len.
 * 0 or -ENOMEM. Any thread (the file server's). */
int xfer_metrics_page(struct nsync *ns, char **out, size_t *len);

#endif
