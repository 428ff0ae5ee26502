/* nsyncfs's options: one table read by libfuse's fuse_opt_parse for the
 * command line (long options and -o) and by a small line reader for the
 * configuration file, then checked before anything is mounted. */
#include "cli.h"

#include <errno.h>
#include <limits.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/addr.h"
#include "common/log.h"
#include "common/secret.h"
#include "nsync.h"

enum cli_key {
    K_HOST, K_CPORT, K_FPORT, K_CLUSTER, K_LOG_LEVEL, K_CONFIG,
    K_LOCK_TIMEOUT, K_LEASE, K_SUBMIT_TIMEOUT, K_LOCK_CACHE,
    K_BACKING, K_MOUNTPOINT, /* for a --config file that says it all (a systemd unit) */
    K_LOG_FILE, K_SECRET_FILE, K_ADVERTISE,
    K_VALUED_, /* keys above take a value */
    K_STRICT_EXCL = K_VALUED_, K_SYNC, K_FOREGROUND, K_DEBUG, K_HELP, K_VERSION, K_INSECURE,
    K_ALLOW_OTHER, /* ours and FUSE's: noted, passed on */
    K_DROP,        /* mount(8)'s own options that FUSE does not take */
    K_N_
};

/* Name of each key as -o and the config file spell it. */
static const char *const key_names[K_N_] = {
    [K_HOST] = "host", [K_CPORT] = "cluster_port", [K_FPORT] = "file_server_port",
    [K_CLUSTER] = "cluster", [K_LOG_LEVEL] = "log_level", [K_CONFIG] = "config",
    [K_LOCK_TIMEOUT] = "lock_timeout", [K_LEASE] = "lease",
    [K_SUBMIT_TIMEOUT] = "submit_timeout", [K_LOCK_CACHE] = "lock_cache", [K_BACKING] = "backing",
    [K_MOUNTPOINT] = "mountpoint", [K_LOG_FILE] = "log_file", [K_STRICT_EXCL] = "strict_excl", [K_SYNC] = "sync",
    [K_FOREGROUND] = "foreground", [K_DEBUG] = "debug", [K_ALLOW_OTHER] = "allow_other",
    [K_SECRET_FILE] = "secret_file", [K_INSECURE] = "insecure", [K_ADVERTISE] = "advertise",
};

/* The long options (--name VALUE, --name=VALUE) are rewritten to -o name=VALUE
 * before this table is applied (cli_long_to_o): one table for both. */
static const struct fuse_opt cli_opts[] = {
    FUSE_OPT_KEY("host=%s", K_HOST),
    FUSE_OPT_KEY("cluster_port=%s", K_CPORT),
    FUSE_OPT_KEY("file_server_port=%s", K_FPORT),
    FUSE_OPT_KEY("cluster=%s", K_CLUSTER),
    FUSE_OPT_KEY("log_level=%s", K_LOG_LEVEL),
    FUSE_OPT_KEY("config=%s", K_CONFIG),
    FUSE_OPT_KEY("lock_timeout=%s", K_LOCK_TIMEOUT),
    FUSE_OPT_KEY("lease=%s", K_LEASE),
    FUSE_OPT_KEY("submit_timeout=%s", K_SUBMIT_TIMEOUT),
    FUSE_OPT_KEY("lock_cache=%s", K_LOCK_CACHE),
    FUSE_OPT_KEY("backing=%s", K_BACKING),
    FUSE_OPT_KEY("mountpoint=%s", K_MOUNTPOINT),
    FUSE_OPT_KEY("log_file=%s", K_LOG_FILE),
    FUSE_OPT_KEY("secret_file=%s", K_SECRET_FILE),
    FUSE_OPT_KEY("advertise=%s", K_ADVERTISE),
    FUSE_OPT_KEY("insecure", K_INSECURE),
    FUSE_OPT_KEY("strict_excl", K_STRICT_EXCL),
    /* ours, not the kernel's MS_SYNCHRONOUS: FUSE passes writes through at
     * once anyway; what a user asks of a replicated mount is the commit */
    FUSE_OPT_KEY("sync", K_SYNC),
    FUSE_OPT_KEY("-f", K_FOREGROUND),
    FUSE_OPT_KEY("foreground", K_FOREGROUND),
    FUSE_OPT_KEY("-d", K_DEBUG),
    FUSE_OPT_KEY("debug", K_DEBUG),
    FUSE_OPT_KEY("-h", K_HELP),
    FUSE_OPT_KEY("-V", K_VERSION),
    FUSE_OPT_KEY("allow_other", K_ALLOW_OTHER),
    /* mount(8) and mount.fuse3 hand these on; they mean nothing to FUSE */
    FUSE_OPT_KEY("_netdev", K_DROP),
    FUSE_OPT_KEY("nofail", K_DROP),
    FUSE_OPT_KEY("auto", K_DROP),
    FUSE_OPT_KEY("noauto", K_DROP),
    FUSE_OPT_KEY("user", K_DROP),
    FUSE_OPT_KEY("nouser", K_DROP),
    FUSE_OPT_KEY("users", K_DROP),
    FUSE_OPT_KEY("defaults", K_DROP),
    FUSE_OPT_END,
};

