/* Levelled logging. The sink is chosen once at start-up and again after
 * daemonizing; after that the settings are only read. Each line is one
 * write, so lines from different threads never interleave. */
#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int g_level = LOG_INFO;
static int g_syslog;
static int g_file_fd = -1;  /* -o log_file= or the daemon's fallback */
static bool g_journal;      /* stderr goes to journald: "<N>" prefixes */
static const char *g_ident = "nsyncfs";
static atomic_int g_tee_level = -1; /* with syslog or a file, also to stderr up to this level */

static const char *const names[] = {"emerg", "alert", "crit", "error", "warn", "notice", "info", "debug"};

void log_init(const char *ident, int level, int to_syslog)
{
    g_ident = ident;
    g_level = level;
    log_set_syslog(to_syslog);
}

void log_set_syslog(int to_syslog)
{
    g_syslog = to_syslog;
    if (to_syslog)
        openlog(g_ident, LOG_PID, LOG_DAEMON);
}

int log_set_file(const char *path)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
    if (fd < 0)
        return -errno;
    if (g_file_fd >= 0)
        close(g_file_fd);
    g_file_fd = fd;
    g_syslog = 0;
    return 0;
}

bool log_stderr_is_journal(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    struct stat st;
    unsigned long long dev, ino;
    if (!js || sscanf(js, "%llu:%llu", &dev, &ino) != 2 || fstat(STDERR_FILENO, &st) < 0)
        return false;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void log_set_journal(bool on)
{
    g_journal = on;
}

bool log_syslog_available(void)
{
    struct stat st;
    return stat("/dev/log", &st) == 0 && S_ISSOCK(st.st_mode);
}

void log_tee_stderr(int level)
{
    atomic_store(&g_tee_level, level);
}

int log_enabled(int level)
{
    return level <= g_level;
}

static void log_write(int fd, const char *line, size_t n)
{
    while (n > 0) {
        ssize_t k = write(fd, line, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return; /* nowhere left to say it */
        line += k;
        n -= (size_t)k;
    }
}

/* "HH:MM:SS.mmm nsyncfs[level] message\n" (or "<N>nsyncfs[level] ..." for
 * journald) into line; returns its length. */
static size_t log_format(char *line, size_t sz, int level, bool journal, bool date, const char *fmt,
                         va_list ap)
{
    int n;
    if (journal) {
        n = snprintf(line, sz, "<%d>%s[%s] ", level & 7, g_ident, names[level & 7]);
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        struct tm tm;
        localtime_r(&ts.tv_sec, &tm);
        char day[16] = "";
        if (date) /* a file outlives the day: say which */
            strftime(day, sizeof day, "%Y-%m-%d ", &tm);
        n = snprintf(line, sz, "%s%02d:%02d:%02d.%03ld %s[%s] ", day, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, g_ident, names[level & 7]);
    }
    if (n < 0)
        n = 0;
    if ((size_t)n < sz)
        vsnprintf(line + n, sz - (size_t)n, fmt, ap);
    size_t len = strlen(line);
    if (len + 1 >= sz)
        len = sz - 2;
    line[len++] = '\n';
    line[len] = '\0';
    return len;
}

void log_msg(int level, const char *fmt, ...)
{
    if (level > g_level)
        return;
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    bool elsewhere = g_syslog || g_file_fd >= 0;
    if (g_file_fd >= 0) {
        size_t n = log_format(line, sizeof line, level, false, true, fmt, ap);
        log_write(g_file_fd, line, n);
    } else if (g_syslog) {
        vsyslog(level, fmt, ap);
    }
    if (elsewhere && level <= atomic_load(&g_tee_level)) {
        va_end(ap);
        va_start(ap, fmt);
        char msg[2048];
        vsnprintf(msg, sizeof msg, fmt, ap);
        int n = snprintf(line, sizeof line, "%s: %s: %s\n", g_ident, names[level & 7], msg);
        if (n > 0)
            log_write(STDERR_FILENO, line, strlen(line));
    } else if (!elsewhere) {
        size_t n = log_format(line, sizeof line, level, g_journal, false, fmt, ap);
        log_write(STDERR_FILENO, line, n);
    }
    va_end(ap);
}
