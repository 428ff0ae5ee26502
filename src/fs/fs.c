/* The FUSE side of nsyncfs: every operation passes through to BACKING via its
 * dirfd, and every change is bracketed by the path's cluster lock and an
 * ANNOUNCE (or RENAME) through raft, so other nodes replay it (design §4). */
#include "fs/fs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <fuse.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "cluster/cluster.h"
#include "cluster/fsm.h"
#include "common/digest.h"
#include "common/log.h"
#include "common/path.h"
#include "fs/ll.h"
#include "nsync.h"

#define LOCK_BUCKETS 256
#define FS_JOURNAL "unsent"
#define FS_JOURNAL_ROTATE (1u << 20) /* switch files past this size */
#define FS_JOURNAL_MAX (64u << 20) /* larger is not ours: ignored */
#define BACKOFF_FIRST_MS 25
#define BACKOFF_MAX_MS 500

/* One path this node holds (or is getting) the cluster lock of. Several
 * handles and operations on this node share it: refs counts them. */
struct lock_ent {
    struct lock_ent *next;     /* hash chain */
    char *path;                /* owned */
    unsigned refs;             /* holders currently relying on the lock */
    unsigned waiters;          /* threads inside lock_path for it */
    bool held;                 /* granted and local copy current: writers may go */
    bool acquiring;            /* one thread is running LOCK + version wait */
    bool releasing;            /* the last holder is unlocking: new holders wait */
    bool announcing;           /* a holder is between reading the path and its
                                * announce being queued (announce_begin) */
    struct fs *fs_;            /* for the answer of a fresh create's LOCK */
    bool fresh;                /* created here without waiting for the cluster
                                * lock (optimistic create): its commands carry
                                * fsm fresh, refused over another node's entry */
    unsigned inflight;         /* announces sent but not yet answered, and
                                * conflict fixes pending: keep the entry */
    void *lock_token;          /* a fresh create's LOCK, still cancellable */
    unsigned attempts;         /* finished acquisitions, to pass a failure to waiters */
    int last_err;
    _Atomic uint64_t mods;     /* content changes made here under this lock (any
                                * handle, truncate): see hash_note */
};

/* An announce on its way through the outbox; owned by its completion. */
struct pending_ann {
    struct pending_ann *next;  /* in the conflict queue */
    struct fs *fs;
    struct lock_ent *e;        /* kept alive by e->inflight */
    bool last;                 /* it carries unlock: the entry's lock goes with it */
    dev_t dev;                 /* the file announced, so that a conflict fix */
    ino_t ino;                 /* moves exactly that file aside */
    uint64_t queued_us;        /* for the debug log: queue to commit */
    unsigned jgen;             /* the journal file that names it */
};

struct fs {
    struct nsync *ns;
    pthread_mutex_t mu;        /* guards the lock table and the conflict queue */
    pthread_cond_t cv;         /* an entry finished acquiring or releasing, or an
                                * announce was answered */
    struct lock_ent *buckets[LOCK_BUCKETS];
    unsigned inflight;         /* sum of the entries' inflight */
    /* Announces the cluster refused as conflicting (fresh over another
     * node's entry, or a lapsed lock), fixed by the fixer thread: the
     * outbox thread that learns of them may not submit. */
    struct pending_ann *fix_head;
    pthread_cond_t fix_cv;
    pthread_t fixer;
    bool fixer_started, fixer_stop;
    /* The journal of announces queued but not yet answered (.nsyncfs/
     * unsent and unsent-1): close() returns before the commit, so a crash
     * could lose the announce; the next start replays what the journal
     * names. Two files, so that one can be emptied while the other takes
     * new records: a file is emptied once every announce it names has been
     * answered, and appends switch to the other file once the active one
     * passes FS_JOURNAL_ROTATE and the other is empty. Under fs->mu. */
    int journal_fd[2];
    unsigned jgen;             /* the file appends go to */
    unsigned jinflight[2];     /* unanswered announces named by each file */
    size_t jsize;              /* bytes in the active file */
    /* Paths named by the journal at start, until the replay dealt with
     * them: the fetch worker must not install over them (fs_path_busy). */
    char **replay;
    size_t n_replay;
    pthread_t replayer;
    bool replayer_started;
    _Atomic(struct ll *) ll;
    bool as_root;              /* new nodes get the caller's owner */
    gid_t egid;                /* our group: a new node's group unless the parent is set-gid */
};

/* An open regular file. */
struct handle {
    int fd;
    int oflags;                /* flags the backing fd was opened with */
    bool writable;
    /* Writes hold it shared; flush/release and lock changes hold it
     * exclusively, so an announce never misses a write in flight. */
    pthread_rwlock_t rw;
    struct lock_ent *lk;       /* this handle's ref on the path's lock, or NULL */
    atomic_bool dirty;         /* wrote since the last announce */
    /* The hash of [0, hashed), fed by this handle's writes while they come
     * front to back and nothing else changes the file (hash_mods: lk->mods
     * as this handle's last change left it), so that the announce of a big
     * file written in one go need not read it all again. hash_live goes
     * false for good at the first write out of order. hmu guards these. */
    pthread_mutex_t hmu;
    struct digest_stream *hs;
    uint64_t hashed, hash_mods;
    bool hash_live;
};

struct dir_handle {
    DIR *dp;
    struct dirent *entry;      /* read but not yet handed to the filler */
    off_t offset;
    bool root;
};

/* A caller's share of a lock_ent for the duration of one release. */
struct held {
    struct lock_ent *e;
    bool last;                 /* no other holder: the lock goes when we are done */
    bool done;                 /* nothing more to send for it (unlocked or unreachable) */
};

static struct nsync *ctx_ns(void)
{
    return ll_caller()->ns;
}

static unsigned lock_timeout(const struct nsync *ns)
{
    return ns->cfg.lock_timeout_ms ? ns->cfg.lock_timeout_ms : 30000;
}

static unsigned submit_timeout(const struct nsync *ns)
{
    return ns->cfg.submit_timeout_ms ? ns->cfg.submit_timeout_ms : 8000;
}

static struct handle *fh_handle(const struct fuse_file_info *fi)
{
    return (struct handle *)(uintptr_t)fi->fh;
}

static bool is_root(const char *rel)
{
    return rel[0] == '.' && rel[1] == '\0';
}

/* ---- cluster commands ---- */

/* cluster_submit with the node filled in; a failure to reach the cluster is
 * logged here once, with the path, and becomes EROFS (no quorum). */
static int submit(struct fs *fs, struct fsm_cmd *cmd, struct cluster_reply *r)
{
    struct nsync *ns = fs->ns;
    cmd->node = ns->self_id;
    int rc = cluster_submit(ns->cluster, cmd, submit_timeout(ns), r);
    if (rc < 0) {
        log_error("cluster command %u on %s failed: %s", (unsigned)cmd->op,
                  cmd->path ? cmd->path : "-", strerror(-rc));
        return rc == -EINVAL ? -EINVAL : -EROFS;
    }
    return 0;
}

static bool lock_taken_elsewhere(struct fs *fs, const char *rel)
{
    struct nsync *ns = fs->ns;
    uint64_t holder = 0, expires = 0;
    pthread_rwlock_rdlock(&ns->fsm_lock);
    int has = fsm_lock_get(ns->fsm, rel, &holder, &expires);
    pthread_rwlock_unlock(&ns->fsm_lock);
    return has == 1 && holder != ns->self_id;
}

/* The local copy of rel is the catalog's version `want` (or newer), so a
 * writer starting now starts from the latest bytes. lock_version is the
 * version of the LOCK that granted us the path: until this node's own
 * catalog has applied that far, it may not even know `want` yet, and "no
 * entry" would wrongly read as "nothing to wait for". */
static bool local_current(struct fs *fs, const char *rel, uint64_t want, uint64_t lock_version)
{
    struct nsync *ns = fs->ns;
    pthread_rwlock_rdlock(&ns->fsm_lock);
    bool ok = fsm_version(ns->fsm) >= lock_version;
    if (ok) {
        const struct fsm_entry *e = fsm_get(ns->fsm, rel);
        /* No entry: a settled tombstone was dropped, so every node has it. */
        ok = !e || (e->version >= want && fsm_node_has(ns->fsm, rel, ns->self_id));
    }
    pthread_rwlock_unlock(&ns->fsm_lock);
    return ok;
}

static void send_unlock(struct fs *fs, const char *rel)
{
    struct fsm_cmd cmd = {.op = FSM_OP_UNLOCK, .path = rel};
    struct cluster_reply r;
    if (submit(fs, &cmd, &r) == 0 && r.status != 0)
        log_error("unlock %s refused: %s", rel, strerror(-r.status));
}

/* Take rel's cluster lock for this node and wait until the local copy is
 * current. On success the node counts one more held lock (for RENEW). */
