/* Extended attributes: the replicated names, the canonical set encoding the
 * catalog carries (checked here for the FSM, which must refuse a hostile
 * one), and reading and applying a set through an open file. */
#include "common/xattrs.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>

bool xattrs_name_replicated(const char *name)
{
    return strncmp(name, "user.", 5) == 0 || strncmp(name, "trusted.", 8) == 0 ||
           strncmp(name, "security.", 9) == 0 || strcmp(name, "system.posix_acl_access") == 0 ||
           strcmp(name, "system.posix_acl_default") == 0;
}

static uint32_t xattrs_get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void xattrs_put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* One entry at *off of a blob of len bytes, bounds checked; 0 or -EINVAL. */
static int xattrs_parse(const uint8_t *b, size_t len, size_t *off, const char **name,
                        const void **value, uint32_t *vlen)
{
    size_t o = *off;
    const uint8_t *nul = memchr(b + o, '\0', len - o);
    if (!nul)
        return -EINVAL;
    size_t nlen = (size_t)(nul - (b + o));
    if (nlen == 0 || nlen > XATTRS_NAME_MAX || len - o - nlen - 1 < 4)
        return -EINVAL;
    uint32_t v = xattrs_get_u32(nul + 1);
    size_t vo = o + nlen + 1 + 4;
    if (v > XATTRS_VALUE_MAX || v > len - vo)
        return -EINVAL;
    *name = (const char *)(b + o);
    *value = b + vo;
    *vlen = v;
    *off = vo + v;
    return 0;
}

int xattrs_check(const void *blob, size_t len)
{
    if (len > XATTRS_MAX || (len && !blob))
        return -EINVAL;
    const char *prev = NULL;
    size_t off = 0;
    while (off < len) {
        const char *name;
        const void *v;
        uint32_t vlen;
        if (xattrs_parse(blob, len, &off, &name, &v, &vlen) < 0 || !xattrs_name_replicated(name) ||
            (prev && strcmp(prev, name) >= 0))
            return -EINVAL;
        prev = name;
    }
    return 0;
}

int xattrs_next(const void *blob, size_t len, size_t *off, const char **name, const void **value,
                uint32_t *vlen)
{
    if (*off >= len)
        return 0;
    return xattrs_parse(blob, len, off, name, value, vlen) == 0 ? 1 : 0;
}

static int xattrs_name_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* fd's names (a malloc'd NUL-separated list into *list, its length). */
static ssize_t xattrs_list(int fd, char **list)
{
    *list = NULL;
    for (int tries = 0; tries < 4; tries++) {
        ssize_t n = flistxattr(fd, NULL, 0);
        if (n < 0)
            return errno == ENOTSUP ? 0 : -errno;
        if (n == 0)
            return 0;
        char *l = malloc((size_t)n);
        if (!l)
            return -ENOMEM;
        ssize_t m = flistxattr(fd, l, (size_t)n);
        if (m >= 0) {
            *list = l;
            return m;
        }
        free(l);
        if (errno != ERANGE) /* ERANGE: a name came meanwhile */
            return -errno;
    }
    return -EAGAIN;
}

int xattrs_read_fd(int fd, uint8_t *buf)
{
    char *list;
    ssize_t n = xattrs_list(fd, &list);
    if (n <= 0)
        return (int)n;
    size_t count = 0;
    for (char *p = list; p < list + n; p += strlen(p) + 1)
        count++;
    const char **names = malloc(count * sizeof *names);
    if (!names) {
        free(list);
        return -ENOMEM;
    }
    size_t k = 0;
    for (char *p = list; p < list + n; p += strlen(p) + 1)
        if (xattrs_name_replicated(p) && strlen(p) <= XATTRS_NAME_MAX)
            names[k++] = p;
    qsort(names, k, sizeof *names, xattrs_name_cmp);
    size_t len = 0;
    int rc = 0;
    for (size_t i = 0; i < k && rc == 0; i++) {
        size_t nlen = strlen(names[i]);
        if (xattrs_entry_size(nlen, 0) > XATTRS_MAX - len) {
            rc = -E2BIG;
            break;
        }
        memcpy(buf + len, names[i], nlen + 1);
        size_t vo = len + nlen + 1 + 4;
        ssize_t v = fgetxattr(fd, names[i], buf + vo, XATTRS_MAX - vo);
        if (v < 0 && errno == ENODATA)
            continue; /* removed since the listing */
        if (v < 0)
            rc = errno == ERANGE ? -E2BIG : -errno;
        else {
            xattrs_put_u32(buf + len + nlen + 1, (uint32_t)v);
            len = vo + (size_t)v;
        }
    }
    free(names);
    free(list);
    return rc < 0 ? rc : (int)len;
}

/* name is in the set blob. */
static bool xattrs_has(const void *blob, size_t len, const char *name)
{
    size_t off = 0;
    const char *n;
    const void *v;
    uint32_t vlen;
    while (xattrs_next(blob, len, &off, &n, &v, &vlen))
        if (strcmp(n, name) == 0)
            return true;
    return false;
}

static bool xattrs_may_not(int err)
{
    return err == EPERM || err == ENOTSUP || err == EACCES;
}

int xattrs_apply_fd(int fd, const void *blob, size_t len, unsigned *skipped)
{
    *skipped = 0;
    char *list;
    ssize_t n = xattrs_list(fd, &list);
    if (n < 0)
        return (int)n;
    int rc = 0;
    for (char *p = list; n > 0 && p < list + n && rc == 0; p += strlen(p) + 1) {
        if (!xattrs_name_replicated(p) || xattrs_has(blob, len, p))
            continue;
        if (fremovexattr(fd, p) < 0 && errno != ENODATA) {
            if (xattrs_may_not(errno))
                (*skipped)++;
            else
                rc = -errno;
        }
    }
    free(list);
    if (rc < 0 || len == 0)
        return rc;
    uint8_t *cur = malloc(XATTRS_MAX + 1);
    if (!cur)
        return -ENOMEM;
    size_t off = 0;
    const char *name;
    const void *v;
    uint32_t vlen;
    while (rc == 0 && xattrs_next(blob, len, &off, &name, &v, &vlen)) {
        ssize_t c = fgetxattr(fd, name, cur, vlen + 1);
        if (c == (ssize_t)vlen && memcmp(cur, v, vlen) == 0)
            continue;
        if (fsetxattr(fd, name, v, vlen, 0) < 0) {
            if (xattrs_may_not(errno))
                (*skipped)++;
            else
                rc = -errno;
        }
    }
    free(cur);
    return rc;
}

bool xattrs_match_fd(int fd, const void *blob, size_t len)
{
    uint8_t *buf = malloc(XATTRS_MAX);
    if (!buf)
        return false;
    int n = xattrs_read_fd(fd, buf);
    bool same = n >= 0 && (size_t)n == len && (len == 0 || memcmp(buf, blob, len) == 0);
    free(buf);
    return same;
}
