#!/usr/bin/env bash
# Every benchmark in one run, then one table of every measure (ours, baseline, ratio, goal, met),
# also written to target/bench-report.md. Each benchmark measures its baseline in the same process,
# side by side; see docs/performance.md.
# Usage: ./scripts/bench.sh            (all)
#        ./scripts/bench.sh tls-bridge (only the benches of the named crates; `fleet` for the
#                                      fleet script)
set -euo pipefail
cd "$(dirname "$0")/.."

# crate:bench, in the order they run.
BENCHES=(
  tls-bridge:handshake
  hsm-pkcs11:pkcs11
  hsm-tpm:tpm
  dps-emulator:registrations
  provisioning:register
  provisioning:network
)

logs="$(mktemp -d)"
rows="$logs/rows.txt"
: >"$rows"
failed=0
# Each benchmark prints its figures for people and one `bench-row|area|measure|ours|baseline|
# value|goal|met` line per measure (hsm_testkit::report); the rows make the table at the end.
collect() { # log-file area-filter
  if ! grep "^bench-row|$2" "$1" >>"$rows"; then
    echo "error: $1 has no summary rows (bench-row|$2...)" >&2
    failed=1
  fi
}
for entry in "${BENCHES[@]}"; do
  crate="${entry%%:*}" bench="${entry##*:}"
  if [ $# -gt 0 ] && ! printf '%s\n' "$@" | grep -qx "$crate"; then
    continue
  fi
  if [ ! -f "$crate/benches/$bench.rs" ]; then
    echo "error: $crate/benches/$bench.rs is missing" >&2
    exit 1
  fi
  # provisioning's AMQP transport is not a default feature; its benches measure it too.
  features=()
  [ "$crate" = provisioning ] && features=(--features amqp)
  printf '\n==> cargo bench -p %s %s--bench %s\n' "$crate" "${features[*]:+${features[*]} }" "$bench"
  if cargo bench -p "$crate" "${features[@]}" --bench "$bench" --locked 2>"$logs/$bench.err" | tee "$logs/$bench.out"; then
    collect "$logs/$bench.out" "$crate|"
  else
    echo "error: the $crate benchmark failed; its stderr:" >&2
    tail -n 30 "$logs/$bench.err" >&2
    failed=1
  fi
done

if [ $# -eq 0 ] || printf '%s\n' "$@" | grep -qx provisioning; then
  printf '\n==> scripts/bench-provisioning.sh (ours vs the official Node.js SDK)\n'
  if ./scripts/bench-provisioning.sh | tee "$logs/node.out"; then
    collect "$logs/node.out" "provisioning vs Node.js SDK|"
  else
    echo "error: scripts/bench-provisioning.sh failed" >&2
    failed=1
  fi
fi

if [ $# -eq 0 ] || printf '%s\n' "$@" | grep -qx fleet; then
  printf '\n==> scripts/bench-fleet.sh (100, 1,000 and 10,000 devices from one process)\n'
  if ./scripts/bench-fleet.sh | tee "$logs/fleet.out"; then
    collect "$logs/fleet.out" "fleet|"
  else
    echo "error: scripts/bench-fleet.sh failed" >&2
    failed=1
  fi
fi

report="target/bench-report.md"
mkdir -p target
{
  printf '%s, %s cores (%s), load average %s\n\n' "$(date -u +%Y-%m-%dT%H:%MZ)" "$(nproc)" \
    "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')" "$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "| area | measure | ours | baseline | ours / baseline (or value) | goal | met |"
  echo "|---|---|---|---|---|---|---|"
  awk -F'|' '{ met = tolower($8); printf "| %s | %s | %s | %s | %s | %s | %s |\n", $2, $3, $4, $5, $6, $7, met }' "$rows"
  goals=$(awk -F'|' 'tolower($8) == "yes" || tolower($8) == "no"' "$rows" | wc -l)
  met=$(awk -F'|' 'tolower($8) == "yes"' "$rows" | wc -l)
  printf '\n%s of %s goals met.\n' "$met" "$goals"
} >"$report"
printf '\n==================== every benchmark, one table (also in %s) ====================\n' "$report"
cat "$report"
exit "$failed"
