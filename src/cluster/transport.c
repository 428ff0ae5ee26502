/* The raft port: one thread per connection does the connect, accept and
 * raft's handshake (id, address) on a blocking socket. With the cluster
 * secret, TLS 1.3 first, and raft only ever sees one end of a socketpair,
 * handed over once the peer proved it holds the secret; without it, raft
 * gets the TCP socket itself after the handshake. */
#include "cluster/transport.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/gnutls.h>

#include "cluster/hello.h"
#include "common/addr.h"
#include "common/log.h"
#include "common/secret.h"
#include "nsync.h"

#define TR_ADDR_MAX HELLO_ADDR_MAX /* longest address in raft's handshake */
#define TR_HANDSHAKE_MS 5000       /* TLS + raft handshake, or the connection goes */
#define TR_CONNECT_MS 2000
#define TR_MAX_CONNS 64            /* threads (connections) both ways together */
#define TR_SEND_TIMEOUT_S 10       /* a peer that stops reading loses the connection */
#define TR_BUF 16384               /* one TLS record */
#define TR_STACK (256 * 1024)
#define TR_CLOSE_WAIT_MS 5000

enum tr_kind { TR_ACCEPTED, TR_CONNECTED, TR_FAILED };

struct tr_pending;

/* A finished handshake (or a failed connect) on its way to the loop. */
struct tr_item {
    struct tr_item *next;
    enum tr_kind kind;
    int fd;                       /* raft's end of the socketpair (plain: the TCP
                                   * socket), or -1 */
    raft_id id;                   /* TR_ACCEPTED: who connected */
    char address[TR_ADDR_MAX];
    struct tr_pending *pending;   /* TR_CONNECTED/FAILED: a token, never
                                   * dereferenced off the loop thread */
};

/* Where the connection threads meet the loop thread: under mu. Outlives the
 * transport until the last thread left. */
struct tr_hub {
    pthread_mutex_t mu;
    pthread_cond_t idle;          /* threads reached 0 */
    unsigned refs;                /* the transport + each thread */
    unsigned threads;
    bool closed;                  /* no more posts; async is gone */
    uv_async_t *async;
    struct tr_item *head, **tail;
    int fds[TR_MAX_CONNS];        /* each thread's socket (-1: none), shut down at close */
    const struct secret *secret;  /* read-only; NULL: plain TCP */
};

/* A connect request raft is waiting for. Loop thread only. */
struct tr_pending {
    struct tr_pending *next;
    struct raft_uv_connect *req;
    raft_uv_connect_cb cb;
};

/* The transport's state. Loop thread only, but for listen_fd which the
 * listener thread reads. */
struct tr_impl {
    uv_loop_t *loop;
    struct tr_hub *hub;
    uv_async_t async;
    raft_id id;
    char address[TR_ADDR_MAX];    /* told to peers (--advertise) */
    char bind[TR_ADDR_MAX];       /* listened on (--host) */
    raft_uv_accept_cb accept_cb;
    int listen_fd;
    pthread_t listener;
    bool listening;
    struct tr_pending *pending;
    raft_uv_transport_close_cb close_cb;
    bool async_closed;
    struct raft_uv_transport *t;
};

/* What a connection thread gets. */
struct tr_conn {
    struct tr_hub *hub;
    int slot;
    int fd;                       /* server: the accepted socket; client: -1 */
    bool server;
    char peer[TR_ADDR_MAX];       /* client: whom to call; server: for logs */
    raft_id self_id;              /* client: what to tell the server */
    char self_addr[TR_ADDR_MAX];
    struct tr_pending *pending;
};

/* ---------------- the hub ---------------- */

static void tr_hub_unref_locked(struct tr_hub *h, bool *freed)
{
    *freed = --h->refs == 0;
}

static void tr_hub_free(struct tr_hub *h)
{
    while (h->head) {
        struct tr_item *it = h->head;
        h->head = it->next;
        if (it->fd >= 0)
            close(it->fd);
        free(it);
    }
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->idle);
    free(h);
}

/* A slot for a new connection thread, or -1 when closed or full. */
static int tr_hub_enter(struct tr_hub *h, int fd)
{
    int slot = -1;
    pthread_mutex_lock(&h->mu);
    if (!h->closed && h->threads < TR_MAX_CONNS) {
        for (int i = 0; i < TR_MAX_CONNS && slot < 0; i++)
            if (h->fds[i] == -2)
                slot = i;
        assert(slot >= 0);
        h->fds[slot] = fd;
        h->threads++;
        h->refs++;
    }
    pthread_mutex_unlock(&h->mu);
    return slot;
}