static int cluster_lock(struct fs *fs, const char *rel)
{
    struct nsync *ns = fs->ns;
    uint64_t deadline = nsync_mono_ms() + lock_timeout(ns);
    unsigned backoff = BACKOFF_FIRST_MS;
    uint64_t seen = 0;
    struct cluster_reply r;
    for (;;) {
        struct fsm_cmd cmd = {.op = FSM_OP_LOCK, .path = rel, .lease_ms = ns->cfg.lease_ms};
        int rc = submit(fs, &cmd, &r);
        if (rc < 0)
            return rc;
        if (r.status == 0)
            break;
        if (r.status != -EBUSY) {
            log_error("lock %s: unexpected answer %s", rel, strerror(-r.status));
            return r.status < 0 ? r.status : -EIO;
        }
        uint64_t now = nsync_mono_ms();
        if (now >= deadline) {
            log_warn("lock %s: still held by node %016llx after %u ms, giving up", rel,
                     (unsigned long long)r.lock_holder, lock_timeout(ns));
            return -EBUSY;
        }
        /* Sleep the backoff, but retry at once when the local FSM shows the
         * holder let go (an UNLOCK is applied here too). */
        uint64_t until = now + backoff < deadline ? now + backoff : deadline;
        while ((now = nsync_mono_ms()) < until && lock_taken_elsewhere(fs, rel))
            cluster_wait_change(ns->cluster, &seen, (unsigned)(until - now));
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
    /* Renew from the grant on: the version wait may outlast a lease. */
    cluster_hold_locks(ns->cluster, +1);
    if (r.path_version > 0) {
        uint64_t vdeadline = nsync_mono_ms() + lock_timeout(ns);
        while (!local_current(fs, rel, r.path_version, r.version)) {
            uint64_t now = nsync_mono_ms();
            if (now >= vdeadline) {
                log_warn("lock %s: version %llu not installed here within %u ms", rel,
                         (unsigned long long)r.path_version, lock_timeout(ns));
                send_unlock(fs, rel);
                cluster_hold_locks(ns->cluster, -1);
                return -EBUSY;
            }
            unsigned slice = vdeadline - now > 200 ? 200 : (unsigned)(vdeadline - now);
            cluster_wait_change(ns->cluster, &seen, slice);
        }
    }
    return 0;
}

/* ---- the node's lock table ---- */

static size_t bucket_of(const char *path)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)path; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    return (size_t)(h % LOCK_BUCKETS);
}

/* Caller holds fs->mu. */
static struct lock_ent *lock_find(struct fs *fs, const char *path)
{
    for (struct lock_ent *e = fs->buckets[bucket_of(path)]; e; e = e->next)
        if (strcmp(e->path, path) == 0)
            return e;
    return NULL;
}

/* Caller holds fs->mu. Frees e once nobody needs it. */
static void lock_maybe_free(struct fs *fs, struct lock_ent *e)
{
    if (e->refs || e->waiters || e->held || e->acquiring || e->releasing || e->announcing ||
        e->inflight)
        return;
    struct lock_ent **pp = &fs->buckets[bucket_of(e->path)];
    while (*pp != e)
        pp = &(*pp)->next;
    *pp = e->next;
    free(e->path);
    free(e);
}

/* Become a holder of rel's lock: share it if this node already holds it,
 * else take it through the cluster (one thread does, the others wait). */
static int lock_path(struct fs *fs, const char *rel, struct held *out)
{
    pthread_mutex_lock(&fs->mu);
    struct lock_ent *e = lock_find(fs, rel);
    if (!e) {
        e = calloc(1, sizeof *e);
        char *p = e ? strdup(rel) : NULL;
        if (!p) {
            free(e);
            pthread_mutex_unlock(&fs->mu);
            return -ENOMEM;
        }
        e->path = p;
        size_t b = bucket_of(rel);
        e->next = fs->buckets[b];
        fs->buckets[b] = e;
    }
    e->waiters++;
    int rc;
    for (;;) {
        if (e->held && !e->releasing) {
            e->refs++;
            rc = 0;
            break;
        }
        if (e->acquiring) {
            unsigned a = e->attempts;
            while (e->acquiring)
                pthread_cond_wait(&fs->cv, &fs->mu);
            if (!e->held && e->attempts != a) {
                rc = e->last_err; /* the attempt we waited on failed: so do we */
                break;
            }
            continue;
        }
        if (e->releasing) {
            pthread_cond_wait(&fs->cv, &fs->mu);
            continue;
        }
        e->acquiring = true;
        pthread_mutex_unlock(&fs->mu);
        rc = cluster_lock(fs, rel);
        pthread_mutex_lock(&fs->mu);
        e->acquiring = false;
        e->attempts++;
        e->held = rc == 0;
        e->last_err = rc;
        pthread_cond_broadcast(&fs->cv);
        if (rc < 0)
            break;
    }
    e->waiters--;
    if (rc < 0)
        lock_maybe_free(fs, e);
    pthread_mutex_unlock(&fs->mu);
    if (rc == 0)
        *out = (struct held){.e = e};
    return rc;
}

/* Decide whether this holder is the last; if so, block new holders until
 * unlock_end, so nobody relies on a lock that is going away. */
static void unlock_begin(struct fs *fs, struct held *h)
{
    pthread_mutex_lock(&fs->mu);
    h->last = h->e->refs == 1;
    h->done = false;
    if (h->last)
        h->e->releasing = true;
    pthread_mutex_unlock(&fs->mu);
}

/* Drop one holder's ref; the last one gives the lock up on this node (the
 * cluster side went with an UNLOCK or an announce with unlock). Caller
 * holds fs->mu; it calls cluster_hold_locks(-1) after unlocking if last. */
static void holder_drop(struct fs *fs, struct lock_ent *e, bool last)
{
    e->refs--;
    if (last) {
        e->held = false;
        e->releasing = false;
        e->fresh = false;
    }
    pthread_cond_broadcast(&fs->cv);
    lock_maybe_free(fs, e);
}

/* Drop the holder's ref; the last one sends UNLOCK unless an announce with
 * unlock=true already released the lock. */
static void unlock_end(struct fs *fs, struct held *h)
{
    struct lock_ent *e = h->e;
    if (h->last && !h->done)
        send_unlock(fs, e->path);
    pthread_mutex_lock(&fs->mu);
    holder_drop(fs, e, h->last);
    pthread_mutex_unlock(&fs->mu);
    if (h->last)
        cluster_hold_locks(fs->ns->cluster, -1);
    h->e = NULL;
}

static void unlock_now(struct fs *fs, struct held *h)
{
    unlock_begin(fs, h);
    unlock_end(fs, h);
}

/* Holders on this node share a path's lock, so several of them may announce
 * it at once. Raft commits their announces in the order they reach the
 * leader, not the order they read the file: a hash taken before another
 * handle's append could commit after that handle's announce, and the
 * catalog would end on a stale size and hash (an update lost, and a version
 * no peer can fetch). So one holder at a time goes from changing or reading
 * the path to the commit of its announce; the last committed announce then
 * describes the file as it is. Caller holds a ref on e. */
static void announce_begin(struct fs *fs, struct lock_ent *e)
{
    pthread_mutex_lock(&fs->mu);
    while (e->announcing)
        pthread_cond_wait(&fs->cv, &fs->mu);
    e->announcing = true;
    pthread_mutex_unlock(&fs->mu);
}

static void announce_end(struct fs *fs, struct lock_ent *e)
{
    pthread_mutex_lock(&fs->mu);
    e->announcing = false;
    pthread_cond_broadcast(&fs->cv);
    pthread_mutex_unlock(&fs->mu);
}

/* Propose cmd (ANNOUNCE or RENAME); it carries unlock=true when every lock
 * it covers is on its last holder. Returns 0 or a negative errno, including
 * the FSM's refusal (-EBUSY: our lock lapsed; -ENOENT: rename source
 * unknown). */
static int announce(struct fs *fs, struct fsm_cmd *cmd, struct held **cover, int n)
{
    bool all_last = n > 0;
    for (int i = 0; i < n; i++)
        all_last = all_last && cover[i]->last;
    cmd->unlock = all_last;
    cmd->fresh = n > 0 && cover[0]->e->fresh;
    struct cluster_reply r;
    int rc = submit(fs, cmd, &r);
    if (rc < 0) {
        /* The cluster is unreachable: an UNLOCK would fail the same way
         * after another wait; the lease frees the lock instead. */
        for (int i = 0; i < n; i++)
            cover[i]->done = true;
        return rc;
    }
    if (r.status == 0) {
        if (all_last)
            for (int i = 0; i < n; i++)
                cover[i]->done = true;
        return 0;
    }
    if (!(r.status == -ENOENT && cmd->op == FSM_OP_RENAME))
        log_error("announce of %s refused by the cluster: %s", cmd->path, strerror(-r.status));
    return r.status < 0 ? r.status : -EIO;
}

/* ---- announces that do not wait ---- */

static void journal_empty(struct fs *fs, unsigned g)
{
    if (fs->journal_fd[g] >= 0 && ftruncate(fs->journal_fd[g], 0) < 0)
        log_warn("cannot empty the journal .nsyncfs/%s%s: %s", FS_JOURNAL, g ? "-1" : "",
                 strerror(errno));
    if (g == fs->jgen)
        fs->jsize = 0;
}

/* An announce named by journal file g was answered. Caller holds fs->mu. */
static void journal_answered(struct fs *fs, unsigned g)
{
    if (--fs->jinflight[g] == 0 && !fs->n_replay)
        journal_empty(fs, g);
}

/* Count one more announce for the active journal file (switching files
 * when the active one is big and the other empty); returns its number.
 * Caller holds fs->mu and then calls journal_write. */
