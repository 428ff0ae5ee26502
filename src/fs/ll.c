/* libfuse's low-level API in front of fs.c's path-based operations: node
 * ids to paths (nodes.c), entry and attribute replies, and the one thing
 * the high-level API could not do for us: a new kernel inode for a path
 * whose BACKING file was replaced by the fetch worker. */
#include "fs/ll.h"

#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <fuse_lowlevel.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h> /* RENAME_EXCHANGE */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "fs/nodes.h"
#include "nsync.h"

/* A name the kernel should drop (fuse_lowlevel_notify_inval_entry), or,
 * with ino set, an inode whose attributes and pages it should drop. */
struct ll_note {
    struct ll_note *next;
    uint64_t parent;
    uint64_t ino;
    char name[];
};

struct ll {
    struct nsync *ns;
    const struct fuse_operations *ops;
    struct fuse_session *se;
    pthread_mutex_t mu; /* the node table */
    struct nodes *nodes;
    double entry_timeout, attr_timeout;
    /* The notifier thread: telling the kernel to drop a name takes the
     * directory's lock in the kernel, which a FUSE request may hold while it
     * waits for the fetch worker; so the fetch worker only queues. */
    pthread_mutex_t qmu;
    pthread_cond_t qcv;
    struct ll_note *qhead, *qtail;
    bool qstop;
    bool notifier_started;
    pthread_t notifier;
};

static _Thread_local struct ll_caller tl_caller;
static _Thread_local fuse_req_t tl_req;

bool ll_interrupted(void)
{
    return tl_req && fuse_req_interrupted(tl_req);
}

const struct ll_caller *ll_caller(void)
{
    return &tl_caller;
}

static struct ll *enter(fuse_req_t req)
{
    struct ll *ll = fuse_req_userdata(req);
    const struct fuse_ctx *c = fuse_req_ctx(req);
    tl_caller = (struct ll_caller){.ns = ll->ns, .uid = c->uid, .gid = c->gid, .pid = c->pid};
    tl_req = req;
    return ll;
}

static struct node_ident ident_of(const struct stat *st)
{
    return (struct node_ident){.bino = (uint64_t)st->st_ino, .type = st->st_mode & S_IFMT};
}

static bool same_ident(const struct node_ident *a, const struct stat *st)
{
    return a->bino == (uint64_t)st->st_ino && (a->type & S_IFMT) == (st->st_mode & S_IFMT);
}

/* ---- notifier ---- */

static void queue_note(struct ll *ll, uint64_t parent, const char *name, uint64_t ino)
{
    size_t len = strlen(name);
    struct ll_note *n = malloc(sizeof *n + len + 1);
    if (!n)
        return; /* the kernel keeps the name up to entry_timeout; opens still check */
    n->next = NULL;
    n->parent = parent;
    n->ino = ino;
    memcpy(n->name, name, len + 1);
    pthread_mutex_lock(&ll->qmu);
    if (ll->qstop) {
        pthread_mutex_unlock(&ll->qmu);
        free(n);
        return;
    }
    if (ll->qtail)
        ll->qtail->next = n;
    else
        ll->qhead = n;
    ll->qtail = n;
    pthread_cond_signal(&ll->qcv);
    pthread_mutex_unlock(&ll->qmu);
}

static void *notifier_main(void *arg)
{
    struct ll *ll = arg;
    pthread_setname_np(pthread_self(), "ns-notify");
    pthread_mutex_lock(&ll->qmu);
    for (;;) {
        while (!ll->qhead && !ll->qstop)
            pthread_cond_wait(&ll->qcv, &ll->qmu);
        if (ll->qstop)
            break;
        struct ll_note *n = ll->qhead;
        ll->qhead = n->next;
        if (!ll->qhead)
            ll->qtail = NULL;
        pthread_mutex_unlock(&ll->qmu);
        int rc = n->ino ? fuse_lowlevel_notify_inval_inode(ll->se, n->ino, 0, 0)
                        : fuse_lowlevel_notify_inval_entry(ll->se, n->parent, n->name,
                                                           strlen(n->name));
        /* -ENOENT: the kernel no longer holds the parent, the name or the inode. */
        if (rc < 0 && rc != -ENOENT)
            log_debug("dropping the kernel's %s %s: %s", n->ino ? "cache of" : "name", n->name,
                      strerror(-rc));
        free(n);
        pthread_mutex_lock(&ll->qmu);
    }
    pthread_mutex_unlock(&ll->qmu);
    return NULL;
}

/* node no longer stands for what its name holds: the name goes from the
 * table and, later, from the kernel's cache. Table lock held. */
