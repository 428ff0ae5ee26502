/* The node's HTTP server (libmicrohttpd, one thread per connection): serves
 * file versions to fetching peers straight from BACKING (sendfile), reports
 * status as JSON, and accepts proposals forwarded by followers. Every input is
 * treated as hostile: a bad request gets a short 4xx and nothing else. */
#include "transfer/server.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/openat2.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <microhttpd.h>

#include "cluster/cluster.h"
#include "cluster/fsm.h"
#include "common/digest.h"
#include "common/log.h"
#include "common/path.h"
#include "common/secret.h"
#include "nsync.h"
#include "transfer/batch.h"
#include "transfer/fetch.h"
#include "transfer/metrics_page.h"
#include "transfer/guard.h"
#include "transfer/sender.h"
#include "transfer/serve_part.h"

#define XFER_MAX_BODY (1024 * 1024)      /* largest encoded command we accept */
#define XFER_CONN_LIMIT 256              /* one thread each: bound them */
#define XFER_CONN_TIMEOUT_S 60           /* a stalled answer (guard.c bounds the rest) */
/* One client address may hold this many: a peer needs ~10 (its fetch
 * workers and its forwarding pool), so one hostile host leaves the other
 * three quarters of the slots to the cluster. */
#define XFER_PER_IP_LIMIT 64
#define XFER_CATCH_UP_WAIT_MS 500        /* how long a file request waits for our catalog */

struct xfer_server {
    struct nsync *ns;
    struct MHD_Daemon *daemon;
    struct xfer_guard *guard;
};

/* Per-request state, created on the first call of a request and freed by the
 * completion callback whatever happened to the connection. */
struct xfer_req {
    bool is_post;
    bool member;       /* the client proved it holds the cluster secret */
    bool too_big;
    char *body;
    size_t len, cap;
};

static void xfer_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char buf[512];
    vsnprintf(buf, sizeof buf, fmt, ap);
    size_t n = strlen(buf);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    log_warn("http server: %s", buf);
}


