/* The journal of announces queued but not yet answered (.nsyncfs/unsent):
 * appended before an announce is queued, emptied once answered, and replayed
 * by the ns-replay thread at the next start so that a crash loses nothing. */
#include <assert.h>

#include "fs/fs_int.h"
#include "fs/journal_rec.h"

static void journal_empty(struct fs *fs, unsigned g)
{
    if (fs->journal_fd[g] >= 0 && ftruncate(fs->journal_fd[g], 0) < 0)
        log_warn("cannot empty the journal .nsyncfs/%s%s: %s", FS_JOURNAL, g ? "-1" : "",
                 strerror(errno));
    if (g == fs->jgen)
        fs->jsize = 0;
}

/* An announce named by journal file g was answered. Caller holds fs->mu. */
void journal_answered(struct fs *fs, unsigned g)
{
    if (--fs->jinflight[g] == 0 && !fs->n_replay)
        journal_empty(fs, g);
}

bool fs_all_answered(struct fs *fs)
{
    pthread_mutex_lock(&fs->mu);
    bool all = fs->inflight == 0 && fs->n_replay == 0 && fs->jinflight[0] == 0 &&
               fs->jinflight[1] == 0;
    pthread_mutex_unlock(&fs->mu);
    return all;
}

/* Count one more announce for the active journal file (switching files
 * when the active one is big and the other empty); returns its number.
 * Caller holds fs->mu and then calls journal_write. */
unsigned journal_add(struct fs *fs, const char *path)
{
    unsigned g = fs->jgen;
    if (fs->jsize > FS_JOURNAL_ROTATE && fs->jinflight[1 - g] == 0 && !fs->n_replay) {
        g = fs->jgen = 1 - g; /* the other file is empty: switch to it */
        fs->jsize = 0;
    }
    fs->jinflight[g]++;
    fs->jsize += strlen(path) + 1;
    return g;
}

/* Name path in journal file g, outside fs->mu: the file cannot be emptied
 * meanwhile, since the announce counted by journal_add is not answered yet.
 * O_APPEND, one write per record, NUL-terminated (a path may hold a
 * newline). Not fsynced: it must outlive the process, as the file's own
 * bytes in the page cache do, not a power cut. */
void journal_write(struct fs *fs, unsigned g, const char *path)
{
    size_t len = strlen(path) + 1;
    if (fs->journal_fd[g] >= 0 && write(fs->journal_fd[g], path, len) != (ssize_t)len)
        log_warn("cannot journal the announce of %s: %s", path, strerror(errno));
}

/* One record of journal_load: into fs->replay unless already there. */
static int journal_keep(const char *p, void *data)
{
    struct fs *fs = data;
    for (size_t i = 0; i < fs->n_replay; i++)
        if (strcmp(fs->replay[i], p) == 0)
            return 0;
    char **grown = realloc(fs->replay, (fs->n_replay + 1) * sizeof *grown);
    if (!grown)
        return -ENOMEM;
    fs->replay = grown;
    if ((fs->replay[fs->n_replay] = strdup(p)) == NULL)
        return -ENOMEM;
    fs->n_replay++;
    return 0;
}

/* Journal file g's paths, deduplicated, into fs->replay. */
void journal_load(struct fs *fs, unsigned g)
{
    struct stat st;
    if (fs->journal_fd[g] < 0 || fstat(fs->journal_fd[g], &st) < 0 || st.st_size == 0)
        return;
    if ((uint64_t)st.st_size > FS_JOURNAL_MAX) {
        log_warn("journal .nsyncfs/%s%s is %lld bytes: ignored", FS_JOURNAL, g ? "-1" : "",
                 (long long)st.st_size);
        return;
    }
    char *buf = malloc((size_t)st.st_size);
    ssize_t n = buf ? pread(fs->journal_fd[g], buf, (size_t)st.st_size, 0) : -1;
    if (n > 0 && journal_records(buf, (size_t)n, journal_keep, fs) < 0)
        log_warn("journal .nsyncfs/%s%s: out of memory, %zu paths kept for the replay", FS_JOURNAL,
                 g ? "-1" : "", fs->n_replay);
    free(buf);
}

/* Has the local catalog caught up with what the leader committed? */
static bool journal_replay_ready(struct fs *fs)
{
    struct cluster_status cs;
    cluster_get_status(fs->ns->cluster, &cs);
    return cs.leader_id != 0 && cs.last_applied >= cs.commit_index && cs.commit_index > 0;
}

