#!/usr/bin/env bash
# The layers of src/ and the arrows between them (docs/architecture.md):
#   main.c -> fs -> cluster -> common;  transfer -> cluster -> common.
# Prints the include graph between folders and fails (exit 1) if any file
# includes a header of a layer it must not reach. A private header
# (<folder>/*_int.h) may only be included from its own folder.
#   scripts/check-layers.sh          check
#   scripts/check-layers.sh --graph  print the folder-level graph only
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO/src"

# layer of a file or header path: fs, cluster, transfer, common, top (main.c, nsync.[ch])
layer() {
  case $1 in
  fs/*) echo fs ;; cluster/*) echo cluster ;; transfer/*) echo transfer ;;
  common/*) echo common ;; *) echo top ;;
  esac
}
# allowed "from to" pairs (a layer may always include itself)
allowed() {
  case "$1 $2" in
  "top "*) return 0 ;;
  "fs cluster" | "fs common") return 0 ;;
  "transfer cluster" | "transfer common") return 0 ;;
  "cluster common") return 0 ;;
  *" top") [[ $3 == nsync.h ]] ;; # the shared context, for now (see architecture.md)
  *) return 1 ;;
  esac
}

bad=0
declare -A EDGES=()
while IFS= read -r line; do
  file=${line%%:*}
  inc=$(sed -E 's/.*#include "([^"]+)".*/\1/' <<<"$line")
  [[ -e "$inc" ]] || continue # a header of a library, not ours
  from=$(layer "$file") to=$(layer "$inc")
  [[ $from == "$to" ]] || EDGES["$from -> $to"]=1
  if [[ $inc == */*_int.h && $(dirname "$inc") != "$(dirname "$file")" ]]; then
    echo "layers: $file includes $inc, private to $(dirname "$inc")/" >&2
    bad=1
  fi
  if [[ $from != "$to" ]] && ! allowed "$from" "$to" "$inc"; then
    echo "layers: $file ($from) includes $inc ($to): $from must not depend on $to" >&2
    bad=1
  fi
done < <(grep -rn --include='*.[ch]' -E '^#include "' . | sed 's#^\./##')

for e in "${!EDGES[@]}"; do echo "$e"; done | sort
if [[ "${1:-}" == --graph ]]; then exit 0; fi
((bad == 0)) && echo "layers: ok"
exit "$bad"
