/* Private to src/fs/: the structures the FUSE side's files share, and the
 * functions one of them offers the others (grouped by the file that defines
 * them). Nothing outside src/fs/ includes this. */
#ifndef NSYNC_FS_INT_H
#define NSYNC_FS_INT_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <inttypes.h>
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

#include "fs/fs.h"

#define LOCK_BUCKETS 256
#define FS_JOURNAL "unsent"
#define FS_JOURNAL_ROTATE (1u << 20) /* switch files past this size */
#define FS_JOURNAL_MAX (64u << 20) /* larger is not ours: ignored */
#define BACKOFF_FIRST_MS 25
#define BACKOFF_MAX_MS 500
#define FOLLOW_MS 20 /* a writer idle this long lets another node have the path */

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
                                * handle, truncate): see meta_hash_note */
    atomic_uint ann_failed;    /* announces of it refused or given up: fsync and
                                * -o sync compare before and after */
    bool cached;               /* held with no local user: kept for the next one
                                * (tokens.c); counted in fs->n_cached */
    uint64_t idle_ms;          /* cached since (monotonic ms) */
    bool lost;                 /* an announce under it was refused (another node's
                                * version won): ask the cluster again before the
                                * next change, even with announces still queued */
    /* The hash of the file as last announced under this lock (meta_hash_keep):
     * a later chmod, chown or utimens announces it again without reading
     * the file, as long as nothing wrote since (mods), it is the same inode
     * and size, and the lock was not taken anew (attempts). Guarded by the
     * announcing flag. */
    bool hash_kept;
    uint8_t kept_hash[DIGEST_LEN];
    uint64_t kept_mods, kept_size;
    dev_t kept_dev;
    ino_t kept_ino;
    unsigned kept_attempts;
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
    /* A RENAME (announce_rename_async): e is the target's entry, e2 the
     * source's (kept alive the same way), from the source path (owned). */
    struct lock_ent *e2;
    unsigned jgen2;
    char *from;
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
    pthread_t tokens;          /* ns-tokens: hands cached locks over (tokens.c) */
    bool tokens_started;
    atomic_size_t n_cached;    /* entries with cached set */
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
    /* Every open file handle, so that those the kernel never released (the
     * loop ended with files open) are freed with the rest. */
    pthread_mutex_t handles_mu;
    struct handle *handles;
    /* The highest catalog version among this node's answered commands:
     * fsync waits until the local catalog has applied that far. */
    _Atomic uint64_t committed_version;
    /* Record locks of this node's processes (rlock.c). */
    pthread_mutex_t rl_mu;
    pthread_cond_t rl_cv;      /* a local lock went, or a change of the node's ranges ended */
    struct rl_file *rl_files;
    atomic_bool rl_used;       /* some process here took one: close() must look */
    bool as_root;              /* new nodes get the caller's owner */
    gid_t egid;                /* our group: a new node's group unless the parent is set-gid */
};

/* An open regular file. */
struct handle {
    struct handle *prev, *next; /* fs->handles, under fs->handles_mu */
    struct fs *fs;
    int fd;
    int oflags;                /* flags the backing fd was opened with */
    bool writable;
    /* Writes hold it shared; flush/release and lock changes hold it
     * exclusively, so an announce never misses a write in flight. */
    pthread_rwlock_t rw;
    struct lock_ent *lk;       /* this handle's ref on the path's lock, or NULL */
    atomic_bool dirty;         /* wrote since the last announce */
    atomic_bool jrec;          /* its first change since then is in the journal */
    unsigned jgen;             /* ... in that journal file (handle_mark_dirty) */
    /* The hash of [0, hashed), fed by this handle's writes while they come
     * front to back and nothing else changes the file (hash_mods: lk->mods
     * as this handle's last change left it), so that the announce of a big
     * file written in one go need not read it all again. hash_live goes
     * false for good at the first write out of order. hmu guards these. */
    char *rel;                 /* the path it was opened at (owned): the kernel
                                * forgets it when an install replaces the file */
    atomic_bool replaced;      /* an install replaced its file (fs_invalidate): its
                                * writes and locks follow the path, not the orphan */
    _Atomic uint64_t last_write_ms; /* following writes: idle handles let go */
    atomic_bool locker;        /* a record lock was asked for through it: installs
                                * go into its file in place (fs_path_open_shared) */
    pthread_mutex_t hmu;
    struct digest_stream *hs;
    uint64_t hashed, hash_mods;
    bool hash_live;
};

struct rl_file;

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

static inline struct nsync *fs_ctx_ns(void)
{
    return ll_caller()->ns;
}

static inline unsigned fs_lock_timeout(const struct nsync *ns)
{
    return ns->cfg.lock_timeout_ms ? ns->cfg.lock_timeout_ms : 30000;
}

static inline unsigned fs_submit_timeout(const struct nsync *ns)
{
    return ns->cfg.submit_timeout_ms ? ns->cfg.submit_timeout_ms : 8000;
}

