/* The sender of a forwarded request: the node it names, checked against the
 * address the cluster knows for it, so that a member cannot make a command
 * that speaks for another (issue 13). */
#include "transfer/sender.h"

#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "cluster/fsm.h"
#include "common/log.h"
#include "nsync.h"

/* True if host (numeric or a name) is the client's address. */
static bool xfer_host_is(const char *host, const char *client)
{
    if (strcmp(host, client) == 0)
        return true;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(host, NULL, &hints, &res) != 0)
        return false;
    bool same = false;
    for (struct addrinfo *a = res; a && !same; a = a->ai_next) {
        char num[NI_MAXHOST];
        same = getnameinfo(a->ai_addr, a->ai_addrlen, num, sizeof num, NULL, 0, NI_NUMERICHOST) == 0 &&
               strcmp(num, client) == 0;
    }
    freeaddrinfo(res);
    return same;
}

int xfer_sender(struct nsync *ns, struct MHD_Connection *conn, const char *join_caddr, uint64_t *id)
{
    *id = 0;
    if (!ns->cfg.secret)
        return 0;
    const char *hv = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, XFER_SENDER_HEADER);
    char *end;
    errno = 0;
    unsigned long long v = hv && *hv >= '0' && *hv <= '9' ? strtoull(hv, &end, 10) : 0;
    if (!v || errno || *end)
        return -EPERM;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    char client[NI_MAXHOST];
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;
    struct sockaddr_in v4;
    if (sa && sa->sa_family == AF_INET6 &&
        IN6_IS_ADDR_V4MAPPED(&((const struct sockaddr_in6 *)sa)->sin6_addr)) {
        /* an IPv4 peer on a "::" listener: compared as the IPv4 address
         * the catalog knows it by */
        memset(&v4, 0, sizeof v4);
        v4.sin_family = AF_INET;
        memcpy(&v4.sin_addr, &((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr[12], 4);
        sa = (const struct sockaddr *)&v4;
    }
    socklen_t sl = sa && sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (!sa || getnameinfo(sa, sl, client, sizeof client, NULL, 0, NI_NUMERICHOST) != 0)
        return -EPERM;

    char caddr[FSM_ADDR_MAX] = "";
    pthread_rwlock_rdlock(&ns->fsm_lock);
    const struct fsm_member *m = fsm_member_get(ns->fsm, (uint64_t)v);
    if (m)
        snprintf(caddr, sizeof caddr, "%s", m->caddr);
    pthread_rwlock_unlock(&ns->fsm_lock);
    char host[NSYNC_HOST_MAX];
    uint16_t port;
    if (!caddr[0] && join_caddr) {
        /* Not a member yet: it may only join as the node its address makes. */
        if (addr_parse(join_caddr, 1, host, sizeof host, &port) < 0 ||
            nsync_node_id(host, port) != (uint64_t)v)
            return -EPERM;
        snprintf(caddr, sizeof caddr, "%s", join_caddr);
    }
    if (!caddr[0] || addr_parse(caddr, 1, host, sizeof host, &port) < 0 || !xfer_host_is(host, client)) {
        log_warn("request from %s naming node %016llx refused: not that node's address", client, v);
        return -EPERM;
    }
    *id = (uint64_t)v;
    return 0;
}

int xfer_sender_owns(uint64_t sender, const void *buf, size_t len)
{
    if (!sender)
        return 0;
    struct fsm_cmd c;
    if (fsm_cmd_decode(buf, len, &c) < 0)
        return 0;
    bool ok = c.node == sender && c.op != FSM_OP_JOIN && c.op != FSM_OP_LEAVE;
    if (!ok)
        log_warn("forwarded command (op %u) for node %016" PRIx64 " from node %016" PRIx64 " refused",
                 (unsigned)c.op, c.node, sender);
    fsm_cmd_release(&c);
    return ok ? 0 : -EPERM;
}
