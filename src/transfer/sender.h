/* Who sent a request to the file server, with a cluster secret: every member
 * holds the same certificate, so TLS says "a member", not which one. The
 * sender names itself (header X-Nsync-Node) and must connect from the
 * address the cluster knows for that node; its commands may only speak for
 * itself (docs/security.md says what this does and does not stop).
 * Without a secret nothing is checked, as before. Any server thread. */
#ifndef NSYNC_XFER_SENDER_H
#define NSYNC_XFER_SENDER_H

#include <stddef.h>
#include <stdint.h>

#include <microhttpd.h>

struct nsync;

#define XFER_SENDER_HEADER "X-Nsync-Node"

/* 0 and *id = the sender (0 without a secret); -EPERM if the header is
 * missing or malformed, or the client's address is not that node's: its
 * member address, or for a join (join_caddr non-NULL, the node not a
 * member yet) the cluster address it asks to join with, which must also be
 * the one its id is derived from. */
int xfer_sender(struct nsync *ns, struct MHD_Connection *conn, const char *join_caddr, uint64_t *id);

/* 0 if the encoded command speaks for sender (its node field) and is no
 * membership change (those go through /v1/join and /v1/leave only);
 * -EPERM otherwise. sender 0 (no secret): always 0. A command that does not
 * decode is 0 too: the normal path refuses it with its own answer. */
int xfer_sender_owns(uint64_t sender, const void *buf, size_t len);

#endif
