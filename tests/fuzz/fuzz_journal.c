/* libFuzzer harness: the records of .nsyncfs/unsent as the replay at start
 * reads them back (fs/journal_rec.c). Besides memory errors: every path it
 * yields lies inside the input, ends at its NUL, and passes the path checks;
 * and a stop asked by the callback is what the decoder returns. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/path.h"
#include "fs/journal_rec.h"

struct seen {
    const char *buf;
    size_t n, count, stop_at;
};

static int each(const char *p, void *data)
{
    struct seen *s = data;
    if (p < s->buf || p >= s->buf + s->n)
        abort();
    size_t left = (size_t)(s->buf + s->n - p);
    if (!memchr(p, '\0', left) || path_check(p) < 0 || path_is_internal(p))
        abort();
    return ++s->count == s->stop_at ? 7 : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* an exact-size copy: ASan sees any read past the end */
    char *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    struct seen s = {.buf = buf, .n = size, .stop_at = 0};
    if (journal_records(buf, size, each, &s) != 0)
        abort();
    size_t all = s.count;
    if (all > 0) {
        struct seen t = {.buf = buf, .n = size, .stop_at = (all + 1) / 2};
        if (journal_records(buf, size, each, &t) != 7 || t.count != t.stop_at)
            abort();
    }
    free(buf);
    return 0;
}
