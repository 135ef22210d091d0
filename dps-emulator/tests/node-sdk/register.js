// Registers devices against the dps-emulator with the official Azure IoT Node.js device SDK,
// unmodified, over HTTPS, MQTT, MQTT over WebSockets (wss://host:443/$iothub/websocket), AMQP
// (amqps://host:5671) and AMQP over WebSockets: symmetric key (individual and group-derived) and X.509
// (individual and CA group) must end `assigned` with the expected hub and device id; a wrong key
// and a certificate from another CA (same CN) must be refused with an error, never a hang.
//
// Run by scripts/node-sdk-test.sh, which starts the emulator and passes, in the environment:
// DPS_HOST, DPS_ID_SCOPE, CERT_DIR, SYM_KEY, GROUP_KEY, WRONG_KEY, and NODE_EXTRA_CA_CERTS.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const path = require('path');

const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { Http } = require('azure-iot-provisioning-device-http');
const { Mqtt, MqttWs } = require('azure-iot-provisioning-device-mqtt');
const { Amqp, AmqpWs } = require('azure-iot-provisioning-device-amqp');
const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');
const { X509Security } = require('azure-iot-security-x509');
const { env, withTimeout } = require('./common');

const CASE_TIMEOUT_MS = 20000;

const host = env('DPS_HOST');
const idScope = env('DPS_ID_SCOPE');
const certDir = env('CERT_DIR');
const symKey = env('SYM_KEY');
const groupKey = env('GROUP_KEY');
const wrongKey = env('WRONG_KEY');

// The group enrollment's device key: base64(HMAC-SHA256(base64decode(groupKey), registrationId)).
function deriveKey(key, registrationId) {
  return crypto
    .createHmac('sha256', Buffer.from(key, 'base64'))
    .update(registrationId, 'utf8')
    .digest('base64');
}

function x509(name) {
  return {
    cert: fs.readFileSync(path.join(certDir, `${name}.chain.pem`), 'utf8'),
    key: fs.readFileSync(path.join(certDir, `${name}.key.pem`), 'utf8'),
  };
}

const transports = {
  http: () => new Http(),
  mqtt: () => new Mqtt(),
  mqttws: () => new MqttWs(),
  amqp: () => new Amqp(),
  amqpws: () => new AmqpWs(),
};

function cases(t) {
  const groupSymId = `node-group-sym-${t}`;
  return [
    {
      name: 'symmetric key, individual',
      registrationId: 'node-sym-1',
      security: () => new SymmetricKeySecurityClient('node-sym-1', symKey),
      expect: { assignedHub: 'hub-sym.example.net', deviceId: 'node-sym-1-device' },
    },
    {
      name: 'symmetric key, group-derived',
      registrationId: groupSymId,
      security: () => new SymmetricKeySecurityClient(groupSymId, deriveKey(groupKey, groupSymId)),
      expect: { assignedHub: 'hub-group-sym.example.net', deviceId: groupSymId },
    },
    {
      name: 'X.509, individual',
      registrationId: 'node-x509-1',
      security: () => new X509Security('node-x509-1', x509('device-individual')),
      expect: { assignedHub: 'hub-x509.example.net', deviceId: 'node-x509-1-device' },
    },
    {
      name: 'X.509, CA group (leaf + intermediate)',
      registrationId: 'node-group-x509-1',
      security: () => new X509Security('node-group-x509-1', x509('device-group')),
      expect: { assignedHub: 'hub-group-x509.example.net', deviceId: 'node-group-x509-1' },
    },
    {
      name: 'refused: symmetric key, individual, wrong key',
      registrationId: 'node-sym-1',
      security: () => new SymmetricKeySecurityClient('node-sym-1', wrongKey),
      refused: true,
    },
    {
      name: 'refused: symmetric key, derived from a wrong group key',
      registrationId: `node-group-sym-bad-${t}`,
      security: () =>
        new SymmetricKeySecurityClient(
          `node-group-sym-bad-${t}`,
          deriveKey(wrongKey, `node-group-sym-bad-${t}`),
        ),
      refused: true,
    },
    {
      name: 'refused: X.509, individual CN, rogue CA',
      registrationId: 'node-x509-1',
      security: () => new X509Security('node-x509-1', x509('rogue-individual')),
      refused: true,
    },
    {
      name: 'refused: X.509, group CN, rogue CA',
      registrationId: 'node-group-x509-1',
      security: () => new X509Security('node-group-x509-1', x509('rogue-group')),
      refused: true,
    },
  ];
}

