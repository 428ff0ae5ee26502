/* The node table of the FUSE adapter: ids the kernel holds, the name of each
 * in its parent, and the BACKING object each stood for. Two chained hash
 * tables (by id, and by parent id + name); a node owns its name and holds
 * its parent while it is named there. */
#include "fs/nodes.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct node {
    uint64_t id;
    struct node *parent; /* while named (name != NULL); the root has none */
    char *name;          /* NULL: removed (unlink, rmdir, renamed over) */
    bool hashed;         /* found by its name; a replaced node keeps the name
                          * (ops by path reach what is there now) but the
                          * next lookup makes a new node */
    uint64_t nlookup;
    size_t children;     /* nodes named in this one */
    uint64_t *fhs;       /* open handles */
    size_t nfh, capfh;
    bool opened;         /* ever opened */
    struct node_ident ident;
    struct node *id_next;
    struct node *name_next;
};

struct nodes {
    struct node **by_id;
    struct node **by_name;
    size_t nbuckets; /* power of two, both tables */
    size_t count;
    uint64_t next_id;
    struct node *root;
};

static size_t hash_id(uint64_t id)
{
    return (size_t)(id * 0x9E3779B97F4A7C15ull >> 16);
}

static size_t hash_name(uint64_t parent, const char *name)
{
    uint64_t h = 0xcbf29ce484222325ull ^ (parent * 0x9E3779B97F4A7C15ull);
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 0x100000001b3ull;
    return (size_t)(h ^ (h >> 29));
}

static struct node *get(const struct nodes *t, uint64_t id)
{
    for (struct node *n = t->by_id[hash_id(id) & (t->nbuckets - 1)]; n; n = n->id_next)
        if (n->id == id)
            return n;
    return NULL;
}

static struct node *named(const struct nodes *t, uint64_t parent, const char *name)
{
    for (struct node *n = t->by_name[hash_name(parent, name) & (t->nbuckets - 1)]; n;
         n = n->name_next)
        if (n->parent->id == parent && strcmp(n->name, name) == 0)
            return n;
    return NULL;
}

static void link_id(struct nodes *t, struct node *n)
{
    struct node **b = &t->by_id[hash_id(n->id) & (t->nbuckets - 1)];
    n->id_next = *b;
    *b = n;
}

static void link_name(struct nodes *t, struct node *n)
{
    struct node **b = &t->by_name[hash_name(n->parent->id, n->name) & (t->nbuckets - 1)];
    n->name_next = *b;
    *b = n;
    n->hashed = true;
}

static void unlink_chain(struct node **b, struct node *n, size_t next_off)
{
    for (struct node **pp = b; *pp; pp = (struct node **)((char *)*pp + next_off))
        if (*pp == n) {
            *pp = *(struct node **)((char *)n + next_off);
            return;
        }
}

/* Double both tables once they hold more nodes than buckets. Failing to
 * grow only makes chains longer. */
static void maybe_grow(struct nodes *t)
{
    if (t->count < t->nbuckets)
        return;
    size_t nb = t->nbuckets * 2;
    struct node **bi = calloc(nb, sizeof *bi), **bn = calloc(nb, sizeof *bn);
    if (!bi || !bn) {
        free(bi);
        free(bn);
        return;
    }
    struct node **oi = t->by_id;
    size_t ob = t->nbuckets;
    t->by_id = bi;
    t->nbuckets = nb;
    free(t->by_name);
    t->by_name = bn;
    for (size_t i = 0; i < ob; i++) {
        for (struct node *n = oi[i], *next; n; n = next) {
            next = n->id_next;
            link_id(t, n);
            if (n->hashed)
                link_name(t, n);
        }
    }
    free(oi);
}

struct nodes *nodes_new(void)
{
    struct nodes *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->nbuckets = 256;
    t->by_id = calloc(t->nbuckets, sizeof *t->by_id);
    t->by_name = calloc(t->nbuckets, sizeof *t->by_name);
    t->root = calloc(1, sizeof *t->root);
    if (!t->by_id || !t->by_name || !t->root) {
        free(t->by_id);
        free(t->by_name);
        free(t->root);
        free(t);
        return NULL;
    }
    t->root->id = NODES_ROOT;
    t->root->nlookup = 1;
    t->root->ident.type = S_IFDIR;
    t->next_id = NODES_ROOT + 1;
    link_id(t, t->root);
    t->count = 1;
    return t;
}

