#!/usr/bin/env bash
# Benchmark nsyncfs side by side with the disk it runs on and with a plain FUSE
# pass-through, in one go on this machine (needs root: FUSE mounts, drop_caches).
#
#   scripts/bench.sh
#   RUNS=1 SIZE_MIB=64 scripts/bench.sh        # a quick run
#
# Targets, all on the same filesystem (one temp folder under $BENCH_TMP, /tmp):
#   native          a plain directory
#   passthrough_ll  libfuse's example, compiled now from the installed
#                   libfuse3-dev examples into build/bench/, default options
#   nsyncfs-1       a single-node nsyncfs (--cluster lists only itself)
#   nsyncfs-3       node 1 of a 3-node nsyncfs cluster on 127.0.0.1
#   nsyncfs-3-secret the same with --secret-file (a fresh `nsyncfs keygen`):
#                   every connection TLS 1.3, the cost of issue 13
#   nsyncfs-3-osync the same with -o sync (every close waits for its commit):
#                   the two create workloads only
#   base-1, base-3  the same two with the binary BASELINE names (a build of an
#                   earlier commit), when set: before/after in one run
# Workloads (scripts/bench_workloads.py, the same code for every target),
# medians of RUNS runs: FILES x 4 KiB creates (files/s), FSYNC_FILES x 4 KiB
# creates with fsync before close (files/s), a stat of each (stats/s), a user.* setxattr
# of each (sets/s; not on passthrough_ll, whose default has none); SIZE_MIB sequential
# write + fsync (MiB/s); cold sequential read of it (MiB/s); with TREE, tar xf of
# a tarball of it, rsync -a and cp -a of it, rm -rf of one (seconds). Before each timed
# step the clusters are left to finish replicating, and the page cache is synced.
# Then, on the 3-node cluster and on the one with the secret:
# ../shared/bench/syncbench.py (latency, small, large = SIZE_MIB, delete),
# each node's peak RSS during the first (VmHWM), and the
# idle CPU of every process over IDLE_S seconds. The large workload is also run
# with one native folder as writer and both checks: the floor of that yardstick.
# Rejoin (WORKLOADS with rejoin): a 3-node cluster of its own (and one of BASELINE's)
# gets REJOIN_FILES small files written on node 1; node 3 is unmounted
# (fusermount3 -u: a clean leave) and mounted again with nothing changed, timed from
# the mount command until its /v1/status says it is a member that lacks nothing;
# twice: page cache warm, then dropped before the mount (as after a reboot).
# Changed blocks (WORKLOADS with blocks): a 3-node cluster of its own (and one of
# BASELINE's) gets a BLOCKS_MIB file on node 1, then a 1 MiB rewrite in its middle;
# the bytes each replica moved for the change (file bytes and block maps).
# Output: a table on stdout; JSON (and the table) in bench-results/.
#
# Environment: RUNS (5: single runs here vary by up to 4x), SIZE_MIB (1024), FILES (2000),
#   FSYNC_FILES (500), IDLE_S (20), TREE (/usr/include: the tree workload's
#   source, copied once into the bench folder; empty: no tree workload),
#   SYNC_TIMEOUT (300, seconds each syncbench workload may wait),
#   WORKLOADS (latency,small,large,delete: the syncbench ones; add rejoin for the
#   rejoin workload, and WORKLOADS=rejoin runs it alone; the same for blocks),
#   REJOIN_FILES (50000), BLOCKS_MIB (512), BENCH_TMP (/tmp),
#   BASELINE (unset: path of another nsyncfs binary to run beside this one;
#   e.g. `git worktree add /tmp/base v; cmake -B /tmp/base/build -S /tmp/base && cmake --build /tmp/base/build`).
# Everything is unmounted, stopped and removed on exit, also on failure or Ctrl-C.
# shellcheck disable=SC2317  # cleanup runs from the EXIT trap
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/cluster-lib.sh
source "$REPO/scripts/cluster-lib.sh"

