/* What the service manager (systemd, Type=notify) hears from a node: READY=1
 * once it serves, STATUS= with its role and catch-up progress while it runs,
 * STOPPING=1 when it begins to stop. Silent without $NOTIFY_SOCKET. */
#ifndef NSYNC_SERVICE_H
#define NSYNC_SERVICE_H

struct nsync;
struct service;

/* The node serves: send READY=1 and start the thread that refreshes STATUS=
 * every second (only if $NOTIFY_SOCKET is set; else *out is NULL and nothing
 * runs). ns->cluster and ns->fetcher must exist until service_stop. 0 or
 * -errno (then nothing runs; the node serves anyway). Main thread. */
int service_start(struct nsync *ns, struct service **out);

/* Send STOPPING=1 (also when s is NULL, if a manager listens) and join the
 * thread. Main thread, once, before the cluster or the fetcher stop. */
void service_stop(struct service *s);

#endif
