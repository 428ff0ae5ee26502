/* nsyncfs entry point: parses and checks the command line (every mistake is
 * one line on stderr and exit 2, before anything is mounted), prepares
 * BACKING, mounts, then starts the cluster, the file server and the fetch
 * worker, and tears them down in reverse when the mount goes away. */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <fuse_lowlevel.h>
#include <getopt.h>
#include <limits.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cluster/cluster.h"
#include "cluster/fsm.h"
#include "cluster/peer.h"
#include "common/log.h"
#include "fs/fs.h"
#include "fs/ll.h"
#include "fs/reconcile.h"
#include "nsync.h"
#include "transfer/fetch.h"
#include "transfer/server.h"

#define EXIT_USAGE 2

static const char usage_text[] =
    "usage: nsyncfs BACKING MOUNTPOINT --host H --cluster-port P --file-server-port Q\n"
    "               --cluster h2:p2:q2,h3:p3:q3 [-f] [-o opt,...] [--log-level L]\n"
    "\n"
    "Mount BACKING at MOUNTPOINT and keep it identical on every node of the cluster.\n"
    "\n"
    "  --host H               address this node listens on (and is known by)\n"
    "  --cluster-port P       Raft port\n"
    "  --file-server-port Q   HTTP port that serves files to the other nodes\n"
    "  --cluster LIST         the other nodes, host:cluster-port:file-server-port,\n"
    "                         comma separated (listing this node too is fine)\n"
    "  -f                     stay in the foreground and log to stderr\n"
    "  -o OPTS                mount options: FUSE's, plus lock_timeout=SECONDS (30),\n"
    "                         lease=SECONDS (10), submit_timeout=SECONDS (8),\n"
    "                         strict_excl (O_EXCL creates wait for the cluster lock)\n"
    "  --log-level L          error, warn, info (default) or debug\n"
    "  -h, --help             this text\n"
    "  -V, --version          the version\n";

static void die_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die_usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("nsyncfs: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(EXIT_USAGE);
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
    for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        char *c1 = strchr(item, ':');
        char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c1 || !c2 || strchr(c2 + 1, ':') || c1 == item)
            die_usage("--cluster entry '%s' is not host:cluster-port:file-server-port", item);
        *c1 = *c2 = '\0';
        uint16_t cp, fp;
        if (parse_port(c1 + 1, &cp) < 0 || parse_port(c2 + 1, &fp) < 0)
            die_usage("--cluster entry '%s:%s:%s' has a bad port", item, c1 + 1, c2 + 1);
        if (strlen(item) >= NSYNC_HOST_MAX)
            die_usage("--cluster host '%s' is too long", item);
        if (add_peer(cfg, item, cp, fp) < 0)
            die_usage("--cluster lists %s:%s twice with different file-server ports", item, c1 + 1);
    }
    free(copy);
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
        die_usage("%s %s:%u is not available: %s", what, host, port, strerror(e));
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