static const char usage_text[] =
    "usage: nsyncfs BACKING MOUNTPOINT --host H --cluster-port P --file-server-port Q\n"
    "               --cluster h2:p2:q2,h3:p3:q3 [-f] [-d] [-o opt,...] [--config FILE]\n"
    "       mount -t fuse.nsyncfs BACKING MOUNTPOINT -o host=H,cluster_port=P,...\n"
    "       nsyncfs status [--json] [MOUNTPOINT | HOST:PORT]   (see nsyncfs status -h)\n"
    "\n"
    "Mount BACKING at MOUNTPOINT and keep it identical on every node of the cluster.\n"
    "Every option is also -o NAME=VALUE (dashes become underscores) and a line\n"
    "NAME = VALUE of the --config file; the command line wins over the file.\n"
    "\n"
    "  --host H               address this node listens on (and is known by, unless\n"
    "                         --advertise); 0.0.0.0 or :: listens on every address\n"
    "  --advertise A          address the other nodes reach this node at (raft member\n"
    "                         and file-server address); required when --host is\n"
    "                         0.0.0.0 or ::\n"
    "  --cluster-port P       Raft port\n"
    "  --file-server-port Q   HTTP port that serves files to the other nodes\n"
    "  --cluster LIST         the other nodes, host:cluster-port:file-server-port\n"
    "                         (IPv6 in brackets: [::1]:7001:8001), separated by\n"
    "                         ',' or '+' (use '+' inside -o and fstab);\n"
    "                         listing this node too is fine\n"
    "  --config FILE          read options from FILE (NAME = VALUE, # comments);\n"
    "                         its backing= and mountpoint= stand for BACKING MOUNTPOINT\n"
    "  -f                     stay in the foreground and log to stderr\n"
    "  -d                     -f and --log-level debug\n"
    "  -o OPTS                mount options: FUSE's, plus lock_timeout=SECONDS (30),\n"
    "                         lease=SECONDS (10), submit_timeout=SECONDS (8),\n"
    "                         lock_cache=SECONDS (60: how long a path's cluster lock\n"
    "                         stays with this node unused; 0 gives it back at once),\n"
    "                         strict_excl (O_EXCL creates wait for the cluster lock),\n"
    "                         sync (every close and metadata change returns once\n"
    "                         committed by the cluster; default: fsync does)\n"
    "  --secret-file FILE     the cluster secret (the same file on every node, mode\n"
    "                         0600; make one with 'nsyncfs keygen FILE'): every\n"
    "                         connection between nodes is then mutually\n"
    "                         authenticated TLS (docs/security.md). Required unless\n"
    "                         --host is a loopback address or -o insecure is given\n"
    "  --log-level L          error, warn, info (default) or debug\n"
    "  --log-file PATH        append the log to PATH (default: stderr with -f, else\n"
    "                         syslog, or BACKING/.nsyncfs/nsyncfs.log without /dev/log)\n"
    "  -h, --help             this text\n"
    "  -V, --version          the version\n"
    "       nsyncfs keygen FILE   write a new cluster secret to FILE (mode 0600)\n"
    "\n"
    "Without -f the command returns once the node serves (mounted, in the cluster).\n"
    "Exit codes: 0 clean stop (unmount, SIGTERM, SIGINT: the node leaves the\n"
    "cluster), 1 failure while serving, 2 bad usage or configuration, 3 mount or\n"
    "start-up failure. SIGHUP is ignored.\n";