static unsigned journal_add(struct fs *fs, const char *path)
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
static void journal_write(struct fs *fs, unsigned g, const char *path)
{
    size_t len = strlen(path) + 1;
    if (fs->journal_fd[g] >= 0 && write(fs->journal_fd[g], path, len) != (ssize_t)len)
        log_warn("cannot journal the announce of %s: %s", path, strerror(errno));
}

/* The outbox answered (or the fixer fixed): drop what pa kept. When it
 * carried unlock, this is where the last holder's release completes. */
static void ann_release(struct fs *fs, struct pending_ann *pa)
{
    struct lock_ent *e = pa->e;
    pthread_mutex_lock(&fs->mu);
    e->inflight--;
    fs->inflight--;
    journal_answered(fs, pa->jgen);
    if (pa->last) {
        holder_drop(fs, e, true); /* the announce took over the last holder's ref */
    } else {
        pthread_cond_broadcast(&fs->cv);
        lock_maybe_free(fs, e);
    }
    pthread_mutex_unlock(&fs->mu);
    if (pa->last)
        cluster_hold_locks(fs->ns->cluster, -1);
    free(pa);
}

/* Outbox thread: must not block or submit. A refusal that means another
 * node's version won goes to the fixer thread. */
static void announce_done(void *arg, int rc, const struct cluster_reply *r)
{
    struct pending_ann *pa = arg;
    struct fs *fs = pa->fs;
    int st = rc < 0 ? rc : r->status;
    log_debug("announce %s committed after %llu us: %s", pa->e->path,
              (unsigned long long)(nsync_mono_us() - pa->queued_us), st ? strerror(-st) : "ok");
    if (st == -EEXIST || st == -EBUSY) {
        pthread_mutex_lock(&fs->mu);
        struct pending_ann **pp = &fs->fix_head;
        while (*pp)
            pp = &(*pp)->next;
        pa->next = NULL;
        *pp = pa;
        pthread_cond_signal(&fs->fix_cv);
        pthread_mutex_unlock(&fs->mu);
        return;
    }
    if (st < 0)
        log_error("the change to %s was not announced to the cluster: %s; it stays on this node "
                  "only until written again", pa->e->path, strerror(-st));
    ann_release(fs, pa);
}

/* Queue cmd (an ANNOUNCE of the file st describes) behind everything this
 * node sent before, keeping e alive until it is answered. last: cmd
 * carries unlock and takes over the holder's ref on e. */
static int announce_async(struct fs *fs, struct fsm_cmd *cmd, struct lock_ent *e, bool last,
                          const struct stat *st)
{
    struct pending_ann *pa = calloc(1, sizeof *pa);
    if (!pa)
        return -ENOMEM;
    *pa = (struct pending_ann){.fs = fs, .e = e, .last = last, .dev = st->st_dev, .ino = st->st_ino,
                               .queued_us = nsync_mono_us()};
    pthread_mutex_lock(&fs->mu);
    e->inflight++;
    fs->inflight++;
    pa->jgen = journal_add(fs, cmd->path);
    pthread_mutex_unlock(&fs->mu);
    journal_write(fs, pa->jgen, cmd->path);
    cmd->node = fs->ns->self_id;
    int rc = cluster_send(fs->ns->cluster, cmd, 0, announce_done, pa);
    if (rc < 0) {
        pthread_mutex_lock(&fs->mu);
        e->inflight--;
        fs->inflight--;
        journal_answered(fs, pa->jgen);
        pthread_mutex_unlock(&fs->mu);
        free(pa);
        log_error("cannot queue the announce of %s: %s", cmd->path, strerror(-rc));
        return rc == -ESHUTDOWN ? -EROFS : rc;
    }
    return 0;
}

/* Another node's version of pa's path won (its fresh create came first, or
 * our lock had lapsed): this node's file is set aside as a conflict copy,
 * announced under that name, and the winner's version is fetched in its
 * place once the entry is released. Fixer thread. */
