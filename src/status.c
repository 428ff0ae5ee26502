/* The status command: finds the node (a HOST:PORT, or a MOUNTPOINT whose
 * BACKING/.nsyncfs/server names its file server), reads its /v1/status
 * over HTTP and judges it: healthy, degraded (with the reasons) or
 * unreachable. The node's JSON is the source; this file only presents it. */
#include "status.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "nsync.h"
#include "transfer/server.h"

#define STATUS_TIMEOUT_MS 3000
#define STATUS_BODY_MAX (4 * 1024 * 1024)

static const char status_usage[] =
    "usage: nsyncfs status [--json] [MOUNTPOINT | HOST:PORT]\n"
    "Show a node's view of the cluster: role, leader, term, quorum, every member\n"
    "(address, reachable, last contact, how far behind), catch-up, fetches.\n"
    "HOST:PORT is the node's file server ([::1]:8001 for IPv6); MOUNTPOINT is\n"
    "found in /proc/self/mountinfo; without either, the only nsyncfs mount.\n"
    "Exit: 0 healthy, 1 degraded (no quorum, catching up, a member\n"
    "unreachable), 2 node unreachable or bad usage.\n";

struct status_body {
    char *data;
    size_t len;
    bool overflow;
};

static size_t status_write(char *p, size_t size, size_t n, void *arg)
{
    struct status_body *b = arg;
    size_t k = size * n;
    if (b->len + k > STATUS_BODY_MAX) {
        b->overflow = true;
        return 0;
    }
    char *d = realloc(b->data, b->len + k + 1);
    if (!d)
        return 0;
    b->data = d;
    memcpy(d + b->len, p, k);
    b->len += k;
    d[b->len] = '\0';
    return k;
}

/* mountinfo escapes blanks, tabs, newlines and backslashes as \ooo. */
static void status_unescape(char *s)
{
    char *w = s;
    for (char *r = s; *r; r++) {
        if (r[0] == '\\' && r[1] >= '0' && r[1] <= '7' && r[2] >= '0' && r[2] <= '7' && r[3] >= '0' &&
            r[3] <= '7') {
            *w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
            r += 3;
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
}

/* The BACKING of the nsyncfs mount at mnt (NULL: the only one there is)
 * into backing. 0, -ENOENT (none), -EEXIST (several, mnt NULL). */
static int status_find_mount(const char *mnt, char *backing, size_t sz, char *where, size_t wsz)
{
    FILE *f = fopen("/proc/self/mountinfo", "r");
    if (!f)
        return -errno;
    char line[8192];
    int found = 0;
    while (fgets(line, sizeof line, f)) {
        /* ... 5:mountpoint ... - fstype source options */
        char *save = NULL, *tok = strtok_r(line, " ", &save), *mp = NULL;
        for (int i = 1; tok && i < 5; i++)
            tok = strtok_r(NULL, " ", &save);
        mp = tok;
        while (tok && strcmp(tok, "-") != 0)
            tok = strtok_r(NULL, " ", &save);
        char *type = tok ? strtok_r(NULL, " ", &save) : NULL;
        char *src = type ? strtok_r(NULL, " ", &save) : NULL;
        if (!mp || !type || !src || strcmp(type, "fuse.nsyncfs") != 0)
            continue;
        status_unescape(mp);
        status_unescape(src);
        if (mnt && strcmp(mp, mnt) != 0)
            continue;
        found++;
        snprintf(backing, sz, "%s", src);
        snprintf(where, wsz, "%s", mp);
    }
    fclose(f);
    if (found == 0)
        return -ENOENT;
    return found > 1 && !mnt ? -EEXIST : 0;
}

/* "host:port" from BACKING/.nsyncfs/server. */
static int status_read_addr(const char *backing, char *addr, size_t sz)
{
    char path[4096 + 64];
    snprintf(path, sizeof path, "%s/%s/%s", backing, NSYNC_DATA_DIR, XFER_ADDR_FILE);
    FILE *f = fopen(path, "r");
    if (!f)
        return -errno;
    bool ok = fgets(addr, (int)sz, f) != NULL;
    fclose(f);
    if (!ok)
        return -EINVAL;
    addr[strcspn(addr, "\r\n")] = '\0';
    return addr[0] ? 0 : -EINVAL;
}

static const char *jstr(const cJSON *o, const char *k)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(it) && it->valuestring ? it->valuestring : "";
}

static double jnum(const cJSON *o, const char *k)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, k);
    if (cJSON_IsNumber(it))
        return it->valuedouble;
    if (cJSON_IsString(it) && it->valuestring)
        return strtod(it->valuestring, NULL);
    return 0;
}

