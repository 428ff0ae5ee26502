/* The command line and the configuration file of nsyncfs: one table of
 * options, reached as `--name VALUE`, `--name=VALUE`, `-o name=VALUE` (what
 * mount(8) and fstab give) and `name = value` lines of a --config file. */
#ifndef NSYNC_CLI_H
#define NSYNC_CLI_H

#include <fuse_opt.h>

struct nsync_config;

/* Exit codes of the daemon (documented in --help and the README). */
enum {
    NSYNC_EXIT_OK = 0,       /* clean stop (unmount, SIGTERM, SIGINT) */
    NSYNC_EXIT_RUNTIME = 1,  /* failure while serving */
    NSYNC_EXIT_USAGE = 2,    /* bad command line or configuration file */
    NSYNC_EXIT_START = 3,    /* mount or start-up failure */
};

/* Parse argv into *cfg (cleared first) and the options FUSE gets into
 * *fuse_args (argv[0], -o fsname/subtype, and every -o option that is not
 * ours), then check what can be checked before mounting: BACKING and
 * MOUNTPOINT exist and are directories, the mount point is not mounted, the
 * ports are free. The first problem found is one line on stderr and
 * exit(NSYNC_EXIT_USAGE); --help and --version print and exit(0). Options on
 * the command line win over the same keys in the --config file.
 * cfg->backing, cfg->mountpoint and cfg->peers are malloc'd and owned by the
 * caller (cli_free); fuse_args is the caller's (fuse_opt_free_args).
 * Call once, from main, before any thread exists. */
void cli_parse(int argc, char **argv, struct nsync_config *cfg, struct fuse_args *fuse_args);
void cli_free(struct nsync_config *cfg);

/* `nsyncfs keygen FILE`: write a new cluster secret; returns the exit code
 * (a problem is one line on stderr and exit(NSYNC_EXIT_USAGE)). */
int cli_keygen(int argc, char **argv);

/* One line "nsyncfs: error: ..." on stderr and exit(code). */
void cli_die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));

#endif
