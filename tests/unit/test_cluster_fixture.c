/* Three raft servers in canonical/raft's in-memory fixture, each with the
 * real FSM glue (src/cluster/glue.c) around a real struct fsm: commands
 * committed on a leader reach every replica alike, across leader changes. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <raft.h>
#include <raft/fixture.h>

#include "cluster/fsm.h"
#include "cluster/glue.h"

#define N 3
#define STEP_MS 10000

struct replica {
    struct fsm *fsm;
    pthread_rwlock_t lock;
    struct glue glue;
    unsigned applied; /* the glue's hook */
};

struct world {
    struct raft_fixture f;
    struct replica r[N];
    int away;  /* a server cut off by the test: commit does not wait for it (-1: none) */
};

static void on_applied(void *data)
{
    (*(unsigned *)data)++;
}

static int setup(void **state)
{
    struct world *w = calloc(1, sizeof *w);
    assert_int_equal(raft_fixture_initialize(&w->f), 0);
    for (unsigned i = 0; i < N; i++) {
        struct replica *r = &w->r[i];
        r->fsm = fsm_new();
        assert_non_null(r->fsm);
        pthread_rwlock_init(&r->lock, NULL);
        glue_init(&r->glue, NULL, r->fsm, &r->lock, on_applied, &r->applied);
        assert_int_equal(raft_fixture_grow(&w->f, &r->glue.iface), 0);
        r->glue.raft = raft_fixture_get(&w->f, i); /* exists only now */
        /* Small, so that a server that was away catches up by snapshot:
         * that runs the glue's snapshot and restore too. */
        raft_set_snapshot_threshold(r->glue.raft, 8);
        raft_set_snapshot_trailing(r->glue.raft, 2);
    }
    struct raft_configuration conf;
    assert_int_equal(raft_fixture_configuration(&w->f, N, &conf), 0);
    assert_int_equal(raft_fixture_bootstrap(&w->f, &conf), 0);
    raft_configuration_close(&conf);
    assert_int_equal(raft_fixture_start(&w->f), 0);
    w->away = -1;
    *state = w;
    return 0;
}

static int teardown(void **state)
{
    struct world *w = *state;
    raft_fixture_close(&w->f);
    for (unsigned i = 0; i < N; i++) {
        fsm_free(w->r[i].fsm);
        pthread_rwlock_destroy(&w->r[i].lock);
    }
    free(w);
    return 0;
}

/* Node ids are the fixture's: 1..N for servers 0..N-1. */
static uint64_t id_of(unsigned i)
{
    return i + 1;
}

static unsigned leader(struct world *w)
{
    assert_true(raft_fixture_step_until_has_leader(&w->f, STEP_MS));
    unsigned l = raft_fixture_leader_index(&w->f);
    assert_true(l < N);
    return l;
}

struct applied {
    bool done;
    int status;
    int result;
};

static void apply_cb(struct raft_apply *req, int status, void *result)
{
    struct applied *a = req->data;
    a->done = true;
    a->status = status;
    a->result = (int)(intptr_t)result;
}

static bool is_done(struct raft_fixture *f, void *arg)
{
    return ((struct applied *)arg)->done;
}

/* Commit cmd through the current leader and step until every live server
 * applied it. Returns fsm_apply's verdict on the leader. */
static int commit(struct world *w, const struct fsm_cmd *cmd)
{
    unsigned l = leader(w);
    struct raft *raft = raft_fixture_get(&w->f, l);
    void *buf;
    size_t len;
    assert_int_equal(fsm_cmd_encode(cmd, &buf, &len), 0);
    /* Padded to 8 bytes as the cluster does for raft's on-disk log. */
    size_t padded = (len + 7) & ~(size_t)7;
    buf = realloc(buf, padded);
    memset((char *)buf + len, 0, padded - len);
    struct raft_buffer rb = {.base = buf, .len = padded};
    struct raft_apply req;
    struct applied a = {0};
    req.data = &a;
    assert_int_equal(raft_apply(raft, &req, &rb, 1, apply_cb), 0);
    assert_true(raft_fixture_step_until(&w->f, is_done, &a, STEP_MS));
    assert_int_equal(a.status, 0);
    raft_index idx = raft_last_applied(raft);
    for (unsigned i = 0; i < N; i++)
        if (raft_fixture_alive(&w->f, i) && (int)i != w->away)
            assert_true(raft_fixture_step_until_applied(&w->f, i, idx, STEP_MS));
    return a.result;
}

