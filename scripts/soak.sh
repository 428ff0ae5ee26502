#!/usr/bin/env bash
# Soak: steady mixed writes on every node of a 3-node cluster for MINUTES
# minutes, one fault a minute (kill -9, a partition or a pause, at random),
# then the same checks as scripts/chaos.sh (identical trees, no acknowledged
# change lost), plus each node's RSS and data directory size every minute and
# the longest stall of a writer.
#   scripts/soak.sh MINUTES [--seed S] [--writers N] [--faults kill,partition,pause] [--keep]
# Needs root (FUSE mounts, nftables). Exit status 0 only if nothing was lost.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ $# -lt 1 || ! "$1" =~ ^[0-9]+$ || "$1" -lt 1 ]]; then
  echo "usage: $0 MINUTES [--seed S] [--writers N] [--faults kill,partition,pause] [--keep]" >&2
  exit 2
fi
minutes=$1
shift
exec "$REPO/scripts/chaos.sh" 0 --soak-minutes "$minutes" "$@"