static void detach_locked(struct ll *ll, uint64_t node)
{
    uint64_t parent;
    char name[NAME_MAX + 1];
    if (nodes_name(ll->nodes, node, &parent, name, sizeof name) < 0)
        return;
    nodes_detach(ll->nodes, node);
    queue_note(ll, parent, name, 0);
}

/* ---- paths ---- */

static int path_of(struct ll *ll, fuse_ino_t ino, char *buf, size_t size)
{
    pthread_mutex_lock(&ll->mu);
    int rc = nodes_path(ll->nodes, ino, buf, size);
    pthread_mutex_unlock(&ll->mu);
    return rc;
}

/* The path of an operation that works by path alone: a node whose name
 * is gone answers -ESTALE, so that the kernel looks the path up again. */
static int path_needed(struct ll *ll, fuse_ino_t ino, char *buf, size_t size)
{
    int rc = path_of(ll, ino, buf, size);
    return rc == -ENOENT ? -ESTALE : rc;
}

/* The path of ino, or NULL when it has none (open but unlinked or
 * replaced: the operations then work through the handle). */
static const char *path_or_null(struct ll *ll, fuse_ino_t ino, char *buf, size_t size)
{
    return path_of(ll, ino, buf, size) == 0 ? buf : NULL;
}

static int child_path(struct ll *ll, fuse_ino_t parent, const char *name, char *buf,
                      size_t size)
{
    pthread_mutex_lock(&ll->mu);
    int rc = nodes_child_path(ll->nodes, parent, name, buf, size);
    pthread_mutex_unlock(&ll->mu);
    return rc == -ESTALE ? -ENOENT : rc;
}

/* ---- entries ---- */

/* Fill e for parent/name, which BACKING has as st; the node's lookup count
 * goes up by one. 0 or -errno. */
static int make_entry(struct ll *ll, fuse_ino_t parent, const char *name, const struct stat *st,
                      struct fuse_entry_param *e)
{
    struct node_ident id = ident_of(st);
    pthread_mutex_lock(&ll->mu);
    int64_t node = nodes_lookup(ll->nodes, parent, name, &id);
    pthread_mutex_unlock(&ll->mu);
    if (node < 0)
        return (int)node;
    memset(e, 0, sizeof *e);
    e->ino = (fuse_ino_t)node;
    e->generation = 1;
    e->attr = *st;
    e->attr_timeout = ll->attr_timeout;
    e->entry_timeout = ll->entry_timeout;
    return 0;
}

static void forget_one(struct ll *ll, fuse_ino_t ino)
{
    pthread_mutex_lock(&ll->mu);
    nodes_forget(ll->nodes, ino, 1);
    pthread_mutex_unlock(&ll->mu);
}

static void reply_entry(struct ll *ll, fuse_req_t req, const struct fuse_entry_param *e)
{
    if (fuse_reply_entry(req, e) < 0) /* the request was interrupted */
        forget_one(ll, e->ino);
}

/* After an operation made parent/name: answer with its entry. */
static void reply_new_entry(struct ll *ll, fuse_req_t req, fuse_ino_t parent, const char *name,
                            const char *path, int rc)
{
    struct stat st;
    if (rc == 0)
        rc = ll->ops->getattr(path, &st, NULL);
    struct fuse_entry_param e;
    if (rc == 0)
        rc = make_entry(ll, parent, name, &st, &e);
    if (rc < 0)
        fuse_reply_err(req, -rc);
    else
        reply_entry(ll, req, &e);
}

/* ---- operations ---- */

static void ll_init(void *userdata, struct fuse_conn_info *conn)
{
    struct ll *ll = userdata;
    tl_caller = (struct ll_caller){.ns = ll->ns};
    struct fuse_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.entry_timeout = 1.0;
    cfg.attr_timeout = 1.0;
    if (ll->ops->init)
        ll->ops->init(conn, &cfg);
    ll->entry_timeout = cfg.entry_timeout;
    ll->attr_timeout = cfg.attr_timeout;
}

static void ll_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct ll *ll = enter(req);
    char path[PATH_MAX + 1];
    int rc = child_path(ll, parent, name, path, sizeof path);
    reply_new_entry(ll, req, parent, name, path, rc);
}

static void ll_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
    struct ll *ll = fuse_req_userdata(req);
    pthread_mutex_lock(&ll->mu);
    nodes_forget(ll->nodes, ino, nlookup);
    pthread_mutex_unlock(&ll->mu);
    fuse_reply_none(req);
}

static void ll_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
    struct ll *ll = fuse_req_userdata(req);
    pthread_mutex_lock(&ll->mu);
    for (size_t i = 0; i < count; i++)
        nodes_forget(ll->nodes, forgets[i].ino, forgets[i].nlookup);
    pthread_mutex_unlock(&ll->mu);
    fuse_reply_none(req);
}