static bool jbool(const cJSON *o, const char *k)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, k));
}

static void human_bytes(double v, char *out, size_t sz)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    snprintf(out, sz, u ? "%.1f %s" : "%.0f %s", v, units[u]);
}

static void human_ago(double wall_ms, double now_ms, char *out, size_t sz)
{
    if (wall_ms <= 0) {
        snprintf(out, sz, "never");
        return;
    }
    double s = (now_ms - wall_ms) / 1000.0;
    if (s < 0.5)
        snprintf(out, sz, "now");
    else if (s < 120)
        snprintf(out, sz, "%.1f s ago", s);
    else
        snprintf(out, sz, "%.0f min ago", s / 60);
}

static void human_time(double wall_ms, char *out, size_t sz)
{
    time_t t = (time_t)(wall_ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, sz, "%Y-%m-%d %H:%M:%S UTC", &tm);
}

/* The verdict, with one reason per problem, added to st as "health". */
static int status_judge(cJSON *st, cJSON *reasons)
{
    int code = STATUS_HEALTHY;
    char buf[512];
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(st, "quorum");
    if (!jbool(q, "ok")) {
        cJSON_AddItemToArray(reasons, cJSON_CreateString("no quorum"));
        code = STATUS_DEGRADED;
    }
    const cJSON *cu = cJSON_GetObjectItemCaseSensitive(st, "catchup");
    if (jbool(cu, "active")) {
        snprintf(buf, sizeof buf, "catching up (%.0f%%)", jnum(cu, "percent"));
        cJSON_AddItemToArray(reasons, cJSON_CreateString(buf));
        code = STATUS_DEGRADED;
    }
    const cJSON *m;
    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(st, "members")) {
        if (!jbool(m, "reachable")) {
            snprintf(buf, sizeof buf, "member %s (%s) unreachable", jstr(m, "id"), jstr(m, "caddr"));
            cJSON_AddItemToArray(reasons, cJSON_CreateString(buf));
            code = STATUS_DEGRADED;
        }
    }
    return code;
}

