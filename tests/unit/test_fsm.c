/* Unit tests for the replicated state machine (src/cluster/fsm.c): command
 * encoding, apply semantics (settlement, locks, rename, membership) and
 * snapshots. Every command goes through encode + apply, as in the cluster. */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <xxhash.h>

#include "cluster/fsm.h"
#include "cluster/rlocks.h"
#include "common/xattrs.h"

#define N1 11u
#define N2 22u
#define N3 33u

/* ---------------- allocation failure injection ---------------- */

/* The program's malloc family is replaced (glibc lets an executable
 * interpose it) so that the n-th allocation after arming fails: apply must
 * then report -ENOMEM and leave the state as it was. */
static volatile long fail_countdown = -1; /* volatile: gcc assumes malloc leaves globals alone */

#if !defined(__SANITIZE_ADDRESS__) /* ASan owns malloc: test_enomem skips itself there */
extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t n);

static bool inject_failure(void)
{
    if (fail_countdown < 0)
        return false;
    return fail_countdown-- == 0;
}

void *malloc(size_t n)
{
    return inject_failure() ? NULL : __libc_malloc(n);
}

void *calloc(size_t n, size_t size)
{
    return inject_failure() ? NULL : __libc_calloc(n, size);
}

void *realloc(void *p, size_t n)
{
    return inject_failure() ? NULL : __libc_realloc(p, n);
}
#endif

/* ---------------- helpers ---------------- */

static int apply_cmd(struct fsm *f, const struct fsm_cmd *c)
{
    void *buf = NULL;
    size_t len = 0;
    assert_int_equal(fsm_cmd_encode(c, &buf, &len), 0);
    int rc = fsm_apply(f, buf, len);
    free(buf);
    return rc;
}

static struct fsm_meta file_meta(uint64_t size, uint8_t fill)
{
    struct fsm_meta m = {.kind = FSM_FILE, .mode = 0644, .uid = 1000, .gid = 100, .size = size,
                         .mtime_ns = 1700000000123456789LL};
    memset(m.hash, fill, FSM_HASH_LEN);
    return m;
}

static int announce_meta(struct fsm *f, uint64_t node, const char *path, struct fsm_meta m, bool unlock,
                         uint64_t now)
{
    struct fsm_cmd c = {.op = FSM_OP_ANNOUNCE, .node = node, .path = path, .meta = m, .unlock = unlock,
                        .now_ms = now};
    return apply_cmd(f, &c);
}

/* A file announced with its bytes (a NUL-terminated string here). */
static int announce_inline(struct fsm *f, uint64_t node, const char *path, const char *bytes)
{
    struct fsm_meta m = file_meta(strlen(bytes), 0x42);
    m.data = bytes;
    return announce_meta(f, node, path, m, false, 0);
}

static int announce(struct fsm *f, uint64_t node, const char *path, uint8_t kind)
{
    struct fsm_meta m = file_meta(kind == FSM_FILE ? 42 : 0, 0xab);
    m.kind = kind;
    if (kind == FSM_DIR)
        m.mode = 0755;
    if (kind == FSM_SYMLINK)
        m.target = "../elsewhere";
    return announce_meta(f, node, path, m, false, 0);
}

static int rename_path(struct fsm *f, uint64_t node, const char *from, const char *to, bool unlock)
{
    struct fsm_cmd c = {.op = FSM_OP_RENAME, .node = node, .path = from, .path2 = to, .unlock = unlock};
    return apply_cmd(f, &c);
}

static int lock(struct fsm *f, uint64_t node, const char *path, uint64_t now, uint32_t lease)
{
    struct fsm_cmd c = {.op = FSM_OP_LOCK, .node = node, .path = path, .now_ms = now, .lease_ms = lease};
    return apply_cmd(f, &c);
}

static int renew(struct fsm *f, uint64_t node, uint64_t now, uint32_t lease)
{
    struct fsm_cmd c = {.op = FSM_OP_RENEW, .node = node, .now_ms = now, .lease_ms = lease};
    return apply_cmd(f, &c);
}

static int rlock(struct fsm *f, uint64_t node, const char *path, uint8_t type, uint64_t start,
                 uint64_t end, uint64_t now)
{
    struct fsm_cmd c = {.op = FSM_OP_RLOCK, .node = node, .path = path, .now_ms = now,
                        .lease_ms = 500, .rtype = type, .rstart = start, .rend = end, .pid = 42};
    return apply_cmd(f, &c);
}

static int runlock(struct fsm *f, uint64_t node, const char *path, uint64_t start, uint64_t end)
{
    struct fsm_cmd c = {.op = FSM_OP_RUNLOCK, .node = node, .path = path, .rstart = start, .rend = end};
    return apply_cmd(f, &c);
}

static int unlock(struct fsm *f, uint64_t node, const char *path)
{
    struct fsm_cmd c = {.op = FSM_OP_UNLOCK, .node = node, .path = path};
    return apply_cmd(f, &c);
}

static int synced(struct fsm *f, uint64_t node, const char *path, uint64_t version)
{
    struct fsm_synced_item it = {path, version};
    struct fsm_cmd c = {.op = FSM_OP_SYNCED, .node = node, .items = &it, .n_items = 1};
    return apply_cmd(f, &c);
}

/* Reports the entry's current version for node. */
static int synced_now(struct fsm *f, uint64_t node, const char *path)
{
    const struct fsm_entry *e = fsm_get(f, path);
    assert_non_null(e);
    return synced(f, node, path, e->version);
}

static int join(struct fsm *f, uint64_t node)
{
    char ca[32], fa[32];
    snprintf(ca, sizeof ca, "10.0.0.%u:7000", (unsigned)node);
    snprintf(fa, sizeof fa, "10.0.0.%u:7001", (unsigned)node);
    struct fsm_cmd c = {.op = FSM_OP_JOIN, .node = node, .caddr = ca, .faddr = fa};
    return apply_cmd(f, &c);
}

static int leave(struct fsm *f, uint64_t node)
{
    struct fsm_cmd c = {.op = FSM_OP_LEAVE, .node = node};
    return apply_cmd(f, &c);
}

static void snap(const struct fsm *f, void **buf, size_t *len)
{
    assert_int_equal(fsm_snapshot(f, buf, len), 0);
}

/* The whole state, bytewise: the strongest "nothing changed" check. */
static void assert_state_is(const struct fsm *f, const void *want, size_t want_len)
{
    void *buf;
    size_t len;
    snap(f, &buf, &len);
    assert_int_equal(len, want_len);
    assert_memory_equal(buf, want, len);
    free(buf);
}

static int setup(void **state)
{
    *state = fsm_new();
    return *state ? 0 : -1;
}

static int teardown(void **state)
{
    fsm_free(*state);
    return 0;
}

/* ---------------- encoding ---------------- */

static void roundtrip(const struct fsm_cmd *in, struct fsm_cmd *out, void **buf)
{
    size_t len;
    assert_int_equal(fsm_cmd_encode(in, buf, &len), 0);
    assert_int_equal(fsm_cmd_decode(*buf, len, out), 0);
    assert_int_equal(out->op, in->op);
    assert_int_equal(out->node, in->node);
    assert_int_equal(out->now_ms, in->now_ms);
}

static void test_roundtrip(void **state)
{
    (void)state;
    struct fsm_cmd out;
    void *buf;

    struct fsm_cmd a = {.op = FSM_OP_ANNOUNCE, .node = UINT64_MAX, .now_ms = 123456789012ULL, .unlock = true,
                        .path = "dir/file.txt", .meta = file_meta(1ULL << 40, 0x5a)};
    a.meta.mtime_ns = -5;
    roundtrip(&a, &out, &buf);
    assert_string_equal(out.path, "dir/file.txt");
    assert_true(out.unlock);
    assert_int_equal(out.meta.kind, FSM_FILE);
    assert_int_equal(out.meta.mode, 0644);
    assert_int_equal(out.meta.uid, 1000);
    assert_int_equal(out.meta.gid, 100);
    assert_int_equal(out.meta.size, 1ULL << 40);
    assert_true(out.meta.mtime_ns == -5);
    assert_memory_equal(out.meta.hash, a.meta.hash, FSM_HASH_LEN);
    assert_null(out.meta.target);
    /* Strings point into the buffer, not into the caller's command. */
    assert_true(out.path > (char *)buf && out.path < (char *)buf + 100);
    fsm_cmd_release(&out);
    free(buf);

    struct fsm_cmd s = {.op = FSM_OP_ANNOUNCE, .node = 7, .path = "ln",
                        .meta = {.kind = FSM_SYMLINK, .mode = 0777, .target = "/abs/../target"}};
    roundtrip(&s, &out, &buf);
    assert_int_equal(out.meta.kind, FSM_SYMLINK);
    assert_string_equal(out.meta.target, "/abs/../target");
    assert_false(out.unlock);
    fsm_cmd_release(&out);
    free(buf);

    struct fsm_cmd t = {.op = FSM_OP_ANNOUNCE, .node = 7, .path = "gone", .meta = {.kind = FSM_TOMBSTONE}};
    roundtrip(&t, &out, &buf);
    assert_int_equal(out.meta.kind, FSM_TOMBSTONE);
    fsm_cmd_release(&out);
    free(buf);

    struct fsm_cmd r = {.op = FSM_OP_RENAME, .node = 3, .now_ms = 9, .unlock = true,
                        .path = "a/b", .path2 = "c"};
    roundtrip(&r, &out, &buf);
    assert_string_equal(out.path, "a/b");
    assert_string_equal(out.path2, "c");
    assert_true(out.unlock);
    fsm_cmd_release(&out);
    free(buf);

    struct fsm_cmd l = {.op = FSM_OP_LOCK, .node = 3, .now_ms = 77, .lease_ms = 0xfffffffeu, .path = "x"};
    roundtrip(&l, &out, &buf);
    assert_string_equal(out.path, "x");
    assert_int_equal(out.lease_ms, 0xfffffffeu);
    fsm_cmd_release(&out);
    free(buf);

    struct fsm_cmd rn = {.op = FSM_OP_RENEW, .node = 3, .now_ms = 78, .lease_ms = 5000};
    roundtrip(&rn, &out, &buf);
    assert_int_equal(out.lease_ms, 5000);
    assert_null(out.path);
    fsm_cmd_release(&out);
    free(buf);

    struct fsm_cmd u = {.op = FSM_OP_UNLOCK, .node = 3, .path = "x/y"};
    roundtrip(&u, &out, &buf);
    assert_string_equal(out.path, "x/y");
    fsm_cmd_release(&out);
    free(buf);

    struct fsm_synced_item items[3] = {{"a", 1}, {"b/c", UINT64_MAX}, {"a", 2}};
    struct fsm_cmd sy = {.op = FSM_OP_SYNCED, .node = 4, .items = items, .n_items = 3};
    roundtrip(&sy, &out, &buf);
    assert_int_equal(out.n_items, 3);
    for (int i = 0; i < 3; i++) {
        assert_string_equal(out.items[i].path, items[i].path);
        assert_int_equal(out.items[i].version, items[i].version);
    }
    fsm_cmd_release(&out);
    fsm_cmd_release(&out); /* twice is harmless */
    free(buf);

    struct fsm_cmd sy0 = {.op = FSM_OP_SYNCED, .node = 4};
    roundtrip(&sy0, &out, &buf);
    assert_int_equal(out.n_items, 0);
    fsm_cmd_release(&out);
    free(buf);

    struct fsm_cmd j = {.op = FSM_OP_JOIN, .node = 5, .caddr = "host-a:7000", .faddr = "host-a:7001"};
    roundtrip(&j, &out, &buf);
    assert_string_equal(out.caddr, "host-a:7000");
    assert_string_equal(out.faddr, "host-a:7001");
    fsm_cmd_release(&out);
    free(buf);

    struct fsm_cmd lv = {.op = FSM_OP_LEAVE, .node = 5};
    roundtrip(&lv, &out, &buf);
    fsm_cmd_release(&out);
    free(buf);
}