/* Attributes of ino without a handle (stat by path, or fstat: the kernel
 * sends no handle for that either). If its name now holds another object,
 * or none, the node answers for what it has open, if anything; otherwise
 * -ESTALE makes the kernel look the path up again. */
static int stat_node(struct ll *ll, fuse_ino_t ino, struct stat *st)
{
    char path[PATH_MAX + 1];
    struct node_ident id;
    pthread_mutex_lock(&ll->mu);
    int rc = nodes_path(ll->nodes, ino, path, sizeof path);
    if (nodes_ident(ll->nodes, ino, &id) < 0)
        rc = -ESTALE;
    pthread_mutex_unlock(&ll->mu);
    if (rc == 0) {
        rc = ll->ops->getattr(path, st, NULL);
        if (ino == FUSE_ROOT_ID || (rc == 0 && same_ident(&id, st)))
            return rc;
        if (rc < 0 && rc != -ENOENT)
            return rc;
    } else if (rc != -ENOENT) {
        return rc;
    }
    /* Replaced or gone under this node. */
    pthread_mutex_lock(&ll->mu);
    detach_locked(ll, ino);
    uint64_t fh = nodes_open_fh(ll->nodes, ino);
    log_debug("node %llu: its name holds another file now; answering for %s",
              (unsigned long long)ino, fh ? "its open file" : "nothing (ESTALE)");
    rc = -ESTALE;
    if (fh) {
        /* Under the table lock: release takes the handle out of the table
         * before it frees it. */
        struct fuse_file_info fi;
        memset(&fi, 0, sizeof fi);
        fi.fh = fh;
        rc = ll->ops->getattr(NULL, st, &fi);
    }
    pthread_mutex_unlock(&ll->mu);
    return rc;
}

static void ll_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct ll *ll = enter(req);
    struct stat st;
    int rc;
    if (fi) {
        char path[PATH_MAX + 1];
        rc = ll->ops->getattr(path_or_null(ll, ino, path, sizeof path), &st, fi);
    } else {
        rc = stat_node(ll, ino, &st);
    }
    if (rc < 0)
        fuse_reply_err(req, -rc);
    else
        fuse_reply_attr(req, &st, ll->attr_timeout);
}

static void ll_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int valid,
                       struct fuse_file_info *fi)
{
    struct ll *ll = enter(req);
    const struct fuse_operations *ops = ll->ops;
    char buf[PATH_MAX + 1];
    const char *path = path_or_null(ll, ino, buf, sizeof buf);
    int rc = 0;
    if (!path && !fi)
        rc = -ESTALE;
    if (rc == 0 && (valid & FUSE_SET_ATTR_MODE))
        rc = ops->chmod(path, attr->st_mode, fi);
    if (rc == 0 && (valid & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)))
        rc = ops->chown(path, (valid & FUSE_SET_ATTR_UID) ? attr->st_uid : (uid_t)-1,
                        (valid & FUSE_SET_ATTR_GID) ? attr->st_gid : (gid_t)-1, fi);
    if (rc == 0 && (valid & FUSE_SET_ATTR_SIZE))
        rc = ops->truncate(path, attr->st_size, fi);
    if (rc == 0 && (valid & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME))) {
        struct timespec tv[2];
        tv[0].tv_sec = tv[1].tv_sec = 0;
        tv[0].tv_nsec = (valid & FUSE_SET_ATTR_ATIME_NOW) ? UTIME_NOW
                        : (valid & FUSE_SET_ATTR_ATIME)   ? 0
                                                          : UTIME_OMIT;
        tv[1].tv_nsec = (valid & FUSE_SET_ATTR_MTIME_NOW) ? UTIME_NOW
                        : (valid & FUSE_SET_ATTR_MTIME)   ? 0
                                                          : UTIME_OMIT;
        if ((valid & FUSE_SET_ATTR_ATIME) && !(valid & FUSE_SET_ATTR_ATIME_NOW))
            tv[0] = attr->st_atim;
        if ((valid & FUSE_SET_ATTR_MTIME) && !(valid & FUSE_SET_ATTR_MTIME_NOW))
            tv[1] = attr->st_mtim;
        rc = ops->utimens(path, tv, fi);
    }
    struct stat st;
    if (rc == 0)
        rc = fi ? ops->getattr(path, &st, fi) : stat_node(ll, ino, &st);
    if (rc < 0)
        fuse_reply_err(req, -rc);
    else
        fuse_reply_attr(req, &st, ll->attr_timeout);
}

static void ll_readlink(fuse_req_t req, fuse_ino_t ino)
{
    struct ll *ll = enter(req);
    char path[PATH_MAX + 1], target[PATH_MAX + 1];
    int rc = path_needed(ll, ino, path, sizeof path);
    if (rc == 0)
        rc = ll->ops->readlink(path, target, sizeof target);
    if (rc < 0)
        fuse_reply_err(req, -rc);
    else
        fuse_reply_readlink(req, target);
}

