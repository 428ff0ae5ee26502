/* Unit tests of the outbox (src/cluster/outbox.c): the real queue and sender
 * thread, driven through a test outbox_io whose deliver plays the cluster
 * (records each batch, fails on demand, or blocks until the test lets go). */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "cluster/outbox.h"
#include "nsync.h"

#define MAX_ITEMS 4096

/* The test's cluster: what was delivered, and how to answer. */
struct fake {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned calls;
    size_t max_batch;
    uint32_t delivered[MAX_ITEMS]; /* item values in delivery order (applied ones) */
    size_t n_delivered;
    int fail_calls;        /* this many calls return fail_rc first */
    int fail_rc;
    int always_rc;         /* != 0: every call returns it */
    int item_rc;           /* on call item_rc_call: items from index 1 on get it */
    unsigned item_rc_call;
    uint32_t malformed;    /* item value answered -EINVAL (0: none) */
    bool gate;             /* deliver blocks while true */
    bool in_deliver;
    unsigned delay_ms;     /* each call sleeps this long */
    int readonly;          /* what io.writable answers (0 or -EROFS) */
};

static void fake_init(struct fake *f)
{
    memset(f, 0, sizeof *f);
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static uint32_t value_of(const struct cluster_item *it)
{
    uint32_t v;
    memcpy(&v, it->buf, sizeof v);
    return v;
}

static int fake_deliver(void *data, struct cluster_item *items, size_t n, unsigned timeout_ms)
{
    struct fake *f = data;
    pthread_mutex_lock(&f->mu);
    f->calls++;
    f->in_deliver = true;
    pthread_cond_broadcast(&f->cv);
    while (f->gate)
        pthread_cond_wait(&f->cv, &f->mu);
    f->in_deliver = false;
    if (n > f->max_batch)
        f->max_batch = n;
    unsigned delay = f->delay_ms;
    int rc = f->always_rc;
    if (!rc && f->fail_calls > 0) {
        f->fail_calls--;
        rc = f->fail_rc;
    }
    bool first = f->item_rc && f->calls == f->item_rc_call;
    if (rc == 0) {
        for (size_t i = 0; i < n; i++) {
            uint32_t v = value_of(&items[i]);
            if (first && i == 1) {
                for (; i < n; i++)
                    items[i].rc = f->item_rc;
                break;
            }
            items[i].rc = v == f->malformed && v ? -EINVAL : 0;
            items[i].reply = (struct cluster_reply){.version = v};
            if (items[i].rc == 0 && f->n_delivered < MAX_ITEMS)
                f->delivered[f->n_delivered++] = v;
        }
    }
    pthread_mutex_unlock(&f->mu);
    if (delay)
        sleep_ms(delay);
    return rc;
}

static bool fake_wait_change(void *data, uint64_t *seen, unsigned timeout_ms)
{
    sleep_ms(timeout_ms);
    return false;
}

static int fake_writable(void *data)
{
    struct fake *f = data;
    pthread_mutex_lock(&f->mu);
    int rc = f->readonly;
    pthread_mutex_unlock(&f->mu);
    return rc;
}

static struct outbox *start(struct fake *f, unsigned attempt_ms)
{
    struct outbox_io io = {.data = f, .deliver = fake_deliver, .wait_change = fake_wait_change,
                           .writable = fake_writable};
    struct outbox *o = NULL;
    assert_int_equal(outbox_start(&io, attempt_ms, &o), 0);
    assert_non_null(o);
    return o;
}

static void *encode(uint32_t v)
{
    void *b = malloc(sizeof v);
    memcpy(b, &v, sizeof v);
    return b;
}

static void set_gate(struct fake *f, bool on)
{
    pthread_mutex_lock(&f->mu);
    f->gate = on;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

static void wait_in_deliver(struct fake *f)
{
    pthread_mutex_lock(&f->mu);
    while (!f->in_deliver)
        pthread_cond_wait(&f->cv, &f->mu);
    pthread_mutex_unlock(&f->mu);
}

/* What done saw, per item value. */
struct answers {
    pthread_mutex_t mu;
    int calls[MAX_ITEMS];
    int rc[MAX_ITEMS];
    uint64_t version[MAX_ITEMS];
};

struct done_arg {
    struct answers *a;
    uint32_t v;
};

static struct done_arg args[MAX_ITEMS];

static void done_cb(void *arg, int rc, const struct cluster_reply *reply)
{
    struct done_arg *d = arg;
    pthread_mutex_lock(&d->a->mu);
    d->a->calls[d->v]++;
    d->a->rc[d->v] = rc;
    d->a->version[d->v] = reply->version;
    pthread_mutex_unlock(&d->a->mu);
}

static struct answers *answers_new(void)
{
    struct answers *a = calloc(1, sizeof *a);
    pthread_mutex_init(&a->mu, NULL);
    return a;
}

/* Wait (up to 2 s) for item v's answer (done runs on the sender thread). */
static int calls_of(struct answers *a, uint32_t v)
{
    for (int i = 0; i < 2000; i++) {
        pthread_mutex_lock(&a->mu);
        int n = a->calls[v];
        pthread_mutex_unlock(&a->mu);
        if (n)
            return n;
        sleep_ms(1);
    }
    return 0;
}

static int send_v(struct outbox *o, struct answers *a, uint32_t v, unsigned timeout_ms)
{
    args[v] = (struct done_arg){.a = a, .v = v};
    return outbox_send(o, encode(v), sizeof v, timeout_ms, done_cb, &args[v]);
}

/* ---------------- FIFO order across threads ---------------- */

#define THREADS 4
#define PER_THREAD 300

struct sender {
    struct outbox *o;
    struct answers *a;
    unsigned t;
    unsigned errors;
};

static void *sender_main(void *arg)
{
    struct sender *s = arg;
    for (uint32_t k = 0; k < PER_THREAD; k++) {
        uint32_t v = 1 + s->t * PER_THREAD + k;
        if (send_v(s->o, s->a, v, 0) != 0)
            s->errors++; /* cmocka's asserts belong to the main thread */
        if (k % 50 == 0)
            sleep_ms(1);
    }
    return NULL;
}

static void test_fifo_across_threads(void **state)
{
    struct fake f;
    fake_init(&f);
    f.delay_ms = 1;
    struct outbox *o = start(&f, 1000);
    struct answers *a = answers_new();
    pthread_t th[THREADS];
    struct sender s[THREADS];
    for (unsigned t = 0; t < THREADS; t++) {
        s[t] = (struct sender){.o = o, .a = a, .t = t};
        pthread_create(&th[t], NULL, sender_main, &s[t]);
    }
    for (unsigned t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    for (unsigned t = 0; t < THREADS; t++)
        assert_int_equal(s[t].errors, 0);
    assert_int_equal(outbox_drain(o, 5000), 0);
    outbox_stop(o);

    assert_int_equal(f.n_delivered, THREADS * PER_THREAD);
    uint32_t last[THREADS] = {0};
    for (size_t i = 0; i < f.n_delivered; i++) {
        uint32_t v = f.delivered[i];
        unsigned t = (v - 1) / PER_THREAD;
        assert_true(v > last[t]); /* each thread's items in the order it sent them */
        last[t] = v;
    }
    for (uint32_t v = 1; v <= THREADS * PER_THREAD; v++) {
        assert_int_equal(a->calls[v], 1);
        assert_int_equal(a->rc[v], 0);
        assert_int_equal(a->version[v], v); /* each got its own reply */
    }
    free(a);
}

/* ---------------- batching ---------------- */

static void test_batching(void **state)
{
    struct fake f;
    fake_init(&f);
    f.gate = true;
    struct outbox *o = start(&f, 1000);
    struct answers *a = answers_new();
    assert_int_equal(send_v(o, a, 1, 0), 0);
    wait_in_deliver(&f); /* item 1 is in a delivery that blocks */
    for (uint32_t v = 2; v <= 101; v++)
        assert_int_equal(send_v(o, a, v, 0), 0);
    set_gate(&f, false);
    assert_int_equal(outbox_drain(o, 5000), 0);
    outbox_stop(o);
    /* What queued up during the first delivery went as one batch. */
    assert_int_equal(f.calls, 2);
    assert_int_equal(f.max_batch, 100);
    for (uint32_t v = 1; v <= 101; v++)
        assert_int_equal(a->calls[v], 1);
    free(a);
}

/* ---------------- merges of one path's announces ---------------- */

static int send_tagged(struct outbox *o, struct answers *a, uint32_t v, const char *key,
                       uint32_t merge, bool fence)
{
    args[v] = (struct done_arg){.a = a, .v = v};
    struct outbox_tag t = {.key = key, .merge = merge, .fence = fence};
    return outbox_send_tagged(o, encode(v), sizeof v, &t, done_cb, &args[v]);
}

static void test_merge(void **state)
{
    struct fake f;
    fake_init(&f);
    f.gate = true;
    struct outbox *o = start(&f, 1000);
    struct answers *a = answers_new();
    assert_int_equal(send_tagged(o, a, 1, "a", 1, false), 0);
    wait_in_deliver(&f); /* 1 is in a delivery: nothing merges into it */
    assert_int_equal(send_tagged(o, a, 2, "a", 1, false), 0);
    assert_int_equal(send_tagged(o, a, 3, "b", 1, false), 0);
    assert_int_equal(send_tagged(o, a, 4, "a", 1, false), 0); /* replaces 2, in its place */
    assert_int_equal(send_tagged(o, a, 5, "a", 3, false), 0); /* another class: queued */
    assert_int_equal(send_tagged(o, a, 6, "b", 0, false), 0); /* not mergeable ... */
    assert_int_equal(send_tagged(o, a, 7, "b", 1, false), 0); /* ... and 3 is behind it */
    assert_int_equal(send_tagged(o, a, 8, "c", 0, true), 0);  /* a fence */
    assert_int_equal(send_tagged(o, a, 9, "a", 3, false), 0); /* 5 is before the fence */
    assert_int_equal(send_tagged(o, a, 10, "a", 3, false), 0); /* replaces 9 */
    set_gate(&f, false);
    assert_int_equal(outbox_drain(o, 5000), 0);
    uint32_t want[] = {1, 4, 3, 5, 6, 7, 8, 10};
    assert_int_equal(f.n_delivered, sizeof want / sizeof want[0]);
    for (size_t i = 0; i < f.n_delivered; i++)
        assert_int_equal(f.delivered[i], want[i]);
    for (uint32_t v = 1; v <= 10; v++) {
        assert_int_equal(calls_of(a, v), 1); /* every done exactly once */
        assert_int_equal(a->rc[v], 0);
    }
    /* A replaced command's done sees no version: its state went with the newer. */
    assert_int_equal(a->version[2], 0);
    assert_int_equal(a->version[4], 4);
    assert_int_equal(a->version[9], 0);
    outbox_stop(o);
    free(a);
}

/* Replaced commands are answered at shutdown too. */
static void test_merge_shutdown(void **state)
{
    struct fake f;
    fake_init(&f);
    f.gate = true;
    struct outbox *o = start(&f, 1000);
    struct answers *a = answers_new();
    assert_int_equal(send_tagged(o, a, 1, "x", 0, false), 0);
    wait_in_deliver(&f);
    assert_int_equal(send_tagged(o, a, 2, "a", 1, false), 0);
    assert_int_equal(send_tagged(o, a, 3, "a", 1, false), 0);
    f.always_rc = -ESHUTDOWN;
    set_gate(&f, false);
    outbox_stop(o);
    assert_int_equal(a->calls[2], 1);
    assert_int_equal(a->calls[3], 1);
    assert_int_equal(a->rc[2], -ESHUTDOWN);
    free(a);
}

/* ---------------- lazy items and cancel ---------------- */

static void test_lazy_and_cancel(void **state)
{
    struct fake f;
    fake_init(&f);
    f.gate = true;
    struct outbox *o = start(&f, 1000);
    struct answers *a = answers_new();
    void *tok1 = NULL, *tok2 = NULL;
    args[1] = (struct done_arg){.a = a, .v = 1};
    assert_int_equal(outbox_send_lazy(o, encode(1), 4, false, done_cb, &args[1], &tok1, 0), 0);
    wait_in_deliver(&f);
    /* In a delivery: too late to take back. */
    assert_int_equal(outbox_cancel(o, tok1), -EALREADY);
    args[2] = (struct done_arg){.a = a, .v = 2};
    assert_int_equal(outbox_send_lazy(o, encode(2), 4, true, done_cb, &args[2], &tok2, 0), 0);
    assert_int_equal(outbox_cancel(o, tok2), 0); /* still queued: taken back */
    set_gate(&f, false);
    assert_int_equal(outbox_drain(o, 5000), 0);
    assert_int_equal(calls_of(a, 1), 1);
    assert_int_equal(a->calls[2], 0); /* cancelled: done never called */

    /* A lone lazy item lingers about 2 ms for company, then goes anyway. */
    uint64_t t0 = nsync_mono_us();
    args[3] = (struct done_arg){.a = a, .v = 3};
    assert_int_equal(outbox_send_lazy(o, encode(3), 4, true, done_cb, &args[3], NULL, 0), 0);
    assert_int_equal(outbox_drain(o, 5000), 0);
    uint64_t waited = nsync_mono_us() - t0;
    assert_true(waited >= 1500);
    assert_int_equal(calls_of(a, 3), 1);

    /* A lazy item and an eager one sent right after it travel together
     * (a few tries: a descheduled test thread may miss the 2 ms). */
    bool together = false;
    for (uint32_t v = 4; v < 14 && !together; v += 2) {
        unsigned calls = f.calls;
        args[v] = (struct done_arg){.a = a, .v = v};
        assert_int_equal(outbox_send_lazy(o, encode(v), 4, true, done_cb, &args[v], NULL, 0), 0);
        assert_int_equal(send_v(o, a, v + 1, 0), 0);
        assert_int_equal(outbox_drain(o, 5000), 0);
        together = f.calls == calls + 1;
        assert_int_equal(calls_of(a, v), 1);
        assert_int_equal(calls_of(a, v + 1), 1);
    }
    assert_true(together);
    outbox_stop(o);
    free(a);
}

/* ---------------- timeouts and retries ---------------- */

static void test_timeout(void **state)
{
    struct fake f;
    fake_init(&f);
    f.always_rc = -ENOTCONN; /* never a leader */
    struct outbox *o = start(&f, 1000);
    struct cluster_reply rep;
    uint64_t t0 = nsync_mono_ms();
    assert_int_equal(outbox_submit(o, encode(1), 4, 150, &rep), -EROFS);
    uint64_t took = nsync_mono_ms() - t0;
    assert_true(took >= 150);
    assert_true(took < 150 + 1000); /* the deadline plus at most one back-off and attempt */
    assert_true(f.calls > 1);       /* it kept trying meanwhile */
    outbox_stop(o);
}

static void test_retry_until_leader(void **state)
{
    struct fake f;
    fake_init(&f);
    f.fail_calls = 3;
    f.fail_rc = -ENOTCONN;
    struct outbox *o = start(&f, 1000);
    struct cluster_reply rep = {0};
    assert_int_equal(outbox_submit(o, encode(7), 4, 5000, &rep), 0);
    assert_int_equal(rep.version, 7);
    assert_int_equal(f.calls, 4);
    outbox_stop(o);
}

static void test_retry_rest_of_batch(void **state)
{
    struct fake f;
    fake_init(&f);
    f.gate = true;
    f.item_rc = -ENOTCONN; /* second delivery: its items from the 2nd on not applied */
    f.item_rc_call = 2;
    struct outbox *o = start(&f, 1000);
    struct answers *a = answers_new();
    assert_int_equal(send_v(o, a, 50, 0), 0);
    wait_in_deliver(&f); /* 1..5 queue up behind it and go as one batch */
    for (uint32_t v = 1; v <= 5; v++)
        assert_int_equal(send_v(o, a, v, 0), 0);
    set_gate(&f, false);
    assert_int_equal(outbox_drain(o, 5000), 0);
    outbox_stop(o);
    /* 1 applied once; 2..5 again, in order, after the failure. */
    assert_int_equal(f.calls, 3);
    assert_int_equal(f.n_delivered, 6);
    for (uint32_t v = 1; v <= 5; v++) {
        assert_int_equal(f.delivered[v], v);
        assert_int_equal(a->calls[v], 1);
        assert_int_equal(a->rc[v], 0);
    }
    free(a);
}

static void test_malformed_answered(void **state)
{
    struct fake f;
    fake_init(&f);
    f.malformed = 2;
    f.gate = true;
    struct outbox *o = start(&f, 1000);
    struct answers *a = answers_new();
    for (uint32_t v = 1; v <= 3; v++)
        assert_int_equal(send_v(o, a, v, 0), 0);
    set_gate(&f, false);
    assert_int_equal(outbox_drain(o, 5000), 0);
    outbox_stop(o);
    assert_int_equal(a->rc[1], 0);
    assert_int_equal(a->rc[2], -EINVAL); /* answered, not retried */
    assert_int_equal(a->rc[3], 0);
    free(a);
}

/* ---------------- drain ---------------- */

static void test_drain(void **state)
{
    struct fake f;
    fake_init(&f);
    f.gate = true;
    struct outbox *o = start(&f, 1000);
    struct answers *a = answers_new();
    assert_int_equal(send_v(o, a, 1, 0), 0);
    wait_in_deliver(&f);
    assert_int_equal(outbox_drain(o, 50), -ETIMEDOUT);
    assert_true(outbox_backlog_ms(o) >= 40);
    set_gate(&f, false);
    assert_int_equal(outbox_drain(o, 5000), 0);
    assert_int_equal(calls_of(a, 1), 1);
    assert_int_equal(outbox_backlog_ms(o), 0);
    outbox_stop(o);
    free(a);
}

/* A barrier waits for what was queued before it, and done has run by then
 * (fsync reads what done recorded). */
static void test_barrier(void **state)
{
    struct fake f;
    fake_init(&f);
    f.gate = true;
    struct outbox *o = start(&f, 1000);
    struct answers *a = answers_new();
    assert_int_equal(send_v(o, a, 1, 0), 0);
    wait_in_deliver(&f);
    assert_int_equal(send_v(o, a, 2, 0), 0);
    assert_int_equal(outbox_barrier(o, 50), -ETIMEDOUT);
    set_gate(&f, false);
    assert_int_equal(outbox_barrier(o, 5000), 0);
    pthread_mutex_lock(&a->mu);
    assert_int_equal(a->calls[1], 1); /* no waiting: done ran before the barrier returned */
    assert_int_equal(a->calls[2], 1);
    assert_int_equal(a->version[2], 2);
    pthread_mutex_unlock(&a->mu);
    assert_int_equal(outbox_barrier(o, 0), 0); /* nothing queued */
    outbox_stop(o);
    free(a);
}

/* Without a quorum: waiting callers are answered EROFS at once, announces
 * (no deadline) stay queued and go once the quorum is back; a barrier
 * gives up with EROFS. */
static void test_readonly(void **state)
{
    struct fake f;
    fake_init(&f);
    f.always_rc = -ENOTCONN;
    f.readonly = -EROFS;
    struct outbox *o = start(&f, 1000);
    struct answers *a = answers_new();
    assert_int_equal(send_v(o, a, 1, 0), 0);
    struct cluster_reply rep;
    uint64_t t0 = nsync_mono_ms();
    assert_int_equal(outbox_submit(o, encode(2), 4, 60000, &rep), -EROFS);
    assert_true(nsync_mono_ms() - t0 < 1000); /* at once, not at its 60 s deadline */
    assert_int_equal(outbox_barrier(o, 60000), -EROFS);
    assert_int_equal(a->calls[1], 0);
    pthread_mutex_lock(&f.mu);
    f.readonly = 0;
    f.always_rc = 0;
    pthread_mutex_unlock(&f.mu);
    assert_int_equal(outbox_barrier(o, 5000), 0);
    assert_int_equal(calls_of(a, 1), 1);
    assert_int_equal(a->rc[1], 0);
    outbox_stop(o);
    free(a);
}

/* ---------------- shutdown ---------------- */

struct waiter {
    struct outbox *o;
    int rc;
};

static void *waiter_main(void *arg)
{
    struct waiter *w = arg;
    struct cluster_reply rep;
    w->rc = outbox_submit(w->o, encode(1000), 4, 60000, &rep);
    return NULL;
}

static void test_shutdown(void **state)
{
    struct fake f;
    fake_init(&f);
    f.always_rc = -ENOTCONN;
    struct outbox *o = start(&f, 1000);
    struct answers *a = answers_new();
    for (uint32_t v = 1; v <= 20; v++)
        assert_int_equal(send_v(o, a, v, 0), 0);
    struct waiter w = {.o = o, .rc = 1};
    pthread_t th;
    pthread_create(&th, NULL, waiter_main, &w);
    sleep_ms(30);
    outbox_stop(o);
    pthread_join(th, NULL);
    assert_int_equal(w.rc, -ESHUTDOWN);
    for (uint32_t v = 1; v <= 20; v++) {
        assert_int_equal(a->calls[v], 1); /* exactly once */
        assert_int_equal(a->rc[v], -ESHUTDOWN);
    }
    free(a);
}

/* The cluster says it is stopping: everything queued is answered
 * -ESHUTDOWN and nothing more is taken. */
static void test_deliver_shutdown(void **state)
{
    struct fake f;
    fake_init(&f);
    f.always_rc = -ESHUTDOWN;
    f.gate = true; /* all five queued before the first answer closes the outbox */
    struct outbox *o = start(&f, 1000);
    struct answers *a = answers_new();
    for (uint32_t v = 1; v <= 5; v++)
        assert_int_equal(send_v(o, a, v, 0), 0);
    set_gate(&f, false);
    for (int i = 0; i < 500; i++) {
        if (send_v(o, a, 100, 0) == -ESHUTDOWN)
            break;
        sleep_ms(2);
    }
    assert_int_equal(send_v(o, a, 101, 0), -ESHUTDOWN);
    assert_int_equal(a->calls[101], 0); /* refused: done not called */
    outbox_stop(o);
    for (uint32_t v = 1; v <= 5; v++) {
        assert_int_equal(a->calls[v], 1);
        assert_int_equal(a->rc[v], -ESHUTDOWN);
    }
    free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fifo_across_threads),
        cmocka_unit_test(test_batching),
        cmocka_unit_test(test_lazy_and_cancel),
        cmocka_unit_test(test_merge),
        cmocka_unit_test(test_merge_shutdown),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_retry_until_leader),
        cmocka_unit_test(test_retry_rest_of_batch),
        cmocka_unit_test(test_malformed_answered),
        cmocka_unit_test(test_drain),
        cmocka_unit_test(test_barrier),
        cmocka_unit_test(test_readonly),
        cmocka_unit_test(test_shutdown),
        cmocka_unit_test(test_deliver_shutdown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
