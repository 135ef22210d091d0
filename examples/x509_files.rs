//! X.509 from files: a device whose certificate chain and private key are PEM files, as the C
//! SDK's `hsm_type_x509` (or `OPTION_X509_CERT` / `OPTION_X509_PRIVATE_KEY`) used them,
//! registers over MQTT with mutual TLS.
//!
//! Needs nothing but this repository: no hardware, no cloud, no setup.
//!
//! 1. Makes a development CA and a device certificate + key (CN `x509-files-device-01`) and writes
//!    them as PEM files to a temporary directory: `ca.pem`, `device-chain.pem` (leaf, then CA),
//!    `device.key.pem` (PKCS#8).
//! 2. Loads the device with `hsm_x509::from_files`: the key is now an opaque
//!    `KeyHandle`, and the registration id is the leaf's common name.
//! 3. Starts the `dps-emulator` in-process and enrolls `ca.pem` as an X.509 enrollment group.
//! 4. Registers over MQTT (TLS 1.3 client certificate = the device chain, the handshake signature
//!    made through the handle) and prints the assigned hub and device id.
//!
//! Run: `cargo run --example x509_files`
//!
//! With your own files, only step 2 changes: `hsm_x509::from_files("chain.pem", "key.pem")`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use dps_emulator::{Emulator, EnrollmentGroup};
use hsm_core::X509Attestation;
use hsm_examples::{Steps, exit_code};
use hsm_testkit::pki::TestCa;
use provisioning::{HubCredentials, ProvisioningClient, Transport};

#[tokio::main]
async fn main() -> ExitCode {
    exit_code("x509_files", run().await)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let steps = Steps::start();

    // 1. A development PKI, written out the way a device ships it.
    let dir = tempfile::tempdir()?;
    let ca = TestCa::new("x509-files development CA");
    let issued = ca.issue_client("x509-files-device-01", &rcgen::PKCS_ECDSA_P256_SHA256);
    let ca_path = dir.path().join("ca.pem");
    let chain_path = dir.path().join("device-chain.pem");
    let key_path = dir.path().join("device.key.pem");
    std::fs::write(&ca_path, ca.pem())?;
    std::fs::write(&chain_path, &issued.chain_pem)?;
    std::fs::write(&key_path, &issued.key_pem)?;
    drop(issued); // the example's own copy of the key; from here on only the file has it
    steps.say(format!(
        "wrote ca.pem, device-chain.pem and device.key.pem to {}",
        dir.path().display()
    ));

    // 2. The driver: files in, an attestation with an opaque key handle out.
    let device = hsm_x509::from_files(&chain_path, &key_path)?;
    steps.say(format!(
        "hsm-x509 loaded registration id '{}': {} certificate(s), {} key behind a KeyHandle",
        device.registration_id(),
        device.certificate_chain().len(),
        device.alias_key().algorithm(),
    ));

    // 3. A local DPS with the CA (read back from its file) enrolled as a group.
    let ca_certificate = hsm_x509::load_certificates(&std::fs::read(&ca_path)?)?
        .into_iter()
        .next()
        .ok_or("ca.pem holds no certificate")?;
    let emulator = Emulator::builder()
        .retry_after(0)
        .iot_hubs(["x509-files-hub.azure-devices.net"])
        .enroll_group(EnrollmentGroup::x509_ca("x509-files-group", ca_certificate))
        .start()
        .await?;
    let mqtt = emulator
        .mqtt_addr()
        .ok_or("the emulator has MQTT turned off")?;
    steps.say(format!(
        "dps-emulator: MQTT on {mqtt}, ID scope {}, ca.pem enrolled as group 'x509-files-group'",
        emulator.id_scope()
    ));

    // 4. Register over MQTT with mutual TLS.
    let client = ProvisioningClient::builder(emulator.global_endpoint(), emulator.id_scope())
        .x509(Arc::new(device))
        .transport(Transport::Mqtt)
        .mqtt_port(mqtt.port())
        .trust_anchor(emulator.ca_certificate().clone())
        .timeout(Duration::from_secs(30))
        .build()?;
    steps.say("registering over MQTT (TLS client certificate = device-chain.pem)");
    let registration = client.register().await?;
    steps.say(format!(
        "assigned: hub '{}', device id '{}' (group '{}', {} request(s) to DPS)",
        registration.assigned_hub,
        registration.device_id,
        registration.enrollment_group_id.as_deref().unwrap_or("-"),
        registration.requests,
    ));
    if let HubCredentials::X509(_) = registration.credentials {
        steps.say("hub credentials: a rustls ClientConfig presenting the same chain and handle");
    }
    emulator.shutdown().await;
    Ok(())
}