/* mknod, mkdir, symlink: make parent/name, answer with its entry. */
static void make_common(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                        dev_t rdev, const char *link)
{
    struct ll *ll = enter(req);
    char path[PATH_MAX + 1];
    int rc = child_path(ll, parent, name, path, sizeof path);
    if (rc == 0)
        rc = link            ? ll->ops->symlink(link, path)
             : S_ISDIR(mode) ? ll->ops->mkdir(path, mode)
                             : ll->ops->mknod(path, mode, rdev);
    reply_new_entry(ll, req, parent, name, path, rc);
}

static void ll_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                     dev_t rdev)
{
    make_common(req, parent, name, mode, rdev, NULL); /* never a directory */
}

static void ll_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
    make_common(req, parent, name, (mode & ~S_IFMT) | S_IFDIR, 0, NULL);
}

static void ll_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
    make_common(req, parent, name, S_IFLNK | 0777, 0, link);
}

static void remove_common(fuse_req_t req, fuse_ino_t parent, const char *name, bool dir)
{
    struct ll *ll = enter(req);
    char path[PATH_MAX + 1];
    int rc = child_path(ll, parent, name, path, sizeof path);
    if (rc == 0)
        rc = dir ? ll->ops->rmdir(path) : ll->ops->unlink(path);
    if (rc == 0) {
        pthread_mutex_lock(&ll->mu);
        nodes_remove(ll->nodes, parent, name);
        pthread_mutex_unlock(&ll->mu);
    }
    fuse_reply_err(req, -rc);
}

static void ll_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    remove_common(req, parent, name, false);
}

static void ll_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    remove_common(req, parent, name, true);
}

static void ll_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                      const char *newname, unsigned int flags)
{
    struct ll *ll = enter(req);
    char from[PATH_MAX + 1], to[PATH_MAX + 1];
    int rc = child_path(ll, parent, name, from, sizeof from);
    if (rc == 0)
        rc = child_path(ll, newparent, newname, to, sizeof to);
    if (rc == 0)
        rc = ll->ops->rename(from, to, flags);
    if (rc == 0) {
        pthread_mutex_lock(&ll->mu);
        if (nodes_rename(ll->nodes, parent, name, newparent, newname,
                         (flags & RENAME_EXCHANGE) != 0) < 0) {
            /* Out of memory: forget both names rather than keep wrong ones. */
            nodes_remove(ll->nodes, parent, name);
            nodes_remove(ll->nodes, newparent, newname);
        }
        pthread_mutex_unlock(&ll->mu);
    }
    fuse_reply_err(req, -rc);
}

static void ll_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
    struct ll *ll = enter(req);
    char from[PATH_MAX + 1], to[PATH_MAX + 1];
    int rc = path_of(ll, ino, from, sizeof from);
    if (rc == 0)
        rc = child_path(ll, newparent, newname, to, sizeof to);
    if (rc == 0)
        rc = ll->ops->link(from, to);
    if (rc == 0)
        reply_new_entry(ll, req, newparent, newname, to, 0);
    else
        fuse_reply_err(req, -rc);
}

/* An open of a node whose name now holds another file would share this
 * node's cached size and pages with the readers of the old file. A reader
 * is checked on the file it opened: on a node already used, that is
 * -ESTALE, and the kernel looks the path up again (once) and opens the new
 * node; on a node fresh from that lookup (the file was replaced once more in
 * between), the handle bypasses the kernel's cache instead. Writers are not
 * checked: their writes go through their handle (no writeback cache), and
 * an -ESTALE could reach them when files are replaced faster than the
 * kernel's one retry (test_concurrent_appenders saw it). */
static int open_checked(struct ll *ll, fuse_ino_t ino, const char *path, struct fuse_file_info *fi)
{
    const struct fuse_operations *ops = ll->ops;
    struct node_ident id;
    pthread_mutex_lock(&ll->mu);
    int rc = nodes_ident(ll->nodes, ino, &id);
    bool fresh = nodes_fresh(ll->nodes, ino);
    pthread_mutex_unlock(&ll->mu);
    if (rc < 0)
        return rc;
    bool reader = (fi->flags & O_ACCMODE) == O_RDONLY && !(fi->flags & O_TRUNC);
    rc = ops->open(path, fi);
    if (rc < 0 || !reader || !S_ISREG(id.type))
        return rc;
    struct stat st;
    rc = ops->getattr(path, &st, fi);
    if (rc == 0 && same_ident(&id, &st))
        return 0;
    if (rc == 0 && fresh) {
        fi->direct_io = 1;
        fi->keep_cache = 0;
        return 0;
    }
    ops->release(path, fi);
    pthread_mutex_lock(&ll->mu);
    detach_locked(ll, ino);
    pthread_mutex_unlock(&ll->mu);
    return -ESTALE;
}

