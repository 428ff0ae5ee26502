/* Deletes that happened while this node was out of the cluster. A clean
 * leave saves the list of paths the node held (the manifest); after the node
 * rejoins and has fetched everything the cluster lists, the paths of that
 * list that the cluster no longer has, and that nobody changed locally since,
 * are deleted here too; what exists only here is announced. */
#ifndef NSYNC_RECONCILE_H
#define NSYNC_RECONCILE_H

struct nsync;
struct reconcile;

/* Write the manifest (BACKING/.nsyncfs/known) from the catalog. Call after a
 * successful leave, before the FSM is freed. 0 or -errno. Any thread. */
int reconcile_save(struct nsync *ns);

/* If this node joined (cluster_joined) or a manifest exists, load the
 * manifest and start the thread that, once the node has caught up, applies the manifest and
 * announces local-only paths; *out is NULL when there is nothing to do. 0 or -errno.
 * ns->cluster and ns->fs must exist; the fetch worker, which calls
 * reconcile_before_install, starts after it. */
int reconcile_start(struct nsync *ns, struct reconcile **out);
void reconcile_stop(struct reconcile *r);

/* The fetch worker is about to replace rel with the cluster's version. If
 * this node changed rel while it was out of the cluster (it differs from the
 * manifest, or the manifest never had it), the local file is first renamed
 * to "rel.nsync-conflict-NODE-TIMESTAMP" (announced later as local-only):
 * the cluster's version wins, the local edit is kept beside it. No-op once
 * the catch-up is over or r is NULL. Any thread. */
void reconcile_before_install(struct reconcile *r, const char *rel);

#endif
