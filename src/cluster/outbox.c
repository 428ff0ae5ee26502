/* The outbox (see outbox.h): one queue and one sender thread per node. A
 * batch is whatever queued up while the previous one was being committed,
 * so a burst of small changes costs one round trip and one log write per
 * batch instead of one per change, and order across threads is kept. */
#include "cluster/outbox.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "nsync.h"

#define OUTBOX_BATCH_MAX 512              /* commands per delivery */
#define OUTBOX_BATCH_BYTES (896u * 1024u) /* stays under the server's 1 MiB body limit */
#define OUTBOX_BACKOFF_MIN_MS 5
#define OUTBOX_BACKOFF_MAX_MS 200
#define OUTBOX_ATTEMPT_MIN_MS 50
#define OUTBOX_LINGER_US 2000 /* a lazy item waits this long for company */

struct ob_item {
    struct ob_item *next;
    void *buf;               /* owned */
    size_t len;
    uint64_t deadline_ms;    /* 0: none */
    uint64_t queued_ms;      /* when it was queued (monotonic) */
    uint64_t queued_us;
    uint64_t seq;            /* its place in the queue (outbox_barrier) */
    bool lazy;               /* may wait OUTBOX_LINGER_US for items to go with */
    bool taken;              /* in a delivery (or answered): no longer cancellable */
    cluster_done_fn done;
    void *arg;
};

struct outbox {
    struct outbox_io io;
    unsigned attempt_ms;     /* per delivery when no item has a nearer deadline */
    pthread_t thread;
    /* mu guards the queue and stopping. Only the sender removes items, so it
     * may read the items it took outside the lock. */
    pthread_mutex_t mu;
    pthread_cond_t cv;       /* work queued, or stopping */
    pthread_cond_t empty_cv; /* the queue became empty */
    struct ob_item *head, *tail;
    size_t queued;
    uint64_t sent_seq;       /* counts outbox_send calls: wakes a lingering sender */
    bool stopping;
};

/* Unlink it (caller holds mu; it is the sender's to remove). */
static void ob_unlink(struct outbox *o, struct ob_item *it)
{
    struct ob_item **pp = &o->head, *prev = NULL;
    it->taken = true;
    while (*pp != it) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    *pp = it->next;
    if (o->tail == it)
        o->tail = prev;
    o->queued--;
    pthread_cond_broadcast(&o->empty_cv); /* drain and barrier waiters */
}

/* done before the unlink: whoever waits for the queue (drain, barrier) then
 * sees what done recorded. The sender took it, so nobody cancels it. */
static void ob_finish(struct outbox *o, struct ob_item *it, int rc, const struct cluster_reply *r)
{
    assert(it->taken);
    struct cluster_reply none;
    memset(&none, 0, sizeof none);
    it->done(it->arg, rc, r ? r : &none);
    pthread_mutex_lock(&o->mu);
    ob_unlink(o, it);
    pthread_mutex_unlock(&o->mu);
    free(it->buf);
    free(it);
}

