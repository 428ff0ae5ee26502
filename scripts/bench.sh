#!/usr/bin/env bash
# Benchmark (first version): build, start a 3-node cluster in a temp folder,
# run the shared yardstick (../shared/bench/syncbench.py) writing on node 1
# and checking nodes 2 and 3, save its JSON under bench-results/, stop the
# cluster. Needs root (FUSE).
#   scripts/bench.sh [extra syncbench arguments, e.g. --latency-files 100]
#   WORKLOADS=latency,small,large,delete scripts/bench.sh
# shellcheck disable=SC2317  # cleanup runs from the EXIT trap
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/cluster-lib.sh
source "$REPO/scripts/cluster-lib.sh"
N=3
BASE_PORT=47300
WORKLOADS=${WORKLOADS:-latency,small,delete}
SYNCBENCH="$REPO/../shared/bench/syncbench.py"

if [[ ! -f "$SYNCBENCH" ]]; then
  echo "bench: $SYNCBENCH is missing (the shared/ folder beside the repo): skipping"
  exit 0
fi
if [[ "$(id -u)" -ne 0 ]]; then
  echo "bench: mounting FUSE filesystems needs root" >&2
  exit 1
fi

"$REPO/scripts/deps.sh"
nsync_build "$REPO"

DIR=$(mktemp -d /tmp/nsyncfs-bench.XXXX)
cleanup() { nsync_cluster_stop "$DIR" >/dev/null || echo "bench: could not clean $DIR" >&2; }
trap cleanup EXIT

echo "== starting $N nodes in $DIR"
nsync_cluster_start "$REPO" "$DIR" "$N" "$BASE_PORT"

mkdir -p "$REPO/bench-results"
OUT="$REPO/bench-results/syncbench-$(date +%Y%m%d-%H%M%S).json"
echo "== syncbench: workloads $WORKLOADS, write on m1, check m2 m3"
rc=0
"$NSYNC_PY" "$SYNCBENCH" --write "$DIR/m1" --check "$DIR/m2" --check "$DIR/m3" \
  --workloads "$WORKLOADS" --json "$OUT" "$@" >/dev/null || rc=$?
if ((rc == 0)); then
  echo "== results: $OUT"
else
  echo "bench: syncbench failed (exit $rc)" >&2
fi
exit "$rc"