static enum MHD_Result xfer_reply_text(struct MHD_Connection *conn, unsigned code, const char *msg)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(msg), (void *)msg, MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain");
    if (code == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW,
                                strcmp(msg, "use POST\n") == 0 ? "POST" : "GET, HEAD");
    enum MHD_Result ret = MHD_queue_response(conn, code, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result xfer_reply_json(struct MHD_Connection *conn, cJSON *obj)
{
    char *txt = obj ? cJSON_PrintUnformatted(obj) : NULL;
    cJSON_Delete(obj);
    if (!txt)
        return xfer_reply_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(txt), txt, MHD_RESPMEM_MUST_COPY);
    cJSON_free(txt);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    enum MHD_Result ret = MHD_queue_response(conn, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

#define XFER_TLS_BLOCK (64 * 1024)

static ssize_t xfer_read_fd(void *cls, uint64_t pos, char *buf, size_t max)
{
    ssize_t n = pread((int)(intptr_t)cls, buf, max, (off_t)pos);
    /* A file that shrank under us ends the answer; the fetcher's size and
     * hash checks refuse what it got. */
    return n > 0 ? n : MHD_CONTENT_READER_END_WITH_ERROR;
}

static void xfer_close_fd(void *cls)
{
    close((int)(intptr_t)cls);
}

/* A query argument as a C string, or NULL if absent or unsafe: MHD decodes
 * %00 into the value, so a length that disagrees with strlen means an embedded
 * NUL; control characters are never part of a legitimate path or number. */
static const char *xfer_arg(struct MHD_Connection *conn, const char *key)
{
    const char *val = NULL;
    size_t vlen = 0;
    if (MHD_lookup_connection_value_n(conn, MHD_GET_ARGUMENT_KIND, key, strlen(key), &val,
                                      &vlen) != MHD_YES ||
        !val)
        return NULL;
    if (strlen(val) != vlen)
        return NULL;
    for (const unsigned char *p = (const unsigned char *)val; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return NULL;
    return val;
}

/* Strict decimal u64: digits only, no sign, no blanks, no overflow. */
static int xfer_parse_u64(const char *s, uint64_t *out)
{
    if (!s || !*s || strlen(s) > 20)
        return -EINVAL;
    uint64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -EINVAL;
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -EINVAL;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}



/* e holds the bytes whose hash the asker named (a later version that only
 * changed the file's metadata). */
static bool same_bytes(const struct fsm_entry *e, const uint8_t want[FSM_HASH_LEN], bool has_want)
{
    return has_want && e->kind == FSM_FILE && memcmp(e->hash, want, FSM_HASH_LEN) == 0;
}

static enum MHD_Result xfer_handle_file(struct nsync *ns, struct MHD_Connection *conn)
{
    const char *path = xfer_arg(conn, "path");
    const char *vstr = xfer_arg(conn, "version");
    uint64_t version;
    if (!path || path_check(path) < 0 || path_is_internal(path))
        return xfer_reply_text(conn, MHD_HTTP_BAD_REQUEST, "bad path\n");
    if (xfer_parse_u64(vstr, &version) < 0)
        return xfer_reply_text(conn, MHD_HTTP_BAD_REQUEST, "bad version\n");

    uint8_t hash[FSM_HASH_LEN];
    uint64_t size = 0;
    int verdict = 0; /* 0 serve, else an HTTP code */
    /* The asker may have applied version V before this node did (the origin
     * of a change is often a follower): wait a moment for our own catalog to
     * reach V rather than send the asker into a retry. */
    /* A newer version with the same bytes (only its metadata changed) will
     * do: the asker checks the hash anyway. */
    uint8_t want[FSM_HASH_LEN];
    const char *hstr = xfer_arg(conn, "hash");
    bool has_want = hstr && digest_from_hex(hstr, want) == 0;
    uint64_t seen = 0, waited_from = nsync_mono_ms();
    for (;;) {
        bool behind = false;
        pthread_rwlock_rdlock(&ns->fsm_lock);
        const struct fsm_entry *e = fsm_get(ns->fsm, path);
        behind = fsm_version(ns->fsm) < version;
        if (!e)
            verdict = MHD_HTTP_NOT_FOUND;
        else if (e->kind != FSM_FILE || (e->version != version && !same_bytes(e, want, has_want)) ||
                 !(!e->pending || fsm_entry_has(e, ns->self_id)))
            verdict = MHD_HTTP_CONFLICT;
        else {
            verdict = 0;
            memcpy(hash, e->hash, sizeof hash);
            size = e->size;
        }
        pthread_rwlock_unlock(&ns->fsm_lock);
        uint64_t spent = nsync_mono_ms() - waited_from;
        if (verdict == 0 || !behind || !ns->cluster || spent >= XFER_CATCH_UP_WAIT_MS)
            break;
        cluster_wait_change(ns->cluster, &seen, (unsigned)(XFER_CATCH_UP_WAIT_MS - spent));
    }
    if (verdict == MHD_HTTP_NOT_FOUND)
        return xfer_reply_text(conn, verdict, "no such path\n");
    if (verdict)
        return xfer_reply_text(conn, verdict, "version not here\n");
    /* No refusal while a local writer holds the path: right after an
     * announce the writer's handle is still closing, and refusing then costs
     * every peer a retry. Bytes that moved on fail the fetcher's hash check. */

    /* O_NONBLOCK: if a fifo took the file's place meanwhile, the open must
     * not wait for a writer (S_ISREG refuses it below). */
    int fd = path_open_noatime(ns->backing_fd, path, O_RDONLY | O_NONBLOCK, true);
    if (fd < 0) {
        int err = errno;
        if (err == ENOENT || err == ENOTDIR || err == ELOOP || err == EXDEV)
            return xfer_reply_text(conn, MHD_HTTP_CONFLICT, "version not here\n");
        log_warn("serving %s: open: %s", path, strerror(err));
        return xfer_reply_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "cannot open\n");
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size != size) {
        close(fd);
        return xfer_reply_text(conn, MHD_HTTP_CONFLICT, "version not here\n");
    }
    /* Part of the file: its map, or some of its ranges (serve_part.h). */
    const char *map = xfer_arg(conn, "map"), *ranges = map ? NULL : xfer_arg(conn, "ranges");
    uint64_t sent = (uint64_t)st.st_size;
    struct MHD_Response *r = NULL;
    if (map || ranges) {
        const char *err = NULL;
        r = xfer_part_response(fd, sent, map, ranges, ns->cfg.secret != NULL, &sent, &err);
        if (!r)
            return err ? xfer_reply_text(conn, MHD_HTTP_BAD_REQUEST, err)
                       : xfer_reply_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    }
    /* Over TLS there is no sendfile, and libmicrohttpd would read an fd
     * response 4 KiB at a time, one TLS record and one send each: reading
     * XFER_TLS_BLOCK at a time fills whole records. */
    if (!r)
        r = ns->cfg.secret ? MHD_create_response_from_callback((uint64_t)st.st_size, XFER_TLS_BLOCK,
                                                               xfer_read_fd, (void *)(intptr_t)fd,
                                                               xfer_close_fd)
                           : MHD_create_response_from_fd64((uint64_t)st.st_size, fd);
    else
        MHD_add_response_header(r, "X-Nsync-Part", map ? map : "ranges");
    if (!r) {
        close(fd);
        return xfer_reply_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    }
    char hex[DIGEST_HEX_LEN], vbuf[24];
    digest_to_hex(hash, hex);
    snprintf(vbuf, sizeof vbuf, "%" PRIu64, version);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/octet-stream");
    MHD_add_response_header(r, "X-Nsync-Hash", hex);
    MHD_add_response_header(r, "X-Nsync-Version", vbuf);
    enum MHD_Result ret = MHD_queue_response(conn, MHD_HTTP_OK, r);
    MHD_destroy_response(r); /* closes fd once the transfer is done */
    if (ret == MHD_YES) {
        atomic_fetch_add(&ns->metrics.served_bytes, sent);
        if (!map && !ranges)
            atomic_fetch_add(&ns->metrics.served_files, 1);
    }
    return ret;
}

/* JSON numbers are doubles: 64-bit ids and indexes travel as decimal strings. */
static void xfer_json_u64(cJSON *obj, const char *key, uint64_t v)
{
    char buf[24];
    snprintf(buf, sizeof buf, "%" PRIu64, v);
    cJSON_AddStringToObject(obj, key, buf);
}

struct xfer_lack {
    uint64_t self, entries, bytes;
};

static int xfer_count_lack(const struct fsm_entry *e, void *arg)
{
    struct xfer_lack *l = arg;
    l->entries++;
    if (e->kind == FSM_FILE)
        l->bytes += e->size;
    return 0;
}

static void xfer_json_id(cJSON *obj, const char *key, uint64_t id)
{
    char buf[NSYNC_ID_STRLEN];
    nsync_id_str(id, buf);
    cJSON_AddStringToObject(obj, key, buf);
}

/* The members as this node sees them, with what each still lacks of the
 * catalog (the catalog knows: a member's SYNCED settles its entries). */
static void xfer_status_members(struct nsync *ns, cJSON *o, uint64_t leader, size_t *n_out,
                                size_t *reachable)
{
    cJSON *members = cJSON_AddArrayToObject(o, "members");
    struct cluster_member_view *v = calloc(CLUSTER_MEMBERS_MAX, sizeof *v);
    size_t n = v && ns->cluster ? cluster_get_members(ns->cluster, v, CLUSTER_MEMBERS_MAX) : 0;
    *n_out = n;
    *reachable = 0;
    for (size_t i = 0; members && i < n; i++) {
        cJSON *jm = cJSON_CreateObject();
        if (!jm || !cJSON_AddItemToArray(members, jm)) {
            cJSON_Delete(jm);
            break;
        }
        struct xfer_lack lack = {.self = v[i].id};
        pthread_rwlock_rdlock(&ns->fsm_lock);
        fsm_foreach_pending(ns->fsm, v[i].id, xfer_count_lack, &lack);
        pthread_rwlock_unlock(&ns->fsm_lock);
        *reachable += v[i].reachable;
        xfer_json_id(jm, "id", v[i].id);
        cJSON_AddStringToObject(jm, "caddr", v[i].caddr);
        cJSON_AddStringToObject(jm, "faddr", v[i].faddr);
        cJSON_AddBoolToObject(jm, "self", v[i].self);
        cJSON_AddBoolToObject(jm, "leader", v[i].id == leader);
        cJSON_AddBoolToObject(jm, "reachable", v[i].reachable);
        cJSON_AddNumberToObject(jm, "last_contact_ms", (double)v[i].last_contact_ms);
        xfer_json_u64(jm, "applied", v[i].applied);
        cJSON_AddNumberToObject(jm, "behind_entries", (double)v[i].behind);
        cJSON_AddNumberToObject(jm, "pending_files", (double)lack.entries);
        cJSON_AddNumberToObject(jm, "pending_bytes", (double)lack.bytes);
    }
    free(v);
}

static enum MHD_Result xfer_handle_status(struct nsync *ns, struct MHD_Connection *conn)
{
    struct cluster_status cs = { .state = CLUSTER_UNAVAILABLE };
    if (ns->cluster)
        cluster_get_status(ns->cluster, &cs);
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return xfer_reply_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    xfer_json_id(o, "node", ns->self_id);
    cJSON_AddStringToObject(o, "version", NSYNC_VERSION);
    cJSON_AddStringToObject(o, "host", ns->cfg.host);
    cJSON_AddStringToObject(o, "advertise", ns->cfg.advertise);
    char a[NSYNC_ADDR_MAX];
    addr_format(a, sizeof a, ns->cfg.advertise, ns->cfg.cport);
    cJSON_AddStringToObject(o, "caddr", a);
    addr_format(a, sizeof a, ns->cfg.advertise, ns->cfg.fport);
    cJSON_AddStringToObject(o, "faddr", a);
    cJSON_AddNumberToObject(o, "fport", ns->cfg.fport);
    cJSON_AddNumberToObject(o, "cport", ns->cfg.cport);
    cJSON_AddStringToObject(o, "backing", ns->cfg.backing);
    cJSON_AddStringToObject(o, "mountpoint", ns->cfg.mountpoint);
    cJSON_AddStringToObject(o, "role", cluster_role_name(cs.state));
    xfer_json_id(o, "leader", cs.leader_id);
    xfer_json_u64(o, "term", cs.term);
    xfer_json_u64(o, "applied", cs.last_applied);
    xfer_json_u64(o, "commit", cs.commit_index);
    /* Whether changes are tried, and since when (wall-clock ms) they fail
     * with EROFS for want of a quorum (0: they do not). */
    bool writable = ns->cluster && cluster_writable(ns->cluster) == 0;
    uint64_t noq = ns->cluster ? cluster_no_quorum_since(ns->cluster) : 0;
    cJSON_AddBoolToObject(o, "writable", writable);
    cJSON_AddBoolToObject(o, "leaving", ns->cluster && cluster_is_leaving(ns->cluster));
    xfer_json_u64(o, "no_quorum_since", noq);

    size_t n_members = 0, reachable = 0;
    xfer_status_members(ns, o, cs.leader_id, &n_members, &reachable);
    cJSON *jq = cJSON_AddObjectToObject(o, "quorum");
    if (jq) {
        /* ok: a leader is known and changes are tried; since_ms: when the
         * leader went (wall clock), 0 while ok */
        bool ok = writable && cs.leader_id != 0;
        uint64_t since = ok || !ns->cluster ? 0 : cluster_leaderless_since(ns->cluster);
        cJSON_AddBoolToObject(jq, "ok", ok);
        cJSON_AddNumberToObject(jq, "since_ms", (double)(since ? since : noq));
        cJSON_AddNumberToObject(jq, "voters", cs.voters);
        cJSON_AddNumberToObject(jq, "members", (double)n_members);
        cJSON_AddNumberToObject(jq, "reachable", (double)reachable);
    }

    struct xfer_lack lack = {.self = ns->self_id};
    pthread_rwlock_rdlock(&ns->fsm_lock);
    xfer_json_u64(o, "fsm_version", fsm_version(ns->fsm));
    cJSON_AddNumberToObject(o, "catalog_entries", (double)fsm_entry_count(ns->fsm));
    cJSON_AddNumberToObject(o, "pending_entries", (double)fsm_pending_count(ns->fsm));
    cJSON_AddNumberToObject(o, "catalog_inline_bytes", (double)fsm_inline_bytes(ns->fsm));
    /* Path locks the catalog gives this node (cached ones included). */
    cJSON_AddNumberToObject(o, "locks_held", (double)fsm_locks_of(ns->fsm, ns->self_id));
    fsm_foreach_pending(ns->fsm, ns->self_id, xfer_count_lack, &lack);
    pthread_rwlock_unlock(&ns->fsm_lock);
    /* Catch-up progress (a joining or returning node): what this node still
     * lacks of the catalog, in entries and in bytes of file content, and
     * the spell so far (see struct xfer_catchup). */
    cJSON *jc = cJSON_AddObjectToObject(o, "catchup");
    if (jc) {
        cJSON_AddNumberToObject(jc, "entries", (double)lack.entries);
        cJSON_AddNumberToObject(jc, "bytes", (double)lack.bytes);
        struct xfer_catchup cu = {.percent = 100.0, .eta_s = -1};
        if (ns->fetcher)
            xfer_fetcher_get_catchup(ns->fetcher, &cu);
        cJSON_AddBoolToObject(jc, "active", cu.active);
        cJSON_AddNumberToObject(jc, "since_ms", (double)cu.since_ms);
        cJSON_AddNumberToObject(jc, "files_done", (double)cu.files_done);
        cJSON_AddNumberToObject(jc, "files_total", (double)cu.files_total);
        cJSON_AddNumberToObject(jc, "bytes_done", (double)cu.bytes_done);
        cJSON_AddNumberToObject(jc, "bytes_total", (double)cu.bytes_total);
        cJSON_AddNumberToObject(jc, "percent", cu.percent);
        cJSON_AddNumberToObject(jc, "eta_s", (double)cu.eta_s);
    }

    if (ns->fetcher) {
        struct xfer_fetch_status fst;
        xfer_fetcher_get_status(ns->fetcher, &fst);
        cJSON *jf = cJSON_AddObjectToObject(o, "fetch");
        if (jf) {
            cJSON_AddNumberToObject(jf, "pending", (double)fst.pending);
            cJSON_AddNumberToObject(jf, "installed", (double)fst.installed);
            cJSON_AddNumberToObject(jf, "bytes", (double)fst.bytes);
            cJSON_AddNumberToObject(jf, "map_bytes", (double)fst.map_bytes);
            cJSON_AddNumberToObject(jf, "errors", (double)fst.errors);
            cJSON_AddNumberToObject(jf, "hashed", (double)fst.hashed);
            cJSON_AddNumberToObject(jf, "trusted", (double)fst.trusted);
        }
        /* What this node still lacks: the figure a user asks first. */
        cJSON_AddNumberToObject(o, "pending", (double)fst.pending);
    }
    return xfer_reply_json(conn, o);
}

static enum MHD_Result xfer_handle_metrics(struct nsync *ns, struct MHD_Connection *conn)
{
    char *page = NULL;
    size_t len = 0;
    if (xfer_metrics_page(ns, &page, &len) < 0)
        return xfer_reply_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    struct MHD_Response *r = MHD_create_response_from_buffer(len, page, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(page);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
    enum MHD_Result ret = MHD_queue_response(conn, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result xfer_handle_propose(struct nsync *ns, struct MHD_Connection *conn,
                                           struct xfer_req *rq)
{
    if (rq->too_big)
        return xfer_reply_text(conn, MHD_HTTP_CONTENT_TOO_LARGE, "command too large\n");
    if (rq->len == 0)
        return xfer_reply_text(conn, MHD_HTTP_BAD_REQUEST, "empty command\n");
    if (!ns->cluster)
        return xfer_reply_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "cluster not running\n");
    uint64_t sender;
    if (xfer_sender(ns, conn, NULL, &sender) < 0 || xfer_sender_owns(sender, rq->body, rq->len) < 0)
        return xfer_reply_text(conn, MHD_HTTP_FORBIDDEN, "a command speaks for its sender only\n");
    struct cluster_reply reply;
    memset(&reply, 0, sizeof reply);
    int rc = cluster_submit_encoded(ns->cluster, rq->body, rq->len, ns->cfg.submit_timeout_ms,
                                    &reply);
    switch (rc) {
    case 0: break;
    case -ENOTCONN: return xfer_reply_text(conn, MHD_HTTP_MISDIRECTED_REQUEST, "not the leader\n");
    case -EROFS: return xfer_reply_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "no quorum\n");
    case -EINVAL: return xfer_reply_text(conn, MHD_HTTP_BAD_REQUEST, "malformed command\n");
    default:
        log_warn("forwarded proposal failed: %s", strerror(rc < 0 ? -rc : EIO));
        return xfer_reply_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "proposal failed\n");
    }
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return xfer_reply_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    cJSON_AddNumberToObject(o, "status", reply.status);
    xfer_json_u64(o, "version", reply.version);
    xfer_json_u64(o, "lock_holder", reply.lock_holder);
    xfer_json_u64(o, "path_version", reply.path_version);
    return xfer_reply_json(conn, o);
}

/* POST /v1/propose-batch: u32 count, then count times (u32 length, encoded
 * command), little-endian. The leader commits them in order; the answer
 * says, per command, [rc, status, "version", "lock_holder", "path_version"]
 * where rc 0 means applied and anything else means not applied (the
 * sender retries from there). */
static enum MHD_Result xfer_handle_propose_batch(struct nsync *ns, struct MHD_Connection *conn,
                                                 struct xfer_req *rq)
{
    if (rq->too_big)
        return xfer_reply_text(conn, MHD_HTTP_CONTENT_TOO_LARGE, "batch too large\n");
    if (!ns->cluster)
        return xfer_reply_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "cluster not running\n");
    struct cluster_item *items;
    uint32_t n;
    int src = xfer_batch_split(rq->body, rq->len, &items, &n);
    if (src == -ENOMEM)
        return xfer_reply_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    if (src < 0)
        return xfer_reply_text(conn, MHD_HTTP_BAD_REQUEST, "malformed batch\n");
    uint64_t sender;
    bool owned = xfer_sender(ns, conn, NULL, &sender) == 0;
    for (uint32_t i = 0; owned && i < n; i++)
        owned = xfer_sender_owns(sender, items[i].buf, items[i].len) == 0;
    if (!owned) {
        free(items);
        return xfer_reply_text(conn, MHD_HTTP_FORBIDDEN, "a command speaks for its sender only\n");
    }
    int rc = cluster_submit_batch_encoded(ns->cluster, items, n, ns->cfg.submit_timeout_ms);
    if (rc == -ENOTCONN) {
        free(items);
        return xfer_reply_text(conn, MHD_HTTP_MISDIRECTED_REQUEST, "not the leader\n");
    }
    if (rc < 0) {
        free(items);
        log_warn("forwarded batch of %u commands failed: %s", n, strerror(-rc));
        return xfer_reply_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "batch failed\n");
    }
    cJSON *o = cJSON_CreateObject();
    cJSON *arr = o ? cJSON_AddArrayToObject(o, "results") : NULL;
    for (uint32_t i = 0; arr && i < n; i++) {
        cJSON *r = cJSON_CreateArray();
        if (!r || !cJSON_AddItemToArray(arr, r)) {
            cJSON_Delete(r);
            arr = NULL;
            break;
        }
        char v[3][24];
        snprintf(v[0], sizeof v[0], "%" PRIu64, items[i].reply.version);
        nsync_id_str(items[i].reply.lock_holder, v[1]);
        snprintf(v[2], sizeof v[2], "%" PRIu64, items[i].reply.path_version);
        cJSON_AddItemToArray(r, cJSON_CreateNumber(items[i].rc));
        cJSON_AddItemToArray(r, cJSON_CreateNumber(items[i].reply.status));
        for (int k = 0; k < 3; k++)
            cJSON_AddItemToArray(r, cJSON_CreateString(v[k]));
    }
    free(items);
    if (!arr) {
        cJSON_Delete(o);
        return xfer_reply_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    }
    return xfer_reply_json(conn, o);
}