/* Right after a restart "applied up to the commit index" can be true while
 * the catalog still lacks a newer version by another node (a replay would
 * then announce over it, and its lock would wait for an install that the
 * replay itself holds back): cluster_sync_point knows. */
static bool journal_caught_up(struct fs *fs)
{
    return cluster_sync_point(fs->ns->cluster, fs_submit_timeout(fs->ns)) == 0;
}

/* One journaled path after a crash: the cluster has our version (nothing to
 * do), or another node's newer one (ours becomes a conflict copy), or an
 * older one of ours (announce ours now). */
static void journal_replay_one(struct fs *fs, const char *rel)
{
    struct nsync *ns = fs->ns;
    struct fsm_meta m;
    char target[PATH_MAX];
    struct stat st;
    int rc = meta_of_path(fs, rel, &m, target, sizeof target, &st);
    if (rc == -ENOENT)
        m.kind = FSM_TOMBSTONE; /* deleted here just before the crash */
    else if (rc < 0)
        return;
    pthread_rwlock_rdlock(&ns->fsm_lock);
    const struct fsm_entry *e = fsm_get(ns->fsm, rel);
    bool same;
    if (m.kind == FSM_TOMBSTONE)
        same = !e || e->kind == FSM_TOMBSTONE;
    else if (m.kind == FSM_FILE)
        same = e && e->kind == FSM_FILE && e->size == m.size &&
               memcmp(e->hash, m.hash, FSM_HASH_LEN) == 0 &&
               fsm_xattrs_equal(e->xattrs, e->xattrs_len, m.xattrs, m.xattrs_len);
    else
        same = e && e->kind == m.kind && e->mode == m.mode &&
               (m.kind != FSM_SYMLINK || (e->target && strcmp(e->target, target) == 0)) &&
               fsm_xattrs_equal(e->xattrs, e->xattrs_len, m.xattrs, m.xattrs_len);
    bool theirs = e && !same && !fsm_node_has(ns->fsm, rel, ns->self_id);
    pthread_rwlock_unlock(&ns->fsm_lock);
    if (same)
        return;
    if (m.kind == FSM_TOMBSTONE) {
        /* Someone changed it since: their version comes back, as when a
         * delete loses to a later write. */
        if (!theirs && (rc = fs_mutate(fs, rel, mutate_nothing, NULL, AFTER_TOMBSTONE)) < 0)
            log_error("cannot announce the delete of %s, made just before a crash: %s", rel,
                      strerror(-rc));
        else if (!theirs)
            log_info("announced the delete of %s, made just before a crash", rel);
        return;
    }
    if (theirs && m.kind != FSM_FILE)
        return; /* a directory or link another node changed since: theirs wins */
    char conflict[PATH_MAX];
    if (theirs) {
        if ((rc = fs_keep_conflict_copy(ns, rel, conflict, sizeof conflict)) < 0) {
            log_error("%s: changed here before a crash and by another node since; cannot keep "
                      "this node's version aside: %s", rel, strerror(-rc));
            return;
        }
        log_warn("%s: changed here before a crash and by another node since; this node's "
                 "version is kept as %s", rel, conflict);
        rel = conflict;
    }
    rc = fs_announce_local(fs, rel);
    if (rc < 0)
        log_error("cannot announce %s, closed just before a crash: %s", rel, strerror(-rc));
    else
        log_info("announced %s, closed just before a crash", rel);
}

void *journal_replayer_main(void *arg)
{
    struct fs *fs = arg;
    uint64_t seen = 0;
    for (;;) {
        pthread_mutex_lock(&fs->mu);
        bool stop = fs->fixer_stop;
        pthread_mutex_unlock(&fs->mu);
        if (stop)
            return NULL;
        if (journal_replay_ready(fs) && journal_caught_up(fs))
            break;
        cluster_wait_change(fs->ns->cluster, &seen, 100);
    }
    for (size_t i = 0; i < fs->n_replay; i++) {
        journal_replay_one(fs, fs->replay[i]);
        pthread_mutex_lock(&fs->mu);
        char *p = fs->replay[i];
        fs->replay[i] = NULL; /* the fetch worker may have it now */
        pthread_mutex_unlock(&fs->mu);
        free(p);
    }
    pthread_mutex_lock(&fs->mu);
    fs->n_replay = 0;
    for (unsigned g = 0; g < 2; g++)
        if (fs->jinflight[g] == 0)
            journal_empty(fs, g);
    pthread_mutex_unlock(&fs->mu);
    return NULL;
}
