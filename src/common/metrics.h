/* Counters and histograms that any thread updates without a lock (atomics),
 * and the Prometheus text exposition format (version 0.0.4) to show them:
 * HELP and TYPE lines, samples, histogram buckets. The instances live in
 * struct nsync; the page is assembled by the file server (/metrics). */
#ifndef NSYNC_METRICS_H
#define NSYNC_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* Upper bounds, in seconds, of a latency histogram's buckets (+Inf added). */
#define METRICS_BUCKETS 14
extern const double metrics_bucket_le[METRICS_BUCKETS];

struct metrics_hist {
    _Atomic uint64_t bucket[METRICS_BUCKETS]; /* not cumulative: one bucket per observation */
    _Atomic uint64_t count;
    _Atomic uint64_t sum_us;
};

/* Record one observation of us microseconds. Any thread. */
void metrics_hist_observe_us(struct metrics_hist *h, uint64_t us);

/* A page being written; on ENOMEM err is set and further writes are
 * dropped (the caller answers 500). p is malloc'd: the caller frees it. */
struct metrics_buf {
    char *p;
    size_t len, cap;
    int err;
};

/* # HELP and # TYPE lines of a metric family (type: counter, gauge, histogram). */
void metrics_family(struct metrics_buf *b, const char *name, const char *type, const char *help);
/* One sample: name{labels} value. labels is NULL or already formatted
 * (metrics_label escapes a value). */
void metrics_sample(struct metrics_buf *b, const char *name, const char *labels, double v);
/* A whole histogram family: HELP, TYPE, _bucket{le=...}, _sum (seconds), _count. */
void metrics_histogram(struct metrics_buf *b, const char *name, const char *help,
                       const struct metrics_hist *h);
/* key="value" into out (value escaped as the format wants: \\ \" \n);
 * appended after a comma if out is not empty. */
void metrics_label(char *out, size_t sz, const char *key, const char *value);

#endif
