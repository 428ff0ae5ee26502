/* The fetch worker: watches the catalog for entries this node lacks, brings
 * each into BACKING (files over HTTP from a node that has them, streamed into
 * staging, verified, renamed into place; deletes, dirs, symlinks and metadata
 * applied locally), invalidates the kernel cache for the path, and reports
 * SYNCED in batches. */
#ifndef NSYNC_XFER_FETCH_H
#define NSYNC_XFER_FETCH_H

#include <stdbool.h>
#include <stdint.h>

struct nsync;
struct xfer_fetcher;

struct xfer_fetch_status {
    uint64_t pending;        /* entries this node still lacks */
    uint64_t installed;      /* entries installed since start */
    uint64_t bytes;          /* bytes fetched since start */
    uint64_t map_bytes;      /* ...and of files' maps, to fetch only parts (blockmap.h) */
    uint64_t errors;         /* failed attempts since start */
    uint64_t hashed;         /* files already here, read to compare their hash */
    uint64_t trusted;        /* ...or trusted by the quick check (an unchanged stat) */
};

/* A catch-up in figures: done counts what was installed since this node
 * began to lack entries, total is done plus what it still lacks (so it
 * grows when new changes arrive meanwhile). */
struct xfer_catchup {
    bool active;             /* lacking entries for XFER_CATCHUP_AFTER_MS or more */
    uint64_t since_ms;       /* wall-clock ms since the node lacks entries; 0: it lacks none */
    uint64_t files_done, files_total;  /* catalog entries (files, dirs, deletes...) */
    uint64_t bytes_done, bytes_total;  /* bytes of file content */
    double percent;          /* by bytes if there are any, else by entries; 100 when none */
    long eta_s;              /* seconds left at the rate so far; -1 unknown */
};
/* A node that lacks something for less than this is replicating, not behind. */
#define XFER_CATCHUP_AFTER_MS 3000

/* What the fetch worker asks of the layer above it (the FUSE side), which it
 * must not include: wired in main.c, like struct raft_io in canonical/raft.
 * Each may be NULL. Called from the worker's threads (ns-fetch, ns-fetch-pool);
 * none may block for long or call back into the fetcher. */
struct xfer_fetch_hooks {
    void *data;
    /* True while a handle on this node has rel open for writing: do not
     * install over it now (it is retried soon). */
    bool (*path_busy)(void *data, const char *rel);
    /* True while a process on this node has rel open for writing or uses
     * record locks on it: install the new bytes into the file it has open
     * rather than by rename, as a write on a local disk would change it (a
     * database keeps its file, and its idea of the file's identity, across
     * other nodes' commits; its locks keep it from reading half an install).
     * Other readers keep the atomic rename: they see whole versions. */
    bool (*in_place)(void *data, const char *rel);
    /* rel changed in BACKING behind the kernel's back: drop its cached
     * names, attributes and pages. */
    void (*invalidate)(void *data, const char *rel);
    /* About to replace the file rel with the cluster's version: a local edit
     * made while this node was out of the cluster is kept beside it. */
    void (*before_install)(void *data, const char *rel);
};

/* Start the worker thread(s). ns->cluster must exist; hooks is copied.
 * 0 or -errno. Main thread. */
int xfer_fetcher_start(struct nsync *ns, const struct xfer_fetch_hooks *hooks,
                       struct xfer_fetcher **out);
/* Stop and join the threads; nothing is installed after it returns, but the
 * fetcher stays readable (xfer_fetcher_get_status) until xfer_fetcher_free,
 * so that the file server's status page may still ask while it shuts down.
 * Main thread, once. */
void xfer_fetcher_stop(struct xfer_fetcher *f);
/* After xfer_fetcher_stop, and after the file server stopped. NULL: no-op. */
void xfer_fetcher_free(struct xfer_fetcher *f);
/* Any thread, until xfer_fetcher_free. */
void xfer_fetcher_get_status(struct xfer_fetcher *f, struct xfer_fetch_status *st);
/* Any thread, until xfer_fetcher_free. */
void xfer_fetcher_get_catchup(struct xfer_fetcher *f, struct xfer_catchup *c);

#endif