void cli_die(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("nsyncfs: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(code);
}

#define die_usage(...) cli_die(NSYNC_EXIT_USAGE, __VA_ARGS__)

/* What the command line and the config file said, before it is checked. */
struct cli_raw {
    char *val[K_N_];       /* valued keys: malloc'd */
    bool set[K_N_];
    char *positional[2];
    int n_positional;
};

static void raw_set(struct cli_raw *r, int key, const char *value)
{
    if (r->set[key])
        free(r->val[key]);
    r->set[key] = true;
    r->val[key] = NULL;
    if (value && !(r->val[key] = strdup(value)))
        die_usage("out of memory");
}

/* The key a long option names (--cluster-port is cluster_port), or -1. */
static int long_key(const char *name, size_t len)
{
    for (int k = 0; k < K_N_; k++) {
        const char *n = key_names[k];
        if (!n || strlen(n) != len)
            continue;
        size_t i = 0;
        while (i < len && name[i] == (n[i] == '_' ? '-' : n[i]))
            i++;
        if (i == len)
            return k;
    }
    return -1;
}

/* argv with every --name VALUE / --name=VALUE / --flag as -o name=VALUE
 * (commas in VALUE escaped, as -o splits on them). --help and --version
 * become -h and -V. Unknown long options are an error here. */
static void cli_long_to_o(int argc, char **argv, struct fuse_args *out)
{
    if (fuse_opt_add_arg(out, argv[0]) < 0)
        die_usage("out of memory");
    bool positional_only = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (positional_only || a[0] != '-' || a[1] != '-') {
            if (fuse_opt_add_arg(out, a) < 0)
                die_usage("out of memory");
            continue;
        }
        if (a[2] == '\0') { /* "--": the rest are BACKING and MOUNTPOINT */
            positional_only = true;
            if (fuse_opt_add_arg(out, a) < 0)
                die_usage("out of memory");
            continue;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const char *single = NULL;
        if (len == 4 && !strncmp(name, "help", 4))
            single = "-h";
        else if (len == 7 && !strncmp(name, "version", 7))
            single = "-V";
        if (single) {
            if (fuse_opt_add_arg(out, single) < 0)
                die_usage("out of memory");
            continue;
        }
        int k = long_key(name, len);
        if (k < 0 || k == K_ALLOW_OTHER || k == K_DROP)
            die_usage("unknown option %s (see --help)", a);
        char *o = NULL;
        const char *value = NULL;
        if (k < K_VALUED_) {
            value = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
            if (!value || !*value)
                die_usage("option --%.*s needs a value (see --help)", (int)len, name);
        } else if (eq) {
            die_usage("option --%.*s takes no value", (int)len, name);
        }
        if (fuse_opt_add_opt(&o, key_names[k]) < 0)
            die_usage("out of memory");
        if (value) {
            size_t n = strlen(o);
            char *v = NULL;
            if (fuse_opt_add_opt_escaped(&v, value) < 0 || !(o = realloc(o, n + strlen(v) + 2)))
                die_usage("out of memory");
            o[n] = '=';
            strcpy(o + n + 1, v);
            free(v);
        }
        if (fuse_opt_add_arg(out, "-o") < 0 || fuse_opt_add_arg(out, o) < 0)
            die_usage("out of memory");
        free(o);
    }
}

static int cli_opt_cb(void *data, const char *arg, int key, struct fuse_args *out)
{
    struct cli_raw *r = data;
    (void)out;
    switch (key) {
    case FUSE_OPT_KEY_NONOPT:
        if (r->n_positional == 2)
            die_usage("expected BACKING and MOUNTPOINT, got a third argument '%s' (see --help)", arg);
        if (!(r->positional[r->n_positional++] = strdup(arg)))
            die_usage("out of memory");
        return 0;
    case FUSE_OPT_KEY_OPT:
        if (arg[0] == '-')
            die_usage("unknown option %s (see --help)", arg);
        return 1; /* a -o option of FUSE's */
    case K_HELP:
        fputs(usage_text, stdout);
        exit(0);
    case K_VERSION:
        printf("nsyncfs %s\n", NSYNC_VERSION);
        exit(0);
    case K_DROP:
        return 0;
    case K_ALLOW_OTHER:
        raw_set(r, key, NULL);
        return 1;
    default:
        break;
    }
    if (key < K_VALUED_) {
        const char *v = strchr(arg, '=') + 1; /* the templates are "name=%s" */
        if (!*v)
            die_usage("option %s needs a value (see --help)", arg);
        raw_set(r, key, v);
    } else {
        raw_set(r, key, NULL);
    }
    return 0;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    char *e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
        *--e = '\0';
    return s;
}

/* NAME = VALUE lines; keys already given on the command line are kept. */
static void read_config(struct cli_raw *r, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        die_usage("--config %s: %s", path, strerror(errno));
    char line[4096];
    unsigned no = 0;
    while (fgets(line, sizeof line, f)) {
        no++;
        if (!strchr(line, '\n') && !feof(f))
            die_usage("%s:%u: line too long", path, no);
        char *s = trim(line);
        if (!*s || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        char *value = NULL;
        if (eq) {
            *eq = '\0';
            value = trim(eq + 1);
        }
        char *name = trim(s);
        int key = -1;
        for (int k = 0; k < K_N_; k++)
            if (key_names[k] && strcmp(key_names[k], name) == 0)
                key = k;
        if (key < 0 || key == K_CONFIG)
            die_usage("%s:%u: unknown option '%s'", path, no, name);
        if ((key < K_VALUED_) != (value != NULL) || (value && !*value))
            die_usage("%s:%u: option '%s' %s", path, no, name,
                      key < K_VALUED_ ? "needs a value" : "takes no value");
        if (!r->set[key])
            raw_set(r, key, value);
    }
    if (ferror(f))
        die_usage("--config %s: %s", path, strerror(errno));
    fclose(f);
}

static int parse_port(const char *s, uint16_t *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 1 || v > 65535)
        return -EINVAL;
    *out = (uint16_t)v;
    return 0;
}

static int parse_seconds(const char *s, unsigned *ms)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || v <= 0 || v > 86400)
        return -EINVAL;
    *ms = (unsigned)(v * 1000.0);
    return 0;
}

