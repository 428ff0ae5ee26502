/* Record locks in the replicated state: a small array of ranges kept in one
 * canonical order, since every node must hold exactly the same table. A
 * node's own ranges never overlap each other, so clearing a span splits at
 * most one of them. */
#include "cluster/rlocks.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct rlocks {
    struct rlock *v;
    size_t n, cap;
    struct rlock_ask *asks;  /* few: one per waiting node and path */
    size_t n_asks, asks_cap;
};

struct rlocks *rlocks_new(void)
{
    return calloc(1, sizeof(struct rlocks));
}

void rlocks_free(struct rlocks *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n; i++)
        free((char *)t->v[i].path);
    free(t->v);
    for (size_t i = 0; i < t->n_asks; i++)
        free((char *)t->asks[i].path);
    free(t->asks);
    free(t);
}

bool rlocks_valid(uint8_t space, uint8_t type, uint64_t start, uint64_t end)
{
    return space <= RLOCK_FLOCK && (type == RLOCK_READ || type == RLOCK_WRITE) && start < end;
}

static int rl_cmp(const struct rlock *a, const struct rlock *b)
{
    int c = strcmp(a->path, b->path);
    if (c)
        return c;
    if (a->node != b->node)
        return a->node < b->node ? -1 : 1;
    if (a->space != b->space)
        return a->space < b->space ? -1 : 1;
    if (a->start != b->start)
        return a->start < b->start ? -1 : 1;
    return 0;
}

static int rl_qcmp(const void *a, const void *b)
{
    return rl_cmp(a, b);
}

static bool rl_overlap(const struct rlock *r, uint64_t start, uint64_t end)
{
    return r->start < end && start < r->end;
}

/* v (elements of size, *cap of them) with room for need: v itself, a
 * larger copy (doubling; *cap updated), or NULL (v untouched). */
static void *rl_grow(void *v, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return v;
    size_t c = *cap ? *cap : 4;
    while (c < need)
        c *= 2;
    void *nv = realloc(v, c * size);
    if (nv)
        *cap = c;
    return nv;
}

static int rl_reserve(struct rlocks *t, size_t more)
{
    struct rlock *v = rl_grow(t->v, &t->cap, t->n + more, sizeof *t->v);
    if (!v)
        return -ENOMEM;
    t->v = v;
    return 0;
}

static void rl_remove_at(struct rlocks *t, size_t i)
{
    free((char *)t->v[i].path);
    memmove(&t->v[i], &t->v[i + 1], (t->n - i - 1) * sizeof *t->v);
    t->n--;
}

static void rl_drop_expired(struct rlocks *t, const char *path, uint64_t now)
{
    for (size_t i = 0; i < t->n;) {
        if (t->v[i].expires_ms < now && strcmp(t->v[i].path, path) == 0)
            rl_remove_at(t, i);
        else
            i++;
    }
}

int rlocks_test(const struct rlocks *t, const char *path, uint64_t node, uint8_t space, uint8_t type,
                uint64_t start, uint64_t end, uint64_t now, struct rlock *out)
{
    for (size_t i = 0; i < t->n; i++) {
        const struct rlock *r = &t->v[i];
        if (r->node == node || r->space != space || r->expires_ms < now ||
            !rl_overlap(r, start, end) || strcmp(r->path, path) != 0)
            continue;
        if (type == RLOCK_WRITE || r->type == RLOCK_WRITE) {
            if (out)
                *out = *r;
            return 1;
        }
    }
    return 0;
}

/* Cut [start, end) out of node's ranges; *spare is a copy of the path for
 * the one split that may be needed (taken if used), room for it reserved. */
static void rl_cut(struct rlocks *t, const char *path, uint64_t node, uint8_t space, uint64_t start,
                   uint64_t end, char **spare)
{
    for (size_t i = 0; i < t->n;) {
        struct rlock *r = &t->v[i];
        if (r->node != node || r->space != space || !rl_overlap(r, start, end) ||
            strcmp(r->path, path) != 0) {
            i++;
            continue;
        }
        if (r->start >= start && r->end <= end) {
            rl_remove_at(t, i);
            continue;
        }
        if (r->start < start && r->end > end) {
            struct rlock right = *r;
            right.start = end;
            right.path = *spare;
            *spare = NULL;
            r->end = start;
            t->v[t->n++] = right;
        } else if (r->start < start) {
            r->end = start;
        } else {
            r->start = end;
        }
        i++;
    }
    qsort(t->v, t->n, sizeof *t->v, rl_qcmp);
}

