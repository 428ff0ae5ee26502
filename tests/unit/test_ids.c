/* Unit tests for the one spelling of a node id (nsync_id_str/nsync_id_parse
 * in src/nsync.c): what the logs print is what /v1/status, the join and
 * leave requests and `nsyncfs status` read back. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "nsync.h"

static void test_round_trip(void **state)
{
    (void)state;
    const uint64_t ids[] = {1, 0x25d0b2bc1f5f1331ull, UINT64_MAX, nsync_node_id("127.0.0.1", 7001)};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        char s[NSYNC_ID_STRLEN];
        nsync_id_str(ids[i], s);
        assert_int_equal(strlen(s), 16);
        uint64_t back = 0;
        assert_int_equal(nsync_id_parse(s, &back), 0);
        assert_true(back == ids[i]);
    }
    char s[NSYNC_ID_STRLEN];
    nsync_id_str(0x1f, s);
    assert_string_equal(s, "000000000000001f"); /* zero-padded, lowercase */
}

static void test_parse_rejects(void **state)
{
    (void)state;
    const char *bad[] = {"", "0", "1f", "123456789012345",  "12345678901234567",
                         "000000000000001g", " 00000000000001f", "-00000000000001f",
                         "18446744073709551615" /* decimal: the old spelling */};
    uint64_t v = 42;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(nsync_id_parse(bad[i], &v), -EINVAL);
        assert_true(v == 42);
    }
    assert_int_equal(nsync_id_parse(NULL, &v), -EINVAL);
    assert_int_equal(nsync_id_parse("00000000000000AB", &v), 0);
    assert_true(v == 0xab);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_parse_rejects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