static bool xfer_is_post_url(const char *url)
{
    return strcmp(url, "/v1/propose") == 0 || strcmp(url, "/v1/propose-batch") == 0 ||
           strcmp(url, "/v1/join") == 0 || strcmp(url, "/v1/leave") == 0;
}

/* POST /v1/join {"id","caddr","faddr"} and /v1/leave {"id"}: leader only. */
static enum MHD_Result xfer_handle_membership(struct nsync *ns, struct MHD_Connection *conn,
                                              struct xfer_req *rq, bool join)
{
    if (rq->too_big)
        return xfer_reply_text(conn, MHD_HTTP_CONTENT_TOO_LARGE, "request too large\n");
    if (!ns->cluster)
        return xfer_reply_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "cluster not running\n");
    cJSON *o = rq->len ? cJSON_ParseWithLength(rq->body, rq->len) : NULL;
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "id");
    const cJSON *ca = cJSON_GetObjectItemCaseSensitive(o, "caddr");
    const cJSON *fa = cJSON_GetObjectItemCaseSensitive(o, "faddr");
    uint64_t node = 0;
    bool ok = cJSON_IsString(id) && nsync_id_parse(id->valuestring, &node) == 0 && node != 0;
    char h[NSYNC_HOST_MAX];
    uint16_t port;
    if (join)
        ok = ok && cJSON_IsString(ca) && cJSON_IsString(fa) && strlen(ca->valuestring) < FSM_ADDR_MAX &&
             strlen(fa->valuestring) < FSM_ADDR_MAX && addr_parse(ca->valuestring, 1, h, sizeof h, &port) == 0 &&
             addr_parse(fa->valuestring, 1, h, sizeof h, &port) == 0;
    if (!ok) {
        cJSON_Delete(o);
        return xfer_reply_text(conn, MHD_HTTP_BAD_REQUEST, "expected {\"id\":\"<16 hex digits>\"...}\n");
    }
    /* A node joins as itself, and leaves as itself; another node goes only
     * by this node's own word (its operator, docs/security.md). */
    uint64_t sender;
    if (xfer_sender(ns, conn, join ? ca->valuestring : NULL, &sender) < 0 ||
        (sender && sender != node && (join || sender != ns->self_id))) {
        cJSON_Delete(o);
        return xfer_reply_text(conn, MHD_HTTP_FORBIDDEN, "a node joins or leaves for itself only\n");
    }
    struct cluster_status cs;
    cluster_get_status(ns->cluster, &cs);
    int rc;
    if (cs.state != CLUSTER_LEADER)
        rc = -ENOTCONN;
    else if (join)
        rc = cluster_add_node(ns->cluster, node, ca->valuestring, fa->valuestring, 60000);
    else
        rc = cluster_remove_node(ns->cluster, node, ns->cfg.submit_timeout_ms);
    cJSON_Delete(o);
    switch (rc) {
    case 0: return xfer_reply_text(conn, MHD_HTTP_OK, "ok\n");
    case -ENOTCONN: return xfer_reply_text(conn, MHD_HTTP_MISDIRECTED_REQUEST, "not the leader\n");
    case -EBUSY: return xfer_reply_text(conn, MHD_HTTP_CONFLICT, "configuration change under way\n");
    case -EROFS: return xfer_reply_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "no quorum\n");
    case -EINVAL: return xfer_reply_text(conn, MHD_HTTP_BAD_REQUEST, "refused\n");
    default:
        log_warn("%s of node %016" PRIx64 " failed: %s", join ? "join" : "leave", node,
                 strerror(rc < 0 ? -rc : EIO));
        return xfer_reply_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "failed\n");
    }
}

