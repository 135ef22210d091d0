#!/usr/bin/env bash
# The provisioning client against the official Azure IoT Node.js device SDK, side by side against
# one dps-emulator process (release build, 127.0.0.1:443/8883, Retry-After 0), in one run:
#  (a) in-process latency: 1000 sequential registrations each for symmetric key and X.509 over
#      HTTPS, a new client and TLS connection per device: `cargo bench -p provisioning --bench
#      register` (pointed at the emulator with DPS_BENCH_*) vs dps-emulator/tests/node-sdk/bench.js;
#  (b) one registration as a whole process: provisioning's `register_once` example (release) vs
#      `node register_once.js`, median wall time and peak RSS (/usr/bin/time -v) of RUNS runs;
#  (c) the stripped size of register_once (and of a `release-small` build if the root Cargo.toml
#      defines that profile).
# Ends with one table of the ratios and their goals (exit status 0 even when a goal is missed;
# non-zero when a step fails).
#
# The SDK only talks to port 443, so run as root (as CI does) or give the emulator binary
# CAP_NET_BIND_SERVICE. Needs node (>= 18) and npm, openssl, the npm registry (packages pinned in
# dps-emulator/tests/node-sdk/package-lock.json), GNU time and bc (installed with apt-get if
# missing).
# Usage: ./scripts/bench-provisioning.sh   (REGISTRATIONS=N, RUNS=N, KEEP_TMP=1 keep the work folder)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SDK_DIR=$ROOT/dps-emulator/tests/node-sdk
REGISTRATIONS=${REGISTRATIONS:-1000}
RUNS=${RUNS:-10}

fail() { printf 'error: %s\n' "$*" >&2; exit 1; }
step() { printf '\n==> %s\n' "$*"; }

