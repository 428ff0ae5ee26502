/* The FSM glue (see glue.h): raft calls these on its loop thread with each
 * committed entry, and to take or install a snapshot. Only the loop thread
 * writes the catalog, so it reads it without the lock. */
#include "cluster/glue.h"

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/fsm.h"
#include "common/log.h"

static int glue_apply(struct raft_fsm *iface, const struct raft_buffer *buf, void **result)
{
    struct glue *g = iface->data;
    pthread_rwlock_wrlock(g->fsm_lock);
    int rc = fsm_apply(g->fsm, buf->base, buf->len);
    pthread_rwlock_unlock(g->fsm_lock);
    if (rc == -EINVAL) {
        char hex[3 * 24 + 1] = "";
        const uint8_t *b = buf->base;
        for (size_t i = 0; i < buf->len && i < 24; i++)
            snprintf(hex + 3 * i, 4, "%02x ", b[i]);
        log_warn("cluster: committed command rejected as malformed (%zu bytes: %s...)", buf->len, hex);
    }
    *result = (void *)(intptr_t)rc;

    if (g->applied)
        g->applied(g->data);
    /* raft treats a non-zero return as fatal: the command's own verdict
     * travels in *result instead. */
    return 0;
}

/* How long a leader waits for a follower to install a snapshot before it
 * gives up and starts over. libraft's default, 30 s, is also how long a
 * follower killed during an install got nothing from the leader once it was
 * back: its writers waited on its catalog until their lock timeout (chaos
 * runs). 3 s plus 1 s per MiB of snapshot keeps a big catalog on a slow link
 * possible. Loop thread. */
void glue_snapshot_timeout(struct glue *g, size_t len)
{
    raft_set_install_snapshot_timeout(g->raft, 3000u + (unsigned)(len >> 20) * 1000u);
}

static int glue_snapshot(struct raft_fsm *iface, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    struct glue *g = iface->data;
    void *data;
    size_t len;
    /* The loop thread is the only writer, so reading without the lock is safe. */
    int rc = fsm_snapshot(g->fsm, &data, &len);
    if (rc < 0) {
        log_error("cluster: snapshot failed: %s", strerror(-rc));
        return RAFT_NOMEM;
    }
    *bufs = raft_malloc(sizeof(struct raft_buffer));
    if (!*bufs) {
        free(data);
        return RAFT_NOMEM;
    }
    (*bufs)[0].base = data; /* raft_free is free() with the default heap */
    (*bufs)[0].len = len;
    *n_bufs = 1;
    glue_snapshot_timeout(g, len);
    log_debug("cluster: snapshot of %zu bytes (%zu entries)", len, fsm_entry_count(g->fsm));
    return 0;
}

static int glue_restore(struct raft_fsm *iface, struct raft_buffer *buf)
{
    struct glue *g = iface->data;
    pthread_rwlock_wrlock(g->fsm_lock);
    int rc = fsm_restore(g->fsm, buf->base, buf->len);
    pthread_rwlock_unlock(g->fsm_lock);
    if (rc < 0) {
        log_error("cluster: cannot restore snapshot (%zu bytes): %s", buf->len, strerror(-rc));
        return RAFT_CORRUPT;
    }
    glue_snapshot_timeout(g, buf->len);
    raft_free(buf->base); /* on success the buffer is ours */
    if (g->applied)
        g->applied(g->data);
    log_info("cluster: restored snapshot: %zu entries, version %" PRIu64, fsm_entry_count(g->fsm),
             fsm_version(g->fsm));
    return 0;
}

void glue_init(struct glue *g, struct raft *raft, struct fsm *fsm, pthread_rwlock_t *fsm_lock,
               void (*applied)(void *data), void *data)
{
    *g = (struct glue){.raft = raft, .fsm = fsm, .fsm_lock = fsm_lock, .applied = applied, .data = data};
    g->iface.version = 1;
    g->iface.data = g;
    g->iface.apply = glue_apply;
    g->iface.snapshot = glue_snapshot;
    g->iface.restore = glue_restore;
}