static inline struct handle *fs_fh_handle(const struct fuse_file_info *fi)
{
    return (struct handle *)(uintptr_t)fi->fh;
}

static inline bool fs_is_root(const char *rel)
{
    return rel[0] == '.' && rel[1] == '\0';
}

typedef int (*local_fn)(struct fs *fs, const char *rel, void *arg);

/* What a change did, which decides how it is announced. */
enum after {
    AFTER_META,      /* mode, owner or times: the bytes are as they were */
    AFTER_CONTENT,   /* the bytes may differ (a truncate, a re-announce) */
    AFTER_CREATE,    /* a new directory, symlink, fifo, socket, device or empty
                      * file: made without waiting for the lock when nobody
                      * has the path (fresh.c) */
    AFTER_TOMBSTONE, /* the path is gone */
};

struct owner {
    uid_t uid;
    gid_t gid;
};

/* ---- lock.c ---- */
int fs_submit(struct fs *fs, struct fsm_cmd *cmd, struct cluster_reply *r);
int fs_gate(struct fs *fs);
size_t lock_bucket(const char *path);
struct lock_ent *lock_find(struct fs *fs, const char *path);
void lock_maybe_free(struct fs *fs, struct lock_ent *e);
int lock_path(struct fs *fs, const char *rel, struct held *out);
void lock_release_begin(struct fs *fs, struct held *h);
void lock_holder_drop(struct fs *fs, struct lock_ent *e, bool last);
void lock_release_end(struct fs *fs, struct held *h);
void lock_release_now(struct fs *fs, struct held *h);

/* ---- tokens.c ---- */
bool tokens_keep(struct fs *fs, const char *path);
void tokens_enter(struct fs *fs, struct lock_ent *e);
void tokens_leave(struct fs *fs, struct lock_ent *e);
bool tokens_still_ours(struct fs *fs, const struct lock_ent *e);
void *tokens_main(void *arg);

/* ---- fresh.c ---- */
bool fresh_eligible(struct fs *fs, const char *rel);
struct lock_ent *fresh_begin(struct fs *fs, const char *rel);
void fresh_end(struct fs *fs, struct lock_ent *e, bool created, bool lock);
void fresh_lock_cancel(struct fs *fs, struct lock_ent *e);

/* ---- announce.c ---- */
void announce_begin(struct fs *fs, struct lock_ent *e);
void announce_end(struct fs *fs, struct lock_ent *e);
int announce_sync(struct fs *fs, struct fsm_cmd *cmd, struct held **cover, int n);
int announce_async(struct fs *fs, struct fsm_cmd *cmd, struct lock_ent *e, bool last,
                   const struct stat *st);
int announce_rename_async(struct fs *fs, struct fsm_cmd *cmd, struct lock_ent *ef,
                          struct lock_ent *et);
void *announce_fixer_main(void *arg);

/* ---- journal.c ---- */
void journal_answered(struct fs *fs, unsigned g);
unsigned journal_add(struct fs *fs, const char *path);
void journal_write(struct fs *fs, unsigned g, const char *path);
void journal_load(struct fs *fs, unsigned g);
void *journal_replayer_main(void *arg);

/* ---- meta.c ---- */
void meta_of_file(const struct stat *st, struct fsm_meta *m);
/* The catalog kind of a stat mode (0: none, e.g. a whiteout-less oddity). */
uint8_t meta_kind_of_mode(mode_t mode);
/* The mtime of rel's parent directory in BACKING (0 for the top one, which
 * the catalog does not hold), for fsm_cmd.parents: a change that makes or
 * removes a name stamps its directory, and replicas copy the stamp. */
int meta_parent_mtime(struct fs *fs, const char *rel, int64_t *out);
int meta_hash_fd(int fd, const struct stat *st, struct fsm_meta *m, uint8_t *inl);
/* fd's extended attributes into m (a file's or directory's at rel), valid
 * until this thread's next call; a set past XATTRS_MAX is left out (logged). */
int meta_xattrs_fd(int fd, const char *rel, struct fsm_meta *m);
int meta_of_path(struct fs *fs, const char *rel, struct fsm_meta *m, char *target, size_t tsz,
                 struct stat *st);
/* meta_of_path for a path whose lock the caller holds (e, with announcing
 * set): a regular file's hash comes from e's kept one when it is still
 * valid, and is kept for the next change otherwise. */
int meta_of_locked(struct fs *fs, struct lock_ent *e, const char *rel, struct fsm_meta *m,
                   char *target, size_t tsz, struct stat *st);
/* Remember m's hash as the one of the file st describes, computed when
 * e->mods was mods (announcing set). */
void meta_hash_keep(struct lock_ent *e, const struct stat *st, const struct fsm_meta *m,
                    uint64_t mods);
void meta_hash_stop(struct handle *h);
void meta_hash_note(struct handle *h, const void *buf, size_t n, off_t off);
bool meta_hash_ready(struct handle *h, const struct stat *st, uint8_t out[DIGEST_LEN]);

