/* HTTP client side of the cluster protocol: a follower forwards a proposed
 * command to the leader (POST /v1/propose). Keeps a small pool of libcurl easy
 * handles so that connections to the leader are reused (keep-alive). */
#ifndef NSYNC_XFER_CLIENT_H
#define NSYNC_XFER_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct nsync;
struct xfer_client;
struct cluster_reply;
struct cJSON;

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

/* GET http://faddr/v1/status. On 0, *json is the parsed object (caller
 * frees it with cJSON_Delete). -EHOSTUNREACH / -ETIMEDOUT / -EPROTO. */
int xfer_client_status(struct xfer_client *c, const char *faddr, unsigned timeout_ms, struct cJSON **json);

/* Ask the leader at faddr to add (join) or remove (leave) node id.
 * 0 done; -ENOTCONN not the leader; -EBUSY a configuration change is under
 * way (retry); -EROFS no quorum; -EINVAL refused; or a connection error. */
int xfer_client_membership(struct xfer_client *c, const char *faddr, bool join, uint64_t id,
                           const char *caddr, const char *my_faddr, unsigned timeout_ms);

#endif
