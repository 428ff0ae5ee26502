/* The FUSE side's lifecycle and the functions other modules call
 * (fs.h): create, start (fixer and replay threads), stop, free, and what
 * the fetch worker asks (is a path busy, invalidate the kernel's cache). */
#include "fs/fs.h"

#include <assert.h>

#include "fs/fs_int.h"

int fs_new(struct nsync *ns, struct fs **out)
{
    struct fs *fs = calloc(1, sizeof *fs);
    if (!fs)
        return -ENOMEM;
    if (pthread_mutex_init(&fs->mu, NULL) != 0) {
        free(fs);
        return -ENOMEM;
    }
    if (pthread_mutex_init(&fs->handles_mu, NULL) != 0 || nsync_cond_init_mono(&fs->cv) != 0) {
        pthread_mutex_destroy(&fs->mu);
        free(fs);
        return -ENOMEM;
    }
    fs->ns = ns;
    fs->journal_fd[0] = fs->journal_fd[1] = -1;
    fs->as_root = geteuid() == 0;
    fs->egid = getegid();
    atomic_init(&fs->ll, NULL);
    if (pthread_cond_init(&fs->fix_cv, NULL) != 0 || pthread_mutex_init(&fs->rl_mu, NULL) != 0 ||
        nsync_cond_init_mono(&fs->rl_cv) != 0) {
        pthread_cond_destroy(&fs->cv);
        pthread_mutex_destroy(&fs->mu);
        free(fs);
        return -ENOMEM;
    }
    *out = fs;
    return 0;
}

int fs_start(struct fs *fs)
{
    assert(!fs->fixer_started); /* once, after fs_new */
    for (unsigned g = 0; g < 2; g++) {
        char name[32];
        snprintf(name, sizeof name, "%s%s", FS_JOURNAL, g ? "-1" : "");
        fs->journal_fd[g] = openat(fs->ns->data_fd, name, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC,
                                   0600);
        if (fs->journal_fd[g] < 0)
            log_warn("cannot open the journal .nsyncfs/%s: %s; a crash right after a close may "
                     "leave that change unannounced", name, strerror(errno));
        else
            journal_load(fs, g);
    }
    struct stat jst;
    fs->jsize = fs->journal_fd[0] >= 0 && fstat(fs->journal_fd[0], &jst) == 0 ? (size_t)jst.st_size : 0;
    int rc = pthread_create(&fs->fixer, NULL, announce_fixer_main, fs);
    if (rc != 0) {
        log_error("cannot start the conflict fixer thread: %s", strerror(rc));
        return -rc;
    }
    fs->fixer_started = true;
    pthread_setname_np(fs->fixer, "ns-fixer");
    rc = pthread_create(&fs->tokens, NULL, tokens_main, fs);
    if (rc != 0) {
        log_error("cannot start the lock cache thread: %s", strerror(rc));
        return -rc;
    }
    fs->tokens_started = true;
    pthread_setname_np(fs->tokens, "ns-tokens");
    if (fs->n_replay) {
        log_info("%zu changes closed just before the last stop may not have reached the cluster: "
                 "checking them", fs->n_replay);
        rc = pthread_create(&fs->replayer, NULL, journal_replayer_main, fs);
        if (rc != 0) {
            log_error("cannot start the journal replay thread: %s", strerror(rc));
            return -rc;
        }
        fs->replayer_started = true;
        pthread_setname_np(fs->replayer, "ns-replay");
    }
    return 0;
}

