/* Unit tests for the quick check's record (src/transfer/quick.c): what a
 * clean stop records from a real catalog and real files in a temporary
 * BACKING, what the next start trusts, and what it must never trust. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "cluster/fsm.h"
#include "common/digest.h"
#include "nsync.h"
#include "transfer/quick.h"

#define SELF 11u
#define NFILES 3

struct fixture {
    struct nsync ns;
    char dir[64];
};

static void apply(struct fsm *f, const struct fsm_cmd *c)
{
    void *buf = NULL;
    size_t len = 0;
    assert_int_equal(fsm_cmd_encode(c, &buf, &len), 0);
    assert_int_equal(fsm_apply(f, buf, len), 0);
    free(buf);
}

static void write_bytes(int dirfd, const char *rel, const char *bytes)
{
    int fd = openat(dirfd, rel, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, bytes, strlen(bytes)), (ssize_t)strlen(bytes));
    close(fd);
}

/* Announce the file at rel as this node has it now (a single member: settled). */
static void announce_as_is(struct nsync *ns, const char *rel)
{
    struct stat st;
    assert_int_equal(fstatat(ns->backing_fd, rel, &st, 0), 0);
    int fd = openat(ns->backing_fd, rel, O_RDONLY);
    struct fsm_meta m = {.kind = FSM_FILE, .mode = 0644, .size = (uint64_t)st.st_size,
                         .mtime_ns = st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec};
    uint64_t n = 0;
    assert_int_equal(digest_fd(fd, m.hash, &n), 0);
    close(fd);
    struct fsm_cmd c = {.op = FSM_OP_ANNOUNCE, .node = SELF, .path = rel, .meta = m};
    apply(ns->fsm, &c);
}

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    strcpy(fx->dir, "/tmp/test_quick.XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    struct nsync *ns = &fx->ns;
    ns->cfg.backing = fx->dir;
    ns->backing_fd = open(fx->dir, O_RDONLY | O_DIRECTORY);
    assert_int_equal(mkdirat(ns->backing_fd, NSYNC_DATA_DIR, 0700), 0);
    ns->data_fd = openat(ns->backing_fd, NSYNC_DATA_DIR, O_RDONLY | O_DIRECTORY);
    ns->self_id = SELF;
    ns->fsm = fsm_new();
    pthread_rwlock_init(&ns->fsm_lock, NULL);
    struct fsm_cmd j = {.op = FSM_OP_JOIN, .node = SELF, .caddr = "127.0.0.1:1", .faddr = "127.0.0.1:2"};
    apply(ns->fsm, &j);
    char rel[16], body[32];
    for (int i = 0; i < NFILES; i++) {
        snprintf(rel, sizeof rel, "f%d", i);
        snprintf(body, sizeof body, "bytes of file %d\n", i);
        write_bytes(ns->backing_fd, rel, body);
        announce_as_is(ns, rel);
    }
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf -- '%s'", fx->dir);
    assert_int_equal(system(cmd), 0);
    fsm_free(fx->ns.fsm);
    pthread_rwlock_destroy(&fx->ns.fsm_lock);
    close(fx->ns.data_fd);
    close(fx->ns.backing_fd);
    free(fx);
    return 0;
}

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* Bounded wait until every file is older than the racy window (100 ms). */
static void wait_past_racy(struct nsync *ns)
{
    int64_t newest = 0;
    for (int i = 0; i < NFILES; i++) {
        char rel[16];
        struct stat st;
        snprintf(rel, sizeof rel, "f%d", i);
        assert_int_equal(fstatat(ns->backing_fd, rel, &st, 0), 0);
        int64_t c = st.st_ctim.tv_sec * 1000000000LL + st.st_ctim.tv_nsec;
        newest = c > newest ? c : newest;
    }
    for (int k = 0; k < 100 && now_ns() < newest + 150000000LL; k++)
        usleep(10000);
    assert_true(now_ns() >= newest + 150000000LL);
}

/* A clean stop once every file is old enough to be recorded. */
static void save_past_racy(struct nsync *ns)
{
    wait_past_racy(ns);
    assert_int_equal(xfer_quick_save(ns), 0);
}

static bool trusted(struct nsync *ns, const struct xfer_quick *q, const char *rel)
{
    struct stat st;
    assert_int_equal(fstatat(ns->backing_fd, rel, &st, AT_SYMLINK_NOFOLLOW), 0);
    pthread_rwlock_rdlock(&ns->fsm_lock);
    const struct fsm_entry *e = fsm_get(ns->fsm, rel);
    assert_non_null(e);
    uint8_t hash[FSM_HASH_LEN];
    memcpy(hash, e->hash, sizeof hash);
    uint64_t size = e->size;
    pthread_rwlock_unlock(&ns->fsm_lock);
    return xfer_quick_trusts(q, rel, &st, hash, size);
}

