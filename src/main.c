/* nsyncfs entry point: has the command line checked (cli.c: every mistake is
 * one line on stderr and exit 2, before anything is mounted), prepares
 * BACKING, goes to the background (daemon.c), mounts, then starts the
 * cluster, the file server and the fetch worker, and tears them down in
 * reverse when the mount goes away. */
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <fuse_lowlevel.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "cluster/cluster.h"
#include "cluster/fsm.h"
#include "cluster/peer.h"
#include "common/log.h"
#include "common/notify.h"
#include "daemon.h"
#include "fs/fs.h"
#include "fs/ll.h"
#include "fs/reconcile.h"
#include "nsync.h"
#include "service.h"
#include "status.h"
#include "transfer/fetch.h"
#include "transfer/quick.h"
#include "transfer/server.h"

#define die_usage(...) cli_die(NSYNC_EXIT_USAGE, __VA_ARGS__)
#define die_start(...) cli_die(NSYNC_EXIT_START, __VA_ARGS__)

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

/* The fetch worker's questions to the FUSE side (transfer/ does not include
 * fs/): data is the struct nsync. */
static bool hook_path_busy(void *data, const char *rel)
{
    struct nsync *ns = data;
    return ns->fs && fs_path_busy(ns->fs, rel);
}

static bool hook_in_place(void *data, const char *rel)
{
    struct nsync *ns = data;
    return ns->fs && fs_path_open_shared(ns->fs, rel);
}

static void hook_invalidate(void *data, const char *rel)
{
    struct nsync *ns = data;
    if (ns->fs)
        fs_invalidate(ns->fs, rel);
}

static void hook_before_install(void *data, const char *rel)
{
    struct nsync *ns = data;
    reconcile_before_install(ns->reconcile, rel); /* no-op once NULL */
}

