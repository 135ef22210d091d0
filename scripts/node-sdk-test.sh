#!/usr/bin/env bash
# The official Azure IoT Node.js device provisioning SDK, unmodified, against the dps-emulator:
# symmetric key (individual, group-derived) and X.509 (individual, CA group) over HTTPS and MQTT
# must be assigned; a wrong key and a certificate from another CA must be refused.
#
# The SDK talks to the standard ports only, so the emulator listens on 127.0.0.1:443 (HTTPS) and
# 127.0.0.1:8883 (MQTT): run as root (as CI does) or give the binary CAP_NET_BIND_SERVICE.
# Needs node (>= 18) and npm, openssl, and the npm registry (packages pinned in
# dps-emulator/tests/node-sdk/package-lock.json). KEEP_TMP=1 keeps the work folder.
# Usage: ./scripts/node-sdk-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SDK_DIR=$ROOT/dps-emulator/tests/node-sdk
START=$SECONDS

fail() { printf 'error: %s\n' "$*" >&2; exit 1; }

for tool in node npm; do
  command -v "$tool" >/dev/null || fail "$tool not found: install Node.js 18 or later with npm \
(Debian: apt-get install nodejs npm; or Node 20 from https://nodejs.org or NodeSource)"
done
command -v openssl >/dev/null || fail "openssl not found (Debian: apt-get install openssl)"
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 18 ] || fail "node $(node --version) is too old: the SDK test needs Node.js 18 or later"

echo "building the emulator"
cargo build -p dps-emulator --locked --quiet
EMULATOR=$(cargo metadata --format-version 1 --no-deps | node -e \
  'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).target_directory))')/debug/dps-emulator
[ -x "$EMULATOR" ] || fail "the emulator binary is not at $EMULATOR"

WORK=$(mktemp -d -t dps-node-sdk.XXXXXX)
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

echo "installing the SDK (npm ci) in $WORK/sdk"
mkdir -p "$WORK/sdk"
cp "$SDK_DIR/package.json" "$SDK_DIR/package-lock.json" "$SDK_DIR/register.js" "$WORK/sdk/"
(cd "$WORK/sdk" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null) \
  || fail "npm ci failed (is the npm registry reachable?)"

echo "generating X.509 material"
CERTS=$WORK/certs
mkdir -p "$CERTS"
cat >"$CERTS/ext.cnf" <<'CNF'
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[device]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CNF
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$CERTS/$1.key.pem" 2>/dev/null; }
self_signed() { # name CN
  key "$1"
  openssl req -new -key "$CERTS/$1.key.pem" -subj "/CN=$2" -out "$CERTS/$1.csr"
  openssl x509 -req -in "$CERTS/$1.csr" -signkey "$CERTS/$1.key.pem" -days 2 -sha256 \
    -extfile "$CERTS/ext.cnf" -extensions ca -out "$CERTS/$1.pem" 2>/dev/null
}
issue() { # name CN issuer extensions
  key "$1"
  openssl req -new -key "$CERTS/$1.key.pem" -subj "/CN=$2" -out "$CERTS/$1.csr"
  openssl x509 -req -in "$CERTS/$1.csr" -CA "$CERTS/$3.pem" -CAkey "$CERTS/$3.key.pem" \
    -CAcreateserial -days 2 -sha256 -extfile "$CERTS/ext.cnf" -extensions "$4" \
    -out "$CERTS/$1.pem" 2>/dev/null
}
self_signed root "node-sdk test root CA"
issue intermediate "node-sdk test intermediate CA" root ca
issue device-individual node-x509-1 root device
issue device-group node-group-x509-1 intermediate device
self_signed rogue-root "node-sdk rogue CA"
issue rogue-individual node-x509-1 rogue-root device
issue rogue-group node-group-x509-1 rogue-root device
# What the device presents: its certificate, then the intermediates up to the enrolled CA.
cp "$CERTS/device-individual.pem" "$CERTS/device-individual.chain.pem"
cat "$CERTS/device-group.pem" "$CERTS/intermediate.pem" >"$CERTS/device-group.chain.pem"
cp "$CERTS/rogue-individual.pem" "$CERTS/rogue-individual.chain.pem"
cp "$CERTS/rogue-group.pem" "$CERTS/rogue-group.chain.pem"
openssl verify -CAfile "$CERTS/root.pem" -untrusted "$CERTS/intermediate.pem" \
  "$CERTS/device-individual.pem" "$CERTS/device-group.pem" >/dev/null \
  || fail "openssl does not verify the generated device certificates"

SYM_KEY=$(openssl rand -base64 32)
GROUP_KEY=$(openssl rand -base64 64 | tr -d '\n')
WRONG_KEY=$(openssl rand -base64 32)
ID_SCOPE=0ne00NODE01
cat >"$WORK/emulator.toml" <<TOML
id_scope = "$ID_SCOPE"
iot_hubs = ["hub-default.example.net"]
retry_after = 0

[[enrollment]]
registration_id = "node-sym-1"
device_id = "node-sym-1-device"
symmetric_key = { primary = "$SYM_KEY" }
iot_hubs = ["hub-sym.example.net"]

[[enrollment]]
registration_id = "node-x509-1"
device_id = "node-x509-1-device"
x509_certificate = "certs/device-individual.pem"
iot_hubs = ["hub-x509.example.net"]

[[group]]
id = "node-group-sym"
symmetric_key = { primary = "$GROUP_KEY" }
iot_hubs = ["hub-group-sym.example.net"]

[[group]]
id = "node-group-x509"
x509_ca = "certs/root.pem"
iot_hubs = ["hub-group-x509.example.net"]
TOML

echo "starting the emulator on 127.0.0.1:443 (HTTPS) and 127.0.0.1:8883 (MQTT)"
"$EMULATOR" --config "$WORK/emulator.toml" --https 127.0.0.1:443 --mqtt 127.0.0.1:8883 \
  --write-ca "$WORK/ca.pem" >"$WORK/emulator.log" 2>&1 &
EMULATOR_PID=$!
for _ in $(seq 1 100); do
  grep -q "dps-emulator ready" "$WORK/emulator.log" && break
  if ! kill -0 "$EMULATOR_PID" 2>/dev/null; then
    wait "$EMULATOR_PID" 2>/dev/null || true
    EMULATOR_PID=
    if grep -qi "permission denied" "$WORK/emulator.log"; then
      fail "the emulator may not bind 127.0.0.1:443/8883 (no privilege): the Node SDK only talks to \
the standard ports; run as root or: setcap cap_net_bind_service=+ep $EMULATOR"
    fi
    if grep -qi "address already in use" "$WORK/emulator.log"; then
      fail "127.0.0.1:443 or 127.0.0.1:8883 is in use by another process (another run of this test?)"
    fi
    fail "the emulator exited before it was ready"
  fi
  sleep 0.1
done
grep -q "dps-emulator ready" "$WORK/emulator.log" || fail "the emulator did not get ready within 10 s"

echo "registering with the official SDK"
(cd "$WORK/sdk" && NODE_EXTRA_CA_CERTS="$WORK/ca.pem" DPS_HOST=localhost DPS_ID_SCOPE=$ID_SCOPE \
  CERT_DIR="$CERTS" SYM_KEY=$SYM_KEY GROUP_KEY=$GROUP_KEY WRONG_KEY=$WRONG_KEY node register.js) \
  || fail "the official Node.js SDK did not register as expected against the emulator (see above)"
echo "node SDK test passed in $((SECONDS - START)) s"