static void test_encode_rejects(void **state)
{
    (void)state;
    void *buf = NULL;
    size_t len;
    struct fsm_meta m = file_meta(1, 1);
    char addr[FSM_ADDR_MAX + 1];
    memset(addr, 'h', FSM_ADDR_MAX);
    addr[FSM_ADDR_MAX] = '\0';
    struct fsm_synced_item bad_item = {"a/../b", 1};
    const struct fsm_cmd bad[] = {
        {.op = 0, .node = 1},
        {.op = 99, .node = 1},
        {.op = FSM_OP_LEAVE, .node = 0},
        {.op = FSM_OP_ANNOUNCE, .node = 1, .meta = m},
        {.op = FSM_OP_ANNOUNCE, .node = 1, .path = "../x", .meta = m},
        {.op = FSM_OP_ANNOUNCE, .node = 1, .path = "/abs", .meta = m},
        {.op = FSM_OP_ANNOUNCE, .node = 1, .path = "a//b", .meta = m},
        {.op = FSM_OP_ANNOUNCE, .node = 1, .path = ".", .meta = m},
        {.op = FSM_OP_ANNOUNCE, .node = 1, .path = "a", .meta = {.kind = 0}},
        {.op = FSM_OP_ANNOUNCE, .node = 1, .path = "a", .meta = {.kind = FSM_KIND_MAX + 1}},
        {.op = FSM_OP_ANNOUNCE, .node = 1, .path = "a", .meta = {.kind = FSM_FIFO, .rdev = 1}},
        {.op = FSM_OP_ANNOUNCE, .node = 1, .path = "a", .meta = {.kind = FSM_DIR, .rdev = 1}},
        {.op = FSM_OP_ANNOUNCE, .node = 1, .path = "a", .meta = {.kind = FSM_FILE, .mode = 0100644}},
        {.op = FSM_OP_ANNOUNCE, .node = 1, .path = "a", .meta = {.kind = FSM_SYMLINK}},
        {.op = FSM_OP_ANNOUNCE, .node = 1, .path = "a", .meta = {.kind = FSM_SYMLINK, .target = ""}},
        {.op = FSM_OP_RENAME, .node = 1, .path = "a"},
        {.op = FSM_OP_RENAME, .node = 1, .path = "a", .path2 = "a"},
        {.op = FSM_OP_RENAME, .node = 1, .path = "a", .path2 = "a/b"},
        {.op = FSM_OP_RENAME, .node = 1, .path = "a/b", .path2 = "a"},
        {.op = FSM_OP_LOCK, .node = 1},
        {.op = FSM_OP_UNLOCK, .node = 1, .path = "a/"},
        {.op = FSM_OP_SYNCED, .node = 1, .n_items = 2},
        {.op = FSM_OP_SYNCED, .node = 1, .n_items = 1, .items = &bad_item},
        {.op = FSM_OP_JOIN, .node = 1, .caddr = "h:1"},
        {.op = FSM_OP_JOIN, .node = 1, .caddr = "", .faddr = "h:2"},
        {.op = FSM_OP_JOIN, .node = 1, .caddr = addr, .faddr = "h:2"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(fsm_cmd_encode(&bad[i], &buf, &len), -EINVAL);
        assert_null(buf);
    }
    addr[FSM_ADDR_MAX - 1] = '\0'; /* the longest that fits */
    struct fsm_cmd ok = {.op = FSM_OP_JOIN, .node = 1, .caddr = addr, .faddr = addr};
    assert_int_equal(fsm_cmd_encode(&ok, &buf, &len), 0);
    free(buf);
}

/* Raw bytes, to build what the encoder refuses to. */
struct raw {
    uint8_t b[1024];
    size_t n;
};

static void raw_u8(struct raw *r, uint8_t v)
{
    r->b[r->n++] = v;
}

static void raw_u32(struct raw *r, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        raw_u8(r, (uint8_t)(v >> (8 * i)));
}

static void raw_u64(struct raw *r, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        raw_u8(r, (uint8_t)(v >> (8 * i)));
}

static void raw_str(struct raw *r, const char *s)
{
    raw_u32(r, (uint32_t)strlen(s));
    memcpy(r->b + r->n, s, strlen(s) + 1);
    r->n += strlen(s) + 1;
}

static void raw_header(struct raw *r, uint8_t op, uint8_t flags, uint64_t node)
{
    r->n = 0;
    raw_u8(r, 1);
    raw_u8(r, op);
    raw_u8(r, flags);
    raw_u64(r, node);
    raw_u64(r, 1000);
}

/* A state with a bit of everything, so "unchanged" means something. */
static void populate(struct fsm *f)
{
    assert_int_equal(join(f, N1), 0);
    assert_int_equal(join(f, N2), 0);
    assert_int_equal(announce(f, N1, "d", FSM_DIR), 0);
    assert_int_equal(announce(f, N1, "d/f", FSM_FILE), 0);
    assert_int_equal(announce(f, N2, "ln", FSM_SYMLINK), 0);
    assert_int_equal(synced_now(f, N2, "d"), 0);
    assert_int_equal(lock(f, N1, "d/f", 500, 1000), 0);
}

/* Decode and apply must both refuse buf, and the state must not move. */
static void assert_malformed(struct fsm *f, const void *buf, size_t len)
{
    void *before;
    size_t before_len;
    snap(f, &before, &before_len);
    uint64_t v = fsm_version(f);
    struct fsm_cmd c;
    assert_int_equal(fsm_cmd_decode(buf, len, &c), -EINVAL);
    fsm_cmd_release(&c);
    fsm_cmd_release(&c);
    assert_int_equal(fsm_apply(f, buf, len), -EINVAL);
    assert_int_equal(fsm_version(f), v);
    assert_state_is(f, before, before_len);
    free(before);
}

static void test_malformed(void **state)
{
    struct fsm *f = *state;
    populate(f);

    /* Every proper prefix of every op's valid encoding. */
    struct fsm_synced_item items[2] = {{"d", 3}, {"d/f", 4}};
    const struct fsm_cmd valid[] = {
        {.op = FSM_OP_ANNOUNCE, .node = N1, .path = "d/g", .meta = file_meta(3, 3), .unlock = true},
        {.op = FSM_OP_ANNOUNCE, .node = N1, .path = "s", .meta = {.kind = FSM_SYMLINK, .target = "t"}},
        {.op = FSM_OP_RENAME, .node = N1, .path = "d", .path2 = "e"},
        {.op = FSM_OP_LOCK, .node = N1, .path = "z", .lease_ms = 5},
        {.op = FSM_OP_RENEW, .node = N1, .lease_ms = 5},
        {.op = FSM_OP_UNLOCK, .node = N1, .path = "d/f"},
        {.op = FSM_OP_SYNCED, .node = N2, .items = items, .n_items = 2},
        {.op = FSM_OP_JOIN, .node = N3, .caddr = "c:1", .faddr = "c:2"},
        {.op = FSM_OP_LEAVE, .node = N2},
    };
    for (size_t i = 0; i < sizeof valid / sizeof *valid; i++) {
        void *buf;
        size_t len;
        assert_int_equal(fsm_cmd_encode(&valid[i], &buf, &len), 0);
        for (size_t cut = 0; cut < len; cut++)
            assert_malformed(f, buf, cut);
        /* A trailing non-zero byte, or more zeros than raft's 8-byte entry
         * padding can explain, is garbage; up to 7 zeros are padding. */
        uint8_t *longer = calloc(1, len + 8);
        memcpy(longer, buf, len);
        longer[len] = 1;
        assert_malformed(f, longer, len + 1);
        longer[len] = 0;
        assert_malformed(f, longer, len + 8);
        struct fsm_cmd padded;
        assert_int_equal(fsm_cmd_decode(longer, len + 7, &padded), 0);
        assert_int_equal(padded.op, valid[i].op);
        fsm_cmd_release(&padded);
        free(longer);
        /* Bad format byte, unknown op, node 0. */
        uint8_t *p = buf;
        p[0] = 2;
        assert_malformed(f, buf, len);
        p[0] = 1;
        p[1] = 0;
        assert_malformed(f, buf, len);
        p[1] = 9;
        assert_malformed(f, buf, len);
        p[1] = valid[i].op;
        uint8_t node[8];
        memcpy(node, p + 3, 8);
        memset(p + 3, 0, 8);
        assert_malformed(f, buf, len);
        memcpy(p + 3, node, 8);
        /* Unknown flag bits; unlock or fresh where the op has none. */
        p[2] |= 0x80;
        assert_malformed(f, buf, len);
        p[2] &= 0x7f;
        p[2] |= 0x04;
        assert_malformed(f, buf, len);
        p[2] &= (uint8_t)~0x04;
        if (valid[i].op != FSM_OP_ANNOUNCE) { /* held: ANNOUNCE only */
            uint8_t was = p[2];
            p[2] |= 0x08;
            assert_malformed(f, buf, len);
            p[2] = was;
        }
        if (valid[i].op != FSM_OP_ANNOUNCE && valid[i].op != FSM_OP_RENAME) {
            p[2] = 1;
            assert_malformed(f, buf, len);
            p[2] = 2;
            assert_malformed(f, buf, len);
            p[2] = 0;
        }
        /* Restored, it still applies. */
        struct fsm_cmd c;
        assert_int_equal(fsm_cmd_decode(buf, len, &c), 0);
        fsm_cmd_release(&c);
        free(buf);
    }
    assert_int_equal(fsm_apply(f, NULL, 0), -EINVAL);

    struct raw r;
    const char *bad_paths[] = {"../x", "/abs", "a//b", ".", "..", "a/", "", "a/./b", ".."};
    for (size_t i = 0; i < sizeof bad_paths / sizeof *bad_paths; i++) {
        raw_header(&r, FSM_OP_LOCK, 0, N1);
        raw_str(&r, bad_paths[i]);
        raw_u32(&r, 100);
        assert_malformed(f, r.b, r.n);
    }
    /* The same frame with a good path is accepted (so the frames are right). */
    raw_header(&r, FSM_OP_UNLOCK, 0, N1);
    raw_str(&r, "nolock");
    struct fsm_cmd c;
    assert_int_equal(fsm_cmd_decode(r.b, r.n, &c), 0);
    fsm_cmd_release(&c);

    /* Unterminated string: the NUL replaced. */
    r.b[r.n - 1] = 'x';
    assert_malformed(f, r.b, r.n);
    /* Embedded NUL. */
    raw_header(&r, FSM_OP_UNLOCK, 0, N1);
    raw_u32(&r, 3);
    memcpy(r.b + r.n, "a\0b", 4);
    r.n += 4;
    assert_malformed(f, r.b, r.n);
    /* Length past the end, and a length near 4 GiB. */
    raw_header(&r, FSM_OP_UNLOCK, 0, N1);
    raw_u32(&r, 50);
    memcpy(r.b + r.n, "abc", 4);
    r.n += 4;
    assert_malformed(f, r.b, r.n);
    raw_header(&r, FSM_OP_UNLOCK, 0, N1);
    raw_u32(&r, UINT32_MAX);
    memcpy(r.b + r.n, "abc", 4);
    r.n += 4;
    assert_malformed(f, r.b, r.n);
    /* Symlink target invalid: empty. */
    raw_header(&r, FSM_OP_ANNOUNCE, 0, N1);
    raw_str(&r, "s");
    raw_u8(&r, FSM_SYMLINK);
    raw_u32(&r, 0777);
    raw_u32(&r, 0);
    raw_u32(&r, 0);
    raw_u64(&r, 0);
    raw_str(&r, "");
    assert_malformed(f, r.b, r.n);
    /* Huge n_items with nothing behind it; n_items beyond what the bytes can
     * hold; and a bad path inside an item. */
    raw_header(&r, FSM_OP_SYNCED, 0, N2);
    raw_u32(&r, UINT32_MAX);
    assert_malformed(f, r.b, r.n);
    raw_header(&r, FSM_OP_SYNCED, 0, N2);
    raw_u32(&r, 2);
    raw_str(&r, "d");
    raw_u64(&r, 3);
    assert_malformed(f, r.b, r.n);
    raw_header(&r, FSM_OP_SYNCED, 0, N2);
    raw_u32(&r, 1);
    raw_str(&r, "d/../x");
    raw_u64(&r, 3);
    assert_malformed(f, r.b, r.n);
    /* RENAME into its own subtree. */
    raw_header(&r, FSM_OP_RENAME, 0, N1);
    raw_str(&r, "d");
    raw_str(&r, "d/sub");
    assert_malformed(f, r.b, r.n);
    /* JOIN with an address too long for fsm_member. */
    char addr[FSM_ADDR_MAX + 1];
    memset(addr, 'h', FSM_ADDR_MAX);
    addr[FSM_ADDR_MAX] = '\0';
    raw_header(&r, FSM_OP_JOIN, 0, N3);
    raw_str(&r, "c:1");
    raw_str(&r, addr);
    assert_malformed(f, r.b, r.n);

    /* Decode of NULL and release of a never-decoded, zeroed command. */
    assert_int_equal(fsm_cmd_decode(NULL, 0, &c), -EINVAL);
    fsm_cmd_release(&c);
    fsm_cmd_release(NULL);
}

/* Paths a hostile or buggy proposer may send: outside BACKING, or into the
 * data directory where the raft log and staging live. Every op that names a
 * path refuses them at apply (so every node alike), and a snapshot holding
 * one does not restore. */
static void fix_checksum(uint8_t *p, size_t len);

/* A hand-made snapshot of format `format`, no members or locks, one entry
 * (path, kind, mtime; version 1 by N1, mode 0755, owner 0:0), as formats 1-3
 * lay it out. */
static void raw_snap_one(struct raw *r, uint32_t format, const char *path, uint8_t kind, uint64_t mtime)
{
    r->n = 0;
    memcpy(r->b, "NSFM", 4);
    r->n = 4;
    raw_u32(r, format);
    raw_u64(r, 1); /* version */
    raw_u64(r, 0); /* now */
    raw_u32(r, 0); /* members */
    raw_u32(r, 0); /* locks */
    raw_u64(r, 1); /* entries */
    raw_str(r, path);
    raw_u8(r, kind);
    raw_u8(r, 0);
    raw_u64(r, 1);
    raw_u64(r, N1);
    raw_u32(r, 0755);
    raw_u32(r, 0);
    raw_u32(r, 0);
    raw_u64(r, mtime);
    raw_u64(r, 0); /* checksum, fixed below */
    fix_checksum(r->b, r->n);
}

static void test_bad_paths_refused(void **state)
{
    struct fsm *f = *state;
    populate(f);
    const char *bad[] = {"../x",      ".nsyncfs/raft/metadata1", ".nsyncfs", ".nsyncfs/staging",
                         "/etc/passwd", "a//b",                  "a/../b",   "d/.."};
    struct raw r;
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        raw_header(&r, FSM_OP_ANNOUNCE, 0, N1); /* a directory */
        raw_str(&r, bad[i]);
        raw_u8(&r, FSM_DIR);
        raw_u32(&r, 0755);
        raw_u32(&r, 0);
        raw_u32(&r, 0);
        raw_u64(&r, 0);
        assert_malformed(f, r.b, r.n);
        raw_header(&r, FSM_OP_ANNOUNCE, 0, N1); /* a delete */
        raw_str(&r, bad[i]);
        raw_u8(&r, FSM_TOMBSTONE);
        raw_u32(&r, 0);
        raw_u32(&r, 0);
        raw_u32(&r, 0);
        raw_u64(&r, 0);
        assert_malformed(f, r.b, r.n);
        raw_header(&r, FSM_OP_RENAME, 0, N1);
        raw_str(&r, bad[i]);
        raw_str(&r, "fine");
        assert_malformed(f, r.b, r.n);
        raw_header(&r, FSM_OP_RENAME, 0, N1);
        raw_str(&r, "d/f");
        raw_str(&r, bad[i]);
        assert_malformed(f, r.b, r.n);
        raw_header(&r, FSM_OP_LOCK, 0, N1);
        raw_str(&r, bad[i]);
        raw_u32(&r, 100);
        assert_malformed(f, r.b, r.n);
        raw_header(&r, FSM_OP_UNLOCK, 0, N1);
        raw_str(&r, bad[i]);
        assert_malformed(f, r.b, r.n);
        raw_header(&r, FSM_OP_SYNCED, 0, N2);
        raw_u32(&r, 1);
        raw_str(&r, bad[i]);
        raw_u64(&r, 3);
        assert_malformed(f, r.b, r.n);
        /* Nor can our own encoder produce them. */
        struct fsm_cmd c = {.op = FSM_OP_ANNOUNCE, .node = N1, .path = bad[i], .meta = file_meta(1, 1)};
        void *buf;
        size_t len;
        assert_int_equal(fsm_cmd_encode(&c, &buf, &len), -EINVAL);
    }
    /* Just outside the data directory is an ordinary name. */
    raw_header(&r, FSM_OP_UNLOCK, 0, N1);
    raw_str(&r, ".nsyncfsx/y");
    struct fsm_cmd ok;
    assert_int_equal(fsm_cmd_decode(r.b, r.n, &ok), 0);
    fsm_cmd_release(&ok);

    /* A path of PATH_MAX bytes (components short enough). */
    size_t n = PATH_MAX;
    uint8_t *big = malloc(32 + n + 8);
    char *longp = malloc(n + 1);
    for (size_t i = 0; i < n; i++)
        longp[i] = i % 100 == 99 ? '/' : 'a';
    longp[n] = '\0';
    raw_header(&r, FSM_OP_UNLOCK, 0, N1);
    memcpy(big, r.b, r.n);
    size_t bn = r.n;
    for (int i = 0; i < 4; i++)
        big[bn++] = (uint8_t)(n >> (8 * i));
    memcpy(big + bn, longp, n + 1);
    bn += n + 1;
    assert_malformed(f, big, bn);
    free(longp);
    free(big);

    /* A snapshot whose one entry lies in the data directory. */
    for (int inside = 0; inside < 2; inside++) {
        raw_snap_one(&r, 2, inside ? ".nsyncfs/raft/metadata1" : "dir", FSM_DIR, 0);
        struct fsm *t = fsm_new();
        assert_int_equal(fsm_restore(t, r.b, r.n), inside ? -EINVAL : 0);
        assert_int_equal(fsm_get(t, "dir") != NULL, !inside);
        fsm_free(t);
    }
}

/* ---------------- catalog and settlement ---------------- */

