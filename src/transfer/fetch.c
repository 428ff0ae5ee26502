/* The fetch worker (design §5): a manager thread copies the pending entries
 * this node lacks out of the catalog, applies them in version order (files
 * fetched by a small pool of transfer threads, everything else locally), and
 * reports what it installed in batched SYNCED commands. BACKING only ever
 * sees complete, verified files: bytes land in staging and are renamed in. */
#include "transfer/fetch.h"

#include <assert.h>

#include "transfer/fetch_int.h"

/* Replication is background work: on a busy node the applications' own
 * I/O (the FUSE threads) goes first, and catch-up takes what is left.
 * Linux applies nice per thread. */
#define XFER_NICE 10

static void xfer_background(void)
{
    if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), XFER_NICE) < 0)
        log_debug("fetch: cannot lower the priority of a fetch thread: %s", strerror(errno));
}

static void *xfer_worker_main(void *arg)
{
    xfer_background();
    struct xfer_worker *w = arg;
    struct xfer_fetcher *f = w->f;
    pthread_mutex_lock(&f->mu);
    for (;;) {
        while (!xfer_stopping(f) && f->next_job >= f->n_jobs)
            pthread_cond_wait(&f->cv_job, &f->mu);
        if (xfer_stopping(f) && f->next_job >= f->n_jobs)
            break;
        struct xfer_item *it = f->jobs[f->next_job++];
        pthread_mutex_unlock(&f->mu);
        if (xfer_stopping(f))
            it->result = XFER_BUSY;
        else
            xfer_process(w, it);
        pthread_mutex_lock(&f->mu);
        if (++f->done_jobs == f->n_jobs)
            pthread_cond_broadcast(&f->cv_done);
    }
    pthread_mutex_unlock(&f->mu);
    return NULL;
}

/* Run a set of independent file items (distinct paths, no directory change
 * in between) on the pool and wait for all of them. */
void xfer_run_files(struct xfer_fetcher *f, struct xfer_item **items, size_t n)
{
    if (n == 0)
        return;
    if (f->n_workers == 0) {
        for (size_t i = 0; i < n; i++)
            xfer_process(&f->mgr_w, items[i]);
        return;
    }
    pthread_mutex_lock(&f->mu);
    f->jobs = items;
    f->n_jobs = n;
    f->next_job = 0;
    f->done_jobs = 0;
    pthread_cond_broadcast(&f->cv_job);
    while (f->done_jobs < f->n_jobs)
        pthread_cond_wait(&f->cv_done, &f->mu);
    f->jobs = NULL;
    f->n_jobs = f->next_job = f->done_jobs = 0;
    pthread_mutex_unlock(&f->mu);
}

static void xfer_item_free(struct xfer_item *it)
{
    if (!it)
        return;
    free(it->path);
    free(it->target);
    free(it->renamed_from);
    free(it->xattrs);
    free(it->synced);
    free(it);
}

static int xfer_collect(const struct fsm_entry *e, void *arg)
{
    struct xfer_list *l = arg;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 256;
        struct xfer_item **nv = realloc(l->v, cap * sizeof *nv);
        if (!nv)
            goto oom;
        l->v = nv;
        l->cap = cap;
    }
    struct xfer_item *it = calloc(1, sizeof *it);
    if (!it)
        goto oom;
    l->v[l->n++] = it;
    it->path = strdup(e->path);
    it->target = e->target ? strdup(e->target) : NULL;
    it->inline_data = e->data != NULL;
    it->renamed_from = e->renamed_from ? strdup(e->renamed_from) : NULL;
    it->synced = e->n_synced ? malloc(e->n_synced * sizeof *it->synced) : NULL;
    if (!it->path || (e->target && !it->target) || (e->renamed_from && !it->renamed_from) ||
        (e->n_synced && !it->synced) || xfer_item_take_xattrs(it, e) < 0)
        goto oom;
    if (e->n_synced)
        memcpy(it->synced, e->synced, e->n_synced * sizeof *it->synced);
    it->n_synced = e->n_synced;
    it->kind = e->kind;
    it->size = e->size;
    xfer_item_take_meta(it, e);
    memcpy(it->hash, e->hash, sizeof it->hash);
    return 0;
oom:
    l->err = -ENOMEM;
    return -ENOMEM;
}

/* Version order; within one version (a RENAME moves a whole subtree at once)
 * creations before deletions, parents created first and children deleted
 * first. */
static int xfer_item_cmp(const void *a, const void *b)
{
    const struct xfer_item *x = *(struct xfer_item *const *)a;
    const struct xfer_item *y = *(struct xfer_item *const *)b;
    if (x->version != y->version)
        return x->version < y->version ? -1 : 1;
    bool tx = x->kind == FSM_TOMBSTONE, ty = y->kind == FSM_TOMBSTONE;
    if (tx != ty)
        return tx ? 1 : -1;
    int c = strcmp(x->path, y->path);
    return tx ? -c : c;
}

