#!/usr/bin/env bash
# pjdfstest (the POSIX syscall conformance suite) from the mount root of node 1
# of a 3-node nsyncfs cluster, then a comparison of the three nodes' trees.
# Needs root (FUSE mounts, the suite changes owners and makes devices).
#
#   scripts/posix-suite.sh          # nsyncfs, node 1 of 3
#   scripts/posix-suite.sh all      # also native ext4, passthrough_ll, nsyncfs 1 node
#
# The suite is built from the read-only copy at ../shared/tools/pjdfstest (next
# to the repository; PJDFSTEST overrides it) in a temp folder, never in the
# repository. Without that copy it says so and exits 0 ("skipped").
# Environment: NSYNCFS_BIN (build/nsyncfs), POSIX_TMP (/tmp), PROVE_FILES
#   (tests/ subfolders to run, e.g. "mkfifo mknod"; default all),
#   NSYNC_MOUNT_OPTS (allow_other: the suite acts as other users).
# Output: one table, target / subtests / failed / files that did not finish,
# and the trees' differences; exit 1 if the nodes' trees differ.
# shellcheck disable=SC2317  # cleanup runs from the EXIT trap
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/cluster-lib.sh
source "$REPO/scripts/cluster-lib.sh"

PJD_SRC=${PJDFSTEST:-$REPO/../shared/tools/pjdfstest}
BIN=${NSYNCFS_BIN:-$REPO/build/nsyncfs}
POSIX_TMP=${POSIX_TMP:-/tmp}
export NSYNC_MOUNT_OPTS=${NSYNC_MOUNT_OPTS-allow_other}
ALL=0
case "${1:-}" in
"") ;;
all) ALL=1 ;;
*)
  echo "usage: $0 [all]" >&2
  exit 2
  ;;
esac

if [[ ! -f "$PJD_SRC/pjdfstest.c" ]]; then
  echo "posix-suite: no pjdfstest copy at $PJD_SRC: skipped"
  exit 0
fi
if [[ "$(id -u)" -ne 0 ]]; then
  echo "posix-suite: needs root (FUSE mounts, chown, mknod)" >&2
  exit 1
fi
if [[ ! -x "$BIN" ]]; then
  echo "posix-suite: $BIN is not built (cmake -B build && cmake --build build)" >&2
  exit 1
fi

DIR=$(mktemp -d "$POSIX_TMP/nsyncfs-posix.XXXX")
PT_PID=""
CLUSTERS=()

