/* The file server's connection deadlines: a list of live connections with
 * the phase each request is in, and a thread that shuts down the sockets
 * of those past their phase's deadline. */
#include "transfer/guard.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "common/log.h"
#include "nsync.h"

struct xfer_gconn {
    struct xfer_gconn *prev, *next;
    struct xfer_guard *g;
    int fd;
    enum xfer_phase phase;
    uint64_t since_ms;
    bool shut;
};

struct xfer_guard {
    pthread_mutex_t mu;      /* the list and every entry's fields */
    pthread_cond_t cv;
    bool stop;
    pthread_t thread;
    struct xfer_gconn head;  /* sentinel of a circular list */
};

static void *xfer_guard_main(void *arg)
{
    struct xfer_guard *g = arg;
    pthread_mutex_lock(&g->mu);
    while (!g->stop) {
        struct timespec ts;
        nsync_deadline(&ts, 1000 * 1000);
        pthread_cond_timedwait(&g->cv, &g->mu, &ts);
        uint64_t now = nsync_mono_ms();
        unsigned dropped = 0;
        for (struct xfer_gconn *c = g->head.next; c != &g->head; c = c->next) {
            uint64_t limit = c->phase == XFER_PHASE_HEAD   ? XFER_GUARD_HEAD_S * 1000u
                             : c->phase == XFER_PHASE_BODY ? XFER_GUARD_BODY_S * 1000u
                                                           : 0;
            /* Under mu the fd is still open: MHD notifies CLOSED (which
             * unlinks c under mu) before it closes the socket. */
            if (limit && !c->shut && now - c->since_ms > limit) {
                shutdown(c->fd, SHUT_RDWR);
                c->shut = true;
                dropped++;
            }
        }
        if (dropped)
            log_info("file server: dropped %u connection%s slower than %d s per request", dropped,
                     dropped == 1 ? "" : "s", XFER_GUARD_HEAD_S);
    }
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

int xfer_guard_start(struct xfer_guard **out)
{
    struct xfer_guard *g = calloc(1, sizeof *g);
    if (!g)
        return -ENOMEM;
    pthread_mutex_init(&g->mu, NULL);
    nsync_cond_init_mono(&g->cv);
    g->head.next = g->head.prev = &g->head;
    int rc = pthread_create(&g->thread, NULL, xfer_guard_main, g);
    if (rc != 0) {
        pthread_mutex_destroy(&g->mu);
        pthread_cond_destroy(&g->cv);
        free(g);
        return -rc;
    }
    pthread_setname_np(g->thread, "ns-http-guard");
    *out = g;
    return 0;
}

void xfer_guard_stop(struct xfer_guard *g)
{
    if (!g)
        return;
    pthread_mutex_lock(&g->mu);
    g->stop = true;
    pthread_cond_signal(&g->cv);
    pthread_mutex_unlock(&g->mu);
    pthread_join(g->thread, NULL);
    /* The daemon is gone: every connection was notified closed. */
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    free(g);
}

void xfer_guard_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                       enum MHD_ConnectionNotificationCode toe)
{
    struct xfer_guard *g = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        struct xfer_gconn *c = ci ? calloc(1, sizeof *c) : NULL;
        *socket_context = c;
        if (!c)
            return; /* unguarded: MHD's idle timeout still applies */
        c->g = g;
        c->fd = ci->connect_fd;
        c->phase = XFER_PHASE_HEAD;
        c->since_ms = nsync_mono_ms();
        pthread_mutex_lock(&g->mu);
        c->next = g->head.next;
        c->prev = &g->head;
        g->head.next->prev = c;
        g->head.next = c;
        pthread_mutex_unlock(&g->mu);
    } else if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
        struct xfer_gconn *c = *socket_context;
        *socket_context = NULL;
        if (!c)
            return;
        pthread_mutex_lock(&g->mu);
        c->prev->next = c->next;
        c->next->prev = c->prev;
        pthread_mutex_unlock(&g->mu);
        free(c);
    }
}

void xfer_guard_phase(struct MHD_Connection *conn, enum xfer_phase phase)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    struct xfer_gconn *c = ci ? ci->socket_context : NULL;
    if (!c)
        return;
    pthread_mutex_lock(&c->g->mu);
    if (c->phase != phase) {
        c->phase = phase;
        c->since_ms = nsync_mono_ms();
    }
    pthread_mutex_unlock(&c->g->mu);
}