static int mkdirat_p(int dirfd, const char *name)
{
    if (mkdirat(dirfd, name, 0700) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

/* Staging holds only half-received files: anything there after a restart is
 * garbage from an interrupted transfer. */
static void clear_staging(int fd)
{
    int dfd = dup(fd);
    if (dfd < 0)
        return;
    DIR *d = fdopendir(dfd);
    if (!d) {
        close(dfd);
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            unlinkat(fd, de->d_name, 0);
    }
    closedir(d);
}

static void prepare_backing(struct nsync *ns)
{
    ns->backing_fd = open(ns->cfg.backing, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (ns->backing_fd < 0)
        die_usage("BACKING %s: %s", ns->cfg.backing, strerror(errno));
    int rc = mkdirat_p(ns->backing_fd, NSYNC_DATA_DIR);
    if (rc < 0)
        die_usage("cannot create %s/%s: %s", ns->cfg.backing, NSYNC_DATA_DIR, strerror(-rc));
    ns->data_fd = openat(ns->backing_fd, NSYNC_DATA_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (ns->data_fd < 0 || mkdirat_p(ns->data_fd, "raft") < 0 || mkdirat_p(ns->data_fd, "staging") < 0)
        die_usage("cannot prepare %s/%s: %s", ns->cfg.backing, NSYNC_DATA_DIR, strerror(errno));
    ns->staging_fd = openat(ns->data_fd, "staging", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (ns->staging_fd < 0)
        die_usage("cannot open %s/%s/staging: %s", ns->cfg.backing, NSYNC_DATA_DIR, strerror(errno));
    clear_staging(ns->staging_fd);
    snprintf(ns->raft_dir, sizeof ns->raft_dir, "%s/%s/raft", ns->cfg.backing, NSYNC_DATA_DIR);
}

/* -o: take out our own options, pass the rest on to FUSE. */
static void parse_o(struct nsync_config *cfg, const char *opts, char **fuse_opts)
{
    char *copy = strdup(opts);
    if (!copy)
        die_usage("out of memory");
    char *save = NULL;
    for (char *o = strtok_r(copy, ",", &save); o; o = strtok_r(NULL, ",", &save)) {
        unsigned *target = NULL;
        const char *val = NULL;
        if (strncmp(o, "lock_timeout=", 13) == 0)
            target = &cfg->lock_timeout_ms, val = o + 13;
        else if (strncmp(o, "lease=", 6) == 0)
            target = &cfg->lease_ms, val = o + 6;
        else if (strncmp(o, "submit_timeout=", 15) == 0)
            target = &cfg->submit_timeout_ms, val = o + 15;
        if (strcmp(o, "strict_excl") == 0) {
            cfg->strict_excl = true;
            continue;
        }
        if (strcmp(o, "allow_other") == 0)
            cfg->allow_other = true;
        if (target) {
            if (parse_seconds(val, target) < 0)
                die_usage("-o %s: expected a number of seconds", o);
            continue;
        }
        size_t old = *fuse_opts ? strlen(*fuse_opts) : 0;
        char *n = realloc(*fuse_opts, old + strlen(o) + 2);
        if (!n)
            die_usage("out of memory");
        if (old)
            n[old++] = ',';
        strcpy(n + old, o);
        *fuse_opts = n;
    }
    free(copy);
}

static void parse_args(int argc, char **argv, struct nsync *ns, char **fuse_opts)
{
    struct nsync_config *cfg = &ns->cfg;
    static const struct option longopts[] = {
        {"host", required_argument, NULL, 'H'},
        {"cluster-port", required_argument, NULL, 'P'},
        {"file-server-port", required_argument, NULL, 'Q'},
        {"cluster", required_argument, NULL, 'C'},
        {"log-level", required_argument, NULL, 'L'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *host = NULL, *cluster = NULL;
    bool have_cp = false, have_fp = false;
    cfg->lock_timeout_ms = 30000;
    cfg->lease_ms = 10000;
    cfg->submit_timeout_ms = 8000;
    cfg->log_level = LOG_INFO;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":fo:hV", longopts, NULL)) != -1) {
        switch (c) {
        case 'f': cfg->foreground = true; break;
        case 'o': parse_o(cfg, optarg, fuse_opts); break;
        case 'H': host = optarg; break;
        case 'P':
            if (parse_port(optarg, &cfg->cport) < 0)
                die_usage("--cluster-port '%s' is not a port number", optarg);
            have_cp = true;
            break;
        case 'Q':
            if (parse_port(optarg, &cfg->fport) < 0)
                die_usage("--file-server-port '%s' is not a port number", optarg);
            have_fp = true;
            break;
        case 'C': cluster = optarg; break;
        case 'L':
            if (!strcmp(optarg, "error")) cfg->log_level = LOG_ERR;
            else if (!strcmp(optarg, "warn")) cfg->log_level = LOG_WARNING;
            else if (!strcmp(optarg, "info")) cfg->log_level = LOG_INFO;
            else if (!strcmp(optarg, "debug")) cfg->log_level = LOG_DEBUG;
            else die_usage("--log-level '%s': use error, warn, info or debug", optarg);
            break;
        case 'h': fputs(usage_text, stdout); exit(0);
        case 'V': printf("nsyncfs %s\n", NSYNC_VERSION); exit(0);
        case ':': die_usage("option %s needs a value (see --help)", argv[optind - 1]);
        default: die_usage("unknown option %s (see --help)", argv[optind - 1]);
        }
    }
    if (argc - optind != 2)
        die_usage("expected BACKING and MOUNTPOINT (see --help)");
    if (!host || !have_cp || !have_fp)
        die_usage("--host, --cluster-port and --file-server-port are required (see --help)");
    if (strlen(host) >= NSYNC_HOST_MAX)
        die_usage("--host is too long");
    if (cfg->cport == cfg->fport)
        die_usage("--cluster-port and --file-server-port must differ");
    snprintf(cfg->host, sizeof cfg->host, "%s", host);

    char *backing = realpath(argv[optind], NULL);
    if (!backing)
        die_usage("BACKING %s: %s", argv[optind], strerror(errno));
    struct stat st;
    if (stat(backing, &st) < 0 || !S_ISDIR(st.st_mode))
        die_usage("BACKING %s is not a directory", backing);
    char *mnt = realpath(argv[optind + 1], NULL);
    if (!mnt) {
        if (errno == ENOTCONN) {
            check_mountpoint(argv[optind + 1]);
            mnt = realpath(argv[optind + 1], NULL);
        }
        if (!mnt)
            die_usage("MOUNTPOINT %s: %s", argv[optind + 1], strerror(errno));
    }
    check_mountpoint(mnt);
    if (strcmp(backing, mnt) == 0)
        die_usage("BACKING and MOUNTPOINT must differ");
    cfg->backing = backing;
    cfg->mountpoint = mnt;

    if (add_peer(cfg, cfg->host, cfg->cport, cfg->fport) < 0)
        die_usage("out of memory");
    if (cluster)
        parse_cluster(cfg, cluster);
    qsort(cfg->peers, cfg->n_peers, sizeof *cfg->peers, peer_cmp);
    ns->self_id = nsync_node_id(cfg->host, cfg->cport);

    check_port_free(cfg->host, cfg->cport, "--cluster-port");
    check_port_free(cfg->host, cfg->fport, "--file-server-port");
}

int main(int argc, char **argv)
{
    struct nsync ns;
    memset(&ns, 0, sizeof ns);
    ns.backing_fd = ns.data_fd = ns.staging_fd = -1;
    char *fuse_opts = NULL;
    /* Modes reach us with the caller's umask applied by the kernel, and
     * every file the daemon makes for itself names its mode: ours would only
     * strip bits again, and cost a chmod after every create to undo. */
    umask(0);
    parse_args(argc, argv, &ns, &fuse_opts);
    log_init("nsyncfs", ns.cfg.log_level, 0);
    prepare_backing(&ns);

    signal(SIGPIPE, SIG_IGN);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0)
        die_usage("cannot initialise libcurl");
    ns.fsm = fsm_new();
    if (!ns.fsm || pthread_rwlock_init(&ns.fsm_lock, NULL) != 0 || fs_new(&ns, &ns.fs) < 0 ||
        cluster_peer_new(&ns, &ns.client) < 0)
        die_usage("out of memory");

    struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
    /* Only with allow_other can users other than the one who mounted reach
     * the mount, and only then must the kernel check their permissions. For
     * the mounting user the checks BACKING does on our calls (we run as that
     * user) are the same, and the kernel's would cost a GETATTR per directory
     * walked and per open, since attributes are not cached (docs/decisions.md). */
    if (fuse_opt_add_arg(&args, argv[0]) < 0 ||
        fuse_opt_add_arg(&args, "-ofsname=nsyncfs,subtype=nsyncfs") < 0 ||
        (ns.cfg.allow_other && fuse_opt_add_arg(&args, "-odefault_permissions") < 0))
        die_usage("out of memory");
    if (fuse_opts) {
        char *o = malloc(strlen(fuse_opts) + 3);
        if (!o)
            die_usage("out of memory");
        sprintf(o, "-o%s", fuse_opts);
        if (fuse_opt_add_arg(&args, o) < 0)
            die_usage("out of memory");
        free(o);
    }
    struct ll *ll = NULL;
    int lrc0 = ll_new(&ns, &args, fs_operations(), &ll);
    if (lrc0 == -ENOMEM)
        die_usage("out of memory");
    if (lrc0 < 0)
        die_usage("invalid mount options (-o %s)", fuse_opts ? fuse_opts : "");
    if (ll_mount(ll, ns.cfg.mountpoint) != 0)
        die_usage("cannot mount at %s", ns.cfg.mountpoint);
    if (fuse_daemonize(ns.cfg.foreground) != 0) {
        ll_unmount(ll);
        die_usage("cannot daemonize");
    }
    if (!ns.cfg.foreground)
        log_set_syslog(1);

    int exit_code = 1;
    int rc = cluster_start(&ns, &ns.cluster);
    if (rc == 0)
        rc = xfer_server_start(&ns, &ns.server);
    if (rc == 0) {
        fs_set_ll(ns.fs, ll);
        rc = fs_start(ns.fs);
    }
    if (rc == 0) {
        /* before the fetch worker: it asks reconcile about local edits */
        rc = reconcile_start(&ns, &ns.reconcile);
    }
    if (rc == 0)
        rc = xfer_fetcher_start(&ns, &ns.fetcher);
    if (rc == 0 && fuse_set_signal_handlers(ll_session(ll)) == 0) {
        log_info("mounted %s (backing %s), node %016llx", ns.cfg.mountpoint, ns.cfg.backing,
                 (unsigned long long)ns.self_id);
        rc = ll_loop(ll, 16);
        fuse_remove_signal_handlers(ll_session(ll));
        /* The loop returns the number of the signal that ended it: SIGTERM,
         * SIGINT and SIGHUP ask for a clean leave, like an unmount. */
        exit_code = (rc == 0 || rc == SIGTERM || rc == SIGINT || rc == SIGHUP) ? 0 : 1;
        log_info("unmounting %s", ns.cfg.mountpoint);
    } else {
        log_error("start-up failed on %s: %s", ns.cfg.mountpoint, strerror(rc < 0 ? -rc : EIO));
    }

    /* Reverse order of start: nothing may call into a module after it stopped.
     * An unmount or SIGTERM/SIGINT is a clean leave: in-flight announces are
     * done (the FUSE loop has returned), so the node leaves the cluster
     * before the server that the leader may still call goes away. */
    /* Changes closed just before the unmount are still in the outbox. */
    if (ns.fs && ns.cluster)
        fs_stop(ns.fs, ns.cfg.submit_timeout_ms + 2000);
    struct xfer_fetcher *fetcher = ns.fetcher;
    ns.fetcher = NULL; /* the server's status page stops asking it */
    xfer_fetcher_stop(fetcher);
    struct reconcile *recon = ns.reconcile;
    ns.reconcile = NULL;
    reconcile_stop(recon);
    bool left = false;
    if (ns.cluster && exit_code == 0) {
        int lrc = cluster_leave(ns.cluster, ns.cfg.submit_timeout_ms + 2000);
        left = lrc == 0;
        if (left)
            reconcile_save(&ns);
        if (lrc == -EALREADY)
            log_info("last voter of the cluster: keeping its state for the next mount");
    }
    xfer_server_stop(ns.server);
    cluster_stop(ns.cluster);
    if (left) {
        int wrc = cluster_wipe_state(ns.raft_dir, ns.data_fd);
        if (wrc < 0)
            log_error("left the cluster but could not clear %s: %s", ns.raft_dir, strerror(-wrc));
        else
            log_info("left the cluster");
    }
    fs_set_ll(ns.fs, NULL);
    ll_unmount(ll);
    ll_free(ll);
    fuse_opt_free_args(&args);
    cluster_peer_free(ns.client);
    fs_free(ns.fs);
    fsm_free(ns.fsm);
    pthread_rwlock_destroy(&ns.fsm_lock);
    curl_global_cleanup();
    close(ns.staging_fd);
    close(ns.data_fd);
    close(ns.backing_fd);
    free(ns.cfg.peers);
    free((char *)ns.cfg.backing);
    free((char *)ns.cfg.mountpoint);
    free(fuse_opts);
    return exit_code;
}
