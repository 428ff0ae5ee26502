/* Unit tests for src/cluster/answer.c: the leader's answer to a forwarded
 * batch, checked before the forwarding node believes any of it. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "cluster/answer.h"
#include "cluster/cluster.h"

static int decode(const char *json, struct cluster_item *items, size_t n)
{
    memset(items, 0, n * sizeof *items);
    return answer_decode(json, strlen(json), items, n);
}

static void test_good_and_short(void **state)
{
    (void)state;
    struct cluster_item it[3];
    assert_int_equal(decode("{\"results\":[[0,0,\"18446744073709551615\",\"00000000000000ff\",7],"
                            "[-16,-16,\"6\",\"0000000000000000\",\"0\"]]}", it, 3), 0);
    assert_int_equal(it[0].rc, 0);
    assert_true(it[0].reply.version == UINT64_MAX);
    assert_true(it[0].reply.lock_holder == 0xff);
    assert_true(it[0].reply.path_version == 7);
    assert_int_equal(it[1].rc, -16);
    assert_int_equal(it[1].reply.status, -16);
    assert_int_equal(it[2].rc, -ENOTCONN); /* not answered: not applied */
}

static void test_malformed(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "not json",
        "{}",
        "{\"results\":{}}",
        "{\"results\":[[0,0,\"1\",\"0000000000000001\",\"1\"],[0,0,\"1\",\"0000000000000001\",\"1\"]]}",
        "{\"results\":[[0,0,\"1\",\"0000000000000001\"]]}",        /* four fields */
        "{\"results\":[[1,0,\"1\",\"0000000000000001\",\"1\"]]}",   /* rc > 0 */
        "{\"results\":[[-5000,0,\"1\",\"0000000000000001\",\"1\"]]}",
        "{\"results\":[[0,5000,\"1\",\"0000000000000001\",\"1\"]]}",
        "{\"results\":[[0,0,\"-1\",\"0000000000000001\",\"1\"]]}",  /* not a u64 */
        "{\"results\":[[0,0,\"18446744073709551616\",\"0000000000000001\",\"1\"]]}",
        "{\"results\":[[0,0,1e300,\"0000000000000001\",\"1\"]]}",
        "{\"results\":[[0,0,\"1\",\"1\",\"1\"]]}",                  /* id not 16 hex digits */
        "{\"results\":[[\"0\",0,\"1\",\"0000000000000001\",\"1\"]]}",
        "{\"results\":[5]}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct cluster_item it[1];
        if (decode(bad[i], it, 1) != -EPROTO)
            fail_msg("answer '%s' was not refused", bad[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_and_short),
        cmocka_unit_test(test_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