static void test_announce_pending(void **state)
{
    struct fsm *f = *state;
    assert_int_equal(join(f, N1), 0);
    assert_int_equal(join(f, N2), 0);
    assert_int_equal(fsm_version(f), 2);
    struct fsm_meta m = file_meta(1234, 0x77);
    assert_int_equal(announce_meta(f, N1, "a/b.txt", m, false, 10), 0);
    assert_int_equal(fsm_version(f), 3);
    const struct fsm_entry *e = fsm_get(f, "a/b.txt");
    assert_non_null(e);
    assert_string_equal(e->path, "a/b.txt");
    assert_int_equal(e->kind, FSM_FILE);
    assert_int_equal(e->version, 3);
    assert_int_equal(e->origin, N1);
    assert_int_equal(e->mode, 0644);
    assert_int_equal(e->uid, 1000);
    assert_int_equal(e->gid, 100);
    assert_int_equal(e->size, 1234);
    assert_true(e->mtime_ns == m.mtime_ns);
    assert_memory_equal(e->hash, m.hash, FSM_HASH_LEN);
    assert_null(e->target);
    assert_null(e->renamed_from);
    assert_true(e->pending);
    assert_int_equal(e->n_synced, 1);
    assert_int_equal(e->synced[0], N1);
    assert_true(fsm_entry_has(e, N1));
    assert_false(fsm_entry_has(e, N2));
    assert_true(fsm_node_has(f, "a/b.txt", N1));
    assert_false(fsm_node_has(f, "a/b.txt", N2));
    assert_true(fsm_node_has(f, "unknown", N2));
    assert_null(fsm_get(f, "a"));
    assert_int_equal(fsm_entry_count(f), 1);
    assert_int_equal(fsm_pending_count(f), 1);

    /* A symlink keeps its own copy of the target. */
    char target[] = "x/y";
    struct fsm_meta s = {.kind = FSM_SYMLINK, .mode = 0777, .target = target};
    assert_int_equal(announce_meta(f, N2, "ln", s, false, 0), 0);
    target[0] = 'z';
    assert_string_equal(fsm_get(f, "ln")->target, "x/y");

    /* Settled, then re-announced: everything is replaced, the synced set
     * included, and the entry is pending again. */
    assert_int_equal(synced_now(f, N2, "a/b.txt"), 0);
    assert_false(fsm_get(f, "a/b.txt")->pending);
    assert_int_equal(announce(f, N2, "a/b.txt", FSM_SYMLINK), 0);
    e = fsm_get(f, "a/b.txt");
    assert_int_equal(e->kind, FSM_SYMLINK);
    assert_int_equal(e->origin, N2);
    assert_int_equal(e->size, 0);
    assert_string_equal(e->target, "../elsewhere");
    assert_true(e->pending);
    assert_int_equal(e->n_synced, 1);
    assert_int_equal(e->synced[0], N2);
    assert_int_equal(fsm_entry_count(f), 2);
}

static void test_settle(void **state)
{
    struct fsm *f = *state;
    assert_int_equal(join(f, N1), 0);
    assert_int_equal(join(f, N2), 0);
    assert_int_equal(join(f, N3), 0);
    assert_int_equal(announce(f, N1, "f", FSM_FILE), 0);
    uint64_t v = fsm_get(f, "f")->version;
    assert_int_equal(v, 4);

    /* Stale versions are ignored, also for paths that do not exist. */
    assert_int_equal(synced(f, N2, "f", v - 1), 0);
    assert_int_equal(synced(f, N2, "f", v + 1), 0);
    assert_int_equal(synced(f, N2, "nothere", v), 0);
    assert_int_equal(fsm_get(f, "f")->n_synced, 1);
    assert_false(fsm_node_has(f, "f", N2));
    assert_int_equal(fsm_version(f), 7);

    assert_int_equal(synced(f, N2, "f", v), 0);
    const struct fsm_entry *e = fsm_get(f, "f");
    assert_true(e->pending);
    assert_int_equal(e->n_synced, 2);
    assert_true(fsm_node_has(f, "f", N2));
    /* Repeating adds nothing. */
    assert_int_equal(synced(f, N2, "f", v), 0);
    assert_int_equal(fsm_get(f, "f")->n_synced, 2);

    assert_int_equal(synced(f, N3, "f", v), 0);
    e = fsm_get(f, "f");
    assert_non_null(e);
    assert_false(e->pending);
    assert_int_equal(e->n_synced, 0);
    assert_null(e->synced);
    assert_int_equal(e->version, v);
    assert_int_equal(fsm_pending_count(f), 0);
    assert_true(fsm_node_has(f, "f", N3));
    assert_true(fsm_entry_has(e, 999)); /* settled: every member has it */
    /* SYNCED for a settled entry is stale too. */
    assert_int_equal(synced(f, N3, "f", v), 0);
    assert_false(fsm_get(f, "f")->pending);

    /* A new version is pending again, and the old version's reports no
     * longer count. */
    assert_int_equal(announce(f, N2, "f", FSM_FILE), 0);
    uint64_t v2 = fsm_get(f, "f")->version;
    assert_int_equal(synced(f, N1, "f", v), 0);
    assert_int_equal(synced(f, N3, "f", v), 0);
    assert_true(fsm_get(f, "f")->pending);
    assert_int_equal(fsm_get(f, "f")->origin, N2);

    /* One batch with several items settles what it completes. */
    assert_int_equal(announce(f, N1, "g", FSM_DIR), 0);
    uint64_t vg = fsm_get(f, "g")->version;
    struct fsm_synced_item batch[] = {{"f", v2}, {"g", vg}, {"f", v2}};
    struct fsm_cmd c = {.op = FSM_OP_SYNCED, .node = N3, .items = batch, .n_items = 3};
    assert_int_equal(apply_cmd(f, &c), 0);
    c.node = N1;
    assert_int_equal(apply_cmd(f, &c), 0);
    assert_false(fsm_get(f, "f")->pending);
    assert_true(fsm_get(f, "g")->pending);
    assert_int_equal(fsm_get(f, "g")->n_synced, 2);
    assert_int_equal(fsm_pending_count(f), 1);
}

/* fsync's question: would the state survive losing a minority? */
static void test_on_majority(void **state)
{
    struct fsm *f = *state;
    assert_int_equal(join(f, N1), 0);
    assert_int_equal(join(f, N2), 0);
    assert_int_equal(join(f, N3), 0);
    assert_true(fsm_on_majority(f, "never-announced"));

    /* Bytes only on the writer: not until a second node has them. */
    assert_int_equal(announce(f, N1, "f", FSM_FILE), 0);
    assert_false(fsm_on_majority(f, "f"));
    assert_int_equal(synced_now(f, N2, "f"), 0);
    assert_true(fsm_on_majority(f, "f"));
    assert_true(fsm_get(f, "f")->pending); /* N3 still lacks it */
    assert_int_equal(synced_now(f, N3, "f"), 0);
    assert_true(fsm_on_majority(f, "f")); /* settled */

    /* A new version starts over; a report of the old one does not count. */
    uint64_t old = fsm_get(f, "f")->version;
    assert_int_equal(announce(f, N2, "f", FSM_FILE), 0);
    assert_int_equal(synced(f, N1, "f", old), 0);
    assert_false(fsm_on_majority(f, "f"));

    /* What the catalog itself carries is on a majority once committed. */
    assert_int_equal(announce_inline(f, N1, "small", "tiny bytes"), 0);
    assert_true(fsm_on_majority(f, "small"));
    assert_int_equal(announce(f, N1, "d", FSM_DIR), 0);
    assert_true(fsm_on_majority(f, "d"));
    assert_int_equal(announce(f, N1, "ln", FSM_SYMLINK), 0);
    assert_true(fsm_on_majority(f, "ln"));
    assert_int_equal(announce(f, N1, "gone", FSM_TOMBSTONE), 0);
    assert_true(fsm_on_majority(f, "gone"));
    assert_int_equal(announce_meta(f, N1, "empty", file_meta(0, 0), false, 0), 0);
    assert_true(fsm_on_majority(f, "empty"));

    /* A report from a node that is no member does not count. */
    assert_int_equal(announce(f, N1, "g", FSM_FILE), 0);
    assert_int_equal(synced_now(f, 0x999, "g"), 0);
    assert_false(fsm_on_majority(f, "g"));
}

static void test_tombstone(void **state)
{
    struct fsm *f = *state;
    assert_int_equal(join(f, N1), 0);
    assert_int_equal(join(f, N2), 0);
    assert_int_equal(announce(f, N1, "f", FSM_FILE), 0);
    assert_int_equal(synced_now(f, N2, "f"), 0);
    assert_false(fsm_get(f, "f")->pending);

    assert_int_equal(announce(f, N2, "f", FSM_TOMBSTONE), 0);
    const struct fsm_entry *e = fsm_get(f, "f");
    assert_int_equal(e->kind, FSM_TOMBSTONE);
    assert_true(e->pending);
    assert_false(fsm_node_has(f, "f", N1));
    assert_int_equal(synced_now(f, N1, "f"), 0);
    assert_null(fsm_get(f, "f"));
    assert_int_equal(fsm_entry_count(f), 0);
    assert_int_equal(fsm_pending_count(f), 0);

    /* A tombstone for a path never seen is still recorded. */
    assert_int_equal(announce(f, N1, "never", FSM_TOMBSTONE), 0);
    assert_non_null(fsm_get(f, "never"));
    assert_true(fsm_get(f, "never")->pending);

    /* A single-member cluster settles (and drops) its own tombstone at once. */
    assert_int_equal(leave(f, N2), 0);
    assert_null(fsm_get(f, "never"));
    assert_int_equal(announce(f, N1, "again", FSM_TOMBSTONE), 0);
    assert_null(fsm_get(f, "again"));
    assert_int_equal(announce(f, N1, "file", FSM_FILE), 0);
    assert_false(fsm_get(f, "file")->pending);
}

static void test_no_members(void **state)
{
    struct fsm *f = *state;
    assert_int_equal(announce(f, N1, "a", FSM_FILE), 0);
    assert_int_equal(announce(f, N1, "t", FSM_TOMBSTONE), 0);
    assert_int_equal(synced_now(f, N2, "a"), 0);
    assert_int_equal(synced_now(f, N3, "a"), 0);
    assert_true(fsm_get(f, "a")->pending);
    assert_int_equal(fsm_get(f, "a")->n_synced, 3);
    assert_non_null(fsm_get(f, "t"));
    assert_int_equal(fsm_pending_count(f), 2);
    assert_int_equal(fsm_member_count(f), 0);
    assert_null(fsm_member_at(f, 0));
}

static void test_join(void **state)
{
    struct fsm *f = *state;
    /* Before any member, N1 announces; when N1 joins, what it has settles. */
    assert_int_equal(announce(f, N1, "early", FSM_FILE), 0);
    assert_int_equal(announce(f, N2, "other", FSM_FILE), 0);
    assert_int_equal(join(f, N1), 0);
    assert_false(fsm_get(f, "early")->pending);
    assert_true(fsm_get(f, "other")->pending);

    assert_int_equal(announce(f, N1, "p", FSM_FILE), 0);
    assert_false(fsm_get(f, "p")->pending); /* N1 alone */
    assert_int_equal(announce(f, N1, "q", FSM_DIR), 0);
    assert_int_equal(join(f, N2), 0);
    /* The newcomer lacks everything: settled entries are pending again,
     * held by the members that were there; it settles them as it reports. */
    assert_true(fsm_get(f, "p")->pending);
    assert_true(fsm_get(f, "q")->pending);
    assert_true(fsm_node_has(f, "p", N1));
    assert_false(fsm_node_has(f, "p", N2));
    assert_int_equal(synced_now(f, N2, "p"), 0);
    assert_false(fsm_get(f, "p")->pending);
    assert_int_equal(synced_now(f, N2, "q"), 0);
    assert_false(fsm_get(f, "q")->pending);
    assert_true(fsm_get(f, "other")->pending);
    assert_false(fsm_node_has(f, "other", N1));
    assert_int_equal(announce(f, N1, "r", FSM_FILE), 0);
    assert_true(fsm_get(f, "r")->pending);
    assert_int_equal(synced_now(f, N2, "r"), 0);
    assert_false(fsm_get(f, "r")->pending);

    assert_int_equal(announce(f, N1, "s", FSM_FILE), 0);
    assert_int_equal(join(f, N3), 0);
    assert_int_equal(synced_now(f, N2, "s"), 0);
    assert_true(fsm_get(f, "s")->pending); /* N3 lacks it now */
    assert_int_equal(synced_now(f, N3, "s"), 0);
    assert_false(fsm_get(f, "s")->pending);

    /* Members sorted by id, whatever the order of JOINs; JOIN again updates. */
    assert_int_equal(join(f, 5), 0);
    assert_int_equal(fsm_member_count(f), 4);
    assert_int_equal(fsm_member_at(f, 0)->id, 5);
    assert_int_equal(fsm_member_at(f, 1)->id, N1);
    assert_int_equal(fsm_member_at(f, 3)->id, N3);
    assert_string_equal(fsm_member_get(f, N2)->caddr, "10.0.0.22:7000");
    assert_string_equal(fsm_member_get(f, N2)->faddr, "10.0.0.22:7001");
    struct fsm_cmd j = {.op = FSM_OP_JOIN, .node = N2, .caddr = "new:1", .faddr = "new:2"};
    assert_int_equal(apply_cmd(f, &j), 0);
    assert_int_equal(fsm_member_count(f), 4);
    assert_string_equal(fsm_member_get(f, N2)->caddr, "new:1");
    assert_string_equal(fsm_member_get(f, N2)->faddr, "new:2");
    assert_null(fsm_member_get(f, 6));
}

static void test_leave(void **state)
{
    struct fsm *f = *state;
    assert_int_equal(join(f, N1), 0);
    assert_int_equal(join(f, N2), 0);
    assert_int_equal(join(f, N3), 0);
    assert_int_equal(announce(f, N1, "waits-n3", FSM_FILE), 0);
    assert_int_equal(synced_now(f, N2, "waits-n3"), 0);
    assert_int_equal(announce(f, N1, "waits-both", FSM_FILE), 0);
    assert_int_equal(announce(f, N1, "gone", FSM_TOMBSTONE), 0);
    assert_int_equal(synced_now(f, N2, "gone"), 0);
    assert_int_equal(lock(f, N3, "x", 100, 1000), 0);
    assert_int_equal(lock(f, N3, "y", 100, 1000), 0);
    assert_int_equal(lock(f, N2, "z", 100, 1000), 0);
    assert_int_equal(fsm_locks_of(f, N3), 2);

    assert_int_equal(leave(f, N3), 0);
    assert_int_equal(fsm_member_count(f), 2);
    assert_null(fsm_member_get(f, N3));
    assert_false(fsm_get(f, "waits-n3")->pending);
    assert_null(fsm_get(f, "gone"));
    assert_true(fsm_get(f, "waits-both")->pending);
    assert_int_equal(fsm_locks_of(f, N3), 0);
    assert_int_equal(fsm_lock_get(f, "x", NULL, NULL), 0);
    assert_int_equal(fsm_lock_get(f, "y", NULL, NULL), 0);
    assert_int_equal(fsm_lock_get(f, "z", NULL, NULL), 1);
    assert_int_equal(fsm_pending_count(f), 1);

    /* Leaving twice, or as a stranger, is harmless and still counts. */
    uint64_t v = fsm_version(f);
    assert_int_equal(leave(f, N3), 0);
    assert_int_equal(leave(f, 4242), 0);
    assert_int_equal(fsm_version(f), v + 2);
    assert_int_equal(fsm_member_count(f), 2);

    /* N1 alone remains, and it has this one. */
    assert_int_equal(leave(f, N2), 0);
    assert_false(fsm_get(f, "waits-both")->pending);
    /* The last member leaving settles nothing: no members, nothing known. */
    assert_int_equal(announce(f, N2, "late", FSM_FILE), 0);
    assert_int_equal(leave(f, N1), 0);
    assert_true(fsm_get(f, "late")->pending);
}

