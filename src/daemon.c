/* The start-up handshake between the process that was started and the daemon
 * it forks: one byte over a pipe once the daemon serves; EOF without it means
 * the daemon exited or died first, and its exit status is the answer. */
#include "daemon.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"

static int g_ready_fd = -1; /* the child's end of the pipe, until ready */

int daemon_start(void)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return -errno;
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(p[0]);
        close(p[1]);
        return -e;
    }
    if (pid == 0) {
        close(p[0]);
        g_ready_fd = p[1];
        setsid();
        if (chdir("/") < 0) {
            /* only so that the daemon does not hold the caller's directory busy */
        }
        return 0;
    }
    close(p[1]);
    char b;
    ssize_t n;
    do
        n = read(p[0], &b, 1);
    while (n < 0 && errno == EINTR);
    if (n == 1)
        _exit(NSYNC_EXIT_OK);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(st))
        _exit(WEXITSTATUS(st) ? WEXITSTATUS(st) : NSYNC_EXIT_START);
    fprintf(stderr, "nsyncfs: error: the daemon died during start-up (%s)\n",
            WIFSIGNALED(st) ? strsignal(WTERMSIG(st)) : "unknown status");
    _exit(NSYNC_EXIT_START);
}

void daemon_ready(void)
{
    if (g_ready_fd < 0)
        return;
    int fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (fd >= 0) {
        dup2(fd, STDIN_FILENO);
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        if (fd > STDERR_FILENO)
            close(fd);
    }
    char b = 0;
    while (write(g_ready_fd, &b, 1) < 0 && errno == EINTR) {
    }
    close(g_ready_fd);
    g_ready_fd = -1;
}