static void *ob_main(void *arg)
{
    struct outbox *o = arg;
    struct cluster_item *batch = calloc(OUTBOX_BATCH_MAX, sizeof *batch);
    struct ob_item **taken = calloc(OUTBOX_BATCH_MAX, sizeof *taken);
    unsigned backoff = OUTBOX_BACKOFF_MIN_MS;
    uint64_t seen = 0;
    for (;;) {
        pthread_mutex_lock(&o->mu);
        while (!o->head && !o->stopping)
            pthread_cond_wait(&o->cv, &o->mu);
        if (o->stopping || !batch || !taken) {
            struct ob_item *list = o->head;
            for (struct ob_item *it = list; it; it = it->next)
                it->taken = true;
            o->head = o->tail = NULL;
            o->queued = 0;
            pthread_cond_broadcast(&o->empty_cv);
            pthread_mutex_unlock(&o->mu);
            if (!o->stopping)
                log_error("cluster: outbox out of memory: dropping queued changes");
            struct cluster_reply none;
            memset(&none, 0, sizeof none);
            while (list) {
                struct ob_item *it = list;
                list = it->next;
                it->done(it->arg, -ESHUTDOWN, &none);
                free(it->buf);
                free(it);
            }
            if (o->stopping)
                break;
            continue;
        }
        /* Take a prefix; items that ran out of time are answered instead. */
        uint64_t now = nsync_mono_ms(), now_us = nsync_mono_us();
        size_t n = 0, bytes = 0;
        struct ob_item *expired = NULL;
        bool readonly = o->io.writable && o->io.writable(o->io.data) < 0;
        for (struct ob_item *it = o->head; it && n < OUTBOX_BATCH_MAX; it = it->next) {
            if (it->deadline_ms && (readonly || it->deadline_ms <= now)) {
                if (!expired)
                    expired = it;
                continue;
            }
            if (n > 0 && bytes + it->len > OUTBOX_BATCH_BYTES)
                break;
            /* A young lazy item behind others stays for the next batch: in
             * a stream of small files, the next file's LOCK is queued while
             * this file's announce waits, and would otherwise always be
             * sent, doubling the raft entries per file. */
            if (n > 0 && it->lazy && now_us < it->queued_us + OUTBOX_LINGER_US)
                break;
            taken[n++] = it;
            bytes += it->len;
        }
        /* Only lazy items (a new file's LOCK): give the file's close a
         * moment to join, so that both travel in one commit. */
        bool all_lazy = n > 0 && !expired;
        for (size_t i = 0; all_lazy && i < n; i++)
            all_lazy = taken[i]->lazy;
        if (all_lazy && now_us < taken[0]->queued_us + OUTBOX_LINGER_US) {
            uint64_t wait_us = taken[0]->queued_us + OUTBOX_LINGER_US - now_us;
            struct timespec dl;
            nsync_deadline(&dl, wait_us);
            uint64_t before = o->sent_seq;
            while (o->sent_seq == before && !o->stopping &&
                   pthread_cond_timedwait(&o->cv, &o->mu, &dl) != ETIMEDOUT)
                ;
            pthread_mutex_unlock(&o->mu);
            continue;
        }
        for (size_t i = 0; i < n; i++)
            taken[i]->taken = true;
        if (expired)
            expired->taken = true;
        pthread_mutex_unlock(&o->mu);
        if (expired) {
            ob_finish(o, expired, -EROFS, NULL);
            continue; /* one at a time keeps the walk simple; rare */
        }

        unsigned tmo = o->attempt_ms;
        for (size_t i = 0; i < n; i++) {
            batch[i] = (struct cluster_item){.buf = taken[i]->buf, .len = taken[i]->len, .rc = -ENOTCONN};
            if (taken[i]->deadline_ms && taken[i]->deadline_ms - now < tmo)
                tmo = (unsigned)(taken[i]->deadline_ms - now);
        }
        if (tmo < OUTBOX_ATTEMPT_MIN_MS)
            tmo = OUTBOX_ATTEMPT_MIN_MS;
        int rc = o->io.deliver(o->io.data, batch, n, tmo);
        size_t done = 0;
        if (rc == 0) {
            for (; done < n; done++) {
                int irc = batch[done].rc;
                if (irc != 0 && irc != -EINVAL)
                    break; /* not applied: it and everything after go again */
                ob_finish(o, taken[done], irc, irc == 0 ? &batch[done].reply : NULL);
            }
        }
        if (done == n) {
            backoff = OUTBOX_BACKOFF_MIN_MS;
            continue;
        }
        if (rc == -ESHUTDOWN || (rc == 0 && batch[done].rc == -ESHUTDOWN)) {
            pthread_mutex_lock(&o->mu);
            o->stopping = true; /* the cluster is going: answer the rest */
            pthread_mutex_unlock(&o->mu);
            continue;
        }
        /* No leader, or it failed mid-way: wait for a change (a new
         * leader) or the backoff, then go again from the first one left. */
        o->io.wait_change(o->io.data, &seen, backoff);
        backoff = backoff * 2 > OUTBOX_BACKOFF_MAX_MS ? OUTBOX_BACKOFF_MAX_MS : backoff * 2;
    }
    free(batch);
    free(taken);
    return NULL;
}

int outbox_start(const struct outbox_io *io, unsigned attempt_ms, struct outbox **out)
{
    struct outbox *o = calloc(1, sizeof *o);
    if (!o)
        return -ENOMEM;
    o->io = *io;
    o->attempt_ms = attempt_ms ? attempt_ms : 8000;
    pthread_mutex_init(&o->mu, NULL);
    nsync_cond_init_mono(&o->cv);
    nsync_cond_init_mono(&o->empty_cv);
    int rc = pthread_create(&o->thread, NULL, ob_main, o);
    if (rc != 0) {
        pthread_mutex_destroy(&o->mu);
        pthread_cond_destroy(&o->cv);
        pthread_cond_destroy(&o->empty_cv);
        free(o);
        return -rc;
    }
    pthread_setname_np(o->thread, "ns-outbox"); /* names for top -H and perf */
    *out = o;
    return 0;
}

void outbox_stop(struct outbox *o)
{
    if (!o)
        return;
    pthread_mutex_lock(&o->mu);
    o->stopping = true;
    pthread_cond_broadcast(&o->cv);
    pthread_mutex_unlock(&o->mu);
    pthread_join(o->thread, NULL);
    pthread_mutex_destroy(&o->mu);
    pthread_cond_destroy(&o->cv);
    pthread_cond_destroy(&o->empty_cv);
    free(o);
}