/* Record fi's handle on its node and answer the open (e: the entry of a
 * create, NULL for an open). If the answer cannot be delivered (the call was
 * interrupted), nobody will release the handle: we do, and a create's lookup
 * is taken back. */
static void reply_opened(struct ll *ll, fuse_req_t req, fuse_ino_t ino, const char *path,
                         struct fuse_file_info *fi, const struct fuse_entry_param *e)
{
    pthread_mutex_lock(&ll->mu);
    nodes_opened(ll->nodes, ino, fi->fh);
    pthread_mutex_unlock(&ll->mu);
    if ((e ? fuse_reply_create(req, e, fi) : fuse_reply_open(req, fi)) == 0)
        return;
    pthread_mutex_lock(&ll->mu);
    nodes_released(ll->nodes, ino, fi->fh);
    if (e)
        nodes_forget(ll->nodes, ino, 1);
    pthread_mutex_unlock(&ll->mu);
    ll->ops->release(path, fi);
}

static void ll_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct ll *ll = enter(req);
    char path[PATH_MAX + 1];
    int rc = path_needed(ll, ino, path, sizeof path);
    if (rc == 0)
        rc = open_checked(ll, ino, path, fi);
    if (rc < 0)
        fuse_reply_err(req, -rc);
    else
        reply_opened(ll, req, ino, path, fi, NULL);
}

static void ll_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                      struct fuse_file_info *fi)
{
    struct ll *ll = enter(req);
    const struct fuse_operations *ops = ll->ops;
    char path[PATH_MAX + 1];
    int rc = child_path(ll, parent, name, path, sizeof path);
    if (rc == 0)
        rc = ops->create(path, mode, fi);
    if (rc < 0) {
        fuse_reply_err(req, -rc);
        return;
    }
    struct stat st;
    struct fuse_entry_param e;
    rc = ops->getattr(path, &st, fi);
    if (rc == 0)
        rc = make_entry(ll, parent, name, &st, &e);
    if (rc < 0) {
        ops->release(path, fi);
        fuse_reply_err(req, -rc);
        return;
    }
    reply_opened(ll, req, e.ino, path, fi, &e);
}

static void ll_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    struct ll *ll = enter(req);
    char path[PATH_MAX + 1];
    struct fuse_bufvec *bv = NULL;
    int rc = ll->ops->read_buf(path_or_null(ll, ino, path, sizeof path), &bv, size, off, fi);
    if (rc < 0) {
        fuse_reply_err(req, -rc);
    } else {
        fuse_reply_data(req, bv, FUSE_BUF_SPLICE_MOVE);
    }
    if (bv) {
        for (size_t i = 0; i < bv->count; i++)
            if (!(bv->buf[i].flags & FUSE_BUF_IS_FD))
                free(bv->buf[i].mem);
        free(bv);
    }
}

static void ll_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                     struct fuse_file_info *fi)
{
    struct ll *ll = enter(req);
    char path[PATH_MAX + 1];
    int rc = ll->ops->write(path_or_null(ll, ino, path, sizeof path), buf, size, off, fi);
    if (rc < 0)
        fuse_reply_err(req, -rc);
    else
        fuse_reply_write(req, (size_t)rc);
}

static void ll_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct ll *ll = enter(req);
    char path[PATH_MAX + 1];
    fuse_reply_err(req, -ll->ops->flush(path_or_null(ll, ino, path, sizeof path), fi));
}

static void ll_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct ll *ll = enter(req);
    char path[PATH_MAX + 1];
    pthread_mutex_lock(&ll->mu);
    nodes_released(ll->nodes, ino, fi->fh);
    pthread_mutex_unlock(&ll->mu);
    ll->ops->release(path_or_null(ll, ino, path, sizeof path), fi);
    fuse_reply_err(req, 0);
}

static void ll_getlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, struct flock *lock)
{
    struct ll *ll = enter(req);
    char path[PATH_MAX + 1];
    int rc = ll->ops->lock(path_or_null(ll, ino, path, sizeof path), fi, F_GETLK, lock);
    if (rc < 0)
        fuse_reply_err(req, -rc);
    else
        fuse_reply_lock(req, lock);
}

/* A lock taken from another node may have moved the handle to a newer
 * version of the file (rlock_set's 1): what the kernel cached of this
 * inode (pages, size) is the old version's. */