static int add_peer(struct nsync_config *cfg, const char *host, uint16_t cport, uint16_t fport)
{
    uint64_t id = nsync_node_id(host, cport);
    for (size_t i = 0; i < cfg->n_peers; i++) {
        if (cfg->peers[i].id == id) {
            if (cfg->peers[i].fport != fport)
                return -EINVAL;
            return 0; /* listed twice: same node */
        }
    }
    struct nsync_peer *p = realloc(cfg->peers, (cfg->n_peers + 1) * sizeof *p);
    if (!p)
        return -ENOMEM;
    cfg->peers = p;
    p = &cfg->peers[cfg->n_peers++];
    memset(p, 0, sizeof *p);
    p->id = id;
    snprintf(p->host, sizeof p->host, "%s", host);
    p->cport = cport;
    p->fport = fport;
    return 0;
}

static void parse_cluster(struct nsync_config *cfg, const char *list)
{
    char *copy = strdup(list);
    if (!copy)
        die_usage("out of memory");
    char *save = NULL;
    for (char *item = strtok_r(copy, ",+", &save); item; item = strtok_r(NULL, ",+", &save)) {
        char host[NSYNC_HOST_MAX];
        uint16_t ports[2];
        int rc = addr_parse(item, 2, host, sizeof host, ports);
        if (rc == -ENAMETOOLONG)
            die_usage("--cluster entry '%s': the host is too long", item);
        if (rc < 0)
            die_usage("--cluster entry '%s' is not host:cluster-port:file-server-port (ports 1-65535, "
                      "an IPv6 host in brackets: [::1]:7001:8001)", item);
        if (add_peer(cfg, host, ports[0], ports[1]) < 0)
            die_usage("--cluster lists %s twice with different file-server ports", item);
    }
    free(copy);
}