static void fix_conflict(struct fs *fs, struct pending_ann *pa)
{
    struct nsync *ns = fs->ns;
    const char *rel = pa->e->path;
    char conflict[PATH_MAX];
    struct stat st;
    int rc = fstatat(ns->backing_fd, rel, &st, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
    if (rc == -ENOENT || (rc == 0 && (st.st_dev != pa->dev || st.st_ino != pa->ino)))
        rc = -ESTALE; /* a delete, or already moved or replaced: nothing of ours there */
    if (rc == 0)
        rc = fs_keep_conflict_copy(ns, rel, conflict, sizeof conflict);
    if (rc == 0) {
        log_warn("%s was written here and on another node at the same time; the cluster keeps the "
                 "other node's version, this node's is kept as %s", rel, conflict);
        int arc = fs_announce_local(fs, conflict);
        if (arc < 0)
            log_error("cannot announce the conflict copy %s: %s", conflict, strerror(-arc));
        fs_invalidate(fs, rel);
        fs_invalidate(fs, conflict);
    } else if (rc != -ESTALE) {
        log_error("%s: another node's version won, and this node's could not be set aside: %s",
                  rel, strerror(-rc));
    }
    if (pa->last) {
        /* Our LOCK may have been granted after all: let the winner in. */
        struct fsm_cmd un = {.op = FSM_OP_UNLOCK, .path = rel};
        struct cluster_reply r;
        submit(fs, &un, &r);
    }
    ann_release(fs, pa);
}

static void *fixer_main(void *arg)
{
    struct fs *fs = arg;
    pthread_mutex_lock(&fs->mu);
    for (;;) {
        while (!fs->fix_head && !fs->fixer_stop)
            pthread_cond_wait(&fs->fix_cv, &fs->mu);
        struct pending_ann *pa = fs->fix_head;
        if (!pa)
            break;
        fs->fix_head = pa->next;
        pthread_mutex_unlock(&fs->mu);
        fix_conflict(fs, pa);
        pthread_mutex_lock(&fs->mu);
    }
    pthread_mutex_unlock(&fs->mu);
    return NULL;
}

/* ---- creates that do not wait for the lock ---- */

#define FRESH_BACKLOG_MAX_MS 250 /* the cluster must be keeping up */

/* Nobody has rel, as far as this node knows: no catalog entry (or a
 * tombstone this node has), no lock, and the cluster answers. */
static bool fresh_eligible(struct fs *fs, const char *rel)
{
    struct nsync *ns = fs->ns;
    struct cluster_status cs;
    cluster_get_status(ns->cluster, &cs);
    if (cs.leader_id == 0 || cluster_backlog_ms(ns->cluster) > FRESH_BACKLOG_MAX_MS)
        return false;
    pthread_rwlock_rdlock(&ns->fsm_lock);
    const struct fsm_entry *e = fsm_get(ns->fsm, rel);
    bool ok = (!e || (e->kind == FSM_TOMBSTONE && fsm_node_has(ns->fsm, rel, ns->self_id))) &&
              fsm_lock_get(ns->fsm, rel, NULL, NULL) == 0;
    pthread_rwlock_unlock(&ns->fsm_lock);
    return ok;
}

/* Claim rel's (absent) lock entry for a fresh create: it stays 'acquiring',
 * so local users wait, until fresh_end. NULL if an entry exists. */
static struct lock_ent *fresh_begin(struct fs *fs, const char *rel)
{
    pthread_mutex_lock(&fs->mu);
    struct lock_ent *e = lock_find(fs, rel) ? NULL : calloc(1, sizeof *e);
    if (e && !(e->path = strdup(rel))) {
        free(e);
        e = NULL;
    }
    if (e) {
        size_t b = bucket_of(rel);
        e->next = fs->buckets[b];
        fs->buckets[b] = e;
        e->acquiring = true;
        e->fresh = true;
    }
    pthread_mutex_unlock(&fs->mu);
    return e;
}

/* Outbox thread. e was kept alive for this answer (inflight). */
static void fresh_lock_done(void *arg, int rc, const struct cluster_reply *r)
{
    struct lock_ent *e = arg;
    struct fs *fs = e->fs_;
    if (rc < 0 || r->status != 0)
        log_debug("lock of new file %s: %s (its announce decides)", e->path,
                  strerror(rc < 0 ? -rc : -r->status));
    pthread_mutex_lock(&fs->mu);
    e->lock_token = NULL;
    e->inflight--;
    fs->inflight--;
    pthread_cond_broadcast(&fs->cv);
    lock_maybe_free(fs, e);
    pthread_mutex_unlock(&fs->mu);
}

/* created: the O_EXCL create made the file, so the entry becomes held
 * (one ref, the handle's) and the LOCK follows it through the outbox, to
 * keep other nodes off the file while it is open here. Otherwise the entry
 * is given back; waiters then take the lock the usual way. */
static void fresh_end(struct fs *fs, struct lock_ent *e, bool created)
{
    pthread_mutex_lock(&fs->mu);
    e->acquiring = false;
    if (created) {
        e->held = true;
        e->refs++;
        /* Lazy: a small file's close follows within the linger and then
         * takes the LOCK back (its fresh announce does the same job). Sent
         * under fs->mu, so its answer cannot clear lock_token before it is
         * set. */
        struct fsm_cmd cmd = {.op = FSM_OP_LOCK, .path = e->path, .node = fs->ns->self_id,
                              .lease_ms = fs->ns->cfg.lease_ms};
        e->fs_ = fs;
        if (cluster_send_lazy(fs->ns->cluster, &cmd, fresh_lock_done, e, &e->lock_token) == 0) {
            e->inflight++;
            fs->inflight++;
        } else {
            e->lock_token = NULL;
            log_debug("lock of new file %s not sent; its announce decides", e->path);
        }
    } else {
        e->fresh = false;
    }
    pthread_cond_broadcast(&fs->cv);
    if (!created)
        lock_maybe_free(fs, e);
    pthread_mutex_unlock(&fs->mu);
    if (created)
        cluster_hold_locks(fs->ns->cluster, +1);
}

/* The last holder of a fresh entry announces with unlock: if the LOCK was
 * not sent yet, it is not needed (a fresh ANNOUNCE with unlock is a LOCK
 * and an announce in one step), so one raft entry less. */
static void fresh_lock_cancel(struct fs *fs, struct lock_ent *e)
{
    pthread_mutex_lock(&fs->mu);
    if (e->lock_token && cluster_cancel(fs->ns->cluster, e->lock_token) == 0) {
        e->lock_token = NULL;
        e->inflight--;
        fs->inflight--;
    }
    pthread_mutex_unlock(&fs->mu);
}

/* ---- what an announce says about a path ---- */

static void meta_from_stat(const struct stat *st, struct fsm_meta *m)
{
    m->mode = st->st_mode & 07777;
    m->uid = st->st_uid;
    m->gid = st->st_gid;
    m->mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

/* A FILE meta from the stat of a regular file, all but its hash. */
static void meta_of_file(const struct stat *st, struct fsm_meta *m)
{
    memset(m, 0, sizeof *m);
    m->kind = FSM_FILE;
    meta_from_stat(st, m);
    m->size = (uint64_t)st->st_size;
}

/* The size and hash of the file open at fd (st: its fstat) into m (a
 * write-only fd cannot be read: the same inode is then opened again for
 * reading via /proc). With inl (the caller's, FSM_INLINE_MAX + 1 bytes), a
 * file of at most FSM_INLINE_MAX bytes is read once into it and travels in
 * the announce (m->data = inl): replicas then install it without a fetch,
 * and hash and bytes come from the same read. */
static int hash_of_fd(int fd, const struct stat *st, struct fsm_meta *m, uint8_t *inl)
{
    int rfd = fd;
    char proc[64];
    if ((fcntl(fd, F_GETFL) & O_ACCMODE) == O_WRONLY) {
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
        if ((rfd = open(proc, O_RDONLY | O_CLOEXEC)) < 0)
            return -errno;
    }
    int rc = 1;
    if (inl && st->st_size > 0 && st->st_size <= (off_t)FSM_INLINE_MAX) {
        /* A short read of a regular file is its end (or a writer that
         * truncated it meanwhile: we announce what we read). */
        ssize_t n = pread(rfd, inl, FSM_INLINE_MAX + 1, 0);
        if (n < 0) {
            rc = -errno;
        } else if ((size_t)n <= FSM_INLINE_MAX) {
            m->size = (uint64_t)n;
            digest_buf(inl, (size_t)n, m->hash);
            m->data = n > 0 ? inl : NULL;
            rc = 0;
        } /* else it grew: hash it the usual way */
    }
    if (rc > 0)
        rc = digest_fd(rfd, m->hash, &m->size);
    if (rfd != fd)
        close(rfd);
    return rc;
}

/* The current state of rel in BACKING as an announce; *st receives the
 * stat of what it describes. target receives a symlink's target. -ENOTSUP
 * for kinds the catalog cannot carry (fifo...). */
static int meta_of_path(struct fs *fs, const char *rel, struct fsm_meta *m, char *target,
                        size_t tsz, struct stat *st)
{
    int bfd = fs->ns->backing_fd;
    if (fstatat(bfd, rel, st, AT_SYMLINK_NOFOLLOW) < 0)
        return -errno;
    if (S_ISREG(st->st_mode)) {
        int fd = openat(bfd, rel, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            return -errno;
        int rc = fstat(fd, st) < 0 ? -errno : 0; /* the file opened, if it changed */
        if (rc == 0) {
            meta_of_file(st, m);
            rc = hash_of_fd(fd, st, m, NULL);
        }
        close(fd);
        return rc;
    }
    memset(m, 0, sizeof *m);
    meta_from_stat(st, m);
    if (S_ISDIR(st->st_mode)) {
        m->kind = FSM_DIR;
        return 0;
    }
    if (S_ISLNK(st->st_mode)) {
        ssize_t n = readlinkat(bfd, rel, target, tsz - 1);
        if (n < 0)
            return -errno;
        target[n] = '\0';
        m->kind = FSM_SYMLINK;
        m->target = target;
        return 0;
    }
    return -ENOTSUP;
}

/* ---- locked path mutations ---- */

typedef int (*local_fn)(struct fs *fs, const char *rel, void *arg);

enum after { AFTER_STATE, AFTER_TOMBSTONE };

/* The shape of every metadata change: lock rel, change BACKING, queue the
 * announce of the result with unlock (not waited for, as at close: the
 * outbox keeps this node's changes in order), or (if the local change
 * failed) announce nothing and unlock. The root is not in the catalog:
 * changed locally only. */
static int mutate(struct fs *fs, const char *rel, local_fn fn, void *arg, enum after after)
{
    if (is_root(rel))
        return fn(fs, rel, arg);
    struct held h;
    int rc = lock_path(fs, rel, &h);
    if (rc < 0)
        return rc;
    announce_begin(fs, h.e);
    rc = fn(fs, rel, arg);
    atomic_fetch_add(&h.e->mods, 1); /* ends the running hash of open handles */
    unlock_begin(fs, &h);
    bool sent = false;
    if (rc == 0) {
        struct fsm_cmd cmd = {.op = FSM_OP_ANNOUNCE, .path = rel};
        char target[PATH_MAX];
        int mrc = 0;
        struct stat st;
        memset(&st, 0, sizeof st);
        if (after == AFTER_TOMBSTONE)
            cmd.meta.kind = FSM_TOMBSTONE;
        else
            mrc = meta_of_path(fs, rel, &cmd.meta, target, sizeof target, &st);
        if (mrc == 0) {
            cmd.unlock = h.last;
            cmd.fresh = h.e->fresh;
            rc = announce_async(fs, &cmd, h.e, h.last, &st);
            sent = rc == 0;
        } else if (mrc != -ENOTSUP) {
            log_error("cannot read back %s to announce it: %s", rel, strerror(-mrc));
            rc = mrc;
        }
    }
    announce_end(fs, h.e);
    if (!(sent && h.last))
        unlock_end(fs, &h); /* else the announce's answer releases the lock */
    return rc;
}

/* New nodes belong to the caller when we can arrange it (running as root).
 * A caller with our own ids already owns what we created, as in a native
 * create (a set-gid parent's group included). */
static void own_by_caller(struct fs *fs, int dirfd, const char *rel, int flags)
{
    if (!fs->as_root)
        return;
    const struct ll_caller *c = ll_caller();
    if (c->uid == 0 && c->gid == fs->egid)
        return;
    if (fchownat(dirfd, rel, c->uid, c->gid, flags) < 0)
        log_warn("chown %s to %u:%u: %s", rel, (unsigned)c->uid, (unsigned)c->gid,
                 strerror(errno));
}

static int do_unlink(struct fs *fs, const char *rel, void *arg)
{
    return unlinkat(fs->ns->backing_fd, rel, 0) < 0 ? -errno : 0;
}

static int do_rmdir(struct fs *fs, const char *rel, void *arg)
{
    return unlinkat(fs->ns->backing_fd, rel, AT_REMOVEDIR) < 0 ? -errno : 0;
}

static int do_mkdir(struct fs *fs, const char *rel, void *arg)
{
    mode_t mode = *(const mode_t *)arg & 07777;
    int bfd = fs->ns->backing_fd;
    if (mkdirat(bfd, rel, mode) < 0) /* the caller's umask is applied, ours is 0 */
        return -errno;
    own_by_caller(fs, bfd, rel, AT_SYMLINK_NOFOLLOW);
    return 0;
}

static int do_mknod_reg(struct fs *fs, const char *rel, void *arg)
{
    mode_t mode = *(const mode_t *)arg & 07777;
    int fd = openat(fs->ns->backing_fd, rel, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                    mode);
    if (fd < 0)
        return -errno;
    own_by_caller(fs, fd, "", AT_EMPTY_PATH);
    close(fd);
    return 0;
}

static int do_symlink(struct fs *fs, const char *rel, void *arg)
{
    int bfd = fs->ns->backing_fd;
    if (symlinkat((const char *)arg, bfd, rel) < 0)
        return -errno;
    own_by_caller(fs, bfd, rel, AT_SYMLINK_NOFOLLOW);
    return 0;
}

static int do_chmod(struct fs *fs, const char *rel, void *arg)
{
    return fchmodat(fs->ns->backing_fd, rel, *(const mode_t *)arg, 0) < 0 ? -errno : 0;
}

struct owner {
    uid_t uid;
    gid_t gid;
};

static int do_chown(struct fs *fs, const char *rel, void *arg)
{
    const struct owner *o = arg;
    return fchownat(fs->ns->backing_fd, rel, o->uid, o->gid, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
}

static int do_utimens(struct fs *fs, const char *rel, void *arg)
{
    return utimensat(fs->ns->backing_fd, rel, arg, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
}

static int do_truncate(struct fs *fs, const char *rel, void *arg)
{
    int fd = openat(fs->ns->backing_fd, rel, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = ftruncate(fd, *(const off_t *)arg) < 0 ? -errno : 0;
    close(fd);
    return rc;
}

/* ---- file handles and their lock ---- */

/* hmu held. */
static void hash_stop(struct handle *h)
{
    digest_stream_free(h->hs);
    h->hs = NULL;
    h->hash_live = false;
}

/* A content change through h at [off, off + n) (n bytes of buf; buf NULL for
 * a truncate to off). Every change under the lock counts in lk->mods; h's
 * running hash survives only if the count was still what h left it at (no
 * other handle, no truncate elsewhere) and the change extends [0, hashed)
 * exactly. Called after the change, with h->rw held shared. */
static void hash_note(struct handle *h, const void *buf, size_t n, off_t off)
{
    struct lock_ent *e = h->lk;
    pthread_mutex_lock(&h->hmu);
    uint64_t want = h->hash_mods;
    bool ours = e && atomic_compare_exchange_strong(&e->mods, &want, want + 1);
    if (!ours && e)
        atomic_fetch_add(&e->mods, 1);
    if (!h->hash_live || !ours) {
        hash_stop(h);
    } else if (!buf && off == 0) {
        digest_stream_free(h->hs); /* emptied: start again */
        h->hs = NULL;
        h->hashed = 0;
        h->hash_mods = want + 1;
    } else if (buf && (uint64_t)off == h->hashed && (h->hs || (h->hs = digest_stream_new()))) {
        digest_stream_update(h->hs, buf, n);
        h->hashed += n;
        h->hash_mods = want + 1;
    } else {
        hash_stop(h);
    }
    pthread_mutex_unlock(&h->hmu);
}

/* h's running hash is the hash of the whole file st describes (h->rw held
 * exclusively, so no write of h is in flight). */
static bool hash_ready(struct handle *h, const struct stat *st, uint8_t out[DIGEST_LEN])
{
    pthread_mutex_lock(&h->hmu);
    bool ok = h->hash_live && h->hs && h->lk && atomic_load(&h->lk->mods) == h->hash_mods &&
              (uint64_t)st->st_size == h->hashed;
    if (ok)
        digest_stream_peek(h->hs, out);
    pthread_mutex_unlock(&h->hmu);
    return ok;
}

/* Make h hold the lock of rel (h->rw held exclusively). A handle whose lock
 * went with an earlier flush takes it again; one whose file was renamed
 * moves to the new path's lock. If a newer version was installed meanwhile
 * (a rename over the path), the fd is switched to it so writes land in the
 * file everyone sees. */
static int handle_lock(struct fs *fs, struct handle *h, const char *rel)
{
    if (h->lk && strcmp(h->lk->path, rel) == 0)
        return 0;
    /* Without the lock, or under another name, others may have changed it. */
    pthread_mutex_lock(&h->hmu);
    hash_stop(h);
    pthread_mutex_unlock(&h->hmu);
    if (h->lk) {
        struct held old = {.e = h->lk};
        h->lk = NULL;
        unlock_now(fs, &old);
    }
    struct held n;
    int rc = lock_path(fs, rel, &n);
    if (rc < 0)
        return rc;
    h->lk = n.e;
    int bfd = fs->ns->backing_fd;
    struct stat mine, now;
    if (fstat(h->fd, &mine) == 0 && fstatat(bfd, rel, &now, AT_SYMLINK_NOFOLLOW) == 0 &&
        S_ISREG(now.st_mode) && (mine.st_ino != now.st_ino || mine.st_dev != now.st_dev)) {
        int fd = openat(bfd, rel, (h->oflags & ~(O_CREAT | O_EXCL | O_TRUNC)) | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 || dup3(fd, h->fd, O_CLOEXEC) < 0)
            log_warn("reopen %s at its new version: %s", rel, strerror(errno));
        if (fd >= 0)
            close(fd);
    }
    return 0;
}

/* Before changing the file through h: returns with h->rw held shared and the
 * lock held (unless the file was unlinked: path NULL, nothing to replicate). */
static int handle_write_begin(struct fs *fs, struct handle *h, const char *path)
{
    if (!h->writable)
        return -EBADF; /* its release would not give a lock back */
    char rel[PATH_MAX];
    if (path) {
        int rc = path_from_fuse(path, rel, sizeof rel);
        if (rc < 0)
            return rc;
    }
    for (;;) {
        pthread_rwlock_rdlock(&h->rw);
        if (!path || (h->lk && strcmp(h->lk->path, rel) == 0))
            return 0;
        pthread_rwlock_unlock(&h->rw);
        pthread_rwlock_wrlock(&h->rw);
        int rc = handle_lock(fs, h, rel);
        pthread_rwlock_unlock(&h->rw);
        if (rc < 0)
            return rc;
    }
}

/* Announce h's file (h->rw held exclusively, lock held for rel), unlocking
 * in the same command when h is the last holder on this node. It does not
 * wait for the commit: the outbox commits it after everything this node
 * sent before and before anything it sends later, which is the order that
 * matters; announce_done deals with the answer. */
static int handle_announce(struct fs *fs, struct handle *h, const char *rel)
{
    struct held hd = {.e = h->lk};
    announce_begin(fs, hd.e);
    unlock_begin(fs, &hd);
    struct stat st;
    bool sent = false;
    int rc = fstat(h->fd, &st) < 0 ? -errno : 0;
    if (rc == 0 && st.st_nlink > 0) {
        struct fsm_cmd cmd = {.op = FSM_OP_ANNOUNCE, .path = rel, .unlock = hd.last,
                              .fresh = hd.e->fresh};
        if (hd.last && hd.e->fresh)
            fresh_lock_cancel(fs, hd.e);
        uint64_t t0 = nsync_mono_us();
        uint8_t inl[FSM_INLINE_MAX + 1];
        meta_of_file(&st, &cmd.meta);
        if (!(st.st_size > (off_t)FSM_INLINE_MAX && hash_ready(h, &st, cmd.meta.hash))) {
            /* Alone in the cluster, nobody would install the inline bytes;
             * raft would only keep them in its log. */
            pthread_rwlock_rdlock(&fs->ns->fsm_lock);
            bool peers = fsm_member_count(fs->ns->fsm) > 1;
            pthread_rwlock_unlock(&fs->ns->fsm_lock);
            rc = hash_of_fd(h->fd, &st, &cmd.meta, peers ? inl : NULL);
        }
        if (rc == 0) {
            uint64_t t1 = nsync_mono_us();
            rc = announce_async(fs, &cmd, hd.e, hd.last, &st);
            sent = rc == 0;
            log_debug("announce %s: %llu bytes, hash %llu us, queued in %llu us%s%s", rel,
                      (unsigned long long)cmd.meta.size, (unsigned long long)(t1 - t0),
                      (unsigned long long)(nsync_mono_us() - t1), cmd.unlock ? " (unlock)" : "",
                      cmd.fresh ? " (fresh)" : "");
        } else {
            log_error("cannot hash %s to announce it: %s", rel, strerror(-rc));
        }
    }
    announce_end(fs, hd.e);
    if (hd.last) {
        h->lk = NULL;
        if (!sent)
            unlock_end(fs, &hd); /* else the announce's answer releases it */
    }
    return rc;
}

/* flush/release: announce what h wrote. rw held exclusively. */
static int handle_sync(struct fs *fs, struct handle *h, const char *path)
{
    if (!atomic_load(&h->dirty))
        return 0;
    if (!path) {
        atomic_store(&h->dirty, false); /* unlinked: its bytes go nowhere */
        return 0;
    }
    char rel[PATH_MAX];
    int rc = path_from_fuse(path, rel, sizeof rel);
    if (rc == 0)
        rc = handle_lock(fs, h, rel);
    if (rc == 0)
        rc = handle_announce(fs, h, rel);
    if (rc == 0)
        atomic_store(&h->dirty, false); /* on failure release tries once more */
    return rc;
}

static void handle_free(struct handle *h)
{
    if (h->fd >= 0)
        close(h->fd);
    digest_stream_free(h->hs);
    pthread_mutex_destroy(&h->hmu);
    pthread_rwlock_destroy(&h->rw);
    free(h);
}

/* open and create: lock first for writers, so the file is opened at its
 * latest version. */
static int open_common(struct fs *fs, const char *rel, int flags, mode_t mode, bool create,
                       struct fuse_file_info *fi)
{
    bool writable = (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC) || create;
    struct handle *h = calloc(1, sizeof *h);
    if (!h)
        return -ENOMEM;
    h->fd = -1;
    h->writable = writable;
    if (pthread_rwlock_init(&h->rw, NULL) != 0) {
        free(h);
        return -ENOMEM;
    }
    pthread_mutex_init(&h->hmu, NULL);
    uint64_t t_lock = nsync_mono_us();
    int bfd = fs->ns->backing_fd;
    int oflags = (flags & ~(O_CREAT | O_EXCL | O_NOCTTY)) | O_NOFOLLOW | O_CLOEXEC;
    /* Read access too, so that flush can hash through the same fd. */
    if ((oflags & O_ACCMODE) == O_WRONLY)
        oflags = (oflags & ~O_ACCMODE) | O_RDWR;
    bool created = false;
    int fd = -1;
    /* A new file nobody has: create it without waiting for the lock (see
     * fresh_eligible). O_EXCL is then exclusive on this node; across nodes
     * two simultaneous creators both succeed and one ends as a conflict
     * copy. strict_excl makes O_EXCL wait for the lock instead, for
     * applications that coordinate nodes through lock files. */
    struct lock_ent *fe = NULL;
    if (create && !((flags & O_EXCL) && fs->ns->cfg.strict_excl) && fresh_eligible(fs, rel))
        fe = fresh_begin(fs, rel);
    if (fe) {
        fd = openat(bfd, rel, oflags | O_CREAT | O_EXCL, mode & 07777);
        int err = errno;
        fresh_end(fs, fe, fd >= 0);
        if (fd >= 0) {
            created = true;
            h->lk = fe;
        } else if (err != EEXIST || (flags & O_EXCL)) {
            handle_free(h);
            return -err;
        }
    }
    if (writable && !h->lk) {
        struct held hd;
        int rc = lock_path(fs, rel, &hd);
        if (rc < 0) {
            handle_free(h);
            return rc;
        }
        h->lk = hd.e;
    }
    t_lock = nsync_mono_us() - t_lock;
    for (int tries = 0; fd < 0 && tries < 4; tries++) {
        if (create) {
            fd = openat(bfd, rel, oflags | O_CREAT | O_EXCL, mode & 07777);
            if (fd >= 0) {
                created = true;
                break;
            }
            if (errno != EEXIST || (flags & O_EXCL))
                break;
        }
        fd = openat(bfd, rel, oflags);
        if (fd < 0 && errno == EACCES && (oflags & O_ACCMODE) == O_RDWR &&
            (flags & O_ACCMODE) == O_WRONLY) {
            oflags = (oflags & ~O_ACCMODE) | O_WRONLY; /* write-only file: hash via /proc */
            fd = openat(bfd, rel, oflags);
        }
        if (fd < 0 && !(create && errno == ENOENT))
            break; /* ENOENT after EEXIST: it vanished in between, create again */
    }
    if (fd < 0) {
        int rc = -errno;
        if (h->lk) {
            struct held hd = {.e = h->lk};
            h->lk = NULL;
            unlock_now(fs, &hd);
        }
        handle_free(h);
        return rc;
    }
    if (created)
        own_by_caller(fs, fd, "", AT_EMPTY_PATH); /* mode: as for mkdir */
    h->fd = fd;
    h->oflags = oflags;
    atomic_store(&h->dirty, create || (writable && (flags & O_TRUNC)));
    if (h->lk) {
        h->hash_mods = atomic_load(&h->lk->mods);
        h->hash_live = true;
    }
    fi->fh = (uint64_t)(uintptr_t)h;
    /* keep_cache stays 0: each open drops cached pages, so bytes a peer
     * installed since are seen even without an invalidation. */
    fi->keep_cache = 0;
    log_debug("open %s flags %#x%s, lock %llu us", rel, (unsigned)flags,
              fe && created ? " (fresh create)" : create ? " (create)" : "", (unsigned long long)t_lock);
    return 0;
}

/* ---- FUSE operations ---- */

static void *op_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
    /* Of cfg, ll.c reads the two timeouts (and gives every operation a
     * path while the node has one, reports BACKING's inode numbers, and
     * removes an open file for real: what use_ino, nullpath_ok=0 and
     * hard_remove did). Names and attributes are cached for 1 s: a file
     * the fetch worker replaces gets a new node whose name the kernel is
     * told to drop at once (ll_invalidate), and a file it changes in place
     * (its mode, say) loses its cached attributes, so the cache hides a
     * remote change only for the moment until that notice is read. A
     * negative lookup is never cached, so a file created remotely is
     * visible at once. */
    cfg->entry_timeout = 1.0;
    cfg->attr_timeout = 1.0;
    /* O_APPEND is passed through to BACKING, which is only right without
     * the kernel's writeback cache. */
    conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
    /* Pages cached for a file whose mtime changed (in place, through
     * another handle) are dropped. */
    if (conn->capable & FUSE_CAP_AUTO_INVAL_DATA)
        conn->want |= FUSE_CAP_AUTO_INVAL_DATA;
    /* Read replies spliced from the backing file (op_read_buf). */
    if (conn->capable & FUSE_CAP_SPLICE_WRITE)
        conn->want |= FUSE_CAP_SPLICE_WRITE;
    return ll_caller()->ns;
}

static int op_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
    struct nsync *ns = ctx_ns();
    if (fi && fi->fh)
        return fstat(fh_handle(fi)->fd, st) < 0 ? -errno : 0;
    char rel[PATH_MAX];
    int rc = path_from_fuse(path, rel, sizeof rel);
    if (rc < 0)
        return rc;
    return fstatat(ns->backing_fd, rel, st, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
}

static int op_readlink(const char *path, char *buf, size_t size)
{
    struct nsync *ns = ctx_ns();
    char rel[PATH_MAX];
    int rc = path_from_fuse(path, rel, sizeof rel);
    if (rc < 0)
        return rc;
    if (size == 0)
        return -EINVAL;
    ssize_t n = readlinkat(ns->backing_fd, rel, buf, size - 1);
    if (n < 0)
        return -errno;
    buf[n] = '\0';
    return 0;
}

/* Only regular files: the catalog has no kind for fifos, sockets or device
 * nodes, and a node that exists on one machine only would break the
 * promise that every node shows the same tree. */
static int op_mknod(const char *path, mode_t mode, dev_t rdev)
{
    struct nsync *ns = ctx_ns();
    char rel[PATH_MAX];
    int rc = path_from_fuse(path, rel, sizeof rel);
    if (rc < 0)
        return rc;
    if (!S_ISREG(mode))
        return -EPERM;
    log_debug("mknod %s", rel);
    return mutate(ns->fs, rel, do_mknod_reg, &mode, AFTER_STATE);
}

static int op_mkdir(const char *path, mode_t mode)
{
    struct nsync *ns = ctx_ns();
    char rel[PATH_MAX];
    int rc = path_from_fuse(path, rel, sizeof rel);
    if (rc < 0)
        return rc;
    log_debug("mkdir %s", rel);
    return mutate(ns->fs, rel, do_mkdir, &mode, AFTER_STATE);
}

static int op_unlink(const char *path)
{
    struct nsync *ns = ctx_ns();
    char rel[PATH_MAX];
    int rc = path_from_fuse(path, rel, sizeof rel);
    if (rc < 0)
        return rc;
    log_debug("unlink %s", rel);
    return mutate(ns->fs, rel, do_unlink, NULL, AFTER_TOMBSTONE);
}

static int op_rmdir(const char *path)
{
    struct nsync *ns = ctx_ns();
    char rel[PATH_MAX];
    int rc = path_from_fuse(path, rel, sizeof rel);
    if (rc < 0)
        return rc;
    log_debug("rmdir %s", rel);
    return mutate(ns->fs, rel, do_rmdir, NULL, AFTER_TOMBSTONE);
}

static int op_symlink(const char *target, const char *path)
{
    struct nsync *ns = ctx_ns();
    char rel[PATH_MAX];
    int rc = path_from_fuse(path, rel, sizeof rel);
    if (rc < 0)
        return rc;
    log_debug("symlink %s -> %s", rel, target);
    return mutate(ns->fs, rel, do_symlink, (void *)target, AFTER_STATE);
}

/* The catalog never saw the source (it predates the cluster): describe the
 * result from scratch instead, the new path as it is and the old one gone. */
static int rename_fallback(struct fs *fs, const char *from, const char *to, struct held *hf,
                           struct held *ht)
{
    struct fsm_cmd cmd = {.op = FSM_OP_ANNOUNCE, .path = to};
    char target[PATH_MAX];
    struct stat st;
    int rc = meta_of_path(fs, to, &cmd.meta, target, sizeof target, &st);
    if (rc == 0) {
        struct held *cover[] = {ht};
        rc = announce(fs, &cmd, cover, 1);
    } else if (rc == -ENOTSUP) {
        rc = 0;
    } else {
        log_error("cannot read back %s to announce it: %s", to, strerror(-rc));
    }
    if (rc < 0)
        return rc;
    struct fsm_cmd gone = {.op = FSM_OP_ANNOUNCE, .path = from, .meta.kind = FSM_TOMBSTONE};
    struct held *cover[] = {hf};
    return announce(fs, &gone, cover, 1);
}

static int op_rename(const char *from_path, const char *to_path, unsigned int flags)
{
    struct nsync *ns = ctx_ns();
    struct fs *fs = ns->fs;
    if (flags & ~(unsigned)RENAME_NOREPLACE)
        return -EINVAL; /* RENAME_EXCHANGE, RENAME_WHITEOUT: not replicable as one RENAME */
    char from[PATH_MAX], to[PATH_MAX];
    int rc = path_from_fuse(from_path, from, sizeof from);
    if (rc == 0)
        rc = path_from_fuse(to_path, to, sizeof to);
    if (rc < 0)
        return rc;
    if (is_root(from) || is_root(to))
        return -EBUSY;
    if (strcmp(from, to) == 0)
        return 0;
    log_debug("rename %s -> %s", from, to);
    /* Every node locks the two paths in the same (lexicographic) order, so
     * two renames cannot each hold one lock and wait for the other. */
    struct held hf, ht;
    bool from_first = strcmp(from, to) < 0;
    struct held *first = from_first ? &hf : &ht, *second = from_first ? &ht : &hf;
    rc = lock_path(fs, from_first ? from : to, first);
    if (rc < 0)
        return rc;
    rc = lock_path(fs, from_first ? to : from, second);
    if (rc < 0) {
        unlock_now(fs, first);
        return rc;
    }
    /* In the lock order too: nobody takes a second announce slot while
     * waiting for one. */
    announce_begin(fs, first->e);
    announce_begin(fs, second->e);
    int bfd = ns->backing_fd;
    rc = (flags ? renameat2(bfd, from, bfd, to, flags) : renameat(bfd, from, bfd, to)) < 0 ? -errno : 0;
    unlock_begin(fs, &hf);
    unlock_begin(fs, &ht);
    if (rc == 0) {
        struct fsm_cmd cmd = {.op = FSM_OP_RENAME, .path = from, .path2 = to};
        struct held *cover[] = {&hf, &ht};
        rc = announce(fs, &cmd, cover, 2);
        if (rc == -ENOENT)
            rc = rename_fallback(fs, from, to, &hf, &ht);
    }
    announce_end(fs, second->e);
    announce_end(fs, first->e);
    unlock_end(fs, &hf);
    unlock_end(fs, &ht);
    return rc;
}

/* Hard links: the catalog tracks paths, not inodes, so a second name would
 * arrive on the other nodes as an independent copy and the two names would
 * drift apart there. Refused instead of silently diverging. */
static int op_link(const char *from, const char *to)
{
    return -EPERM;
}

static int op_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    struct nsync *ns = ctx_ns();
    if (!path) /* open but unlinked: nothing to replicate */
        return !fi ? -ESTALE : fchmod(fh_handle(fi)->fd, mode) < 0 ? -errno : 0;
    char rel[PATH_MAX];
    int rc = path_from_fuse(path, rel, sizeof rel);
    if (rc < 0)
        return rc;
    log_debug("chmod %s %o", rel, (unsigned)mode);
    return mutate(ns->fs, rel, do_chmod, &mode, AFTER_STATE);
}

static int op_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi)
{
    struct nsync *ns = ctx_ns();
    if (!path)
        return !fi ? -ESTALE : fchown(fh_handle(fi)->fd, uid, gid) < 0 ? -errno : 0;
    char rel[PATH_MAX];
    int rc = path_from_fuse(path, rel, sizeof rel);
    if (rc < 0)
        return rc;
    struct owner o = {uid, gid};
    log_debug("chown %s %d:%d", rel, (int)uid, (int)gid);
    return mutate(ns->fs, rel, do_chown, &o, AFTER_STATE);
}

static int op_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi)
{
    struct nsync *ns = ctx_ns();
    if (!path)
        return !fi ? -ESTALE : futimens(fh_handle(fi)->fd, tv) < 0 ? -errno : 0;
    char rel[PATH_MAX];
    int rc = path_from_fuse(path, rel, sizeof rel);
    if (rc < 0)
        return rc;
    log_debug("utimens %s", rel);
    return mutate(ns->fs, rel, do_utimens, (void *)tv, AFTER_STATE);
}

static int op_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
    struct nsync *ns = ctx_ns();
    struct fs *fs = ns->fs;
    if (fi && fi->fh) {
        /* Through a writer's handle: it is announced when that closes. */
        struct handle *h = fh_handle(fi);
        int rc = handle_write_begin(fs, h, path);
        if (rc < 0)
            return rc;
        rc = ftruncate(h->fd, size) < 0 ? -errno : 0;
        if (rc == 0)
            atomic_store(&h->dirty, true);
        if (path)
            hash_note(h, NULL, 0, size);
        pthread_rwlock_unlock(&h->rw);
        return rc;
    }
    char rel[PATH_MAX];
    int rc = path_from_fuse(path, rel, sizeof rel);
    if (rc < 0)
        return rc;
    log_debug("truncate %s %lld", rel, (long long)size);
    return mutate(fs, rel, do_truncate, &size, AFTER_STATE);
}

static int op_open(const char *path, struct fuse_file_info *fi)
{
    struct nsync *ns = ctx_ns();
    char rel[PATH_MAX];
    int rc = path_from_fuse(path, rel, sizeof rel);
    if (rc < 0)
        return rc;
    return open_common(ns->fs, rel, fi->flags, 0, false, fi);
}

static int op_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    struct nsync *ns = ctx_ns();
    char rel[PATH_MAX];
    int rc = path_from_fuse(path, rel, sizeof rel);
    if (rc < 0)
        return rc;
    if (is_root(rel))
        return -EISDIR;
    return open_common(ns->fs, rel, fi->flags, mode, true, fi);
}

