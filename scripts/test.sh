#!/usr/bin/env bash
# Build nsyncfs and run every test: the cmocka unit tests (ctest) and the
# FUSE integration tests (pytest; real 3-node clusters on 127.0.0.1, needs
# root for /dev/fuse). Runnable from any directory. Exit status: 0 only if the
# build and every suite passed.
#   scripts/test.sh                 everything
#   PYTEST_ARGS="-k basic" scripts/test.sh   extra pytest arguments
# shellcheck disable=SC2317  # functions below are called through step()
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO" || exit 1

# Debian's python has pytest; a pyenv python3 first on PATH may not.
PY=/usr/bin/python3

declare -A RESULT=()
ORDER=(deps build unit integration chaos)
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

step unit ctest --test-dir build --output-on-failure

integration() {
  # pytest exits 5 when it collected no test: that is a failure here too.
  # shellcheck disable=SC2086
  "$PY" -m pytest -v -rfE ${PYTEST_ARGS:-} tests/integration
}
step integration integration

# A short fault campaign: kill -9 random nodes under load (scripts/chaos.sh).
step chaos "$REPO/scripts/chaos.sh" 3 --max-seconds 80

summary
exit "$fail"
