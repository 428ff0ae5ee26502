/* The kernel's view of the mount: one node per inode the kernel holds (its
 * FUSE node id), with the name it has in its parent and the BACKING object it
 * stood for when the kernel learnt of it. Pure (no I/O, no locks): the FUSE
 * adapter (ll.c) serializes every call with its own lock. */
#ifndef NSYNC_NODES_H
#define NSYNC_NODES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define NODES_ROOT 1 /* FUSE_ROOT_ID */

struct nodes;

/* What a node stands for: the inode number and file type of the BACKING
 * object it was looked up as. A path whose BACKING object changed (a file
 * replaced by a rename) gets a new node, so the kernel gets a new inode. */
struct node_ident {
    uint64_t bino;
    mode_t type; /* S_IFMT bits */
};

/* A table holding the root alone, or NULL (out of memory). */
struct nodes *nodes_new(void);
void nodes_free(struct nodes *t);

/* The kernel looked parent/name up and BACKING has `id` there: the node to
 * answer with, its lookup count raised by one. A node of that name standing
 * for another object is detached first (see nodes_detach), and a new one is
 * made. The node's id (> 0; ids are never
 * reused), -ENOMEM, or -ENOENT if parent is no node or has lost its name. */
int64_t nodes_lookup(struct nodes *t, uint64_t parent, const char *name,
                     const struct node_ident *id);

/* The kernel forgets n lookups of node: it goes once it has no lookups and
 * no named children left. The root stays. */
void nodes_forget(struct nodes *t, uint64_t node, uint64_t n);

/* The name parent/name is gone (unlink, rmdir): its node, if any, loses the
 * name, and paths through it fail (-ENOENT). It stays until forgotten. */
void nodes_remove(struct nodes *t, uint64_t parent, const char *name);

/* What node's name holds in BACKING is no longer what node stood for (the
 * fetch worker replaced or removed it): the node keeps its name and path, so
 * that operations by path reach what is there now, but lookups no longer
 * find it, so the next lookup of the name makes a new node. */
void nodes_detach(struct nodes *t, uint64_t node);

/* rename(2) done in BACKING: the node of the target name (if any) loses
 * its name (as in nodes_remove) and the source's node (if any) takes it; with exchange the
 * two swap names. 0 or -ENOMEM (then nothing changed). */
int nodes_rename(struct nodes *t, uint64_t parent, const char *name, uint64_t newparent,
                 const char *newname, bool exchange);

/* The FUSE path of node ("/" for the root, "/a/b" below) into buf, detached
 * nodes included. 0, -ESTALE (no such node), -ENOENT (it or a parent was
 * removed) or -ENAMETOOLONG. */
int nodes_path(const struct nodes *t, uint64_t node, char *buf, size_t size);

/* The FUSE path of parent/name into buf; errors as nodes_path. */
int nodes_child_path(const struct nodes *t, uint64_t parent, const char *name, char *buf,
                     size_t size);

/* The name of node and its parent's id. 0, -ESTALE (no such node), -ENOENT
 * (no name) or -ENAMETOOLONG. */
int nodes_name(const struct nodes *t, uint64_t node, uint64_t *parent, char *buf, size_t size);

/* What node stands for. 0 or -ESTALE. */
int nodes_ident(const struct nodes *t, uint64_t node, struct node_ident *out);

/* The node a lookup of a catalog path ("a/b", no leading slash; "" is the
 * root) would find, and its parent's id into *parent (0 for the root). 0 if
 * there is none. */
uint64_t nodes_find(const struct nodes *t, const char *rel, uint64_t *parent);

/* Open handles of a node (fh as given to the kernel): one is kept, so that
 * a node whose name now stands for another object can still be stat'ed
 * through what it has open. */
void nodes_opened(struct nodes *t, uint64_t node, uint64_t fh);
/* True until node is first opened (nodes_opened). */
bool nodes_fresh(const struct nodes *t, uint64_t node);
void nodes_released(struct nodes *t, uint64_t node, uint64_t fh);
/* One open handle of node, or 0. */
uint64_t nodes_open_fh(const struct nodes *t, uint64_t node);

/* Nodes in the table, the root included. */
size_t nodes_count(const struct nodes *t);

#endif
