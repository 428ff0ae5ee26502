/* Decoding the journal's records (journal_rec.h): pure, so the replay at
 * start trusts nothing it reads back from BACKING. */
#include "fs/journal_rec.h"

#include <string.h>

#include "common/path.h"

int journal_records(const char *buf, size_t n, int (*each)(const char *path, void *data), void *data)
{
    const char *p = buf, *end = buf + n;
    while (p < end) {
        const char *nul = memchr(p, '\0', (size_t)(end - p));
        if (!nul)
            return 0; /* torn last record */
        if (path_check(p) == 0 && !path_is_internal(p)) {
            int rc = each(p, data);
            if (rc != 0)
                return rc;
        }
        p = nul + 1;
    }
    return 0;
}
