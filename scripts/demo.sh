#!/usr/bin/env bash
# A 3-node nsyncfs cluster on this machine, in one temp folder:
#   scripts/demo.sh            install deps, build, make a cluster secret
#                              (nsyncfs keygen), start 3 nodes with it, show a
#                              file written on node 1 appear on nodes 2 and 3
#   scripts/demo.sh stop DIR   unmount all three nodes and remove DIR
# Needs root (FUSE mounts). The nodes keep running after the demo: play with
# DIR/m1, DIR/m2, DIR/m3, then stop them as printed at the end.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/cluster-lib.sh
source "$REPO/scripts/cluster-lib.sh"
N=3
BASE_PORT=47100   # cluster ports 47101-47103, file-server ports 47201-47203

if [[ "${1:-}" == "stop" ]]; then
  d=${2:-}
  if [[ -z "$d" ]]; then
    echo "usage: scripts/demo.sh stop DIR   (DIR as printed by scripts/demo.sh)" >&2
    exit 2
  fi
  d=$(realpath -m -- "$d")
  case "$d" in
    /tmp/nsyncfs-demo.*) ;;
    *) echo "refusing: $d is not a demo folder (/tmp/nsyncfs-demo.*)" >&2; exit 2 ;;
  esac
  nsync_cluster_stop "$d"
  exit
fi
if [[ $# -gt 0 ]]; then
  echo "usage: scripts/demo.sh | scripts/demo.sh stop DIR" >&2
  exit 2
fi
if [[ "$(id -u)" -ne 0 ]]; then
  echo "the demo mounts FUSE filesystems: run it as root" >&2
  exit 1
fi

"$REPO/scripts/deps.sh"
nsync_build "$REPO"

DIR=$(mktemp -d /tmp/nsyncfs-demo.XXXX)
on_fail() {
  echo
  echo "the demo failed; cleaning up $DIR" >&2
  if [[ -f "$DIR/cmd1" ]]; then
    echo "to see a node's log, run it by hand in the foreground (-f), e.g.:" >&2
    echo "  $(cat "$DIR/cmd1") -f" >&2
  fi
  nsync_cluster_stop "$DIR" || true
}
trap on_fail ERR

echo "== a cluster secret: $DIR/secret.key (copy it to every node of a real cluster)"
"$REPO/build/nsyncfs" keygen "$DIR/secret.key"
export NSYNC_SECRET="$DIR/secret.key"
echo "== starting $N nodes in $DIR"
t0=$(nsync_now_ms)
nsync_cluster_start "$REPO" "$DIR" "$N" "$BASE_PORT"
echo "   all mounted, leader agreed in $(($(nsync_now_ms) - t0)) ms"
for ((i = 1; i <= N; i++)); do
  fport=${NSYNC_PORTS[$((N + i - 1))]}
  printf '   node %d status: ' "$i"
  # Anyone may read the status (monitoring); its certificate is the cluster's own.
  curl -sk "https://$NSYNC_HOST:$fport/v1/status" | head -c 300
  echo
done

echo
echo "== writing $DIR/m1/hello.txt on node 1"
msg="hello from node 1 at $(date '+%H:%M:%S.%N')"
t0=$(nsync_now_ms)
printf '%s\n' "$msg" >"$DIR/m1/hello.txt"
echo "   write+close took $(($(nsync_now_ms) - t0)) ms"
same() { [[ "$(cat "$1" 2>/dev/null)" == "$msg" ]]; }
for i in 2 3; do
  nsync_wait 20 "hello.txt on node $i" same "$DIR/m$i/hello.txt"
  echo "   node $i has it after $(($(nsync_now_ms) - t0)) ms:"
  echo "   \$ cat $DIR/m$i/hello.txt"
  echo "   $(cat "$DIR/m$i/hello.txt")"
done
trap - ERR

cat <<EOF

== the cluster keeps running. Try:
   echo hi > $DIR/m2/x; cat $DIR/m3/x; ls -l $DIR/m1

== to stop it (unmount all three, remove $DIR):
   $REPO/scripts/demo.sh stop $DIR
   or by hand:
EOF
for ((i = 1; i <= N; i++)); do echo "   fusermount3 -u $DIR/m$i"; done
echo "   rm -rf $DIR"
