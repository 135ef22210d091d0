// One symmetric-key registration over HTTPS with the official Azure IoT Node.js device SDK, as a
// whole process (the Node side of the whole-process comparison in scripts/bench-provisioning.sh):
// node register_once.js GLOBAL_ENDPOINT ID_SCOPE REGISTRATION_ID BASE64_KEY CA_PEM
// prints "HUB DEVICE_ID". GLOBAL_ENDPOINT is a host name: the SDK always uses port 443.
'use strict';

const fs = require('fs');

const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { Http } = require('azure-iot-provisioning-device-http');
const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');

const [host, idScope, registrationId, key, caPath] = process.argv.slice(2);
if (!caPath) {
  console.error('usage: node register_once.js GLOBAL_ENDPOINT ID_SCOPE REGISTRATION_ID BASE64_KEY CA_PEM');
  process.exit(2);
}

const transport = new Http();
transport.setTransportOptions({ pollingInterval: 0 });
// The SDK's HTTP layer has no option for a CA; the emulator's goes into the global agent's
// options, read by every https.request that does not pass its own `ca`.
require('https').globalAgent.options.ca = fs.readFileSync(caPath);
const client = ProvisioningDeviceClient.create(
  host,
  idScope,
  transport,
  new SymmetricKeySecurityClient(registrationId, key),
);
client
  .register()
  .then((result) => {
    if (result.status !== 'assigned') {
      throw new Error(`not assigned: ${JSON.stringify(result)}`);
    }
    console.log(`${result.assignedHub} ${result.deviceId}`);
    // Do not wait for the kept-alive connection to time out.
    process.exit(0);
  })
  .catch((e) => {
    console.error('error:', e);
    process.exit(1);
  });