static void status_print(const cJSON *st, const cJSON *reasons, int code, const char *url)
{
    double now = (double)nsync_now_ms();
    char a[64], b[64], t[64];
    const char *leader = jstr(st, "leader");
    const char *leader_addr = "";
    const cJSON *m;
    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(st, "members"))
        if (jbool(m, "leader"))
            leader_addr = jstr(m, "caddr");
    printf("%-10s %s\n", "state", code == STATUS_HEALTHY ? "healthy" : "DEGRADED");
    const cJSON *r;
    cJSON_ArrayForEach(r, reasons)
        printf("%-10s - %s\n", "", r->valuestring);
    printf("%-10s %s (%s, %s) on %s\n", "node", jstr(st, "node"), jstr(st, "role"), url,
           jstr(st, "mountpoint"));
    bool no_leader = !leader[0] || strspn(leader, "0") == strlen(leader);
    printf("%-10s %s%s%s%s\n", "leader", no_leader ? "none" : leader, leader_addr[0] ? " (" : "",
           leader_addr, leader_addr[0] ? ")" : "");
    printf("%-10s %s\n", "term", jstr(st, "term"));
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(st, "quorum");
    if (jbool(q, "ok")) {
        printf("%-10s yes (%.0f of %.0f members reachable)\n", "quorum", jnum(q, "reachable"),
               jnum(q, "members"));
    } else {
        double since = jnum(q, "since_ms");
        if (since > 0)
            human_time(since, t, sizeof t);
        printf("%-10s NO%s%s (%.0f of %.0f members reachable; changes fail with EROFS)\n", "quorum",
               since > 0 ? " since " : "", since > 0 ? t : "", jnum(q, "reachable"), jnum(q, "members"));
    }
    const cJSON *cu = cJSON_GetObjectItemCaseSensitive(st, "catchup");
    if (jnum(cu, "files_total") > 0) {
        human_bytes(jnum(cu, "bytes_done"), a, sizeof a);
        human_bytes(jnum(cu, "bytes_total"), b, sizeof b);
        double eta = jnum(cu, "eta_s");
        if (eta >= 0)
            snprintf(t, sizeof t, "ETA %.0f s", eta);
        else
            snprintf(t, sizeof t, "ETA unknown");
        printf("%-10s %.0f/%.0f files, %s/%s (%.0f%%), %s\n", "catch-up", jnum(cu, "files_done"),
               jnum(cu, "files_total"), a, b, jnum(cu, "percent"), t);
    } else {
        printf("%-10s in sync\n", "catch-up");
    }
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(st, "fetch");
    human_bytes(jnum(f, "bytes"), a, sizeof a);
    printf("%-10s %.0f pending, %.0f installed (%s), %.0f errors since start\n", "fetches",
           jnum(f, "pending"), jnum(f, "installed"), a, jnum(f, "errors"));
    printf("\n%-18s %-22s %-9s %-10s %-13s %s\n", "MEMBER", "ADDRESS", "ROLE", "REACHABLE",
           "LAST CONTACT", "BEHIND");
    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(st, "members")) {
        human_ago(jnum(m, "last_contact_ms"), now, t, sizeof t);
        human_bytes(jnum(m, "pending_bytes"), b, sizeof b);
        snprintf(a, sizeof a, "%s%s", jstr(m, "id"), jbool(m, "self") ? "*" : "");
        printf("%-18s %-22s %-9s %-10s %-13s %.0f entries, %.0f files (%s)\n", a, jstr(m, "caddr"),
               jbool(m, "leader") ? "leader" : "follower", jbool(m, "reachable") ? "yes" : "NO", t,
               jnum(m, "behind_entries"), jnum(m, "pending_files"), b);
    }
    printf("(* this node)\n");
}

/* HOST:PORT (an argument with a ':' that is not a path) or MOUNTPOINT. */
static int status_target(const char *arg, char *addr, size_t sz)
{
    char backing[4096], where[4096];
    if (arg && arg[0] != '/' && arg[0] != '.' && strchr(arg, ':')) {
        char host[NSYNC_HOST_MAX];
        uint16_t port;
        if (addr_parse(arg, 1, host, sizeof host, &port) < 0 || addr_format(addr, sz, host, port) < 0) {
            fprintf(stderr, "nsyncfs status: '%s' is not HOST:PORT (an IPv6 host in brackets: [::1]:8001)\n",
                    arg);
            return -EINVAL;
        }
        return 0;
    }
    char *abs = arg ? realpath(arg, NULL) : NULL;
    if (arg && !abs) {
        fprintf(stderr, "nsyncfs status: %s: %s\n", arg, strerror(errno));
        return -ENOENT;
    }
    int rc = status_find_mount(abs, backing, sizeof backing, where, sizeof where);
    free(abs);
    if (rc == -ENOENT) {
        fprintf(stderr, "nsyncfs status: %s%s\n", arg ? arg : "no nsyncfs mount found",
                arg ? " is not an nsyncfs mount" : " (give MOUNTPOINT or HOST:PORT)");
        return rc;
    }
    if (rc == -EEXIST) {
        fprintf(stderr, "nsyncfs status: several nsyncfs mounts: name one (MOUNTPOINT or HOST:PORT)\n");
        return rc;
    }
    if (rc < 0) {
        fprintf(stderr, "nsyncfs status: /proc/self/mountinfo: %s\n", strerror(-rc));
        return rc;
    }
    rc = status_read_addr(backing, addr, sz);
    if (rc < 0)
        fprintf(stderr, "nsyncfs status: %s is mounted from %s, but %s/%s/%s cannot be read: %s\n",
                where, backing, backing, NSYNC_DATA_DIR, XFER_ADDR_FILE, strerror(-rc));
    return rc;
}

static int status_fetch_scheme(const char *scheme, const char *addr, cJSON **out, char *err,
                               size_t errsz);

