#!/usr/bin/env bash
# The provisioning client against the official Azure IoT Node.js device SDK, side by side against
# one dps-emulator process (release build, 127.0.0.1:443/8883, Retry-After 0), in one run:
#  (a) in-process latency: 1000 sequential registrations each for symmetric key and X.509 over
#      HTTPS, a new client and TLS connection per device, and 1000 times "provisioned and first
#      telemetry acknowledged" (register, connect to the assigned hub over MQTT, one message
#      acknowledged): `cargo bench -p provisioning --bench register` (pointed at the emulator
#      with DPS_BENCH_*) vs dps-emulator/tests/node-sdk/bench.js;
#  (b) one registration as a whole process: provisioning's `register_once` example (release) vs
#      `node register_once.js`, median wall time and peak RSS (/usr/bin/time -v) of RUNS runs;
#  (c) the stripped size of register_once (release);
#  (d) the device build: device-example's register_x509 with the `device` profile, HTTPS only and
#      MQTT only, hsm-x509: stripped size and peak RSS of one X.509 registration.
# Ends with one table of the ratios and their goals (exit status 0 even when a goal is missed;
# non-zero when a step fails).
#
# The SDK only talks to port 443, so run as root (as CI does) or give the emulator binary
# CAP_NET_BIND_SERVICE. Needs node (>= 18) and npm, openssl, the npm registry (packages pinned in
# dps-emulator/tests/node-sdk/package-lock.json), GNU time and bc (installed with apt-get if
# missing). Shares its set-up with node-sdk-test.sh through scripts/lib/common.sh.
# Usage: ./scripts/bench-provisioning.sh   (REGISTRATIONS=N, RUNS=N, KEEP_TMP=1 keep the work folder)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh
REGISTRATIONS=${REGISTRATIONS:-1000}
RUNS=${RUNS:-10}