RUNS=${RUNS:-5}
SIZE_MIB=${SIZE_MIB:-1024}
FILES=${FILES:-2000}
FSYNC_FILES=${FSYNC_FILES:-500}
TREE=${TREE-/usr/include}
IDLE_S=${IDLE_S:-20}
SYNC_TIMEOUT=${SYNC_TIMEOUT:-300}
WORKLOADS=${WORKLOADS:-latency,small,large,delete}
REJOIN_FILES=${REJOIN_FILES:-50000}
REJOIN=0
if [[ ",$WORKLOADS," == *,rejoin,* ]]; then
  REJOIN=1
  WORKLOADS=$(echo ",$WORKLOADS," | sed 's/,rejoin,/,/g; s/^,//; s/,$//')
fi
BLOCKS_MIB=${BLOCKS_MIB:-512}
BLOCKS=0
if [[ ",$WORKLOADS," == *,blocks,* ]]; then
  BLOCKS=1
  WORKLOADS=$(echo ",$WORKLOADS," | sed 's/,blocks,/,/g; s/^,//; s/,$//')
fi
BENCH_TMP=${BENCH_TMP:-/tmp}
PORTS_1=47500  # single node: cluster port 47501, file server 47601
PORTS_3=47300  # 3 nodes: cluster ports 47301-47303, file servers 47401-47403
PORTS_B1=47700 # baseline, 1 node
PORTS_B3=47800 # baseline, 3 nodes
PORTS_S3=47900 # -o sync, 3 nodes
PORTS_T3=48100 # --secret-file, 3 nodes: cluster ports 48101-48103, file servers 48201-48203
PORTS_R3=48300 # rejoin, 3 nodes
PORTS_RB3=48500 # rejoin with the baseline, 3 nodes
PORTS_K3=48700  # changed blocks, 3 nodes
PORTS_KB3=48900 # changed blocks with the baseline, 3 nodes
BASELINE=${BASELINE:-}
if [[ -n "$BASELINE" && ! -x "$BASELINE" ]]; then
  echo "bench: BASELINE=$BASELINE is not an executable nsyncfs" >&2
  exit 2
fi
SYNCBENCH="$REPO/../shared/bench/syncbench.py"
DRIVER="$REPO/scripts/bench_workloads.py"
PT_SRC=/usr/share/doc/libfuse3-dev/examples/passthrough_ll.c

for v in RUNS SIZE_MIB FILES FSYNC_FILES IDLE_S SYNC_TIMEOUT REJOIN_FILES BLOCKS_MIB; do
  if ! [[ "${!v}" =~ ^[0-9]+$ ]] || ((${!v} < 1)); then
    echo "bench: $v='${!v}' must be a positive integer" >&2
    exit 2
  fi
done
if [[ "$(id -u)" -ne 0 ]]; then
  echo "bench: mounting FUSE filesystems (and dropping caches) needs root" >&2
  exit 1
fi

"$REPO/scripts/deps.sh"
nsync_build "$REPO"

echo "== building passthrough_ll from $PT_SRC into build/bench/"
mkdir -p "$REPO/build/bench"
PT_BIN="$REPO/build/bench/passthrough_ll"
nsync_build_passthrough "$PT_SRC" "$PT_BIN" || exit 1

# Disk: the bench file on 3 targets + 3 cluster nodes at most at once, syncbench's
# large file on 3 nodes, plus the creates and Raft logs.
copies=9                           # 3 targets + the 3-node clusters with and without the secret
[[ -n "$BASELINE" ]] && copies=13 # the baseline's 4 nodes hold the bench file too
tree_mib=0
[[ -n "$TREE" ]] && tree_mib=$(($(du -sm "$TREE" | cut -f1) * (copies + 2)))
need_mib=$((SIZE_MIB * copies + tree_mib + 2048))
[[ -z "$WORKLOADS" ]] && need_mib=2048 # the rejoin workload alone
((BLOCKS)) && need_mib=$((need_mib + BLOCKS_MIB * 4)) # its file on 3 nodes, and one staging copy
free_mib=$(df -Pm "$BENCH_TMP" | awk 'NR == 2 { print $4 }')
if ((free_mib < need_mib)); then
  echo "bench: $BENCH_TMP has $free_mib MiB free, the bench needs about $need_mib MiB (lower SIZE_MIB)" >&2
  exit 1
fi

DIR=$(mktemp -d "$BENCH_TMP/nsyncfs-bench.XXXX")
PT_PID=""
NODE_PIDS=()    # every nsyncfs process this script started
MOUNTS=()       # every mountpoint this script mounted

