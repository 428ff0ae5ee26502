/* libFuzzer harness: the leader's answer to a forwarded batch, as the
 * forwarding node reads it (cluster/answer.c). The first byte picks how many
 * commands were sent (0-15), the rest is the answer's body. Besides memory
 * errors: an accepted answer leaves every item with an rc a command can
 * have (0 or a negative errno, -ENOTCONN for one not answered). */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/answer.h"
#include "cluster/cluster.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t n = data[0] % 16;
    struct cluster_item items[16];
    for (size_t i = 0; i < n; i++)
        memset(&items[i], 0, sizeof items[i]), items[i].rc = 1; /* 1: untouched */
    char *body = malloc(size - 1 ? size - 1 : 1); /* exact size: a read past it is seen */
    if (!body)
        return 0;
    memcpy(body, data + 1, size - 1);
    if (answer_decode(body, size - 1, items, n) == 0)
        for (size_t i = 0; i < n; i++)
            if (items[i].rc > 0 || items[i].rc < -4096 || items[i].reply.status > 4096 ||
                items[i].reply.status < -4096)
                abort();
    free(body);
    return 0;
}
