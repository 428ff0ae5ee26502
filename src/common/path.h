/* Path checks shared by the FUSE layer, the HTTP server and the FSM decoder.
 * Inside nsyncfs a path is relative to BACKING and normalized: "a/b/c", no
 * leading or trailing '/', no empty, "." or ".." component, no NUL. The root
 * itself is "." (only the FUSE layer uses it). Pure functions, any thread. */
#ifndef NSYNC_PATH_H
#define NSYNC_PATH_H

#include <stdbool.h>
#include <stddef.h>

/* 0 if rel is a valid normalized relative path (not the root), else -EINVAL;
 * -ENAMETOOLONG past PATH_MAX. */
int path_check(const char *rel);

/* True if rel is the data directory ".nsyncfs" or lies below it. */
bool path_is_internal(const char *rel);

/* FUSE hands "/a/b": write "a/b" (or "." for "/") into out. 0, -EINVAL for a
 * path that is not absolute or not normalized, -ENAMETOOLONG if it does not
 * fit, -ENOENT for the data directory (so it is invisible and untouchable). */
int path_from_fuse(const char *fuse_path, char *out, size_t outsz);

/* True if child equals dir or lies below it ("a" covers "a/b", not "ab"). */
bool path_is_under(const char *child, const char *dir);

/* Open rel below dirfd without following a symlink anywhere on the way
 * (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS), so a symlink inside
 * BACKING can never lead outside it. On kernels without openat2 it falls
 * back to openat with O_NOFOLLOW (last component only). O_CLOEXEC is added.
 * Returns the fd, or -1 with errno set. */
int path_open_beneath(int dirfd, const char *rel, int flags);

/* rel's parent directory into out: "" for a top-level name (whose parent,
 * the top directory, the catalog does not hold). 0, or -ENAMETOOLONG. */
int path_parent(const char *rel, char *out, size_t outsz);

/* An open for nsyncfs's own reads (hashing, serving, checking an install):
 * with O_NOATIME, so the file's atime stays what its user set or caused;
 * without it where the kernel refuses it (EPERM: neither the file's owner
 * nor CAP_FOWNER). beneath: through path_open_beneath, else a plain openat
 * (for /proc/self/fd links). fd, or -1 with errno. */
int path_open_noatime(int dirfd, const char *rel, int flags, bool beneath);

#endif
