/* Splitting a forwarded batch into its commands: every length is checked
 * against what is left before it is used, so no frame reads past the body. */
#include "transfer/batch.h"

#include <errno.h>
#include <stdlib.h>

#include "cluster/cluster.h"

static uint32_t xfer_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int xfer_batch_split(const void *body, size_t len, struct cluster_item **items, uint32_t *n)
{
    const unsigned char *p = body;
    *items = NULL;
    *n = 0;
    if (!p || len < 4)
        return -EINVAL;
    uint32_t count = xfer_le32(p);
    /* Each command takes at least 5 bytes: a count beyond that is a lie. */
    if (count == 0 || count > XFER_BATCH_MAX || count > (len - 4) / 5)
        return -EINVAL;
    struct cluster_item *it = calloc(count, sizeof *it);
    if (!it)
        return -ENOMEM;
    size_t off = 4;
    for (uint32_t i = 0; i < count; i++) {
        uint32_t l = len - off >= 4 ? xfer_le32(p + off) : 0;
        if (len - off < 4 || l == 0 || l > len - off - 4) {
            free(it);
            return -EINVAL;
        }
        it[i].buf = p + off + 4;
        it[i].len = l;
        off += 4 + (size_t)l;
    }
    if (off != len) {
        free(it);
        return -EINVAL;
    }
    *items = it;
    *n = count;
    return 0;
}
