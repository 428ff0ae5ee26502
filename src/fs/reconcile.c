/* After a node joins (new, or back from a leave): applies the deletes it
 * missed while out of the cluster (settled tombstones leave the catalog, so
 * only the node's own list of what it held when it left, the manifest, can
 * tell them), then announces what exists only here, never deleting it. */
#include "fs/reconcile.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

#include "cluster/cluster.h"
#include "cluster/fsm.h"
#include "common/log.h"
#include "common/path.h"
#include "fs/fs.h"
#include "fs/fs_int.h" /* meta_kind_of_mode */
#include "nsync.h"

#define MANIFEST "known"
#define MANIFEST_TMP "known.tmp"

struct item;

struct reconcile {
    struct nsync *ns;
    pthread_t thread;
    pthread_mutex_t mu;
    bool stop;
    bool done;              /* catch-up over: no more conflict copies */
    struct item *items;     /* the manifest, sorted by path; read-only once loaded */
    size_t n_items;
};

/* One record: u8 kind, u64 size, i64 mtime_ns, u32 len, path bytes. */
struct rec_hdr {
    uint8_t kind;
    uint64_t size;
    int64_t mtime_ns;
    uint32_t len;
} __attribute__((packed));

struct save_ctx {
    FILE *f;
    int err;
};

static int save_one(const struct fsm_entry *e, void *arg)
{
    struct save_ctx *s = arg;
    if (e->kind == FSM_TOMBSTONE)
        return 0;
    struct rec_hdr h = {.kind = e->kind, .size = e->size, .mtime_ns = e->mtime_ns,
                        .len = (uint32_t)strlen(e->path)};
    if (fwrite(&h, sizeof h, 1, s->f) != 1 || fwrite(e->path, 1, h.len, s->f) != h.len) {
        s->err = -EIO;
        return 1;
    }
    return 0;
}

