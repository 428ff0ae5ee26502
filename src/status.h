/* `nsyncfs status [--json] [MOUNTPOINT | HOST:PORT]`: a node's /v1/status as
 * a table a person reads at a glance, or as JSON, with an exit code for
 * scripts and monitoring. */
#ifndef NSYNC_STATUS_H
#define NSYNC_STATUS_H

/* Exit codes of `nsyncfs status`. */
enum {
    STATUS_HEALTHY = 0,
    STATUS_DEGRADED = 1,    /* no quorum, catching up, or a member unreachable */
    STATUS_UNREACHABLE = 2, /* the node does not answer; also bad usage */
};

/* argv[0] is "status". Returns the exit code; prints to stdout (stderr for
 * usage and connection errors). Call from main before anything else;
 * initialises libcurl itself. */
int status_main(int argc, char **argv);

#endif