static void lock_reply(struct ll *ll, fuse_req_t req, fuse_ino_t ino, int rc)
{
    tl_req = NULL;
    if (rc > 0) {
        int r = fuse_lowlevel_notify_inval_inode(ll->se, ino, 0, 0);
        if (r < 0 && r != -ENOENT)
            log_debug("invalidate inode %llu after a lock: %s", (unsigned long long)ino,
                      strerror(-r));
        rc = 0;
    }
    fuse_reply_err(req, -rc);
}

static void ll_setlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, struct flock *lock,
                     int sleep)
{
    struct ll *ll = enter(req);
    char path[PATH_MAX + 1];
    int rc = ll->ops->lock(path_or_null(ll, ino, path, sizeof path), fi, sleep ? F_SETLKW : F_SETLK,
                           lock);
    lock_reply(ll, req, ino, rc);
}

static void ll_flock(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, int op)
{
    struct ll *ll = enter(req);
    char path[PATH_MAX + 1];
    lock_reply(ll, req, ino, ll->ops->flock(path_or_null(ll, ino, path, sizeof path), fi, op));
}

static void ll_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    struct ll *ll = enter(req);
    char path[PATH_MAX + 1];
    fuse_reply_err(req, -ll->ops->fsync(path_or_null(ll, ino, path, sizeof path), datasync, fi));
}

static void ll_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct ll *ll = enter(req);
    char path[PATH_MAX + 1];
    int rc = path_needed(ll, ino, path, sizeof path);
    if (rc == 0)
        rc = ll->ops->opendir(path, fi);
    if (rc < 0)
        fuse_reply_err(req, -rc);
    else if (fuse_reply_open(req, fi) < 0)
        ll->ops->releasedir(path, fi);
}

struct dirbuf {
    fuse_req_t req;
    struct ll *ll;
    fuse_ino_t dir;
    const char *dirpath; /* readdirplus: entries come with their attributes */
    char *buf;
    size_t size, used;
    fuse_ino_t *counted; /* readdirplus: lookups to take back if the reply is lost */
    size_t ncounted, capcounted;
};

/* readdirplus: the entry and its attributes, as a lookup would answer (the
 * kernel counts it as one). An entry that cannot be stat'ed goes without
 * (ino 0: the kernel looks it up when it needs it). */
static int dir_fill_plus(struct dirbuf *d, const char *name, const struct stat *st, off_t next)
{
    struct fuse_entry_param e;
    memset(&e, 0, sizeof e);
    e.attr = *st;
    size_t need = fuse_add_direntry_plus(d->req, NULL, 0, name, &e, next);
    if (need > d->size - d->used)
        return 1;
    bool dots = strcmp(name, ".") == 0 || strcmp(name, "..") == 0;
    char path[PATH_MAX + 1];
    struct stat full;
    int n = snprintf(path, sizeof path, "%s%s%s", d->dirpath, d->dirpath[1] ? "/" : "", name);
    if (d->ncounted == d->capcounted) {
        size_t cap = d->capcounted ? d->capcounted * 2 : 64;
        fuse_ino_t *c = realloc(d->counted, cap * sizeof *c);
        if (c) {
            d->counted = c;
            d->capcounted = cap;
        }
    }
    if (!dots && d->ncounted < d->capcounted && n > 0 && (size_t)n < sizeof path &&
        d->ll->ops->getattr(path, &full, NULL) == 0) {
        if (make_entry(d->ll, d->dir, name, &full, &e) == 0)
            d->counted[d->ncounted++] = e.ino;
        else
            memset(&e, 0, sizeof e), e.attr = *st;
    }
    fuse_add_direntry_plus(d->req, d->buf + d->used, d->size - d->used, name, &e, next);
    d->used += need;
    return 0;
}

static int dir_fill(void *arg, const char *name, const struct stat *st, off_t next,
                    enum fuse_fill_dir_flags flags)
{
    struct dirbuf *d = arg;
    (void)flags;
    if (d->dirpath)
        return dir_fill_plus(d, name, st, next);
    size_t need = fuse_add_direntry(d->req, d->buf + d->used, d->size - d->used, name, st, next);
    if (need > d->size - d->used)
        return 1; /* full: this entry comes first next time */
    d->used += need;
    return 0;
}

static void readdir_common(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                           struct fuse_file_info *fi, bool plus)
{
    struct ll *ll = enter(req);
    char path[PATH_MAX + 1];
    const char *dirpath = path_or_null(ll, ino, path, sizeof path);
    struct dirbuf d = {.req = req, .ll = ll, .dir = ino, .dirpath = plus ? dirpath : NULL,
                       .buf = malloc(size), .size = size};
    if (!d.buf) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    if (plus && !dirpath) { /* a removed directory: no names to count */
        fuse_reply_buf(req, d.buf, 0);
        free(d.buf);
        return;
    }
    int rc = ll->ops->readdir(dirpath, &d, dir_fill, off, fi, 0);
    if (rc < 0 && d.used == 0)
        fuse_reply_err(req, -rc);
    else if (fuse_reply_buf(req, d.buf, d.used) < 0) /* interrupted: not counted */
        for (size_t i = 0; i < d.ncounted; i++)
            forget_one(ll, d.counted[i]);
    free(d.counted);
    free(d.buf);
}