/* A node that joins or returns may lack thousands of entries: say how many
 * and how many bytes, every few seconds, and when it is done. */
static void xfer_log_progress(struct xfer_fetcher *f, const struct xfer_list *l)
{
    uint64_t now = nsync_mono_ms();
    if (l->n >= XFER_PROGRESS_MIN) {
        if (!f->catching_up || now - f->progress_ms >= 5000) {
            uint64_t bytes = 0;
            for (size_t i = 0; i < l->n; i++)
                if (l->v[i]->kind == FSM_FILE)
                    bytes += l->v[i]->size;
            log_info("catch-up: %zu entries, %" PRIu64 " bytes of files still to fetch", l->n, bytes);
            f->progress_ms = now;
            f->catching_up = true;
        }
    } else if (f->catching_up && l->n == 0) {
        log_info("catch-up: done");
        f->catching_up = false;
    }
}

/* Open or close the catch-up spell that xfer_fetcher_get_catchup reports. */
static void xfer_note_spell(struct xfer_fetcher *f, const struct xfer_list *l)
{
    uint64_t bytes = 0;
    for (size_t i = 0; i < l->n; i++)
        if (l->v[i]->kind == FSM_FILE)
            bytes += l->v[i]->size;
    atomic_store(&f->st_pending_bytes, bytes);
    if (l->n == 0) {
        atomic_store(&f->spell_mono_ms, 0);
        atomic_store(&f->spell_wall_ms, 0);
    } else if (atomic_load(&f->spell_mono_ms) == 0) {
        atomic_store(&f->spell_installed0, atomic_load(&f->st_installed));
        atomic_store(&f->spell_bytes0, atomic_load(&f->st_bytes));
        atomic_store(&f->spell_wall_ms, nsync_now_ms());
        atomic_store(&f->spell_mono_ms, nsync_mono_ms());
    }
}

/* One scan of the catalog and one attempt at everything due. Returns the
 * monotonic time at which a deferred item wants another try (UINT64_MAX if
 * none). */
static uint64_t xfer_pass(struct xfer_fetcher *f)
{
    struct nsync *ns = f->ns;
    struct xfer_list l = { 0 };
    pthread_rwlock_rdlock(&ns->fsm_lock);
    fsm_foreach_pending(ns->fsm, ns->self_id, xfer_collect, &l);
    pthread_rwlock_unlock(&ns->fsm_lock);
    atomic_store(&f->st_pending, (uint64_t)l.n);
    xfer_note_spell(f, &l);
    uint64_t wake = UINT64_MAX;
    if (l.err) {
        log_error("fetch: out of memory copying %zu pending entries", l.n);
        wake = nsync_mono_ms() + 1000;
    }
    f->gen++;
    if (l.n > 1) /* qsort(NULL, 0) is undefined */
        qsort(l.v, l.n, sizeof *l.v, xfer_item_cmp);
    xfer_log_progress(f, &l);

    struct xfer_batch *b = f->batch;
    struct xfer_item **run = malloc(XFER_RUN_MAX * sizeof *run);
    if (l.err || !run) {
        /* A partial copy is not in version order with what it misses. */
        wake = nsync_mono_ms() + 1000;
        goto out;
    }
    size_t nrun = 0;
    uint64_t now = nsync_mono_ms();
    for (size_t i = 0; i < l.n && !xfer_stopping(f); i++) {
        struct xfer_item *it = l.v[i];
        struct xfer_retry *r = xfer_retry_find(f, it->path);
        if (r && r->version == it->version) {
            r->gen = f->gen;
            it->need_sync = r->need_sync;
            if (r->batched)
                continue; /* installed, its report waits in the batch */
            if (r->installed) {
                xfer_batch_add(f, b, it);
                continue;
            }
            if (r->next_ms > now) {
                if (r->next_ms < wake)
                    wake = r->next_ms;
                continue;
            }
        }
        /* Plain file transfers are independent of each other and go to the
         * pool in runs. Anything else is a barrier: a mkdir, delete or
         * local rename may depend on what came before it, and a rename
         * moves bytes another file item could be installing at that path. */
        if (it->kind == FSM_FILE && !it->renamed_from && it->inline_data) {
            /* Bytes at hand: a local write and rename, cheaper here than a
             * hand-over to the pool. Independent of the run, like it. */
            xfer_process(&f->mgr_w, it);
            xfer_account(f, b, it, &wake);
        } else if (it->kind == FSM_FILE && !it->renamed_from) {
            run[nrun++] = it;
            if (nrun == XFER_RUN_MAX) {
                xfer_run_and_account(f, b, run, nrun, &wake);
                nrun = 0;
            }
        } else {
            xfer_run_and_account(f, b, run, nrun, &wake);
            nrun = 0;
            xfer_process(&f->mgr_w, it);
            xfer_account(f, b, it, &wake);
        }
        now = nsync_mono_ms();
        if (b->n && now - b->first_ms >= XFER_BATCH_AGE_MS)
            xfer_flush(f, b);
    }
    xfer_run_and_account(f, b, run, nrun, &wake);
    /* In a stream of small changes each pass installs one or two: their
     * reports wait a moment for company, so that two replicas do not add
     * two raft entries to every change. Readers see the files already. */
    now = nsync_mono_ms();
    if (b->n && now - b->first_ms >= XFER_REPORT_DELAY_MS)
        xfer_flush(f, b);
    else if (b->n && b->first_ms + XFER_REPORT_DELAY_MS < wake)
        wake = b->first_ms + XFER_REPORT_DELAY_MS;
    if (!xfer_stopping(f))
        xfer_retry_sweep(f, false);
out:
    for (size_t i = 0; i < l.n; i++)
        xfer_item_free(l.v[i]);
    free(l.v);
    free(run);
    return wake;
}

