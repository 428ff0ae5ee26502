/* The FUSE adapter: libfuse's low-level API in front of the path-based
 * operations of fs.c. It keeps its own node table (nodes.c) so that a path
 * whose file the fetch worker replaced gets a new kernel inode: a reader that
 * has the old file open and one that opens the new file never share a cached
 * size or page cache (the high-level API gives a path one inode forever). */
#ifndef NSYNC_LL_H
#define NSYNC_LL_H

#include <stdbool.h>
#include <sys/types.h>

struct nsync;
struct ll;
struct fuse_args;
struct fuse_operations;
struct fuse_session;

/* Who made the FUSE request this thread is serving. */
struct ll_caller {
    struct nsync *ns;
    uid_t uid;
    gid_t gid;
    pid_t pid;
};

/* The session for ops (not owned; calls ops->init with ns as the
 * private data), FUSE and mount options from args (-o ...). 0, -EINVAL
 * (an option FUSE does not know) or -ENOMEM. Main thread. */
int ll_new(struct nsync *ns, struct fuse_args *args, const struct fuse_operations *ops,
           struct ll **out);
/* 0 or -EIO (the reason is logged by libfuse). Main thread. */
int ll_mount(struct ll *ll, const char *mountpoint);
struct fuse_session *ll_session(struct ll *ll);
/* Serve requests with up to max_threads threads until unmounted or a
 * signal (see fuse_set_signal_handlers); returns what fuse_session_loop_mt
 * returned (0, or the number of the signal that ended it). Main thread. */
int ll_loop(struct ll *ll, unsigned max_threads);
/* After ll_loop returned. Main thread. */
void ll_unmount(struct ll *ll);
void ll_free(struct ll *ll);

/* Was the request this thread serves interrupted (a signal to the caller,
 * e.g. of a blocked F_SETLKW)? False outside a request. */
bool ll_interrupted(void);

/* The caller of the request this thread serves; ns is NULL outside one. */
const struct ll_caller *ll_caller(void);

/* BACKING changed at rel (a catalog path) behind the kernel's back: if the
 * kernel holds a node there for another object (or for a file now gone),
 * that node loses the name and the kernel is told to drop the name (later,
 * from the adapter's own thread: it may have to wait for the directory);
 * otherwise the node's cached attributes and pages are dropped. Any thread
 * but a FUSE handler's. */
void ll_invalidate(struct ll *ll, const char *rel);

#endif