int outbox_send(struct outbox *o, void *buf, size_t len, unsigned timeout_ms, cluster_done_fn done,
                void *arg)
{
    return outbox_send_lazy(o, buf, len, false, done, arg, NULL, timeout_ms);
}

int outbox_send_lazy(struct outbox *o, void *buf, size_t len, bool lazy, cluster_done_fn done,
                     void *arg, void **token, unsigned timeout_ms)
{
    struct ob_item *it = calloc(1, sizeof *it);
    if (!it) {
        free(buf);
        return -ENOMEM;
    }
    it->buf = buf;
    it->len = len;
    it->queued_ms = nsync_mono_ms();
    it->queued_us = nsync_mono_us();
    it->lazy = lazy;
    it->deadline_ms = timeout_ms ? it->queued_ms + timeout_ms : 0;
    it->done = done;
    it->arg = arg;
    pthread_mutex_lock(&o->mu);
    if (o->stopping) {
        pthread_mutex_unlock(&o->mu);
        free(buf);
        free(it);
        return -ESHUTDOWN;
    }
    if (o->tail)
        o->tail->next = it;
    else
        o->head = it;
    o->tail = it;
    o->queued++;
    it->seq = ++o->sent_seq;
    if (token)
        *token = it;
    pthread_cond_signal(&o->cv);
    pthread_mutex_unlock(&o->mu);
    return 0;
}

int outbox_cancel(struct outbox *o, void *token)
{
    struct ob_item *it = token;
    pthread_mutex_lock(&o->mu);
    if (it->taken) {
        pthread_mutex_unlock(&o->mu);
        return -EALREADY;
    }
    ob_unlink(o, it);
    pthread_mutex_unlock(&o->mu);
    free(it->buf);
    free(it);
    return 0;
}

/* A synchronous caller's slot; lives on its stack until done. */
struct ob_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    int rc;
    struct cluster_reply reply;
};

static void ob_wait_done(void *arg, int rc, const struct cluster_reply *reply)
{
    struct ob_wait *w = arg;
    pthread_mutex_lock(&w->mu);
    w->rc = rc;
    w->reply = *reply;
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

int outbox_submit(struct outbox *o, void *buf, size_t len, unsigned timeout_ms,
                  struct cluster_reply *reply)
{
    assert(!outbox_on_thread(o)); /* it would wait for itself */
    struct ob_wait w = {.done = false};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    int rc = outbox_send(o, buf, len, timeout_ms ? timeout_ms : 1, ob_wait_done, &w);
    if (rc == 0) {
        /* The sender answers every item by its deadline plus one delivery
         * attempt, which is itself bounded by that deadline. */
        pthread_mutex_lock(&w.mu);
        while (!w.done)
            pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
        rc = w.rc;
        if (rc == 0 && reply)
            *reply = w.reply;
    }
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    return rc;
}

int outbox_drain(struct outbox *o, unsigned timeout_ms)
{
    struct timespec dl;
    nsync_deadline(&dl, (uint64_t)timeout_ms * 1000u);
    int rc = 0;
    pthread_mutex_lock(&o->mu);
    while (o->head && rc == 0)
        if (pthread_cond_timedwait(&o->empty_cv, &o->mu, &dl) == ETIMEDOUT && o->head)
            rc = -ETIMEDOUT;
    pthread_mutex_unlock(&o->mu);
    return rc;
}

int outbox_barrier(struct outbox *o, unsigned timeout_ms)
{
    assert(!outbox_on_thread(o)); /* it would wait for itself */
    uint64_t end = nsync_mono_ms() + timeout_ms;
    int rc = 0;
    pthread_mutex_lock(&o->mu);
    uint64_t mine = o->sent_seq;
    /* The head is the oldest item not answered: once it is younger than
     * the barrier, everything before the barrier has been answered. */
    while (o->head && o->head->seq <= mine) {
        if (o->io.writable && o->io.writable(o->io.data) < 0) {
            rc = -EROFS;
            break;
        }
        uint64_t now = nsync_mono_ms();
        if (now >= end) {
            rc = -ETIMEDOUT;
            break;
        }
        /* Wake at least every 50 ms to notice a lost quorum. */
        struct timespec dl;
        nsync_deadline(&dl, (end - now < 50 ? end - now : 50) * 1000u);
        pthread_cond_timedwait(&o->empty_cv, &o->mu, &dl);
    }
    pthread_mutex_unlock(&o->mu);
    return rc;
}

bool outbox_on_thread(const struct outbox *o)
{
    return pthread_equal(pthread_self(), o->thread);
}

unsigned outbox_backlog_ms(struct outbox *o)
{
    pthread_mutex_lock(&o->mu);
    uint64_t now = nsync_mono_ms();
    uint64_t age = o->head && now > o->head->queued_ms ? now - o->head->queued_ms : 0;
    pthread_mutex_unlock(&o->mu);
    return age > UINT32_MAX ? UINT32_MAX : (unsigned)age;
}
