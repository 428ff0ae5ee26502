/* HTTP client side of the cluster protocol: a follower forwards a proposed
 * command to the leader (POST /v1/propose). Keeps a small pool of libcurl easy
 * handles so that connections to the leader are reused (keep-alive). */
#ifndef NSYNC_XFER_CLIENT_H
#define NSYNC_XFER_CLIENT_H

#include <stddef.h>

struct nsync;
struct xfer_client;
struct cluster_reply;

/* 0 or -ENOMEM. Call after curl_global_init (main does it). */
int xfer_client_new(struct nsync *ns, struct xfer_client **out);
void xfer_client_free(struct xfer_client *c);

/* POST the encoded command buf to http://faddr/v1/propose and wait at most
 * timeout_ms. Any thread; blocks the caller. Returns
 *   0           *reply filled from the leader's JSON answer (200)
 *   -ENOTCONN   the peer is not the leader (421): retry elsewhere
 *   -EROFS      the leader could not commit in time (503)
 *   -EINVAL     the leader refused the command as malformed (400)
 *   -EHOSTUNREACH / -ETIMEDOUT  connection failed / timed out
 *   -EPROTO     an answer we cannot parse */
int xfer_client_propose(struct xfer_client *c, const char *faddr, const void *buf, size_t len,
                        unsigned timeout_ms, struct cluster_reply *reply);

#endif