/* True if host is an address of this machine (a socket can be bound to it). */
static bool host_is_local(const char *host)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res)
        return false;
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool ok = fd >= 0 && bind(fd, res->ai_addr, res->ai_addrlen) == 0;
    if (fd >= 0)
        close(fd);
    freeaddrinfo(res);
    return ok;
}

/* --host and --advertise: which address is listened on, which one others
 * are told (the raft member address, the file-server URL, the node id), and
 * the one this node's requests leave from. */
static void cli_hosts(struct cli_raw *r, struct nsync_config *cfg)
{
    int rc = addr_host_parse(r->val[K_HOST], cfg->host, sizeof cfg->host);
    if (rc < 0)
        die_usage("--host '%s' is %s", r->val[K_HOST],
                  rc == -ENAMETOOLONG ? "too long" : "not a host name, an IPv4 or an IPv6 address");
    if (!r->set[K_ADVERTISE]) {
        if (addr_is_wildcard(cfg->host))
            die_usage("--host %s listens on every address: give --advertise ADDR, the address the other "
                      "nodes reach this node at", r->val[K_HOST]);
        snprintf(cfg->advertise, sizeof cfg->advertise, "%s", cfg->host);
        snprintf(cfg->source, sizeof cfg->source, "%s", cfg->host);
        return;
    }
    rc = addr_host_parse(r->val[K_ADVERTISE], cfg->advertise, sizeof cfg->advertise);
    if (rc < 0)
        die_usage("--advertise '%s' is %s", r->val[K_ADVERTISE],
                  rc == -ENAMETOOLONG ? "too long" : "not a host name, an IPv4 or an IPv6 address");
    if (addr_is_wildcard(cfg->advertise))
        die_usage("--advertise %s is a wildcard address: give the address the other nodes reach this "
                  "node at", r->val[K_ADVERTISE]);
    if (host_is_local(cfg->advertise))
        snprintf(cfg->source, sizeof cfg->source, "%s", cfg->advertise);
}

static int peer_cmp(const void *a, const void *b)
{
    uint64_t x = ((const struct nsync_peer *)a)->id, y = ((const struct nsync_peer *)b)->id;
    return x < y ? -1 : x > y;
}

/* Bind-test a port so that "port taken" is reported before mounting. */
static void check_port_free(const char *host, uint16_t port, const char *what)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char ps[8];
    snprintf(ps, sizeof ps, "%u", port);
    int rc = getaddrinfo(host, ps, &hints, &res);
    if (rc != 0)
        die_usage("--host '%s' cannot be resolved: %s", host, gai_strerror(rc));
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) < 0) {
        int e = errno;
        freeaddrinfo(res);
        char a[NSYNC_ADDR_MAX];
        addr_format(a, sizeof a, host, port);
        die_usage("%s %s is not available: %s", what, a, strerror(e));
    }
    close(fd);
    freeaddrinfo(res);
}