/* ---------------- locks ---------------- */

static int announce_held(struct fsm *f, uint64_t node, const char *path, uint8_t fill, uint64_t now)
{
    struct fsm_cmd c = {.op = FSM_OP_ANNOUNCE, .node = node, .path = path, .meta = file_meta(7, fill),
                        .unlock = true, .held = true, .now_ms = now};
    return apply_cmd(f, &c);
}

/* A node paused past its lease: another node took the lock, changed the
 * file and let go. The paused node's announce under the lost lock must not
 * replace that change (found by test_partitions.py). */
static void test_lock_lost(void **state)
{
    struct fsm *f = *state;
    assert_int_equal(join(f, N1), 0);
    assert_int_equal(join(f, N2), 0);
    assert_int_equal(lock(f, N1, "f", 1000, 500), 0);
    assert_int_equal(announce_held(f, N1, "f", 1, 1001), 0); /* releases */
    assert_int_equal(lock(f, N1, "f", 1100, 500), 0);        /* N1 writes again, then pauses */
    assert_int_equal(lock(f, N2, "f", 1700, 500), 0);        /* lease over: N2 */
    assert_int_equal(announce_held(f, N2, "f", 2, 1701), 0);
    assert_int_equal(fsm_get(f, "f")->origin, N2);
    assert_int_equal(announce_held(f, N1, "f", 3, 1800), -EBUSY); /* resumed: refused */
    assert_int_equal(fsm_get(f, "f")->origin, N2);
    assert_int_equal(fsm_get(f, "f")->hash[0], 2);
    /* Holding the lock again, N1 may replace it; and a path nobody else
     * changed needs no lock record (its own entry). */
    assert_int_equal(lock(f, N1, "f", 1900, 500), 0);
    assert_int_equal(announce_held(f, N1, "f", 4, 1901), 0);
    assert_int_equal(announce_held(f, N1, "f", 5, 1902), 0);
    /* Without the flag (older commands, tests) nothing changes. */
    assert_int_equal(announce(f, N2, "f", FSM_FILE), 0);
}

static void test_locks(void **state)
{
    struct fsm *f = *state;
    uint64_t holder = 0, exp = 0;
    assert_int_equal(fsm_lock_get(f, "a", &holder, &exp), 0);

    assert_int_equal(lock(f, N1, "a", 1000, 500), 0);
    assert_int_equal(fsm_lock_get(f, "a", &holder, &exp), 1);
    assert_int_equal(holder, N1);
    assert_int_equal(exp, 1500);
    assert_int_equal(fsm_version(f), 1);

    /* Refused while live (up to and including expires_ms); counts anyway. */
    assert_int_equal(lock(f, N2, "a", 1200, 500), -EBUSY);
    assert_int_equal(lock(f, N2, "a", 1500, 500), -EBUSY);
    assert_int_equal(fsm_version(f), 3);
    assert_int_equal(fsm_lock_get(f, "a", &holder, &exp), 1);
    assert_int_equal(holder, N1);
    assert_int_equal(exp, 1500);

    /* Same node: re-granted, extended from the clock (1500, not the 1400
     * stamped). */
    assert_int_equal(lock(f, N1, "a", 1400, 500), 0);
    assert_int_equal(fsm_lock_get(f, "a", &holder, &exp), 1);
    assert_int_equal(exp, 2000);

    /* Expired: another node takes it. */
    assert_int_equal(lock(f, N2, "a", 2001, 100), 0);
    assert_int_equal(fsm_lock_get(f, "a", &holder, &exp), 1);
    assert_int_equal(holder, N2);
    assert_int_equal(exp, 2101);
    assert_int_equal(fsm_locks_of(f, N1), 0);
    assert_int_equal(fsm_locks_of(f, N2), 1);

    /* RENEW extends every lock of the node and nobody else's. */
    assert_int_equal(lock(f, N2, "b", 2050, 100), 0);
    assert_int_equal(lock(f, N1, "c", 2050, 100), 0);
    assert_int_equal(renew(f, N2, 2100, 3000), 0);
    fsm_lock_get(f, "a", NULL, &exp);
    assert_int_equal(exp, 5100);
    fsm_lock_get(f, "b", NULL, &exp);
    assert_int_equal(exp, 5100);
    fsm_lock_get(f, "c", &holder, &exp);
    assert_int_equal(holder, N1);
    assert_int_equal(exp, 2150);
    assert_int_equal(lock(f, N1, "a", 4000, 100), -EBUSY);

    /* UNLOCK by a non-holder is a no-op; by the holder releases. */
    assert_int_equal(unlock(f, N1, "a"), 0);
    assert_int_equal(fsm_lock_get(f, "a", &holder, NULL), 1);
    assert_int_equal(holder, N2);
    assert_int_equal(unlock(f, N2, "a"), 0);
    assert_int_equal(fsm_lock_get(f, "a", NULL, NULL), 0);
    assert_int_equal(unlock(f, N2, "never-locked"), 0);
    assert_int_equal(fsm_locks_of(f, N2), 1);
    assert_int_equal(lock(f, N1, "a", 4000, 100), 0);

    /* A huge lease saturates instead of wrapping. */
    assert_int_equal(lock(f, N1, "big", UINT64_MAX - 5, UINT32_MAX), 0);
    fsm_lock_get(f, "big", NULL, &exp);
    assert_true(exp == UINT64_MAX);
}

static int wanted_visit(const char *path, uint64_t wanted, void *arg)
{
    char *out = arg;
    snprintf(out + strlen(out), 64 - strlen(out), "%s:%d ", path, (int)(wanted / N1));
    return 0;
}

/* A refused LOCK marks the lock wanted (the first asker only), so that a
 * holder keeping it cached hands it over; the mark goes with the lock. */
static void test_lock_wanted(void **state)
{
    struct fsm *f = *state;
    char seen[64] = "";
    assert_int_equal(lock(f, N1, "a", 1000, 500), 0);
    assert_int_equal(lock(f, N1, "b", 1000, 500), 0);
    assert_int_equal(fsm_lock_wanted(f, "a"), 0);
    assert_int_equal(fsm_foreach_wanted(f, N1, wanted_visit, seen), 0);
    assert_string_equal(seen, "");

    assert_int_equal(lock(f, N2, "a", 1100, 500), -EBUSY);
    assert_int_equal(lock(f, N3, "a", 1100, 500), -EBUSY);
    assert_int_equal(fsm_lock_wanted(f, "a"), N2); /* first asker wins */
    assert_int_equal(lock(f, N1, "a", 1200, 500), 0); /* the holder's re-lock keeps the mark */
    assert_int_equal(fsm_lock_wanted(f, "a"), N2);
    assert_int_equal(fsm_foreach_wanted(f, N1, wanted_visit, seen), 0);
    assert_string_equal(seen, "a:2 ");
    seen[0] = '\0';
    assert_int_equal(fsm_foreach_wanted(f, N2, wanted_visit, seen), 0);
    assert_string_equal(seen, "");

    /* Released and taken by another: a new holder, no mark. */
    assert_int_equal(unlock(f, N1, "a"), 0);
    assert_int_equal(lock(f, N3, "a", 1300, 500), 0);
    assert_int_equal(fsm_lock_wanted(f, "a"), 0);
    /* Taken over after expiry: the mark goes too. */
    assert_int_equal(lock(f, N2, "b", 1300, 500), -EBUSY);
    assert_int_equal(fsm_lock_wanted(f, "b"), N2);
    assert_int_equal(lock(f, N2, "b", 1600, 500), 0);
    assert_int_equal(fsm_lock_wanted(f, "b"), 0);
    /* A LEAVE drops the leaving node's marks and locks. */
    assert_int_equal(lock(f, N1, "b", 1700, 500), -EBUSY);
    assert_int_equal(lock(f, N2, "a", 1700, 500), -EBUSY);
    assert_int_equal(leave(f, N2), 0);
    assert_int_equal(fsm_lock_get(f, "b", NULL, NULL), 0);
    assert_int_equal(fsm_lock_wanted(f, "a"), 0);
    assert_int_equal(fsm_foreach_wanted(f, N3, wanted_visit, seen), 0);
    assert_string_equal(seen, "");
}

/* Record locks: byte ranges per node, shared and exclusive, the node's own
 * ranges replaced in place, leases, LEAVE. */
static void test_rlocks(void **state)
{
    struct fsm *f = *state;
    struct rlock who;
    assert_int_equal(rlock(f, N1, "db", RLOCK_READ, 0, 100, 1000), 0);
    assert_int_equal(rlock(f, N2, "db", RLOCK_READ, 50, 150, 1000), 0); /* readers share */
    assert_int_equal(rlock(f, N3, "db", RLOCK_WRITE, 90, 95, 1000), -EBUSY);
    assert_int_equal(rlock(f, N3, "db", RLOCK_WRITE, 150, 160, 1000), 0); /* [150, 160) is free */
    assert_int_equal(fsm_rlock_test(f, "db", N3, RLOCK_POSIX, RLOCK_WRITE, 0, 1, &who), 1);
    assert_int_equal(who.node, N1);
    assert_int_equal(who.pid, 42);
    assert_int_equal(fsm_rlock_test(f, "db", N1, RLOCK_POSIX, RLOCK_READ, 0, 150, NULL), 0);
    /* Another path and flock's space are independent. */
    assert_int_equal(rlock(f, N3, "other", RLOCK_WRITE, 0, RLOCK_EOF, 1000), 0);
    struct fsm_cmd fl = {.op = FSM_OP_RLOCK, .node = N3, .path = "db", .now_ms = 1000, .lease_ms = 500,
                         .rspace = RLOCK_FLOCK, .rtype = RLOCK_WRITE, .rstart = 0, .rend = RLOCK_EOF};
    assert_int_equal(apply_cmd(f, &fl), 0);
    /* N1 upgrades its middle: a split; then N2 cannot read there. */
    assert_int_equal(rlock(f, N1, "db", RLOCK_WRITE, 10, 20, 1000), 0);
    assert_int_equal(rlock(f, N2, "db", RLOCK_READ, 15, 16, 1000), -EBUSY);
    assert_int_equal(rlock(f, N2, "db", RLOCK_READ, 0, 10, 1000), 0);
    assert_int_equal(rlock(f, N2, "db", RLOCK_READ, 20, 30, 1000), 0);
    /* Unlocking the middle of N1's ranges leaves both ends. */
    assert_int_equal(runlock(f, N1, "db", 5, 25), 0);
    assert_int_equal(rlock(f, N3, "db", RLOCK_WRITE, 5, 10, 1000), -EBUSY); /* N2 reads [0, 10) */
    assert_int_equal(runlock(f, N2, "db", 0, 10), 0);
    assert_int_equal(rlock(f, N3, "db", RLOCK_WRITE, 5, 10, 1000), 0);
    assert_int_equal(rlock(f, N3, "db", RLOCK_WRITE, 4, 5, 1000), -EBUSY); /* N1 kept [0, 5) */
    /* Leases: N1 renews, N2 does not; after 500 ms N2's ranges are free. */
    assert_int_equal(renew(f, N1, 1400, 500), 0);
    assert_int_equal(rlock(f, N3, "db", RLOCK_WRITE, 50, 60, 1501), -EBUSY); /* N1 reads [25, 100) */
    assert_int_equal(rlock(f, N3, "db", RLOCK_WRITE, 100, 150, 1501), 0); /* N2's lapsed */
    assert_int_equal(fsm_rlocks_of(f, N2), 0);
    /* A snapshot carries them. */
    void *buf;
    size_t len;
    snap(f, &buf, &len);
    struct fsm *g = fsm_new();
    assert_non_null(g);
    assert_int_equal(fsm_restore(g, buf, len), 0);
    assert_int_equal(fsm_rlocks_of(g, N1), fsm_rlocks_of(f, N1));
    assert_int_equal(fsm_rlocks_of(g, N3), fsm_rlocks_of(f, N3));
    assert_int_equal(fsm_rlock_test(g, "db", N2, RLOCK_POSIX, RLOCK_READ, 0, 1, &who), 0);
    assert_int_equal(fsm_rlock_test(g, "db", N2, RLOCK_POSIX, RLOCK_WRITE, 0, 1, &who), 1);
    assert_int_equal(who.node, N1);
    fsm_free(g);
    free(buf);
    /* Fairness: N2 was refused a write N1's read range blocks; N1 then
     * holds nothing more on "q" and must not take a range that conflicts
     * with N2's ask while it is fresh (RLOCK_ASK_MS); N2 then gets it. */
    assert_int_equal(rlock(f, N1, "q", RLOCK_READ, 0, 10, 1500), 0);
    assert_int_equal(rlock(f, N2, "q", RLOCK_WRITE, 0, 10, 1500), -EBUSY);
    assert_int_equal(runlock(f, N1, "q", 0, 10), 0);
    assert_int_equal(rlock(f, N1, "q", RLOCK_READ, 5, 6, 1510), -EBUSY); /* N2 asked first */
    assert_int_equal(rlock(f, N3, "q", RLOCK_READ, 20, 30, 1510), 0);    /* elsewhere: fine */
    assert_int_equal(rlock(f, N2, "q", RLOCK_WRITE, 0, 10, 1520), 0);
    assert_int_equal(runlock(f, N2, "q", 0, 10), 0);
    assert_int_equal(rlock(f, N1, "q", RLOCK_READ, 5, 6, 1530), 0);      /* the ask went with the grant */
    assert_int_equal(rlock(f, N2, "q", RLOCK_WRITE, 0, 10, 1530), -EBUSY);
    assert_int_equal(runlock(f, N1, "q", 5, 6), 0);
    /* A stale ask (not renewed by a refusal within RLOCK_ASK_MS) holds nobody back. */
    assert_int_equal(rlock(f, N1, "q", RLOCK_READ, 5, 6, 1530 + RLOCK_ASK_MS + 1), 0);
    /* LEAVE drops a node's record locks. */
    assert_int_equal(leave(f, N1), 0);
    assert_int_equal(fsm_rlocks_of(f, N1), 0);
    assert_int_equal(rlock(f, N2, "db", RLOCK_WRITE, 0, 5, 1600), 0);
    /* Bad ranges and types do not encode. */
    struct fsm_cmd bad = {.op = FSM_OP_RLOCK, .node = N2, .path = "db", .rtype = 3, .rstart = 0, .rend = 1};
    void *b = NULL;
    size_t bl;
    assert_int_equal(fsm_cmd_encode(&bad, &b, &bl), -EINVAL);
    bad.rtype = RLOCK_READ;
    bad.rstart = 5;
    bad.rend = 5;
    assert_int_equal(fsm_cmd_encode(&bad, &b, &bl), -EINVAL);
    bad.rend = 6;
    bad.rspace = 2;
    assert_int_equal(fsm_cmd_encode(&bad, &b, &bl), -EINVAL);
    bad.rspace = RLOCK_POSIX;
    bad.path = ".nsyncfs/raft/x";
    assert_int_equal(fsm_cmd_encode(&bad, &b, &bl), -EINVAL);
}

/* A fresh ANNOUNCE with keep takes the path's lock with it (a LOCK and an
 * announce in one command); refused like any announce while another node
 * holds the lock; keep with unlock does not decode. */
