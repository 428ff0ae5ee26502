/* Unit tests for src/fs/journal_rec.c: what the replay at start takes from
 * .nsyncfs/unsent, whatever a crash or another program left in it. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "fs/journal_rec.h"

struct got {
    char paths[8][64];
    size_t n;
};

static int collect(const char *p, void *data)
{
    struct got *g = data;
    if (g->n == 8)
        return -ENOSPC;
    strncpy(g->paths[g->n++], p, 63);
    return 0;
}

static void test_records_and_refusals(void **state)
{
    (void)state;
    static const char buf[] = "a.txt\0dir/b\0../up\0/abs\0.nsyncfs/raft/metadata1\0a//b\0\0last";
    struct got g = {.n = 0};
    /* sizeof - 1: the array's own terminator is not part of the file */
    assert_int_equal(journal_records(buf, sizeof buf - 1, collect, &g), 0);
    assert_int_equal(g.n, 2);
    assert_string_equal(g.paths[0], "a.txt");
    assert_string_equal(g.paths[1], "dir/b");
}

/* A write torn by a crash leaves a prefix of a path without its NUL: it
 * names another path (or none), and must not be announced. */
static void test_torn_last_record_dropped(void **state)
{
    (void)state;
    static const char buf[] = "whole\0dir/fi";
    struct got g = {.n = 0};
    assert_int_equal(journal_records(buf, sizeof buf - 1, collect, &g), 0);
    assert_int_equal(g.n, 1);
    assert_string_equal(g.paths[0], "whole");
    g.n = 0;
    assert_int_equal(journal_records(buf, 0, collect, &g), 0);
    assert_int_equal(g.n, 0);
}

static int stop_at_first(const char *p, void *data)
{
    (void)p;
    ++*(int *)data;
    return 7;
}

static void test_callback_stops(void **state)
{
    (void)state;
    static const char buf[] = "a\0b\0c\0";
    int calls = 0;
    assert_int_equal(journal_records(buf, sizeof buf - 1, stop_at_first, &calls), 7);
    assert_int_equal(calls, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_records_and_refusals),
        cmocka_unit_test(test_torn_last_record_dropped),
        cmocka_unit_test(test_callback_stops),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
