/* The systemd notification protocol (sd_notify(3)) without libsystemd: one
 * datagram of "KEY=VALUE\n" lines to the AF_UNIX socket named by
 * $NOTIFY_SOCKET, for Type=notify units (READY=1, STATUS=..., STOPPING=1). */
#ifndef NSYNC_NOTIFY_H
#define NSYNC_NOTIFY_H

#include <stdbool.h>

/* Whether a service manager listens ($NOTIFY_SOCKET set and usable). */
bool notify_enabled(void);

/* Send msg (e.g. "READY=1\nSTATUS=serving") as one datagram. 0 when sent
 * or when nobody listens (no $NOTIFY_SOCKET); -EINVAL for a socket name we
 * cannot use, else the -errno of socket/sendto. Opens and closes its own
 * socket: any thread, no state. */
int notify_send(const char *msg);

/* notify_send of "STATUS=" + the formatted text (one line). */
int notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
