/* Catalog memory per path: applies N ANNOUNCEs of typical paths to a fresh
 * FSM (3 members, every entry settled, as in a quiet cluster) and prints the
 * heap it grew by (mallinfo2), per path. Not a test: a measurement for
 * issue 6, run as build/fsm_memory [N] [acl]. */
#include <malloc.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/fsm.h"

static int apply(struct fsm *f, const struct fsm_cmd *c)
{
    void *buf;
    size_t len;
    if (fsm_cmd_encode(c, &buf, &len) < 0)
        return -1;
    int rc = fsm_apply(f, buf, len);
    free(buf);
    return rc;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 100000;
    /* "acl": every file also has an access ACL naming one user (what
     * `setfacl -m u:NAME:r` leaves: 44 bytes of value). */
    bool acl = argc > 2 && strcmp(argv[2], "acl") == 0;
    static uint8_t acl_set[sizeof "system.posix_acl_access" + 4 + 44];
    memcpy(acl_set, "system.posix_acl_access", sizeof "system.posix_acl_access");
    acl_set[sizeof "system.posix_acl_access"] = 44;
    struct fsm *f = fsm_new();
    const uint64_t nodes[3] = {0x1111, 0x2222, 0x3333};
    for (int i = 0; i < 3; i++) {
        struct fsm_cmd j = {.op = FSM_OP_JOIN, .node = nodes[i], .caddr = "127.0.0.1:7001",
                            .faddr = "127.0.0.1:8001"};
        apply(f, &j);
    }
    size_t before = mallinfo2().uordblks;
    char path[128];
    for (long i = 0; i < n; i++) {
        /* 30-40 bytes: "projectNN/src/moduleNNN/file_NNNNNN.c" */
        snprintf(path, sizeof path, "project%02ld/src/module%03ld/file_%06ld.c", i % 50,
                 (i / 50) % 1000, i);
        struct fsm_cmd a = {.op = FSM_OP_ANNOUNCE, .node = nodes[0], .path = path,
                            .meta = {.kind = FSM_FILE, .mode = 0644, .size = 4096}};
        if (acl) {
            a.meta.xattrs = acl_set;
            a.meta.xattrs_len = sizeof acl_set;
        }
        memset(a.meta.hash, (int)(i & 0xff), FSM_HASH_LEN);
        if (apply(f, &a) != 0) {
            fprintf(stderr, "announce %s failed\n", path);
            return 1;
        }
        uint64_t v = fsm_version(f);
        for (int k = 1; k < 3; k++) {
            struct fsm_synced_item it = {path, v};
            struct fsm_cmd s = {.op = FSM_OP_SYNCED, .node = nodes[k], .items = &it, .n_items = 1};
            apply(f, &s);
        }
    }
    size_t after = mallinfo2().uordblks;
    printf("%ld paths (average path %zu bytes): catalog heap %.1f MiB, %.0f bytes per path, "
           "%zu entries, %zu pending\n", n, strlen(path), (double)(after - before) / 1048576.0,
           (double)(after - before) / (double)n, fsm_entry_count(f), fsm_pending_count(f));
    fsm_free(f);
    return 0;
}