/* Accumulate a POST body, bounded; past the bound keep draining (so the
 * client reads our 413 instead of a reset) but store nothing. */
static void xfer_take_body(struct xfer_req *rq, const char *data, size_t n)
{
    if (rq->too_big || n == 0)
        return;
    if (rq->len + n > XFER_MAX_BODY) {
        rq->too_big = true;
        free(rq->body);
        rq->body = NULL;
        rq->len = rq->cap = 0;
        return;
    }
    if (rq->len + n > rq->cap) {
        size_t cap = rq->cap ? rq->cap : 4096;
        while (cap < rq->len + n)
            cap *= 2;
        if (cap > XFER_MAX_BODY)
            cap = XFER_MAX_BODY;
        char *nb = realloc(rq->body, cap);
        if (!nb) {
            rq->too_big = true; /* answered 413; good enough under ENOMEM */
            free(rq->body);
            rq->body = NULL;
            rq->len = rq->cap = 0;
            return;
        }
        rq->body = nb;
        rq->cap = cap;
    }
    memcpy(rq->body + rq->len, data, n);
    rq->len += n;
}

/* Without a secret every client is one of ours (loopback clusters, or
 * -o insecure); with one, only a client that presented our certificate. */
static bool xfer_client_is_member(struct nsync *ns, struct MHD_Connection *conn)
{
    if (!ns->cfg.secret)
        return true;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    return ci && ci->tls_session && secret_peer_ok(ns->cfg.secret, (gnutls_session_t)ci->tls_session);
}

