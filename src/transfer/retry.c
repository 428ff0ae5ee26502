/* The retry table: paths whose install failed or must wait, with the time
 * of their next try, growing up to XFER_RETRY_MAX_MS. */
#include <assert.h>

#include "transfer/fetch_int.h"

static size_t xfer_bucket(const char *path)
{
    return (size_t)(XXH3_64bits(path, strlen(path)) % XFER_RETRY_BUCKETS);
}

struct xfer_retry *xfer_retry_find(struct xfer_fetcher *f, const char *path)
{
    for (struct xfer_retry *r = f->retry[xfer_bucket(path)]; r; r = r->next)
        if (strcmp(r->path, path) == 0)
            return r;
    return NULL;
}

struct xfer_retry *xfer_retry_get(struct xfer_fetcher *f, const char *path,
                                         uint64_t version)
{
    struct xfer_retry *r = xfer_retry_find(f, path);
    if (r && r->version != version) {
        /* A new version: a fresh start. */
        r->version = version;
        r->next_ms = 0;
        r->delay_ms = 0;
        r->logged = false;
        r->installed = false;
        r->batched = false;
        r->need_sync = false;
    }
    if (r)
        return r;
    r = calloc(1, sizeof *r);
    if (!r || !(r->path = strdup(path))) {
        free(r);
        return NULL;
    }
    r->version = version;
    r->gen = f->gen;
    size_t b = xfer_bucket(path);
    r->next = f->retry[b];
    f->retry[b] = r;
    return r;
}

void xfer_retry_drop(struct xfer_fetcher *f, const char *path)
{
    for (struct xfer_retry **pp = &f->retry[xfer_bucket(path)]; *pp; pp = &(*pp)->next) {
        if (strcmp((*pp)->path, path) == 0) {
            struct xfer_retry *r = *pp;
            *pp = r->next;
            free(r->path);
            free(r);
            return;
        }
    }
}

/* Forget entries the catalog no longer lists as pending for us. */
void xfer_retry_sweep(struct xfer_fetcher *f, bool all)
{
    for (size_t b = 0; b < XFER_RETRY_BUCKETS; b++) {
        struct xfer_retry **pp = &f->retry[b];
        while (*pp) {
            struct xfer_retry *r = *pp;
            if (all || r->gen != f->gen) {
                *pp = r->next;
                free(r->path);
                free(r);
            } else {
                pp = &r->next;
            }
        }
    }
}
