/* The record format of .nsyncfs/unsent (fs/journal.c): each record is one
 * path and its NUL. Decoding is pure (no fs state, no I/O, any thread) so
 * that it can be unit-tested and fuzzed: the file is read at start from
 * BACKING, where a crash or another program may have left anything. */
#ifndef NSYNC_FS_JOURNAL_REC_H
#define NSYNC_FS_JOURNAL_REC_H

#include <stddef.h>

/* Call each(path, data) for every record of buf[0..n) that names a path a
 * replay may announce: path_check clean and not under .nsyncfs. Records
 * that do not are skipped, and so is a last record without its NUL (a write
 * torn by a crash: a prefix of a path is not that path). buf is not
 * modified and needs no terminator. each returns 0 to go on, anything else
 * to stop (returned). 0 when every record was seen. */
int journal_records(const char *buf, size_t n, int (*each)(const char *path, void *data), void *data);

#endif
