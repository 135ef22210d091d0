// Registration latency of the official Azure IoT Node.js device SDK against the dps-emulator:
// N sequential registrations (default 1000, after 10 warm-up ones) each for symmetric key and
// X.509 over HTTPS, every one with a new ProvisioningDeviceClient and a new connection, polling
// interval 0 (run the emulator with `retry_after = 0`). Prints one JSON line:
// {"n":N,"symmetric_key":{"p50_ms":..,"p99_ms":..},"x509":{"p50_ms":..,"p99_ms":..}}
//
// Run by scripts/bench-provisioning.sh, which starts the emulator and passes, in the environment:
// DPS_HOST, DPS_ID_SCOPE, SYM_ID, SYM_KEY, X509_ID, X509_CHAIN, X509_KEY, NODE_EXTRA_CA_CERTS and
// optionally REGISTRATIONS.
'use strict';

const fs = require('fs');
const https = require('https');

const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { Http } = require('azure-iot-provisioning-device-http');
const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');
const { X509Security } = require('azure-iot-security-x509');

const WARM_UP = 10;

function env(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`error: ${name} is not set (run this through scripts/bench-provisioning.sh)`);
    process.exit(2);
  }
  return value;
}

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

async function registerOnce(security, want) {
  freshAgent();
  const transport = new Http();
  transport.setTransportOptions({ pollingInterval: 0 });
  const client = ProvisioningDeviceClient.create(host, idScope, transport, security());
  const result = await client.register();
  if (result.status !== 'assigned' || result.registrationId !== want) {
    throw new Error(`unexpected result for ${want}: ${JSON.stringify(result)}`);
  }
}

function percentile(sorted, p) {
  return sorted[Math.round((sorted.length - 1) * p)];
}

async function measure(security, registrationId) {
  for (let i = 0; i < WARM_UP; i += 1) {
    await registerOnce(security, registrationId);
  }
  const samples = [];
  for (let i = 0; i < n; i += 1) {
    const started = process.hrtime.bigint();
    await registerOnce(security, registrationId);
    samples.push(Number(process.hrtime.bigint() - started) / 1e6);
  }
  samples.sort((a, b) => a - b);
  const round = (ms) => Math.round(ms * 1000) / 1000;
  return { p50_ms: round(percentile(samples, 0.5)), p99_ms: round(percentile(samples, 0.99)) };
}

async function main() {
  const symmetric = await measure(() => new SymmetricKeySecurityClient(symId, symKey), symId);
  const x509 = await measure(() => new X509Security(x509Id, x509Cert), x509Id);
  console.log(JSON.stringify({ n, symmetric_key: symmetric, x509 }));
  https.globalAgent.destroy();
}

main().catch((e) => {
  console.error('error:', e);
  process.exit(1);
});
