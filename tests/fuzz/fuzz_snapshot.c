/* libFuzzer harness: snapshot restore. A snapshot comes from the leader over
 * raft; whatever its bytes, restore either refuses them or yields a state
 * whose own snapshot restores to the same bytes. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "cluster/fsm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Half the inputs (by the low bit of the last byte, which the sum
     * overwrites) get a valid checksum, so the parser behind it is reached,
     * not only the checksum test. */
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    if (size >= 16 && (data[size - 1] & 1)) {
        uint64_t sum = XXH64(buf, size - 8, 0);
        for (int i = 0; i < 8; i++)
            buf[size - 8 + i] = (uint8_t)(sum >> (8 * i));
    }
    struct fsm *f = fsm_new();
    if (f && fsm_restore(f, buf, size) == 0) {
        void *s1, *s2;
        size_t l1, l2;
        struct fsm *g = fsm_new();
        if (fsm_snapshot(f, &s1, &l1) == 0) {
            if (!g || fsm_restore(g, s1, l1) != 0)
                abort();
            if (fsm_snapshot(g, &s2, &l2) == 0) {
                if (l1 != l2 || memcmp(s1, s2, l1) != 0)
                    abort();
                free(s2);
            }
            free(s1);
        }
        fsm_free(g);
    }
    fsm_free(f);
    free(buf);
    return 0;
}
