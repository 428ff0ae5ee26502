/* Levelled logging. The sink is chosen once at start-up and again after
 * daemonizing; after that the settings are only read. */
#include "common/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static int g_level = LOG_INFO;
static int g_syslog;
static const char *g_ident = "nsyncfs";
static atomic_int g_tee_level = -1; /* with syslog, also to stderr up to this level */

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

void log_tee_stderr(int level)
{
    atomic_store(&g_tee_level, level);
}

int log_enabled(int level)
{
    return level <= g_level;
}

void log_msg(int level, const char *fmt, ...)
{
    static const char *names[] = {"emerg", "alert", "crit", "error", "warn", "notice", "info", "debug"};
    if (level > g_level)
        return;
    va_list ap;
    va_start(ap, fmt);
    if (g_syslog)
        vsyslog(level, fmt, ap);
    if (g_syslog && level <= atomic_load(&g_tee_level)) {
        char line[2048];
        va_end(ap);
        va_start(ap, fmt);
        vsnprintf(line, sizeof line, fmt, ap);
        fprintf(stderr, "%s: %s: %s\n", g_ident, names[level & 7], line);
    } else if (!g_syslog) {
        char line[2048];
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        struct tm tm;
        localtime_r(&ts.tv_sec, &tm);
        int n = snprintf(line, sizeof line, "%02d:%02d:%02d.%03ld %s[%s] ", tm.tm_hour, tm.tm_min,
                         tm.tm_sec, ts.tv_nsec / 1000000, g_ident, names[level & 7]);
        if (n < 0)
            n = 0;
        vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
        fprintf(stderr, "%s\n", line); /* one call: lines from threads do not interleave */
    }
    va_end(ap);
}