static int lock(struct world *w, const char *path, uint64_t node, uint64_t now_ms)
{
    struct fsm_cmd c = {.op = FSM_OP_LOCK, .path = path, .node = node, .now_ms = now_ms, .lease_ms = 10000};
    return commit(w, &c);
}

static int announce(struct world *w, const char *path, uint64_t node, uint8_t kind)
{
    struct fsm_cmd c = {.op = FSM_OP_ANNOUNCE, .path = path, .node = node, .now_ms = 1,
                        .meta = {.kind = kind, .mode = 0644}};
    return commit(w, &c);
}

static int synced(struct world *w, const char *path, uint64_t node, uint64_t version)
{
    struct fsm_synced_item it = {.path = path, .version = version};
    struct fsm_cmd c = {.op = FSM_OP_SYNCED, .node = node, .items = &it, .n_items = 1};
    return commit(w, &c);
}

static void join_all(struct world *w)
{
    for (unsigned i = 0; i < N; i++) {
        char caddr[32], faddr[32];
        snprintf(caddr, sizeof caddr, "127.0.0.1:%u", 9000 + i);
        snprintf(faddr, sizeof faddr, "127.0.0.1:%u", 9100 + i);
        struct fsm_cmd c = {.op = FSM_OP_JOIN, .node = id_of(i), .caddr = caddr, .faddr = faddr};
        assert_int_equal(commit(w, &c), 0);
    }
}

/* Every live replica's catalog, byte for byte the same snapshot. */
static void assert_replicas_agree(struct world *w)
{
    void *first = NULL;
    size_t first_len = 0;
    for (unsigned i = 0; i < N; i++) {
        if (!raft_fixture_alive(&w->f, i))
            continue;
        void *buf;
        size_t len;
        assert_int_equal(fsm_snapshot(w->r[i].fsm, &buf, &len), 0);
        if (!first) {
            first = buf;
            first_len = len;
            continue;
        }
        assert_int_equal(len, first_len);
        assert_memory_equal(buf, first, len);
        free(buf);
    }
    free(first);
}

static void test_replicas_agree(void **state)
{
    struct world *w = *state;
    join_all(w);
    assert_int_equal(announce(w, "a", id_of(0), FSM_FILE), 0);
    assert_int_equal(announce(w, "d", id_of(1), FSM_DIR), 0);
    assert_int_equal(lock(w, "a", id_of(2), 100), 0);
    assert_replicas_agree(w);
    for (unsigned i = 0; i < N; i++) {
        assert_int_equal(fsm_member_count(w->r[i].fsm), N);
        const struct fsm_entry *e = fsm_get(w->r[i].fsm, "a");
        assert_non_null(e);
        assert_true(e->pending);
        assert_true(w->r[i].applied > 0); /* the glue's hook ran */
    }
}

