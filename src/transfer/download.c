/* Fetching a file's bytes over HTTP from a node that has them: which holder
 * to ask first, per-peer back-off, and the curl transfer streamed into
 * staging with its size and XXH3-128 checked on the way. */
#include <assert.h>

#include "transfer/fetch_int.h"

#include "common/secret.h"

static bool xfer_peer_usable(struct xfer_fetcher *f, uint64_t id, uint64_t now)
{
    bool ok = true;
    pthread_mutex_lock(&f->peer_mu);
    for (size_t i = 0; i < f->n_peers; i++)
        if (f->peers[i].id == id)
            ok = f->peers[i].until_ms <= now;
    pthread_mutex_unlock(&f->peer_mu);
    return ok;
}

static void xfer_peer_result(struct xfer_fetcher *f, uint64_t id, bool ok)
{
    pthread_mutex_lock(&f->peer_mu);
    struct xfer_peer_state *p = NULL;
    for (size_t i = 0; i < f->n_peers; i++)
        if (f->peers[i].id == id)
            p = &f->peers[i];
    if (!p && !ok) {
        /* Forget the oldest slot if full: it is only a hint. */
        size_t slot = f->n_peers < XFER_PEER_MAX ? f->n_peers++ : 0;
        p = &f->peers[slot];
        p->id = id;
        p->fails = 0;
    }
    if (p) {
        if (ok) {
            p->fails = 0;
            p->until_ms = 0;
        } else {
            unsigned shift = p->fails < 6 ? p->fails : 6;
            p->fails++;
            p->until_ms = nsync_mono_ms() + (250u << shift); /* 250 ms .. 16 s */
        }
    }
    pthread_mutex_unlock(&f->peer_mu);
}

/* File-server address of a node: the catalog's member table, else the
 * --cluster list. */
static int xfer_peer_addr(struct xfer_fetcher *f, uint64_t id, char *out, size_t outsz)
{
    struct nsync *ns = f->ns;
    out[0] = '\0';
    pthread_rwlock_rdlock(&ns->fsm_lock);
    const struct fsm_member *m = fsm_member_get(ns->fsm, id);
    if (m && m->faddr[0])
        snprintf(out, outsz, "%s", m->faddr);
    pthread_rwlock_unlock(&ns->fsm_lock);
    if (out[0])
        return 0;
    const struct nsync_peer *p = nsync_peer_by_id(ns, id);
    if (!p)
        return -ENOENT;
    return addr_format(out, outsz, p->host, p->fport) < 0 ? -ENAMETOOLONG : 0;
}

static size_t xfer_sink_write(char *ptr, size_t size, size_t nmemb, void *arg)
{
    struct xfer_sink *s = arg;
    size_t n = size * nmemb;
    if (!s->code_checked) {
        long code = 0;
        curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, &code);
        s->code_checked = code == 200 ? 1 : -1;
    }
    if (s->code_checked < 0) {
        s->drained += n; /* an error text: drop it, keep the connection */
        return s->drained > XFER_ERRBODY_MAX ? 0 : n;
    }
    if (s->off + n > s->limit) {
        s->err = EPROTO;
        return 0;
    }
    size_t done = 0;
    while (done < n) {
        ssize_t w = pwrite(s->fd, ptr + done, n - done, (off_t)(s->off + done));
        if (w < 0) {
            if (errno == EINTR)
                continue;
            s->err = errno;
            return 0;
        }
        done += (size_t)w;
    }
    XXH3_128bits_update(s->xxh, ptr, n);
    s->off += n;
    atomic_fetch_add(&s->f->st_bytes, n);
    return n;
}

static int xfer_sink_progress(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut,
                              curl_off_t un)
{
    struct xfer_fetcher *f = arg;
    return xfer_stopping(f) ? 1 : 0; /* abort long transfers at shutdown */
}

char *xfer_file_url(struct xfer_worker *w, const struct xfer_item *it, const char *faddr,
                    const char *extra)
{
    char *esc = curl_easy_escape(w->curl, it->path, 0);
    if (!esc)
        return NULL;
    size_t ulen = strlen(faddr) + strlen(esc) + strlen(extra) + 64 + DIGEST_HEX_LEN;
    char *url = malloc(ulen);
    if (url) {
        /* The hash lets a holder that has moved on to a metadata-only change
         * of the file (a chmod or utimens right after the write) serve the
         * same bytes instead of refusing the older version. */
        char hex[DIGEST_HEX_LEN];
        digest_to_hex(it->hash, hex);
        snprintf(url, ulen, "%s://%s/v1/file?path=%s&version=%" PRIu64 "&hash=%s%s",
                 secret_scheme(w->f->ns->cfg.secret), faddr, esc, it->version, hex, extra);
    }
    curl_free(esc);
    return url;
}

