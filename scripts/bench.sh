#!/usr/bin/env bash
# Every benchmark in one run, then one summary of the ratios (and the absolute goals) they print.
# Each benchmark measures its baseline in the same process, side by side; see docs/performance.md.
# Usage: ./scripts/bench.sh            (all)
#        ./scripts/bench.sh tls-bridge (only the benches of the named crates)
set -euo pipefail
cd "$(dirname "$0")/.."

# crate:bench, in the order they run.
BENCHES=(
  tls-bridge:handshake
  hsm-pkcs11:pkcs11
  hsm-tpm:tpm
  dps-emulator:registrations
  provisioning:register
)


logs="$(mktemp -d)"
summary="$logs/summary.txt"
: >"$summary"
failed=0
for entry in "${BENCHES[@]}"; do
  crate="${entry%%:*}" bench="${entry##*:}"
  if [ $# -gt 0 ] && ! printf '%s\n' "$@" | grep -qx "$crate"; then
    continue
  fi
  if [ ! -f "$crate/benches/$bench.rs" ]; then
    echo "error: $crate/benches/$bench.rs is missing" >&2
    exit 1
  fi
  printf '\n==> cargo bench -p %s --bench %s\n' "$crate" "$bench"
  if cargo bench -p "$crate" --bench "$bench" --locked 2>"$logs/$bench.err" | tee "$logs/$bench.out"; then
    {
      printf '%s (%s)\n' "$crate" "cargo bench -p $crate --bench $bench"
      grep -E 'ratio|goal|/s|p50|p99|RSS|size|x \(' "$logs/$bench.out" | sed 's/^ */  /' || true
    } >>"$summary"
  else
    echo "error: the $crate benchmark failed; its stderr:" >&2
    tail -n 30 "$logs/$bench.err" >&2
    failed=1
  fi
done

if [ $# -eq 0 ] || printf '%s\n' "$@" | grep -qx provisioning; then
  printf '\n==> scripts/bench-provisioning.sh (ours vs the official Node.js SDK)\n'
  if ./scripts/bench-provisioning.sh | tee "$logs/node.out"; then
    { echo "provisioning vs Node.js SDK (scripts/bench-provisioning.sh)"; sed -n '/^measure/,$p' "$logs/node.out"; } >>"$summary"
  else
    echo "error: scripts/bench-provisioning.sh failed" >&2
    failed=1
  fi
fi

printf '\n==================== summary (%s, %s) ====================\n' "$(date -u +%Y-%m-%d)" "$(nproc) cores"
cat "$summary"
exit "$failed"
