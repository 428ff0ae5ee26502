/* The peer client (see peer.h) over libcurl: POST /v1/propose-batch, GET
 * /v1/status, POST /v1/join and /v1/leave. Easy handles are pooled so that
 * consecutive proposals reuse the keep-alive connection to the leader. */
#include "cluster/peer.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "cluster/answer.h"
#include "cluster/cluster.h"
#include "common/log.h"
#include "common/secret.h"
#include "nsync.h"

#define PEER_POOL_MAX 16
#define PEER_REPLY_MAX (256 * 1024) /* a batch answer: ~60 bytes per command */

struct cluster_peer {
    struct nsync *ns;
    pthread_mutex_t mu;
    CURL *pool[PEER_POOL_MAX];   /* idle handles (their connections stay open) */
    size_t n_pool;
    struct curl_slist *headers;  /* read-only once built: shared by every handle */
    struct curl_slist *json_headers;
    char source[NSYNC_HOST_MAX + 8]; /* CURLOPT_INTERFACE "host!ADDR", or "" */
};

struct peer_buf {
    char data[PEER_REPLY_MAX + 1];
    size_t len;
    bool overflow;
};

int cluster_peer_new(struct nsync *ns, struct cluster_peer **out)
{
    struct cluster_peer *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->ns = ns;
    /* From the address the leader knows us by: it checks a forwarded
     * request's source (transfer/sender.c), and with a wildcard --host or
     * several addresses the kernel may pick another one. */
    if (ns->cfg.source[0])
        snprintf(c->source, sizeof c->source, "host!%s", ns->cfg.source);
    if (pthread_mutex_init(&c->mu, NULL) != 0) {
        free(c);
        return -ENOMEM;
    }
    /* Who we are, for the leader's sender check (transfer/sender.h). */
    char me[64];
    snprintf(me, sizeof me, "X-Nsync-Node: %" PRIu64, ns->self_id);
    struct curl_slist *h0 = curl_slist_append(NULL, me);
    struct curl_slist *h = h0 ? curl_slist_append(h0, "Content-Type: application/octet-stream") : NULL;
    struct curl_slist *h2 = h ? curl_slist_append(h, "Expect:") : NULL; /* no 100-continue RTT */
    if (!h2) {
        curl_slist_free_all(h ? h : h0);
        pthread_mutex_destroy(&c->mu);
        free(c);
        return -ENOMEM;
    }
    c->headers = h2;
    struct curl_slist *j0 = curl_slist_append(NULL, me);
    struct curl_slist *j = j0 ? curl_slist_append(j0, "Content-Type: application/json") : NULL;
    struct curl_slist *j2 = j ? curl_slist_append(j, "Expect:") : NULL;
    if (!j2) {
        curl_slist_free_all(j ? j : j0);
        curl_slist_free_all(h2);
        pthread_mutex_destroy(&c->mu);
        free(c);
        return -ENOMEM;
    }
    c->json_headers = j2;
    *out = c;
    return 0;
}

void cluster_peer_free(struct cluster_peer *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n_pool; i++)
        curl_easy_cleanup(c->pool[i]);
    curl_slist_free_all(c->headers);
    curl_slist_free_all(c->json_headers);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static CURL *cluster_peer_get(struct cluster_peer *c)
{
    CURL *h = NULL;
    pthread_mutex_lock(&c->mu);
    if (c->n_pool > 0)
        h = c->pool[--c->n_pool];
    pthread_mutex_unlock(&c->mu);
    return h ? h : curl_easy_init();
}

static void cluster_peer_put(struct cluster_peer *c, CURL *h)
{
    pthread_mutex_lock(&c->mu);
    if (c->n_pool < PEER_POOL_MAX) {
        c->pool[c->n_pool++] = h;
        h = NULL;
    }
    pthread_mutex_unlock(&c->mu);
    if (h)
        curl_easy_cleanup(h);
}

static size_t cluster_peer_write(char *ptr, size_t size, size_t nmemb, void *arg)
{
    struct peer_buf *b = arg;
    size_t n = size * nmemb;
    if (b->len + n > PEER_REPLY_MAX) {
        b->overflow = true;
        return 0; /* aborts the transfer: nothing legitimate is that big */
    }
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    return n;
}

/* One HTTP request on a pooled handle. body NULL means GET. On 0, *code is
 * the HTTP status and b holds the answer; else -ETIMEDOUT, -EHOSTUNREACH,
 * -EPROTO (answer too big) or -ENOMEM. */
static int cluster_peer_call(struct cluster_peer *c, const char *faddr, const char *path,
                            const void *body, size_t len, bool json, unsigned timeout_ms,
                            struct peer_buf *b, long *code)
{
    char url[NSYNC_ADDR_MAX + 64];
    if (!faddr || !*faddr || strlen(faddr) >= NSYNC_ADDR_MAX)
        return -EHOSTUNREACH;
    snprintf(url, sizeof url, "%s://%s%s", secret_scheme(c->ns->cfg.secret), faddr, path);
    CURL *h = cluster_peer_get(c);
    if (!h)
        return -ENOMEM;
    b->len = 0;
    b->overflow = false;