static int rl_ask_cmp(const struct rlock_ask *a, const struct rlock_ask *b)
{
    int c = strcmp(a->path, b->path);
    if (c)
        return c;
    if (a->node != b->node)
        return a->node < b->node ? -1 : 1;
    return a->space < b->space ? -1 : a->space > b->space;
}

static int rl_ask_qcmp(const void *a, const void *b)
{
    return rl_ask_cmp(a, b);
}

static int rl_asks_reserve(struct rlocks *t)
{
    struct rlock_ask *v = rl_grow(t->asks, &t->asks_cap, t->n_asks + 1, sizeof *t->asks);
    if (!v)
        return -ENOMEM;
    t->asks = v;
    return 0;
}

static void rl_ask_remove_at(struct rlocks *t, size_t i)
{
    free((char *)t->asks[i].path);
    memmove(&t->asks[i], &t->asks[i + 1], (t->n_asks - i - 1) * sizeof *t->asks);
    t->n_asks--;
}

/* Drop path's stale asks, and node's own in space (it is asking anew). */
static void rl_asks_prune(struct rlocks *t, const char *path, uint64_t node, uint8_t space,
                          uint64_t now, struct rlock_ask *kept)
{
    for (size_t i = 0; i < t->n_asks;) {
        struct rlock_ask *a = &t->asks[i];
        if (strcmp(a->path, path) != 0) {
            i++;
        } else if (a->until_ms < now) {
            rl_ask_remove_at(t, i);
        } else if (a->node == node && a->space == space) {
            if (kept)
                *kept = *a;
            rl_ask_remove_at(t, i);
        } else {
            i++;
        }
    }
}

/* Node holds some of [start, end) already (an upgrade or a downgrade, not a
 * new acquisition). */
static bool rl_holds_some(const struct rlocks *t, const char *path, uint64_t node, uint8_t space,
                          uint64_t start, uint64_t end)
{
    for (size_t i = 0; i < t->n; i++)
        if (t->v[i].node == node && rl_overlap(&t->v[i], start, end) && t->v[i].space == space &&
            strcmp(t->v[i].path, path) == 0)
            return true;
    return false;
}

/* A fresh ask of another node that this request would keep waiting. */
static bool rl_ask_blocks(const struct rlocks *t, const char *path, uint64_t node, uint8_t space,
                          uint8_t type, uint64_t start, uint64_t end, uint64_t now)
{
    for (size_t i = 0; i < t->n_asks; i++) {
        const struct rlock_ask *a = &t->asks[i];
        if (a->node != node && a->space == space && a->until_ms >= now && a->start < end &&
            start < a->end &&
            (type == RLOCK_WRITE || a->type == RLOCK_WRITE) && strcmp(a->path, path) == 0)
            return true;
    }
    return false;
}

int rlocks_set(struct rlocks *t, const char *path, uint64_t node, uint8_t space, uint8_t type,
               uint64_t start, uint64_t end, uint32_t pid, uint64_t now, uint64_t expires_ms)
{
    rl_drop_expired(t, path, now);
    struct rlock_ask old = {.until_ms = 0};
    char *ask_path = NULL;
    if (rlocks_test(t, path, node, space, type, start, end, now, NULL)) {
        /* Allocate before anything changes, so ENOMEM leaves the table as it was. */
        if (!(ask_path = strdup(path)))
            return -ENOMEM;
        if (rl_asks_reserve(t) < 0) {
            free(ask_path);
            return -ENOMEM;
        }
        rl_asks_prune(t, path, node, space, now, &old);
        uint64_t until = old.until_ms >= now ? old.until_ms
                         : now > UINT64_MAX - RLOCK_ASK_MS ? UINT64_MAX : now + RLOCK_ASK_MS;
        t->asks[t->n_asks++] = (struct rlock_ask){ask_path, node, start, end, until, space, type};
        qsort(t->asks, t->n_asks, sizeof *t->asks, rl_ask_qcmp);
        return -EBUSY;
    }
    if (!rl_holds_some(t, path, node, space, start, end) &&
        rl_ask_blocks(t, path, node, space, type, start, end, now))
        return -EBUSY;
    char *mine = strdup(path), *spare = strdup(path);
    if (!mine || !spare || rl_reserve(t, 2) < 0) {
        free(mine);
        free(spare);
        return -ENOMEM;
    }
    rl_asks_prune(t, path, node, space, now, NULL);
    rl_cut(t, path, node, space, start, end, &spare);
    free(spare);
    t->v[t->n++] = (struct rlock){mine, node, start, end, expires_ms, pid, space, type};
    qsort(t->v, t->n, sizeof *t->v, rl_qcmp);
    return 0;
}

