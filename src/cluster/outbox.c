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
#define OUTBOX_MERGE_SCAN 512 /* a longer queue is not searched for a merge */

/* The done of a command a later one replaced (outbox_send_tagged). */
struct ob_done {
    struct ob_done *next;
    cluster_done_fn done;
    void *arg;
};

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
    char *key;               /* owned; the path it changes (outbox_tag), or NULL */
    uint32_t merge;          /* outbox_tag.merge */
    bool fence;              /* outbox_tag.fence */
    struct ob_done *replaced; /* dones of the commands merged into it, oldest first */
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
/* Answer it, and first the commands it replaced: they are done when it is
 * (their change is in it), with its rc but never its refusal, which is the
 * newest command's to handle. */
static void ob_answer(struct ob_item *it, int rc, const struct cluster_reply *r)
{
    struct cluster_reply none;
    memset(&none, 0, sizeof none);
    while (it->replaced) {
        struct ob_done *d = it->replaced;
        it->replaced = d->next;
        d->done(d->arg, rc, &none);
        free(d);
    }
    it->done(it->arg, rc, r ? r : &none);
}

static void ob_free(struct ob_item *it)
{
    assert(!it->replaced);
    free(it->key);
    free(it->buf);
    free(it);
}

static void ob_finish(struct outbox *o, struct ob_item *it, int rc, const struct cluster_reply *r)
{
    assert(it->taken);
    ob_answer(it, rc, r);
    pthread_mutex_lock(&o->mu);
    ob_unlink(o, it);
    pthread_mutex_unlock(&o->mu);
    ob_free(it);
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
            while (list) {
                struct ob_item *it = list;
                list = it->next;
                ob_answer(it, -ESHUTDOWN, NULL);
                ob_free(it);
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

/* The last queued item about tag->key, if it may take the new command in
 * its place: not in a delivery, of the same merge class, and no fence
 * queued after it. Caller holds mu. */
static struct ob_item *ob_merge_target(struct outbox *o, const struct outbox_tag *tag)
{
    if (!tag || !tag->merge || !tag->key || o->queued > OUTBOX_MERGE_SCAN)
        return NULL;
    struct ob_item *last = NULL;
    for (struct ob_item *it = o->head; it; it = it->next) {
        if (it->fence)
            last = NULL;
        else if (it->key && strcmp(it->key, tag->key) == 0)
            last = it;
    }
    return last && !last->taken && last->merge == tag->merge ? last : NULL;
}

static int ob_queue(struct outbox *o, void *buf, size_t len, bool lazy, const struct outbox_tag *tag,
                    cluster_done_fn done, void *arg, void **token, unsigned timeout_ms)
{
    struct ob_item *it = calloc(1, sizeof *it);
    char *key = tag && tag->key ? strdup(tag->key) : NULL;
    if (!it || (tag && tag->key && !key)) {
        free(it);
        free(key);
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
    it->key = key;
    it->merge = tag ? tag->merge : 0;
    it->fence = tag && tag->fence;
    pthread_mutex_lock(&o->mu);
    if (o->stopping) {
        pthread_mutex_unlock(&o->mu);
        ob_free(it);
        return -ESHUTDOWN;
    }
    struct ob_item *t = token || timeout_ms ? NULL : ob_merge_target(o, tag);
    struct ob_done *d = t ? malloc(sizeof *d) : NULL; /* none: queued unmerged */
    if (d) {
        /* The newer state of the path takes the older's place in the queue:
         * one raft entry instead of two. The older's done goes with it. */
        *d = (struct ob_done){.done = t->done, .arg = t->arg};
        struct ob_done **pp = &t->replaced;
        while (*pp)
            pp = &(*pp)->next;
        *pp = d;
        void *old = t->buf;
        t->buf = buf;
        t->len = len;
        t->done = done;
        t->arg = arg;
        pthread_mutex_unlock(&o->mu);
        free(old);
        it->buf = NULL;
        ob_free(it);
        return 0;
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

int outbox_send_lazy(struct outbox *o, void *buf, size_t len, bool lazy, cluster_done_fn done,
                     void *arg, void **token, unsigned timeout_ms)
{
    return ob_queue(o, buf, len, lazy, NULL, done, arg, token, timeout_ms);
}

int outbox_send_tagged(struct outbox *o, void *buf, size_t len, const struct outbox_tag *tag,
                       cluster_done_fn done, void *arg)
{
    return ob_queue(o, buf, len, false, tag, done, arg, NULL, 0);
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
    ob_free(it); /* a token's item takes no merges */
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
    return outbox_submit_tagged(o, buf, len, NULL, timeout_ms, reply);
}

int outbox_submit_tagged(struct outbox *o, void *buf, size_t len, const struct outbox_tag *tag,
                         unsigned timeout_ms, struct cluster_reply *reply)
{
    assert(!outbox_on_thread(o)); /* it would wait for itself */
    assert(!tag || !tag->merge); /* a waiter wants its own answer */
    struct ob_wait w = {.done = false};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    int rc = ob_queue(o, buf, len, false, tag, ob_wait_done, &w, NULL,
                      timeout_ms ? timeout_ms : 1);
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
