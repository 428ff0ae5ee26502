#!/usr/bin/env bash
# Build the libFuzzer harnesses of tests/fuzz/ (clang, with ASan + UBSan) and
# run each for SECONDS (default 30). The corpus in tests/fuzz/corpus/NAME/
# seeds each run; what a run discovers goes to build-fuzz/corpus/NAME/, not
# into the repo. A crash, leak, sanitizer report or timeout fails the script
# (exit 1) and leaves its input in build-fuzz/ (crash-*, leak-*, timeout-*).
#   scripts/fuzz.sh            every harness, 30 s each
#   scripts/fuzz.sh 600        every harness, 10 min each
#   FUZZ_ONLY=fuzz_fsm_cmd scripts/fuzz.sh 60
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO" || exit 1
SECONDS_EACH=${1:-30}
OUT="$REPO/build-fuzz"
mkdir -p "$OUT"
CC=${CLANG:-clang}
if ! command -v "$CC" >/dev/null; then
  echo "fuzz: $CC not found (scripts/deps.sh installs clang)" >&2
  exit 1
fi
CFLAGS=(-std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
        -D_GNU_SOURCE -Isrc -Wall -Wno-unused-parameter)
# The pure code each harness reaches: nothing with a thread, a clock or I/O.
CORE=(src/cluster/fsm.c src/cluster/rlocks.c src/common/path.c src/common/xattrs.c)
declare -A SRCS=(
  [fuzz_fsm_cmd]="${CORE[*]}"
  [fuzz_snapshot]="${CORE[*]}"
  [fuzz_path]="src/common/path.c"
  [fuzz_batch]="${CORE[*]} src/transfer/batch.c"
  [fuzz_journal]="src/fs/journal_rec.c src/common/path.c"
  [fuzz_hello]="src/cluster/hello.c src/common/addr.c"
  [fuzz_addr]="src/common/addr.c"
  [fuzz_answer]="src/cluster/answer.c src/nsync.c src/common/addr.c"
)
fail=0
for name in fuzz_fsm_cmd fuzz_snapshot fuzz_batch fuzz_path fuzz_journal fuzz_hello fuzz_addr fuzz_answer; do
  [[ -n "${FUZZ_ONLY:-}" && "$FUZZ_ONLY" != "$name" ]] && continue
  # shellcheck disable=SC2086
  if ! "$CC" "${CFLAGS[@]}" -o "$OUT/$name" "tests/fuzz/$name.c" ${SRCS[$name]} \
      $(pkg-config --cflags --libs libxxhash libcjson); then
    echo "fuzz: $name: build failed" >&2
    fail=1
    continue
  fi
  mkdir -p "$OUT/corpus/$name" "tests/fuzz/corpus/$name"
  echo "=== $name: ${SECONDS_EACH} s"
  if ! (cd "$OUT" && "./$name" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
        -max_len=65536 -print_final_stats=1 "corpus/$name" "$REPO/tests/fuzz/corpus/$name" \
        2>&1 | tail -n 25); then
    echo "fuzz: $name FAILED (inputs in $OUT)" >&2
    fail=1
  fi
done
exit "$fail"
