/* Levelled logging. The sink is chosen once at start-up and again after
 * daemonizing; after that the settings are only read. */
#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static int g_level = LOG_INFO;
static int g_syslog;
static const char *g_ident = "nsyncfs";

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
    if (g_syslog) {
        vsyslog(level, fmt, ap);
    } else {
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