/* The socket a client thread made; false when closing (caller closes it). */
static bool tr_hub_set_fd(struct tr_hub *h, int slot, int fd)
{
    pthread_mutex_lock(&h->mu);
    bool ok = !h->closed;
    if (ok)
        h->fds[slot] = fd;
    pthread_mutex_unlock(&h->mu);
    return ok;
}

/* Before the thread closes its socket: tr_close must never shut down a
 * number that another part of the process may have been given since. */
static void tr_hub_clear_fd(struct tr_hub *h, int slot)
{
    pthread_mutex_lock(&h->mu);
    h->fds[slot] = -1;
    pthread_mutex_unlock(&h->mu);
}

static void tr_hub_leave(struct tr_hub *h, int slot)
{
    bool freed;
    pthread_mutex_lock(&h->mu);
    h->fds[slot] = -2;
    if (--h->threads == 0)
        pthread_cond_broadcast(&h->idle);
    tr_hub_unref_locked(h, &freed);
    pthread_mutex_unlock(&h->mu);
    if (freed)
        tr_hub_free(h);
}

/* Hand it to the loop; false when the transport is closing (it is then the
 * caller's to drop). */
static bool tr_hub_post(struct tr_hub *h, struct tr_item *it)
{
    pthread_mutex_lock(&h->mu);
    bool ok = !h->closed;
    if (ok) {
        it->next = NULL;
        *h->tail = it;
        h->tail = &it->next;
        uv_async_send(h->async);
    }
    pthread_mutex_unlock(&h->mu);
    return ok;
}

/* ---------------- one connection (its own thread) ---------------- */

static uint64_t tr_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void tr_timeouts(int fd, unsigned rcv_ms, unsigned snd_ms)
{
    struct timeval r = {rcv_ms / 1000, (rcv_ms % 1000) * 1000}, s = {snd_ms / 1000, (snd_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &r, sizeof r);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &s, sizeof s);
}

static int tr_write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* The handshake's bytes go through TLS when there is a session, else
 * straight on the socket. */
struct tr_io {
    gnutls_session_t s;
    int fd;
};