static void *xfer_manager_main(void *arg)
{
    xfer_background();
    struct xfer_fetcher *f = arg;
    uint64_t seen = 0;
    /* After a restart the catalog replays this node's own log: files go
     * live, are reported held by this node's earlier life, deleted and
     * forgotten in quick succession. Installing from such a passing state
     * brings a deleted file back for good (nothing lists it any more), so
     * nothing is installed before the catalog has caught up with the leader. */
    bool said = false;
    while (!xfer_stopping(f) && cluster_sync_point(f->ns->cluster, 1000) < 0) {
        if (!said)
            log_info("fetch: waiting for the cluster's current catalog before installing");
        said = true;
        cluster_wait_change(f->ns->cluster, &seen, 200);
    }
    if (said && !xfer_stopping(f))
        log_info("fetch: the catalog is current; installing");
    while (!xfer_stopping(f)) {
        uint64_t wake = xfer_pass(f);
        if (xfer_stopping(f))
            break;
        uint64_t now = nsync_mono_ms();
        unsigned tmo = 1000;
        if (wake != UINT64_MAX)
            tmo = wake <= now ? 10 : (wake - now < 1000 ? (unsigned)(wake - now) : 1000);
        cluster_wait_change(f->ns->cluster, &seen, tmo);
    }
    return NULL;
}

/* Staging files left by a crashed predecessor are garbage. */
static void xfer_clean_staging(struct nsync *ns)
{
    int fd = openat(ns->staging_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strncmp(de->d_name, XFER_TMP_PREFIX, strlen(XFER_TMP_PREFIX)) == 0)
            unlinkat(ns->staging_fd, de->d_name, 0);
    closedir(d);
}

static int xfer_worker_init(struct xfer_fetcher *f, struct xfer_worker *w)
{
    w->f = f;
    w->curl = curl_easy_init();
    w->xxh = XXH3_createState();
    if (!w->curl || !w->xxh) {
        if (w->curl)
            curl_easy_cleanup(w->curl);
        XXH3_freeState(w->xxh);
        w->curl = NULL;
        w->xxh = NULL;
        return -ENOMEM;
    }
    return 0;
}

static void xfer_worker_fini(struct xfer_worker *w)
{
    if (w->curl)
        curl_easy_cleanup(w->curl);
    XXH3_freeState(w->xxh);
    w->curl = NULL;
    w->xxh = NULL;
}

int xfer_fetcher_start(struct nsync *ns, const struct xfer_fetch_hooks *hooks,
                       struct xfer_fetcher **out)
{
    struct xfer_fetcher *f = calloc(1, sizeof *f);
    if (!f)
        return -ENOMEM;
    f->ns = ns;
    if (hooks)
        f->hooks = *hooks;
    atomic_init(&f->stop, false);
    if (pthread_mutex_init(&f->peer_mu, NULL) != 0) {
        free(f);
        return -ENOMEM;
    }
    pthread_mutex_init(&f->mu, NULL);
    pthread_mutex_init(&f->dirs_mu, NULL);
    pthread_cond_init(&f->cv_job, NULL);
    pthread_cond_init(&f->cv_done, NULL);
    int rc = xfer_worker_init(f, &f->mgr_w);
    if (rc == 0 && !(f->batch = calloc(1, sizeof *f->batch)))
        rc = -ENOMEM;
    if (rc < 0) {
        xfer_fetcher_stop(f);
        xfer_fetcher_free(f);
        return rc;
    }
    xfer_clean_staging(ns);
    xfer_quick_load(ns, &f->quick); /* logged; without it, files are hashed */
    for (size_t i = 0; i < XFER_WORKERS; i++) {
        struct xfer_worker *w = &f->workers[i];
        if (xfer_worker_init(f, w) < 0)
            break;
        if (pthread_create(&w->th, NULL, xfer_worker_main, w) != 0) {
            xfer_worker_fini(w);
            break;
        }
        w->started = true;
        pthread_setname_np(w->th, "ns-fetch-pool");
        f->n_workers++;
    }
    rc = pthread_create(&f->manager, NULL, xfer_manager_main, f);
    if (rc != 0) {
        log_error("fetch: cannot start the manager thread: %s", strerror(rc));
        xfer_fetcher_stop(f);
        xfer_fetcher_free(f);
        return -rc;
    }
    f->manager_started = true;
    pthread_setname_np(f->manager, "ns-fetch");
    *out = f;
    return 0;
}