static void test_just_changed_files_are_left_out(void **state)
{
    struct fixture *fx = *state;
    struct xfer_quick q;
    assert_int_equal(xfer_quick_save(&fx->ns), 0);
    assert_int_equal(xfer_quick_load(&fx->ns, &q), 0);
    assert_int_equal(q.n, 0); /* all written in the last 100 ms */
    xfer_quick_free(&q);
}

static void test_unchanged_trusted_and_record_consumed(void **state)
{
    struct fixture *fx = *state;
    struct nsync *ns = &fx->ns;
    save_past_racy(ns);
    assert_int_equal(faccessat(ns->data_fd, "quick", F_OK, 0), 0);
    struct xfer_quick q;
    assert_int_equal(xfer_quick_load(ns, &q), 0);
    assert_int_equal(q.n, NFILES);
    assert_int_equal(faccessat(ns->data_fd, "quick", F_OK, 0), -1); /* gone at start */
    for (int i = 0; i < NFILES; i++) {
        char rel[16];
        snprintf(rel, sizeof rel, "f%d", i);
        assert_true(trusted(ns, &q, rel));
    }
    /* Another version's hash is never vouched for. */
    struct stat st;
    assert_int_equal(fstatat(ns->backing_fd, "f0", &st, 0), 0);
    uint8_t other[FSM_HASH_LEN] = {1};
    assert_false(xfer_quick_trusts(&q, "f0", &st, other, (uint64_t)st.st_size));
    assert_false(xfer_quick_trusts(&q, "nope", &st, other, (uint64_t)st.st_size));
    xfer_quick_free(&q);
    /* A second load finds nothing: a crash after a start trusts no record. */
    assert_int_equal(xfer_quick_load(ns, &q), 0);
    assert_int_equal(q.n, 0);
}

static void test_changes_while_down_are_not_trusted(void **state)
{
    struct fixture *fx = *state;
    struct nsync *ns = &fx->ns;
    save_past_racy(ns);
    struct stat st;
    /* f0: same size, other bytes, mtime put back (as touch -d does). */
    assert_int_equal(fstatat(ns->backing_fd, "f0", &st, 0), 0);
    write_bytes(ns->backing_fd, "f0", "BYTES OF FILE 0\n");
    struct timespec ts[2] = {st.st_atim, st.st_mtim};
    assert_int_equal(utimensat(ns->backing_fd, "f0", ts, 0), 0);
    /* f1: replaced by another inode with the same size and times. */
    assert_int_equal(fstatat(ns->backing_fd, "f1", &st, 0), 0);
    write_bytes(ns->backing_fd, "f1.new", "BYTES OF FILE 1\n");
    struct timespec ts1[2] = {st.st_atim, st.st_mtim};
    assert_int_equal(utimensat(ns->backing_fd, "f1.new", ts1, 0), 0);
    assert_int_equal(renameat(ns->backing_fd, "f1.new", ns->backing_fd, "f1"), 0);
    struct xfer_quick q;
    assert_int_equal(xfer_quick_load(ns, &q), 0);
    assert_int_equal(q.n, NFILES);
    assert_false(trusted(ns, &q, "f0"));
    assert_false(trusted(ns, &q, "f1"));
    assert_true(trusted(ns, &q, "f2"));
    xfer_quick_free(&q);
}

static void test_damaged_record_is_dropped_whole(void **state)
{
    struct fixture *fx = *state;
    struct nsync *ns = &fx->ns;
    save_past_racy(ns);
    int fd = openat(ns->data_fd, "quick", O_RDWR);
    assert_true(fd >= 0);
    uint8_t b;
    assert_int_equal(pread(fd, &b, 1, 40), 1);
    b ^= 1; /* one bit of the first file's stat */
    assert_int_equal(pwrite(fd, &b, 1, 40), 1);
    close(fd);
    struct xfer_quick q;
    assert_int_equal(xfer_quick_load(ns, &q), -EBADMSG);
    assert_int_equal(q.n, 0);
    assert_int_equal(faccessat(ns->data_fd, "quick", F_OK, 0), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_just_changed_files_are_left_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unchanged_trusted_and_record_consumed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_changes_while_down_are_not_trusted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damaged_record_is_dropped_whole, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
