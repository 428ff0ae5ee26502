/* Extended attributes through the mount: read and listed straight from
 * BACKING, set and removed as metadata changes (fs_mutate), whose announce
 * carries the file's whole set (meta_xattrs_fd) in its version. Files and
 * directories only: the catalog keeps no set for other kinds. */
#include <assert.h>

#include <sys/xattr.h>

#include "common/xattrs.h"
#include "fs/fs_int.h"

struct xattr_change {
    const char *name;
    const void *value; /* NULL: remove */
    size_t size;
    int flags;         /* XATTR_CREATE, XATTR_REPLACE */
};

/* rel opened to read or change its attributes: a file or directory, never
 * a fifo (whose open would wait) or a symlink. -ENOTSUP for other kinds. */
static int xattr_open(struct fs *fs, const char *rel)
{
    int bfd = fs->ns->backing_fd;
    struct stat st;
    if (fstatat(bfd, rel, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return -errno;
    if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode))
        return -ENOTSUP;
    int fd = fs_is_root(rel) ? openat(bfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
                             : path_open_beneath(bfd, rel, O_RDONLY | O_NONBLOCK);
    return fd < 0 ? -errno : fd;
}

/* The set with the change would still fit XATTRS_MAX (cur: fd's set now). */
static int xattr_fits(int fd, const struct xattr_change *c)
{
    uint8_t *cur = malloc(XATTRS_MAX);
    if (!cur)
        return -ENOMEM;
    int n = xattrs_read_fd(fd, cur);
    size_t len = n > 0 ? (size_t)n : 0;
    size_t off = 0, old = 0;
    const char *name;
    const void *v;
    uint32_t vlen;
    while (n >= 0 && xattrs_next(cur, len, &off, &name, &v, &vlen))
        if (strcmp(name, c->name) == 0)
            old = xattrs_entry_size(strlen(name), vlen);
    free(cur);
    if (n < 0 && n != -E2BIG)
        return n;
    size_t want = xattrs_entry_size(strlen(c->name), c->size);
    if (n == -E2BIG || want > XATTRS_MAX || len - old > XATTRS_MAX - want)
        return -E2BIG;
    return 0;
}

/* fs_mutate's local step: the change in BACKING, refused with E2BIG when
 * the set would outgrow what one announce may carry. */
static int xattr_mutate(struct fs *fs, const char *rel, void *arg)
{
    const struct xattr_change *c = arg;
    int fd = xattr_open(fs, rel);
    if (fd < 0)
        return fd;
    int rc = 0;
    if (c->value) {
        rc = xattr_fits(fd, c);
        if (rc == 0 && fsetxattr(fd, c->name, c->value, c->size, c->flags) < 0)
            rc = -errno;
    } else if (fremovexattr(fd, c->name) < 0) {
        rc = -errno;
    }
    close(fd);
    return rc;
}

/* Names outside the replicated namespaces would differ between nodes. */
static int xattr_change(const char *path, struct xattr_change *c)
{
    struct nsync *ns = fs_ctx_ns();
    char rel[PATH_MAX];
    int rc = path_from_fuse(path, rel, sizeof rel);
    if (rc < 0)
        return rc;
    if (!xattrs_name_replicated(c->name))
        return -ENOTSUP;
    log_debug("%sxattr %s %s (%zu bytes)", c->value ? "set" : "remove", rel, c->name, c->size);
    return fs_mutate(ns->fs, rel, xattr_mutate, c, AFTER_META);
}

int op_setxattr(const char *path, const char *name, const char *value, size_t size, int flags)
{
    struct xattr_change c = {name, value ? value : "", size, flags};
    return xattr_change(path, &c);
}

int op_removexattr(const char *path, const char *name)
{
    struct xattr_change c = {name, NULL, 0, 0};
    return xattr_change(path, &c);
}

/* The FUSE path opened for reading its attributes (xattr_open). */
static int xattr_open_fuse(const char *path)
{
    char rel[PATH_MAX];
    int rc = path_from_fuse(path, rel, sizeof rel);
    return rc < 0 ? rc : xattr_open(fs_ctx_ns()->fs, rel);
}

int op_getxattr(const char *path, const char *name, char *value, size_t size)
{
    int fd = xattr_open_fuse(path);
    if (fd < 0)
        return fd == -ENOTSUP ? -ENODATA : fd;
    ssize_t n = fgetxattr(fd, name, size ? value : NULL, size);
    int rc = n < 0 ? -errno : (int)n;
    close(fd);
    return rc;
}

/* Only the names that replicate: what every node shows alike. */
int op_listxattr(const char *path, char *list, size_t size)
{
    int fd = xattr_open_fuse(path);
    if (fd < 0)
        return fd == -ENOTSUP ? 0 : fd;
    int rc;
    char *all = NULL;
    ssize_t n = flistxattr(fd, NULL, 0);
    if (n > 0 && (all = malloc((size_t)n)) == NULL)
        n = -1, errno = ENOMEM;
    if (n > 0)
        n = flistxattr(fd, all, (size_t)n);
    rc = n < 0 ? -errno : 0;
    close(fd);
    size_t out = 0;
    for (char *p = all; rc == 0 && n > 0 && p < all + n; p += strlen(p) + 1) {
        size_t len = strlen(p) + 1;
        if (!xattrs_name_replicated(p))
            continue;
        if (size && out + len > size) {
            rc = -ERANGE;
            break;
        }
        if (size)
            memcpy(list + out, p, len);
        out += len;
    }
    free(all);
    return rc < 0 ? rc : (int)out;
}
