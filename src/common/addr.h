/* Network addresses as nsyncfs spells them, on the command line, to libraft,
 * in URLs, in the member catalog and in /v1/status: HOST:PORT, and in
 * --cluster HOST:CLUSTER-PORT:FILE-SERVER-PORT. An IPv6 host is written in
 * brackets ([::1]:7001:8001) wherever a port follows it. Pure string work:
 * no name resolution, no I/O, any thread. */
#ifndef NSYNC_COMMON_ADDR_H
#define NSYNC_COMMON_ADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ADDR_HOST_MAX 256  /* longest host, with its NUL */
#define ADDR_MAX (ADDR_HOST_MAX + 8) /* "[host]:port" */

/* s is a host followed by exactly nports (1 or 2) ":PORT" parts. The host
 * is a name or an IPv4 address (no ':'), or an IPv6 address in brackets;
 * each port is decimal, 1..65535. On 0, host holds the host without
 * brackets (an IPv6 address in its canonical spelling) and ports[0..nports)
 * the ports. -EINVAL for anything else (missing or extra port, port out of
 * range, unbalanced brackets, empty host, bare IPv6); -ENAMETOOLONG for a
 * host that does not fit hostsz. */
int addr_parse(const char *s, unsigned nports, char *host, size_t hostsz, uint16_t *ports);

/* A host alone (--host, --advertise): a name, an IPv4 address, an IPv6
 * address bare or in brackets. Same output and errors as addr_parse. */
int addr_host_parse(const char *s, char *host, size_t hostsz);

/* "host:port", or "[host]:port" when host is an IPv6 address. The length
 * written, or -ENAMETOOLONG (out then holds an empty string). */
int addr_format(char *out, size_t sz, const char *host, uint16_t port);

/* True for the any-address of either family (0.0.0.0, ::): fine to listen
 * on, meaningless to tell others. */
bool addr_is_wildcard(const char *host);

#endif