    /* reset keeps the live connections, only forgets the previous options */
    curl_easy_reset(h);
    if (secret_curl_setup(c->ns->cfg.secret, h) < 0) {
        curl_easy_cleanup(h);
        return -ENOMEM;
    }
    long tmo = timeout_ms ? (long)timeout_ms : 1;
    if (c->source[0])
        curl_easy_setopt(h, CURLOPT_INTERFACE, c->source);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(h, CURLOPT_PROXY, "");
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, tmo);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, tmo < 1000 ? tmo : 1000L);
    if (body) {
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, json ? c->json_headers : c->headers);
    }
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, cluster_peer_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, b);

    CURLcode cc = curl_easy_perform(h);
    *code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, code);
    cluster_peer_put(c, h);
    if (cc == CURLE_OK)
        return 0;
    log_debug("request %s: %s", url, curl_easy_strerror(cc));
    if (cc == CURLE_OPERATION_TIMEDOUT)
        return -ETIMEDOUT;
    if (cc == CURLE_WRITE_ERROR && b->overflow)
        return -EPROTO;
    return -EHOSTUNREACH;
}

int cluster_peer_propose_batch(struct cluster_peer *c, const char *faddr, struct cluster_item *items,
                              size_t n, unsigned timeout_ms)
{
    size_t len = 4;
    for (size_t i = 0; i < n; i++)
        len += 4 + items[i].len;
    unsigned char *body = malloc(len);
    struct peer_buf *b = body ? malloc(sizeof *b) : NULL;
    if (!b) {
        free(body);
        return -ENOMEM;
    }
    size_t off = 0;
    for (size_t i = 0; i <= n; i++) {
        uint32_t w = i == 0 ? (uint32_t)n : (uint32_t)items[i - 1].len;
        for (int k = 0; k < 4; k++)
            body[off++] = (unsigned char)(w >> (8 * k));
        if (i > 0) {
            memcpy(body + off, items[i - 1].buf, items[i - 1].len);
            off += items[i - 1].len;
        }
    }
    long code;
    int rc = cluster_peer_call(c, faddr, "/v1/propose-batch", body, len, false, timeout_ms, b, &code);
    free(body);
    if (rc == 0) {
        switch (code) {
        case 200: rc = 0; break;
        case 421: rc = -ENOTCONN; break;
        case 503: rc = -EROFS; break;
        case 400:
        case 413: rc = -EINVAL; break;
        default: rc = -EPROTO; break;
        }
    }
    if (rc == 0)
        rc = answer_decode(b->data, b->len, items, n);
    if (rc == -EPROTO || rc == -EINVAL)
        log_warn("propose batch to %s: unexpected answer (HTTP %ld, %zu bytes)", faddr, code, b->len);
    free(b);
    return rc;
}

int cluster_peer_status(struct cluster_peer *c, const char *faddr, unsigned timeout_ms, struct cJSON **json)
{
    struct peer_buf *b = malloc(sizeof *b);
    if (!b)
        return -ENOMEM;
    long code;
    int rc = cluster_peer_call(c, faddr, "/v1/status", NULL, 0, false, timeout_ms, b, &code);
    if (rc == 0 && code != 200)
        rc = -EPROTO;
    if (rc == 0) {
        *json = cJSON_ParseWithLength(b->data, b->len);
        if (!*json || !cJSON_IsObject(*json)) {
            cJSON_Delete(*json);
            *json = NULL;
            rc = -EPROTO;
        }
    }
    free(b);
    return rc;
}

int cluster_peer_membership(struct cluster_peer *c, const char *faddr, bool join, uint64_t id,
                           const char *caddr, const char *my_faddr, unsigned timeout_ms)
{
    char idbuf[NSYNC_ID_STRLEN];
    nsync_id_str(id, idbuf);
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddStringToObject(o, "id", idbuf) ||
        (join && (!cJSON_AddStringToObject(o, "caddr", caddr) ||
                  !cJSON_AddStringToObject(o, "faddr", my_faddr)))) {
        cJSON_Delete(o);
        return -ENOMEM;
    }
    char *body = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    struct peer_buf *b = body ? malloc(sizeof *b) : NULL;
    if (!b) {
        free(body);
        return -ENOMEM;
    }
    long code;
    int rc = cluster_peer_call(c, faddr, join ? "/v1/join" : "/v1/leave", body, strlen(body), true,
                              timeout_ms, b, &code);
    if (rc == 0) {
        switch (code) {
        case 200: rc = 0; break;
        case 421: rc = -ENOTCONN; break;
        case 409: rc = -EBUSY; break;
        case 503: rc = -EROFS; break;
        case 400: rc = -EINVAL; break;
        default: rc = -EPROTO; break;
        }
    }
    free(b);
    free(body);
    return rc;
}
