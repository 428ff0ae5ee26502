/* Unit tests for src/common/path.c: the one judge of what a legal path is, so
 * the FUSE layer, the HTTP server and the FSM decoder agree on it. */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/path.h"

/* A path of exactly len bytes made of components of comp bytes ("aaa/aaa/..."). */
static void make_path(char *out, size_t len, size_t comp)
{
    for (size_t i = 0; i < len; i++)
        out[i] = (i % (comp + 1) == comp) ? '/' : 'a';
    if (len > 0 && out[len - 1] == '/')
        out[len - 1] = 'b';
    out[len] = '\0';
}

static void test_check_valid(void **state)
{
    (void)state;
    const char *ok[] = {"a", "a/b", "a/b/c", ".nsyncfs", ".hidden", "a/.b", "..a", "a..", "a/...", "x y/z",
                        "a\\b"};
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++)
        assert_int_equal(path_check(ok[i]), 0);
}

static void test_check_invalid(void **state)
{
    (void)state;
    const char *bad[] = {"", "/", "/a", "a/", "a//b", ".", "..", "a/..", "../a", "a/../b",
                         "./a", "a/.", "a/./b", "//"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(path_check(bad[i]), -EINVAL);
    assert_int_equal(path_check(NULL), -EINVAL);
}

static void test_check_lengths(void **state)
{
    (void)state;
    char name[NAME_MAX + 2];
    memset(name, 'n', NAME_MAX);
    name[NAME_MAX] = '\0';
    assert_int_equal(path_check(name), 0);
    name[NAME_MAX] = 'n';
    name[NAME_MAX + 1] = '\0';
    assert_int_equal(path_check(name), -ENAMETOOLONG);

    static char p[PATH_MAX + 1];
    make_path(p, PATH_MAX - 1, 100);
    assert_int_equal(path_check(p), 0);
    make_path(p, PATH_MAX, 100);
    assert_int_equal(path_check(p), -ENAMETOOLONG);
}

static void test_is_internal(void **state)
{
    (void)state;
    assert_true(path_is_internal(".nsyncfs"));
    assert_true(path_is_internal(".nsyncfs/x"));
    assert_true(path_is_internal(".nsyncfs/raft/1"));
    assert_false(path_is_internal(".nsyncfsx"));
    assert_false(path_is_internal(".nsync"));
    assert_false(path_is_internal("a/.nsyncfs"));
    assert_false(path_is_internal("x"));
}

static void test_from_fuse(void **state)
{
    (void)state;
    char out[PATH_MAX];
    assert_int_equal(path_from_fuse("/", out, sizeof out), 0);
    assert_string_equal(out, ".");
    assert_int_equal(path_from_fuse("/a/b", out, sizeof out), 0);
    assert_string_equal(out, "a/b");
    assert_int_equal(path_from_fuse("/.nsyncfsx", out, sizeof out), 0);
    assert_string_equal(out, ".nsyncfsx");

    assert_int_equal(path_from_fuse("a/b", out, sizeof out), -EINVAL);
    assert_int_equal(path_from_fuse("", out, sizeof out), -EINVAL);
    assert_int_equal(path_from_fuse(NULL, out, sizeof out), -EINVAL);
    assert_int_equal(path_from_fuse("//a", out, sizeof out), -EINVAL);
    assert_int_equal(path_from_fuse("/a/", out, sizeof out), -EINVAL);
    assert_int_equal(path_from_fuse("/a/../b", out, sizeof out), -EINVAL);
    assert_int_equal(path_from_fuse("/..", out, sizeof out), -EINVAL);
    assert_int_equal(path_from_fuse("/.", out, sizeof out), -EINVAL);

    assert_int_equal(path_from_fuse("/.nsyncfs", out, sizeof out), -ENOENT);
    assert_int_equal(path_from_fuse("/.nsyncfs/raft", out, sizeof out), -ENOENT);

    char small[4];
    assert_int_equal(path_from_fuse("/abc", small, sizeof small), 0);
    assert_string_equal(small, "abc");
    assert_int_equal(path_from_fuse("/abcd", small, sizeof small), -ENAMETOOLONG);
    assert_int_equal(path_from_fuse("/", small, 1), -ENAMETOOLONG);

    char name[NAME_MAX + 3];
    name[0] = '/';
    memset(name + 1, 'n', NAME_MAX + 1);
    name[NAME_MAX + 2] = '\0';
    assert_int_equal(path_from_fuse(name, out, sizeof out), -ENAMETOOLONG);
}

static void test_is_under(void **state)
{
    (void)state;
    assert_true(path_is_under("a", "a"));
    assert_true(path_is_under("a/b", "a"));
    assert_true(path_is_under("a/b/c", "a"));
    assert_true(path_is_under("a/b/c", "a/b"));
    assert_false(path_is_under("ab", "a"));
    assert_false(path_is_under("ab/c", "a"));
    assert_false(path_is_under("a", "a/b"));
    assert_false(path_is_under("b/a", "a"));
    assert_false(path_is_under("a/bc", "a/b"));
}

/* A symlink inside the tree, even to a place inside it, never leads an open
 * anywhere: the served and installed paths are real files and directories. */
static void test_parent(void **state)
{
    (void)state;
    char out[8];
    assert_int_equal(path_parent("a/b/c", out, sizeof out), 0);
    assert_string_equal(out, "a/b");
    assert_int_equal(path_parent("top", out, sizeof out), 0);
    assert_string_equal(out, "");
    assert_int_equal(path_parent("abcdefgh/x", out, sizeof out), -ENAMETOOLONG);
}

static void test_open_beneath(void **state)
{
    char dir[] = "/tmp/nsync-test-path-XXXXXX";
    assert_non_null(mkdtemp(dir));
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    assert_true(dfd >= 0);
    assert_int_equal(mkdirat(dfd, "sub", 0700), 0);
    int f = openat(dfd, "sub/file", O_WRONLY | O_CREAT, 0600);
    assert_true(f >= 0);
    close(f);
    assert_int_equal(symlinkat("/etc", dfd, "out"), 0);
    assert_int_equal(symlinkat("sub", dfd, "in"), 0);

    int fd = path_open_beneath(dfd, "sub/file", O_RDONLY);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(path_open_beneath(dfd, "out/passwd", O_RDONLY), -1);
    assert_int_equal(path_open_beneath(dfd, "in/file", O_RDONLY), -1);
    assert_int_equal(path_open_beneath(dfd, "../etc/passwd", O_RDONLY), -1);
    assert_int_equal(path_open_beneath(dfd, "absent", O_RDONLY), -1);
    assert_int_equal(errno, ENOENT);

    unlinkat(dfd, "in", 0);
    unlinkat(dfd, "out", 0);
    unlinkat(dfd, "sub/file", 0);
    unlinkat(dfd, "sub", AT_REMOVEDIR);
    close(dfd);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_valid), cmocka_unit_test(test_check_invalid),
        cmocka_unit_test(test_check_lengths), cmocka_unit_test(test_is_internal),
        cmocka_unit_test(test_from_fuse), cmocka_unit_test(test_is_under),
        cmocka_unit_test(test_open_beneath), cmocka_unit_test(test_parent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
