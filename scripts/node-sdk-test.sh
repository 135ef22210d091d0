#!/usr/bin/env bash
# The official Azure IoT Node.js device SDKs, unmodified, against the dps-emulator:
# - the provisioning client: symmetric key (individual, group-derived) and X.509 (individual, CA
#   group) over HTTPS, MQTT, MQTT over WebSockets (port 443), AMQP (azure-iot-provisioning-device-amqp,
#   port 5671) and AMQP over WebSockets must be assigned; a wrong key and a certificate from another
#   CA must be refused (register.js);
# - the hub client: devices provisioned by it connect to the emulator's hub (symmetric key and
#   X.509), send telemetry the emulator records, read and report their twin; a wrong key is
#   refused (hub.js).
#
# The SDK talks to the standard ports only, so the emulator listens on 127.0.0.1:443 (HTTPS),
# 127.0.0.1:8883 (MQTT) and 127.0.0.1:5671 (AMQP): run as root (as CI does) or give the binary CAP_NET_BIND_SERVICE.
# Needs node (>= 18) and npm, openssl, and the npm registry (packages pinned in
# dps-emulator/tests/node-sdk/package-lock.json). KEEP_TMP=1 keeps the work folder.
# Usage: ./scripts/node-sdk-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh
START=$SECONDS

require_node
echo "building the emulator"
cargo build -p dps-emulator --locked --quiet
EMULATOR=$(target_dir)/debug/dps-emulator
[ -x "$EMULATOR" ] || fail "the emulator binary is not at $EMULATOR"

make_work_dir dps-node-sdk
echo "installing the SDK (npm ci) in $WORK/sdk"
install_node_sdk register.js hub.js

echo "generating X.509 material"
CERTS=$WORK/certs
cert_init
cert_self_signed root "node-sdk test root CA"
cert_issue intermediate "node-sdk test intermediate CA" root ca
cert_issue device-individual node-x509-1 root device
cert_issue device-group node-group-x509-1 intermediate device
cert_self_signed rogue-root "node-sdk rogue CA"
cert_issue rogue-individual node-x509-1 rogue-root device
cert_issue rogue-group node-group-x509-1 rogue-root device
cert_issue hub-device node-hub-x509 root device
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
HUB_SYM_KEY=$(openssl rand -base64 32)
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

# The hub leg: a hub whose name does not resolve (the SDK reaches it with GatewayHostName), and
# one named localhost (X.509 connections ignore GatewayHostName).
[[enrollment]]
registration_id = "node-hub-sym"
device_id = "node-hub-sym-device"
symmetric_key = { primary = "$HUB_SYM_KEY" }
iot_hubs = ["hub-node.example.net"]

[[enrollment]]
registration_id = "node-hub-x509"
x509_certificate = "certs/hub-device.pem"
iot_hubs = ["localhost"]

[[group]]
id = "node-group-sym"
symmetric_key = { primary = "$GROUP_KEY" }
iot_hubs = ["hub-group-sym.example.net"]

[[group]]
id = "node-group-x509"
x509_ca = "certs/root.pem"
iot_hubs = ["hub-group-x509.example.net"]
TOML

echo "starting the emulator on 127.0.0.1:443 (HTTPS), :8883 (MQTT) and :5671 (AMQP)"
start_emulator "$WORK/emulator.toml"

echo "registering with the official SDK"
(cd "$WORK/sdk" && NODE_EXTRA_CA_CERTS="$WORK/ca.pem" DPS_HOST=localhost DPS_ID_SCOPE=$ID_SCOPE \
  CERT_DIR="$CERTS" SYM_KEY=$SYM_KEY GROUP_KEY=$GROUP_KEY WRONG_KEY=$WRONG_KEY node register.js) \
  || fail "the official Node.js SDK did not register as expected against the emulator (see above)"

echo "connecting to the emulator's hubs with the official SDK's hub client"
(cd "$WORK/sdk" && NODE_EXTRA_CA_CERTS="$WORK/ca.pem" DPS_HOST=localhost DPS_ID_SCOPE=$ID_SCOPE \
  CERT_DIR="$CERTS" HUB_SYM_KEY=$HUB_SYM_KEY WRONG_KEY=$WRONG_KEY node hub.js) \
  || fail "the official Node.js SDK's hub client did not work as expected against the emulator (see above)"
echo "node SDK test passed in $((SECONDS - START)) s"
