/* Extended attributes as nsyncfs replicates them: which names travel, the
 * one canonical encoding of a file's set (it rides in an ANNOUNCE and in the
 * catalog), and reading or applying a set on an open file. The codec is pure
 * and any thread may call it; the fd functions do file I/O only. */
#ifndef NSYNC_XATTRS_H
#define NSYNC_XATTRS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The most one file's encoded set may take. ext4 keeps all of an inode's
 * attributes in one block (4 KiB) unless ea_inode is on, so every set ext4
 * accepts fits; a larger one is refused at setxattr (E2BIG) rather than
 * carried by raft, its log and every snapshot. */
#define XATTRS_MAX (16u << 10)
#define XATTRS_NAME_MAX 255u     /* XATTR_NAME_MAX */
#define XATTRS_VALUE_MAX 65536u  /* XATTR_SIZE_MAX */

/* The names that replicate: user.*, trusted.*, security.* and the two POSIX
 * ACLs. Other system.* names are the kernel's own views, not data. */
bool xattrs_name_replicated(const char *name);

/* Encoding: entries in strcmp order of their names, each the name, a NUL,
 * the value's length (u32 little-endian) and the value. The empty set is
 * zero bytes. 0 if blob is such a set of replicated names within the limits
 * above, else -EINVAL. */
int xattrs_check(const void *blob, size_t len);

/* Walk a checked set: *off starts at 0; 1 and the next entry, or 0 at the end. */
int xattrs_next(const void *blob, size_t len, size_t *off, const char **name, const void **value,
                uint32_t *vlen);

/* The bytes an entry takes in the encoding. */
static inline size_t xattrs_entry_size(size_t name_len, size_t vlen)
{
    return name_len + 1 + 4 + vlen;
}

/* fd's replicated set, encoded into buf (XATTRS_MAX bytes): its length, or
 * -E2BIG past XATTRS_MAX, or -errno of the listing or reading. A file system
 * without extended attributes has the empty set. */
int xattrs_read_fd(int fd, uint8_t *buf);

/* Make fd's replicated set the checked set blob: names it lacks are removed,
 * the others set where they differ. A name this node may not hold (EPERM,
 * e.g. trusted.* without CAP_SYS_ADMIN; ENOTSUP) is skipped and counted in
 * *skipped; other errors stop it: -errno. Never reads more than it must. */
int xattrs_apply_fd(int fd, const void *blob, size_t len, unsigned *skipped);

/* fd's replicated set already is blob. */
bool xattrs_match_fd(int fd, const void *blob, size_t len);

#endif