static enum MHD_Result xfer_access(void *cls, struct MHD_Connection *conn, const char *url,
                                   const char *method, const char *version,
                                   const char *upload_data, size_t *upload_data_size,
                                   void **con_cls)
{
    struct nsync *ns = cls;
    bool is_get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 ||
                  strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
    bool is_post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;

    if (!*con_cls) {
        struct xfer_req *rq = calloc(1, sizeof *rq);
        if (!rq)
            return MHD_NO;
        rq->is_post = is_post;
        *con_cls = rq;
        xfer_guard_phase(conn, is_post ? XFER_PHASE_BODY : XFER_PHASE_ANSWER);
        rq->member = xfer_client_is_member(ns, conn);
        /* Only the status page is for anyone (monitoring); a client without
         * the secret learns nothing else, and sends nothing we act on. */
        if (!rq->member && strcmp(url, "/v1/status") != 0)
            return xfer_reply_text(conn, MHD_HTTP_FORBIDDEN, "cluster certificate required\n");
        if (is_post && xfer_is_post_url(url)) {
            /* Refuse an announced oversized body before it is sent. */
            const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                         MHD_HTTP_HEADER_CONTENT_LENGTH);
            uint64_t n;
            if (cl && xfer_parse_u64(cl, &n) == 0 && n > XFER_MAX_BODY)
                return xfer_reply_text(conn, MHD_HTTP_CONTENT_TOO_LARGE, "command too large\n");
        }
        /* Answer from the second call on, also for a GET: libmicrohttpd
         * closes the connection after a response queued in the first call
         * (before it knows the request has no body), which would cost every
         * fetch and every forwarded batch a new TCP connection and a new
         * server thread. */
        return MHD_YES;
    }
    struct xfer_req *rq = *con_cls;
    if (is_post && *upload_data_size == 0)
        xfer_guard_phase(conn, XFER_PHASE_ANSWER); /* the body is complete */

    if (strcmp(url, "/v1/file") == 0 || strcmp(url, "/v1/status") == 0 ||
        strcmp(url, "/metrics") == 0) {
        if (*upload_data_size) {
            *upload_data_size = 0; /* a GET with a body: ignore the body */
            return MHD_YES;
        }
        if (!is_get)
            return xfer_reply_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "use GET\n");
        if (url[1] == 'm')
            return xfer_handle_metrics(ns, conn);
        return url[4] == 'f' ? xfer_handle_file(ns, conn) : xfer_handle_status(ns, conn);
    }
    if (xfer_is_post_url(url)) {
        if (!is_post) {
            if (*upload_data_size) {
                *upload_data_size = 0;
                return MHD_YES;
            }
            return xfer_reply_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "use POST\n");
        }
        if (*upload_data_size) {
            xfer_take_body(rq, upload_data, *upload_data_size);
            *upload_data_size = 0;
            return MHD_YES;
        }
        if (strcmp(url, "/v1/propose-batch") == 0)
            return xfer_handle_propose_batch(ns, conn, rq);
        if (url[4] == 'p')
            return xfer_handle_propose(ns, conn, rq);
        return xfer_handle_membership(ns, conn, rq, url[4] == 'j');
    }
    if (*upload_data_size) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    return xfer_reply_text(conn, MHD_HTTP_NOT_FOUND, "not found\n");
}

