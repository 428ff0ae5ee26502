/* libFuzzer harness: the FSM command decoder and apply. The input is a run of
 * frames (u16 length, command bytes) applied in order to a catalog with two
 * members, so that sequences reach locks, renames and settlement; every
 * command is also decoded on its own. Any crash or sanitizer report is a bug:
 * a hostile peer's command reaches exactly this code on every node. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/fsm.h"

static void join(struct fsm *f, uint64_t id, const char *ca, const char *fa)
{
    struct fsm_cmd c = {.op = FSM_OP_JOIN, .node = id, .caddr = ca, .faddr = fa};
    void *buf;
    size_t len;
    if (fsm_cmd_encode(&c, &buf, &len) == 0) {
        fsm_apply(f, buf, len);
        free(buf);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fsm *f = fsm_new();
    if (!f)
        return 0;
    join(f, 11, "h1:1", "h1:2");
    join(f, 22, "h2:1", "h2:2");
    size_t off = 0;
    while (off + 2 <= size) {
        size_t n = (size_t)data[off] | (size_t)data[off + 1] << 8;
        off += 2;
        if (n > size - off)
            n = size - off;
        /* A copy of exactly n bytes, so ASan sees any read past the frame. */
        uint8_t *cmd = malloc(n ? n : 1);
        if (!cmd)
            break;
        memcpy(cmd, data + off, n);
        struct fsm_cmd c;
        if (fsm_cmd_decode(cmd, n, &c) == 0) {
            void *re;
            size_t rl;
            /* What decodes encodes again (the two share one definition). */
            if (fsm_cmd_encode(&c, &re, &rl) == 0)
                free(re);
        }
        fsm_cmd_release(&c);
        fsm_apply(f, cmd, n);
        free(cmd);
        off += n;
    }
    /* The state it reached survives a snapshot round trip. */
    void *snap;
    size_t sl;
    if (fsm_snapshot(f, &snap, &sl) == 0) {
        struct fsm *g = fsm_new();
        if (g && fsm_restore(g, snap, sl) != 0)
            abort();
        fsm_free(g);
        free(snap);
    }
    fsm_free(f);
    return 0;
}
