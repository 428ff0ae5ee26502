#!/usr/bin/env bash
# Build the nsyncfs .deb (dpkg-buildpackage -b -us -uc on a copy of the
# source in a temporary directory), check its Depends, install it, mount a
# 3-node cluster on 127.0.0.1 from the installed /usr/bin/nsyncfs through
# `mount -t fuse.nsyncfs`, check that a file written on one node reaches the
# others and that `nsyncfs status` says healthy, then unmount, remove the
# package and the temporary directory, whatever happened. Needs root.
#   scripts/package-test.sh          exit 0 only if every step passed
#   KEEP=1 scripts/package-test.sh   keep the temporary directory
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY=/usr/bin/python3

if [[ "$(id -u)" -ne 0 ]]; then
  echo "package-test: needs root (dpkg -i, mount)" >&2
  exit 1
fi
if dpkg-query -W -f='${db:Status-Status}' nsyncfs 2>/dev/null | grep -q installed; then
  echo "package-test: a package nsyncfs is already installed here; not touching it" >&2
  exit 1
fi

TMP=$(mktemp -d /tmp/nsyncfs-pkg.XXXXXX)
INSTALLED=0
cleanup() {
  local rc=$?
  for i in 1 2 3; do
    if mountpoint -q "$TMP/m$i" 2>/dev/null; then fusermount3 -u "$TMP/m$i" || fusermount3 -u -z "$TMP/m$i" || true; fi
  done
  # the daemons exit after their unmount; wait for them (found by BACKING)
  for _ in $(seq 100); do
    pgrep -f "^/usr/bin/nsyncfs $TMP/" >/dev/null || break
    sleep 0.1
  done
  if ((INSTALLED)); then dpkg --purge nsyncfs >/dev/null || rc=1; fi
  if [[ -z "${KEEP:-}" ]]; then rm -rf "$TMP"; else echo "package-test: kept $TMP"; fi
  if ((rc == 0)); then echo "package-test: PASSED"; else echo "package-test: FAILED (exit $rc)"; fi
  exit "$rc"
}
trap cleanup EXIT

fail() { echo "package-test: $*" >&2; exit 1; }

# wait_until SECONDS WHAT COMMAND...: poll until COMMAND succeeds
wait_until() {
  local limit=$1 what=$2 t0=$SECONDS
  shift 2
  until "$@" >/dev/null 2>&1; do
    ((SECONDS - t0 < limit)) || fail "timed out after ${limit} s waiting for $what"
    sleep 0.2
  done
}

echo "== package-test: source copy in $TMP/nsyncfs-0.1.0"
SRC="$TMP/nsyncfs-0.1.0"
mkdir -p "$SRC"
# what git tracks plus new files not ignored: the tree as it is, no build dirs
(cd "$REPO" && git ls-files -co --exclude-standard -z | xargs -0 tar -cf - --no-recursion) |
  tar -xf - -C "$SRC"

echo "== package-test: dpkg-buildpackage -b -us -uc (log: $TMP/build.log)"
if ! (cd "$SRC" && dpkg-buildpackage -b -us -uc >"$TMP/build.log" 2>&1); then
  tail -40 "$TMP/build.log"
  fail "dpkg-buildpackage failed"
fi
DEB=$(ls "$TMP"/nsyncfs_*.deb)
DEPENDS=$(dpkg-deb -f "$DEB" Depends)
echo "Depends: $DEPENDS"
for lib in libfuse3 libraft libuv1 libcurl libmicrohttpd libcjson libxxhash fuse3; do
  grep -q "$lib" <<<"$DEPENDS" || fail "Depends lacks $lib"
done
CONTENTS=$(dpkg-deb -c "$DEB")
for f in ./usr/bin/nsyncfs ./usr/share/man/man8/nsyncfs.8.gz ./lib/systemd/system/nsyncfs@.service; do
  grep -q " $f\$" <<<"$CONTENTS" || fail "$f is not in the package"
done

echo "== package-test: dpkg -i $(basename "$DEB")"
dpkg -i "$DEB" >/dev/null
INSTALLED=1
[[ -x /usr/bin/nsyncfs ]] || fail "/usr/bin/nsyncfs is not installed"
grep -q '^ExecStart=/usr/bin/nsyncfs ' /lib/systemd/system/nsyncfs@.service ||
  fail "the installed unit does not run /usr/bin/nsyncfs"
man -w nsyncfs >/dev/null || fail "man nsyncfs finds no page"

echo "== package-test: 3 nodes through mount -t fuse.nsyncfs"
read -r -a PORTS < <("$PY" - <<'PYEOF'
import socket
socks = [socket.socket() for _ in range(6)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PYEOF
)
LIST=""
for i in 1 2 3; do
  LIST+="${LIST:++}127.0.0.1:${PORTS[$((2 * i - 2))]}:${PORTS[$((2 * i - 1))]}"
done
pids=()
for i in 1 2 3; do
  mkdir -p "$TMP/b$i" "$TMP/m$i"
  mount -t fuse.nsyncfs "$TMP/b$i" "$TMP/m$i" -o \
    "host=127.0.0.1,cluster_port=${PORTS[$((2 * i - 2))]},file_server_port=${PORTS[$((2 * i - 1))]},cluster=$LIST,_netdev" \
    >"$TMP/mount$i.log" 2>&1 &
  pids+=($!)
done
for i in 1 2 3; do
  wait "${pids[$((i - 1))]}" || { cat "$TMP/mount$i.log"; fail "mount of node $i failed"; }
done
findmnt -n -o SOURCE,FSTYPE "$TMP/m1" | grep -q "^$TMP/b1 fuse.nsyncfs$" || fail "findmnt shows $(findmnt -n -o SOURCE,FSTYPE "$TMP/m1")"

echo "hello from the package" >"$TMP/m1/hello.txt"
for i in 2 3; do
  wait_until 30 "hello.txt on node $i" grep -qx "hello from the package" "$TMP/m$i/hello.txt"
done
wait_until 30 "nsyncfs status to say healthy" /usr/bin/nsyncfs status "$TMP/m1"
/usr/bin/nsyncfs status "$TMP/m1"

echo "== package-test: unmount"
for i in 1 2 3; do fusermount3 -u "$TMP/m$i"; done
wait_until 20 "the daemons to exit" bash -c "! pgrep -f '^/usr/bin/nsyncfs $TMP/'"
