/* The raft port. Without a cluster secret it is libraft's own TCP transport.
 * With one, every raft connection is TLS 1.3 between two holders of the
 * secret (docs/security.md): a thread per connection does the handshake on
 * the real socket and only then hands raft one end of a socketpair, pumping
 * bytes between the two; an unauthenticated connection is closed before a
 * byte of it reaches raft. */
#ifndef NSYNC_CLUSTER_TRANSPORT_H
#define NSYNC_CLUSTER_TRANSPORT_H

#include <raft.h>
#include <raft/uv.h>
#include <uv.h>

struct secret;

/* Set t up for raft_uv_init on loop. s NULL: raft_uv_tcp_init. s must
 * outlive transport_close. Loop thread (before the loop runs). 0, or a raft
 * error code (RAFT_NOMEM). */
int transport_init(struct raft_uv_transport *t, uv_loop_t *loop, const struct secret *s);

/* Release t after raft closed it (raft_uv_close done). With a secret it also
 * waits, at most a few seconds, for the connection threads to end, since
 * they use s. Loop thread. */
void transport_close(struct raft_uv_transport *t);

#endif
