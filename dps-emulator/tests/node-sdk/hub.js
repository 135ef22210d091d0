// The hub leg with the official Azure IoT Node.js SDKs, unmodified, against the dps-emulator:
// each device registers with the provisioning client, then connects to the hub it was assigned
// with the hub client (`azure-iot-device` over `azure-iot-device-mqtt`), sends telemetry (which
// the emulator must have recorded, read back through its admin API), reads its twin and reports
// a property. Symmetric key (the hub reached through GatewayHostName, as for a private name) and
// X.509 (a hub named `localhost`); a wrong key at the hub must be refused (UnauthorizedError).
//
// Run by scripts/node-sdk-test.sh, which starts the emulator and passes, in the environment:
// DPS_HOST, DPS_ID_SCOPE, CERT_DIR, HUB_SYM_KEY, WRONG_KEY and NODE_EXTRA_CA_CERTS.
'use strict';

const fs = require('fs');
const https = require('https');
const path = require('path');

const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { Mqtt: ProvisioningMqtt } = require('azure-iot-provisioning-device-mqtt');
const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');
const { X509Security } = require('azure-iot-security-x509');
const { Client, Message } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { env, withTimeout } = require('./common');

const CASE_TIMEOUT_MS = 20000;

const host = env('DPS_HOST');
const idScope = env('DPS_ID_SCOPE');
const certDir = env('CERT_DIR');
const symKey = env('HUB_SYM_KEY');
const wrongKey = env('WRONG_KEY');

function x509(name) {
  return {
    cert: fs.readFileSync(path.join(certDir, `${name}.pem`), 'utf8'),
    key: fs.readFileSync(path.join(certDir, `${name}.key.pem`), 'utf8'),
  };
}

// The emulator's admin API (HTTPS, loopback): what its hubs received.
function telemetryOf(deviceId) {
  return new Promise((resolve, reject) => {
    const req = https.get(
      { host: 'localhost', port: 443, path: `/admin/telemetry?deviceId=${encodeURIComponent(deviceId)}` },
      (res) => {
        let body = '';
        res.on('data', (d) => { body += d; });
        res.on('end', () => {
          if (res.statusCode !== 200) {
            reject(new Error(`admin API: status ${res.statusCode}: ${body}`));
            return;
          }
          resolve(JSON.parse(body));
        });
      },
    );
    req.on('error', reject);
  });
}

async function provision(registrationId, security) {
  const client = ProvisioningDeviceClient.create(host, idScope, new ProvisioningMqtt(), security);
  const result = await withTimeout(client.register(), CASE_TIMEOUT_MS, 'register');
  if (result.status !== 'assigned' || result.registrationId !== registrationId) {
    throw new Error(`not assigned: ${JSON.stringify(result)}`);
  }
  return result;
}

const cases = [
  {
    name: 'symmetric key, hub reached through GatewayHostName',
    registrationId: 'node-hub-sym',
    security: () => new SymmetricKeySecurityClient('node-hub-sym', symKey),
    hubClient: (r) => Client.fromConnectionString(
      `HostName=${r.assignedHub};DeviceId=${r.deviceId};SharedAccessKey=${symKey};GatewayHostName=localhost`,
      Mqtt,
    ),
  },
  {
    name: 'X.509, hub named localhost',
    registrationId: 'node-hub-x509',
    security: () => new X509Security('node-hub-x509', x509('hub-device')),
    hubClient: (r) => {
      const client = Client.fromConnectionString(
        `HostName=${r.assignedHub};DeviceId=${r.deviceId};x509=true`,
        Mqtt,
      );
      client.setOptions(x509('hub-device'));
      return client;
    },
  },
  {
    name: 'refused at the hub: symmetric key, wrong key',
    registrationId: 'node-hub-sym',
    security: () => new SymmetricKeySecurityClient('node-hub-sym', symKey),
    hubClient: (r) => Client.fromConnectionString(
      `HostName=${r.assignedHub};DeviceId=${r.deviceId};SharedAccessKey=${wrongKey};GatewayHostName=localhost`,
      Mqtt,
    ),
    refused: true,
  },
];

async function runCase(c) {
  const started = Date.now();
  const assignment = await provision(c.registrationId, c.security());
  const client = c.hubClient(assignment);
  try {
    let opened;
    try {
      await withTimeout(client.open(), CASE_TIMEOUT_MS, 'open');
      opened = true;
    } catch (e) {
      if (c.refused && e.name === 'UnauthorizedError') {
        return `refused by ${assignment.assignedHub}: ${e.name}: ${e.message}`;
      }
      throw e;
    }
    if (c.refused && opened) {
      throw new Error(`${assignment.assignedHub} accepted a wrong key`);
    }
    const marker = `node-${c.registrationId}-${Date.now()}`;
    const message = new Message(JSON.stringify({ marker }));
    message.contentType = 'application/json';
    message.contentEncoding = 'utf-8';
    message.properties.add('source', 'node-sdk');
    await withTimeout(client.sendEvent(message), CASE_TIMEOUT_MS, 'sendEvent');
    const twin = await withTimeout(client.getTwin(), CASE_TIMEOUT_MS, 'getTwin');
    const desired = twin.properties.desired.$version;
    const reportedBefore = twin.properties.reported.$version;
    await withTimeout(
      new Promise((resolve, reject) => {
        twin.properties.reported.update({ marker }, (e) => (e ? reject(e) : resolve()));
      }),
      CASE_TIMEOUT_MS,
      'reported update',
    );
    const received = await telemetryOf(assignment.deviceId);
    const ours = received.find((m) => m.payload && m.payload.includes(marker));
    if (!ours) {
      throw new Error(`the emulator did not record the telemetry: ${JSON.stringify(received)}`);
    }
    const props = Object.fromEntries(ours.properties);
    if (props.source !== 'node-sdk' || props['$.ct'] !== 'application/json') {
      throw new Error(`the properties did not arrive: ${JSON.stringify(ours.properties)}`);
    }
    if (ours.hub !== assignment.assignedHub) {
      throw new Error(`recorded on ${ours.hub}, assigned ${assignment.assignedHub}`);
    }
    return `telemetry acknowledged by ${assignment.assignedHub} as ${assignment.deviceId}, ` +
      `twin desired v${desired}, reported v${reportedBefore} updated (${Date.now() - started} ms)`;
  } finally {
    await client.close().catch(() => {});
  }
}

async function main() {
  let passed = 0;
  let failed = 0;
  for (const c of cases) {
    try {
      const detail = await runCase(c);
      passed += 1;
      console.log(`PASS hub  ${c.name} [${c.registrationId}]: ${detail}`);
    } catch (e) {
      failed += 1;
      console.log(`FAIL hub  ${c.name} [${c.registrationId}]: ${e.name}: ${e.message}`);
    }
  }
  console.log(`\nNode SDK hub client against dps-emulator: ${passed} passed, ${failed} failed`);
  process.exit(failed === 0 ? 0 : 1);
}

main().catch((e) => {
  console.error('error:', e);
  process.exit(1);
});
