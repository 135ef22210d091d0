#!/usr/bin/env bash
# A fleet from one process against one dps-emulator process (release builds, 127.0.0.1:443 and
# :8883, Retry-After 0): the `fleet` example (hsm-examples) registers 100, 1,000 and 10,000
# symmetric-key group members with derived keys, over HTTPS and over MQTT, then connects each to
# its hub once and has one telemetry message acknowledged, 256 devices in flight. For each run:
# throughput, p50/p99 of registration, peak RSS of the client process (its own VmHWM) and of the
# emulator process (a new emulator per run, its VmHWM read before it stops). In the middle of the
# 10,000-device HTTPS run, the official Node.js SDK registers a device of its own against the
# same emulator, which must succeed. Memory per in-flight registration: the client's peak RSS at
# 256 in flight minus at 1 in flight (1,000 devices each), over 255; the median of three pairs.
# Every device's result is checked by the example (exit status 0 only when all succeeded).
#
# Needs root (the Node SDK only talks to port 443), node and npm (see bench-provisioning.sh).
# Usage: ./scripts/bench-fleet.sh   (FLEET_SIZES="100 1000 10000", IN_FLIGHT=256, KEEP_TMP=1)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh
FLEET_SIZES=${FLEET_SIZES:-100 1000 10000}
IN_FLIGHT=${IN_FLIGHT:-256}
LARGEST=${FLEET_SIZES##* }

require_node
command -v bc >/dev/null || apt_install bc
# 256 devices in flight hold a DPS and a hub connection each, in both processes.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

step "building in release: the emulator and the fleet example"
cargo build --release --locked -p dps-emulator
cargo build --release --locked -p hsm-examples --example fleet
TARGET=$(target_dir)
EMULATOR=$TARGET/release/dps-emulator
FLEET=$TARGET/release/examples/fleet
[ -x "$EMULATOR" ] && [ -x "$FLEET" ] || fail "release binaries missing under $TARGET/release"

make_work_dir bench-fleet
step "installing the Node SDK (npm ci) in $WORK/sdk"
install_node_sdk register_once.js

ID_SCOPE=0ne00FLEET1
GROUP_KEY=$(openssl rand -base64 64 | tr -d '\n')
NODE_ID=fleet-node-sdk
NODE_KEY=$(openssl rand -base64 32)
cat >"$WORK/emulator.toml" <<TOML
id_scope = "$ID_SCOPE"
iot_hubs = ["fleet-hub-1.example.net", "fleet-hub-2.example.net"]
retry_after = 0

[[enrollment]]
registration_id = "$NODE_ID"
symmetric_key = { primary = "$NODE_KEY" }

[[group]]
id = "fleet-group"
symmetric_key = { primary = "$GROUP_KEY" }
TOML

# The emulator's peak RSS in KiB.
emulator_peak() { sed -n 's/^VmHWM:\s*\([0-9]*\) kB/\1/p' "/proc/$EMULATOR_PID/status"; }
stop_emulator() {
  kill "$EMULATOR_PID" 2>/dev/null || true
  wait "$EMULATOR_PID" 2>/dev/null || true
  EMULATOR_PID=
}

# One fleet run against a new emulator; sets R_PER_S R_P50 R_P99 R_CLIENT R_EMULATOR (devices/s,
# ms, ms, KiB, KiB). With MIDDLE=1 the Node SDK registers its device once half the fleet is done
# (NODE_MS, NODE_AT: how long it took, how many fleet devices were done when it started).
fleet_run() { # label transport devices in-flight
  local label=$1 transport=$2 devices=$3 in_flight=$4 out=$WORK/$1.out
  start_emulator "$WORK/emulator.toml" RUST_LOG=warn
  "$FLEET" --dps localhost --scope "$ID_SCOPE" --group-key "$GROUP_KEY" --ca "$WORK/ca.pem" \
    --hub-address 127.0.0.1:8883 --mqtt-port 8883 --transport "$transport" \
    --devices "$devices" --in-flight "$in_flight" --prefix "$label-" --min-poll-ms 0 \
    >"$out" 2>"$WORK/$label.err" &
  local fleet_pid=$!
  if [ "${MIDDLE:-}" = 1 ]; then
    local half=$((devices / 2)) started
    until grep -qE " ([0-9]+) of $devices devices done" "$out" \
      && [ "$(grep -oE ' [0-9]+ of ' "$out" | tail -n1 | tr -dc 0-9)" -ge "$half" ]; do
      kill -0 "$fleet_pid" 2>/dev/null || break
      sleep 0.2
    done
    started=${EPOCHREALTIME/./}
    if node "$WORK/sdk/register_once.js" localhost "$ID_SCOPE" "$NODE_ID" "$NODE_KEY" \
      "$WORK/ca.pem" >"$WORK/node.out" 2>"$WORK/node.err"; then
      NODE_MS=$(echo "scale=1; (${EPOCHREALTIME/./} - $started) / 1000" | bc)
      NODE_AT=$(grep -oE ' [0-9]+ of ' "$out" | tail -n1 | tr -dc 0-9)
      grep -q "^fleet-hub-[12].example.net $NODE_ID\$" "$WORK/node.out" \
        || fail "the Node SDK printed '$(cat "$WORK/node.out")', not its assignment"
    else
      cat "$WORK/node.err" >&2
      fail "the Node SDK's registration in the middle of the fleet failed"
    fi
  fi
  if ! wait "$fleet_pid"; then
    tail -n 20 "$out" "$WORK/$label.err" >&2
    fail "fleet run $label failed"
  fi
  R_EMULATOR=$(emulator_peak)
  stop_emulator
  # "10000 of 10000 devices provisioned and connected (0 failed) in 9.87 s: 1013 devices/s"
  R_PER_S=$(sed -n 's/.* s: \([0-9]*\) devices\/s$/\1/p' "$out")
  read -r R_P50 R_P99 < <(sed -n 's/^registration p50 \([0-9.]*\) ms p99 \([0-9.]*\) ms;.*/\1 \2/p' "$out")
  R_CLIENT=$(sed -n 's/^peak RSS \([0-9]*\) KiB$/\1/p' "$out")
  [ -n "$R_PER_S" ] && [ -n "$R_P99" ] && [ -n "$R_CLIENT" ] && [ -n "$R_EMULATOR" ] \
    || fail "cannot read the figures of $label: $(cat "$out")"
  grep -q "^$devices of $devices devices provisioned" "$out" || fail "not every device of $label succeeded"
  printf '  %s devices/s, registration p50 %s ms p99 %s ms, peak RSS client %s KiB, emulator %s KiB\n' \
    "$R_PER_S" "$R_P50" "$R_P99" "$R_CLIENT" "$R_EMULATOR"
}

ROWS=()
row() { # measure value goal met
  printf '%-62s %14s %8s %4s\n' "$@"
  ROWS+=("bench-row|fleet|$1|$2|-|$2|$3|$4")
}
RESULTS=()
NODE_MS= NODE_AT=
for transport in https mqtt; do
  for devices in $FLEET_SIZES; do
    label=$transport-$devices
    step "fleet: $devices devices over $transport, $IN_FLIGHT in flight"
    middle=
    [ "$transport" = https ] && [ "$devices" = "$LARGEST" ] && middle=1
    MIDDLE=$middle fleet_run "$label" "$transport" "$devices" "$IN_FLIGHT"
    RESULTS+=("$transport $devices $R_PER_S $R_P50 $R_P99 $R_CLIENT $R_EMULATOR")
  done
done

step "memory per in-flight registration: 1,000 devices over HTTPS at 1 and at $IN_FLIGHT in flight, 3 times each"
# A difference of two peaks moves with the run: the median of three pairs.
: >"$WORK/per-flight"
for round in 1 2 3; do
  MIDDLE= fleet_run "https-serial-$round" https 1000 1
  ONE_KIB=$R_CLIENT
  MIDDLE= fleet_run "https-parallel-$round" https 1000 "$IN_FLIGHT"
  MANY_KIB=$R_CLIENT
  echo "scale=1; ($MANY_KIB - $ONE_KIB) / ($IN_FLIGHT - 1)" | bc >>"$WORK/per-flight"
done
PER_FLIGHT=$(sort -g "$WORK/per-flight" | sed -n 2p)
echo "  per in-flight registration: $(sort -g "$WORK/per-flight" | tr '\n' ' ')KiB; median $PER_FLIGHT KiB"

printf '\n==================== fleet (%s, %s cores, %s in flight) ====================\n' \
  "$(date -u +%Y-%m-%dT%H:%MZ)" "$(nproc)" "$IN_FLIGHT"
printf '%-62s %14s %8s %4s\n' measure value goal met
for line in "${RESULTS[@]}"; do
  read -r transport devices per_s p50 p99 client_kib emulator_kib <<<"$line"
  row "$devices devices, $transport: all succeeded, devices/s" "$per_s" - -
  row "$devices devices, $transport: registration p50 / p99 (ms)" "$p50 / $p99" - -
  row "$devices devices, $transport: peak RSS client / emulator (KiB)" "$client_kib / $emulator_kib" - -
done
met=NO
[ "$(echo "$PER_FLIGHT <= 64" | bc)" = 1 ] && met=yes
row "memory per in-flight registration (KiB, $IN_FLIGHT vs 1 in flight)" "$PER_FLIGHT" "<=64" "$met"
row "Node SDK registration in the middle of the $LARGEST-device run (ms)" \
  "${NODE_MS:-?} (at ${NODE_AT:-?})" - -
printf '%s\n' "${ROWS[@]}"