cleanup() {
  local rc=$? d i
  trap '' INT TERM
  set +e
  if [[ -n "$PT_PID" ]]; then
    fusermount3 -u "$DIR/pt/mnt" 2>/dev/null
    for ((i = 0; i < 50; i++)); do kill -0 "$PT_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$PT_PID" 2>/dev/null && kill "$PT_PID"
  fi
  for d in "${CLUSTERS[@]}"; do nsync_cluster_stop "$d" >/dev/null; done
  nsync_rm_unmounted "$DIR" posix-suite
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "== building pjdfstest from $PJD_SRC in $DIR/pjd"
cp -a "$PJD_SRC" "$DIR/pjd"
if ! (cd "$DIR/pjd" && autoreconf -ifs && ./configure && make pjdfstest) >"$DIR/pjd-build.log" 2>&1; then
  tail -n 30 "$DIR/pjd-build.log" >&2
  echo "posix-suite: building pjdfstest failed (needs autoconf automake; scripts/deps.sh)" >&2
  exit 1
fi

TESTS=("$DIR/pjd/tests")
if [[ -n "${PROVE_FILES:-}" ]]; then
  TESTS=()
  for t in $PROVE_FILES; do TESTS+=("$DIR/pjd/tests/$t"); done
fi

RESULTS=()
# run_suite NAME ROOT: prove -r from ROOT, one result line into RESULTS.
run_suite() {
  local name=$1 root=$2 log="$DIR/prove-$1.log" t0 secs ran failed unfinished
  echo "== $name: prove -r from $root"
  t0=$(date +%s)
  (cd "$root" && prove -r "${TESTS[@]}") >"$log" 2>&1 || true
  secs=$(($(date +%s) - t0))
  # "Files=237, Tests=8792, ..." and per failed file "(Wstat: 0 Tests: 12 Failed: 3)";
  # a file that stopped early says "Bad plan. You planned 7 tests but ran 1."
  ran=$(sed -n 's/^Files=[0-9]*, Tests=\([0-9]*\),.*/\1/p' "$log" | tail -n 1)
  # (a clean run has no "Failed:" at all: grep's status must not end the script)
  failed=$({ grep -o 'Failed: [0-9]*)' "$log" || true; } | awk '{ s += $2 } END { print s + 0 }')
  unfinished=$(grep -c 'Bad plan' "$log" || true)
  RESULTS+=("$name|${ran:-?}|$failed|$unfinished|$secs")
  grep -E '^/.*\(Wstat' "$log" | sed "s|$DIR/pjd/||; s|^|   |" | head -n 60 || true
}

# start_cluster NAME N BASEPORT: N nodes under $DIR/NAME; echoes nothing.
start_cluster() {
  mkdir -p "$DIR/$1"
  CLUSTERS+=("$DIR/$1")
  nsync_cluster_start "$REPO" "$DIR/$1" "$2" "$3" "$BIN" >/dev/null
}

if ((ALL)); then
  mkdir -p "$DIR/native"
  run_suite native "$DIR/native"
  PT_SRC=/usr/share/doc/libfuse3-dev/examples/passthrough_ll.c
  if nsync_build_passthrough "$PT_SRC" "$DIR/passthrough_ll"; then
    mkdir -p "$DIR/pt/src" "$DIR/pt/mnt"
    (ulimit -n "$(ulimit -Hn)" &&
      exec "$DIR/passthrough_ll" -f -o allow_other,default_permissions,source="$DIR/pt/src" "$DIR/pt/mnt") \
      >"$DIR/pt.log" 2>&1 &
    PT_PID=$!
    nsync_wait 10 "the passthrough_ll mount" mountpoint -q "$DIR/pt/mnt"
    run_suite passthrough_ll "$DIR/pt/mnt"
  else
    echo "   passthrough_ll: not built (see above), left out"
  fi
  start_cluster nsyncfs-1 1 46500 # cluster port 46501, file server 46601
  run_suite nsyncfs-1 "$DIR/nsyncfs-1/m1"
fi

start_cluster nsyncfs-3 3 46700 # cluster ports 46701-46703, file servers 46801-46803
run_suite nsyncfs-3 "$DIR/nsyncfs-3/m1"

# The suite removes what it made; whatever is left must be the same on every
# node once the cluster has caught up (bounded wait: replication is async).
diffs() { rsync -a -n -i --checksum --delete "$DIR/nsyncfs-3/m1/" "$DIR/nsyncfs-3/m$1/" 2>&1; }
trees_equal() { [[ -z "$(diffs 2)" && -z "$(diffs 3)" ]]; }
echo "== comparing the trees of nodes 1, 2, 3 (rsync -a -n -i --checksum --delete)"
tree_rc=0
if nsync_wait 60 "nodes 2 and 3 to match node 1" trees_equal; then
  echo "   the same on all three nodes ($(find "$DIR/nsyncfs-3/m1" -mindepth 1 | wc -l) entries left by the suite)"
else
  tree_rc=1
  for i in 2 3; do diffs "$i" | sed "s/^/   node $i: /" | head -n 40; done
fi

echo
echo "| target | subtests | failed | files that stopped early | seconds |"
echo "|---|---|---|---|---|"
for r in "${RESULTS[@]}"; do
  IFS='|' read -r n t f u s <<<"$r"
  echo "| $n | $t | $f | $u | $s |"
done
exit "$tree_rc"
