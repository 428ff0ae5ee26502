/* The extended attributes of an item being installed: copied from its
 * catalog entry with the rest of its version, and put on the file before it
 * is renamed into place, so no reader sees its bytes with another version's
 * attributes. */
#include "common/xattrs.h"
#include "transfer/fetch_int.h"

int xfer_item_take_xattrs(struct xfer_item *it, const struct fsm_entry *e)
{
    void *x = NULL;
    if (e->xattrs_len) {
        if (!(x = malloc(e->xattrs_len)))
            return -ENOMEM;
        memcpy(x, e->xattrs, e->xattrs_len);
    }
    free(it->xattrs);
    it->xattrs = x;
    it->xattrs_len = e->xattrs_len;
    return 0;
}

int xfer_xattrs_apply(int fd, const struct xfer_item *it)
{
    unsigned skipped = 0;
    int rc = xattrs_apply_fd(fd, it->xattrs, it->xattrs_len, &skipped);
    if (skipped)
        log_debug("fetch %s: %u extended attributes this node may not hold", it->path, skipped);
    return rc;
}

bool xfer_xattrs_same(int fd, const struct xfer_item *it)
{
    return xattrs_match_fd(fd, it->xattrs, it->xattrs_len);
}
