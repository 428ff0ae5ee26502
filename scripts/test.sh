#!/usr/bin/env bash
# Build nsyncfs and run every test: the cmocka unit tests (ctest) and the
# FUSE integration tests (pytest; real 3-node clusters on 127.0.0.1, needs
# root for /dev/fuse), then both again on a build with AddressSanitizer and
# UndefinedBehaviorSanitizer (build-asan/), where any report fails the run.
# Runnable from any directory. Exit status: 0 only if the
# build and every suite passed.
#   scripts/test.sh                 everything
#   PYTEST_ARGS="-k basic" scripts/test.sh   extra pytest arguments
#   NSYNC_NO_ASAN=1 scripts/test.sh          skip the sanitizer steps
#   NSYNC_NO_PACKAGE=1 scripts/test.sh       skip the .deb build-install-mount step
#   NSYNC_NO_POSIX=1 scripts/test.sh         skip pjdfstest (scripts/posix-suite.sh)
# shellcheck disable=SC2317  # functions below are called through step()
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO" || exit 1

# Debian's python has pytest; a pyenv python3 first on PATH may not.
PY=/usr/bin/python3

declare -A RESULT=()
ORDER=(deps build layers unit fuzz integration chaos posix package asan-build asan-unit asan-integration)
fail=0

step() { # name, command...
  local name=$1; shift
  echo
  echo "=== $name: $*"
  local t0=$SECONDS
  if "$@"; then
    RESULT[$name]="ok ($((SECONDS - t0)) s)"
  else
    local rc=$?
    RESULT[$name]="FAILED (exit $rc, $((SECONDS - t0)) s)"
    fail=1
  fi
}

summary() {
  echo
  echo "=== summary"
  for n in "${ORDER[@]}"; do
    printf '  %-12s %s\n' "$n" "${RESULT[$n]:-skipped}"
  done
  if ((fail)); then echo "=== RESULT: FAILED"; else echo "=== RESULT: PASSED"; fi
}

step deps "$REPO/scripts/deps.sh"
if ((fail)); then summary; exit 1; fi

build() {
  cmake -B build -S . && cmake --build build -j"$(nproc)"
}
step build build
if ((fail)); then summary; exit 1; fi

# The arrows between src/'s folders (docs/architecture.md): one way only.
step layers "$REPO/scripts/check-layers.sh"

step unit ctest --test-dir build --output-on-failure

# libFuzzer on the decoders a hostile peer reaches (tests/fuzz/), 30 s each:
# a crash or sanitizer report fails the step (scripts/fuzz.sh).
step fuzz "$REPO/scripts/fuzz.sh" 30

integration() {
  # pytest exits 5 when it collected no test: that is a failure here too.
  # shellcheck disable=SC2086
  "$PY" -m pytest -v -rfE ${PYTEST_ARGS:-} tests/integration
}
step integration integration

# A short fault campaign: kill -9, cut off or pause random nodes under load
# (scripts/chaos.sh).
step chaos "$REPO/scripts/chaos.sh" 3 --max-seconds 80

# pjdfstest from node 1 of a 3-node cluster (scripts/posix-suite.sh, about
# 10 min): prints the subtest table; fails only if the nodes' trees differ
# afterwards. Skipped (one line) without ../shared/tools/pjdfstest.
if [[ -z "${NSYNC_NO_POSIX:-}" ]]; then
  step posix "$REPO/scripts/posix-suite.sh"
fi

# The .deb: built, installed, a 3-node cluster mounted from /usr/bin/nsyncfs
# through mount -t fuse.nsyncfs, removed again (scripts/package-test.sh,
# about 1.5 min, most of it the package's own build).
if [[ -z "${NSYNC_NO_PACKAGE:-}" ]]; then
  step package "$REPO/scripts/package-test.sh"
fi

# The same code under ASan + UBSan. Reports go to files (the daemons'
# stderr is their log), and a run with any report fails even if every
# test passed: a leak or an overflow at exit is not seen by the tests.
# Each step gets its own report folder, so one step's report fails only
# that step.
ASAN_LOGS="$REPO/build-asan/reports"
sanitized() { # name command...
  local logs="$ASAN_LOGS/$1"
  shift
  rm -rf "$logs"
  mkdir -p "$logs"
  ASAN_OPTIONS="halt_on_error=1:detect_leaks=1:log_path=$logs/asan" \
    UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$logs/ubsan" \
    NSYNCFS_BIN="$REPO/build-asan/nsyncfs" "$@"
  local rc=$?
  if compgen -G "$logs/*" >/dev/null; then
    echo "sanitizer reports:"
    for f in "$logs"/*; do echo "--- $f"; head -60 "$f"; done
    return 1
  fi
  return "$rc"
}
asan_build() {
  rm -rf "$ASAN_LOGS"
  cmake -B build-asan -S . -DNSYNC_SANITIZE=ON && cmake --build build-asan -j"$(nproc)"
}
if [[ -z "${NSYNC_NO_ASAN:-}" ]]; then
  step asan-build asan_build
  if [[ "${RESULT[asan-build]}" == ok* ]]; then
    step asan-unit sanitized unit ctest --test-dir build-asan --output-on-failure
    # shellcheck disable=SC2086
    step asan-integration sanitized integration "$PY" -m pytest -q -rfE ${PYTEST_ARGS:-} tests/integration
  fi
fi

summary
exit "$fail"