void nodes_free(struct nodes *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->nbuckets; i++) {
        for (struct node *n = t->by_id[i], *next; n; n = next) {
            next = n->id_next;
            free(n->name);
            free(n->fhs);
            free(n);
        }
    }
    free(t->by_id);
    free(t->by_name);
    free(t);
}

static void maybe_drop(struct nodes *t, struct node *n);

static void unhash(struct nodes *t, struct node *n)
{
    if (!n->hashed)
        return;
    unlink_chain(&t->by_name[hash_name(n->parent->id, n->name) & (t->nbuckets - 1)], n,
                 offsetof(struct node, name_next));
    n->hashed = false;
}

/* Take n's name away (and its hold on its parent). */
static void unname(struct nodes *t, struct node *n)
{
    if (!n->name)
        return;
    struct node *p = n->parent;
    unhash(t, n);
    free(n->name);
    n->name = NULL;
    n->parent = NULL;
    p->children--;
    maybe_drop(t, p);
}

static void maybe_drop(struct nodes *t, struct node *n)
{
    if (n == t->root || n->nlookup > 0 || n->children > 0)
        return;
    unname(t, n);
    unlink_chain(&t->by_id[hash_id(n->id) & (t->nbuckets - 1)], n, offsetof(struct node, id_next));
    t->count--;
    free(n->fhs);
    free(n);
}

/* A hold keeps a node in the table across steps that may drop it. */
static void hold(struct node *n)
{
    if (n)
        n->nlookup++;
}

static void release(struct nodes *t, struct node *n)
{
    if (n) {
        n->nlookup--;
        maybe_drop(t, n);
    }
}

static void give_name(struct nodes *t, struct node *n, struct node *parent, char *name)
{
    n->parent = parent;
    n->name = name;
    parent->children++;
    link_name(t, n);
}

int64_t nodes_lookup(struct nodes *t, uint64_t parent, const char *name,
                     const struct node_ident *id)
{
    struct node *p = get(t, parent);
    if (!p || (p != t->root && !p->name))
        return -ENOENT;
    struct node *n = named(t, parent, name);
    if (n && n->ident.bino == id->bino && (n->ident.type & S_IFMT) == (id->type & S_IFMT)) {
        n->nlookup++;
        return (int64_t)n->id;
    }
    struct node *fresh = calloc(1, sizeof *fresh);
    char *nm = strdup(name);
    if (!fresh || !nm) {
        free(fresh);
        free(nm);
        return -ENOMEM;
    }
    hold(p);
    if (n)
        unhash(t, n);
    fresh->id = t->next_id++;
    fresh->nlookup = 1;
    fresh->ident = *id;
    link_id(t, fresh);
    give_name(t, fresh, p, nm);
    t->count++;
    release(t, p);
    maybe_grow(t);
    return (int64_t)fresh->id;
}

void nodes_forget(struct nodes *t, uint64_t node, uint64_t n)
{
    struct node *x = get(t, node);
    if (!x || x == t->root)
        return;
    x->nlookup = n >= x->nlookup ? 0 : x->nlookup - n;
    maybe_drop(t, x);
}

void nodes_detach(struct nodes *t, uint64_t node)
{
    struct node *x = get(t, node);
    if (x && x != t->root && x->name)
        unhash(t, x);
}

void nodes_remove(struct nodes *t, uint64_t parent, const char *name)
{
    struct node *n = named(t, parent, name);
    if (n) {
        hold(n);
        unname(t, n);
        release(t, n);
    }
}

int nodes_rename(struct nodes *t, uint64_t parent, const char *name, uint64_t newparent,
                 const char *newname, bool exchange)
{
    struct node *src = named(t, parent, name);
    struct node *dst = named(t, newparent, newname);
    struct node *op = get(t, parent), *np = get(t, newparent);
    bool np_ok = np && (np == t->root || np->name);
    bool op_ok = op && (op == t->root || op->name);
    if (src == dst && src)
        return 0;
    char *a = src ? strdup(newname) : NULL;
    char *b = (exchange && dst) ? strdup(name) : NULL;
    if ((src && !a) || (exchange && dst && !b)) {
        free(a);
        free(b);
        return -ENOMEM;
    }
    hold(src), hold(dst), hold(op), hold(np);
    if (src)
        unname(t, src);
    if (dst)
        unname(t, dst);
    /* A side whose new parent the kernel does not hold keeps no name. */
    if (src && np_ok)
        give_name(t, src, np, a);
    else
        free(a);
    if (exchange && dst && op_ok)
        give_name(t, dst, op, b);
    else
        free(b);
    release(t, src), release(t, dst), release(t, op), release(t, np);
    return 0;
}