static void ll_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    readdir_common(req, ino, size, off, fi, false);
}

/* Entries with their attributes: an ls -l or a find costs one request per
 * directory block instead of one lookup per name. */
static void ll_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                           struct fuse_file_info *fi)
{
    readdir_common(req, ino, size, off, fi, true);
}

static void ll_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct ll *ll = enter(req);
    char path[PATH_MAX + 1];
    ll->ops->releasedir(path_or_null(ll, ino, path, sizeof path), fi);
    fuse_reply_err(req, 0);
}

static void ll_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    struct ll *ll = enter(req);
    char path[PATH_MAX + 1];
    fuse_reply_err(req,
                   -ll->ops->fsyncdir(path_or_null(ll, ino, path, sizeof path), datasync, fi));
}

static void ll_statfs(fuse_req_t req, fuse_ino_t ino)
{
    struct ll *ll = enter(req);
    struct statvfs sv;
    int rc = ll->ops->statfs("/", &sv);
    (void)ino;
    if (rc < 0)
        fuse_reply_err(req, -rc);
    else
        fuse_reply_statfs(req, &sv);
}

static void ll_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
    struct ll *ll = enter(req);
    char path[PATH_MAX + 1];
    int rc = path_needed(ll, ino, path, sizeof path);
    if (rc == 0)
        rc = ll->ops->access(path, mask);
    fuse_reply_err(req, -rc);
}

static void ll_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
                         struct fuse_file_info *fi)
{
    struct ll *ll = enter(req);
    char path[PATH_MAX + 1];
    fuse_reply_err(req, -ll->ops->fallocate(path_or_null(ll, ino, path, sizeof path), mode, off,
                                            len, fi));
}

static void ll_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
                     struct fuse_file_info *fi)
{
    struct ll *ll = enter(req);
    char path[PATH_MAX + 1];
    off_t r = ll->ops->lseek(path_or_null(ll, ino, path, sizeof path), off, whence, fi);
    if (r < 0)
        fuse_reply_err(req, (int)-r);
    else
        fuse_reply_lseek(req, r);
}

static void ll_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
                        size_t size, int flags)
{
    struct ll *ll = enter(req);
    char path[PATH_MAX + 1];
    int rc = path_needed(ll, ino, path, sizeof path);
    if (rc == 0)
        rc = ll->ops->setxattr(path, name, value, size, flags);
    fuse_reply_err(req, -rc);
}

static void ll_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
    struct ll *ll = enter(req);
    char path[PATH_MAX + 1];
    int rc = path_needed(ll, ino, path, sizeof path);
    if (rc == 0)
        rc = ll->ops->removexattr(path, name);
    fuse_reply_err(req, -rc);
}

/* getxattr and listxattr: size 0 asks for the length only. */
static void reply_xattr(fuse_req_t req, int rc, const char *buf, size_t size)
{
    if (rc < 0)
        fuse_reply_err(req, -rc);
    else if (size == 0)
        fuse_reply_xattr(req, (size_t)rc);
    else
        fuse_reply_buf(req, buf, (size_t)rc);
}

static void ll_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
    struct ll *ll = enter(req);
    char path[PATH_MAX + 1];
    char *buf = size ? malloc(size) : NULL;
    int rc = size && !buf ? -ENOMEM : path_needed(ll, ino, path, sizeof path);
    if (rc == 0)
        rc = ll->ops->getxattr(path, name, buf, size);
    reply_xattr(req, rc, buf, size);
    free(buf);
}

static void ll_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
    struct ll *ll = enter(req);
    char path[PATH_MAX + 1];
    char *buf = size ? malloc(size) : NULL;
    int rc = size && !buf ? -ENOMEM : path_needed(ll, ino, path, sizeof path);
    if (rc == 0)
        rc = ll->ops->listxattr(path, buf, size);
    reply_xattr(req, rc, buf, size);
    free(buf);
}