for tool in node npm; do
  command -v "$tool" >/dev/null || fail "$tool not found: install Node.js 18 or later with npm \
(Debian: apt-get install nodejs npm)"
done
command -v openssl >/dev/null || fail "openssl not found (Debian: apt-get install openssl)"
command -v strip >/dev/null || fail "strip not found (Debian: apt-get install binutils)"
missing=()
[ -x /usr/bin/time ] || missing+=(time)
command -v bc >/dev/null || missing+=(bc)
if [ ${#missing[@]} -gt 0 ]; then
  step "installing ${missing[*]}"
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  { "${sudo[@]}" apt-get update -qq && "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}"; } || fail "cannot install ${missing[*]} (apt-get install ${missing[*]})"
fi

step "building in release: the emulator, the register_once example, the register bench"
cargo build --release --locked -p dps-emulator
cargo build --release --locked -p provisioning --example register_once
cargo bench --locked -p provisioning --bench register --no-run
TARGET=$(cargo metadata --format-version 1 --no-deps | node -e \
  'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).target_directory))')
EMULATOR=$TARGET/release/dps-emulator
REGISTER_ONCE=$TARGET/release/examples/register_once
[ -x "$EMULATOR" ] || fail "the emulator binary is not at $EMULATOR"
[ -x "$REGISTER_ONCE" ] || fail "the example binary is not at $REGISTER_ONCE"

WORK=$(mktemp -d -t bench-provisioning.XXXXXX)
EMULATOR_PID=
cleanup() {
  local rc=$?
  if [ -n "$EMULATOR_PID" ] && kill -0 "$EMULATOR_PID" 2>/dev/null; then
    kill "$EMULATOR_PID" 2>/dev/null || true
    wait "$EMULATOR_PID" 2>/dev/null || true
  fi
  if [ "$rc" -ne 0 ] && [ -f "$WORK/emulator.log" ]; then
    echo "--- emulator log (last 40 lines) ---" >&2
    tail -n 40 "$WORK/emulator.log" >&2
  fi
  if [ "${KEEP_TMP:-}" = 1 ]; then
    echo "work folder kept: $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "installing the Node SDK (npm ci) in $WORK/sdk"
mkdir -p "$WORK/sdk"
cp "$SDK_DIR/package.json" "$SDK_DIR/package-lock.json" "$SDK_DIR/bench.js" \
  "$SDK_DIR/register_once.js" "$WORK/sdk/"
(cd "$WORK/sdk" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null) \
  || fail "npm ci failed (is the npm registry reachable?)"

step "generating the bench devices (symmetric key; X.509 P-256 under a CA group)"
CERTS=$WORK/certs
mkdir -p "$CERTS"
cat >"$CERTS/ext.cnf" <<'CNF'
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[device]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CNF
for name in root device; do
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$CERTS/$name.key.pem" 2>/dev/null
done
openssl req -new -key "$CERTS/root.key.pem" -subj "/CN=bench root CA" -out "$CERTS/root.csr"
openssl x509 -req -in "$CERTS/root.csr" -signkey "$CERTS/root.key.pem" -days 2 -sha256 \
  -extfile "$CERTS/ext.cnf" -extensions ca -out "$CERTS/root.pem" 2>/dev/null
openssl req -new -key "$CERTS/device.key.pem" -subj "/CN=bench-x509" -out "$CERTS/device.csr"
openssl x509 -req -in "$CERTS/device.csr" -CA "$CERTS/root.pem" -CAkey "$CERTS/root.key.pem" \
  -CAcreateserial -days 2 -sha256 -extfile "$CERTS/ext.cnf" -extensions device \
  -out "$CERTS/device.pem" 2>/dev/null
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

step "starting the emulator (release) on 127.0.0.1:443 (HTTPS) and 127.0.0.1:8883 (MQTT)"
# warn: no per-registration log lines, so the server does the same small work for both clients.
RUST_LOG=warn "$EMULATOR" --config "$WORK/emulator.toml" --https 127.0.0.1:443 \
  --mqtt 127.0.0.1:8883 --write-ca "$WORK/ca.pem" >"$WORK/emulator.log" 2>&1 &
EMULATOR_PID=$!
for _ in $(seq 1 100); do
  grep -q "dps-emulator ready" "$WORK/emulator.log" && break
  if ! kill -0 "$EMULATOR_PID" 2>/dev/null; then
    wait "$EMULATOR_PID" 2>/dev/null || true
    EMULATOR_PID=
    grep -qi "permission denied" "$WORK/emulator.log" && fail "the emulator may not bind \
127.0.0.1:443 (no privilege): run as root or: setcap cap_net_bind_service=+ep $EMULATOR"
    grep -qi "address already in use" "$WORK/emulator.log" && fail "127.0.0.1:443 or :8883 is \
in use by another process (another run of this script or of node-sdk-test.sh?)"
    fail "the emulator exited before it was ready"
  fi
  sleep 0.1
done
grep -q "dps-emulator ready" "$WORK/emulator.log" || fail "the emulator did not get ready within 10 s"

step "(a) in-process latency, Rust: cargo bench -p provisioning --bench register (n=$REGISTRATIONS)"
DPS_BENCH_ENDPOINT=localhost DPS_BENCH_SCOPE=$ID_SCOPE DPS_BENCH_CA=$WORK/ca.pem \
  DPS_BENCH_SYM_ID=$SYM_ID DPS_BENCH_KEY=$SYM_KEY DPS_BENCH_X509_CHAIN=$CERTS/device.pem \
  DPS_BENCH_X509_KEY=$CERTS/device.key.pem REGISTRATIONS=$REGISTRATIONS \
  cargo bench --locked -p provisioning --bench register 2>"$WORK/rust-bench.err" \
  | tee "$WORK/rust-bench.out" || { cat "$WORK/rust-bench.err" >&2; fail "the Rust bench failed"; }
grep -q "against the DPS at localhost" "$WORK/rust-bench.out" \
  || fail "the Rust bench did not use the external emulator"
# "symmetric key, HTTPS  n=1000  p50    1.234 ms  p99    5.678 ms  (...)" -> "1.234 5.678"
rust_p() { sed -n "s/^$1.* p50 *\([0-9.]*\) ms *p99 *\([0-9.]*\) ms.*/\1 \2/p" "$WORK/rust-bench.out"; }
read -r RUST_SYM_P50 RUST_SYM_P99 < <(rust_p "symmetric key")
read -r RUST_X509_P50 RUST_X509_P99 < <(rust_p "X.509")
[ -n "${RUST_SYM_P99:-}" ] && [ -n "${RUST_X509_P99:-}" ] || fail "cannot read the Rust bench output"

step "(a) in-process latency, Node: node bench.js (n=$REGISTRATIONS)"
(cd "$WORK/sdk" && NODE_EXTRA_CA_CERTS="$WORK/ca.pem" DPS_HOST=localhost DPS_ID_SCOPE=$ID_SCOPE \
  SYM_ID=$SYM_ID SYM_KEY=$SYM_KEY X509_ID=bench-x509 X509_CHAIN=$CERTS/device.pem \
  X509_KEY=$CERTS/device.key.pem REGISTRATIONS=$REGISTRATIONS node bench.js) \
  | tee "$WORK/node-bench.json" || fail "the Node bench failed"
node_p() { node -e 'const r=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8"))[process.argv[2]];
  console.log(r.p50_ms, r.p99_ms)' "$WORK/node-bench.json" "$1"; }
read -r NODE_SYM_P50 NODE_SYM_P99 < <(node_p symmetric_key)
read -r NODE_X509_P50 NODE_X509_P99 < <(node_p x509)

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

step "(c) stripped size of register_once"
stripped_size() { cp "$1" "$WORK/stripped" && strip "$WORK/stripped" && stat -c %s "$WORK/stripped"; }
SIZE_RELEASE=$(stripped_size "$REGISTER_ONCE")
SIZE_SMALL=
if grep -q '^\[profile\.release-small\]' Cargo.toml; then
  cargo build --profile release-small --locked -p provisioning --example register_once
  SIZE_SMALL=$(stripped_size "$TARGET/release-small/examples/register_once")
fi

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
row "(b) whole process wall (ms, median)" "$RUST_WALL" "$NODE_WALL" "$(ratio "$RUST_WALL" "$NODE_WALL")" \
  "<=0.2" "$(met "$(ratio "$RUST_WALL" "$NODE_WALL")" 0.2)"
row "(b) whole process peak RSS (KiB)" "$RUST_RSS" "$NODE_RSS" "$(ratio "$RUST_RSS" "$NODE_RSS")" \
  "<=0.1" "$(met "$(ratio "$RUST_RSS" "$NODE_RSS")" 0.1)"
row "(c) stripped size, release (MiB)" "$(mib "$SIZE_RELEASE")" "-" "-" "<=4" \
  "$(met "$(mib "$SIZE_RELEASE")" 4)"
if [ -n "$SIZE_SMALL" ]; then
  row "(c) stripped size, release-small" "$(mib "$SIZE_SMALL")" "-" "-" "<=4" "$(met "$(mib "$SIZE_SMALL")" 4)"
fi
echo "(a) Rust: cargo bench -p provisioning --bench register against the emulator process (DPS_BENCH_*);"
echo "    Node: dps-emulator/tests/node-sdk/bench.js; both a new client and TLS connection per device."
echo "(b) Rust: provisioning/examples/register_once.rs (release); Node: register_once.js; symmetric key, HTTPS."
printf '%s\n' "${ROWS[@]}"