int reconcile_save(struct nsync *ns)
{
    int fd = openat(ns->data_fd, MANIFEST_TMP, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    FILE *f = fdopen(fd, "w");
    if (!f) {
        close(fd);
        return -ENOMEM;
    }
    struct save_ctx s = {.f = f};
    pthread_rwlock_rdlock(&ns->fsm_lock);
    fsm_foreach(ns->fsm, save_one, &s);
    pthread_rwlock_unlock(&ns->fsm_lock);
    if (fflush(f) != 0 || fsync(fileno(f)) != 0)
        s.err = -errno;
    fclose(f);
    if (s.err == 0 && renameat(ns->data_fd, MANIFEST_TMP, ns->data_fd, MANIFEST) < 0)
        s.err = -errno;
    if (s.err < 0) {
        unlinkat(ns->data_fd, MANIFEST_TMP, 0);
        log_error("cannot save the list of held paths in %s/%s/%s: %s", ns->cfg.backing,
                  NSYNC_DATA_DIR, MANIFEST, strerror(-s.err));
    }
    return s.err;
}

static bool should_stop(struct reconcile *r)
{
    pthread_mutex_lock(&r->mu);
    bool s = r->stop;
    pthread_mutex_unlock(&r->mu);
    return s;
}

static int first_pending(const struct fsm_entry *e, void *arg)
{
    return 1;
}

/* Caught up: a member again, and nothing pending that this node lacks. */
static bool caught_up(struct nsync *ns)
{
    pthread_rwlock_rdlock(&ns->fsm_lock);
    bool member = fsm_member_get(ns->fsm, ns->self_id) != NULL;
    bool lacking = fsm_foreach_pending(ns->fsm, ns->self_id, first_pending, NULL) != 0;
    pthread_rwlock_unlock(&ns->fsm_lock);
    return member && !lacking;
}

struct item {
    struct rec_hdr h;
    char *path;
};

static int depth_desc(const void *a, const void *b)
{
    const struct item *x = a, *y = b;
    /* files before directories; deeper directories before their parents */
    if ((x->h.kind == FSM_DIR) != (y->h.kind == FSM_DIR))
        return x->h.kind == FSM_DIR ? 1 : -1;
    return (int)y->h.len - (int)x->h.len;
}

static int path_cmp(const void *a, const void *b)
{
    return strcmp(((const struct item *)a)->path, ((const struct item *)b)->path);
}

/* Read the manifest written at leave into r->items (sorted by path). */
static void load_manifest(struct reconcile *r)
{
    struct nsync *ns = r->ns;
    int fd = openat(ns->data_fd, MANIFEST, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    FILE *f = fdopen(fd, "r");
    if (!f) {
        close(fd);
        return;
    }
    struct item *items = NULL;
    size_t n = 0, cap = 0;
    struct rec_hdr h;
    while (fread(&h, sizeof h, 1, f) == 1) {
        if (h.len == 0 || h.len >= 4096)
            break;
        char *p = malloc(h.len + 1);
        if (!p || fread(p, 1, h.len, f) != h.len) {
            free(p);
            break;
        }
        p[h.len] = '\0';
        if (path_check(p) < 0 || path_is_internal(p)) {
            free(p);
            continue;
        }
        if (n == cap) {
            size_t nc = cap ? 2 * cap : 256;
            struct item *ni = realloc(items, nc * sizeof *ni);
            if (!ni) {
                free(p);
                break;
            }
            items = ni;
            cap = nc;
        }
        items[n].h = h;
        items[n++].path = p;
    }
    fclose(f);
    if (n)
        qsort(items, n, sizeof *items, path_cmp);
    r->items = items;
    r->n_items = n;
}

static const struct item *manifest_find(const struct reconcile *r, const char *rel)
{
    struct item key = {.path = (char *)rel};
    return r->n_items ? bsearch(&key, r->items, r->n_items, sizeof key, path_cmp) : NULL;
}

void reconcile_before_install(struct reconcile *r, const char *rel)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    bool done = r->done;
    pthread_mutex_unlock(&r->mu);
    if (done)
        return;
    struct nsync *ns = r->ns;
    struct stat st;
    if (fstatat(ns->backing_fd, rel, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
        return;
    const struct item *it = manifest_find(r, rel);
    int64_t mt = (int64_t)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
    if (it && it->h.kind == FSM_FILE && it->h.size == (uint64_t)st.st_size && it->h.mtime_ns == mt)
        return; /* as the cluster left it: nothing local to keep */
    char conflict[PATH_MAX];
    int rc = fs_keep_conflict_copy(ns, rel, conflict, sizeof conflict);
    if (rc < 0) {
        log_error("rejoin: cannot keep the local edit of %s beside the cluster's version: %s; "
                  "the cluster's version replaces it", rel, strerror(-rc));
        return;
    }
    log_warn("rejoin: %s changed here while away and differs from the cluster's; the local "
             "version is kept as %s", rel, conflict);
}

static void apply_manifest(struct reconcile *r)
{
    struct nsync *ns = r->ns;
    size_t n = r->n_items;
    struct item *items = malloc((n ? n : 1) * sizeof *items);
    if (!items)
        return;
    if (n) { /* an empty manifest has no array: memcpy/qsort of NULL is undefined */
        memcpy(items, r->items, n * sizeof *items); /* same strings: owned by r->items */
        qsort(items, n, sizeof *items, depth_desc);
    }
    size_t deleted = 0, kept = 0;
    for (size_t i = 0; i < n; i++) {
        const char *p = items[i].path;
        pthread_rwlock_rdlock(&ns->fsm_lock);
        const struct fsm_entry *e = fsm_get(ns->fsm, p);
        bool live = e && e->kind != FSM_TOMBSTONE;
        pthread_rwlock_unlock(&ns->fsm_lock);
        if (live)
            continue;
        struct stat st;
        if (fstatat(ns->backing_fd, p, &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue;
        int64_t mt = (int64_t)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
        bool unchanged;
        if (items[i].h.kind == FSM_DIR)
            unchanged = S_ISDIR(st.st_mode);
        else if (items[i].h.kind == FSM_SYMLINK)
            unchanged = S_ISLNK(st.st_mode);
        else if (fsm_kind_is_node(items[i].h.kind))
            unchanged = meta_kind_of_mode(st.st_mode) == items[i].h.kind;
        else
            unchanged = S_ISREG(st.st_mode) && (uint64_t)st.st_size == items[i].h.size &&
                        mt == items[i].h.mtime_ns;
        if (!unchanged) {
            /* Changed here while the node was out: never silently deleted. */
            log_warn("rejoin: %s was deleted in the cluster but changed here; keeping it", p);
            kept++;
            continue;
        }
        int rc = unlinkat(ns->backing_fd, p, S_ISDIR(st.st_mode) ? AT_REMOVEDIR : 0);
        if (rc < 0) {
            log_warn("rejoin: cannot delete %s: %s", p, strerror(errno));
            kept++;
            continue;
        }
        deleted++;
        fs_invalidate(ns->fs, p);
    }
    free(items);
    unlinkat(ns->data_fd, MANIFEST, 0);
    log_info("rejoin: applied %zu deletes made while this node was away (%zu kept)", deleted, kept);
}


/* Everything in BACKING that the catalog does not list is local-only (made
 * while the node was out): announce it, parents before children. */
static void announce_local_only(struct reconcile *r)
{
    struct nsync *ns = r->ns;
    size_t cap = 64, n = 0, announced = 0;
    char **stack = malloc(cap * sizeof *stack);
    if (!stack)
        return;
    stack[n++] = strdup(".");
    while (n > 0 && !should_stop(r)) {
        char *dir = stack[--n];
        if (!dir)
            continue;
        int dfd = openat(ns->backing_fd, dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
        if (!d) {
            if (dfd >= 0)
                close(dfd);
            free(dir);
            continue;
        }
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                continue;
            char rel[4096];
            int len = strcmp(dir, ".") ? snprintf(rel, sizeof rel, "%s/%s", dir, de->d_name)
                                       : snprintf(rel, sizeof rel, "%s", de->d_name);
            if (len < 0 || (size_t)len >= sizeof rel || path_check(rel) < 0 || path_is_internal(rel))
                continue;
            pthread_rwlock_rdlock(&ns->fsm_lock);
            const struct fsm_entry *e = fsm_get(ns->fsm, rel);
            bool live = e && e->kind != FSM_TOMBSTONE;
            pthread_rwlock_unlock(&ns->fsm_lock);
            if (!live) {
                int rc = fs_announce_local(ns->fs, rel);
                if (rc == 0)
                    announced++;
                else
                    log_warn("rejoin: cannot announce local-only %s: %s", rel, strerror(-rc));
            }
            struct stat st;
            if (fstatat(ns->backing_fd, rel, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode)) {
                if (n == cap) {
                    char **ns2 = realloc(stack, 2 * cap * sizeof *stack);
                    if (!ns2)
                        continue;
                    stack = ns2;
                    cap *= 2;
                }
                stack[n++] = strdup(rel);
            }
        }
        closedir(d);
        free(dir);
    }
    while (n > 0)
        free(stack[--n]);
    free(stack);
    if (announced)
        log_info("rejoin: announced %zu local-only paths", announced);
}

static void *reconcile_main(void *arg)
{
    struct reconcile *r = arg;
    uint64_t seen = 0;
    while (!should_stop(r)) {
        if (caught_up(r->ns)) {
            apply_manifest(r);
            announce_local_only(r);
            break;
        }
        cluster_wait_change(r->ns->cluster, &seen, 500);
    }
    pthread_mutex_lock(&r->mu);
    r->done = true;
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

int reconcile_start(struct nsync *ns, struct reconcile **out)
{
    *out = NULL;
    if (faccessat(ns->data_fd, MANIFEST, F_OK, 0) < 0 && !cluster_joined(ns->cluster))
        return 0;
    struct reconcile *r = calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    r->ns = ns;
    pthread_mutex_init(&r->mu, NULL);
    load_manifest(r); /* before the fetch worker may replace anything */
    if (pthread_create(&r->thread, NULL, reconcile_main, r) != 0) {
        pthread_mutex_destroy(&r->mu);
        free(r);
        return -EAGAIN;
    }
    pthread_setname_np(r->thread, "ns-reconcile");
    *out = r;
    return 0;
}

void reconcile_stop(struct reconcile *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    r->stop = true;
    pthread_mutex_unlock(&r->mu);
    cluster_kick(r->ns->cluster);
    pthread_join(r->thread, NULL);
    pthread_mutex_destroy(&r->mu);
    for (size_t i = 0; i < r->n_items; i++)
        free(r->items[i].path);
    free(r->items);
    free(r);
}