int fs_stop(struct fs *fs, unsigned timeout_ms)
{
    if (!fs)
        return 0;
    struct timespec dl;
    nsync_deadline(&dl, (uint64_t)timeout_ms * 1000u);
    int rc = 0;
    pthread_mutex_lock(&fs->mu);
    while (fs->inflight > 0 && rc == 0)
        if (pthread_cond_timedwait(&fs->cv, &fs->mu, &dl) == ETIMEDOUT && fs->inflight > 0)
            rc = -ETIMEDOUT;
    unsigned left = fs->inflight;
    fs->fixer_stop = true;
    pthread_cond_signal(&fs->fix_cv);
    bool join = fs->fixer_started, join_replayer = fs->replayer_started;
    bool join_tokens = fs->tokens_started;
    fs->fixer_started = fs->replayer_started = fs->tokens_started = false;
    pthread_mutex_unlock(&fs->mu);
    if (join_tokens) {
        cluster_kick(fs->ns->cluster);
        pthread_join(fs->tokens, NULL);
    }
    if (join_replayer) {
        cluster_kick(fs->ns->cluster);
        pthread_join(fs->replayer, NULL);
    }
    if (join)
        pthread_join(fs->fixer, NULL);
    if (rc < 0)
        log_warn("%u announces still unanswered after %u ms at shutdown", left, timeout_ms);
    return rc;
}

void fs_free(struct fs *fs)
{
    if (!fs)
        return;
    fs_stop(fs, 0);
    while (fs->fix_head) { /* refused after the fixer stopped: nobody is left to fix them */
        struct pending_ann *pa = fs->fix_head;
        fs->fix_head = pa->next;
        log_error("%s: another node's version won at shutdown; this node's stays in place "
                  "until the next mount fetches the winner", pa->e->path);
        free(pa);
    }
    for (size_t i = 0; i < LOCK_BUCKETS; i++) {
        struct lock_ent *e = fs->buckets[i];
        while (e) {
            struct lock_ent *next = e->next;
            free(e->path);
            free(e);
            e = next;
        }
    }
    /* Handles the kernel never released: the FUSE loop is over, nobody else
     * can reach them. Their lock refs went with the lock table above. */
    while (fs->handles) {
        struct handle *h = fs->handles;
        h->lk = NULL;
        handle_free(h); /* unlinks it */
    }
    pthread_mutex_destroy(&fs->handles_mu);
    rlock_free_all(fs);
    for (size_t i = 0; i < fs->n_replay; i++)
        free(fs->replay[i]);
    free(fs->replay);
    for (unsigned g = 0; g < 2; g++)
        if (fs->journal_fd[g] >= 0)
            close(fs->journal_fd[g]);
    pthread_cond_destroy(&fs->fix_cv);
    pthread_cond_destroy(&fs->cv);
    pthread_mutex_destroy(&fs->mu);
    free(fs);
}

void fs_set_ll(struct fs *fs, struct ll *ll)
{
    atomic_store(&fs->ll, ll);
}

void fs_invalidate(struct fs *fs, const char *rel)
{
    handle_mark_replaced(fs, rel);
    ll_invalidate(atomic_load(&fs->ll), rel);
}

bool fs_path_open_shared(struct fs *fs, const char *rel)
{
    bool open = false;
    pthread_mutex_lock(&fs->handles_mu);
    for (struct handle *h = fs->handles; h && !open; h = h->next)
        open = (h->writable || atomic_load(&h->locker)) && h->rel && strcmp(h->rel, rel) == 0;
    pthread_mutex_unlock(&fs->handles_mu);
    return open;
}

bool fs_path_busy(struct fs *fs, const char *rel)
{
    pthread_mutex_lock(&fs->mu);
    struct lock_ent *e = lock_find(fs, rel);
    /* Not while the lock is being acquired: the acquirer may be waiting for
     * exactly the install the fetch worker is about to make. */
    /* A cached lock (no user here) is no reason: a version pending for a
     * path whose lock this node keeps comes from a time it had lost it. */
    bool busy = e && ((e->held && !e->cached) || e->refs > 0 || e->inflight > 0);
    for (size_t i = 0; !busy && i < fs->n_replay; i++)
        busy = fs->replay[i] && strcmp(fs->replay[i], rel) == 0;
    pthread_mutex_unlock(&fs->mu);
    return busy;
}