static ssize_t tr_io_send(const struct tr_io *io, const void *buf, size_t len)
{
    if (io->s)
        return gnutls_record_send(io->s, buf, len);
    ssize_t n = send(io->fd, buf, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
        return GNUTLS_E_INTERRUPTED;
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? GNUTLS_E_AGAIN : n;
}

static ssize_t tr_io_recv(const struct tr_io *io, void *buf, size_t len)
{
    if (io->s)
        return gnutls_record_recv(io->s, buf, len);
    ssize_t n = recv(io->fd, buf, len, 0);
    if (n < 0 && errno == EINTR)
        return GNUTLS_E_INTERRUPTED;
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? GNUTLS_E_AGAIN : n;
}

static int tr_send_all(const struct tr_io *io, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = tr_io_send(io, p, len);
        if (n == GNUTLS_E_INTERRUPTED)
            continue;
        if (n <= 0) /* GNUTLS_E_AGAIN is the send timeout: the peer is stuck */
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Exactly len bytes before the deadline. */
static int tr_recv_all(const struct tr_io *io, void *buf, size_t len, uint64_t deadline)
{
    char *p = buf;
    while (len > 0) {
        ssize_t n = tr_io_recv(io, p, len);
        if ((n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) && tr_now_ms() < deadline)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* TLS on fd, then the peer must show exactly our certificate. */
static gnutls_session_t tr_tls(const struct tr_conn *c, int fd)
{
    gnutls_session_t s;
    if (gnutls_init(&s, c->server ? GNUTLS_SERVER : GNUTLS_CLIENT) < 0)
        return NULL;
    if (secret_session_setup(c->hub->secret, s, c->server) < 0) {
        gnutls_deinit(s);
        return NULL;
    }
    gnutls_transport_set_int(s, fd);
    /* The whole handshake within TR_HANDSHAKE_MS, however the peer paces its
     * bytes (GnuTLS enforces it); a silent peer surfaces as GNUTLS_E_AGAIN
     * every receive timeout, retried until the same deadline. */
    gnutls_handshake_set_timeout(s, TR_HANDSHAKE_MS);
    uint64_t deadline = tr_now_ms() + TR_HANDSHAKE_MS;
    int rc;
    do
        rc = gnutls_handshake(s);
    while (rc < 0 && !gnutls_error_is_fatal(rc) && tr_now_ms() < deadline);
    if (rc < 0) {
        log_warn("raft port: TLS handshake %s %s failed: %s", c->server ? "from" : "with", c->peer,
                 gnutls_strerror(rc));
        gnutls_deinit(s);
        return NULL;
    }
    if (!secret_peer_ok(c->hub->secret, s)) {
        log_warn("raft port: %s %s does not hold the cluster secret: closed", c->server ? "client" : "server",
                 c->peer);
        gnutls_deinit(s);
        return NULL;
    }
    return s;
}

/* Server side of raft's handshake (hello.h). */
static int tr_read_hello(const struct tr_io *io, struct tr_item *it, uint64_t deadline)
{
    uint8_t head[HELLO_HEAD];
    uint64_t id;
    size_t len;
    if (tr_recv_all(io, head, sizeof head, deadline) < 0 || hello_decode_head(head, &id, &len) < 0 ||
        tr_recv_all(io, it->address, len, deadline) < 0 || hello_check_address(it->address, len) < 0)
        return -1;
    it->id = id;
    return 0;
}

static int tr_send_hello(const struct tr_io *io, raft_id id, const char *address)
{
    uint8_t buf[HELLO_HEAD + HELLO_ADDR_MAX];
    size_t n = hello_encode(buf, id, address);
    return n ? tr_send_all(io, buf, n) : -1;
}

/* Bytes both ways until either side ends. */
static void tr_pump(gnutls_session_t s, int net, int local)
{
    char *buf = malloc(TR_BUF);
    if (!buf)
        return;
    struct pollfd p[2] = {{.fd = net, .events = POLLIN}, {.fd = local, .events = POLLIN}};
    for (;;) {
        bool pending = gnutls_record_check_pending(s) > 0;
        p[0].revents = p[1].revents = 0;
        if (!pending && poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (pending || p[0].revents) {
            ssize_t n = gnutls_record_recv(s, buf, TR_BUF);
            if (n == GNUTLS_E_INTERRUPTED || n == GNUTLS_E_AGAIN)
                continue;
            if (n <= 0 || tr_write_all(local, buf, (size_t)n) < 0)
                break;
        }
        if (!pending && p[1].revents) {
            ssize_t n = read(local, buf, TR_BUF);
            if (n < 0 && errno == EINTR)
                continue;
            struct tr_io io = {.s = s, .fd = net};
            if (n <= 0 || tr_send_all(&io, buf, (size_t)n) < 0)
                break;
        }
    }
    free(buf);
}

/* A TCP connection to c->peer ("host:port") within TR_CONNECT_MS, or -1. */
/* host:port (addr_format's spelling) resolved, for a connect or (passive)
 * a listen. 0 or a getaddrinfo error (EAI_NONAME for a malformed one). */
static int tr_resolve(const char *address, bool passive, struct addrinfo **res)
{
    char host[TR_ADDR_MAX], port[8];
    uint16_t p;
    if (addr_parse(address, 1, host, sizeof host, &p) < 0)
        return EAI_NONAME;
    snprintf(port, sizeof port, "%u", (unsigned)p);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0)};
    *res = NULL;
    int rc = getaddrinfo(host, port, &hints, res);
    return rc == 0 && !*res ? EAI_NONAME : rc;
}

static int tr_dial(struct tr_conn *c)
{
    struct addrinfo *res = NULL;
    if (tr_resolve(c->peer, false, &res) != 0)
        return -1;
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 || !tr_hub_set_fd(c->hub, c->slot, fd)) {
        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        return -1;
    }
    int rc = connect(fd, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    if (rc < 0 && errno == EINPROGRESS) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int err = 0;
        socklen_t el = sizeof err;
        rc = poll(&p, 1, TR_CONNECT_MS) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) == 0 && err == 0
                 ? 0
                 : -1;
    }
    /* The hub keeps the fd to shut it down at close; we close it at the end. */
    if (rc < 0 || fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0)
        return -fd - 2; /* failed, but the fd is still ours to close */
    return fd;
}

static void *tr_conn_main(void *arg)
{
    struct tr_conn *c = arg;
    struct tr_hub *hub = c->hub;
    struct tr_item *it = calloc(1, sizeof *it);
    gnutls_session_t s = NULL;
    int fd = c->fd, pair[2] = {-1, -1};
    bool ok = false;
    if (!c->server) {
        fd = tr_dial(c);
        if (fd < -1) {
            tr_hub_clear_fd(hub, c->slot);
            close(-fd - 2);
            fd = -1;
        }
    }
    bool tls = hub->secret != NULL;
    if (it && fd >= 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
        tr_timeouts(fd, 500, TR_HANDSHAKE_MS);
        uint64_t deadline = tr_now_ms() + TR_HANDSHAKE_MS;
        struct tr_io io = {.s = tls ? tr_tls(c, fd) : NULL, .fd = fd};
        s = io.s;
        ok = (!tls || s) &&
             (c->server ? tr_read_hello(&io, it, deadline) : tr_send_hello(&io, c->self_id, c->self_addr)) == 0 &&
             (!tls || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0);
        if ((s || !tls) && !ok)
            log_warn("raft port: no raft handshake %s %s within %d ms: closed", c->server ? "from" : "to",
                     c->peer, TR_HANDSHAKE_MS);
    }
    if (ok && !tls) {
        /* raft takes the socket itself: out of the hub's reach first, so
         * that a close never shuts down what raft owns by then */
        tr_timeouts(fd, 0, 0);
        tr_hub_clear_fd(hub, c->slot);
        pair[0] = fd;
        fd = -1;
    }
    if (it) {
        it->kind = ok ? (c->server ? TR_ACCEPTED : TR_CONNECTED) : TR_FAILED;
        it->fd = ok ? pair[0] : -1;
        it->pending = c->pending;
        /* A failed accept is nobody's business on the loop. */
        bool post = ok || !c->server;
        if (post && !tr_hub_post(hub, it)) {
            /* The transport is closing: nobody will take the item. */
            if (ok)
                close(pair[0]);
            ok = false;
            free(it);
        } else if (!post) {
            free(it);
        }
    }
    if (ok && tls) {
        tr_timeouts(fd, 0, TR_SEND_TIMEOUT_S * 1000);
        tr_pump(s, fd, pair[1]);
    }
    if (pair[1] >= 0)
        close(pair[1]);
    if (s)
        gnutls_deinit(s);
    tr_hub_clear_fd(hub, c->slot);
    if (fd >= 0)
        close(fd);
    tr_hub_leave(hub, c->slot);
    free(c);
    return NULL;
}

static int tr_spawn(struct tr_conn *c)
{
    pthread_attr_t a;
    pthread_t th;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&a, TR_STACK);
    int rc = pthread_create(&th, &a, tr_conn_main, c);
    pthread_attr_destroy(&a);
    return -rc;
}