CURLcode xfer_http_get(struct xfer_worker *w, const char *url, bool big, curl_write_callback cb,
                       void *arg, curl_write_callback hcb, long *code)
{
    struct xfer_fetcher *f = w->f;
    CURL *h = w->curl;
    *code = 0;
    curl_easy_reset(h); /* keeps the cached connections */
    if (secret_curl_setup(f->ns->cfg.secret, h) < 0)
        return CURLE_OUT_OF_MEMORY;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(h, CURLOPT_PROXY, "");
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 1000L);
    /* Receiving a big file is CPU-bound (recv copy, page-cache copy, hash);
     * 16 KiB at a time adds a recv(), a pwrite() and a window update per
     * 16 KiB. With 1 MiB, a node receiving 1 GiB used ~1.8 instead of
     * ~2.6 s of CPU (2-core loopback cluster); on a shared disk the fsync
     * then waits longer, so the end-to-end gain there is small. One buffer
     * per handle: 5 MiB per node at most. Only for big files: the option
     * allocates the buffer anew on every transfer (the reset above drops
     * it), which for a 4 KiB file costs more than the transfer. */
    if (big)
        curl_easy_setopt(h, CURLOPT_BUFFERSIZE, (long)XFER_RECV_BUF);
    /* No total timeout: a big file may take long; a stalled one may not. */
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, 10L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, cb);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, arg);
    if (hcb) {
        curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, hcb);
        curl_easy_setopt(h, CURLOPT_HEADERDATA, arg);
    }
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, xfer_sink_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, f);
    CURLcode cc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, code);
    return cc;
}

/* One GET from one holder into fd. 0 when fd holds exactly the item's bytes;
 * -EAGAIN to try another holder (peer failure marked); XFER_BUSY when
 * stopping; other -errno for a local failure that no holder can fix. */
static int xfer_get_from(struct xfer_worker *w, struct xfer_item *it, uint64_t holder,
                         const char *faddr, int fd)
{
    struct xfer_fetcher *f = w->f;
    char *url = xfer_file_url(w, it, faddr, "");
    if (!url)
        return -ENOMEM;
    if (ftruncate(fd, 0) < 0) {
        free(url);
        return -errno;
    }
    struct xfer_sink s = {
        .f = f, .curl = w->curl, .xxh = w->xxh, .fd = fd, .limit = it->size,
    };
    XXH3_128bits_reset(w->xxh);
    long code = 0;
    CURLcode cc = xfer_http_get(w, url, it->size >= XFER_BIG_FILE, xfer_sink_write, &s, NULL, &code);
    free(url);
    if (cc == CURLE_OUT_OF_MEMORY && !s.code_checked)
        return -ENOMEM;

    if (cc == CURLE_ABORTED_BY_CALLBACK)
        return XFER_BUSY;
    if (s.err && s.err != EPROTO) {
        xfer_fail(it, -s.err, "writing staging file: %s", strerror(s.err));
        return -s.err;
    }
    if (cc != CURLE_OK && s.code_checked >= 0 && !s.err) {
        /* The peer is down or stalled: back off from it, try the next. */
        xfer_peer_result(f, holder, false);
        xfer_fail(it, -EHOSTUNREACH, "from %s: %s", faddr, curl_easy_strerror(cc));
        return -EAGAIN;
    }
    xfer_peer_result(f, holder, true);
    if (code != 200) {
        xfer_fail(it, -EAGAIN, "from %s: HTTP %ld", faddr, code);
        return -EAGAIN;
    }
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits_digest(w->xxh));
    if (s.err == EPROTO || s.off != it->size || memcmp(c.digest, it->hash, DIGEST_LEN) != 0) {
        xfer_fail(it, -EBADMSG, "from %s: got %" PRIu64 " bytes not matching size %" PRIu64
                  " / hash", faddr, s.off, it->size);
        return -EAGAIN;
    }
    return 0;
}

/* Fill fd from some holder: the origin first (it surely had it), then the
 * others starting at a version-dependent offset to spread the load. */
int xfer_download(struct xfer_worker *w, struct xfer_item *it, int fd)
{
    struct xfer_fetcher *f = w->f;
    uint64_t self = f->ns->self_id;
    uint64_t *order = malloc((it->n_synced + 1) * sizeof *order);
    size_t n = 0;
    if (!order) {
        xfer_fail(it, -ENOMEM, "out of memory");
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < it->n_synced; i++)
        if (it->synced[i] == it->origin && it->origin != self)
            order[n++] = it->origin;
    for (uint32_t k = 0; k < it->n_synced; k++) {
        uint64_t id = it->synced[(k + it->version) % it->n_synced];
        if (id != self && id != it->origin)
            order[n++] = id;
    }
    uint64_t now = nsync_mono_ms();
    bool tried = false;
    int rc = -EAGAIN;
    for (size_t i = 0; i < n && rc == -EAGAIN; i++) {
        if (xfer_stopping(f)) {
            rc = XFER_BUSY;
            break;
        }
        if (!xfer_peer_usable(f, order[i], now))
            continue;
        char faddr[FSM_ADDR_MAX + 8];
        if (xfer_peer_addr(f, order[i], faddr, sizeof faddr) < 0)
            continue;
        tried = true;
        /* Only what this node lacks first (holes and unchanged blocks
         * stay), the whole file when that is the better way. */
        rc = xfer_parts_from(w, it, faddr, fd);
        if (rc == -EHOSTUNREACH) {
            xfer_peer_result(f, order[i], false);
            rc = -EAGAIN;
        } else if (rc == -ENOTSUP) {
            rc = xfer_get_from(w, it, order[i], faddr, fd);
        }
    }
    free(order);
    if (rc == -EAGAIN && !tried)
        xfer_fail(it, -EAGAIN, "no reachable node holds version %" PRIu64, it->version);
    return rc;
}
