/* Unit tests for src/fs/nodes.c: the kernel's nodes, their names and what
 * each stood for. A replaced BACKING object must get a new node; names move
 * with renames; nodes go when forgotten, never before. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "fs/nodes.h"

static const struct node_ident FILE1 = {.bino = 100, .type = S_IFREG};
static const struct node_ident FILE2 = {.bino = 200, .type = S_IFREG};
static const struct node_ident DIR1 = {.bino = 300, .type = S_IFDIR};

static void expect_path(const struct nodes *t, uint64_t id, const char *want)
{
    char buf[64];
    assert_int_equal(nodes_path(t, id, buf, sizeof buf), 0);
    assert_string_equal(buf, want);
}

static void test_lookup_same_object_same_node(void **state)
{
    (void)state;
    struct nodes *t = nodes_new();
    assert_non_null(t);
    expect_path(t, NODES_ROOT, "/");
    int64_t a = nodes_lookup(t, NODES_ROOT, "a", &FILE1);
    assert_true(a > NODES_ROOT);
    assert_int_equal(nodes_lookup(t, NODES_ROOT, "a", &FILE1), a);
    expect_path(t, (uint64_t)a, "/a");
    assert_int_equal(nodes_count(t), 2);
    /* two lookups: one forget of 1 keeps it, the second drops it */
    nodes_forget(t, (uint64_t)a, 1);
    expect_path(t, (uint64_t)a, "/a");
    nodes_forget(t, (uint64_t)a, 1);
    char buf[16];
    assert_int_equal(nodes_path(t, (uint64_t)a, buf, sizeof buf), -ESTALE);
    assert_int_equal(nodes_count(t), 1);
    nodes_free(t);
}

static void test_replaced_object_gets_new_node(void **state)
{
    (void)state;
    struct nodes *t = nodes_new();
    int64_t a = nodes_lookup(t, NODES_ROOT, "f", &FILE1);
    int64_t b = nodes_lookup(t, NODES_ROOT, "f", &FILE2);
    assert_true(b > a);
    /* the old node lives on until the kernel forgets it, and its path still
     * reaches what the name holds now; lookups find the new one */
    expect_path(t, (uint64_t)a, "/f");
    struct node_ident id;
    assert_int_equal(nodes_ident(t, (uint64_t)a, &id), 0);
    assert_int_equal(id.bino, FILE1.bino);
    expect_path(t, (uint64_t)b, "/f");
    assert_int_equal(nodes_find(t, "f", NULL), (uint64_t)b);
    nodes_forget(t, (uint64_t)a, 1);
    assert_int_equal(nodes_ident(t, (uint64_t)a, &id), -ESTALE);
    assert_int_equal(nodes_count(t), 2);
    /* detached by hand: same */
    nodes_detach(t, (uint64_t)b);
    assert_int_equal(nodes_find(t, "f", NULL), 0);
    expect_path(t, (uint64_t)b, "/f");
    int64_t b2 = nodes_lookup(t, NODES_ROOT, "f", &FILE2);
    assert_true(b2 > b);
    /* same inode number, other type: also another object */
    struct node_ident asdir = {.bino = FILE2.bino, .type = S_IFDIR};
    int64_t c = nodes_lookup(t, NODES_ROOT, "f", &asdir);
    assert_true(c > b2);
    /* a directory replaced under its children: they still have paths */
    int64_t k = nodes_lookup(t, (uint64_t)c, "kid", &FILE1);
    nodes_detach(t, (uint64_t)c);
    expect_path(t, (uint64_t)k, "/f/kid");
    nodes_forget(t, (uint64_t)c, 1);
    expect_path(t, (uint64_t)k, "/f/kid");
    /* open handles: any one still open stands for the node */
    assert_true(nodes_fresh(t, (uint64_t)k));
    assert_int_equal(nodes_open_fh(t, (uint64_t)k), 0);
    nodes_opened(t, (uint64_t)k, 0x10);
    nodes_opened(t, (uint64_t)k, 0x20);
    assert_false(nodes_fresh(t, (uint64_t)k));
    nodes_released(t, (uint64_t)k, 0x20);
    assert_int_equal(nodes_open_fh(t, (uint64_t)k), 0x10);
    nodes_opened(t, (uint64_t)k, 0x30);
    nodes_released(t, (uint64_t)k, 0x10);
    assert_int_equal(nodes_open_fh(t, (uint64_t)k), 0x30);
    nodes_released(t, (uint64_t)k, 0x30);
    assert_int_equal(nodes_open_fh(t, (uint64_t)k), 0);
    nodes_opened(t, (uint64_t)k, 0x40); /* freed with the node */
    nodes_forget(t, (uint64_t)k, 1);
    nodes_forget(t, (uint64_t)b, 1);
    nodes_forget(t, (uint64_t)b2, 1);
    assert_int_equal(nodes_count(t), 1);
    nodes_free(t);
}