/* ---------------- the listener (its own thread) ---------------- */

static void *tr_listen_main(void *arg)
{
    struct tr_impl *impl = arg;
    for (;;) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(impl->listen_fd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                usleep(100 * 1000);
                continue;
            }
            break; /* EINVAL: shut down by tr_close */
        }
        struct tr_conn *c = calloc(1, sizeof *c);
        int slot = c ? tr_hub_enter(impl->hub, fd) : -1;
        if (slot < 0) {
            /* Full: the connection is dropped, the ones we have go on. */
            free(c);
            close(fd);
            continue;
        }
        c->hub = impl->hub;
        c->slot = slot;
        c->fd = fd;
        c->server = true;
        char h[NI_MAXHOST], p[NI_MAXSERV];
        if (getnameinfo((struct sockaddr *)&ss, sl, h, sizeof h, p, sizeof p, NI_NUMERICHOST | NI_NUMERICSERV) == 0)
            snprintf(c->peer, sizeof c->peer, "%.200s:%.20s", h, p);
        if (tr_spawn(c) < 0) {
            tr_hub_clear_fd(impl->hub, slot);
            close(fd);
            tr_hub_leave(impl->hub, slot);
            free(c);
        }
    }
    return NULL;
}

/* ---------------- raft_uv_transport, loop thread ---------------- */

/* fd as the stream raft reads: a pipe handle on the socketpair end (TLS),
 * a TCP handle on the socket (plain); NULL (fd closed) if libuv refuses.
 * raft frees the stream with raft_free once it closed it. */
static uv_stream_t *tr_stream(struct tr_impl *impl, int fd)
{
    bool tcp = impl->hub->secret == NULL;
    void *h = raft_malloc(tcp ? sizeof(uv_tcp_t) : sizeof(uv_pipe_t));
    if (!h) {
        close(fd);
        return NULL;
    }
    int rc = tcp ? uv_tcp_init(impl->loop, h) : uv_pipe_init(impl->loop, h, 0);
    if (rc != 0) {
        raft_free(h);
        close(fd);
        return NULL;
    }
    rc = tcp ? uv_tcp_open(h, fd) : uv_pipe_open(h, fd);
    if (rc != 0) {
        close(fd);
        uv_close(h, (uv_close_cb)raft_free);
        return NULL;
    }
    return h;
}

