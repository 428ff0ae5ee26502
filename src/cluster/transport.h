/* The raft port, our own raft_uv_transport in place of libraft's TCP one
 * (which knows only IPv4 and listens where it is known). A thread per
 * connection connects or accepts and does raft's handshake; with a cluster
 * secret every raft connection is first TLS 1.3 between two holders of the
 * secret (docs/security.md) and raft gets one end of a socketpair, pumped to
 * the TLS stream; an unauthenticated connection is closed before a byte of
 * it reaches raft. Without a secret raft gets the TCP socket itself. */
#ifndef NSYNC_CLUSTER_TRANSPORT_H
#define NSYNC_CLUSTER_TRANSPORT_H

#include <raft.h>
#include <raft/uv.h>
#include <uv.h>

struct secret;

/* Set t up for raft_uv_init on loop, to listen on bind ("host:port" or
 * "[v6]:port", addr.h; a wildcard host is fine) while raft_init's address
 * is what peers are told. s NULL: plain TCP; else s must outlive
 * transport_close. Loop thread (before the loop runs). 0, or a raft error
 * code (RAFT_NOMEM, RAFT_NAMETOOLONG). */
int transport_init(struct raft_uv_transport *t, uv_loop_t *loop, const struct secret *s, const char *bind);

/* Release t after raft closed it (raft_uv_close done). It also waits, at
 * most a few seconds, for the connection threads to end, since they use s
 * and the hub. Loop thread. */
void transport_close(struct raft_uv_transport *t);

#endif