static bool is_mounted(const char *path)
{
    FILE *f = fopen("/proc/self/mountinfo", "r");
    if (!f)
        return false;
    char line[8192];
    bool found = false;
    while (!found && fgets(line, sizeof line, f)) {
        /* field 5 is the mount point, with spaces escaped as \040 */
        char *save = NULL, *tok = strtok_r(line, " ", &save);
        for (int i = 1; tok && i < 5; i++)
            tok = strtok_r(NULL, " ", &save);
        if (tok && strcmp(tok, path) == 0)
            found = true;
    }
    fclose(f);
    return found;
}

static void check_mountpoint(const char *mnt)
{
    struct stat st;
    if (stat(mnt, &st) < 0 && errno == ENOTCONN) {
        /* A crashed predecessor left its mount behind: clear it instead of
         * hanging on it. */
        if (umount2(mnt, MNT_DETACH) < 0)
            die_usage("MOUNTPOINT %s is a stale mount (transport endpoint is not connected) "
                      "and cannot be cleared: %s; run 'fusermount3 -u -z %s'",
                      mnt, strerror(errno), mnt);
        fprintf(stderr, "nsyncfs: cleared the stale mount at %s\n", mnt);
    }
    if (stat(mnt, &st) < 0)
        die_usage("MOUNTPOINT %s: %s", mnt, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        die_usage("MOUNTPOINT %s is not a directory", mnt);
    if (is_mounted(mnt))
        die_usage("MOUNTPOINT %s is already mounted", mnt);
}

/* True if every address host resolves to is a loopback one: only such a node
 * may run without the secret, since nothing else can reach it. */
static bool host_is_loopback(const char *host)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res)
        return false; /* reported by check_port_free */
    bool loop = true;
    for (struct addrinfo *a = res; a && loop; a = a->ai_next) {
        if (a->ai_family == AF_INET)
            loop = (ntohl(((struct sockaddr_in *)a->ai_addr)->sin_addr.s_addr) >> 24) == 127;
        else if (a->ai_family == AF_INET6)
            loop = IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)a->ai_addr)->sin6_addr);
        else
            loop = false;
    }
    freeaddrinfo(res);
    return loop;
}

/* --secret-file read and checked now (exit 2 on any problem); no secret on
 * a reachable address only with -o insecure. */
static void cli_secret(struct cli_raw *r, struct nsync_config *cfg)
{
    cfg->insecure = r->set[K_INSECURE];
    if (r->set[K_SECRET_FILE]) {
        char err[PATH_MAX + 200];
        if (secret_load(r->val[K_SECRET_FILE], &cfg->secret, err, sizeof err) < 0)
            die_usage("--secret-file %s", err);
        return;
    }
    if (!cfg->insecure && !host_is_loopback(cfg->host))
        die_usage("--host %s is reachable by others: give the cluster secret with --secret-file FILE "
                  "(make one with 'nsyncfs keygen FILE'), or -o insecure to run without one",
                  cfg->host);
}

int cli_keygen(int argc, char **argv)
{
    if (argc != 3 || argv[2][0] == '-')
        die_usage("usage: nsyncfs keygen FILE");
    char err[PATH_MAX + 200];
    if (secret_keygen(argv[2], err, sizeof err) < 0)
        die_usage("keygen: %s", err);
    printf("nsyncfs: wrote a new cluster secret to %s; copy it (mode 0600) to every node and "
           "give it as --secret-file\n", argv[2]);
    return 0;
}

