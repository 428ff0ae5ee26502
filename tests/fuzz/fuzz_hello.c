/* libFuzzer harness: raft's handshake as the raft port reads it from
 * whoever connects (cluster/hello.c), head then address, exactly as
 * transport.c feeds it. Besides memory errors: an accepted hello re-encodes
 * to a hello that decodes to the same id and address. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/hello.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < HELLO_HEAD)
        return 0;
    uint64_t id;
    size_t len;
    if (hello_decode_head(data, &id, &len) < 0)
        return 0;
    if (id == 0 || len == 0 || len > HELLO_ADDR_MAX)
        abort();
    if (size - HELLO_HEAD < len)
        return 0; /* the peer stopped early: the read times out */
    char *addr = malloc(len); /* exact size, as the bytes arrive */
    if (!addr)
        return 0;
    memcpy(addr, data + HELLO_HEAD, len);
    if (hello_check_address(addr, len) == 0) {
        uint8_t buf[HELLO_HEAD + HELLO_ADDR_MAX];
        size_t n = hello_encode(buf, id, addr);
        uint64_t id2;
        size_t len2;
        if (n == 0 || hello_decode_head(buf, &id2, &len2) < 0 || id2 != id || HELLO_HEAD + len2 != n ||
            hello_check_address((const char *)buf + HELLO_HEAD, len2) < 0 ||
            strcmp((const char *)buf + HELLO_HEAD, addr) != 0)
            abort();
    }
    free(addr);
    return 0;
}
