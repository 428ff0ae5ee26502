/* libraft's handshake bytes (hello.h), encoded and checked without trusting
 * the peer: every length is bounded before it is used. */
#include "cluster/hello.h"

#include <errno.h>
#include <string.h>

#include "common/addr.h"

static void hello_put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t hello_get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

size_t hello_encode(uint8_t *buf, uint64_t id, const char *address)
{
    size_t n = strlen(address);
    size_t alen = (n + 1 + 7) / 8 * 8; /* padded as libraft does */
    if (alen > HELLO_ADDR_MAX)
        return 0;
    memset(buf, 0, HELLO_HEAD + alen);
    hello_put64(buf, HELLO_PROTOCOL);
    hello_put64(buf + 8, id);
    hello_put64(buf + 16, alen);
    memcpy(buf + HELLO_HEAD, address, n);
    return HELLO_HEAD + alen;
}

int hello_decode_head(const uint8_t head[HELLO_HEAD], uint64_t *id, size_t *len)
{
    uint64_t proto = hello_get64(head), v = hello_get64(head + 8), l = hello_get64(head + 16);
    if (proto != HELLO_PROTOCOL || v == 0 || l == 0 || l > HELLO_ADDR_MAX)
        return -EINVAL;
    *id = v;
    *len = (size_t)l;
    return 0;
}

int hello_check_address(const char *addr, size_t len)
{
    if (!memchr(addr, '\0', len))
        return -EINVAL;
    char host[ADDR_HOST_MAX];
    uint16_t port;
    return addr_parse(addr, 1, host, sizeof host, &port) == 0 ? 0 : -EINVAL;
}
