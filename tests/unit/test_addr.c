/* Unit tests for src/common/addr.c: the one parser and formatter of node
 * addresses, so that --cluster, the raft address, URLs and the catalog agree
 * on how an IPv6 host is spelled, and a node's id on what it hashes. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/addr.h"
#include "nsync.h"

static void test_parse_node_good(void **state)
{
    (void)state;
    static const struct {
        const char *in, *host;
        uint16_t cp, fp;
    } good[] = {
        {"127.0.0.1:7001:8001", "127.0.0.1", 7001, 8001},
        {"node-a.example.org:1:65535", "node-a.example.org", 1, 65535},
        {"[::1]:7001:8001", "::1", 7001, 8001},
        {"[::]:7001:8001", "::", 7001, 8001},
        /* canonical spelling: the id must not depend on how it was written */
        {"[0:0:0:0:0:0:0:1]:7001:8001", "::1", 7001, 8001},
        {"[FE80::ABCD]:7001:8001", "fe80::abcd", 7001, 8001},
        {"[::ffff:10.0.0.1]:7:8", "::ffff:10.0.0.1", 7, 8},
        {"h:007:08", "h", 7, 8},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        char host[ADDR_HOST_MAX];
        uint16_t p[2] = {0, 0};
        assert_int_equal(addr_parse(good[i].in, 2, host, sizeof host, p), 0);
        assert_string_equal(host, good[i].host);
        assert_int_equal(p[0], good[i].cp);
        assert_int_equal(p[1], good[i].fp);
    }
    char host[ADDR_HOST_MAX];
    uint16_t port;
    assert_int_equal(addr_parse("[2001:db8::7]:443", 1, host, sizeof host, &port), 0);
    assert_string_equal(host, "2001:db8::7");
    assert_int_equal(port, 443);
}

static void test_parse_node_bad(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",                      /* nothing */
        "127.0.0.1",             /* missing ports */
        "127.0.0.1:7001",        /* missing the file-server port */
        "127.0.0.1:7001:",       /* empty port */
        "127.0.0.1::8001",
        "127.0.0.1:7001:8001:9", /* one port too many */
        ":7001:8001",            /* empty host */
        "[]:7001:8001",
        "127.0.0.1:0:8001",      /* ports out of range */
        "127.0.0.1:7001:65536",
        "127.0.0.1:7001:99999999999",
        "127.0.0.1:-1:8001",
        "127.0.0.1:+7:8001",
        "127.0.0.1:7x:8001",
        "127.0.0.1: 7:8001",
        "[::1:7001:8001",        /* unbalanced brackets */
        "::1]:7001:8001",
        "[[::1]]:7001:8001",
        "[::1]]:7001:8001",
        "[::1]7001:8001",
        "host]:7001:8001",
        "ho[st:7001:8001",
        "::1:7001:8001",         /* bare IPv6: where does the host end? */
        "[not-v6]:7001:8001",    /* brackets only around IPv6 */
        "[127.0.0.1]:7001:8001",
        "[::1%lo]:7001:8001",    /* zones are not supported */
        "a b:7001:8001",
        "a/b:7001:8001",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char host[ADDR_HOST_MAX];
        uint16_t p[2];
        if (addr_parse(bad[i], 2, host, sizeof host, p) != -EINVAL)
            fail_msg("'%s' was not refused", bad[i]);
    }
    char host[ADDR_HOST_MAX];
    uint16_t p[2];
    assert_int_equal(addr_parse(NULL, 2, host, sizeof host, p), -EINVAL);
    assert_int_equal(addr_parse("h:1", 0, host, sizeof host, p), -EINVAL);
    assert_int_equal(addr_parse("h:1:2:3", 3, host, sizeof host, p), -EINVAL);
    /* a host longer than the room for it */
    char tiny[4];
    assert_int_equal(addr_parse("hosty:1:2", 2, tiny, sizeof tiny, p), -ENAMETOOLONG);
    char big[ADDR_HOST_MAX + 16];
    memset(big, 'a', ADDR_HOST_MAX + 2);
    strcpy(big + ADDR_HOST_MAX + 2, ":1:2");
    assert_int_equal(addr_parse(big, 2, host, sizeof host, p), -ENAMETOOLONG);
}

static void test_host_parse(void **state)
{
    (void)state;
    char host[ADDR_HOST_MAX];
    assert_int_equal(addr_host_parse("127.0.0.1", host, sizeof host), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(addr_host_parse("::1", host, sizeof host), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(addr_host_parse("[::1]", host, sizeof host), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(addr_host_parse("0::0", host, sizeof host), 0);
    assert_string_equal(host, "::");
    assert_int_equal(addr_host_parse("localhost", host, sizeof host), 0);
    static const char *const bad[] = {"", "[]", "[::1", "::1]", "[host]", "::1::2", "a:b", "a b", "[::1]:7001"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (addr_host_parse(bad[i], host, sizeof host) != -EINVAL)
            fail_msg("host '%s' was not refused", bad[i]);
}

static void test_format_round_trip(void **state)
{
    (void)state;
    char out[ADDR_MAX], host[ADDR_HOST_MAX];
    uint16_t port;
    assert_int_equal(addr_format(out, sizeof out, "10.0.0.1", 7001), (int)strlen("10.0.0.1:7001"));
    assert_string_equal(out, "10.0.0.1:7001");
    assert_int_equal(addr_format(out, sizeof out, "::1", 8001), (int)strlen("[::1]:8001"));
    assert_string_equal(out, "[::1]:8001");
    assert_int_equal(addr_parse(out, 1, host, sizeof host, &port), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 8001);
    char small[8];
    assert_int_equal(addr_format(small, sizeof small, "::1", 8001), -ENAMETOOLONG);
    assert_string_equal(small, "");
}

static void test_wildcard(void **state)
{
    (void)state;
    assert_true(addr_is_wildcard("0.0.0.0"));
    assert_true(addr_is_wildcard("::"));
    assert_true(addr_is_wildcard("0:0:0:0:0:0:0:0"));
    assert_false(addr_is_wildcard("127.0.0.1"));
    assert_false(addr_is_wildcard("::1"));
    assert_false(addr_is_wildcard("example.org"));
    assert_false(addr_is_wildcard(""));
}

/* The id of an IPv4 node is what it always was; an IPv6 node's id hashes
 * the bracketed form, however the address was written. */
static void test_node_id_spelling(void **state)
{
    (void)state;
    char h1[ADDR_HOST_MAX], h2[ADDR_HOST_MAX];
    uint16_t p1[2], p2[2];
    assert_int_equal(addr_parse("[::1]:7001:8001", 2, h1, sizeof h1, p1), 0);
    assert_int_equal(addr_parse("[0::1]:7001:8001", 2, h2, sizeof h2, p2), 0);
    assert_true(nsync_node_id(h1, p1[0]) == nsync_node_id(h2, p2[0]));
    assert_true(nsync_node_id("::1", 7001) != nsync_node_id("::1", 7002));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_node_good), cmocka_unit_test(test_parse_node_bad),
        cmocka_unit_test(test_host_parse),      cmocka_unit_test(test_format_round_trip),
        cmocka_unit_test(test_wildcard),        cmocka_unit_test(test_node_id_spelling),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