/* A read hands libfuse the backing fd and offset rather than bytes: with
 * splice, the pages go from BACKING's page cache to /dev/fuse without being
 * copied through this process. libfuse frees *bufp. */
static int op_read_buf(const char *path, struct fuse_bufvec **bufp, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    struct fuse_bufvec *src = malloc(sizeof *src);
    if (!src)
        return -ENOMEM;
    *src = FUSE_BUFVEC_INIT(size);
    src->buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
    src->buf[0].fd = fh_handle(fi)->fd;
    src->buf[0].pos = off;
    *bufp = src;
    return 0;
}

static int op_write(const char *path, const char *buf, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    struct nsync *ns = ctx_ns();
    struct handle *h = fh_handle(fi);
    int rc = handle_write_begin(ns->fs, h, path);
    if (rc < 0)
        return rc;
    /* Dirty before the bytes land: a flush waits for us (rw) and then must
     * see the flag. */
    atomic_store(&h->dirty, true);
    ssize_t n = pwrite(h->fd, buf, size, off);
    rc = n < 0 ? -errno : (int)n;
    if (path)
        hash_note(h, buf, n > 0 ? (size_t)n : 0, off);
    pthread_rwlock_unlock(&h->rw);
    return rc;
}

static int op_statfs(const char *path, struct statvfs *sv)
{
    struct nsync *ns = ctx_ns();
    return fstatvfs(ns->backing_fd, sv) < 0 ? -errno : 0;
}

