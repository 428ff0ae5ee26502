/* HTTP client side of the cluster protocol: a follower forwards its
 * proposed commands to the leader (POST /v1/propose-batch). Keeps a small pool of libcurl easy
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

/* POST the n commands of items to http://faddr/v1/propose-batch (see
 * server.c for the format) and wait at most timeout_ms. 0 with each
 * item's rc and reply; or, for the whole batch, -ENOTCONN (not the
 * leader), -EROFS, -EINVAL (refused as malformed), -EHOSTUNREACH /
 * -ETIMEDOUT, -EPROTO, -ENOMEM. Any thread; blocks the caller. */
struct cluster_item;
int xfer_client_propose_batch(struct xfer_client *c, const char *faddr, struct cluster_item *items,
                              size_t n, unsigned timeout_ms);

/* GET http://faddr/v1/status. On 0, *json is the parsed object (caller
 * frees it with cJSON_Delete). -EHOSTUNREACH / -ETIMEDOUT / -EPROTO. */
int xfer_client_status(struct xfer_client *c, const char *faddr, unsigned timeout_ms, struct cJSON **json);

/* Ask the leader at faddr to add (join) or remove (leave) node id.
 * 0 done; -ENOTCONN not the leader; -EBUSY a configuration change is under
 * way (retry); -EROFS no quorum; -EINVAL refused; or a connection error. */
int xfer_client_membership(struct xfer_client *c, const char *faddr, bool join, uint64_t id,
                           const char *caddr, const char *my_faddr, unsigned timeout_ms);

#endif
