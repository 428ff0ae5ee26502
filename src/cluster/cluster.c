/* The cluster's life cycle: cluster_start opens raft storage, sets raft
 * up, bootstraps or joins, and starts the loop, outbox and lease threads;
 * cluster_stop takes them down in the order their dependencies need. */
#include "cluster/cluster_int.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/outbox.h"
#include "cluster/transport.h"
#include "common/log.h"

static void raft_failed_closed_cb(struct raft *r)
{
    struct cluster *c = r->data;
    raft_uv_close(&c->io);
    transport_close(&c->transport);
}

/* The glue's apply hook: every apply wakes cluster_wait_change. */
static void cluster_applied(void *data)
{
    cluster_kick(data);
}

/* The outbox's way in: straight through to submit.c. */
static int cluster_outbox_writable(void *data)
{
    return cluster_writable(data);
}

static int cluster_outbox_deliver(void *data, struct cluster_item *items, size_t n, unsigned timeout_ms)
{
    return cluster_deliver(data, items, n, timeout_ms);
}

static bool cluster_outbox_wait(void *data, uint64_t *seen, unsigned timeout_ms)
{
    return cluster_wait_change(data, seen, timeout_ms);
}

int cluster_start(struct nsync *ns, struct cluster **out)
{
    struct cluster *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->ns = ns;
    c->last_state = -1;
    quorum_init(c);
    pthread_mutex_init(&c->mu, NULL);
    nsync_cond_init_mono(&c->done_cv);
    pthread_mutex_init(&c->applied_mu, NULL);
    nsync_cond_init_mono(&c->applied_cv);
    pthread_mutex_init(&c->renew_mu, NULL);
    nsync_cond_init_mono(&c->renew_cv);
    pthread_mutex_init(&c->members_mu, NULL);
    nsync_cond_init_mono(&c->members_cv);
    addr_format(c->address, sizeof c->address, ns->cfg.advertise, ns->cfg.cport);

    int rc = uv_loop_init(&c->loop);
    if (rc != 0) {
        log_error("cluster: uv_loop_init: %s", uv_strerror(rc));
        free(c);
        return -EIO;
    }
    char bind[NSYNC_ADDR_MAX];
    addr_format(bind, sizeof bind, ns->cfg.host, ns->cfg.cport);
    rc = transport_init(&c->transport, &c->loop, ns->cfg.secret, bind);
    if (rc == 0)
        rc = raft_uv_init(&c->io, &c->loop, ns->raft_dir, &c->transport);
    if (rc != 0) {
        log_error("cluster: cannot open raft storage in %s: %s", ns->raft_dir, raft_strerror(rc));
        uv_loop_close(&c->loop);
        free(c);
        return -EIO;
    }
    raft_uv_set_connect_retry_delay(&c->io, 200);
    /* raft preallocates a few log segments ahead; at the 8 MiB default that
     * is 24 MiB, and a node whose disk cannot give it stops applying (a
     * leader even crashes inside libraft). Our commands are small: 1 MiB
     * segments hold thousands and keep the reservation at 3 MiB. */
    raft_uv_set_segment_size(&c->io, 1024 * 1024);
    glue_init(&c->glue, &c->raft, ns->fsm, &ns->fsm_lock, cluster_applied, c);
    rc = raft_init(&c->raft, &c->io, &c->glue.iface, ns->self_id, c->address);
    if (rc != 0) {
        log_error("cluster: raft_init: %s", raft_strerror(rc));
        goto fail_io;
    }
    raft_set_election_timeout(&c->raft, 1000);
    raft_set_heartbeat_timeout(&c->raft, 100);
    raft_set_pre_vote(&c->raft, true);
    /* raft keeps every entry since its last snapshot in memory, and a small
     * file's entry carries its bytes (up to 4 KiB): 2048 + 512 entries keep
     * that near 10 MiB. Measured against 4096 + 1024 on a 3-node burst of
     * 6000 creates: ~10 MiB less peak RSS per node, the same create rate. */
    raft_set_snapshot_threshold(&c->raft, 2048);
    raft_set_snapshot_trailing(&c->raft, 512);
    glue_snapshot_timeout(&c->glue, 0);

    bool joining = false;
    if (bootstrap_decide(c, &joining) < 0)
        goto fail_raft;
    rc = raft_start(&c->raft);
    if (rc != 0) {
        log_error("cluster: raft_start: %s (%s)", raft_strerror(rc), raft_errmsg(&c->raft));
        goto fail_raft;
    }
    uv_async_init(&c->loop, &c->async, loop_async_cb);
    c->async.data = c;
    uv_timer_init(&c->loop, &c->timer);
    c->timer.data = c;
    uv_timer_start(&c->timer, loop_timer_cb, 0, STATUS_TICK_MS);

    if (pthread_create(&c->thread, NULL, loop_main, c) != 0) {
        log_error("cluster: cannot start the loop thread");
        goto fail_raft;
    }
    c->thread_started = true;
    pthread_setname_np(c->thread, "ns-raft"); /* names for top -H and perf */
    struct outbox_io oio = {.data = c, .deliver = cluster_outbox_deliver, .wait_change = cluster_outbox_wait,
                              .writable = cluster_outbox_writable};
    int orc = outbox_start(&oio, ns->cfg.submit_timeout_ms ? ns->cfg.submit_timeout_ms : 8000, &c->outbox);
    if (orc < 0) {
        log_error("cluster: cannot start the outbox thread: %s", strerror(-orc));
        cluster_stop(c);
        return orc;
    }
    lease_start(c);
    members_start(c);
    if (joining && bootstrap_join(c) < 0) {
        cluster_stop(c);
        return -EHOSTUNREACH;
    }
    *out = c;
    log_info("cluster: node %016" PRIx64 " at %s, %zu configured nodes", ns->self_id, c->address,
             ns->cfg.n_peers);
    return 0;

fail_raft:
    /* raft_close is asynchronous: run the loop until it is done. */
    c->raft.data = c;
    raft_close(&c->raft, raft_failed_closed_cb);
    uv_run(&c->loop, UV_RUN_DEFAULT);
    uv_loop_close(&c->loop);
    free(c);
    return -EIO;
fail_io:
    raft_uv_close(&c->io);
    transport_close(&c->transport);
    uv_run(&c->loop, UV_RUN_DEFAULT);
    uv_loop_close(&c->loop);
    free(c);
    return -EIO;
}

void cluster_stop(struct cluster *c)
{
    if (!c)
        return;
    /* Only a started cluster is handed out, and the loop cannot join itself. */
    assert(c->thread_started && !on_loop_thread(c));
    pthread_mutex_lock(&c->mu);
    c->stopping = true;
    pthread_mutex_unlock(&c->mu);
    if (c->thread_started)
        uv_async_send(&c->async); /* answers queued proposals, closes raft */
    /* The outbox before the loop thread: a delivery in progress is answered
     * by the loop (-ESHUTDOWN), and the renew thread may be waiting on it. */
    outbox_stop(c->outbox);
    c->outbox = NULL;
    lease_stop(c);
    members_stop(c);
    if (c->thread_started)
        pthread_join(c->thread, NULL);
    uv_loop_close(&c->loop);
    cluster_kick(c);
    /* Submitters that were waiting have been answered (-ESHUTDOWN) or will
     * time out; requests still in raft were completed by raft_close. */
    free(c);
}
