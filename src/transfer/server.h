/* The node's HTTP server (libmicrohttpd, one thread per connection):
 *   GET  /v1/file?path=P&version=V  file bytes (sendfile from BACKING), with
 *        X-Nsync-Hash (hex XXH3-128) and X-Nsync-Version; 409 when this node's
 *        copy is not at version V; 404 when absent; 400 for a bad path.
 *   GET  /metrics                   Prometheus text format (metrics_page.c).
 *   GET  /v1/status                 JSON: node, role, leader, term, applied,
 *        members (reachable, last contact, how far behind), quorum,
 *        catalog size, catch-up progress, fetches. Node ids are 16 hex digits.
 *   POST /v1/propose                body: an encoded fsm command; leader only
 *        (421 elsewhere); JSON reply (u64 values as decimal strings).
 *   POST /v1/propose-batch          body: u32 n, then n x (u32 len, command),
 *        little-endian; committed in order; JSON {"results": [[rc, status,
 *        "version", "lock_holder" (a node id), "path_version"], ...]}. Leader only.
 *   POST /v1/join, /v1/leave        membership (JSON), leader only.
 * Every request is validated; a hostile one gets 4xx and the server stays up. */
#ifndef NSYNC_XFER_SERVER_H
#define NSYNC_XFER_SERVER_H

struct nsync;
struct xfer_server;

/* Under BACKING/.nsyncfs while the server runs: "host:port\n" of this node's
 * file server (how `nsyncfs status MOUNTPOINT` finds it), addr_format's
 * spelling; a wildcard --host is written as its family's loopback. */
#define XFER_ADDR_FILE "server"

/* Bind ns->cfg.host:ns->cfg.fport (:: takes IPv4 as well) and serve; write XFER_ADDR_FILE (removed
 * by xfer_server_stop). 0 or -errno (logged). */
int xfer_server_start(struct nsync *ns, struct xfer_server **out);
void xfer_server_stop(struct xfer_server *s);

#endif
