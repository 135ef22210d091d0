//! Quickstart: a DICE device registers with a local Device Provisioning Service over mutual TLS,
//! then connects to the IoT Hub it was assigned and sends telemetry, its private key used only
//! through a handle.
//!
//! Needs nothing but this repository: no hardware, no cloud, no setup.
//!
//! 1. Makes a development root and a DICE device (`hsm-riot`): DeviceID and Alias keys derived
//!    from a UDS and firmware measurements, their certificates issued on the spot.
//! 2. Starts the `dps-emulator` in-process and enrolls the root as an X.509 enrollment group.
//! 3. Registers the device over HTTPS with the `provisioning` client: the TLS client signature is
//!    made by the Alias key's handle through `tls-bridge`; the emulator verifies the chain to the
//!    enrolled root and that the certificate's CN is the registration id.
//! 4. Prints the assigned IoT Hub and device id.
//! 5. Connects to that hub (played by the same emulator) over MQTT with the same certificate,
//!    sends a telemetry message, waits for the hub's acknowledgement and reads the device twin.
//!
//! Run: `cargo run --example quickstart`

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dps_emulator::{Emulator, EnrollmentGroup};
use hsm_core::{SecretBytes, X509Attestation};
use hsm_riot::{DevRoot, Name, RiotIdentityBuilder, Validity};
use provisioning::hub::{HubClient, Message};
use provisioning::{ProvisioningClient, Transport};

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quickstart failed: {e}");
            let mut source = e.source();
            while let Some(s) = source {
                eprintln!("  caused by: {s}");
                source = s.source();
            }
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();
    let step = |text: String| println!("[{:>6.1} ms] {text}", start.elapsed().as_secs_f64() * 1e3);

    // 1. The device: DICE keys from a (here: fixed, demo) UDS and firmware measurements.
    let root = DevRoot::generate(Name::cn("quickstart development root"), Validity::default())?;
    let device = RiotIdentityBuilder::new()
        .uds(SecretBytes::copy_from(&[0x5a; 32]))
        .measurement(&[0x11; 32])
        .fwid(&[0x22; 32])
        .alias_name(Name::cn("quickstart-device-01"))
        .issuer(root.issuer())
        .build()?;
    step(format!(
        "DICE device ready: registration id '{}', chain Alias -> DeviceID -> root ({} certificates), Alias key {:?} behind a handle",
        device.registration_id().as_str(),
        device.certificate_chain().len(),
        device.alias_key().algorithm(),
    ));

    // 2. A local DPS that trusts the development root.
    let emulator = Emulator::builder()
        .retry_after(0)
        .iot_hubs(["quickstart-hub.azure-devices.net"])
        .enroll_group(EnrollmentGroup::x509_ca(
            "quickstart-group",
            root.certificate().clone(),
        ))
        .start()
        .await?;
    step(format!(
        "dps-emulator listening on https://{} (ID scope {}), root enrolled as group 'quickstart-group'",
        emulator.https_addr(),
        emulator.id_scope()
    ));

    // 3. Register over HTTPS with mutual TLS, signing through the Alias key's handle.
    let client = ProvisioningClient::builder(emulator.global_endpoint(), emulator.id_scope())
        .x509(Arc::new(device))
        .transport(Transport::Https)
        .trust_anchor(emulator.ca_certificate().clone())
        .timeout(Duration::from_secs(30))
        .build()?;
    step(
        "registering over HTTPS (TLS 1.3 client certificate = the DICE Alias chain; the client polls at most once a second)"
            .into(),
    );
    let registration = client.register().await?;

    // 4. The answer.
    step(format!(
        "assigned: hub '{}', device id '{}' ({}, group '{}', {} request(s) to DPS)",
        registration.assigned_hub,
        registration.device_id,
        registration.substatus.as_deref().unwrap_or("-"),
        registration.enrollment_group_id.as_deref().unwrap_or("-"),
        registration.requests,
    ));

    // 5. The hub leg: the emulator plays the assigned hub too. Its name does not resolve here,
    //    so the connection goes to the emulator's address (the certificate is still checked
    //    for the hub's name).
    let hub = HubClient::builder_for(&registration)
        .connect_to(
            emulator
                .hub_addr()
                .ok_or("the emulator serves no MQTT")?
                .to_string(),
        )
        .connect()
        .await?;
    step(format!(
        "connected to hub '{}' as '{}' over MQTT (the same Alias key signed the TLS handshake)",
        hub.hub(),
        hub.device_id()
    ));
    hub.send_telemetry(Message::json(&serde_json::json!({
        "temperature": 21.5,
        "firmware": "quickstart",
    })))
    .await?;
    let twin = hub.twin().await?;
    step(format!(
        "telemetry acknowledged by the hub; twin read (desired version {}, reported version {})",
        twin.desired_version, twin.reported_version
    ));
    hub.disconnect().await;
    step(format!(
        "the emulator recorded {} registration(s) and {} telemetry message(s); the private key never left its handle",
        emulator.registrations().len(),
        emulator.telemetry_received()
    ));
    emulator.shutdown().await;
    Ok(())
}