static void test_announce_keep(void **state)
{
    struct fsm *f = *state;
    uint64_t holder = 0, exp = 0;
    struct fsm_cmd c = {.op = FSM_OP_ANNOUNCE, .node = N1, .path = "k", .meta = file_meta(3, 1),
                        .fresh = true, .keep = true, .lease_ms = 500, .now_ms = 1000};
    struct fsm_cmd out;
    void *buf = NULL;
    roundtrip(&c, &out, &buf);
    assert_true(out.keep && out.fresh && !out.unlock);
    assert_int_equal(out.lease_ms, 500);
    free(buf);
    assert_int_equal(apply_cmd(f, &c), 0);
    assert_int_equal(fsm_lock_get(f, "k", &holder, &exp), 1);
    assert_int_equal(holder, N1);
    assert_int_equal(exp, 1500);
    /* Again by the holder: renewed, not a second record. */
    c.now_ms = 1200;
    assert_int_equal(apply_cmd(f, &c), 0);
    assert_int_equal(fsm_locks_of(f, N1), 1);
    fsm_lock_get(f, "k", NULL, &exp);
    assert_int_equal(exp, 1700);
    /* Another node's keep while N1 holds it: refused, nothing taken. */
    struct fsm_cmd d = c;
    d.node = N2;
    d.fresh = false;
    assert_int_equal(apply_cmd(f, &d), -EBUSY);
    fsm_lock_get(f, "k", &holder, NULL);
    assert_int_equal(holder, N1);
    /* Without keep, an announce takes nothing. */
    struct fsm_cmd e = {.op = FSM_OP_ANNOUNCE, .node = N2, .path = "other", .meta = file_meta(3, 2),
                        .fresh = true, .now_ms = 1300};
    assert_int_equal(apply_cmd(f, &e), 0);
    assert_int_equal(fsm_lock_get(f, "other", NULL, NULL), 0);
    /* keep and unlock together: malformed. */
    struct raw r;
    raw_header(&r, FSM_OP_ANNOUNCE, 0x10 | 0x01, N1);
    raw_str(&r, "k");
    assert_malformed(f, r.b, r.n);
}

static void test_announce_locked(void **state)
{
    struct fsm *f = *state;
    assert_int_equal(join(f, N1), 0);
    assert_int_equal(join(f, N2), 0);
    assert_int_equal(announce(f, N1, "f", FSM_FILE), 0);
    uint64_t old = fsm_get(f, "f")->version;
    assert_int_equal(lock(f, N1, "f", 1000, 100), 0);

    uint64_t v = fsm_version(f);
    assert_int_equal(announce_meta(f, N2, "f", file_meta(9, 9), false, 1050), -EBUSY);
    assert_int_equal(fsm_version(f), v + 1);
    assert_int_equal(fsm_get(f, "f")->version, old);
    assert_int_equal(fsm_get(f, "f")->size, 42);
    /* Live up to and including expires_ms. */
    assert_int_equal(announce_meta(f, N2, "f", file_meta(9, 9), false, 1100), -EBUSY);
    assert_int_equal(fsm_get(f, "f")->version, old);
    /* The holder may; with unlock the lock goes in the same command. */
    assert_int_equal(announce_meta(f, N1, "f", file_meta(9, 9), true, 1060), 0);
    assert_int_equal(fsm_get(f, "f")->size, 9);
    assert_int_equal(fsm_lock_get(f, "f", NULL, NULL), 0);
    /* unlock=false keeps it. */
    assert_int_equal(lock(f, N1, "f", 1070, 100), 0);
    assert_int_equal(announce_meta(f, N1, "f", file_meta(8, 8), false, 1080), 0);
    assert_int_equal(fsm_lock_get(f, "f", NULL, NULL), 1);
    /* Once expired, anyone may announce; its unlock leaves another's lock. */
    assert_int_equal(announce_meta(f, N2, "f", file_meta(7, 7), true, 1201), 0);
    assert_int_equal(fsm_get(f, "f")->size, 7);
    uint64_t holder;
    assert_int_equal(fsm_lock_get(f, "f", &holder, NULL), 1);
    assert_int_equal(holder, N1);
}

static int announce_fresh(struct fsm *f, uint64_t node, const char *path, uint8_t fill, bool unlock)
{
    struct fsm_cmd c = {.op = FSM_OP_ANNOUNCE, .node = node, .path = path, .meta = file_meta(fill, fill),
                        .unlock = unlock, .fresh = true};
    return apply_cmd(f, &c);
}

/* An optimistic create (fresh) goes over nothing, a tombstone or the node's
 * own entry, never over a live entry that another node made meanwhile. */
static void test_fresh(void **state)
{
    struct fsm *f = *state;
    assert_int_equal(join(f, N1), 0);
    assert_int_equal(join(f, N2), 0);

    /* Over nothing, then over its own entry (a second close of the file). */
    assert_int_equal(announce_fresh(f, N1, "a", 1, false), 0);
    assert_int_equal(announce_fresh(f, N1, "a", 2, false), 0);
    assert_int_equal(fsm_get(f, "a")->size, 2);

    /* Over another node's live entry: refused, only the version moves. */
    assert_int_equal(announce(f, N2, "b", FSM_FILE), 0);
    uint64_t old = fsm_get(f, "b")->version, v = fsm_version(f);
    assert_int_equal(announce_fresh(f, N1, "b", 3, true), -EEXIST);
    assert_int_equal(fsm_version(f), v + 1);
    assert_int_equal(fsm_get(f, "b")->version, old);
    assert_int_equal(fsm_get(f, "b")->origin, N2);
    /* A refused fresh announce keeps the sender's lock: it unlocks itself. */
    assert_int_equal(announce(f, N2, "c", FSM_FILE), 0);
    assert_int_equal(lock(f, N1, "c", 0, 100), 0);
    assert_int_equal(announce_fresh(f, N1, "c", 4, true), -EEXIST);
    assert_int_equal(fsm_lock_get(f, "c", NULL, NULL), 1);

    /* Over a tombstone, whoever deleted it. */
    struct fsm_meta t = {.kind = FSM_TOMBSTONE};
    assert_int_equal(announce_meta(f, N2, "b", t, false, 0), 0);
    assert_int_equal(announce_fresh(f, N1, "b", 5, false), 0);
    assert_int_equal(fsm_get(f, "b")->origin, N1);

    /* A fresh rename moves only a source this node made. */
    struct fsm_cmd r = {.op = FSM_OP_RENAME, .node = N1, .path = "c", .path2 = "d", .fresh = true};
    assert_int_equal(apply_cmd(f, &r), -EEXIST);
    assert_non_null(fsm_get(f, "c"));
    r.path = "a";
    assert_int_equal(apply_cmd(f, &r), 0);
    assert_int_equal(fsm_get(f, "d")->origin, N1);

    /* The flag survives encoding, and only ANNOUNCE/RENAME may carry it. */
    void *buf;
    size_t len;
    struct fsm_cmd out;
    struct fsm_cmd a = {.op = FSM_OP_ANNOUNCE, .node = N1, .path = "x", .meta = file_meta(1, 1), .fresh = true};
    assert_int_equal(fsm_cmd_encode(&a, &buf, &len), 0);
    assert_int_equal(fsm_cmd_decode(buf, len, &out), 0);
    assert_true(out.fresh);
    assert_false(out.unlock);
    fsm_cmd_release(&out);
    free(buf);
}

/* A small file's bytes ride in its ANNOUNCE: kept while it is pending,
 * dropped when it settles, is replaced, deleted or renamed, and within a
 * budget that every node counts alike. */
static void test_inline(void **state)
{
    struct fsm *f = *state;
    assert_int_equal(join(f, N1), 0);
    assert_int_equal(join(f, N2), 0);

    assert_int_equal(announce_inline(f, N1, "a", "hello"), 0);
    const struct fsm_entry *e = fsm_get(f, "a");
    assert_non_null(e->data);
    assert_memory_equal(e->data, "hello", 5);
    assert_int_equal(fsm_inline_bytes(f), 5);
    /* Replaced by a bigger version: the old bytes go, the new ones count. */
    assert_int_equal(announce_inline(f, N1, "a", "hello again"), 0);
    assert_memory_equal(fsm_get(f, "a")->data, "hello again", 11);
    assert_int_equal(fsm_inline_bytes(f), 11);
    /* Settled: nobody needs them any more. */
    assert_int_equal(synced_now(f, N2, "a"), 0);
    assert_false(fsm_get(f, "a")->pending);
    assert_null(fsm_get(f, "a")->data);
    assert_int_equal(fsm_inline_bytes(f), 0);

    /* Deleted, or renamed (the bytes move on disk, not in the catalog). */
    assert_int_equal(announce_inline(f, N1, "b", "bee"), 0);
    assert_int_equal(announce_inline(f, N1, "c", "sea"), 0);
    assert_int_equal(fsm_inline_bytes(f), 6);
    assert_int_equal(announce(f, N1, "b", FSM_TOMBSTONE), 0);
    assert_int_equal(rename_path(f, N1, "c", "c2", false), 0);
    assert_null(fsm_get(f, "c2")->data);
    assert_int_equal(fsm_inline_bytes(f), 0);
    /* Replaced by a version without bytes. */
    assert_int_equal(announce_inline(f, N1, "d", "dee"), 0);
    assert_int_equal(announce(f, N1, "d", FSM_FILE), 0);
    assert_null(fsm_get(f, "d")->data);
    assert_int_equal(fsm_inline_bytes(f), 0);

    /* The budget: pending entries fill it; the next one keeps only its
     * hash, and it is still a normal pending entry. */
    static uint8_t page[FSM_INLINE_MAX];
    memset(page, 0x5a, sizeof page);
    struct fsm_meta m = file_meta(FSM_INLINE_MAX, 0x11);
    m.data = page;
    char p[32];
    size_t fit = FSM_INLINE_BUDGET / FSM_INLINE_MAX;
    for (size_t i = 0; i <= fit; i++) {
        snprintf(p, sizeof p, "full/%zu", i);
        assert_int_equal(announce_meta(f, N1, p, m, false, 0), 0);
    }
    assert_int_equal(fsm_inline_bytes(f), fit * FSM_INLINE_MAX);
    snprintf(p, sizeof p, "full/%zu", fit);
    assert_null(fsm_get(f, p)->data);
    assert_true(fsm_get(f, p)->pending);
    /* Settling one makes room for the next. */
    assert_int_equal(synced_now(f, N2, "full/0"), 0);
    assert_int_equal(announce_meta(f, N1, "full/next", m, false, 0), 0);
    assert_non_null(fsm_get(f, "full/next")->data);

    /* Encoding: the bytes survive; too many, or on a non-file, are refused. */
    void *buf;
    size_t len;
    struct fsm_cmd out;
    struct fsm_cmd a = {.op = FSM_OP_ANNOUNCE, .node = N1, .path = "x", .meta = file_meta(3, 1)};
    a.meta.data = "abc";
    assert_int_equal(fsm_cmd_encode(&a, &buf, &len), 0);
    assert_int_equal(fsm_cmd_decode(buf, len, &out), 0);
    assert_non_null(out.meta.data);
    assert_memory_equal(out.meta.data, "abc", 3);
    fsm_cmd_release(&out);
    /* Cut short inside the bytes. */
    assert_int_equal(fsm_cmd_decode(buf, len - 1, &out), -EINVAL);
    free(buf);
    a.meta = file_meta(FSM_INLINE_MAX + 1, 1);
    a.meta.data = page;
    assert_int_equal(fsm_cmd_encode(&a, &buf, &len), -EINVAL);
    a.meta = file_meta(0, 0);
    a.meta.kind = FSM_DIR;
    a.meta.data = "abc";
    assert_int_equal(fsm_cmd_encode(&a, &buf, &len), -EINVAL);
}

static void test_now_monotonic(void **state)
{
    struct fsm *f = *state;
    assert_int_equal(lock(f, N1, "a", 1000, 100), 0);
    /* A command stamped earlier (a new leader's clock behind) uses 1000. */
    assert_int_equal(lock(f, N1, "b", 500, 100), 0);
    uint64_t exp;
    fsm_lock_get(f, "b", NULL, &exp);
    assert_int_equal(exp, 1100);
    /* "a" expires at 1100: at a stamped 1050 it is still live for N2, even
     * after a RENEW that carries an old clock. */
    assert_int_equal(renew(f, N3, 10, 1), 0);
    assert_int_equal(lock(f, N2, "a", 0, 100), -EBUSY);
    assert_int_equal(lock(f, N2, "a", 1101, 100), 0);
    /* Now the clock is 1101: an old stamp cannot revive N1 over N2. */
    assert_int_equal(lock(f, N1, "a", 900, 100), -EBUSY);
    assert_int_equal(renew(f, N1, 0, 50), 0);
    fsm_lock_get(f, "b", NULL, &exp);
    assert_int_equal(exp, 1151);
}

/* The whole life of a crashed holder's lock (issue 4): it blocks others
 * while live, frees itself at the lease's end without any command from the
 * holder, and the holder's late RENEW, ANNOUNCE or UNLOCK (a node that was
 * only partitioned) cannot take it back or overwrite the new holder's
 * change. */
static void test_lock_holder_crash(void **state)
{
    struct fsm *f = *state;
    assert_int_equal(join(f, N1), 0);
    assert_int_equal(join(f, N2), 0);
    assert_int_equal(announce(f, N1, "f", FSM_FILE), 0);
    assert_int_equal(lock(f, N1, "f", 1000, 2000), 0);
    assert_int_equal(renew(f, N1, 2000, 2000), 0);   /* live until 4000 */
    /* N1 dies: no more RENEW. N2 waits out the lease. */
    assert_int_equal(lock(f, N2, "f", 3000, 2000), -EBUSY);
    assert_int_equal(lock(f, N2, "f", 4000, 2000), -EBUSY);
    assert_int_equal(lock(f, N2, "f", 4001, 2000), 0);
    uint64_t holder, exp;
    assert_int_equal(fsm_lock_get(f, "f", &holder, &exp), 1);
    assert_int_equal(holder, N2);
    assert_int_equal(exp, 6001);
    /* N1's late commands change nothing of N2's. */
    assert_int_equal(renew(f, N1, 4100, 2000), 0);
    assert_int_equal(fsm_lock_get(f, "f", &holder, &exp), 1);
    assert_int_equal(holder, N2);
    assert_int_equal(exp, 6001);
    assert_int_equal(fsm_locks_of(f, N1), 0);
    assert_int_equal(announce_meta(f, N1, "f", file_meta(1, 1), true, 4200), -EBUSY);
    assert_int_equal(unlock(f, N1, "f"), 0);
    assert_int_equal(fsm_lock_get(f, "f", &holder, NULL), 1);
    assert_int_equal(holder, N2);
    /* The new holder's announce with unlock lands and frees the path. */
    assert_int_equal(announce_meta(f, N2, "f", file_meta(5, 5), true, 4300), 0);
    assert_int_equal(fsm_get(f, "f")->size, 5);
    assert_int_equal(fsm_get(f, "f")->origin, N2);
    assert_int_equal(fsm_lock_get(f, "f", NULL, NULL), 0);
    assert_int_equal(lock(f, N1, "f", 4400, 2000), 0);
}

/* ---------------- rename ---------------- */

