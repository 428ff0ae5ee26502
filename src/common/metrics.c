/* The Prometheus text format written by hand: bookworm has no C client
 * library, and the format is a few line shapes. Integers are printed
 * exactly (counters up to 2^53), other values with 15 significant digits. */
#include "common/metrics.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const double metrics_bucket_le[METRICS_BUCKETS] = {0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05,
                                                   0.1,    0.25,  0.5,   1,     2.5,  5,     10};

void metrics_hist_observe_us(struct metrics_hist *h, uint64_t us)
{
    double s = (double)us / 1e6;
    for (int i = 0; i < METRICS_BUCKETS; i++) {
        if (s <= metrics_bucket_le[i]) {
            atomic_fetch_add(&h->bucket[i], 1);
            break;
        }
    }
    /* beyond the last bound: only in count (the +Inf bucket is the count) */
    atomic_fetch_add(&h->sum_us, us);
    atomic_fetch_add(&h->count, 1);
}

static void metrics_printf(struct metrics_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void metrics_printf(struct metrics_buf *b, const char *fmt, ...)
{
    if (b->err)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = b->cap - b->len;
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? room : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->err = 1;
            return;
        }
        if (b->p && (size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < b->len + (size_t)n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->err = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

static void metrics_number(char *out, size_t sz, double v)
{
    if (isinf(v))
        snprintf(out, sz, v > 0 ? "+Inf" : "-Inf");
    else if (v == floor(v) && fabs(v) < 9007199254740992.0)
        snprintf(out, sz, "%.0f", v);
    else
        snprintf(out, sz, "%.15g", v);
}

void metrics_family(struct metrics_buf *b, const char *name, const char *type, const char *help)
{
    metrics_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void metrics_sample(struct metrics_buf *b, const char *name, const char *labels, double v)
{
    char num[40];
    metrics_number(num, sizeof num, v);
    if (labels && *labels)
        metrics_printf(b, "%s{%s} %s\n", name, labels, num);
    else
        metrics_printf(b, "%s %s\n", name, num);
}

void metrics_histogram(struct metrics_buf *b, const char *name, const char *help,
                       const struct metrics_hist *h)
{
    metrics_family(b, name, "histogram", help);
    /* count is read first: an observation landing meanwhile may raise a
     * bucket past it, so clamp (the buckets must never exceed +Inf). */
    uint64_t count = atomic_load(&h->count), cum = 0;
    char le[40], bucket[128];
    snprintf(bucket, sizeof bucket, "%s_bucket", name);
    for (int i = 0; i < METRICS_BUCKETS; i++) {
        cum += atomic_load(&h->bucket[i]);
        if (cum > count)
            cum = count;
        snprintf(le, sizeof le, "%g", metrics_bucket_le[i]);
        char lab[64];
        snprintf(lab, sizeof lab, "le=\"%s\"", le);
        metrics_sample(b, bucket, lab, (double)cum);
    }
    metrics_sample(b, bucket, "le=\"+Inf\"", (double)count);
    char sum[128], cnt[128];
    snprintf(sum, sizeof sum, "%s_sum", name);
    snprintf(cnt, sizeof cnt, "%s_count", name);
    metrics_sample(b, sum, NULL, (double)atomic_load(&h->sum_us) / 1e6);
    metrics_sample(b, cnt, NULL, (double)count);
}

void metrics_label(char *out, size_t sz, const char *key, const char *value)
{
    size_t n = strlen(out);
    if (n + 1 >= sz)
        return;
    int k = snprintf(out + n, sz - n, "%s%s=\"", n ? "," : "", key);
    if (k < 0 || (size_t)k >= sz - n)
        return;
    n += (size_t)k;
    for (const char *p = value; *p && n + 3 < sz; p++) {
        if (*p == '\\' || *p == '"') {
            out[n++] = '\\';
            out[n++] = *p;
        } else if (*p == '\n') {
            out[n++] = '\\';
            out[n++] = 'n';
        } else {
            out[n++] = *p;
        }
    }
    if (n + 1 < sz)
        out[n++] = '"';
    out[n] = '\0';
}