/* Every close(): the file is complete in BACKING and its announce is queued
 * in this node's outbox, in order with every other change of this node; the
 * lock goes with the announce. close() does not wait for the commit (a
 * round trip and a log write); the rare refusal is dealt with afterwards
 * (announce_done). */
static int op_flush(const char *path, struct fuse_file_info *fi)
{
    struct nsync *ns = ctx_ns();
    struct handle *h = fh_handle(fi);
    if (!h->writable)
        return 0;
    pthread_rwlock_wrlock(&h->rw);
    int rc = handle_sync(ns->fs, h, path);
    pthread_rwlock_unlock(&h->rw);
    return rc;
}

static int op_release(const char *path, struct fuse_file_info *fi)
{
    struct nsync *ns = ctx_ns();
    struct fs *fs = ns->fs;
    struct handle *h = fh_handle(fi);
    if (h->writable) {
        pthread_rwlock_wrlock(&h->rw);
        /* Writes after the last flush (through an mmap, or a failed flush):
         * announce them now; nobody waits for the result any more. */
        int rc = handle_sync(fs, h, path);
        if (rc < 0)
            log_error("%s: changes not announced at release: %s", path ? path : "(unlinked)",
                      strerror(-rc));
        if (h->lk) {
            struct held hd = {.e = h->lk};
            h->lk = NULL;
            unlock_now(fs, &hd);
        }
        pthread_rwlock_unlock(&h->rw);
    }
    handle_free(h);
    return 0;
}