static void test_rename_file(void **state)
{
    struct fsm *f = *state;
    assert_int_equal(join(f, N1), 0);
    assert_int_equal(join(f, N2), 0);
    assert_int_equal(announce(f, N1, "a", FSM_FILE), 0);
    assert_int_equal(synced_now(f, N2, "a"), 0);
    assert_int_equal(announce(f, N1, "ln", FSM_SYMLINK), 0);

    assert_int_equal(rename_path(f, N2, "a", "b", false), 0);
    uint64_t v = fsm_version(f);
    const struct fsm_entry *b = fsm_get(f, "b");
    assert_non_null(b);
    assert_int_equal(b->kind, FSM_FILE);
    assert_int_equal(b->size, 42);
    assert_int_equal(b->version, v);
    assert_int_equal(b->origin, N2);
    assert_string_equal(b->renamed_from, "a");
    assert_true(b->pending);
    assert_int_equal(b->n_synced, 1);
    assert_int_equal(b->synced[0], N2);
    const struct fsm_entry *a = fsm_get(f, "a");
    assert_non_null(a);
    assert_int_equal(a->kind, FSM_TOMBSTONE);
    assert_int_equal(a->version, v);
    assert_true(a->pending);
    assert_null(a->renamed_from);

    /* Settling drops renamed_from and the tombstone. */
    assert_int_equal(synced(f, N1, "b", v), 0);
    assert_int_equal(synced(f, N1, "a", v), 0);
    assert_false(fsm_get(f, "b")->pending);
    assert_null(fsm_get(f, "b")->renamed_from);
    assert_null(fsm_get(f, "a"));

    /* A symlink keeps its target; replacing an existing file. */
    assert_int_equal(rename_path(f, N1, "ln", "b", false), 0);
    b = fsm_get(f, "b");
    assert_int_equal(b->kind, FSM_SYMLINK);
    assert_string_equal(b->target, "../elsewhere");
    assert_string_equal(b->renamed_from, "ln");
    assert_int_equal(fsm_get(f, "ln")->kind, FSM_TOMBSTONE);
    assert_null(fsm_get(f, "ln")->target);
    assert_int_equal(fsm_entry_count(f), 2);

    /* Missing source, or one that is only a tombstone: -ENOENT, counted. */
    v = fsm_version(f);
    void *before;
    size_t blen;
    snap(f, &before, &blen);
    assert_int_equal(rename_path(f, N1, "nothere", "c", false), -ENOENT);
    assert_int_equal(rename_path(f, N1, "ln", "c", false), -ENOENT);
    assert_int_equal(fsm_version(f), v + 2);
    assert_null(fsm_get(f, "c"));
    /* Only the version moved. */
    uint8_t *after;
    size_t alen;
    snap(f, (void **)&after, &alen);
    assert_int_equal(alen, blen);
    assert_memory_not_equal(after, before, 16 + 8); /* magic, format, version */
    assert_memory_equal(after + 16, (uint8_t *)before + 16, alen - 16 - 8);
    free(after);
    free(before);
}

static void test_rename_dir(void **state)
{
    struct fsm *f = *state;
    assert_int_equal(join(f, N1), 0);
    assert_int_equal(join(f, N2), 0);
    const char *tree[] = {"src", "src/a", "src/sub", "src/sub/b", "srcx", "src/sub/gone"};
    for (int i = 0; i < 5; i++)
        assert_int_equal(announce(f, N1, tree[i], i == 0 || i == 2 ? FSM_DIR : FSM_FILE), 0);
    assert_int_equal(announce(f, N1, tree[5], FSM_TOMBSTONE), 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(synced_now(f, N2, tree[i]), 0);
    /* The target already holds things: some overwritten, some not. */
    assert_int_equal(announce(f, N2, "dst", FSM_DIR), 0);
    assert_int_equal(announce(f, N2, "dst/a", FSM_DIR), 0);
    assert_int_equal(announce(f, N2, "dst/only", FSM_FILE), 0);
    assert_int_equal(announce(f, N2, "dst/only/deeper", FSM_FILE), 0);
    assert_int_equal(fsm_entry_count(f), 10);

    assert_int_equal(rename_path(f, N2, "src", "dst", false), 0);
    uint64_t v = fsm_version(f);
    const char *moved[][2] = {{"dst", "src"}, {"dst/a", "src/a"}, {"dst/sub", "src/sub"},
                              {"dst/sub/b", "src/sub/b"}, {"dst/sub/gone", "src/sub/gone"}};
    for (int i = 0; i < 5; i++) {
        const struct fsm_entry *e = fsm_get(f, moved[i][0]);
        assert_non_null(e);
        assert_string_equal(e->renamed_from, moved[i][1]);
        assert_int_equal(e->version, v);
        assert_int_equal(e->origin, N2);
        assert_true(e->pending);
        assert_int_equal(e->n_synced, 1);
        assert_int_equal(e->synced[0], N2);
        const struct fsm_entry *old = fsm_get(f, moved[i][1]);
        assert_non_null(old);
        assert_int_equal(old->kind, FSM_TOMBSTONE);
        assert_int_equal(old->version, v);
        assert_true(old->pending);
    }
    assert_int_equal(fsm_get(f, "dst")->kind, FSM_DIR);
    assert_int_equal(fsm_get(f, "dst/a")->kind, FSM_FILE); /* overwritten */
    assert_int_equal(fsm_get(f, "dst/sub/gone")->kind, FSM_TOMBSTONE);
    /* Not overwritten: tombstones of the new version. */
    for (int i = 0; i < 2; i++) {
        const struct fsm_entry *e = fsm_get(f, i ? "dst/only/deeper" : "dst/only");
        assert_int_equal(e->kind, FSM_TOMBSTONE);
        assert_int_equal(e->version, v);
        assert_null(e->renamed_from);
        assert_true(e->pending);
    }
    /* Siblings with a common prefix are not moved. */
    assert_int_equal(fsm_get(f, "srcx")->kind, FSM_FILE);
    assert_false(fsm_get(f, "srcx")->pending);
    assert_null(fsm_get(f, "srcx")->renamed_from);
    assert_int_equal(fsm_entry_count(f), 13);
    assert_int_equal(fsm_pending_count(f), 12);

    /* N1 catches up: everything settles, tombstones vanish. */
    struct fsm_synced_item items[12];
    uint32_t n = 0;
    const char *all[] = {"dst", "dst/a", "dst/sub", "dst/sub/b", "dst/sub/gone", "dst/only",
                         "dst/only/deeper", "src", "src/a", "src/sub", "src/sub/b", "src/sub/gone"};
    for (int i = 0; i < 12; i++)
        items[n++] = (struct fsm_synced_item){all[i], v};
    struct fsm_cmd c = {.op = FSM_OP_SYNCED, .node = N1, .items = items, .n_items = n};
    assert_int_equal(apply_cmd(f, &c), 0);
    assert_int_equal(fsm_pending_count(f), 0);
    assert_int_equal(fsm_entry_count(f), 5);
    assert_null(fsm_get(f, "src"));
    assert_null(fsm_get(f, "dst/only"));
    assert_null(fsm_get(f, "dst/sub/gone"));
    assert_null(fsm_get(f, "dst/a")->renamed_from);
}

static void test_rename_locked(void **state)
{
    struct fsm *f = *state;
    assert_int_equal(join(f, N1), 0);
    assert_int_equal(join(f, N2), 0);
    assert_int_equal(announce(f, N1, "a", FSM_FILE), 0);
    assert_int_equal(lock(f, N1, "b", 1000, 100), 0);
    uint64_t v = fsm_version(f);
    assert_int_equal(rename_path(f, N2, "a", "b", false), -EBUSY);
    assert_int_equal(fsm_version(f), v + 1);
    assert_int_equal(fsm_get(f, "a")->kind, FSM_FILE);
    assert_null(fsm_get(f, "b"));
    assert_int_equal(lock(f, N1, "a", 1000, 100), 0);
    assert_int_equal(unlock(f, N1, "b"), 0);
    assert_int_equal(rename_path(f, N2, "a", "b", false), -EBUSY);
    /* The holder renames and releases both locks in one go. */
    assert_int_equal(lock(f, N1, "b", 1000, 100), 0);
    assert_int_equal(rename_path(f, N1, "a", "b", true), 0);
    assert_int_equal(fsm_get(f, "b")->kind, FSM_FILE);
    assert_int_equal(fsm_lock_get(f, "a", NULL, NULL), 0);
    assert_int_equal(fsm_lock_get(f, "b", NULL, NULL), 0);
}

static void test_rename_too_long(void **state)
{
    struct fsm *f = *state;
    /* dir/<200 chars> renamed to a 4023-char name: the child would pass PATH_MAX. */
    char child[256], longname[PATH_MAX];
    char comp[201];
    memset(comp, 'c', 200);
    comp[200] = '\0';
    snprintf(child, sizeof child, "dir/%s", comp);
    size_t n = 0;
    while (n + 201 < 4090) {
        memcpy(longname + n, comp, 200);
        longname[n + 200] = '/';
        n += 201;
    }
    memcpy(longname + n, "end", 4);
    assert_int_equal(announce(f, N1, "dir", FSM_DIR), 0);
    assert_int_equal(announce(f, N1, child, FSM_FILE), 0);
    assert_int_equal(rename_path(f, N1, "dir", longname, false), -ENAMETOOLONG);
    assert_int_equal(fsm_get(f, "dir")->kind, FSM_DIR);
    assert_int_equal(fsm_entry_count(f), 2);
}

/* ---------------- iteration ---------------- */

struct seen {
    char paths[16][32];
    int n;
    int stop_at;
};

static int visit(const struct fsm_entry *e, void *arg)
{
    struct seen *s = arg;
    snprintf(s->paths[s->n++], sizeof s->paths[0], "%s", e->path);
    return s->n == s->stop_at ? 7 : 0;
}

static bool saw(const struct seen *s, const char *p)
{
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->paths[i], p) == 0)
            return true;
    return false;
}

static void test_foreach_pending(void **state)
{
    struct fsm *f = *state;
    assert_int_equal(join(f, N1), 0);
    assert_int_equal(join(f, N2), 0);
    assert_int_equal(join(f, N3), 0);
    assert_int_equal(announce(f, N1, "settled", FSM_FILE), 0);
    assert_int_equal(synced_now(f, N2, "settled"), 0);
    assert_int_equal(synced_now(f, N3, "settled"), 0);
    assert_int_equal(announce(f, N1, "by-n1", FSM_FILE), 0);
    assert_int_equal(announce(f, N2, "by-n2", FSM_FILE), 0);
    assert_int_equal(announce(f, N1, "n1-n3", FSM_TOMBSTONE), 0);
    assert_int_equal(synced_now(f, N3, "n1-n3"), 0);

    struct seen s = {.stop_at = -1};
    assert_int_equal(fsm_foreach_pending(f, N1, visit, &s), 0);
    assert_int_equal(s.n, 1);
    assert_true(saw(&s, "by-n2"));

    memset(&s, 0, sizeof s);
    s.stop_at = -1;
    assert_int_equal(fsm_foreach_pending(f, N3, visit, &s), 0);
    assert_int_equal(s.n, 2);
    assert_true(saw(&s, "by-n1"));
    assert_true(saw(&s, "by-n2"));

    memset(&s, 0, sizeof s);
    s.stop_at = -1;
    assert_int_equal(fsm_foreach_pending(f, 77, visit, &s), 0);
    assert_int_equal(s.n, 3);
    assert_false(saw(&s, "settled"));

    memset(&s, 0, sizeof s);
    s.stop_at = 1;
    assert_int_equal(fsm_foreach_pending(f, 77, visit, &s), 7);
    assert_int_equal(s.n, 1);

    memset(&s, 0, sizeof s);
    s.stop_at = -1;
    assert_int_equal(fsm_foreach(f, visit, &s), 0);
    assert_int_equal(s.n, 4);
    assert_true(saw(&s, "settled"));
    assert_true(saw(&s, "n1-n3"));
}

/* ---------------- snapshots ---------------- */

/* A state with members, locks, settled and pending entries, multi-node
 * synced sets, a symlink, renamed entries and tombstones. */
/* Two attributes, user.a = "1" and user.b = "xy", canonically encoded. */
static const uint8_t XSET_AB[] = {'u', 's', 'e', 'r', '.', 'a', 0, 1, 0, 0, 0, '1',
                                  'u', 's', 'e', 'r', '.', 'b', 0, 2, 0, 0, 0, 'x', 'y'};

static int announce_xattrs(struct fsm *f, uint64_t node, const char *path, uint8_t kind,
                           const void *set, size_t len)
{
    struct fsm_meta m = file_meta(kind == FSM_FILE ? 42 : 0, 0xab);
    m.kind = kind;
    if (kind == FSM_SYMLINK)
        m.target = "t";
    m.xattrs = set;
    m.xattrs_len = (uint32_t)len;
    return announce_meta(f, node, path, m, false, 0);
}

static void test_xattrs(void **state)
{
    struct fsm *f = *state;
    assert_int_equal(join(f, N1), 0);
    assert_int_equal(join(f, N2), 0);
    assert_int_equal(xattrs_check(XSET_AB, sizeof XSET_AB), 0);
    assert_int_equal(announce_xattrs(f, N1, "x", FSM_FILE, XSET_AB, sizeof XSET_AB), 0);
    const struct fsm_entry *e = fsm_get(f, "x");
    assert_int_equal(e->xattrs_len, sizeof XSET_AB);
    assert_memory_equal(e->xattrs, XSET_AB, sizeof XSET_AB);
    /* Settling keeps them (unlike inline bytes), a rename moves them. */
    assert_int_equal(synced_now(f, N2, "x"), 0);
    e = fsm_get(f, "x");
    assert_false(e->pending);
    assert_int_equal(e->xattrs_len, sizeof XSET_AB);
    assert_int_equal(rename_path(f, N1, "x", "y", false), 0);
    e = fsm_get(f, "y");
    assert_memory_equal(e->xattrs, XSET_AB, sizeof XSET_AB);
    assert_int_equal(fsm_get(f, "x")->xattrs_len, 0);
    /* A metadata change that removes them. */
    assert_int_equal(announce_xattrs(f, N1, "y", FSM_FILE, NULL, 0), 0);
    assert_null(fsm_get(f, "y")->xattrs);

    /* Refused before the log: unsorted, a name that does not replicate, a
     * kind that carries none, more than XATTRS_MAX. */
    uint8_t ba[sizeof XSET_AB];
    memcpy(ba, XSET_AB + 12, 13);
    memcpy(ba + 13, XSET_AB, 12);
    assert_int_equal(xattrs_check(ba, sizeof ba), -EINVAL);
    static const uint8_t sys[] = {'s', 'y', 's', 't', 'e', 'm', '.', 'x', 0, 0, 0, 0, 0};
    assert_int_equal(xattrs_check(sys, sizeof sys), -EINVAL);
    assert_int_equal(xattrs_check(XSET_AB, sizeof XSET_AB - 1), -EINVAL); /* torn value */
    struct fsm_cmd c = {.op = FSM_OP_ANNOUNCE, .node = N1, .path = "z"};
    c.meta = file_meta(0, 0);
    c.meta.kind = FSM_SYMLINK;
    c.meta.target = "t";
    c.meta.xattrs = XSET_AB;
    c.meta.xattrs_len = sizeof XSET_AB;
    void *buf;
    size_t len;
    assert_int_equal(fsm_cmd_encode(&c, &buf, &len), -EINVAL);
    c.meta.kind = FSM_FILE;
    c.meta.target = NULL;
    c.meta.xattrs = ba;
    assert_int_equal(fsm_cmd_encode(&c, &buf, &len), -EINVAL);
    size_t big = XATTRS_MAX + 1;
    uint8_t *huge = calloc(1, big);
    memcpy(huge, "user.h", 7);
    uint32_t v = (uint32_t)(big - 11);
    memcpy(huge + 7, &v, 4); /* little-endian hosts only, as the CI's */
    assert_int_equal(xattrs_check(huge, big), -EINVAL);

    /* A hostile length in a command made by hand: refused, nothing kept. */
    c.meta = file_meta(42, 0xab);
    c.meta.xattrs = XSET_AB;
    c.meta.xattrs_len = sizeof XSET_AB;
    assert_int_equal(fsm_cmd_encode(&c, &buf, &len), 0);
    uint8_t *p = buf;
    size_t at = 0;
    for (size_t i = 0; i + sizeof XSET_AB <= len; i++)
        if (memcmp(p + i, XSET_AB, sizeof XSET_AB) == 0)
            at = i;
    assert_true(at >= 4);
    uint64_t v0 = fsm_version(f);
    p[at - 1] = 0x7f; /* length 0x7f0000.. */
    assert_int_equal(fsm_apply(f, buf, len), -EINVAL);
    p[at - 1] = 0;
    p[at] = 'U'; /* sorted still, but no longer user.* */
    assert_int_equal(fsm_apply(f, buf, len), -EINVAL);
    assert_int_equal(fsm_version(f), v0);
    assert_null(fsm_get(f, "z"));
    p[at] = 'u';
    assert_int_equal(fsm_apply(f, buf, len), 0);
    assert_int_equal(fsm_get(f, "z")->xattrs_len, sizeof XSET_AB);
    free(buf);
    free(huge);
}

