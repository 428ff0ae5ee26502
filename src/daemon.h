/* Going to the background without lying about it: the parent process stays
 * until the daemon serves (or failed), then exits with the daemon's verdict,
 * so `mount`, fstab and scripts see a start-up failure as one. */
#ifndef NSYNC_DAEMON_H
#define NSYNC_DAEMON_H

/* Fork. The parent never returns: it waits until the child calls
 * daemon_ready (exit 0) or exits or dies before that (exit with the child's
 * code; a signal is NSYNC_EXIT_START with a line on stderr). The child
 * returns 0 in a new session, its stderr still the caller's, so that what
 * goes wrong during start-up reaches whoever started it. Call from main,
 * before any thread exists. -errno if the fork or the pipe failed. */
int daemon_start(void);

/* In the child, once serving: release the parent (exit 0) and detach stdin,
 * stdout and stderr (to /dev/null). No-op if daemon_start was not called.
 * Main thread only. */
void daemon_ready(void);

#endif
