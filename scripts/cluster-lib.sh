# shellcheck shell=bash
# Shared by scripts/demo.sh and scripts/bench.sh (source it; do not run it):
# start a local nsyncfs cluster of daemonized nodes on 127.0.0.1 in one
# folder (b<i>/ BACKING, m<i>/ mounts, cluster.env), wait for it, stop it.

NSYNC_HOST=127.0.0.1
NSYNC_PY=/usr/bin/python3

# nsync_build REPO: configure and build into REPO/build.
nsync_build() {
  local repo=$1
  echo "== building nsyncfs"
  if ! { cmake -S "$repo" -B "$repo/build" >/dev/null &&
    cmake --build "$repo/build" -j"$(nproc)" >/dev/null; }; then
    echo "build failed: run 'cmake --build $repo/build' to see why" >&2
    return 1
  fi
}

# True if TCP port $1 can be bound on 127.0.0.1 now. SO_REUSEADDR as nsyncfs
# does, so a port left in TIME_WAIT by a cluster that just stopped counts as free.
nsync_port_free() {
  "$NSYNC_PY" - "$1" <<'EOF'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
EOF
}

# nsync_pick_ports N BASE: 2N ports into the array NSYNC_PORTS. Prefers the
# fixed ports BASE+1..BASE+N (cluster) and BASE+101..BASE+100+N (file server)
# so the commands are easy to read; any that is taken is replaced by a free one.
nsync_pick_ports() {
  local n=$1 base=$2 i p
  NSYNC_PORTS=()
  for ((i = 1; i <= n; i++)); do NSYNC_PORTS+=($((base + i))); done
  for ((i = 1; i <= n; i++)); do NSYNC_PORTS+=($((base + 100 + i))); done
  for i in "${!NSYNC_PORTS[@]}"; do
    p=${NSYNC_PORTS[$i]}
    if ! nsync_port_free "$p"; then
      p=$("$NSYNC_PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
      echo "   port ${NSYNC_PORTS[$i]} is taken, using $p"
      NSYNC_PORTS[i]=$p
    fi
  done
}

# nsync_build_passthrough SRC OUT: compile libfuse's passthrough_ll example
# (SRC, from libfuse3-dev) into OUT; on failure the compiler's log goes to stderr.
nsync_build_passthrough() {
  local src=$1 out=$2
  if [[ ! -f "$src" ]]; then
    echo "$src is missing (package libfuse3-dev)" >&2
    return 1
  fi
  # shellcheck disable=SC2046  # pkg-config prints several words on purpose
  if ! cc -Wall -O2 $(pkg-config --cflags fuse3) "$src" -o "$out" \
    $(pkg-config --libs fuse3) 2>"$out.build.log"; then
    cat "$out.build.log" >&2
    echo "could not compile passthrough_ll" >&2
    return 1
  fi
}

# nsync_rm_unmounted DIR WHO: remove DIR, unless something is still mounted
# below it (then WHO says so on stderr and DIR stays).
nsync_rm_unmounted() {
  if grep -q " $1/" /proc/mounts; then
    echo "$2: something is still mounted under $1: not removing it" >&2
  else
    rm -rf --one-file-system -- "$1"
  fi
}

nsync_now_ms() { date +%s%3N; }

# nsync_wait SECONDS WHAT CMD...: run CMD every 20 ms until it succeeds.
nsync_wait() {
  local secs=$1 what=$2
  shift 2
  local deadline=$(($(nsync_now_ms) + secs * 1000))
  until "$@"; do
    if (($(nsync_now_ms) > deadline)); then
      echo "timed out after ${secs} s waiting for $what" >&2
      return 1
    fi
    sleep 0.02
  done
}

nsync_all_mounted() {
  local d=$1 n=$2 i
  for ((i = 1; i <= n; i++)); do mountpoint -q "$d/m$i" || return 1; done
}

# Every node answers /v1/status and all name the same leader.
nsync_leader_agreed() {
  local d=$1 n=$2 i fport urls=()
  for ((i = 1; i <= n; i++)); do
    fport=${NSYNC_PORTS[$((n + i - 1))]}
    urls+=("$NSYNC_SCHEME://$NSYNC_HOST:$fport/v1/status")
  done
  "$NSYNC_PY" - "${urls[@]}" <<'EOF'
import json, ssl, sys, urllib.request
# With a secret the status page is HTTPS with the cluster's own certificate.
ctx = ssl._create_unverified_context()
leaders = set()
for u in sys.argv[1:]:
    try:
        st = json.load(urllib.request.urlopen(u, timeout=1, context=ctx))
    except Exception:
        sys.exit(1)
    leaders.add(str(st.get("leader") or ""))
ok = len(leaders) == 1 and leaders.pop().strip("0 ") not in ("", "none", "null")
sys.exit(0 if ok else 1)
EOF
}

# nsync_cluster_start REPO DIR N BASEPORT [BINARY]: N daemonized nodes under
# DIR, running BINARY (default REPO/build/nsyncfs); NSYNC_MOUNT_OPTS, if set,
# is passed to every node as -o; NSYNC_SECRET, if set, as --secret-file (the
# status URLs are then https, NSYNC_SCHEME).
nsync_cluster_start() {
  local repo=$1 d=$2 n=$3 base=$4 i list="" cport fport
  local bin="${5:-$repo/build/nsyncfs}"
  NSYNC_SCHEME=http
  [[ -n "${NSYNC_SECRET:-}" ]] && NSYNC_SCHEME=https
  nsync_pick_ports "$n" "$base"
  NSYNC_N=$n
  for ((i = 1; i <= n; i++)); do
    list+="${list:+,}$NSYNC_HOST:${NSYNC_PORTS[$((i - 1))]}:${NSYNC_PORTS[$((n + i - 1))]}"
  done
  {
    echo "NSYNC_N=$n"
    echo "NSYNC_PORTS=(${NSYNC_PORTS[*]})"
  } >"$d/cluster.env"
  for ((i = 1; i <= n; i++)); do
    mkdir -p "$d/b$i" "$d/m$i"
    cport=${NSYNC_PORTS[$((i - 1))]}
    fport=${NSYNC_PORTS[$((n + i - 1))]}
    local cmd=("$bin" "$d/b$i" "$d/m$i" --host "$NSYNC_HOST" --cluster-port "$cport"
      --file-server-port "$fport" --cluster "$list" ${NSYNC_MOUNT_OPTS:+-o "$NSYNC_MOUNT_OPTS"}
      ${NSYNC_SECRET:+--secret-file "$NSYNC_SECRET"})
    echo "${cmd[*]}" >"$d/cmd$i"
    echo "   node $i: ${cmd[*]}"
    # Without -f it daemonizes once the mount is ready (logs go to syslog).
    "${cmd[@]}" || { echo "node $i failed to start (exit $?)" >&2; return 1; }
  done
  nsync_wait 30 "the $n mounts" nsync_all_mounted "$d" "$n" &&
    nsync_wait 30 "a leader agreed by all nodes (GET /v1/status)" nsync_leader_agreed "$d" "$n"
}

# nsync_node_pid DIR I: the pid of node I's nsyncfs process (daemonized, so
# found by its command line: BACKING DIR/b<I> and mount DIR/m<I>).
nsync_node_pid() {
  pgrep -f -- "nsyncfs $1/b$2 $1/m$2( |\$)" | head -n 1
}

# nsync_status_url I: node I's GET /v1/status URL (after nsync_cluster_start,
# whose NSYNC_PORTS it reads; NSYNC_N is that cluster's size).
nsync_status_url() {
  echo "${NSYNC_SCHEME:-http}://$NSYNC_HOST:${NSYNC_PORTS[$((NSYNC_N + $1 - 1))]}/v1/status"
}

# No nsyncfs process serves a BACKING under DIR (read-only check).
nsync_none_running() { ! pgrep -f -- "nsyncfs $1/b" >/dev/null; }

# No nsyncfs process serves node I of DIR (read-only check).
nsync_node_gone() { [[ -z "$(nsync_node_pid "$1" "$2")" ]]; }

# nsync_cluster_stop DIR: unmount the nodes one at a time (each daemon then
# leaves the cluster and exits; waiting for it before unmounting the next keeps
# a quorum for every leave, which is much faster than unmounting all at once),
# wait for the daemons, remove DIR.
nsync_cluster_stop() {
  local d=$1 m i left=0
  [[ -d "$d" ]] || { echo "no such folder: $d" >&2; return 1; }
  for m in "$d"/m*; do
    [[ -d "$m" ]] || continue
    if mountpoint -q "$m" 2>/dev/null || ! stat "$m" >/dev/null 2>&1; then
      fusermount3 -u "$m" 2>/dev/null ||
        { sleep 0.5; fusermount3 -u "$m" 2>/dev/null; } ||
        fusermount3 -u -z "$m" 2>/dev/null || true
      i=${m##*/m}
      if [[ "$i" =~ ^[0-9]+$ ]]; then
        nsync_wait 10 "node $i of $d to exit" nsync_node_gone "$d" "$i" || true
      fi
    fi
  done
  # the daemons exit once unmounted; wait (bounded) until none runs on DIR
  nsync_wait 20 "the nsyncfs daemons of $d to exit" nsync_none_running "$d" || left=1
  for m in "$d"/m*; do
    if mountpoint -q "$m" 2>/dev/null; then
      echo "$m is still mounted: not removing $d" >&2
      return 1
    fi
  done
  rm -rf --one-file-system -- "$d"
  echo "stopped; removed $d"
  ((left == 0)) || echo "warning: an nsyncfs process on $d is still running" >&2
}