static const struct fuse_lowlevel_ops ll_ops = {
    .init = ll_init,
    .lookup = ll_lookup,
    .forget = ll_forget,
    .forget_multi = ll_forget_multi,
    .getattr = ll_getattr,
    .setattr = ll_setattr,
    .readlink = ll_readlink,
    .mknod = ll_mknod,
    .mkdir = ll_mkdir,
    .symlink = ll_symlink,
    .unlink = ll_unlink,
    .rmdir = ll_rmdir,
    .rename = ll_rename,
    .link = ll_link,
    .open = ll_open,
    .create = ll_create,
    .read = ll_read,
    .write = ll_write,
    .flush = ll_flush,
    .release = ll_release,
    .fsync = ll_fsync,
    .getlk = ll_getlk,
    .setlk = ll_setlk,
    .flock = ll_flock,
    .opendir = ll_opendir,
    .readdir = ll_readdir,
    .readdirplus = ll_readdirplus,
    .releasedir = ll_releasedir,
    .fsyncdir = ll_fsyncdir,
    .statfs = ll_statfs,
    .access = ll_access,
    .fallocate = ll_fallocate,
    .lseek = ll_lseek,
    .setxattr = ll_setxattr,
    .getxattr = ll_getxattr,
    .listxattr = ll_listxattr,
    .removexattr = ll_removexattr,
};

/* ---- life cycle ---- */

int ll_new(struct nsync *ns, struct fuse_args *args, const struct fuse_operations *ops,
           struct ll **out)
{
    struct ll *ll = calloc(1, sizeof *ll);
    if (!ll)
        return -ENOMEM;
    ll->ns = ns;
    ll->ops = ops;
    ll->entry_timeout = ll->attr_timeout = 1.0;
    if (pthread_mutex_init(&ll->mu, NULL) != 0 || pthread_mutex_init(&ll->qmu, NULL) != 0 ||
        pthread_cond_init(&ll->qcv, NULL) != 0 || !(ll->nodes = nodes_new())) {
        free(ll);
        return -ENOMEM;
    }
    ll->se = fuse_session_new(args, &ll_ops, sizeof ll_ops, ll);
    if (!ll->se) {
        nodes_free(ll->nodes);
        free(ll);
        return -EINVAL;
    }
    *out = ll;
    return 0;
}

int ll_mount(struct ll *ll, const char *mountpoint)
{
    return fuse_session_mount(ll->se, mountpoint) == 0 ? 0 : -EIO;
}

struct fuse_session *ll_session(struct ll *ll)
{
    return ll->se;
}

int ll_loop(struct ll *ll, unsigned max_threads)
{
    struct fuse_loop_config *lc = fuse_loop_cfg_create();
    if (!lc)
        return -ENOMEM;
    fuse_loop_cfg_set_max_threads(lc, max_threads);
    if (pthread_create(&ll->notifier, NULL, notifier_main, ll) == 0)
        ll->notifier_started = true;
    else
        log_warn("no notifier thread: replaced files keep their kernel name until it expires");
    int rc = fuse_session_loop_mt(ll->se, lc);
    fuse_loop_cfg_destroy(lc);
    pthread_mutex_lock(&ll->qmu);
    ll->qstop = true;
    pthread_cond_signal(&ll->qcv);
    pthread_mutex_unlock(&ll->qmu);
    if (ll->notifier_started)
        pthread_join(ll->notifier, NULL);
    ll->notifier_started = false;
    return rc;
}

void ll_unmount(struct ll *ll)
{
    fuse_session_unmount(ll->se);
}

void ll_free(struct ll *ll)
{
    if (!ll)
        return;
    fuse_session_destroy(ll->se);
    for (struct ll_note *n = ll->qhead, *next; n; n = next) {
        next = n->next;
        free(n);
    }
    nodes_free(ll->nodes);
    pthread_cond_destroy(&ll->qcv);
    pthread_mutex_destroy(&ll->qmu);
    pthread_mutex_destroy(&ll->mu);
    free(ll);
}

void ll_invalidate(struct ll *ll, const char *rel)
{
    if (!ll || !rel || !*rel)
        return;
    /* Most installs are of paths the kernel has never looked up: nothing
     * to tell it, and no need to look at BACKING. */
    pthread_mutex_lock(&ll->mu);
    uint64_t node = nodes_find(ll->nodes, rel, NULL);
    pthread_mutex_unlock(&ll->mu);
    if (!node)
        return;
    struct stat st;
    bool there = fstatat(ll->ns->backing_fd, rel, &st, AT_SYMLINK_NOFOLLOW) == 0;
    pthread_mutex_lock(&ll->mu);
    /* A lookup may have made a new node for rel meanwhile (from what BACKING
     * has now): that one is current. */
    node = nodes_find(ll->nodes, rel, NULL);
    struct node_ident id;
    bool same = node && nodes_ident(ll->nodes, node, &id) == 0 && there && same_ident(&id, &st);
    if (node && !same)
        detach_locked(ll, node);
    pthread_mutex_unlock(&ll->mu);
    /* The same object changed in place (its mode, or bytes installed into a
     * file open here): drop what the kernel cached of it. Queued: dropping
     * pages waits for their locks, which a writer of the file holds while
     * its request waits for this very install. */
    if (same)
        queue_note(ll, 0, rel, node);
}
