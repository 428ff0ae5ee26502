/* Unit tests for src/cluster/hello.c: raft's handshake as the raft port
 * sends it and reads it from whoever connects. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "cluster/hello.h"

static void test_round_trip(void **state)
{
    (void)state;
    static const char *const addrs[] = {"127.0.0.1:7001", "[::1]:7001", "node-a:1"};
    for (size_t i = 0; i < sizeof addrs / sizeof addrs[0]; i++) {
        uint8_t buf[HELLO_HEAD + HELLO_ADDR_MAX];
        size_t n = hello_encode(buf, 0xabcdef, addrs[i]);
        assert_true(n > HELLO_HEAD && (n - HELLO_HEAD) % 8 == 0);
        uint64_t id;
        size_t len;
        assert_int_equal(hello_decode_head(buf, &id, &len), 0);
        assert_true(id == 0xabcdef);
        assert_int_equal(HELLO_HEAD + len, n);
        assert_int_equal(hello_check_address((const char *)buf + HELLO_HEAD, len), 0);
        assert_string_equal((const char *)buf + HELLO_HEAD, addrs[i]);
    }
    char big[HELLO_ADDR_MAX + 1];
    memset(big, 'a', HELLO_ADDR_MAX);
    big[HELLO_ADDR_MAX] = '\0';
    uint8_t buf[HELLO_HEAD + HELLO_ADDR_MAX];
    assert_int_equal(hello_encode(buf, 1, big), 0);
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void test_bad_heads(void **state)
{
    (void)state;
    static const uint64_t bad[][3] = {
        {2, 1, 16}, {1, 0, 16}, {1, 1, 0}, {1, 1, HELLO_ADDR_MAX + 8}, {1, 1, UINT64_MAX},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint8_t h[HELLO_HEAD];
        put64(h, bad[i][0]);
        put64(h + 8, bad[i][1]);
        put64(h + 16, bad[i][2]);
        uint64_t id;
        size_t len;
        assert_int_equal(hello_decode_head(h, &id, &len), -EINVAL);
    }
}

static void test_bad_addresses(void **state)
{
    (void)state;
    /* no NUL in the announced length; empty; not host:port */
    assert_int_equal(hello_check_address("127.0.0.1:7001x", 8), -EINVAL);
    assert_int_equal(hello_check_address("\0\0\0\0\0\0\0\0", 8), -EINVAL);
    assert_int_equal(hello_check_address("garbage\0", 8), -EINVAL);
    assert_int_equal(hello_check_address("::1:7001\0\0\0\0\0\0\0", 16), -EINVAL);
    assert_int_equal(hello_check_address("[::1]:7001\0\0\0\0\0\0", 16), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_bad_heads),
        cmocka_unit_test(test_bad_addresses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