static void xfer_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                           enum MHD_RequestTerminationCode toe)
{
    struct xfer_req *rq = *con_cls;
    xfer_guard_phase(conn, XFER_PHASE_HEAD); /* keep-alive: the next request's clock */
    if (rq) {
        free(rq->body);
        free(rq);
        *con_cls = NULL;
    }
}

/* The listening address: --host resolved once (numeric or a name), IPv4
 * preferred, never the wildcard unless --host says so. */
static int xfer_resolve(const char *host, uint16_t port, struct sockaddr_storage *ss,
                        bool *ipv6)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0) {
        hints.ai_family = AF_INET6;
        rc = getaddrinfo(host, NULL, &hints, &res);
    }
    if (rc != 0 || !res) {
        log_error("file server: cannot resolve %s: %s", host, gai_strerror(rc));
        return -EADDRNOTAVAIL;
    }
    memset(ss, 0, sizeof *ss);
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *ipv6 = res->ai_family == AF_INET6;
    if (*ipv6)
        ((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
    else
        ((struct sockaddr_in *)ss)->sin_port = htons(port);
    freeaddrinfo(res);
    return 0;
}

/* BACKING/.nsyncfs/server: where this node's file server answers, for
 * `nsyncfs status MOUNTPOINT` (which finds BACKING in /proc/self/mountinfo).
 * Written whole under a temporary name and renamed, so a reader never sees
 * half of it. */
static void xfer_write_addr_file(struct nsync *ns)
{
    /* On a wildcard, the loopback of its family: `nsyncfs status` runs on
     * this machine, and the advertised address may be one only others
     * reach (behind NAT). */
    const char *h = ns->cfg.host;
    if (addr_is_wildcard(h))
        h = strchr(h, ':') ? "::1" : "127.0.0.1";
    char line[NSYNC_ADDR_MAX + 4];
    int n = addr_format(line, sizeof line - 1, h, ns->cfg.fport);
    if (n < 0)
        return;
    line[n++] = '\n';
    int fd = openat(ns->data_fd, XFER_ADDR_FILE ".tmp", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, line, (size_t)n) != n || close(fd) < 0 ||
        renameat(ns->data_fd, XFER_ADDR_FILE ".tmp", ns->data_fd, XFER_ADDR_FILE) < 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        log_warn("file server: cannot write %s/%s/%s (nsyncfs status MOUNTPOINT will not find "
                 "this node): %s", ns->cfg.backing, NSYNC_DATA_DIR, XFER_ADDR_FILE, strerror(e));
    }
}