/* From the raw strings to cfg, with every check of a value. */
static void cli_apply(struct cli_raw *r, struct nsync_config *cfg)
{
    cfg->lock_timeout_ms = 30000;
    cfg->lease_ms = 10000;
    cfg->submit_timeout_ms = 8000;
    cfg->lock_cache_ms = 60000;
    cfg->log_level = LOG_INFO;
    if (r->set[K_LOCK_CACHE] && strcmp(r->val[K_LOCK_CACHE], "0") != 0 &&
        parse_seconds(r->val[K_LOCK_CACHE], &cfg->lock_cache_ms) < 0)
        die_usage("lock_cache=%s: expected a number of seconds (0: no cache)", r->val[K_LOCK_CACHE]);
    if (r->set[K_LOCK_CACHE] && strcmp(r->val[K_LOCK_CACHE], "0") == 0)
        cfg->lock_cache_ms = 0;
    static const int seconds[] = {K_LOCK_TIMEOUT, K_LEASE, K_SUBMIT_TIMEOUT};
    unsigned *targets[] = {&cfg->lock_timeout_ms, &cfg->lease_ms, &cfg->submit_timeout_ms};
    for (size_t i = 0; i < sizeof seconds / sizeof seconds[0]; i++)
        if (r->set[seconds[i]] && parse_seconds(r->val[seconds[i]], targets[i]) < 0)
            die_usage("%s=%s: expected a number of seconds", key_names[seconds[i]], r->val[seconds[i]]);
    cfg->strict_excl = r->set[K_STRICT_EXCL];
    cfg->sync = r->set[K_SYNC];
    cfg->allow_other = r->set[K_ALLOW_OTHER];
    cfg->foreground = r->set[K_FOREGROUND] || r->set[K_DEBUG];
    if (r->set[K_DEBUG])
        cfg->log_level = LOG_DEBUG;
    if (r->set[K_LOG_LEVEL]) {
        const char *l = r->val[K_LOG_LEVEL];
        if (!strcmp(l, "error")) cfg->log_level = LOG_ERR;
        else if (!strcmp(l, "warn")) cfg->log_level = LOG_WARNING;
        else if (!strcmp(l, "info")) cfg->log_level = LOG_INFO;
        else if (!strcmp(l, "debug")) cfg->log_level = LOG_DEBUG;
        else die_usage("--log-level '%s': use error, warn, info or debug", l);
    }
    if (r->set[K_LOG_FILE]) {
        /* absolute: a daemon runs in / */
        const char *lf = r->val[K_LOG_FILE];
        char cwd[PATH_MAX];
        if (lf[0] != '/' && !getcwd(cwd, sizeof cwd))
            die_usage("--log-file %s: %s", lf, strerror(errno));
        if (asprintf(&cfg->log_file, "%s%s%s", lf[0] == '/' ? "" : cwd, lf[0] == '/' ? "" : "/", lf) < 0)
            die_usage("out of memory");
    }
    if (r->set[K_CPORT] && parse_port(r->val[K_CPORT], &cfg->cport) < 0)
        die_usage("--cluster-port '%s' is not a port number", r->val[K_CPORT]);
    if (r->set[K_FPORT] && parse_port(r->val[K_FPORT], &cfg->fport) < 0)
        die_usage("--file-server-port '%s' is not a port number", r->val[K_FPORT]);

    /* BACKING and MOUNTPOINT on the command line win over backing= and
     * mountpoint= keys, like every other option. */
    if (r->n_positional == 0 && r->set[K_BACKING] && r->set[K_MOUNTPOINT]) {
        for (int i = 0; i < 2; i++)
            if (!(r->positional[i] = strdup(r->val[i ? K_MOUNTPOINT : K_BACKING])))
                die_usage("out of memory");
        r->n_positional = 2;
    }
    if (r->n_positional != 2)
        die_usage("expected BACKING and MOUNTPOINT (see --help)");
    if (!r->set[K_HOST] || !r->set[K_CPORT] || !r->set[K_FPORT])
        die_usage("--host, --cluster-port and --file-server-port are required (see --help)");
    if (cfg->cport == cfg->fport)
        die_usage("--cluster-port and --file-server-port must differ");
    cli_hosts(r, cfg);
    cli_secret(r, cfg);

    /* Owned by cfg from the start: a usage error below exits with it still
     * reachable from the caller (not a leak to LeakSanitizer). */
    char *backing = realpath(r->positional[0], NULL);
    if (!backing)
        die_usage("BACKING %s: %s", r->positional[0], strerror(errno));
    cfg->backing = backing;
    struct stat st;
    if (stat(backing, &st) < 0 || !S_ISDIR(st.st_mode))
        die_usage("BACKING %s is not a directory", backing);
    char *mnt = realpath(r->positional[1], NULL);
    if (!mnt) {
        if (errno == ENOTCONN) {
            check_mountpoint(r->positional[1]);
            mnt = realpath(r->positional[1], NULL);
        }
        if (!mnt)
            die_usage("MOUNTPOINT %s: %s", r->positional[1], strerror(errno));
    }
    cfg->mountpoint = mnt;
    check_mountpoint(mnt);
    if (strcmp(backing, mnt) == 0)
        die_usage("BACKING and MOUNTPOINT must differ");

    if (add_peer(cfg, cfg->advertise, cfg->cport, cfg->fport) < 0)
        die_usage("out of memory");
    if (r->set[K_CLUSTER])
        parse_cluster(cfg, r->val[K_CLUSTER]);
    qsort(cfg->peers, cfg->n_peers, sizeof *cfg->peers, peer_cmp);

    check_port_free(cfg->host, cfg->cport, "--cluster-port");
    check_port_free(cfg->host, cfg->fport, "--file-server-port");
}

