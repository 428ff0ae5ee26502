/* The quick check (docs/decisions.md, "Rejoin without re-reading the tree"):
 * what a node knew of its files when it stopped, so that the next start can
 * trust a file whose stat is unchanged instead of hashing it. The record is
 * BACKING/.nsyncfs/quick, written at a clean stop and consumed at start. */
#ifndef NSYNC_XFER_QUICK_H
#define NSYNC_XFER_QUICK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

struct nsync;

/* One file: its stat when the record was made, and the hash of the version
 * the catalog says this node held then. */
struct xfer_quick_rec {
    char *path;
    uint64_t ino, size;
    int64_t mtime_ns, ctime_ns;
    uint8_t hash[16];
};

/* The loaded record, sorted by path; read-only after xfer_quick_load. */
struct xfer_quick {
    struct xfer_quick_rec *v;
    size_t n;
};

/* Write the record for every regular file the catalog says this node holds
 * whose size and mtime are the catalog's, skipping those changed in the
 * last QUICK_RACY_MS (a change in the same clock tick could keep their
 * stat). Call at a clean stop, once no FUSE request, install or unanswered
 * announce is left, before the cluster is stopped: the catalog and this
 * node's member id must still be there. Written to a temporary name,
 * fsynced and renamed, so a crash leaves the old record or the new one.
 * 0 or -errno (logged). Any thread. */
int xfer_quick_save(struct nsync *ns);

/* Read BACKING/.nsyncfs/quick into q (empty if missing or not intact) and
 * remove it from disk at once: from here on, only this process may trust
 * it, and a crash later must not leave it behind. Before the fetch worker
 * starts. 0 or -errno (q is empty then). */
int xfer_quick_load(struct nsync *ns, struct xfer_quick *q);
void xfer_quick_free(struct xfer_quick *q);

/* True if st (of the file now at path) is exactly the recorded one, and the
 * recorded hash and size are hash and size: the file holds those bytes. */
bool xfer_quick_trusts(const struct xfer_quick *q, const char *path, const struct stat *st,
                       const uint8_t hash[16], uint64_t size);

#endif
