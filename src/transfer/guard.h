/* Deadlines for the file server's connections, which libmicrohttpd's own
 * idle timeout cannot give (a client sending one byte every few seconds
 * stays "active" for ever): a request must arrive whole within
 * XFER_GUARD_HEAD_S of the connection or of the previous answer, a POST body
 * within XFER_GUARD_BODY_S; past that a watchdog thread shuts the socket
 * down, so the connection's thread ends and the slot serves peers again.
 * Answers being sent are left to libmicrohttpd's idle timeout. */
#ifndef NSYNC_XFER_GUARD_H
#define NSYNC_XFER_GUARD_H

#include <microhttpd.h>

#define XFER_GUARD_HEAD_S 10
#define XFER_GUARD_BODY_S 30

struct xfer_guard;

enum xfer_phase {
    XFER_PHASE_HEAD,    /* waiting for a request (TLS handshake included) */
    XFER_PHASE_BODY,    /* receiving a POST body */
    XFER_PHASE_ANSWER,  /* answering: no deadline of ours */
};

/* 0 or -errno (no thread). The guard must outlive the MHD daemon using it. */
int xfer_guard_start(struct xfer_guard **out);
void xfer_guard_stop(struct xfer_guard *g);

/* MHD_OPTION_NOTIFY_CONNECTION callback; cls is the guard. MHD threads. */
void xfer_guard_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                       enum MHD_ConnectionNotificationCode toe);

/* The connection's request moved on. Its MHD thread. */
void xfer_guard_phase(struct MHD_Connection *conn, enum xfer_phase phase);

#endif