async function runCase(t, c) {
  const transport = transports[t]();
  transport.setTransportOptions({ pollingInterval: 100 });
  const client = ProvisioningDeviceClient.create(host, idScope, transport, c.security());
  const started = Date.now();
  let result;
  let error;
  try {
    result = await withTimeout(client.register(), CASE_TIMEOUT_MS);
  } catch (e) {
    error = e;
  }
  const ms = Date.now() - started;
  if (c.refused) {
    if (!error) {
      return { ok: false, ms, detail: `accepted: ${JSON.stringify(result)}` };
    }
    // A refusal, not a TLS, network or protocol failure that merely looks like one. Over HTTPS
    // (and for a 401 on an MQTT response topic) the SDK reports an UnauthorizedError; a CONNACK
    // refusal reaches the caller as MQTT.js's own error with the return code (5: not authorized),
    // untranslated by the SDK.
    // Over AMQP the SDK hands a rejected request's AMQP error over as it is (condition
    // amqp:unauthorized-access), and a SASL refusal (the symmetric key's credential is checked
    // at SASL PLAIN) as the NotConnectedError of the connection the server then closed.
    const refusal =
      error.name === 'UnauthorizedError' ||
      (t.startsWith('mqtt') && error.code === 5) ||
      (t.startsWith('amqp') &&
        (error.condition === 'amqp:unauthorized-access' || error.name === 'NotConnectedError'));
    if (!refusal) {
      return {
        ok: false,
        ms,
        detail: `${error.name}: ${error.message} ${error.condition || ''} (want UnauthorizedError, CONNACK 5 or an AMQP refusal)`,
      };
    }
    const code = error.code === undefined ? '' : ` (CONNACK ${error.code})`;
    const condition = error.condition === undefined ? '' : ` (AMQP ${error.condition})`;
    return { ok: true, ms, detail: `${error.name}: ${error.message}${code}${condition}` };
  }
  if (error) {
    return { ok: false, ms, detail: `${error.name}: ${error.message}` };
  }
  const want = { status: 'assigned', registrationId: c.registrationId, ...c.expect };
  const wrong = Object.keys(want).filter((k) => !result || result[k] !== want[k]);
  if (wrong.length > 0) {
    return {
      ok: false,
      ms,
      detail: `want ${JSON.stringify(want)}, got ${JSON.stringify(result)}`,
    };
  }
  return { ok: true, ms, detail: `${result.status} to ${result.assignedHub} as ${result.deviceId}` };
}

async function main() {
  let passed = 0;
  let failed = 0;
  for (const t of Object.keys(transports)) {
    for (const c of cases(t)) {
      const r = await runCase(t, c);
      if (r.ok) {
        passed += 1;
      } else {
        failed += 1;
      }
      console.log(`${r.ok ? 'PASS' : 'FAIL'} ${t.padEnd(6)} ${c.name} [${c.registrationId}] ` +
        `(${r.ms} ms): ${r.detail}`);
    }
  }
  console.log(`\nNode SDK against dps-emulator: ${passed} passed, ${failed} failed`);
  // Timers a hung SDK call left behind must not keep the process alive.
  process.exit(failed === 0 ? 0 : 1);
}

main().catch((e) => {
  console.error('error:', e);
  process.exit(1);
});