# True if process $1 runs (a zombie waiting to be reaped does not count).
alive() {
  local st
  st=$(awk '{ sub(/.*\) /, ""); print $1 }' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n "$st" && "$st" != Z && "$st" != X ]]
}

cleanup() {
  local rc=$? pid m i
  trap '' INT TERM
  set +e
  echo "== cleaning up $DIR"
  if [[ -n "$PT_PID" ]]; then
    fusermount3 -u "$DIR/pt/mnt" 2>/dev/null
    for ((i = 0; i < 50; i++)); do alive "$PT_PID" || break; sleep 0.1; done
    alive "$PT_PID" && kill "$PT_PID"
  fi
  for d in "$DIR/blocks-base" "$DIR/blocks" "$DIR/rejoin-base" "$DIR/rejoin" "$DIR/base-3" "$DIR/base-1" "$DIR/nsyncfs-3t" "$DIR/nsyncfs-3s" "$DIR/nsyncfs-3" "$DIR/nsyncfs-1"; do
    [[ -d "$d" ]] && nsync_cluster_stop "$d" >/dev/null
  done
  # anything still alive or mounted (a daemon that hung): kill it, by its pid
  for pid in "${NODE_PIDS[@]}"; do
    [[ -n "$pid" ]] && alive "$pid" && { echo "   killing nsyncfs $pid"; kill -9 "$pid"; }
  done
  for m in "${MOUNTS[@]}"; do
    if grep -q " $m fuse" /proc/mounts; then
      fusermount3 -u "$m" 2>/dev/null || fusermount3 -u -z "$m"
    fi
  done
  nsync_rm_unmounted "$DIR" bench
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

wait_mounted() { nsync_wait "${2:-10}" "the mount $1" mountpoint -q "$1"; }

# rejoin_run NAME DIR BASEPORT BINARY: the rejoin workload on a cluster of its own.
rejoin_run() {
  local name=$1 d=$2 base=$3 bin=$4 i url3
  echo "== rejoin ($name, $bin): $REJOIN_FILES files written on node 1 of a 3-node cluster"
  mkdir -p "$d"
  MOUNTS+=("$d/m1" "$d/m2" "$d/m3")
  nsync_cluster_start "$REPO" "$d" 3 "$base" "$bin" >/dev/null
  for i in 1 2 3; do NODE_PIDS+=("$(nsync_node_pid "$d" "$i")"); done
  local urls=(--url "$(nsync_status_url 1)" --url "$(nsync_status_url 2)" --url "$(nsync_status_url 3)")
  url3=$(nsync_status_url 3)
  "$NSYNC_PY" "$DRIVER" populate --dir "$d/m1" --files "$REJOIN_FILES"
  echo "   waiting for the 3 nodes to hold them"
  "$NSYNC_PY" "$DRIVER" settle "${urls[@]}" --timeout 1800
  sync
  "$NSYNC_PY" "$DRIVER" rejoin --cmd-file "$d/cmd3" --mnt "$d/m3" \
    --url "$url3" --files "$REJOIN_FILES" --json "$DIR/out/rejoin-$name.json"
  NODE_PIDS+=("$(nsync_node_pid "$d" 3)")
  nsync_cluster_stop "$d" >/dev/null
}

# blocks_run NAME DIR BASEPORT BINARY: the changed-blocks workload on a cluster of its own.
blocks_run() {
  local name=$1 d=$2 base=$3 bin=$4 i
  echo "== blocks ($name, $bin): a 1 MiB change in the middle of a $BLOCKS_MIB MiB file written on node 1"
  mkdir -p "$d"
  MOUNTS+=("$d/m1" "$d/m2" "$d/m3")
  nsync_cluster_start "$REPO" "$d" 3 "$base" "$bin" >/dev/null
  for i in 1 2 3; do NODE_PIDS+=("$(nsync_node_pid "$d" "$i")"); done
  "$NSYNC_PY" "$DRIVER" blocks --dir "$d/m1" --mib "$BLOCKS_MIB" \
    --check "node2=$d/m2,$(nsync_status_url 2)" --check "node3=$d/m3,$(nsync_status_url 3)" \
    --json "$DIR/out/blocks-$name.json"
  nsync_cluster_stop "$d" >/dev/null
}

mkdir -p "$DIR/out"
if ((BLOCKS)); then
  blocks_run nsyncfs "$DIR/blocks" "$PORTS_K3" "$REPO/build/nsyncfs"
  [[ -n "$BASELINE" ]] && blocks_run base "$DIR/blocks-base" "$PORTS_KB3" "$BASELINE"
  echo "== 1 MiB change in $BLOCKS_MIB MiB: MiB moved per replica (seconds from the close to installed):"
  mkdir -p "$REPO/bench-results"
  for f in "$DIR"/out/blocks-*.json; do
    echo "   $(basename "$f" .json): $("$NSYNC_PY" -c 'import json,sys; d=json.load(open(sys.argv[1]))["nodes"]; print("; ".join("%s %.2f MiB (%.2f s)%s" % (k, v["moved_mib"], v["installed_s"], "" if v["identical"] else " NOT IDENTICAL") for k, v in sorted(d.items())))' "$f")"
    cp "$f" "$REPO/bench-results/$(basename "$f" .json)-$(date +%Y%m%d-%H%M%S).json"
  done
  [[ -z "$WORKLOADS" ]] && ((!REJOIN)) && exit 0
fi
if ((REJOIN)); then
  rejoin_run nsyncfs "$DIR/rejoin" "$PORTS_R3" "$REPO/build/nsyncfs"
  [[ -n "$BASELINE" ]] && rejoin_run base "$DIR/rejoin-base" "$PORTS_RB3" "$BASELINE"
  echo "== rejoin of $REJOIN_FILES unchanged files (seconds from the mount command to caught up):"
  for f in "$DIR"/out/rejoin-*.json; do
    echo "   $(basename "$f" .json): $("$NSYNC_PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print("; ".join("%s %.2f s (hashed %s, trusted %s)" % (k, d[k]["rejoin_s"], d[k]["hashed"], d[k]["trusted"]) for k in ("warm", "cold")))' "$f")"
  done
  mkdir -p "$REPO/bench-results"
  for f in "$DIR"/out/rejoin-*.json; do
    cp "$f" "$REPO/bench-results/$(basename "$f" .json)-$(date +%Y%m%d-%H%M%S).json"
  done
  [[ -z "$WORKLOADS" ]] && exit 0
fi

echo "== targets in $DIR"
mkdir -p "$DIR/native" "$DIR/pt/src" "$DIR/pt/mnt" "$DIR/nsyncfs-1" "$DIR/nsyncfs-3" "$DIR/nsyncfs-3s" \
  "$DIR/nsyncfs-3t" "$DIR/out"

echo "   passthrough_ll: $PT_BIN -f -o source=$DIR/pt/src $DIR/pt/mnt"
MOUNTS+=("$DIR/pt/mnt")
# passthrough_ll keeps an fd open per inode it knows: a tree needs more than
# the default 1024.
(ulimit -n "$(ulimit -Hn)" && exec "$PT_BIN" -f -o source="$DIR/pt/src" "$DIR/pt/mnt") >"$DIR/pt.log" 2>&1 &
PT_PID=$!
wait_mounted "$DIR/pt/mnt"

echo "   nsyncfs, 1 node:"
MOUNTS+=("$DIR/nsyncfs-1/m1")
nsync_cluster_start "$REPO" "$DIR/nsyncfs-1" 1 "$PORTS_1"
NODE_PIDS+=("$(nsync_node_pid "$DIR/nsyncfs-1" 1)")
URLS_1=("$(nsync_status_url 1)")
echo "   nsyncfs, 3 nodes:"
MOUNTS+=("$DIR/nsyncfs-3/m1" "$DIR/nsyncfs-3/m2" "$DIR/nsyncfs-3/m3")
nsync_cluster_start "$REPO" "$DIR/nsyncfs-3" 3 "$PORTS_3"
URLS_3=()
for i in 1 2 3; do
  NODE_PIDS+=("$(nsync_node_pid "$DIR/nsyncfs-3" "$i")")
  URLS_3+=("$(nsync_status_url "$i")")
done
echo "   pids: passthrough_ll $PT_PID, nsyncfs-1 ${NODE_PIDS[0]}, nsyncfs-3 ${NODE_PIDS[*]:1}"
URL_LIST=$(IFS=,; echo "${URLS_1[*]},${URLS_3[*]}")
echo "   nsyncfs, 3 nodes, -o sync:"
MOUNTS+=("$DIR/nsyncfs-3s/m1" "$DIR/nsyncfs-3s/m2" "$DIR/nsyncfs-3s/m3")
NSYNC_MOUNT_OPTS=sync nsync_cluster_start "$REPO" "$DIR/nsyncfs-3s" 3 "$PORTS_S3"
for i in 1 2 3; do
  NODE_PIDS+=("$(nsync_node_pid "$DIR/nsyncfs-3s" "$i")")
  URL_LIST+=",$(nsync_status_url "$i")"
done
echo "   nsyncfs, 3 nodes, --secret-file:"
"$REPO/build/nsyncfs" keygen "$DIR/secret.key" >/dev/null
MOUNTS+=("$DIR/nsyncfs-3t/m1" "$DIR/nsyncfs-3t/m2" "$DIR/nsyncfs-3t/m3")
NSYNC_SECRET="$DIR/secret.key" nsync_cluster_start "$REPO" "$DIR/nsyncfs-3t" 3 "$PORTS_T3"
for i in 1 2 3; do
  NODE_PIDS+=("$(nsync_node_pid "$DIR/nsyncfs-3t" "$i")")
  URL_LIST+=",$(nsync_status_url "$i")"
done
BASE_TARGETS=()
BASE_PROCS=()
if [[ -n "$BASELINE" ]]; then
  echo "   baseline $BASELINE, 1 node and 3 nodes:"
  mkdir -p "$DIR/base-1" "$DIR/base-3"
  MOUNTS+=("$DIR/base-1/m1" "$DIR/base-3/m1" "$DIR/base-3/m2" "$DIR/base-3/m3")
  nsync_cluster_start "$REPO" "$DIR/base-1" 1 "$PORTS_B1" "$BASELINE"
  BASE_PROCS+=(--proc "base-1=$(nsync_node_pid "$DIR/base-1" 1)")
  NODE_PIDS+=("$(nsync_node_pid "$DIR/base-1" 1)")
  URL_LIST+=",$(nsync_status_url 1)"
  nsync_cluster_start "$REPO" "$DIR/base-3" 3 "$PORTS_B3" "$BASELINE"
  for i in 1 2 3; do
    NODE_PIDS+=("$(nsync_node_pid "$DIR/base-3" "$i")")
    BASE_PROCS+=(--proc "base-3 node $i=$(nsync_node_pid "$DIR/base-3" "$i")")
    URL_LIST+=",$(nsync_status_url "$i")"
  done
  BASE_TARGETS=(--target base-1="$DIR/base-1/m1" --target base-3="$DIR/base-3/m1")
fi

TREE_ARGS=()
if [[ -n "$TREE" ]]; then
  echo "== tree workload source: $TREE as $DIR/tree.tar and $DIR/tree-src"
  mkdir -p "$DIR/tree-src"
  tar cf "$DIR/tree.tar" -C "$(dirname "$TREE")" "$(basename "$TREE")"
  tar xf "$DIR/tree.tar" -C "$DIR/tree-src"
  TREE_ARGS=(--tree "$DIR/tree.tar" --tree-src "$DIR/tree-src/$(basename "$TREE")")
fi

t_start=$(date +%s)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== workloads: RUNS=$RUNS SIZE_MIB=$SIZE_MIB FILES=$FILES FSYNC_FILES=$FSYNC_FILES"
"$NSYNC_PY" "$DRIVER" run --runs "$RUNS" --size-mib "$SIZE_MIB" --files "$FILES" \
  --fsync-files "$FSYNC_FILES" \
  --target native="$DIR/native" --target passthrough_ll="$DIR/pt/mnt" \
  --target nsyncfs-1="$DIR/nsyncfs-1/m1" --target nsyncfs-3="$DIR/nsyncfs-3/m1" \
  --target nsyncfs-3-secret="$DIR/nsyncfs-3t/m1" \
  --target nsyncfs-3-osync="$DIR/nsyncfs-3s/m1" --creates-only nsyncfs-3-osync \
  "${BASE_TARGETS[@]}" "${TREE_ARGS[@]}" --settle all="$URL_LIST" --json "$DIR/out/workloads.json"

PROCS=(--proc "passthrough_ll=$PT_PID" --proc "nsyncfs-1=${NODE_PIDS[0]}")
for i in 1 2 3; do PROCS+=(--proc "nsyncfs-3 node $i=${NODE_PIDS[$i]}"); done
PROCS+=("${BASE_PROCS[@]}")

SB_ARGS=()
if [[ -f "$SYNCBENCH" ]]; then
  echo "== peak RSS so far, then reset it (clear_refs)"
  "$NSYNC_PY" "$DRIVER" procs "${PROCS[@]}" --reset-hwm --json "$DIR/out/procs-before.json"
  echo "== syncbench on the 3-node cluster: $WORKLOADS, large $SIZE_MIB MiB; write m1, check m2 m3"
  "$NSYNC_PY" "$SYNCBENCH" --write "$DIR/nsyncfs-3/m1" --check "$DIR/nsyncfs-3/m2" \
    --check "$DIR/nsyncfs-3/m3" --workloads "$WORKLOADS" --large-mib "$SIZE_MIB" \
    --timeout "$SYNC_TIMEOUT" --json "$DIR/out/syncbench.json" >/dev/null
  SB_ARGS=(--syncbench "$DIR/out/syncbench.json" --procs-before "$DIR/out/procs-before.json")
  echo "== syncbench on the 3-node cluster with the secret: the same"
  "$NSYNC_PY" "$SYNCBENCH" --write "$DIR/nsyncfs-3t/m1" --check "$DIR/nsyncfs-3t/m2" \
    --check "$DIR/nsyncfs-3t/m3" --workloads "$WORKLOADS" --large-mib "$SIZE_MIB" \
    --timeout "$SYNC_TIMEOUT" --json "$DIR/out/syncbench-secret.json" >/dev/null
  SB_ARGS+=(--syncbench-secret "$DIR/out/syncbench-secret.json")
  if [[ ",$WORKLOADS," == *,large,* ]]; then
    # What syncbench's large workload costs by itself here: it times the write
    # and then hashes each checked copy through its path, one after the other.
    echo "== syncbench floor: large $SIZE_MIB MiB, writer and both checks one native folder"
    mkdir -p "$DIR/native/floor"
    sync
    "$NSYNC_PY" "$SYNCBENCH" --write "$DIR/native/floor" --check "$DIR/native/floor" \
      --check "$DIR/native/floor" --workloads large --large-mib "$SIZE_MIB" \
      --timeout "$SYNC_TIMEOUT" --json "$DIR/out/syncbench-floor.json" >/dev/null
    rm -rf "$DIR/native/floor"
    SB_ARGS+=(--syncbench-floor "$DIR/out/syncbench-floor.json")
  fi
else
  echo "== $SYNCBENCH is missing (the shared/ folder beside the repo): no syncbench"
fi

echo "== waiting for the clusters to settle, then idle CPU over $IDLE_S s"
"$NSYNC_PY" "$DRIVER" settle --url "${URLS_1[0]}" --url "${URLS_3[0]}" --url "${URLS_3[1]}" \
  --url "${URLS_3[2]}" || true
sleep 1
"$NSYNC_PY" "$DRIVER" procs "${PROCS[@]}" --idle-seconds "$IDLE_S" --json "$DIR/out/procs-after.json"
t_took=$(($(date +%s) - t_start))
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

mkdir -p "$REPO/bench-results"
stamp=$(date +%Y%m%d-%H%M%S)
OUT="$REPO/bench-results/bench-$stamp.json"
commit=$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo unknown)
echo
"$NSYNC_PY" "$DRIVER" report --workloads "$DIR/out/workloads.json" "${SB_ARGS[@]}" \
  --procs-after "$DIR/out/procs-after.json" --json "$OUT" \
  --meta "date=$(date '+%Y-%m-%d %H:%M %Z')" \
  --meta "machine=$(nproc) cores, $(uname -r), $(findmnt -n -o FSTYPE -T "$DIR") on $(findmnt -n -o SOURCE -T "$DIR"), loopback" \
  --meta "load=$load_start at the start, $load_end at the end" \
  --meta "commit=$commit" --meta "measuring_s=$t_took" \
  --meta "command=RUNS=$RUNS SIZE_MIB=$SIZE_MIB FILES=$FILES FSYNC_FILES=$FSYNC_FILES scripts/bench.sh" |
  tee "${OUT%.json}.txt"
echo
echo "== $OUT (measuring took $t_took s)"