/* Plain HTTP first; a node with a cluster secret speaks only TLS, and its
 * status page answers anyone there (what it shows is public), so the
 * certificate is not checked: the command holds no secret. */
static int status_fetch(const char *addr, cJSON **out, char *err, size_t errsz)
{
    int rc = status_fetch_scheme("http", addr, out, err, errsz);
    if (rc == -EHOSTUNREACH) {
        char err2[256];
        int rc2 = status_fetch_scheme("https", addr, out, err2, sizeof err2);
        if (rc2 != -EHOSTUNREACH) {
            if (rc2 < 0)
                snprintf(err, errsz, "%s", err2);
            return rc2;
        }
    }
    return rc;
}

static int status_fetch_scheme(const char *scheme, const char *addr, cJSON **out, char *err,
                               size_t errsz)
{
    char url[NSYNC_ADDR_MAX + 32];
    snprintf(url, sizeof url, "%s://%s/v1/status", scheme, addr);
    CURL *h = curl_easy_init();
    if (!h) {
        snprintf(err, errsz, "out of memory");
        return -ENOMEM;
    }
    struct status_body b = {0};
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)STATUS_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, status_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    if (strcmp(scheme, "https") == 0) {
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    CURLcode cc = curl_easy_perform(h);
    long code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    curl_easy_cleanup(h);
    int rc = 0;
    if (cc != CURLE_OK) {
        snprintf(err, errsz, "%s: %s", url, curl_easy_strerror(cc));
        rc = -EHOSTUNREACH;
    } else if (code != 200) {
        snprintf(err, errsz, "%s answered HTTP %ld", url, code);
        rc = -EPROTO;
    } else if (!(*out = cJSON_ParseWithLength(b.data, b.len)) || !cJSON_IsObject(*out)) {
        cJSON_Delete(*out);
        *out = NULL;
        snprintf(err, errsz, "%s: not a status object", url);
        rc = -EPROTO;
    }
    free(b.data);
    return rc;
}

int status_main(int argc, char **argv)
{
    bool json = false;
    const char *target = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) {
            json = true;
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            fputs(status_usage, stdout);
            return STATUS_HEALTHY;
        } else if (argv[i][0] == '-' || target) {
            fprintf(stderr, "nsyncfs status: unexpected argument '%s'\n%s", argv[i], status_usage);
            return STATUS_UNREACHABLE;
        } else {
            target = argv[i];
        }
    }
    char addr[NSYNC_ADDR_MAX + 8];
    if (status_target(target, addr, sizeof addr) < 0)
        return STATUS_UNREACHABLE;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
        fprintf(stderr, "nsyncfs status: cannot initialise libcurl\n");
        return STATUS_UNREACHABLE;
    }
    cJSON *st = NULL;
    char err[512] = "";
    int rc = status_fetch(addr, &st, err, sizeof err);
    curl_global_cleanup();
    if (rc < 0) {
        fprintf(stderr, "nsyncfs status: node unreachable: %s\n", err);
        if (json)
            printf("{\"health\":{\"state\":\"unreachable\",\"exit\":2,\"address\":\"%s\"}}\n", addr);
        return STATUS_UNREACHABLE;
    }
    cJSON *health = cJSON_CreateObject();
    cJSON *reasons = cJSON_CreateArray();
    if (!health || !reasons || !cJSON_AddItemToObject(health, "reasons", reasons)) {
        fprintf(stderr, "nsyncfs status: out of memory\n");
        cJSON_Delete(reasons);
        cJSON_Delete(health);
        cJSON_Delete(st);
        return STATUS_UNREACHABLE;
    }
    int code = status_judge(st, reasons);
    cJSON_AddStringToObject(health, "state", code == STATUS_HEALTHY ? "healthy" : "degraded");
    cJSON_AddNumberToObject(health, "exit", code);
    cJSON_AddStringToObject(health, "address", addr);
    cJSON_AddItemToObject(st, "health", health);
    if (json) {
        char *txt = cJSON_Print(st);
        if (txt)
            puts(txt);
        cJSON_free(txt);
    } else {
        status_print(st, reasons, code, addr);
    }
    cJSON_Delete(st);
    return code;
}
