/* sd_notify's wire format, written here because it is one sendto: the
 * datagram goes to $NOTIFY_SOCKET, a path or, with a leading '@', a name in
 * the abstract namespace. Failures are returned, never fatal: a node serves
 * whether or not the service manager hears of it. */
#include "common/notify.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* The address $NOTIFY_SOCKET names, its length in *len. 1: none set;
 * -EINVAL: set but not a socket we can reach. */
static int notify_addr(struct sockaddr_un *sa, socklen_t *len)
{
    const char *name = getenv("NOTIFY_SOCKET");
    if (!name || !*name)
        return 1;
    size_t n = strlen(name);
    if ((name[0] != '/' && name[0] != '@') || n >= sizeof sa->sun_path)
        return -EINVAL;
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    memcpy(sa->sun_path, name, n);
    if (name[0] == '@')
        sa->sun_path[0] = '\0'; /* abstract: no terminating NUL counts */
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (name[0] == '/'));
    return 0;
}

bool notify_enabled(void)
{
    struct sockaddr_un sa;
    socklen_t len;
    return notify_addr(&sa, &len) == 0;
}

int notify_send(const char *msg)
{
    struct sockaddr_un sa;
    socklen_t len;
    int rc = notify_addr(&sa, &len);
    if (rc != 0)
        return rc > 0 ? 0 : rc;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    ssize_t n;
    do
        n = sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa, len);
    while (n < 0 && errno == EINTR);
    rc = n < 0 ? -errno : 0;
    close(fd);
    return rc;
}

int notify_status(const char *fmt, ...)
{
    char buf[512] = "STATUS=";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + 7, sizeof buf - 7, fmt, ap);
    va_end(ap);
    for (char *p = buf; *p; p++)
        if (*p == '\n')
            *p = ' '; /* one line: a newline would start another key */
    return notify_send(buf);
}
