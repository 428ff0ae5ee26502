/* libFuzzer harness: node addresses (common/addr.c), which arrive from peers
 * in /v1/join, in raft's hello and in the catalog. Besides memory errors:
 * an accepted address formats back to one that parses to the same host and
 * ports (so a node's id does not depend on the spelling it came in). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/addr.h"

static void round_trip(const char *host, uint16_t port)
{
    char out[ADDR_MAX], h2[ADDR_HOST_MAX], h3[ADDR_HOST_MAX];
    uint16_t p2;
    if (addr_format(out, sizeof out, host, port) < 0 || addr_parse(out, 1, h2, sizeof h2, &p2) != 0 ||
        strcmp(h2, host) != 0 || p2 != port || addr_host_parse(h2, h3, sizeof h3) != 0 || strcmp(h3, host) != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    char host[ADDR_HOST_MAX];
    uint16_t ports[2];
    for (unsigned n = 1; n <= 2; n++) {
        int rc = addr_parse(s, n, host, sizeof host, ports);
        if (rc == 0) {
            if (!host[0] || strchr(host, '[') || strchr(host, ']') || ports[0] == 0 || (n == 2 && ports[1] == 0))
                abort();
            round_trip(host, ports[0]);
        } else if (rc != -22 && rc != -36) { /* EINVAL, ENAMETOOLONG */
            abort();
        }
    }
    if (addr_host_parse(s, host, sizeof host) == 0) {
        round_trip(host, 1);
        (void)addr_is_wildcard(host);
    }
    /* a small output buffer: the formatter must not overrun it */
    char small[8];
    if (size < ADDR_HOST_MAX && addr_format(small, sizeof small, s, 65535) >= (int)sizeof small)
        abort();
    free(s);
    return 0;
}
