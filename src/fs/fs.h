/* The FUSE side: every operation passes through to BACKING (via its dirfd);
 * the ones that change something take the path's cluster lock, make the
 * change, and announce it through the cluster. */
#ifndef NSYNC_FS_H
#define NSYNC_FS_H

#include <stdbool.h>
#include <stddef.h>

struct nsync;
struct fs;
struct ll;
struct fuse_operations;

/* 0 or -ENOMEM. */
int fs_new(struct nsync *ns, struct fs **out);
/* Start the conflict fixer thread: after daemonizing (a fork keeps no
 * threads), before the FUSE loop. 0 or -errno. */
int fs_start(struct fs *fs);
/* After the FUSE loop ended and before the cluster stops: wait (at most
 * timeout_ms) until every announce sent without waiting has been answered
 * and every conflict fixed, then stop the fixer. 0 or -ETIMEDOUT. */
int fs_stop(struct fs *fs, unsigned timeout_ms);
/* After fs_stop: every announce of this node was answered and the journal
 * names nothing still to replay, so the catalog knows every change made
 * through the mount. Any thread. */
bool fs_all_answered(struct fs *fs);
void fs_free(struct fs *fs);

/* The path-based operations, served through ll.c (which gives them ns). */
const struct fuse_operations *fs_operations(void);

/* Once mounted, so that the fetch worker can tell the kernel of changes. */
void fs_set_ll(struct fs *fs, struct ll *ll);

/* rel (a catalog path) changed in BACKING behind the kernel's back: a
 * replaced or removed file gets a new kernel inode at its next lookup, a
 * changed one loses its cached attributes and pages (ll_invalidate). Any
 * thread but a FUSE handler's. */
void fs_invalidate(struct fs *fs, const char *rel);

/* True while a handle on this node has rel open for writing (this node holds
 * its cluster lock): the fetch worker must not install over it. Any thread. */
bool fs_path_busy(struct fs *fs, const char *rel);

/* True while a handle on this node has rel open for writing, or has taken
 * record locks on it: a program that shares the file with others (a
 * database, a log), which on a local disk would see their writes in the file
 * it has open, and which may check that its file is still the one at the
 * path (SQLite). Readers that do neither keep whole versions. Any thread. */
bool fs_path_open_shared(struct fs *fs, const char *rel);

/* Announce rel as it is in BACKING now (a file, directory or symlink that
 * appeared there while the node was out of the cluster), under its cluster
 * lock. 0 or -errno. Any thread but a FUSE handler's. */
int fs_announce_local(struct fs *fs, const char *rel);

/* Another node's version of rel won: keep this node's bytes (in BACKING)
 * under "REL.nsync-conflict-NODE-YYYYMMDDTHHMMSSZ", written to out, as a
 * second name (rel stays until the winner's install replaces it; a rename
 * where links are not supported). 0, -ENAMETOOLONG if no valid name fits,
 * or the link/rename's -errno. Any thread. */
int fs_keep_conflict_copy(const struct nsync *ns, const char *rel, char *out, size_t outsz);

#endif