static void rich_state(struct fsm *f)
{
    assert_int_equal(join(f, N3), 0);
    assert_int_equal(join(f, N1), 0);
    assert_int_equal(join(f, N2), 0);
    char p[32];
    for (int i = 0; i < 40; i++) {
        snprintf(p, sizeof p, "d%d", i % 4);
        if (i < 4)
            assert_int_equal(announce(f, N1, p, FSM_DIR), 0);
        snprintf(p, sizeof p, "d%d/f%d", i % 4, i);
        assert_int_equal(announce(f, i % 2 ? N1 : N2, p, FSM_FILE), 0);
        if (i % 3)
            assert_int_equal(synced_now(f, N3, p), 0);
        if (i % 5 == 0)
            assert_int_equal(synced_now(f, i % 2 ? N2 : N1, p), 0);
    }
    assert_int_equal(announce(f, N2, "ln", FSM_SYMLINK), 0);
    assert_int_equal(announce_inline(f, N2, "small", "tiny bytes"), 0);
    assert_int_equal(announce_inline(f, N1, "d3/small", "other bytes"), 0);
    assert_int_equal(announce(f, N2, "d0/f0", FSM_TOMBSTONE), 0);
    assert_int_equal(rename_path(f, N3, "d1", "moved", false), 0);
    assert_int_equal(lock(f, N1, "d2/f2", 5000, 1000), 0);
    assert_int_equal(lock(f, N2, "a-lock", 6000, 1000), 0);
    assert_int_equal(lock(f, N3, "z", 7000, 1000), 0);
    assert_int_equal(lock(f, N1, "z", 7100, 1000), -EBUSY); /* marks z wanted by N1 */
    assert_int_equal(rlock(f, N1, "small", RLOCK_WRITE, 0, 10, 7200), 0);
    assert_int_equal(rlock(f, N2, "small", RLOCK_READ, 20, RLOCK_EOF, 7200), 0);
    assert_int_equal(announce_xattrs(f, N1, "d2/f6", FSM_FILE, XSET_AB, sizeof XSET_AB), 0);
    assert_int_equal(announce_xattrs(f, N1, "d3", FSM_DIR, XSET_AB, sizeof XSET_AB), 0);
    assert_int_equal(synced_now(f, N2, "d3"), 0);
    assert_int_equal(synced_now(f, N3, "d3"), 0); /* settled: the set stays */
}

struct collect {
    const struct fsm *other;
    int n;
};

/* Every entry of one state must be in the other, field by field. */
static int same_entry(const struct fsm_entry *e, void *arg)
{
    struct collect *c = arg;
    const struct fsm_entry *o = fsm_get(c->other, e->path);
    assert_non_null(o);
    assert_int_equal(o->kind, e->kind);
    assert_int_equal(o->version, e->version);
    assert_int_equal(o->origin, e->origin);
    assert_int_equal(o->mode, e->mode);
    assert_int_equal(o->uid, e->uid);
    assert_int_equal(o->gid, e->gid);
    assert_int_equal(o->size, e->size);
    assert_true(o->mtime_ns == e->mtime_ns);
    assert_memory_equal(o->hash, e->hash, FSM_HASH_LEN);
    assert_true((o->target == NULL) == (e->target == NULL));
    if (e->target)
        assert_string_equal(o->target, e->target);
    assert_true((o->renamed_from == NULL) == (e->renamed_from == NULL));
    if (e->renamed_from)
        assert_string_equal(o->renamed_from, e->renamed_from);
    assert_true((o->data == NULL) == (e->data == NULL));
    if (e->data)
        assert_memory_equal(o->data, e->data, (size_t)e->size);
    assert_true(fsm_xattrs_equal(o->xattrs, o->xattrs_len, e->xattrs, e->xattrs_len));
    assert_int_equal(o->pending, e->pending);
    assert_int_equal(o->n_synced, e->n_synced);
    for (uint32_t i = 0; i < e->n_synced; i++)
        assert_int_equal(o->synced[i], e->synced[i]);
    c->n++;
    return 0;
}

static void assert_same_state(const struct fsm *a, const struct fsm *b)
{
    assert_int_equal(fsm_version(a), fsm_version(b));
    assert_int_equal(fsm_entry_count(a), fsm_entry_count(b));
    assert_int_equal(fsm_pending_count(a), fsm_pending_count(b));
    assert_int_equal(fsm_inline_bytes(a), fsm_inline_bytes(b));
    struct collect c = {b, 0};
    assert_int_equal(fsm_foreach(a, same_entry, &c), 0);
    assert_int_equal(c.n, (int)fsm_entry_count(a));
    assert_int_equal(fsm_member_count(a), fsm_member_count(b));
    for (size_t i = 0; i < fsm_member_count(a); i++) {
        const struct fsm_member *x = fsm_member_at(a, i), *y = fsm_member_at(b, i);
        assert_int_equal(x->id, y->id);
        assert_string_equal(x->caddr, y->caddr);
        assert_string_equal(x->faddr, y->faddr);
    }
    const char *locks[] = {"d2/f2", "a-lock", "z", "none"};
    for (int i = 0; i < 4; i++) {
        uint64_t h1 = 0, h2 = 0, e1 = 0, e2 = 0;
        assert_int_equal(fsm_lock_get(a, locks[i], &h1, &e1), fsm_lock_get(b, locks[i], &h2, &e2));
        assert_int_equal(h1, h2);
        assert_int_equal(e1, e2);
        assert_int_equal(fsm_lock_wanted(a, locks[i]), fsm_lock_wanted(b, locks[i]));
    }
    for (uint64_t n = N1; n <= N3; n += N1)
        assert_int_equal(fsm_locks_of(a, n), fsm_locks_of(b, n));
}

static int count_visit(const struct fsm_entry *e, void *arg)
{
    (void)e;
    (*(int *)arg)++;
    return 0;
}

static void test_snapshot_roundtrip(void **state)
{
    struct fsm *f = *state;
    rich_state(f);
    assert_true(fsm_pending_count(f) > 10);
    assert_true(fsm_pending_count(f) < fsm_entry_count(f));

    void *buf;
    size_t len;
    snap(f, &buf, &len);
    assert_memory_equal(buf, "NSFM", 4);

    /* Into a fresh state, and over a state that had other content. */
    struct fsm *g = fsm_new();
    assert_int_equal(fsm_restore(g, buf, len), 0);
    assert_same_state(f, g);
    assert_same_state(g, f);
    assert_state_is(g, buf, len);

    struct fsm *h = fsm_new();
    assert_int_equal(announce(h, N1, "stale", FSM_FILE), 0);
    assert_int_equal(lock(h, N1, "stale", 1, 1), 0);
    assert_int_equal(fsm_restore(h, buf, len), 0);
    assert_null(fsm_get(h, "stale"));
    assert_int_equal(fsm_lock_get(h, "stale", NULL, NULL), 0);
    assert_same_state(f, h);

    /* Pending-visit sets agree per node. */
    for (uint64_t n = N1; n <= N3; n += N1) {
        int a = 0, b = 0;
        fsm_foreach_pending(f, n, count_visit, &a);
        fsm_foreach_pending(g, n, count_visit, &b);
        assert_int_equal(a, b);
    }

    /* Both continue identically: same command, same result. */
    assert_int_equal(synced_now(f, N1, "moved/f1"), 0);
    assert_int_equal(synced_now(g, N1, "moved/f1"), 0);
    /* d2/f2 expires at 6000; at a stamped 5500 it is free only if now_ms
     * (7000) came through the snapshot. */
    assert_int_equal(lock(f, N2, "d2/f2", 5500, 1), 0);
    assert_int_equal(lock(g, N2, "d2/f2", 5500, 1), 0);
    void *b1, *b2;
    size_t l1, l2;
    snap(f, &b1, &l1);
    snap(g, &b2, &l2);
    assert_int_equal(l1, l2);
    assert_memory_equal(b1, b2, l1);
    free(b1);
    free(b2);

    /* An empty state round-trips too. */
    struct fsm *e = fsm_new();
    void *eb;
    size_t el;
    snap(e, &eb, &el);
    assert_int_equal(fsm_restore(h, eb, el), 0);
    assert_int_equal(fsm_entry_count(h), 0);
    assert_int_equal(fsm_member_count(h), 0);
    assert_int_equal(fsm_version(h), 0);
    free(eb);

    fsm_free(e);
    fsm_free(h);
    fsm_free(g);
    free(buf);
}

static void fix_checksum(uint8_t *p, size_t len)
{
    uint64_t sum = XXH64(p, len - 8, 0);
    for (int i = 0; i < 8; i++)
        p[len - 8 + i] = (uint8_t)(sum >> (8 * i));
}

static void test_snapshot_corrupt(void **state)
{
    struct fsm *f = *state;
    rich_state(f);
    void *buf;
    size_t len;
    snap(f, &buf, &len);

    /* The target holds something else, which must survive every failure. */
    struct fsm *g = fsm_new();
    assert_int_equal(join(g, 99), 0);
    assert_int_equal(announce(g, 99, "keep", FSM_FILE), 0);
    void *gb;
    size_t gl;
    snap(g, &gb, &gl);

    uint8_t *p = buf;
    for (size_t i = 0; i < len; i++) {
        p[i] ^= 0x01;
        assert_int_equal(fsm_restore(g, p, len), -EINVAL);
        p[i] ^= 0x41;
        assert_int_equal(fsm_restore(g, p, len), -EINVAL);
        p[i] ^= 0x40;
    }
    for (size_t cut = 0; cut < len; cut++)
        assert_int_equal(fsm_restore(g, p, cut), -EINVAL);
    assert_state_is(g, gb, gl);

    /* Past the checksum: content the parser itself must refuse. */
    uint8_t *q = malloc(len + 1);
    memcpy(q, buf, len);
    q[4] = 7; /* a format version from the future */
    fix_checksum(q, len);
    assert_int_equal(fsm_restore(g, q, len), -EINVAL);
    memcpy(q, buf, len - 8); /* one byte too many before the sum */
    q[len - 8] = 0;
    fix_checksum(q, len + 1);
    assert_int_equal(fsm_restore(g, q, len + 1), -EINVAL);
    /* The member count claims far more than the bytes can hold. */
    memcpy(q, buf, len);
    q[24] = q[25] = q[26] = q[27] = 0xff;
    fix_checksum(q, len);
    assert_int_equal(fsm_restore(g, q, len), -EINVAL);
    /* Members out of order: swap the first two ids. */
    memcpy(q, buf, len);
    uint8_t id0[8];
    memcpy(id0, q + 28, 8);
    size_t second = 28 + 8 + 4 + strlen("10.0.0.11:7000") + 1 + 4 + strlen("10.0.0.11:7001") + 1;
    memcpy(q + 28, q + second, 8);
    memcpy(q + second, id0, 8);
    fix_checksum(q, len);
    assert_int_equal(fsm_restore(g, q, len), -EINVAL);
    /* Hand-made snapshots: one member with a given address. The short
     * address restores; one too long for fsm_member is refused. */
    for (int longer = 0; longer < 2; longer++) {
        struct raw r = {.n = 0};
        char addr[FSM_ADDR_MAX + 1];
        memset(addr, 'h', sizeof addr - 1);
        addr[longer ? FSM_ADDR_MAX : FSM_ADDR_MAX - 1] = '\0';
        memcpy(r.b, "NSFM", 4);
        r.n = 4;
        raw_u32(&r, 1); /* format 1 (before inline bytes): still read */
        raw_u64(&r, 1);
        raw_u64(&r, 0);
        raw_u32(&r, 1);
        raw_u64(&r, 5);
        raw_str(&r, addr);
        raw_str(&r, "h:2");
        raw_u32(&r, 0);
        raw_u64(&r, 0);
        raw_u64(&r, 0);
        fix_checksum(r.b, r.n);
        struct fsm *t = fsm_new();
        assert_int_equal(fsm_restore(t, r.b, r.n), longer ? -EINVAL : 0);
        assert_int_equal(fsm_member_count(t), longer ? 0 : 1);
        assert_int_equal(fsm_version(t), longer ? 0 : 1);
        fsm_free(t);
    }

    /* Unchanged through it all; and the good one still restores. */
    assert_state_is(g, gb, gl);
    assert_int_equal(fsm_restore(g, buf, len), 0);
    assert_same_state(f, g);
    assert_int_equal(fsm_restore(g, NULL, 0), -EINVAL);

    free(q);
    free(gb);
    fsm_free(g);
    free(buf);
}

/* ---------------- fifos, sockets, devices; atimes ---------------- */

/* A raw ANNOUNCE of path with kind, flags (FSM_FLAG_ATIME is 0x20 on the
 * wire) and what follows the mtime given by the caller through r. */
static void raw_announce_head(struct raw *r, const char *path, uint8_t kind, uint8_t flags)
{
    raw_header(r, FSM_OP_ANNOUNCE, flags, N1);
    raw_str(r, path);
    raw_u8(r, kind);
    raw_u32(r, 0600);
    raw_u32(r, 7);
    raw_u32(r, 8);
    raw_u64(r, 1000); /* mtime */
}