static void test_children_keep_parent_and_paths(void **state)
{
    (void)state;
    struct nodes *t = nodes_new();
    int64_t d = nodes_lookup(t, NODES_ROOT, "d", &DIR1);
    int64_t e = nodes_lookup(t, (uint64_t)d, "e", &DIR1);
    int64_t f = nodes_lookup(t, (uint64_t)e, "f.txt", &FILE1);
    expect_path(t, (uint64_t)f, "/d/e/f.txt");
    char buf[64];
    assert_int_equal(nodes_child_path(t, (uint64_t)e, "g", buf, sizeof buf), 0);
    assert_string_equal(buf, "/d/e/g");
    assert_int_equal(nodes_child_path(t, NODES_ROOT, "g", buf, sizeof buf), 0);
    assert_string_equal(buf, "/g");
    uint64_t parent = 0;
    assert_int_equal(nodes_find(t, "d/e/f.txt", &parent), (uint64_t)f);
    assert_int_equal(parent, (uint64_t)e);
    assert_int_equal(nodes_find(t, "d/x", NULL), 0);
    assert_int_equal(nodes_find(t, "", &parent), NODES_ROOT);
    /* the kernel forgets the directories first: named children keep them */
    nodes_forget(t, (uint64_t)d, 1);
    nodes_forget(t, (uint64_t)e, 1);
    expect_path(t, (uint64_t)f, "/d/e/f.txt");
    nodes_forget(t, (uint64_t)f, 1);
    assert_int_equal(nodes_count(t), 1);
    /* too small a buffer */
    int64_t g = nodes_lookup(t, NODES_ROOT, "a-rather-long-name", &FILE1);
    assert_int_equal(nodes_path(t, (uint64_t)g, buf, 8), -ENAMETOOLONG);
    nodes_free(t);
}

static void test_remove_and_detached_parent(void **state)
{
    (void)state;
    struct nodes *t = nodes_new();
    int64_t d = nodes_lookup(t, NODES_ROOT, "d", &DIR1);
    int64_t f = nodes_lookup(t, (uint64_t)d, "f", &FILE1);
    nodes_remove(t, NODES_ROOT, "d");
    char buf[32];
    assert_int_equal(nodes_path(t, (uint64_t)d, buf, sizeof buf), -ENOENT);
    assert_int_equal(nodes_path(t, (uint64_t)f, buf, sizeof buf), -ENOENT);
    /* no lookup in a parent without a name */
    assert_int_equal(nodes_lookup(t, (uint64_t)d, "g", &FILE2), -ENOENT);
    assert_int_equal(nodes_lookup(t, 999, "g", &FILE2), -ENOENT);
    nodes_forget(t, (uint64_t)f, 1);
    nodes_forget(t, (uint64_t)d, 1);
    assert_int_equal(nodes_count(t), 1);
    nodes_free(t);
}

static void test_rename_moves_names(void **state)
{
    (void)state;
    struct nodes *t = nodes_new();
    int64_t d = nodes_lookup(t, NODES_ROOT, "d", &DIR1);
    int64_t a = nodes_lookup(t, NODES_ROOT, "a", &FILE1);
    int64_t b = nodes_lookup(t, (uint64_t)d, "b", &FILE2);
    /* over an existing name: the target's node loses its name */
    assert_int_equal(nodes_rename(t, NODES_ROOT, "a", (uint64_t)d, "b", false), 0);
    expect_path(t, (uint64_t)a, "/d/b");
    char buf[32];
    assert_int_equal(nodes_path(t, (uint64_t)b, buf, sizeof buf), -ENOENT);
    assert_int_equal(nodes_find(t, "a", NULL), 0);
    /* exchange */
    int64_t c = nodes_lookup(t, NODES_ROOT, "c", &FILE2);
    assert_int_equal(nodes_rename(t, NODES_ROOT, "c", (uint64_t)d, "b", true), 0);
    expect_path(t, (uint64_t)c, "/d/b");
    expect_path(t, (uint64_t)a, "/c");
    /* a source the kernel does not hold: the target's node goes */
    assert_int_equal(nodes_rename(t, NODES_ROOT, "zz", NODES_ROOT, "c", false), 0);
    assert_int_equal(nodes_path(t, (uint64_t)a, buf, sizeof buf), -ENOENT);
    /* renaming a directory carries its children's paths */
    assert_int_equal(nodes_rename(t, NODES_ROOT, "d", NODES_ROOT, "e", false), 0);
    expect_path(t, (uint64_t)c, "/e/b");
    nodes_free(t);
}

static void test_many_nodes_grow(void **state)
{
    (void)state;
    struct nodes *t = nodes_new();
    char name[32];
    int64_t ids[3000];
    for (int i = 0; i < 3000; i++) {
        snprintf(name, sizeof name, "n%d", i);
        struct node_ident id = {.bino = (uint64_t)i + 1000, .type = S_IFREG};
        ids[i] = nodes_lookup(t, NODES_ROOT, name, &id);
        assert_true(ids[i] > 0);
    }
    assert_int_equal(nodes_count(t), 3001);
    for (int i = 0; i < 3000; i += 7) {
        snprintf(name, sizeof name, "/n%d", i);
        expect_path(t, (uint64_t)ids[i], name);
        assert_int_equal(nodes_find(t, name + 1, NULL), (uint64_t)ids[i]);
    }
    for (int i = 0; i < 3000; i++)
        nodes_forget(t, (uint64_t)ids[i], 1);
    assert_int_equal(nodes_count(t), 1);
    nodes_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lookup_same_object_same_node),
        cmocka_unit_test(test_replaced_object_gets_new_node),
        cmocka_unit_test(test_children_keep_parent_and_paths),
        cmocka_unit_test(test_remove_and_detached_parent),
        cmocka_unit_test(test_rename_moves_names),
        cmocka_unit_test(test_many_nodes_grow),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