static void test_locks_across_leader_change(void **state)
{
    struct world *w = *state;
    join_all(w);
    assert_int_equal(lock(w, "l", id_of(0), 1000), 0);
    assert_int_equal(lock(w, "l", id_of(1), 2000), -EBUSY); /* held, lease live */

    /* The leader dies; another one is elected and knows the lock. */
    unsigned old = leader(w);
    raft_fixture_kill(&w->f, old);
    assert_true(raft_fixture_step_until_has_no_leader(&w->f, STEP_MS));
    unsigned l = leader(w);
    assert_true(l != old);
    assert_int_equal(lock(w, "l", id_of(1), 3000), -EBUSY);
    /* Past the lease (1000 + 10000) it may be taken. */
    assert_int_equal(lock(w, "l", id_of(1), 12000), 0);
    uint64_t holder = 0, exp = 0;
    assert_int_equal(fsm_lock_get(w->r[l].fsm, "l", &holder, &exp), 1);
    assert_int_equal(holder, id_of(1));

    /* Enough entries while it is away that it catches up by snapshot. */
    for (unsigned k = 0; k < 20; k++) {
        char p[16];
        snprintf(p, sizeof p, "f%u", k);
        assert_int_equal(announce(w, p, id_of(l), FSM_FILE), 0);
    }
    raft_fixture_revive(&w->f, old);
    raft_index idx = raft_last_applied(raft_fixture_get(&w->f, l));
    assert_true(raft_fixture_step_until_applied(&w->f, N, idx, STEP_MS));
    assert_replicas_agree(w);
    assert_int_equal(fsm_lock_get(w->r[old].fsm, "l", &holder, &exp), 1);
    assert_int_equal(holder, id_of(1));

    /* A node that leaves loses its locks, on every replica. */
    struct fsm_cmd leave = {.op = FSM_OP_LEAVE, .node = id_of(1)};
    assert_int_equal(commit(w, &leave), 0);
    for (unsigned i = 0; i < N; i++)
        assert_int_equal(fsm_locks_of(w->r[i].fsm, id_of(1)), 0);
    assert_replicas_agree(w);
}

static void test_settlement(void **state)
{
    struct world *w = *state;
    join_all(w);
    /* A delete every member has seen is forgotten. */
    assert_int_equal(announce(w, "gone", id_of(0), FSM_TOMBSTONE), 0);
    uint64_t v = fsm_version(w->r[0].fsm);
    assert_int_equal(synced(w, "gone", id_of(1), v), 0);
    for (unsigned i = 0; i < N; i++)
        assert_non_null(fsm_get(w->r[i].fsm, "gone")); /* node 3 still lacks it */

    /* A partition: a follower is cut off from the rest, which go on. */
    unsigned third = (leader(w) + 1) % N;
    w->away = (int)third;
    for (unsigned i = 0; i < N; i++)
        if (i != third) {
            raft_fixture_disconnect(&w->f, i, third);
            raft_fixture_disconnect(&w->f, third, i);
        }
    assert_int_equal(announce(w, "file", id_of(0), FSM_FILE), 0);
    uint64_t vf = fsm_version(w->r[raft_fixture_leader_index(&w->f)].fsm);
    assert_int_equal(synced(w, "file", id_of(1), vf), 0);
    assert_int_equal(fsm_version(w->r[third].fsm), v + 1); /* it missed both */
    for (unsigned i = 0; i < N; i++)
        if (i != third) {
            raft_fixture_reconnect(&w->f, i, third);
            raft_fixture_reconnect(&w->f, third, i);
        }
    w->away = -1;

    assert_int_equal(synced(w, "gone", id_of(2), v), 0);
    assert_int_equal(synced(w, "file", id_of(2), vf), 0);
    raft_index idx = raft_last_applied(raft_fixture_get(&w->f, leader(w)));
    assert_true(raft_fixture_step_until_applied(&w->f, N, idx, STEP_MS));
    for (unsigned i = 0; i < N; i++) {
        assert_null(fsm_get(w->r[i].fsm, "gone"));
        const struct fsm_entry *e = fsm_get(w->r[i].fsm, "file");
        assert_non_null(e);
        assert_false(e->pending); /* settled: every member has it */
        assert_int_equal(fsm_pending_count(w->r[i].fsm), 0);
    }
    assert_replicas_agree(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_replicas_agree, setup, teardown),
        cmocka_unit_test_setup_teardown(test_locks_across_leader_change, setup, teardown),
        cmocka_unit_test_setup_teardown(test_settlement, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
