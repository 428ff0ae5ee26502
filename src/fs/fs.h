/* The FUSE side: every operation passes through to BACKING (via its dirfd);
 * the ones that change something take the path's cluster lock, make the
 * change, and announce it through the cluster. */
#ifndef NSYNC_FS_H
#define NSYNC_FS_H

#include <stdbool.h>

struct nsync;
struct fs;
struct fuse;
struct fuse_operations;

/* 0 or -ENOMEM. */
int fs_new(struct nsync *ns, struct fs **out);
void fs_free(struct fs *fs);

/* The operations table; fuse_new must be given ns as user_data. */
const struct fuse_operations *fs_operations(void);

/* Once mounted, so that the fetch worker can invalidate cached pages/attrs. */
void fs_set_fuse(struct fs *fs, struct fuse *f);

/* Drop the kernel's cached attributes and pages of rel (a catalog path) and
 * of its parent's entry. Call from the fetch worker only, never from inside a
 * FUSE operation. */
void fs_invalidate(struct fs *fs, const char *rel);

/* True while a handle on this node has rel open for writing (this node holds
 * its cluster lock): the fetch worker must not install over it. Any thread. */
bool fs_path_busy(struct fs *fs, const char *rel);

/* Announce rel as it is in BACKING now (a file, directory or symlink that
 * appeared there while the node was out of the cluster), under its cluster
 * lock. 0 or -errno. Any thread but a FUSE handler's. */
int fs_announce_local(struct fs *fs, const char *rel);

#endif
