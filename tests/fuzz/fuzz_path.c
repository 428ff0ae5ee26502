/* libFuzzer harness: the path checks every input path goes through (FUSE,
 * HTTP, FSM, journal, manifest). Besides memory errors it checks what an
 * accepted path must be: relative, no empty, "." or ".." component, shorter
 * than PATH_MAX; and path_from_fuse accepts nothing in .nsyncfs. */
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/path.h"

static void check_clean(const char *p)
{
    size_t len = strlen(p);
    if (len == 0 || len >= PATH_MAX || p[0] == '/' || p[len - 1] == '/' || strstr(p, "//"))
        abort();
    const char *c = p;
    while (*c) {
        size_t n = strcspn(c, "/");
        if ((n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
            abort();
        c += n;
        if (*c == '/')
            c++;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 2);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    if (path_check(s) == 0)
        check_clean(s);
    (void)path_is_internal(s);
    s[size + 1] = '\0';
    char out[PATH_MAX];
    memmove(s + 1, s, size + 1);
    s[0] = '/';
    if (path_from_fuse(s, out, sizeof out) == 0 && strcmp(out, ".") != 0) {
        check_clean(out);
        if (path_is_internal(out))
            abort();
    }
    /* Two paths from the two halves: path_is_under on anything. */
    size_t half = size / 2;
    char *x = malloc(half + 1), *y = malloc(size - half + 1);
    if (x && y) {
        memcpy(x, data, half);
        x[half] = '\0';
        memcpy(y, data + half, size - half);
        y[size - half] = '\0';
        (void)path_is_under(x, y);
    }
    free(x);
    free(y);
    free(s);
    return 0;
}
