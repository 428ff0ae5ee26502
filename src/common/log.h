/* Levelled logging to stderr (foreground), syslog (daemon) or a file
 * (-o log_file=, or a daemon where no syslog socket exists). Safe from any
 * thread. Messages say what failed, on which path or peer, and why. */
#ifndef NSYNC_LOG_H
#define NSYNC_LOG_H

#include <stdbool.h>
#include <syslog.h>

/* Call once, before any thread starts. level is a syslog level (LOG_ERR,
 * LOG_WARNING, LOG_INFO, LOG_DEBUG); to_syslog selects the sink. */
void log_init(const char *ident, int level, int to_syslog);
void log_set_syslog(int to_syslog);
/* Append every line to path from now on (created 0640 if missing), instead
 * of stderr or syslog. 0 or -errno (the sink is then unchanged). Call
 * before any thread starts. */
int log_set_file(const char *path);
/* Whether stderr is a journald stream ($JOURNAL_STREAM names its device
 * and inode): then each stderr line starts with "<N>", its syslog priority,
 * and carries no time stamp of its own (journald adds one). */
bool log_stderr_is_journal(void);
void log_set_journal(bool on);
/* Whether a syslog daemon listens on /dev/log (else syslog(3) drops lines). */
bool log_syslog_available(void);
/* While a daemon starts, its stderr is still its caller's: with syslog or a
 * file as the sink, messages up to level also go there (-1: none). Any
 * thread. */
void log_tee_stderr(int level);
int log_enabled(int level);
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) do { if (log_enabled(LOG_DEBUG)) log_msg(LOG_DEBUG, __VA_ARGS__); } while (0)

#endif
