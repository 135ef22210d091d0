// Registration latency of the official Azure IoT Node.js device SDK against the dps-emulator:
// N sequential registrations (default 1000, after 10 warm-up ones) each for symmetric key and
// X.509 over HTTPS, every one with a new ProvisioningDeviceClient and a new connection, polling
// interval 0 (run the emulator with `retry_after = 0`); then N times "provisioned and first
// telemetry acknowledged": register (symmetric key, HTTPS), open the hub client
// (`azure-iot-device` over MQTT, the hub reached through GatewayHostName=localhost) and send one
// message until the hub acknowledges it, new connections each. Prints one JSON line:
// {"n":N,"symmetric_key":{"p50_ms":..,"p99_ms":..},"x509":{..},"first_telemetry":{..}}
//
// Run by scripts/bench-provisioning.sh, which starts the emulator and passes, in the environment:
// DPS_HOST, DPS_ID_SCOPE, SYM_ID, SYM_KEY, X509_ID, X509_CHAIN, X509_KEY, NODE_EXTRA_CA_CERTS and
// optionally REGISTRATIONS.
'use strict';

const fs = require('fs');
const https = require('https');

const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { Http } = require('azure-iot-provisioning-device-http');
const { Amqp } = require('azure-iot-provisioning-device-amqp');
const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');
const { X509Security } = require('azure-iot-security-x509');
const { Client, Message } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { env } = require('./common');

const WARM_UP = 10;

const host = env('DPS_HOST');
const idScope = env('DPS_ID_SCOPE');
const symId = env('SYM_ID');
const symKey = env('SYM_KEY');
const x509Id = env('X509_ID');
const x509Cert = {
  cert: fs.readFileSync(env('X509_CHAIN'), 'utf8'),
  key: fs.readFileSync(env('X509_KEY'), 'utf8'),
};
const n = Number(process.env.REGISTRATIONS || 1000);
if (!Number.isInteger(n) || n < 1) {
  console.error(`error: REGISTRATIONS must be a positive integer, not ${process.env.REGISTRATIONS}`);
  process.exit(2);
}

// The SDK's HTTP layer uses https.globalAgent, which keeps connections alive (Node >= 19) and
// caches TLS sessions: a fresh agent per device gives each registration its own connection and a
// full handshake, as the Rust client has. The register PUT and its polls still share one
// connection, as in the Rust client.
function freshAgent() {
  const old = https.globalAgent;
  https.globalAgent = new https.Agent({ keepAlive: true });
  old.destroy();
}

async function registerOnce(security, want, makeTransport = () => new Http()) {
  freshAgent();
  const transport = makeTransport();
  transport.setTransportOptions({ pollingInterval: 0 });
  const client = ProvisioningDeviceClient.create(host, idScope, transport, security());
  const result = await client.register();
  if (result.status !== 'assigned' || result.registrationId !== want) {
    throw new Error(`unexpected result for ${want}: ${JSON.stringify(result)}`);
  }
  return result;
}

// Registers, connects to the assigned hub and sends one message; resolves (with the open hub
// client, to close outside the measure) once the hub has acknowledged it.
async function firstTelemetryOnce() {
  const result = await registerOnce(() => new SymmetricKeySecurityClient(symId, symKey), symId);
  const hub = Client.fromConnectionString(
    `HostName=${result.assignedHub};DeviceId=${result.deviceId};SharedAccessKey=${symKey};` +
      'GatewayHostName=localhost',
    Mqtt,
  );
  await hub.open();
  await hub.sendEvent(new Message('{"bench":1}'));
  return hub;
}

function percentile(sorted, p) {
  return sorted[Math.round((sorted.length - 1) * p)];
}

// Runs `once` WARM_UP times, then n times timed; `after` runs outside the measure.
async function sample(once, after) {
  for (let i = 0; i < WARM_UP; i += 1) {
    await after(await once());
  }
  const samples = [];
  for (let i = 0; i < n; i += 1) {
    const started = process.hrtime.bigint();
    const value = await once();
    samples.push(Number(process.hrtime.bigint() - started) / 1e6);
    await after(value);
  }
  samples.sort((a, b) => a - b);
  const round = (ms) => Math.round(ms * 1000) / 1000;
  return { p50_ms: round(percentile(samples, 0.5)), p99_ms: round(percentile(samples, 0.99)) };
}

async function measure(security, registrationId, makeTransport) {
  return sample(() => registerOnce(security, registrationId, makeTransport), async () => {});
}

async function main() {
  const symmetric = await measure(() => new SymmetricKeySecurityClient(symId, symKey), symId);
  const x509 = await measure(() => new X509Security(x509Id, x509Cert), x509Id);
  const firstTelemetry = await sample(firstTelemetryOnce, (hub) => hub.close());
  // AMQP (azure-iot-provisioning-device-amqp): a new transport, so a new connection, each.
  const symmetricAmqp = await measure(
    () => new SymmetricKeySecurityClient(symId, symKey),
    symId,
    () => new Amqp(),
  );
  console.log(JSON.stringify({
    n,
    symmetric_key: symmetric,
    x509,
    first_telemetry: firstTelemetry,
    symmetric_key_amqp: symmetricAmqp,
  }));
  https.globalAgent.destroy();
}

main().catch((e) => {
  console.error('error:', e);
  process.exit(1);
});
