#!/usr/bin/env bash
# Install the Debian packages nsyncfs needs to build, test and run, if any is
# missing. Safe to run again: with everything present it does nothing (no
# network). Works as root, or through sudo when run as another user.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config
  libfuse3-dev fuse3
  libraft-dev libuv1-dev
  libcurl4-openssl-dev libmicrohttpd-dev libcjson-dev libxxhash-dev
  libgnutls28-dev # cluster secret: keygen, TLS on the raft port (docs/security.md)
  libcmocka-dev
  clang # libFuzzer harnesses, scripts/fuzz.sh (docs/security.md)
  python3 python3-pytest curl
  python3-prometheus-client # test_metrics parses /metrics with the real parser
  mandoc # test_manpage lints man/nsyncfs.8
  nftables # partition tests: nft rules in a table each test makes and removes
  rsync    # bench.sh's tree workload (and what users run into the mount)
  autoconf automake # scripts/posix-suite.sh builds pjdfstest (docs/decisions.md)
  attr acl # test_xattrs: setfattr/getfattr, setfacl/getfacl through the mount (docs/decisions.md)
)

missing=()
for p in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  if [[ "$status" != "installed" ]]; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
  else
    echo "deps: missing packages (${missing[*]}) and not root, no sudo: install them as root" >&2
    exit 1
  fi
fi

echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -q --no-install-recommends "${missing[@]}"
