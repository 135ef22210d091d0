//! TPM attestation on a software TPM: a device registers by its endorsement key, answers DPS's
//! challenge inside the TPM, and signs IoT Hub SAS tokens with a key that only the TPM holds
//! (the C SDK's `hsm_type_sastoken` / `SECURE_DEVICE_TYPE_TPM`).
//!
//! Needs swtpm: `sudo apt install swtpm swtpm-tools` (`./scripts/test.sh` installs it), and
//! libtss2 to build (`libtss2-dev`, found through pkg-config), which is why this example has a
//! package of its own (`examples/tpm`, `hsm-examples-tpm`): the other examples build without it. The example starts its own swtpm with a fresh state in a
//! temporary directory on free loopback ports, and stops it at the end.
//!
//! 1. Starts swtpm and opens it through `hsm-tpm` (TCTI `swtpm:host=127.0.0.1,port=N`); the EK
//!    and SRK are created and persisted at `0x81010001` and `0x81000001`. The registration id
//!    is base32 of SHA-256 of the EK.
//! 2. Starts the `dps-emulator` in-process with an individual TPM enrollment for that EK.
//! 3. Registers over HTTPS: the first request carries the EK and SRK; DPS answers 401 with an
//!    activation blob; the TPM imports the identity key from it (`TPM2_ActivateCredential`,
//!    `TPM2_Import`) and the request is repeated with a SAS token HMAC'd inside the TPM. On
//!    assignment, the hub device key DPS sends is imported the same way.
//! 4. Prints the hub and a hub SAS token signed in the TPM.
//!
//! Run: `cargo run --example tpm_swtpm`
//!
//! On a device, open `device:/dev/tpmrm0` instead of starting swtpm; everything else is the same.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use dps_emulator::{Emulator, Enrollment};
use hsm_examples::{Steps, exit_code};
use hsm_examples_tpm::{INSTALL_HINT, swtpm_installed};
use hsm_testkit::swtpm::Swtpm;
use hsm_tpm::{Tpm, TpmIdentity};
use provisioning::{HubCredentials, ProvisioningClient, Transport};

fn main() -> ExitCode {
    exit_code("tpm_swtpm", run())
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let steps = Steps::start();

    // 1. A software TPM, opened through hsm-tpm.
    if !swtpm_installed() {
        return Err(INSTALL_HINT.into());
    }
    let swtpm = Swtpm::start();
    let tpm = Tpm::open(swtpm.tcti().parse()?)?;
    let device = Arc::new(TpmIdentity::open(&tpm)?);
    steps.say(format!(
        "swtpm running ({}); EK at {:#010x}, SRK at {:#010x}; registration id '{}'",
        swtpm.tcti(),
        device.ek_handle().value(),
        device.srk_handle().value(),
        device.registration_id()
    ));

    // 2. A local DPS with this TPM's EK enrolled.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let emulator = runtime.block_on(
        Emulator::builder()
            .retry_after(0)
            .iot_hubs(["tpm-hub.azure-devices.net"])
            .enroll(
                Enrollment::tpm(
                    device.registration_id().as_str(),
                    device.endorsement_key().to_vec(),
                )
                .device_id("tpm-device-01"),
            )
            .start(),
    )?;
    steps.say(format!(
        "dps-emulator listening on https://{} (ID scope {}), EK enrolled ({} bytes TPM2B_PUBLIC)",
        emulator.https_addr(),
        emulator.id_scope(),
        device.endorsement_key().len()
    ));

    // 3. Register: EK/SRK, the 401 challenge, activation in the TPM, SAS signed in the TPM.
    let client = ProvisioningClient::builder(emulator.global_endpoint(), emulator.id_scope())
        .tpm(device.clone())
        .transport(Transport::Https)
        .trust_anchor(emulator.ca_certificate().clone())
        .timeout(Duration::from_secs(60))
        .build()?;
    steps.say("registering over HTTPS (EK + SRK, then the TPM answers DPS's challenge)");
    let registration = runtime.block_on(client.register())?;
    steps.say(format!(
        "assigned: hub '{}', device id '{}' ({} requests: register -> 401 with the activation blob, \
         register with the TPM's SAS token, poll)",
        registration.assigned_hub, registration.device_id, registration.requests
    ));

    // 4. Hub SAS tokens, HMAC'd in the TPM by the hub device key DPS sent.
    let HubCredentials::Sas(signer) = &registration.credentials else {
        return Err("expected SAS hub credentials for a TPM device".into());
    };
    let token = runtime.block_on(signer.token(Duration::from_secs(3600)))?;
    steps.say(format!(
        "hub SAS token for {} (valid 1 h, HMAC computed inside the TPM with the key at {:#010x}):",
        signer.resource(),
        device.identity_handle().value()
    ));
    println!("{}", token.expose());
    runtime.block_on(emulator.shutdown());
    Ok(())
}