int nodes_path(const struct nodes *t, uint64_t node, char *buf, size_t size)
{
    const struct node *x = get(t, node);
    if (!x)
        return -ESTALE;
    if (size < 2)
        return -ENAMETOOLONG;
    /* Written right to left, then moved to the front. */
    size_t pos = size - 1;
    buf[pos] = '\0';
    for (; x != t->root; x = x->parent) {
        if (!x->name)
            return -ENOENT;
        size_t len = strlen(x->name);
        if (len + 1 > pos)
            return -ENAMETOOLONG;
        pos -= len;
        memcpy(buf + pos, x->name, len);
        buf[--pos] = '/';
    }
    if (pos == size - 1)
        buf[--pos] = '/';
    memmove(buf, buf + pos, size - pos);
    return 0;
}

int nodes_child_path(const struct nodes *t, uint64_t parent, const char *name, char *buf,
                     size_t size)
{
    int rc = nodes_path(t, parent, buf, size);
    if (rc < 0)
        return rc;
    size_t len = strlen(buf);
    size_t nlen = strlen(name);
    size_t sep = (len == 1) ? 0 : 1; /* the root is "/" already */
    if (len + sep + nlen + 1 > size)
        return -ENAMETOOLONG;
    if (sep)
        buf[len++] = '/';
    memcpy(buf + len, name, nlen + 1);
    return 0;
}

int nodes_name(const struct nodes *t, uint64_t node, uint64_t *parent, char *buf, size_t size)
{
    const struct node *x = get(t, node);
    if (!x)
        return -ESTALE;
    if (!x->name)
        return -ENOENT;
    size_t len = strlen(x->name);
    if (len + 1 > size)
        return -ENAMETOOLONG;
    memcpy(buf, x->name, len + 1);
    *parent = x->parent->id;
    return 0;
}

int nodes_ident(const struct nodes *t, uint64_t node, struct node_ident *out)
{
    const struct node *x = get(t, node);
    if (!x)
        return -ESTALE;
    *out = x->ident;
    return 0;
}

uint64_t nodes_find(const struct nodes *t, const char *rel, uint64_t *parent)
{
    const struct node *cur = t->root;
    uint64_t par = 0;
    char comp[256];
    while (*rel) {
        const char *slash = strchr(rel, '/');
        size_t len = slash ? (size_t)(slash - rel) : strlen(rel);
        if (len == 0 || len >= sizeof comp)
            return 0;
        memcpy(comp, rel, len);
        comp[len] = '\0';
        par = cur->id;
        cur = named(t, cur->id, comp);
        if (!cur)
            return 0;
        rel += len + (slash ? 1 : 0);
    }
    if (parent)
        *parent = par;
    return cur->id;
}

void nodes_opened(struct nodes *t, uint64_t node, uint64_t fh)
{
    struct node *x = get(t, node);
    if (!x)
        return;
    x->opened = true;
    if (x->nfh == x->capfh) {
        size_t cap = x->capfh ? x->capfh * 2 : 2;
        uint64_t *n = realloc(x->fhs, cap * sizeof *n);
        if (!n)
            return; /* then this handle cannot stand in for the node */
        x->fhs = n;
        x->capfh = cap;
    }
    x->fhs[x->nfh++] = fh;
}

bool nodes_fresh(const struct nodes *t, uint64_t node)
{
    const struct node *x = get(t, node);
    return x && !x->opened;
}

void nodes_released(struct nodes *t, uint64_t node, uint64_t fh)
{
    struct node *x = get(t, node);
    if (!x)
        return;
    for (size_t i = 0; i < x->nfh; i++)
        if (x->fhs[i] == fh) {
            x->fhs[i] = x->fhs[--x->nfh];
            return;
        }
}

uint64_t nodes_open_fh(const struct nodes *t, uint64_t node)
{
    const struct node *x = get(t, node);
    return x && x->nfh ? x->fhs[0] : 0;
}

size_t nodes_count(const struct nodes *t)
{
    return t->count;
}