require_node
command -v strip >/dev/null || fail "strip not found (Debian: apt-get install binutils)"
tools=()
[ -x /usr/bin/time ] || tools+=(time)
command -v bc >/dev/null || tools+=(bc)
[ ${#tools[@]} -eq 0 ] || apt_install "${tools[@]}"

step "building in release: the emulator, the register_once example, the register bench"
cargo build --release --locked -p dps-emulator
cargo build --release --locked -p provisioning --example register_once
cargo bench --locked -p provisioning --features amqp --bench register --no-run
TARGET=$(target_dir)
EMULATOR=$TARGET/release/dps-emulator
REGISTER_ONCE=$TARGET/release/examples/register_once
[ -x "$EMULATOR" ] || fail "the emulator binary is not at $EMULATOR"
[ -x "$REGISTER_ONCE" ] || fail "the example binary is not at $REGISTER_ONCE"

make_work_dir bench-provisioning
step "installing the Node SDK (npm ci) in $WORK/sdk"
install_node_sdk bench.js register_once.js

step "generating the bench devices (symmetric key; X.509 P-256 under a CA group)"
CERTS=$WORK/certs
cert_init
cert_self_signed root "bench root CA"
cert_issue device bench-x509 root device
openssl verify -CAfile "$CERTS/root.pem" "$CERTS/device.pem" >/dev/null \
  || fail "openssl does not verify the generated device certificate"
SYM_ID=bench-sym
SYM_KEY=$(openssl rand -base64 32)
ID_SCOPE=0ne00BENCH1
cat >"$WORK/emulator.toml" <<TOML
id_scope = "$ID_SCOPE"
iot_hubs = ["hub-bench.example.net"]
retry_after = 0

[[enrollment]]
registration_id = "$SYM_ID"
device_id = "$SYM_ID-device"
symmetric_key = { primary = "$SYM_KEY" }

[[group]]
id = "bench-x509-group"
x509_ca = "certs/root.pem"
TOML

step "starting the emulator (release) on 127.0.0.1:443 (HTTPS), :8883 (MQTT) and :5671 (AMQP)"
# warn: no per-registration log lines, so the server does the same small work for both clients.
start_emulator "$WORK/emulator.toml" RUST_LOG=warn

step "(a) in-process latency, Rust: cargo bench -p provisioning --bench register (n=$REGISTRATIONS)"
DPS_BENCH_ENDPOINT=localhost DPS_BENCH_SCOPE=$ID_SCOPE DPS_BENCH_CA=$WORK/ca.pem \
  DPS_BENCH_SYM_ID=$SYM_ID DPS_BENCH_KEY=$SYM_KEY DPS_BENCH_X509_CHAIN=$CERTS/device.pem \
  DPS_BENCH_X509_KEY=$CERTS/device.key.pem DPS_BENCH_HUB=127.0.0.1:8883 \
  REGISTRATIONS=$REGISTRATIONS \
  cargo bench --locked -p provisioning --features amqp --bench register 2>"$WORK/rust-bench.err" \
  | tee "$WORK/rust-bench.out" || { cat "$WORK/rust-bench.err" >&2; fail "the Rust bench failed"; }
grep -q "against the DPS at localhost" "$WORK/rust-bench.out" \
  || fail "the Rust bench did not use the external emulator"
# "symmetric key, HTTPS  n=1000  p50    1.234 ms  p99    5.678 ms  (...)" -> "1.234 5.678"
rust_p() { sed -n "s/^$1.* p50 *\([0-9.]*\) ms *p99 *\([0-9.]*\) ms.*/\1 \2/p" "$WORK/rust-bench.out"; }
read -r RUST_SYM_P50 RUST_SYM_P99 < <(rust_p "symmetric key, HTTPS")
read -r RUST_X509_P50 RUST_X509_P99 < <(rust_p "X.509 (P-256), HTTPS")
read -r RUST_HUB_P50 RUST_HUB_P99 < <(rust_p "provisioned + first telemetry")
read -r RUST_AMQP_P50 RUST_AMQP_P99 < <(rust_p "symmetric key, AMQP")
# "  HTTPS, interleaved ... AMQP / HTTPS p50 0.987" (the first: symmetric key) -> "0.987"
AMQP_HTTPS=$(sed -n 's/.*AMQP \/ HTTPS p50 \([0-9.]*\).*/\1/p' "$WORK/rust-bench.out" | head -1)
[ -n "${RUST_AMQP_P50:-}" ] && [ -n "${AMQP_HTTPS:-}" ] || fail "cannot read the Rust bench's AMQP rows"
[ -n "${RUST_SYM_P99:-}" ] && [ -n "${RUST_X509_P99:-}" ] && [ -n "${RUST_HUB_P99:-}" ] \
  || fail "cannot read the Rust bench output"

step "(a) in-process latency, Node: node bench.js (n=$REGISTRATIONS)"
(cd "$WORK/sdk" && NODE_EXTRA_CA_CERTS="$WORK/ca.pem" DPS_HOST=localhost DPS_ID_SCOPE=$ID_SCOPE \
  SYM_ID=$SYM_ID SYM_KEY=$SYM_KEY X509_ID=bench-x509 X509_CHAIN=$CERTS/device.pem \
  X509_KEY=$CERTS/device.key.pem REGISTRATIONS=$REGISTRATIONS node bench.js) \
  | tee "$WORK/node-bench.json" || fail "the Node bench failed"
node_p() { node -e 'const r=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8"))[process.argv[2]];
  console.log(r.p50_ms, r.p99_ms)' "$WORK/node-bench.json" "$1"; }
read -r NODE_SYM_P50 NODE_SYM_P99 < <(node_p symmetric_key)
read -r NODE_X509_P50 NODE_X509_P99 < <(node_p x509)
read -r NODE_HUB_P50 NODE_HUB_P99 < <(node_p first_telemetry)
read -r NODE_AMQP_P50 NODE_AMQP_P99 < <(node_p symmetric_key_amqp)

# Median of the numbers on stdin.
median() { sort -g | awk '{v[NR]=$1} END {if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }
# One whole-process registration, RUNS times: the median wall time in ms (bash's EPOCHREALTIME)
# and, from a second run each time under /usr/bin/time -v (whose own fork is then not timed),
# the median peak RSS in KiB, written to $WORK/LABEL.result as "ms KiB".
whole_process() { # label command...
  local label=$1 out=$WORK/$1 i start end
  shift
  : >"$out.wall"
  : >"$out.rss"
  "$@" >"$out.first" || fail "$label did not register: $(cat "$out.first")"
  grep -qx "hub-bench.example.net $SYM_ID-device" "$out.first" \
    || fail "$label printed '$(cat "$out.first")', not the assignment"
  for ((i = 0; i < RUNS; i++)); do
    start=${EPOCHREALTIME/./}
    "$@" >/dev/null
    end=${EPOCHREALTIME/./}
    echo "scale=3; ($end - $start) / 1000" | bc >>"$out.wall"
    /usr/bin/time -v "$@" 2>"$out.time" >/dev/null
    sed -n 's/^\s*Maximum resident set size (kbytes): //p' "$out.time" >>"$out.rss"
  done
  printf '%s %s\n' "$(median <"$out.wall")" "$(median <"$out.rss")" >"$out.result"
}

step "(b) one registration as a whole process, median of $RUNS runs each"
whole_process rust "$REGISTER_ONCE" localhost "$ID_SCOPE" "$SYM_ID" "$SYM_KEY" "$WORK/ca.pem"
# node resolves the SDK packages next to the script, in $WORK/sdk/node_modules.
whole_process node node "$WORK/sdk/register_once.js" localhost "$ID_SCOPE" "$SYM_ID" "$SYM_KEY" \
  "$WORK/ca.pem"
read -r RUST_WALL RUST_RSS <"$WORK/rust.result"
read -r NODE_WALL NODE_RSS <"$WORK/node.result"
printf 'register_once (Rust): %s ms, %s KiB;  node register_once.js: %s ms, %s KiB\n' \
  "$RUST_WALL" "$RUST_RSS" "$NODE_WALL" "$NODE_RSS"

step "(c) stripped size of register_once; (d) the device build (profile device, one transport, hsm-x509)"
stripped_size() { cp "$1" "$WORK/stripped" && strip "$WORK/stripped" && stat -c %s "$WORK/stripped"; }
SIZE_RELEASE=$(stripped_size "$REGISTER_ONCE")
# The one-registration device binary, once per transport (both builds write the same path).
cargo build --profile device --locked -p hsm-device-example
cp "$TARGET/device/register_x509" "$WORK/device-https"
cargo build --profile device --locked -p hsm-device-example --no-default-features --features mqtt
cp "$TARGET/device/register_x509" "$WORK/device-mqtt"
SIZE_DEVICE_HTTPS=$(stripped_size "$WORK/device-https")
SIZE_DEVICE_MQTT=$(stripped_size "$WORK/device-mqtt")
# Median peak RSS (KiB) of RUNS registrations of the X.509 bench device.
device_rss() { # binary [mqtt-port]
  local i out=$WORK/device-rss
  : >"$out"
  for ((i = 0; i < RUNS; i++)); do
    /usr/bin/time -v "$1" localhost "$ID_SCOPE" "$CERTS/device.pem" "$CERTS/device.key.pem" \
      "$WORK/ca.pem" ${2:+"$2"} >"$WORK/device.stdout" 2>"$WORK/device.time" \
      || fail "$1 did not register: $(cat "$WORK/device.time")"
    grep -qx "hub-bench.example.net bench-x509" "$WORK/device.stdout" \
      || fail "$1 printed '$(cat "$WORK/device.stdout")', not the assignment"
    sed -n 's/^\s*Maximum resident set size (kbytes): //p' "$WORK/device.time" >>"$out"
  done
  median <"$out"
}
RSS_DEVICE_HTTPS=$(device_rss "$WORK/device-https")
RSS_DEVICE_MQTT=$(device_rss "$WORK/device-mqtt" 8883)

# ratio ours theirs -> ours/theirs with 3 decimals
ratio() { echo "scale=3; $1 / $2" | bc | sed 's/^\./0./'; }
met() { # ratio goal
  if [ "$(echo "$1 <= $2" | bc)" = 1 ]; then echo yes; else echo NO; fi
}
mib() { echo "scale=2; $1 / 1048576" | bc | sed 's/^\./0./'; }

printf '\n==================== provisioning vs Node SDK (%s, %s cores, n=%s, %s runs) ====================\n' \
  "$(date -u +%Y-%m-%dT%H:%MZ)" "$(nproc)" "$REGISTRATIONS" "$RUNS"
ROWS=()
row() {
  printf '%-34s %12s %12s %8s %8s %5s\n' "$@"
  # For scripts/bench.sh's table: bench-row|area|measure|ours|baseline|value|goal|met
  [ "$1" = measure ] || ROWS+=("bench-row|provisioning vs Node.js SDK|${1#(?) }|$2|$3|$4|$5|$6")
}
row measure ours Node ratio goal met
row "(a) symmetric key p50 (ms)" "$RUST_SYM_P50" "$NODE_SYM_P50" "$(ratio "$RUST_SYM_P50" "$NODE_SYM_P50")" \
  "<=0.25" "$(met "$(ratio "$RUST_SYM_P50" "$NODE_SYM_P50")" 0.25)"
row "(a) symmetric key p99 (ms)" "$RUST_SYM_P99" "$NODE_SYM_P99" "$(ratio "$RUST_SYM_P99" "$NODE_SYM_P99")" "-" "-"
row "(a) X.509 p50 (ms)" "$RUST_X509_P50" "$NODE_X509_P50" "$(ratio "$RUST_X509_P50" "$NODE_X509_P50")" \
  "<=0.25" "$(met "$(ratio "$RUST_X509_P50" "$NODE_X509_P50")" 0.25)"
row "(a) X.509 p99 (ms)" "$RUST_X509_P99" "$NODE_X509_P99" "$(ratio "$RUST_X509_P99" "$NODE_X509_P99")" "-" "-"
row "(a) first telemetry acked p50 (ms)" "$RUST_HUB_P50" "$NODE_HUB_P50" "$(ratio "$RUST_HUB_P50" "$NODE_HUB_P50")" \
  "<=0.25" "$(met "$(ratio "$RUST_HUB_P50" "$NODE_HUB_P50")" 0.25)"
row "(a) first telemetry acked p99 (ms)" "$RUST_HUB_P99" "$NODE_HUB_P99" "$(ratio "$RUST_HUB_P99" "$NODE_HUB_P99")" "-" "-"
row "(a) symmetric key AMQP p50 (ms)" "$RUST_AMQP_P50" "$NODE_AMQP_P50" "$(ratio "$RUST_AMQP_P50" "$NODE_AMQP_P50")" \
  "<=0.25" "$(met "$(ratio "$RUST_AMQP_P50" "$NODE_AMQP_P50")" 0.25)"
row "(a) symmetric key AMQP p99 (ms)" "$RUST_AMQP_P99" "$NODE_AMQP_P99" "$(ratio "$RUST_AMQP_P99" "$NODE_AMQP_P99")" "-" "-"
row "(a) ours: AMQP / HTTPS p50, same run" "$RUST_AMQP_P50" "HTTPS" "$AMQP_HTTPS" "-" "-"
row "(b) whole process wall (ms, median)" "$RUST_WALL" "$NODE_WALL" "$(ratio "$RUST_WALL" "$NODE_WALL")" \
  "<=0.2" "$(met "$(ratio "$RUST_WALL" "$NODE_WALL")" 0.2)"
row "(b) whole process peak RSS (KiB)" "$RUST_RSS" "$NODE_RSS" "$(ratio "$RUST_RSS" "$NODE_RSS")" \
  "<=0.1" "$(met "$(ratio "$RUST_RSS" "$NODE_RSS")" 0.1)"
row "(c) stripped size, release (MiB)" "$(mib "$SIZE_RELEASE")" "-" "-" "<=4" \
  "$(met "$(mib "$SIZE_RELEASE")" 4)"
row "(d) device build, HTTPS + hsm-x509 (MiB)" "$(mib "$SIZE_DEVICE_HTTPS")" "-" "-" "<=2" \
  "$(met "$(mib "$SIZE_DEVICE_HTTPS")" 2)"
row "(d) device build, MQTT + hsm-x509 (MiB)" "$(mib "$SIZE_DEVICE_MQTT")" "-" "-" "<=2" \
  "$(met "$(mib "$SIZE_DEVICE_MQTT")" 2)"
row "(d) device build, HTTPS: peak RSS (MiB)" "$(mib $((RSS_DEVICE_HTTPS * 1024)))" "-" "-" "<=4" \
  "$(met "$(mib $((RSS_DEVICE_HTTPS * 1024)))" 4)"
row "(d) device build, MQTT: peak RSS (MiB)" "$(mib $((RSS_DEVICE_MQTT * 1024)))" "-" "-" "<=4" \
  "$(met "$(mib $((RSS_DEVICE_MQTT * 1024)))" 4)"
echo "(a) Rust: cargo bench -p provisioning --bench register against the emulator process (DPS_BENCH_*);"
echo "    Node: dps-emulator/tests/node-sdk/bench.js; both a new client and TLS connection per device."
echo "    First telemetry: registered over HTTPS (symmetric key), then the hub over MQTT (SAS), the"
echo "    message's PUBACK awaited; Node's hub client reaches the hub through GatewayHostName."
echo "(b) Rust: provisioning/examples/register_once.rs (release); Node: register_once.js; symmetric key, HTTPS."
echo "(d) device-example (register_x509), cargo build --profile device [--no-default-features --features mqtt]:"
echo "    one X.509 registration (hsm-x509, P-256), stripped size and median peak RSS of $RUNS runs."
printf '%s\n' "${ROWS[@]}"
