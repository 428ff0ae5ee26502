/* The node's standing in one line for `systemctl status`: a thread that wakes
 * every second and sends STATUS= when the line changed, so that a joining
 * node shows its catch-up (files and bytes of the total, percentage, ETA). */
#include "service.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster/cluster.h"
#include "common/log.h"
#include "common/notify.h"
#include "nsync.h"
#include "transfer/fetch.h"

#define SERVICE_EVERY_MS 1000

struct service {
    struct nsync *ns;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
};

static void service_line(struct nsync *ns, char *buf, size_t sz)
{
    struct cluster_status cs = {.state = CLUSTER_UNAVAILABLE};
    cluster_get_status(ns->cluster, &cs);
    struct xfer_catchup cu;
    xfer_fetcher_get_catchup(ns->fetcher, &cu);
    const char *quorum = cluster_writable(ns->cluster) == 0 ? "" : ", NO QUORUM (read-only)";
    if (cu.active) {
        char eta[32] = "unknown";
        if (cu.eta_s >= 0)
            snprintf(eta, sizeof eta, "%lds", cu.eta_s);
        snprintf(buf, sz,
                 "%s, catching up: %" PRIu64 "/%" PRIu64 " files, %" PRIu64 "/%" PRIu64
                 " bytes (%.0f%%), ETA %s%s",
                 cluster_role_name(cs.state), cu.files_done, cu.files_total, cu.bytes_done,
                 cu.bytes_total, cu.percent, eta, quorum);
    } else {
        snprintf(buf, sz, "%s, term %" PRIu64 ", %u voters, in sync%s", cluster_role_name(cs.state),
                 cs.term, cs.voters, quorum);
    }
}

static void *service_main(void *arg)
{
    struct service *s = arg;
    char last[256] = "", line[256];
    pthread_mutex_lock(&s->mu);
    while (!s->stop) {
        pthread_mutex_unlock(&s->mu);
        service_line(s->ns, line, sizeof line);
        if (strcmp(line, last) != 0) {
            int rc = notify_status("%s", line);
            if (rc < 0)
                log_debug("notify: cannot send STATUS to $NOTIFY_SOCKET: %s", strerror(-rc));
            memcpy(last, line, sizeof last);
        }
        struct timespec dl;
        nsync_deadline(&dl, SERVICE_EVERY_MS * 1000u);
        pthread_mutex_lock(&s->mu);
        if (!s->stop)
            pthread_cond_timedwait(&s->cv, &s->mu, &dl);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

int service_start(struct nsync *ns, struct service **out)
{
    *out = NULL;
    if (!notify_enabled())
        return 0;
    char msg[64];
    snprintf(msg, sizeof msg, "READY=1\nMAINPID=%ld", (long)getpid());
    int rc = notify_send(msg);
    if (rc < 0) {
        log_warn("notify: cannot send READY=1 to $NOTIFY_SOCKET %s: %s", getenv("NOTIFY_SOCKET"),
                 strerror(-rc));
        return rc;
    }
    struct service *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->ns = ns;
    if (pthread_mutex_init(&s->mu, NULL) != 0 || nsync_cond_init_mono(&s->cv) != 0) {
        free(s);
        return -ENOMEM;
    }
    if ((rc = pthread_create(&s->thread, NULL, service_main, s)) != 0) {
        pthread_cond_destroy(&s->cv);
        pthread_mutex_destroy(&s->mu);
        free(s);
        return -rc;
    }
    pthread_setname_np(s->thread, "ns-notify");
    *out = s;
    return 0;
}

void service_stop(struct service *s)
{
    notify_send("STOPPING=1\nSTATUS=stopping: leaving the cluster");
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