static int op_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
    int fd = fh_handle(fi)->fd;
    return (datasync ? fdatasync(fd) : fsync(fd)) < 0 ? -errno : 0;
}

static int op_opendir(const char *path, struct fuse_file_info *fi)
{
    struct nsync *ns = ctx_ns();
    char rel[PATH_MAX];
    int rc = path_from_fuse(path, rel, sizeof rel);
    if (rc < 0)
        return rc;
    struct dir_handle *d = calloc(1, sizeof *d);
    if (!d)
        return -ENOMEM;
    int fd = openat(ns->backing_fd, rel, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 || !(d->dp = fdopendir(fd))) {
        rc = -errno;
        if (fd >= 0)
            close(fd);
        free(d);
        return rc;
    }
    d->root = is_root(rel);
    fi->fh = (uint64_t)(uintptr_t)d;
    return 0;
}

static int op_readdir(const char *path, void *buf, fuse_fill_dir_t filler, off_t offset,
                      struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
    struct dir_handle *d = (struct dir_handle *)(uintptr_t)fi->fh;
    if (offset != d->offset) {
        seekdir(d->dp, offset);
        d->entry = NULL;
        d->offset = offset;
    }
    for (;;) {
        if (!d->entry) {
            errno = 0;
            d->entry = readdir(d->dp);
            if (!d->entry)
                return errno ? -errno : 0;
        }
        off_t next = telldir(d->dp);
        const char *name = d->entry->d_name;
        if (!(d->root && strcmp(name, NSYNC_DATA_DIR) == 0)) {
            struct stat st = {.st_ino = d->entry->d_ino, .st_mode = DTTOIF(d->entry->d_type)};
            if (filler(buf, name, &st, next, 0))
                return 0; /* buffer full: this entry goes first next time */
        }
        d->entry = NULL;
        d->offset = next;
    }
}

