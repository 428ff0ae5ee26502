#!/usr/bin/env bash
# Fault campaign: kill -9, cut off (nftables) or pause (SIGSTOP) random nodes
# of a 3-node cluster under load, ROUNDS times, and check that every node ends
# identical and that no change whose syscall returned (close, fsync, rename,
# unlink) was lost.
#   scripts/chaos.sh ROUNDS [--seed S] [--writers N] [--max-seconds S]
#                    [--faults kill,partition,pause] [--keep]
# Builds build/nsyncfs first if it is missing (NSYNCFS_BIN tests another binary).
# Needs root (FUSE mounts). Exit status 0 only if nothing was lost.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

if [[ $# -lt 1 ]]; then
  echo "usage: $0 ROUNDS [--seed S] [--writers N] [--max-seconds S] [--faults kill,partition,pause] [--keep]" >&2
  exit 2
fi

if [[ -z "${NSYNCFS_BIN:-}" && ! -x build/nsyncfs ]]; then
  cmake -B build -S . >/dev/null
  cmake --build build -j"$(nproc)"
fi

# Debian's python (has what the harness needs); a pyenv python3 may not.
exec /usr/bin/python3 "$REPO/scripts/chaos.py" "$@"
