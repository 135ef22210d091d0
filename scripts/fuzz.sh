#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets) for SECONDS each, JOBS at a time, and prints
# one line per target: runs, corpus size, and whether it died. Exits non-zero when any target
# crashes (its input is kept in fuzz/artifacts/<target>/).
#
# Usage: ./scripts/fuzz.sh [SECONDS]     (default 600; JOBS=2; FUZZ_QUICK=1 builds in debug
#                                          without a sanitizer, for the brief runs of test.sh)
# Needs cargo-fuzz (installed from crates.io when missing). cargo-fuzz passes nightly flags to
# rustc; on a stable toolchain RUSTC_BOOTSTRAP=1 allows them.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh
SECONDS_EACH=${1:-600}
JOBS=${JOBS:-2}
export RUSTC_BOOTSTRAP=1

command -v cargo-fuzz >/dev/null || {
  step "installing cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
}
build=(--release)
run_flags=()
if [ "${FUZZ_QUICK:-}" = 1 ]; then
  build=(--dev --sanitizer none)
  run_flags=(--dev --sanitizer none)
fi
targets=()
for file in fuzz/fuzz_targets/*.rs; do
  targets+=("$(basename "$file" .rs)")
done
step "building ${#targets[@]} fuzz targets (${build[*]})"
(cd fuzz && cargo fuzz build "${build[@]}" >/dev/null)

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
run_one() { # target
  local target=$1 corpus=fuzz/corpus/$1
  mkdir -p "$corpus"
  if (cd fuzz && cargo fuzz run "${run_flags[@]}" "$target" -- -max_total_time="$SECONDS_EACH" \
      -print_final_stats=1 >"$logs/$target.log" 2>&1); then
    echo ok >"$logs/$target.status"
  else
    echo FAILED >"$logs/$target.status"
  fi
}
step "running each target for ${SECONDS_EACH}s, $JOBS at a time"
running=0
for target in "${targets[@]}"; do
  run_one "$target" &
  running=$((running + 1))
  if [ "$running" -ge "$JOBS" ]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait || true

failed=0
printf '%-18s %12s %8s %s\n' target runs corpus result
for target in "${targets[@]}"; do
  log=$logs/$target.log
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  files=$(find "fuzz/corpus/$target" -type f | wc -l)
  result=$(cat "$logs/$target.status" 2>/dev/null || echo FAILED)
  printf '%-18s %12s %8s %s\n' "$target" "${runs:-?}" "$files" "$result"
  if [ "$result" != ok ]; then
    failed=1
    echo "--- $target (last 30 lines) ---" >&2
    tail -n 30 "$log" >&2
  fi
done
[ "$failed" -eq 0 ] || fail "a fuzz target failed (inputs kept in fuzz/artifacts/)"