void cli_parse(int argc, char **argv, struct nsync_config *cfg, struct fuse_args *fuse_args)
{
    memset(cfg, 0, sizeof *cfg);
    struct cli_raw r;
    memset(&r, 0, sizeof r);
    /* afterwards rest holds argv[0] and the -o options that are FUSE's */
    struct fuse_args rest = FUSE_ARGS_INIT(0, NULL);
    cli_long_to_o(argc, argv, &rest);
    if (fuse_opt_parse(&rest, &r, cli_opts, cli_opt_cb) != 0)
        die_usage("cannot parse the command line (see --help)");
    if (r.set[K_CONFIG])
        read_config(&r, r.val[K_CONFIG]);
    cli_apply(&r, cfg);

    *fuse_args = (struct fuse_args)FUSE_ARGS_INIT(0, NULL);
    if (fuse_opt_add_arg(fuse_args, argv[0]) < 0)
        die_usage("out of memory");
    for (int i = 1; i < rest.argc; i++)
        if (fuse_opt_add_arg(fuse_args, rest.argv[i]) < 0)
            die_usage("out of memory");
    fuse_opt_free_args(&rest);
    /* df and findmnt show where the data lives; the type is fuse.nsyncfs */
    char *fsname = NULL;
    if (fuse_opt_add_opt_escaped(&fsname, cfg->backing) < 0)
        die_usage("out of memory");
    size_t len = strlen(fsname) + sizeof "-ofsname=,subtype=nsyncfs";
    char *o = malloc(len);
    if (!o)
        die_usage("out of memory");
    snprintf(o, len, "-ofsname=%s,subtype=nsyncfs", fsname);
    free(fsname);
    /* Only with allow_other can users other than the one who mounted reach
     * the mount, and only then must the kernel check their permissions
     * (docs/decisions.md). */
    if (fuse_opt_add_arg(fuse_args, o) < 0 ||
        (cfg->allow_other && fuse_opt_add_arg(fuse_args, "-odefault_permissions") < 0))
        die_usage("out of memory");
    free(o);
    for (int k = 0; k < K_N_; k++)
        free(r.val[k]);
    free(r.positional[0]);
    free(r.positional[1]);
}

void cli_free(struct nsync_config *cfg)
{
    free(cfg->peers);
    free(cfg->log_file);
    cfg->log_file = NULL;
    secret_free(cfg->secret);
    cfg->secret = NULL;
    free((char *)cfg->backing);
    free((char *)cfg->mountpoint);
    cfg->peers = NULL;
    cfg->backing = cfg->mountpoint = NULL;
}