/* ---- mutate.c ---- */
int fs_mutate(struct fs *fs, const char *rel, local_fn fn, void *arg, enum after after);
void mutate_own_by_caller(struct fs *fs, int dirfd, const char *rel, int flags);
int mutate_unlink(struct fs *fs, const char *rel, void *arg);
int mutate_rmdir(struct fs *fs, const char *rel, void *arg);
int mutate_mkdir(struct fs *fs, const char *rel, void *arg);
int mutate_mknod_reg(struct fs *fs, const char *rel, void *arg);
/* A fifo, socket or device (arg: struct mknod_args). */
struct mknod_args {
    mode_t mode; /* type and permission bits */
    dev_t rdev;
};
int mutate_mknod_node(struct fs *fs, const char *rel, void *arg);
int mutate_symlink(struct fs *fs, const char *rel, void *arg);
int mutate_chmod(struct fs *fs, const char *rel, void *arg);
int mutate_chown(struct fs *fs, const char *rel, void *arg);
int mutate_utimens(struct fs *fs, const char *rel, void *arg);
int mutate_truncate(struct fs *fs, const char *rel, void *arg);
int mutate_nothing(struct fs *fs, const char *rel, void *arg);

/* ---- xattr.c ---- */
int op_setxattr(const char *path, const char *name, const char *value, size_t size, int flags);
int op_getxattr(const char *path, const char *name, char *value, size_t size);
int op_listxattr(const char *path, char *list, size_t size);
int op_removexattr(const char *path, const char *name);

/* ---- durable.c ---- */
/* A command of this node was applied at version (any thread). */
void durable_note(struct fs *fs, uint64_t version);
/* Everything this node sent so far is committed and applied here: 0,
 * -EROFS (no quorum: known at once), -EIO (not within submit_timeout). */
int durable_committed(struct fs *fs);
/* durable_committed, then rel's current state is on a majority of nodes
 * (fsm_on_majority). Same errors. */
int durable_on_majority(struct fs *fs, const char *rel);

/* ---- handle.c ---- */
int handle_write_begin(struct fs *fs, struct handle *h, const char *path);
void handle_mark_dirty(struct fs *fs, struct handle *h);
int handle_sync(struct fs *fs, struct handle *h, const char *path);
int handle_flush(struct fs *fs, struct handle *h, const char *path);
int handle_fsync(struct fs *fs, struct handle *h, const char *path, int datasync);
void handle_free(struct handle *h);
int handle_open(struct fs *fs, const char *rel, int flags, mode_t mode, bool create,
                struct fuse_file_info *fi);
/* The FUSE path to use for h: path, or h's own when an install replaced its
 * file (the kernel then gives none); NULL for a file unlinked here. */
const char *handle_path(struct handle *h, const char *path, char *buf, size_t size);
/* After a record lock was granted: h reads and writes the path's current
 * version (its fd is moved there if an install replaced the file). True if
 * it moved (the kernel's cached pages of it are stale). h->rw not held. */
bool handle_follow(struct fs *fs, struct handle *h, const char *rel);
/* Announce every handle of rel with unannounced writes (queued, not waited
 * for). Holds no lock of ours on entry. */
void handle_flush_path(struct fs *fs, const char *rel);
/* Following writes: the handles of rel idle for FOLLOW_MS let go of its
 * cluster lock (after announcing), so another node that asks gets it; their
 * next write takes it back. Returns how many still hold it. */
unsigned handle_yield(struct fs *fs, const char *rel);
/* rel was replaced in BACKING by an install: mark its open handles. */
void handle_mark_replaced(struct fs *fs, const char *rel);

/* ---- rlock.c ---- */
/* A POSIX/OFD lock change (ltype F_RDLCK, F_WRLCK, F_UNLCK) or flock of
 * [s, e) by owner through h (may be NULL), with a wait if wait. 0, 1 (taken,
 * and h moved to a newer version of the file: drop the kernel's pages),
 * -EAGAIN, -EINTR, -ENOLCK, -EROFS, -EIO. A FUSE handler's thread. */
int rlock_set(struct fs *fs, struct handle *h, const char *rel, uint64_t owner, uint8_t space,
              short ltype, uint64_t s, uint64_t e, pid_t pid, bool wait);
/* F_GETLK: fl->l_type F_UNLCK, or the first conflicting lock here or on
 * another node (l_pid 0 for another node's). */
int rlock_get(struct fs *fs, const char *rel, uint64_t owner, uint8_t space, struct flock *fl);
/* close() (POSIX: every lock of the process on the file) and the last
 * close of a file (flock, OFD: h's). Cheap while nobody here ever locked. */
void rlock_release_owner(struct fs *fs, const char *rel, uint64_t owner, uint8_t space);
void rlock_release_handle(struct fs *fs, struct handle *h);
/* fs_free: the FUSE loop is over. */
void rlock_free_all(struct fs *fs);

#endif
