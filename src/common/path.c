/* Path validation: the single place that decides what a legal path is, so
 * that a hostile HTTP request and a FUSE call are judged alike. */
#include "common/path.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "nsync.h"

int path_check(const char *rel)
{
    if (rel == NULL || rel[0] == '\0' || rel[0] == '/')
        return -EINVAL;
    size_t len = strlen(rel);
    if (len >= PATH_MAX)
        return -ENAMETOOLONG;
    const char *p = rel;
    while (*p) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        if (n == 0)
            return -EINVAL; /* "a//b" or trailing '/' */
        if ((n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
            return -EINVAL;
        if (n > NAME_MAX)
            return -ENAMETOOLONG;
        if (!slash)
            break;
        p = slash + 1;
        if (*p == '\0')
            return -EINVAL;
    }
    return 0;
}

bool path_is_internal(const char *rel)
{
    size_t n = strlen(NSYNC_DATA_DIR);
    return strncmp(rel, NSYNC_DATA_DIR, n) == 0 && (rel[n] == '\0' || rel[n] == '/');
}

int path_from_fuse(const char *fuse_path, char *out, size_t outsz)
{
    if (fuse_path == NULL || fuse_path[0] != '/')
        return -EINVAL;
    const char *rel = fuse_path + 1;
    if (*rel == '\0') {
        if (outsz < 2)
            return -ENAMETOOLONG;
        strcpy(out, ".");
        return 0;
    }
    int rc = path_check(rel);
    if (rc < 0)
        return rc;
    if (path_is_internal(rel))
        return -ENOENT;
    size_t len = strlen(rel);
    if (len + 1 > outsz)
        return -ENAMETOOLONG;
    memcpy(out, rel, len + 1);
    return 0;
}

bool path_is_under(const char *child, const char *dir)
{
    size_t n = strlen(dir);
    return strncmp(child, dir, n) == 0 && (child[n] == '\0' || child[n] == '/');
}

int path_open_beneath(int dirfd, const char *rel, int flags)
{
    struct open_how how = {
        .flags = (uint64_t)(flags | O_NOFOLLOW | O_CLOEXEC),
        .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    };
    long fd = syscall(SYS_openat2, dirfd, rel, &how, sizeof how);
    if (fd < 0 && errno == ENOSYS)
        fd = openat(dirfd, rel, flags | O_NOFOLLOW | O_CLOEXEC);
    return (int)fd;
}

int path_open_noatime(int dirfd, const char *rel, int flags, bool beneath)
{
    for (int noatime = O_NOATIME;; noatime = 0) {
        int fd = beneath ? path_open_beneath(dirfd, rel, flags | noatime)
                         : openat(dirfd, rel, flags | noatime | O_CLOEXEC);
        if (fd >= 0 || errno != EPERM || !noatime)
            return fd;
    }
}

int path_parent(const char *rel, char *out, size_t outsz)
{
    const char *slash = strrchr(rel, '/');
    size_t n = slash ? (size_t)(slash - rel) : 0;
    if (n >= outsz)
        return -ENAMETOOLONG;
    memcpy(out, rel, n);
    out[n] = '\0';
    return 0;
}
