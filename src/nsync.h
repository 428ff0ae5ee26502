/* The one context every module receives: configuration parsed by main.c, the
 * BACKING directory fds opened before mounting, and the modules' handles.
 * Nothing in here is a global; main.c owns the single instance. */
#ifndef NSYNC_H
#define NSYNC_H

#include <pthread.h>
#include <stdbool.h>
#include <time.h>
#include <stdint.h>
#include <stddef.h>

#include "common/addr.h"
#include "common/metrics.h"

#define NSYNC_DATA_DIR ".nsyncfs"   /* under BACKING; hidden from the mount */
#define NSYNC_HOST_MAX ADDR_HOST_MAX
#define NSYNC_ADDR_MAX ADDR_MAX     /* "host:port", "[v6]:port" (common/addr.h) */

struct fsm;
struct cluster;
struct xfer_server;
struct xfer_fetcher;
struct cluster_peer;
struct fs;
struct reconcile;

/* One node of the cluster as named on the command line. */
struct nsync_peer {
    uint64_t id;                   /* nsync_node_id(host, cport) */
    char host[NSYNC_HOST_MAX];
    uint16_t cport;                /* raft port */
    uint16_t fport;                /* HTTP file-server port */
};

struct secret;

struct nsync_config {
    const char *backing;           /* absolute path, owned by main.c */
    const char *mountpoint;        /* absolute path, owned by main.c */
    char host[NSYNC_HOST_MAX];     /* listened on; may be a wildcard (0.0.0.0, ::) */
    char advertise[NSYNC_HOST_MAX]; /* what other nodes are told: --advertise, else host;
                                    * never a wildcard. The node id hashes it. */
    char source[NSYNC_HOST_MAX];   /* requests to peers leave from here: advertise when it
                                    * is an address of this machine (the leader checks a
                                    * forwarded request's source, sender.c); "": the
                                    * kernel's choice (advertise is behind NAT) */
    uint16_t cport, fport;
    struct nsync_peer *peers;      /* every node incl. this one, sorted by id */
    size_t n_peers;
    unsigned lock_timeout_ms;      /* -o lock_timeout=S, default 30 s */
    unsigned lease_ms;             /* -o lease=S, default 10 s */
    unsigned lock_cache_ms;        /* -o lock_cache=S, default 60 s: how long an unused
                                    * path lock stays cached here (0: no cache) */
    bool strict_excl;              /* -o strict_excl: O_EXCL creates take the cluster
                                    * lock first (exclusive cluster-wide) */
    bool sync;                     /* -o sync: close() and metadata changes wait for
                                    * their commit (durable.c) */
    unsigned submit_timeout_ms;    /* how long a change waits for a quorum */
    bool allow_other;              /* -o allow_other: other users reach the mount, so
                                    * the kernel checks permissions (default_permissions) */
    bool foreground;               /* -f: stay in front, log to stderr */
    int log_level;                 /* LOG_ERR..LOG_DEBUG (syslog levels) */
    char *log_file;                /* -o log_file=: absolute, malloc'd (cli_free); NULL: none */
    struct secret *secret;         /* --secret-file, read at start (cli.c owns it);
                                    * NULL: plain HTTP and TCP (loopback or -o insecure) */
    bool insecure;                 /* -o insecure: no secret on a reachable address */
};

/* What /metrics counts that no module keeps for itself (any thread). */
struct nsync_metrics {
    _Atomic uint64_t commits;           /* commands of this node committed by the leader */
    struct metrics_hist commit_latency; /* a batch handed to the leader until applied */
    _Atomic uint64_t served_bytes;      /* file bytes sent to fetching peers */
    _Atomic uint64_t served_files;
};

struct nsync {
    struct nsync_config cfg;
    struct nsync_metrics metrics;
    uint64_t self_id;

    int backing_fd;                /* O_DIRECTORY fd of BACKING, opened before mount */
    int data_fd;                   /* BACKING/.nsyncfs */
    int staging_fd;                /* BACKING/.nsyncfs/staging */
    char raft_dir[4096];           /* BACKING/.nsyncfs/raft */

    /* The replicated catalog. Written only by the cluster thread (raft apply),
     * under fsm_lock held for writing; every other thread reads it under
     * fsm_lock held for reading and copies what it needs before unlocking. */
    struct fsm *fsm;
    pthread_rwlock_t fsm_lock;

    struct cluster *cluster;
    struct cluster_peer *client;   /* HTTP client pool: forwarding to the leader */
    struct xfer_server *server;
    struct xfer_fetcher *fetcher;
    struct fs *fs;
    struct reconcile *reconcile;   /* only while a join's catch-up runs; else NULL */
};

/* Stable, non-zero id of a node: XXH3-64 of "host:cport" as addr_format
 * writes it ("[v6]:cport"). The same on every node for the same address,
 * whatever the order of --cluster. */
uint64_t nsync_node_id(const char *host, uint16_t cport);

/* The one spelling of a node id, in logs, /v1/status, the status command,
 * /metrics and the join/leave requests: 16 lowercase hex digits. */
#define NSYNC_ID_STRLEN 17
void nsync_id_str(uint64_t id, char out[NSYNC_ID_STRLEN]);
/* Exactly 16 hex digits (either case). 0 or -EINVAL. */
int nsync_id_parse(const char *s, uint64_t *id);

/* The peer with this id, or NULL. */
const struct nsync_peer *nsync_peer_by_id(const struct nsync *ns, uint64_t id);

/* Wall-clock milliseconds. Used only to stamp commands on the leader; the
 * FSM never reads a clock. */
uint64_t nsync_now_ms(void);

/* Monotonic milliseconds, for timeouts and back-off. */
uint64_t nsync_mono_ms(void);
uint64_t nsync_mono_us(void);
/* *ts = CLOCK_MONOTONIC now + us, for pthread_cond_timedwait on a
 * condition made by nsync_cond_init_mono. */
void nsync_deadline(struct timespec *ts, uint64_t us);
/* A condition variable whose timed waits use CLOCK_MONOTONIC (immune to
 * clock steps). 0 or -errno. */
int nsync_cond_init_mono(pthread_cond_t *cv);

#endif