static int op_releasedir(const char *path, struct fuse_file_info *fi)
{
    struct dir_handle *d = (struct dir_handle *)(uintptr_t)fi->fh;
    closedir(d->dp);
    free(d);
    return 0;
}

static int op_fsyncdir(const char *path, int datasync, struct fuse_file_info *fi)
{
    struct dir_handle *d = (struct dir_handle *)(uintptr_t)fi->fh;
    return fsync(dirfd(d->dp)) < 0 ? -errno : 0;
}

static int op_access(const char *path, int mask)
{
    struct nsync *ns = ctx_ns();
    char rel[PATH_MAX];
    int rc = path_from_fuse(path, rel, sizeof rel);
    if (rc < 0)
        return rc;
    return faccessat(ns->backing_fd, rel, mask, AT_EACCESS) < 0 ? -errno : 0;
}

static int op_fallocate(const char *path, int mode, off_t off, off_t len,
                        struct fuse_file_info *fi)
{
    struct nsync *ns = ctx_ns();
    struct handle *h = fh_handle(fi);
    int rc = handle_write_begin(ns->fs, h, path);
    if (rc < 0)
        return rc;
    atomic_store(&h->dirty, true);
    rc = fallocate(h->fd, mode, off, len) < 0 ? -errno : 0;
    if (path)
        hash_note(h, NULL, 0, -1); /* ends the running hash */
    pthread_rwlock_unlock(&h->rw);
    return rc;
}

static off_t op_lseek(const char *path, off_t off, int whence, struct fuse_file_info *fi)
{
    off_t r = lseek(fh_handle(fi)->fd, off, whence);
    return r < 0 ? -errno : r;
}

/* ---- module interface ---- */

static const struct fuse_operations fs_ops = {
    .init = op_init,
    .getattr = op_getattr,
    .readlink = op_readlink,
    .mknod = op_mknod,
    .mkdir = op_mkdir,
    .unlink = op_unlink,
    .rmdir = op_rmdir,
    .symlink = op_symlink,
    .rename = op_rename,
    .link = op_link,
    .chmod = op_chmod,
    .chown = op_chown,
    .truncate = op_truncate,
    .open = op_open,
    .read_buf = op_read_buf,
    .write = op_write,
    .statfs = op_statfs,
    .flush = op_flush,
    .release = op_release,
    .fsync = op_fsync,
    .opendir = op_opendir,
    .readdir = op_readdir,
    .releasedir = op_releasedir,
    .fsyncdir = op_fsyncdir,
    .access = op_access,
    .create = op_create,
    .utimens = op_utimens,
    .fallocate = op_fallocate,
    .lseek = op_lseek,
};

const struct fuse_operations *fs_operations(void)
{
    return &fs_ops;
}

int fs_new(struct nsync *ns, struct fs **out)
{
    struct fs *fs = calloc(1, sizeof *fs);
    if (!fs)
        return -ENOMEM;
    if (pthread_mutex_init(&fs->mu, NULL) != 0) {
        free(fs);
        return -ENOMEM;
    }
    if (nsync_cond_init_mono(&fs->cv) != 0) {
        pthread_mutex_destroy(&fs->mu);
        free(fs);
        return -ENOMEM;
    }
    fs->ns = ns;
    fs->journal_fd[0] = fs->journal_fd[1] = -1;
    fs->as_root = geteuid() == 0;
    fs->egid = getegid();
    atomic_init(&fs->ll, NULL);
    if (pthread_cond_init(&fs->fix_cv, NULL) != 0) {
        pthread_cond_destroy(&fs->cv);
        pthread_mutex_destroy(&fs->mu);
        free(fs);
        return -ENOMEM;
    }
    *out = fs;
    return 0;
}

/* Journal file g's paths, deduplicated, into fs->replay. */
static void journal_load(struct fs *fs, unsigned g)
{
    struct stat st;
    if (fs->journal_fd[g] < 0 || fstat(fs->journal_fd[g], &st) < 0 || st.st_size == 0)
        return;
    if ((uint64_t)st.st_size > FS_JOURNAL_MAX) {
        log_warn("journal .nsyncfs/%s%s is %lld bytes: ignored", FS_JOURNAL, g ? "-1" : "",
                 (long long)st.st_size);
        return;
    }
    char *buf = malloc((size_t)st.st_size + 1);
    ssize_t n = buf ? pread(fs->journal_fd[g], buf, (size_t)st.st_size, 0) : -1;
    if (n <= 0) {
        free(buf);
        return;
    }
    buf[n] = '\0';
    for (char *p = buf; p < buf + n; p += strlen(p) + 1) {
        if (path_check(p) < 0 || path_is_internal(p))
            continue;
        bool dup = false;
        for (size_t i = 0; i < fs->n_replay && !dup; i++)
            dup = strcmp(fs->replay[i], p) == 0;
        char **grown = dup ? NULL : realloc(fs->replay, (fs->n_replay + 1) * sizeof *grown);
        if (grown) {
            fs->replay = grown;
            if ((fs->replay[fs->n_replay] = strdup(p)) != NULL)
                fs->n_replay++;
        }
    }
    free(buf);
}

/* Has the local catalog caught up with what the leader committed? */
static bool replay_ready(struct fs *fs)
{
    struct cluster_status cs;
    cluster_get_status(fs->ns->cluster, &cs);
    return cs.leader_id != 0 && cs.last_applied >= cs.commit_index && cs.commit_index > 0;
}

static int do_nothing(struct fs *fs, const char *rel, void *arg);

/* One journaled path after a crash: the cluster has our version (nothing to
 * do), or another node's newer one (ours becomes a conflict copy), or an
 * older one of ours (announce ours now). */
static void replay_one(struct fs *fs, const char *rel)
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
               memcmp(e->hash, m.hash, FSM_HASH_LEN) == 0;
    else
        same = e && e->kind == m.kind && e->mode == m.mode &&
               (m.kind != FSM_SYMLINK || (e->target && strcmp(e->target, target) == 0));
    bool theirs = e && !same && !fsm_node_has(ns->fsm, rel, ns->self_id);
    pthread_rwlock_unlock(&ns->fsm_lock);
    if (same)
        return;
    if (m.kind == FSM_TOMBSTONE) {
        /* Someone changed it since: their version comes back, as when a
         * delete loses to a later write. */
        if (!theirs && (rc = mutate(fs, rel, do_nothing, NULL, AFTER_TOMBSTONE)) < 0)
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

static void *replayer_main(void *arg)
{
    struct fs *fs = arg;
    uint64_t seen = 0;
    for (;;) {
        pthread_mutex_lock(&fs->mu);
        bool stop = fs->fixer_stop;
        pthread_mutex_unlock(&fs->mu);
        if (stop)
            return NULL;
        if (replay_ready(fs))
            break;
        cluster_wait_change(fs->ns->cluster, &seen, 100);
    }
    for (size_t i = 0; i < fs->n_replay; i++) {
        replay_one(fs, fs->replay[i]);
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

int fs_start(struct fs *fs)
{
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
    int rc = pthread_create(&fs->fixer, NULL, fixer_main, fs);
    if (rc != 0) {
        log_error("cannot start the conflict fixer thread: %s", strerror(rc));
        return -rc;
    }
    fs->fixer_started = true;
    pthread_setname_np(fs->fixer, "ns-fixer");
    if (fs->n_replay) {
        log_info("%zu changes closed just before the last stop may not have reached the cluster: "
                 "checking them", fs->n_replay);
        rc = pthread_create(&fs->replayer, NULL, replayer_main, fs);
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
    fs->fixer_started = fs->replayer_started = false;
    pthread_mutex_unlock(&fs->mu);
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
    ll_invalidate(atomic_load(&fs->ll), rel);
}

bool fs_path_busy(struct fs *fs, const char *rel)
{
    pthread_mutex_lock(&fs->mu);
    struct lock_ent *e = lock_find(fs, rel);
    /* Not while the lock is being acquired: the acquirer may be waiting for
     * exactly the install the fetch worker is about to make. */
    bool busy = e && (e->held || e->refs > 0 || e->inflight > 0);
    for (size_t i = 0; !busy && i < fs->n_replay; i++)
        busy = fs->replay[i] && strcmp(fs->replay[i], rel) == 0;
    pthread_mutex_unlock(&fs->mu);
    return busy;
}

static int do_nothing(struct fs *fs, const char *rel, void *arg)
{
    return 0;
}

int fs_announce_local(struct fs *fs, const char *rel)
{
    return mutate(fs, rel, do_nothing, NULL, AFTER_STATE);
}

int fs_keep_conflict_copy(const struct nsync *ns, const char *rel, char *out, size_t outsz)
{
    char stamp[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
    int len = snprintf(out, outsz, "%s.nsync-conflict-%08" PRIx32 "-%s", rel,
                       (uint32_t)(ns->self_id >> 32), stamp);
    if (len < 0 || (size_t)len >= outsz || path_check(out) < 0)
        return -ENAMETOOLONG;
    /* A second name for the bytes, not a rename: rel must not vanish under
     * the kernel's cached name (an open of it would fail with ENOENT until
     * the winner arrives); the winner's install replaces rel atomically and
     * the conflict copy keeps this node's inode. */
    if (linkat(ns->backing_fd, rel, ns->backing_fd, out, 0) < 0 &&
        renameat(ns->backing_fd, rel, ns->backing_fd, out) < 0)
        return -errno;
    return 0;
}
