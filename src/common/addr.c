/* The one parser and formatter of HOST:PORT[:PORT] (addr.h): every address
 * nsyncfs reads from a user or a peer, or hands to libraft, libcurl and the
 * catalog, goes through here, so that IPv6 is bracketed the same way
 * everywhere and a node's id (a hash of its address) never depends on how
 * the address was spelled. */
#include "common/addr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

/* A name or an IPv4 address: what DNS and inet_pton accept, nothing that
 * could be taken for a separator or a bracket. */
static bool addr_name_ok(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '-' || c == '_'))
            return false;
    }
    return true;
}

/* s[0..n) as host: an IPv6 address (canonical, when v6) or a name. */
static int addr_put_host(const char *s, size_t n, bool v6, char *host, size_t hostsz)
{
    char buf[ADDR_HOST_MAX];
    if (n == 0 || n >= sizeof buf)
        return n == 0 ? -EINVAL : -ENAMETOOLONG;
    memcpy(buf, s, n);
    buf[n] = '\0';
    if (v6) {
        struct in6_addr a;
        if (inet_pton(AF_INET6, buf, &a) != 1 || !inet_ntop(AF_INET6, &a, buf, sizeof buf))
            return -EINVAL;
    } else if (!addr_name_ok(buf, n)) {
        return -EINVAL;
    }
    if (strlen(buf) >= hostsz)
        return -ENAMETOOLONG;
    strcpy(host, buf);
    return 0;
}

/* Decimal 1..65535 in s[0..n), nothing else. */
static int addr_port(const char *s, size_t n, uint16_t *port)
{
    if (n == 0 || n > 5)
        return -EINVAL;
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v == 0 || v > 65535)
        return -EINVAL;
    *port = (uint16_t)v;
    return 0;
}

int addr_parse(const char *s, unsigned nports, char *host, size_t hostsz, uint16_t *ports)
{
    if (!s || nports == 0 || nports > 2)
        return -EINVAL;
    const char *rest;
    int rc;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || memchr(s + 1, '[', (size_t)(close - s - 1)))
            return -EINVAL;
        rc = addr_put_host(s + 1, (size_t)(close - s - 1), true, host, hostsz);
        rest = close + 1;
    } else {
        rest = strchr(s, ':');
        if (!rest)
            return -EINVAL;
        rc = addr_put_host(s, (size_t)(rest - s), false, host, hostsz);
    }
    if (rc < 0)
        return rc;
    for (unsigned i = 0; i < nports; i++) {
        if (*rest != ':')
            return -EINVAL;
        const char *p = rest + 1, *end = strchr(p, ':');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (addr_port(p, n, &ports[i]) < 0)
            return -EINVAL;
        rest = p + n;
    }
    return *rest ? -EINVAL : 0;
}

int addr_host_parse(const char *s, char *host, size_t hostsz)
{
    if (!s)
        return -EINVAL;
    size_t n = strlen(s);
    if (n >= 2 && s[0] == '[' && s[n - 1] == ']')
        return addr_put_host(s + 1, n - 2, true, host, hostsz);
    return addr_put_host(s, n, strchr(s, ':') != NULL, host, hostsz);
}

int addr_format(char *out, size_t sz, const char *host, uint16_t port)
{
    bool v6 = strchr(host, ':') != NULL;
    int n = snprintf(out, sz, v6 ? "[%s]:%u" : "%s:%u", host, (unsigned)port);
    if (n < 0 || (size_t)n >= sz) {
        if (sz)
            out[0] = '\0';
        return -ENAMETOOLONG;
    }
    return n;
}

bool addr_is_wildcard(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return a4.s_addr == htonl(INADDR_ANY);
    return inet_pton(AF_INET6, host, &a6) == 1 && IN6_IS_ADDR_UNSPECIFIED(&a6);
}