void xfer_fetcher_stop(struct xfer_fetcher *f)
{
    if (!f)
        return;
    assert(!f->stopped);
    f->stopped = true;
    atomic_store(&f->stop, true);
    if (f->ns->cluster)
        cluster_kick(f->ns->cluster);
    pthread_mutex_lock(&f->mu);
    pthread_cond_broadcast(&f->cv_job);
    pthread_mutex_unlock(&f->mu);
    if (f->manager_started)
        pthread_join(f->manager, NULL);
    for (size_t i = 0; i < XFER_WORKERS; i++) {
        if (f->workers[i].started)
            pthread_join(f->workers[i].th, NULL);
        xfer_worker_fini(&f->workers[i]);
    }
    xfer_worker_fini(&f->mgr_w);
    xfer_sync_installed(f, NULL); /* installed but not reported: durable all the same */
    if (f->batch) {
        /* Unreported: the next start finds them here and reports them. */
        for (uint32_t i = 0; i < f->batch->n; i++)
            free((char *)f->batch->items[i].path);
        free(f->batch);
    }
    f->batch = NULL;
    xfer_retry_sweep(f, true);
}

void xfer_fetcher_free(struct xfer_fetcher *f)
{
    if (!f)
        return;
    assert(f->stopped); /* no thread of ours may still run */
    pthread_cond_destroy(&f->cv_done);
    pthread_cond_destroy(&f->cv_job);
    pthread_mutex_destroy(&f->mu);
    pthread_mutex_destroy(&f->peer_mu);
    pthread_mutex_destroy(&f->dirs_mu);
    xfer_quick_free(&f->quick);
    free(f);
}

void xfer_fetcher_get_status(struct xfer_fetcher *f, struct xfer_fetch_status *st)
{
    st->pending = atomic_load(&f->st_pending);
    st->installed = atomic_load(&f->st_installed);
    st->bytes = atomic_load(&f->st_bytes);
    st->map_bytes = atomic_load(&f->st_map_bytes);
    st->errors = atomic_load(&f->st_errors);
    st->hashed = atomic_load(&f->st_hashed);
    st->trusted = atomic_load(&f->st_trusted);
}

void xfer_fetcher_get_catchup(struct xfer_fetcher *f, struct xfer_catchup *c)
{
    memset(c, 0, sizeof *c);
    c->percent = 100.0;
    c->eta_s = -1;
    uint64_t t0 = atomic_load(&f->spell_mono_ms);
    if (t0 == 0)
        return;
    c->since_ms = atomic_load(&f->spell_wall_ms);
    uint64_t inst = atomic_load(&f->st_installed), i0 = atomic_load(&f->spell_installed0);
    uint64_t by = atomic_load(&f->st_bytes), b0 = atomic_load(&f->spell_bytes0);
    /* the counters are read one by one: never let a race go negative */
    c->files_done = inst > i0 ? inst - i0 : 0;
    c->bytes_done = by > b0 ? by - b0 : 0;
    uint64_t left_files = atomic_load(&f->st_pending), left_bytes = atomic_load(&f->st_pending_bytes);
    c->files_total = c->files_done + left_files;
    c->bytes_total = c->bytes_done + left_bytes;
    if (c->bytes_total)
        c->percent = 100.0 * (double)c->bytes_done / (double)c->bytes_total;
    else if (c->files_total)
        c->percent = 100.0 * (double)c->files_done / (double)c->files_total;
    uint64_t elapsed = nsync_mono_ms() - t0;
    c->active = left_files > 0 && elapsed >= XFER_CATCHUP_AFTER_MS;
    double done = c->bytes_total ? (double)c->bytes_done : (double)c->files_done;
    double left = c->bytes_total ? (double)left_bytes : (double)left_files;
    if (done > 0 && elapsed > 0)
        c->eta_s = (long)(left * (double)elapsed / done / 1000.0 + 0.5);
}
