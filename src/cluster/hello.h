/* libraft's connection handshake ("hello"), as the raft port sends and reads
 * it (cluster/transport.c): protocol, server id, address length, address
 * padded with NULs to 8 bytes; integers little-endian 64-bit. Pure: the
 * bytes come from whoever connects, so decoding is unit-tested and fuzzed. */
#ifndef NSYNC_CLUSTER_HELLO_H
#define NSYNC_CLUSTER_HELLO_H

#include <stddef.h>
#include <stdint.h>

#define HELLO_PROTOCOL 1
#define HELLO_HEAD 24          /* protocol, id, address length */
#define HELLO_ADDR_MAX 256     /* longest address part (its padding included) */

/* The whole hello of id at address into buf (HELLO_HEAD + HELLO_ADDR_MAX
 * bytes). Its length, or 0 if address does not fit. */
size_t hello_encode(uint8_t *buf, uint64_t id, const char *address);

/* The head: 0 and *id, *len (the bytes of address to read next), or
 * -EINVAL for another protocol, id 0, or a length of 0 or past
 * HELLO_ADDR_MAX. */
int hello_decode_head(const uint8_t head[HELLO_HEAD], uint64_t *id, size_t *len);

/* The address part (len bytes, as the head said): 0 if it holds a NUL and
 * before it a node address (addr_parse, one port); -EINVAL else. */
int hello_check_address(const char *addr, size_t len);

#endif