static void tr_async_cb(uv_async_t *a)
{
    struct tr_impl *impl = a->data;
    struct tr_hub *h = impl->hub;
    pthread_mutex_lock(&h->mu);
    struct tr_item *list = h->head;
    h->head = NULL;
    h->tail = &h->head;
    pthread_mutex_unlock(&h->mu);
    while (list) {
        struct tr_item *it = list;
        list = it->next;
        uv_stream_t *p = it->fd >= 0 ? tr_stream(impl, it->fd) : NULL;
        if (it->kind == TR_ACCEPTED) {
            if (p)
                impl->accept_cb(impl->t, it->id, it->address, p);
        } else {
            struct tr_pending **pp = &impl->pending;
            while (*pp && *pp != it->pending)
                pp = &(*pp)->next;
            assert(*pp); /* a pending one leaves the list only here or in close */
            struct tr_pending *pend = *pp;
            *pp = pend->next;
            pend->cb(pend->req, p, p ? 0 : RAFT_NOCONNECTION);
            free(pend);
        }
        free(it);
    }
}

static int tr_init(struct raft_uv_transport *t, raft_id id, const char *address)
{
    struct tr_impl *impl = t->impl;
    if (strlen(address) >= sizeof impl->address)
        return RAFT_NAMETOOLONG;
    impl->id = id;
    snprintf(impl->address, sizeof impl->address, "%s", address);
    return 0;
}

static int tr_listen(struct raft_uv_transport *t, raft_uv_accept_cb cb)
{
    struct tr_impl *impl = t->impl;
    struct addrinfo *res = NULL;
    int grc = tr_resolve(impl->bind, true, &res);
    if (grc != 0) {
        snprintf(t->errmsg, sizeof t->errmsg, "resolve %.200s: %s", impl->bind, gai_strerror(grc));
        return RAFT_IOERR;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1, zero = 0;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd >= 0 && res->ai_family == AF_INET6) /* "::" takes IPv4 too, as the file server does */
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 128) < 0) {
        snprintf(t->errmsg, sizeof t->errmsg, "listen on %.200s: %s", impl->bind, strerror(errno));
        log_error("raft port: cannot listen on %s: %s", impl->bind, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        return RAFT_IOERR;
    }
    freeaddrinfo(res);
    impl->listen_fd = fd;
    impl->accept_cb = cb;
    if (pthread_create(&impl->listener, NULL, tr_listen_main, impl) != 0) {
        close(fd);
        impl->listen_fd = -1;
        return RAFT_NOMEM;
    }
    impl->listening = true;
    if (strcmp(impl->bind, impl->address) != 0)
        log_info("raft port %s, known as %s: %s", impl->bind, impl->address,
                 impl->hub->secret ? "TLS, cluster certificate" : "plain TCP");
    else
        log_info("raft port %s: %s", impl->address, impl->hub->secret ? "TLS, cluster certificate" : "plain TCP");
    return 0;
}

static int tr_connect(struct raft_uv_transport *t, struct raft_uv_connect *req, raft_id id, const char *address,
                      raft_uv_connect_cb cb)
{
    struct tr_impl *impl = t->impl;
    (void)id;
    if (strlen(address) >= TR_ADDR_MAX)
        return RAFT_NAMETOOLONG;
    struct tr_pending *pend = calloc(1, sizeof *pend);
    struct tr_conn *c = calloc(1, sizeof *c);
    int slot = pend && c ? tr_hub_enter(impl->hub, -1) : -1;
    if (slot < 0) {
        free(pend);
        free(c);
        return RAFT_NOCONNECTION;
    }
    pend->req = req;
    pend->cb = cb;
    c->hub = impl->hub;
    c->slot = slot;
    c->fd = -1;
    c->pending = pend;
    c->self_id = impl->id;
    snprintf(c->peer, sizeof c->peer, "%s", address);
    snprintf(c->self_addr, sizeof c->self_addr, "%s", impl->address);
    if (tr_spawn(c) < 0) {
        tr_hub_leave(impl->hub, slot);
        free(pend);
        free(c);
        return RAFT_NOMEM;
    }
    pend->next = impl->pending;
    impl->pending = pend;
    return 0;
}

