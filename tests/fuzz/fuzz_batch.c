/* libFuzzer harness: the frame of POST /v1/propose-batch (a peer's bytes),
 * then every command it yields through the FSM decoder. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/cluster.h"
#include "cluster/fsm.h"
#include "transfer/batch.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *body = malloc(size ? size : 1);
    if (!body)
        return 0;
    memcpy(body, data, size);
    struct cluster_item *items;
    uint32_t n;
    if (xfer_batch_split(body, size, &items, &n) == 0) {
        const uint8_t *end = body + size;
        for (uint32_t i = 0; i < n; i++) {
            const uint8_t *b = items[i].buf;
            if (b < body + 8 || b + items[i].len > end || items[i].len == 0)
                abort();
            struct fsm_cmd c;
            fsm_cmd_decode(b, items[i].len, &c);
            fsm_cmd_release(&c);
        }
        free(items);
    }
    free(body);
    return 0;
}