int xfer_server_start(struct nsync *ns, struct xfer_server **out)
{
    struct sockaddr_storage ss;
    bool ipv6 = false;
    int rc = xfer_resolve(ns->cfg.host, ns->cfg.fport, &ss, &ipv6);
    if (rc < 0)
        return rc;
    struct xfer_server *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->ns = ns;
    rc = xfer_guard_start(&s->guard);
    if (rc < 0) {
        log_error("file server: cannot start its connection guard: %s", strerror(-rc));
        free(s);
        return rc;
    }
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_AUTO | MHD_USE_ERROR_LOG;
    /* "::" takes IPv4 too, as the raft port does (v4-mapped clients are
     * told apart by sender.c). */
    if (ipv6)
        flags |= addr_is_wildcard(ns->cfg.host) ? MHD_USE_DUAL_STACK : MHD_USE_IPv6;
    /* With the secret: TLS 1.3, our certificate, and a request for the
     * client's (MEM_TRUST makes MHD ask; xfer_client_is_member checks it is
     * ours). A request, not a demand, so that monitoring without the secret
     * still reads /v1/status. */
    struct MHD_OptionItem tls[] = {
        {MHD_OPTION_HTTPS_MEM_KEY, 0, NULL},
        {MHD_OPTION_HTTPS_MEM_CERT, 0, NULL},
        {MHD_OPTION_HTTPS_MEM_TRUST, 0, NULL},
        {MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)secret_priority},
        {MHD_OPTION_END, 0, NULL},
    };
    if (ns->cfg.secret) {
        flags |= MHD_USE_TLS;
        tls[0].ptr_value = (void *)secret_key_pem(ns->cfg.secret);
        tls[1].ptr_value = tls[2].ptr_value = (void *)secret_cert_pem(ns->cfg.secret);
    } else {
        tls[0].option = MHD_OPTION_END;
    }
    s->daemon = MHD_start_daemon(
        flags, ns->cfg.fport, NULL, NULL, xfer_access, ns,
        MHD_OPTION_EXTERNAL_LOGGER, xfer_mhd_log, (void *)NULL,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)XFER_CONN_LIMIT,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)XFER_PER_IP_LIMIT,
        MHD_OPTION_NOTIFY_CONNECTION, xfer_guard_notify, (void *)s->guard,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)XFER_CONN_TIMEOUT_S,
        MHD_OPTION_NOTIFY_COMPLETED, xfer_completed, (void *)NULL,
        MHD_OPTION_ARRAY, tls,
        MHD_OPTION_END);
    char where[NSYNC_ADDR_MAX];
    addr_format(where, sizeof where, ns->cfg.host, ns->cfg.fport);
    if (!s->daemon) {
        log_error("file server: cannot listen on %s (port in use or address not local?)", where);
        xfer_guard_stop(s->guard);
        free(s);
        return -EADDRINUSE;
    }
    if (ns->data_fd >= 0)
        xfer_write_addr_file(ns);
    log_info("file server listening on %s (%s)", where,
             ns->cfg.secret ? "TLS, cluster certificate" : "plain HTTP");
    *out = s;
    return 0;
}

void xfer_server_stop(struct xfer_server *s)
{
    if (!s)
        return;
    MHD_stop_daemon(s->daemon);
    if (s->ns->data_fd >= 0)
        unlinkat(s->ns->data_fd, XFER_ADDR_FILE, 0);
    xfer_guard_stop(s->guard); /* after: closing connections notify it */
    free(s);
}