static void tr_async_closed(uv_handle_t *h)
{
    struct tr_impl *impl = h->data;
    impl->async_closed = true;
    if (impl->close_cb)
        impl->close_cb(impl->t);
}

/* The last of the transport: once no thread uses the secret any more (or a
 * bounded wait is over), the hub loses the transport's reference. */
static void tr_free(struct tr_impl *impl)
{
    struct tr_hub *h = impl->hub;
    struct timespec ts;
    nsync_deadline(&ts, (uint64_t)TR_CLOSE_WAIT_MS * 1000);
    bool freed;
    pthread_mutex_lock(&h->mu);
    while (h->threads > 0 && pthread_cond_timedwait(&h->idle, &h->mu, &ts) == 0)
        ;
    if (h->threads > 0)
        log_warn("raft port: %u connection threads still running at close", h->threads);
    tr_hub_unref_locked(h, &freed);
    pthread_mutex_unlock(&h->mu);
    if (freed)
        tr_hub_free(h);
    free(impl);
}

static void tr_async_closed_free(uv_handle_t *h)
{
    tr_free(h->data);
}

/* No more accepts, posts or connects; every thread woken; raft's pending
 * connects canceled. */
static void tr_shutdown(struct tr_impl *impl)
{
    if (impl->listening) {
        shutdown(impl->listen_fd, SHUT_RDWR);
        pthread_join(impl->listener, NULL);
        impl->listening = false;
    }
    if (impl->listen_fd >= 0)
        close(impl->listen_fd);
    impl->listen_fd = -1;
    struct tr_hub *h = impl->hub;
    pthread_mutex_lock(&h->mu);
    h->closed = true;
    /* Wake every thread: a handshake in progress ends now, a pump sees EOF. */
    for (int i = 0; i < TR_MAX_CONNS; i++)
        if (h->fds[i] >= 0)
            shutdown(h->fds[i], SHUT_RDWR);
    struct tr_item *list = h->head;
    h->head = NULL;
    h->tail = &h->head;
    pthread_mutex_unlock(&h->mu);
    while (list) {
        struct tr_item *it = list;
        list = it->next;
        if (it->fd >= 0)
            close(it->fd);
        free(it);
    }
    while (impl->pending) {
        struct tr_pending *pend = impl->pending;
        impl->pending = pend->next;
        pend->cb(pend->req, NULL, RAFT_CANCELED);
        free(pend);
    }
}

static void tr_close(struct raft_uv_transport *t, raft_uv_transport_close_cb cb)
{
    struct tr_impl *impl = t->impl;
    impl->close_cb = cb;
    tr_shutdown(impl);
    uv_close((uv_handle_t *)&impl->async, tr_async_closed);
}

int transport_init(struct raft_uv_transport *t, uv_loop_t *loop, const struct secret *s, const char *bind)
{
    if (strlen(bind) >= TR_ADDR_MAX)
        return RAFT_NAMETOOLONG;
    struct tr_impl *impl = calloc(1, sizeof *impl);
    struct tr_hub *h = calloc(1, sizeof *h);
    if (!impl || !h) {
        free(impl);
        free(h);
        return RAFT_NOMEM;
    }
    pthread_mutex_init(&h->mu, NULL);
    nsync_cond_init_mono(&h->idle);
    h->refs = 1;
    h->tail = &h->head;
    for (int i = 0; i < TR_MAX_CONNS; i++)
        h->fds[i] = -2;
    h->secret = s;
    h->async = &impl->async;
    impl->loop = loop;
    snprintf(impl->bind, sizeof impl->bind, "%s", bind);
    impl->hub = h;
    impl->listen_fd = -1;
    impl->t = t;
    if (uv_async_init(loop, &impl->async, tr_async_cb) != 0) {
        pthread_mutex_destroy(&h->mu);
        pthread_cond_destroy(&h->idle);
        free(h);
        free(impl);
        return RAFT_NOMEM;
    }
    impl->async.data = impl;
    memset(t, 0, sizeof *t);
    t->impl = impl;
    t->init = tr_init;
    t->listen = tr_listen;
    t->connect = tr_connect;
    t->close = tr_close;
    return 0;
}

void transport_close(struct raft_uv_transport *t)
{
    struct tr_impl *impl = t->impl;
    t->impl = NULL;
    if (impl->async_closed) {
        tr_free(impl);
        return;
    }
    /* raft never closed us (its start failed): the caller runs the loop on. */
    tr_shutdown(impl);
    uv_close((uv_handle_t *)&impl->async, tr_async_closed_free);
}