int main(int argc, char **argv)
{
    /* `nsyncfs status ...` asks a running node; it mounts nothing. */
    if (argc >= 2 && strcmp(argv[1], "status") == 0)
        return status_main(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "keygen") == 0)
        return cli_keygen(argc, argv);
    struct nsync ns;
    memset(&ns, 0, sizeof ns);
    ns.backing_fd = ns.data_fd = ns.staging_fd = -1;
    /* Modes reach us with the caller's umask applied by the kernel, and
     * every file the daemon makes for itself names its mode: ours would only
     * strip bits again, and cost a chmod after every create to undo. */
    umask(0);
    struct fuse_args args;
    cli_parse(argc, argv, &ns.cfg, &args);
    ns.self_id = nsync_node_id(ns.cfg.advertise, ns.cfg.cport);
    log_init("nsyncfs", ns.cfg.log_level, 0);
    if (ns.cfg.log_file) {
        int lrc = log_set_file(ns.cfg.log_file);
        if (lrc < 0)
            die_usage("log_file %s: %s", ns.cfg.log_file, strerror(-lrc));
    } else if (ns.cfg.foreground && log_stderr_is_journal()) {
        log_set_journal(true); /* systemd reads the level from "<N>" */
    }
    prepare_backing(&ns);
    if (!ns.cfg.foreground) {
        /* Before any thread: the caller waits until the node serves. What
         * fails until then still reaches the caller's stderr. */
        int drc = daemon_start();
        if (drc < 0)
            die_start("cannot start the daemon: %s", strerror(-drc));
        if (ns.cfg.log_file) {
            /* already the sink */
        } else if (log_syslog_available()) {
            log_set_syslog(1);
        } else {
            /* syslog(3) would drop every line: keep them beside the data */
            char lp[4096 + 64];
            snprintf(lp, sizeof lp, "%s/%s/nsyncfs.log", ns.cfg.backing, NSYNC_DATA_DIR);
            int lrc = log_set_file(lp);
            if (lrc < 0)
                die_start("no syslog socket at /dev/log and cannot open %s: %s", lp, strerror(-lrc));
            fprintf(stderr, "nsyncfs: no syslog socket at /dev/log: logging to %s\n", lp);
        }
        log_tee_stderr(LOG_WARNING);
    }

    if (!ns.cfg.secret && ns.cfg.insecure)
    {
        char ca[NSYNC_ADDR_MAX];
        addr_format(ca, sizeof ca, ns.cfg.host, ns.cfg.cport);
        log_warn("-o insecure: no cluster secret, anyone who reaches %s or port %u can read and "
                 "change every file (docs/security.md)", ca, ns.cfg.fport);
    }
    signal(SIGPIPE, SIG_IGN);
    /* SIGHUP is no reason to leave the cluster (a closed terminal, a reload
     * by habit); SIGTERM and SIGINT are, as an unmount is. Ignored from the
     * start, before any thread or mount: libfuse leaves an ignored signal
     * alone, and a SIGHUP during start-up must not kill a half-made node. */
    signal(SIGHUP, SIG_IGN);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0)
        die_start("cannot initialise libcurl");
    ns.fsm = fsm_new();
    if (!ns.fsm || pthread_rwlock_init(&ns.fsm_lock, NULL) != 0 || fs_new(&ns, &ns.fs) < 0 ||
        cluster_peer_new(&ns, &ns.client) < 0)
        die_start("out of memory");

    struct ll *ll = NULL;
    int lrc0 = ll_new(&ns, &args, fs_operations(), &ll);
    if (lrc0 == -ENOMEM)
        die_start("out of memory");
    if (lrc0 < 0)
        die_usage("invalid mount options (see the line above)");
    if (ll_mount(ll, ns.cfg.mountpoint) != 0)
        die_start("cannot mount at %s", ns.cfg.mountpoint);

    const struct xfer_fetch_hooks fetch_hooks = {
        .data = &ns,
        .path_busy = hook_path_busy,
        .in_place = hook_in_place,
        .invalidate = hook_invalidate,
        .before_install = hook_before_install,
    };
    int exit_code = NSYNC_EXIT_START;
    notify_status("starting: mounted %s, starting the cluster (a join waits for its leader)",
                  ns.cfg.mountpoint);
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
        rc = xfer_fetcher_start(&ns, &fetch_hooks, &ns.fetcher);
    if (rc == 0 && fuse_set_signal_handlers(ll_session(ll)) == 0) {
        log_info("mounted %s (backing %s), node %016llx", ns.cfg.mountpoint, ns.cfg.backing,
                 (unsigned long long)ns.self_id);
        daemon_ready(); /* the caller of a daemon returns now, with 0 */
        log_tee_stderr(-1);
        struct service *svc = NULL;
        service_start(&ns, &svc); /* logged; the node serves either way */
        rc = ll_loop(ll, 16);
        service_stop(svc);
        fuse_remove_signal_handlers(ll_session(ll));
        /* The loop returns the number of the signal that ended it: SIGTERM
         * and SIGINT ask for a clean leave, like an unmount. */
        exit_code = (rc == 0 || rc == SIGTERM || rc == SIGINT) ? NSYNC_EXIT_OK : NSYNC_EXIT_RUNTIME;
        log_info("unmounting %s", ns.cfg.mountpoint);
    } else {
        log_error("start-up failed on %s: %s", ns.cfg.mountpoint, strerror(rc < 0 ? -rc : EIO));
    }

    /* Reverse order of start: nothing may call into a module after it stopped.
     * An unmount or SIGTERM/SIGINT is a clean leave: in-flight announces are
     * done (the FUSE loop has returned), so the node leaves the cluster
     * before the server that the leader may still call goes away. */
    /* Changes closed just before the unmount are still in the outbox. */
    bool answered = false;
    if (ns.fs && ns.cluster)
        answered = fs_stop(ns.fs, ns.cfg.submit_timeout_ms + 2000) == 0 && fs_all_answered(ns.fs);
    /* Stopped, not freed: the file server's status page reads it until the
     * server is stopped below. */
    xfer_fetcher_stop(ns.fetcher);
    /* Nothing changes BACKING any more, and the catalog still says which
     * versions this node holds: the next start trusts what kept its stat. */
    if (answered && exit_code == 0)
        xfer_quick_save(&ns);
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
    xfer_fetcher_free(ns.fetcher);
    ns.fetcher = NULL;
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
    cli_free(&ns.cfg);
    return exit_code;
}