size_t rlocks_ask_count(const struct rlocks *t)
{
    return t->n_asks;
}

const struct rlock_ask *rlocks_ask_at(const struct rlocks *t, size_t i)
{
    return i < t->n_asks ? &t->asks[i] : NULL;
}

int rlocks_restore_ask(struct rlocks *t, const struct rlock_ask *a)
{
    if (!a->path || a->node == 0 || !rlocks_valid(a->space, a->type, a->start, a->end))
        return -EINVAL;
    if (t->n_asks > 0 && rl_ask_cmp(&t->asks[t->n_asks - 1], a) >= 0)
        return -EINVAL;
    char *path = strdup(a->path);
    if (!path)
        return -ENOMEM;
    if (rl_asks_reserve(t) < 0) {
        free(path);
        return -ENOMEM;
    }
    t->asks[t->n_asks] = *a;
    t->asks[t->n_asks].path = path;
    t->n_asks++;
    return 0;
}

int rlocks_clear(struct rlocks *t, const char *path, uint64_t node, uint8_t space, uint64_t start,
                 uint64_t end)
{
    char *spare = strdup(path);
    if (!spare || rl_reserve(t, 1) < 0) {
        free(spare);
        return -ENOMEM;
    }
    rl_cut(t, path, node, space, start, end, &spare);
    free(spare);
    return 0;
}

void rlocks_renew(struct rlocks *t, uint64_t node, uint64_t expires_ms)
{
    for (size_t i = 0; i < t->n; i++)
        if (t->v[i].node == node)
            t->v[i].expires_ms = expires_ms;
}

void rlocks_drop_node(struct rlocks *t, uint64_t node)
{
    for (size_t i = 0; i < t->n;) {
        if (t->v[i].node == node)
            rl_remove_at(t, i);
        else
            i++;
    }
    for (size_t i = 0; i < t->n_asks;) {
        if (t->asks[i].node == node)
            rl_ask_remove_at(t, i);
        else
            i++;
    }
}

size_t rlocks_count(const struct rlocks *t)
{
    return t->n;
}

const struct rlock *rlocks_at(const struct rlocks *t, size_t i)
{
    return i < t->n ? &t->v[i] : NULL;
}

size_t rlocks_of(const struct rlocks *t, uint64_t node)
{
    size_t n = 0;
    for (size_t i = 0; i < t->n; i++)
        n += t->v[i].node == node;
    return n;
}

int rlocks_restore_add(struct rlocks *t, const struct rlock *r)
{
    if (!r->path || r->node == 0 || !rlocks_valid(r->space, r->type, r->start, r->end))
        return -EINVAL;
    if (t->n > 0) {
        const struct rlock *p = &t->v[t->n - 1];
        int c = rl_cmp(p, r);
        if (c >= 0)
            return -EINVAL;
        if (p->node == r->node && p->space == r->space && strcmp(p->path, r->path) == 0 &&
            p->end > r->start)
            return -EINVAL;
    }
    char *path = strdup(r->path);
    if (!path || rl_reserve(t, 1) < 0) {
        free(path);
        return -ENOMEM;
    }
    t->v[t->n] = *r;
    t->v[t->n].path = path;
    t->n++;
    return 0;
}
