/* HTTP client side of the cluster protocol (the peers' file servers answer):
 * proposals forwarded to the leader, status probes, join/leave requests. A
 * small pool of libcurl handles keeps connections to the leader alive. */
#ifndef NSYNC_CLUSTER_PEER_H
#define NSYNC_CLUSTER_PEER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct nsync;
struct cluster_peer;
struct cluster_reply;
struct cJSON;

/* 0 or -ENOMEM. Call after curl_global_init (main does it). */
int cluster_peer_new(struct nsync *ns, struct cluster_peer **out);
void cluster_peer_free(struct cluster_peer *c);

/* POST the n commands of items to http://faddr/v1/propose-batch (see
 * server.c for the format) and wait at most timeout_ms. 0 with each
 * item's rc and reply; or, for the whole batch, -ENOTCONN (not the
 * leader), -EROFS, -EINVAL (refused as malformed), -EHOSTUNREACH /
 * -ETIMEDOUT, -EPROTO, -ENOMEM. Any thread; blocks the caller. */
struct cluster_item;
int cluster_peer_propose_batch(struct cluster_peer *c, const char *faddr, struct cluster_item *items,
                              size_t n, unsigned timeout_ms);

/* GET http://faddr/v1/status. On 0, *json is the parsed object (caller
 * frees it with cJSON_Delete). -EHOSTUNREACH / -ETIMEDOUT / -EPROTO. */
int cluster_peer_status(struct cluster_peer *c, const char *faddr, unsigned timeout_ms, struct cJSON **json);

/* Ask the leader at faddr to add (join) or remove (leave) node id.
 * 0 done; -ENOTCONN not the leader; -EBUSY a configuration change is under
 * way (retry); -EROFS no quorum; -EINVAL refused; or a connection error. */
int cluster_peer_membership(struct cluster_peer *c, const char *faddr, bool join, uint64_t id,
                           const char *caddr, const char *my_faddr, unsigned timeout_ms);

#endif
