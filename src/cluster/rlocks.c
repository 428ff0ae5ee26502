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

static int rl_reserve(struct rlocks *t, size_t more)
{
    if (t->n + more <= t->cap)
        return 0;
    size_t cap = t->cap ? t->cap : 8;
    while (cap < t->n + more)
        cap *= 2;
    struct rlock *v = realloc(t->v, cap * sizeof *v);
    if (!v)
        return -ENOMEM;
    t->v = v;
    t->cap = cap;
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

int rlocks_set(struct rlocks *t, const char *path, uint64_t node, uint8_t space, uint8_t type,
               uint64_t start, uint64_t end, uint32_t pid, uint64_t now, uint64_t expires_ms)
{
    rl_drop_expired(t, path, now);
    if (rlocks_test(t, path, node, space, type, start, end, now, NULL))
        return -EBUSY;
    char *mine = strdup(path), *spare = strdup(path);
    if (!mine || !spare || rl_reserve(t, 2) < 0) {
        free(mine);
        free(spare);
        return -ENOMEM;
    }
    rl_cut(t, path, node, space, start, end, &spare);
    free(spare);
    t->v[t->n++] = (struct rlock){mine, node, start, end, expires_ms, pid, space, type};
    qsort(t->v, t->n, sizeof *t->v, rl_qcmp);
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