static void test_node_kinds(void **state)
{
    struct fsm *f = *state;
    assert_int_equal(join(f, N1), 0);
    assert_int_equal(join(f, N2), 0);
    const struct {
        const char *path;
        uint8_t kind;
        uint32_t rdev;
    } nodes[] = {
        {"fifo", FSM_FIFO, 0},
        {"sock", FSM_SOCKET, 0},
        {"null", FSM_CHRDEV, 0x103},      /* makedev(1, 3) */
        {"loop", FSM_BLKDEV, 0xfff00fffu}, /* the largest: major 4095, minor 2^20 - 1 */
    };
    for (size_t i = 0; i < sizeof nodes / sizeof *nodes; i++) {
        struct fsm_meta m = {.kind = nodes[i].kind, .mode = 0640, .uid = 1234, .gid = 5678,
                             .rdev = nodes[i].rdev, .mtime_ns = 2000 + (int64_t)i,
                             .atime_ns = 100000000000000000LL};
        struct fsm_cmd c = {.op = FSM_OP_ANNOUNCE, .node = N1, .path = nodes[i].path, .meta = m};
        struct fsm_cmd out;
        void *buf;
        roundtrip(&c, &out, &buf);
        assert_int_equal(out.meta.kind, nodes[i].kind);
        assert_int_equal(out.meta.rdev, nodes[i].rdev);
        assert_int_equal(out.meta.atime_ns, m.atime_ns);
        fsm_cmd_release(&out);
        free(buf);
        assert_int_equal(announce_meta(f, N1, nodes[i].path, m, false, 0), 0);
        const struct fsm_entry *e = fsm_get(f, nodes[i].path);
        assert_non_null(e);
        assert_int_equal(e->kind, nodes[i].kind);
        assert_int_equal(e->mode, 0640);
        assert_int_equal(e->uid, 1234);
        assert_int_equal(e->gid, 5678);
        assert_int_equal(e->rdev, nodes[i].rdev);
        assert_int_equal(e->atime_ns, m.atime_ns);
        assert_int_equal(e->size, 0);
        assert_null(e->target);
        assert_true(e->pending);
        /* Nothing to fetch: the catalog alone holds the object. */
        assert_true(fsm_on_majority(f, nodes[i].path));
    }

    /* A rename carries kind, rdev and times; the old name is a tombstone. */
    assert_int_equal(rename_path(f, N1, "null", "dev/null2", false), 0);
    const struct fsm_entry *e = fsm_get(f, "dev/null2");
    assert_non_null(e);
    assert_int_equal(e->kind, FSM_CHRDEV);
    assert_int_equal(e->rdev, 0x103);
    assert_int_equal(e->atime_ns, 100000000000000000LL);
    assert_string_equal(e->renamed_from, "null");
    assert_int_equal(fsm_get(f, "null")->kind, FSM_TOMBSTONE);
    assert_int_equal(fsm_get(f, "null")->rdev, 0);

    /* Through a snapshot, all alike. */
    void *sb;
    size_t sl;
    snap(f, &sb, &sl);
    struct fsm *g = fsm_new();
    assert_int_equal(fsm_restore(g, sb, sl), 0);
    assert_same_state(f, g);
    assert_int_equal(fsm_get(g, "loop")->rdev, 0xfff00fffu);
    assert_int_equal(fsm_get(g, "sock")->kind, FSM_SOCKET);
    fsm_free(g);
    free(sb);

    struct raw r;
    /* Forged: a kind past the last, a device number no mknod makes, an
     * rdev after a fifo, an atime on a tombstone. */
    raw_announce_head(&r, "x", FSM_KIND_MAX + 1, 0x20);
    raw_u64(&r, 5);
    assert_malformed(f, r.b, r.n);
    raw_announce_head(&r, "x", FSM_CHRDEV, 0x20);
    raw_u64(&r, 5);
    raw_u64(&r, 1ull << 32);
    assert_malformed(f, r.b, r.n);
    raw_announce_head(&r, "x", FSM_FIFO, 0x20);
    raw_u64(&r, 5);
    raw_u64(&r, 0x103);
    assert_malformed(f, r.b, r.n);
    raw_announce_head(&r, "x", FSM_TOMBSTONE, 0x20);
    raw_u64(&r, 5);
    assert_malformed(f, r.b, r.n);
    /* A device without its rdev (truncated). */
    raw_announce_head(&r, "x", FSM_BLKDEV, 0x20);
    raw_u64(&r, 5);
    assert_malformed(f, r.b, r.n);
    /* The well-formed one goes through. */
    raw_announce_head(&r, "x", FSM_BLKDEV, 0x20);
    raw_u64(&r, 5);
    raw_u64(&r, 0x801);
    assert_int_equal(fsm_apply(f, r.b, r.n), 0);
    assert_int_equal(fsm_get(f, "x")->rdev, 0x801);
    assert_int_equal(fsm_get(f, "x")->atime_ns, 5);
    /* An announce from before atimes travelled: its atime is its mtime. */
    raw_announce_head(&r, "old", FSM_DIR, 0);
    assert_int_equal(fsm_apply(f, r.b, r.n), 0);
    assert_int_equal(fsm_get(f, "old")->atime_ns, 1000);

    /* A format-3 snapshot (before these kinds) that names one is refused;
     * the same with a directory restores, its atime its mtime. */
    for (int fifo = 0; fifo < 2; fifo++) {
        raw_snap_one(&r, 3, "n", fifo ? FSM_FIFO : FSM_DIR, 777);
        struct fsm *t = fsm_new();
        assert_int_equal(fsm_restore(t, r.b, r.n), fifo ? -EINVAL : 0);
        if (!fifo)
            assert_int_equal(fsm_get(t, "n")->atime_ns, 777);
        fsm_free(t);
    }
}

/* A change that makes or removes a name carries its directory's new mtime;
 * the directory's entry takes it without a new version. */
static void test_parent_mtimes(void **state)
{
    struct fsm *f = *state;
    assert_int_equal(join(f, N1), 0);
    assert_int_equal(announce(f, N1, "d", FSM_DIR), 0);
    assert_int_equal(announce(f, N1, "e", FSM_DIR), 0);
    uint64_t dv = fsm_get(f, "d")->version;
    struct fsm_cmd c = {.op = FSM_OP_ANNOUNCE, .node = N1, .path = "d/f", .meta = file_meta(3, 1),
                        .parents = true, .parent_mtime_ns = 5555};
    struct fsm_cmd out;
    void *buf;
    roundtrip(&c, &out, &buf);
    assert_true(out.parents);
    assert_int_equal(out.parent_mtime_ns, 5555);
    fsm_cmd_release(&out);
    free(buf);
    assert_int_equal(apply_cmd(f, &c), 0);
    assert_int_equal(fsm_get(f, "d")->mtime_ns, 5555);
    assert_int_equal(fsm_get(f, "d")->version, dv);
    /* A top-level path's parent is not in the catalog: nothing to touch. */
    c.path = "top";
    c.parent_mtime_ns = 1;
    assert_int_equal(apply_cmd(f, &c), 0);
    /* A rename stamps both directories. */
    struct fsm_cmd r = {.op = FSM_OP_RENAME, .node = N1, .path = "d/f", .path2 = "e/g",
                        .parents = true, .parent_mtime_ns = 6666, .parent2_mtime_ns = 7777};
    roundtrip(&r, &out, &buf);
    assert_int_equal(out.parent2_mtime_ns, 7777);
    fsm_cmd_release(&out);
    free(buf);
    assert_int_equal(apply_cmd(f, &r), 0);
    assert_int_equal(fsm_get(f, "d")->mtime_ns, 6666);
    assert_int_equal(fsm_get(f, "e")->mtime_ns, 7777);
    /* A refused change stamps nothing. */
    assert_int_equal(lock(f, N2, "e/h", 0, 1000000), 0);
    c.node = N1;
    c.path = "e/h";
    c.parent_mtime_ns = 8888;
    assert_int_equal(apply_cmd(f, &c), -EBUSY);
    assert_int_equal(fsm_get(f, "e")->mtime_ns, 7777);
    /* Not on other ops. */
    struct raw w;
    raw_header(&w, FSM_OP_UNLOCK, 0x40, N1);
    raw_str(&w, "e/h");
    raw_u64(&w, 1);
    assert_malformed(f, w.b, w.n);
}

/* Whole-state checks on a larger catalog: the table grows, shrinks and
 * probes correctly through many inserts and removals. */
static void test_many(void **state)
{
    struct fsm *f = *state;
    assert_int_equal(join(f, N1), 0);
    assert_int_equal(join(f, N2), 0);
    char p[64];
    for (int i = 0; i < 3000; i++) {
        snprintf(p, sizeof p, "dir%d/file-%d.dat", i % 17, i);
        assert_int_equal(announce(f, N1, p, FSM_FILE), 0);
    }
    assert_int_equal(fsm_entry_count(f), 3000);
    assert_int_equal(fsm_pending_count(f), 3000);
    for (int i = 0; i < 3000; i += 2) {
        snprintf(p, sizeof p, "dir%d/file-%d.dat", i % 17, i);
        assert_int_equal(synced_now(f, N2, p), 0);
    }
    assert_int_equal(fsm_pending_count(f), 1500);
    for (int i = 0; i < 3000; i += 3) {
        snprintf(p, sizeof p, "dir%d/file-%d.dat", i % 17, i);
        assert_int_equal(announce(f, N2, p, FSM_TOMBSTONE), 0);
        assert_int_equal(synced_now(f, N1, p), 0);
    }
    assert_int_equal(fsm_entry_count(f), 2000);
    for (int i = 0; i < 3000; i++) {
        snprintf(p, sizeof p, "dir%d/file-%d.dat", i % 17, i);
        const struct fsm_entry *e = fsm_get(f, p);
        if (i % 3 == 0) {
            assert_null(e);
        } else {
            assert_non_null(e);
            assert_string_equal(e->path, p);
            assert_int_equal(e->pending, i % 2 != 0);
        }
    }
    void *buf;
    size_t len;
    snap(f, &buf, &len);
    struct fsm *g = fsm_new();
    assert_int_equal(fsm_restore(g, buf, len), 0);
    assert_same_state(f, g);
    assert_state_is(g, buf, len);
    fsm_free(g);
    free(buf);
}

/* Every allocation an apply makes is failed in turn; each time the result
 * is -ENOMEM with only the version moved, and at the end the command goes
 * through. */
static void enomem_case(const struct fsm_cmd *c, int want_rc, int min_failures)
{
    void *cmd;
    size_t cmd_len;
    assert_int_equal(fsm_cmd_encode(c, &cmd, &cmd_len), 0);
    int failures = 0;
    for (long k = 0;; k++) {
        struct fsm *f = fsm_new();
        rich_state(f);
        uint8_t *before, *after;
        size_t blen, alen;
        snap(f, (void **)&before, &blen);
        fail_countdown = k;
        int rc = fsm_apply(f, cmd, cmd_len);
        bool fired = fail_countdown < 0;
        fail_countdown = -1;
        uint64_t v_before = 0;
        for (int i = 0; i < 8; i++)
            v_before |= (uint64_t)before[8 + i] << (8 * i);
        assert_int_equal(fsm_version(f), v_before + 1);
        if (!fired) {
            assert_int_equal(rc, want_rc);
            fsm_free(f);
            free(before);
            break;
        }
        failures++;
        assert_int_equal(rc, -ENOMEM);
        snap(f, (void **)&after, &alen);
        assert_int_equal(alen, blen);
        assert_memory_equal(after + 16, before + 16, blen - 16 - 8);
        free(after);
        free(before);
        fsm_free(f);
    }
    assert_true(failures >= min_failures);
    free(cmd);
}

static void test_enomem(void **state)
{
    (void)state;
    /* Under valgrind (or another allocator that replaces the program's
     * malloc) nothing can be injected: skip rather than pass vacuously.
     * valgrind --soname-synonyms=somalloc=none-such keeps ours in place. */
    fail_countdown = 0;
    struct fsm *probe_fsm = fsm_new(); /* allocates from fsm.c, as apply does */
    fail_countdown = -1;
    if (probe_fsm) {
        fsm_free(probe_fsm);
        skip();
    }
    struct fsm_meta sl = {.kind = FSM_SYMLINK, .mode = 0777, .target = "t"};
    struct fsm_cmd a1 = {.op = FSM_OP_ANNOUNCE, .node = N1, .path = "brand/new", .meta = sl};
    enomem_case(&a1, 0, 1);
    struct fsm_cmd a2 = {.op = FSM_OP_ANNOUNCE, .node = N1, .path = "d2/f2", .meta = sl};
    enomem_case(&a2, 0, 1);
    struct fsm_cmd r = {.op = FSM_OP_RENAME, .node = N1, .path = "d3", .path2 = "d2"};
    enomem_case(&r, 0, 1);
    struct fsm_cmd r2 = {.op = FSM_OP_RENAME, .node = N2, .path = "ln", .path2 = "moved/f1"};
    enomem_case(&r2, 0, 1);
    struct fsm_synced_item items[] = {{"d2/f2", 0}, {"d2/f6", 0}, {"d3/f3", 0}, {"ln", 0}};
    struct fsm *probe = fsm_new();
    rich_state(probe);
    for (int i = 0; i < 4; i++)
        items[i].version = fsm_get(probe, items[i].path)->version;
    fsm_free(probe);
    struct fsm_cmd sy = {.op = FSM_OP_SYNCED, .node = N3, .items = items, .n_items = 4};
    enomem_case(&sy, 0, 1);
    struct fsm_cmd l = {.op = FSM_OP_LOCK, .node = N3, .path = "new-lock", .lease_ms = 10};
    enomem_case(&l, 0, 1);
    struct fsm_cmd j = {.op = FSM_OP_JOIN, .node = 44, .caddr = "a:1", .faddr = "a:2"};
    enomem_case(&j, 0, 0); /* the member array has room for a 4th */

    /* Snapshot and restore fail cleanly too. */
    struct fsm *f = fsm_new(), *g = fsm_new();
    rich_state(f);
    assert_int_equal(announce(g, N1, "keep", FSM_FILE), 0);
    void *buf, *gb;
    size_t len, gl;
    snap(f, &buf, &len);
    snap(g, &gb, &gl);
    for (long k = 0;; k++) {
        void *out = NULL;
        size_t olen;
        fail_countdown = k;
        int rc = fsm_snapshot(f, &out, &olen);
        fail_countdown = -1;
        free(out);
        if (rc == 0)
            break;
        assert_int_equal(rc, -ENOMEM);
    }
    for (long k = 0;; k++) {
        fail_countdown = k;
        int rc = fsm_restore(g, buf, len);
        bool fired = fail_countdown < 0;
        fail_countdown = -1;
        if (!fired) {
            assert_int_equal(rc, 0);
            break;
        }
        assert_int_equal(rc, -ENOMEM);
        assert_state_is(g, gb, gl);
    }
    assert_state_is(g, buf, len);
    free(gb);
    free(buf);
    fsm_free(g);
    fsm_free(f);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_roundtrip),
        T(test_encode_rejects),
        T(test_malformed),
        T(test_bad_paths_refused),
        T(test_announce_pending),
        T(test_settle),
        T(test_on_majority),
        T(test_lock_lost),
        T(test_tombstone),
        T(test_no_members),
        T(test_join),
        T(test_leave),
        T(test_locks),
        T(test_announce_locked),
        T(test_fresh),
        T(test_inline),
        T(test_now_monotonic),
        T(test_lock_holder_crash),
        T(test_rename_file),
        T(test_rename_dir),
        T(test_rename_locked),
        T(test_rename_too_long),
        T(test_foreach_pending),
        T(test_snapshot_roundtrip),
        T(test_snapshot_corrupt),
        T(test_lock_wanted),
        T(test_rlocks),
        T(test_announce_keep),
        T(test_node_kinds),
        T(test_xattrs),
        T(test_parent_mtimes),
        T(test_many),
        T(test_enomem),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
