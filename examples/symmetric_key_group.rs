//! Symmetric-key group enrollment: a device derives its own key from the group key and its
//! registration id, registers over HTTPS, and gets hub credentials that sign SAS tokens through
//! the driver (the C SDK's `hsm_type_symm_key` with `prov_dev_set_symmetric_key_info`).
//!
//! Needs nothing but this repository: no hardware, no cloud, no setup.
//!
//! 1. Derives the device key with `hsm-symmkey`: `base64(HMAC-SHA256(group key, registration id))`,
//!    DPS's derivation (the group key and registration id are DPS's published example).
//! 2. Starts the `dps-emulator` in-process with the group key enrolled as a symmetric-key
//!    enrollment group; the emulator derives the device key itself to check the SAS token.
//! 3. Registers over HTTPS with a SAS token HMAC'd by the driver, sending a payload with a model
//!    id (the C SDK's `Prov_Client_Create_ModelIdPayload`), and prints the assigned hub.
//! 4. Prints a hub SAS token (`sr={hub}/devices/{deviceId}`) made through the driver: the
//!    registration's `HubCredentials::Sas` signer.
//!
//! Run: `cargo run --example symmetric_key_group`
//!
//! In a factory, step 1 runs once per device (`hsm-provision symmkey derive` does it too) and
//! only the derived key is installed; the group key never goes onto a device.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use dps_emulator::{Emulator, EnrollmentGroup, KeyPair};
use hsm_core::{RegistrationId, SecretString, SymmetricKeyAttestation};
use hsm_examples::{Steps, exit_code};
use hsm_symmkey::SymmetricKey;
use provisioning::{HubCredentials, ProvisioningClient, Transport};

/// DPS's published example group key (never ship a group key on a device).
const GROUP_KEY: &str =
    "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==";
const REGISTRATION_ID: &str = "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6";
const MODEL_ID: &str = "dtmi:com:example:Thermostat;1";

#[tokio::main]
async fn main() -> ExitCode {
    exit_code("symmetric_key_group", run().await)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let steps = Steps::start();

    // 1. The device key, derived from the group key; from here on the driver holds it.
    let group_key = SecretString::from(GROUP_KEY);
    let device = SymmetricKey::from_group_key(RegistrationId::new(REGISTRATION_ID)?, &group_key)?;
    steps.say(format!(
        "hsm-symmkey derived the device key for '{}' from the group key; the driver holds it ({})",
        device.registration_id(),
        if format!("{device:?}").contains("[redacted]") {
            "Debug shows [redacted]"
        } else {
            "Debug shows the key!"
        }
    ));

    // 2. A local DPS with the group enrolled.
    let emulator = Emulator::builder()
        .retry_after(0)
        .iot_hubs(["symkey-hub.azure-devices.net"])
        .enroll_group(EnrollmentGroup::symmetric_key(
            "symkey-group",
            KeyPair::from_base64("symkey-group", group_key.expose(), None)?,
        ))
        .start()
        .await?;
    drop(group_key);
    steps.say(format!(
        "dps-emulator listening on https://{} (ID scope {}), group 'symkey-group' enrolled",
        emulator.https_addr(),
        emulator.id_scope()
    ));

    // 3. Register over HTTPS: the SAS token's HMAC is computed by the driver.
    let client = ProvisioningClient::builder(emulator.global_endpoint(), emulator.id_scope())
        .symmetric_key(Arc::new(device))
        .transport(Transport::Https)
        .payload(serde_json::json!({ "modelId": MODEL_ID }))
        .trust_anchor(emulator.ca_certificate().clone())
        .timeout(Duration::from_secs(30))
        .build()?;
    steps.say(format!(
        "registering over HTTPS (SAS token signed by the driver, payload modelId {MODEL_ID})"
    ));
    let registration = client.register().await?;
    steps.say(format!(
        "assigned: hub '{}', device id '{}' (group '{}', payload returned: {})",
        registration.assigned_hub,
        registration.device_id,
        registration.enrollment_group_id.as_deref().unwrap_or("-"),
        registration
            .payload
            .as_ref()
            .map_or_else(|| "none".to_owned(), |p| p.to_string()),
    ));

    // 4. Hub credentials: SAS tokens for the hub, still signed by the driver.
    let HubCredentials::Sas(signer) = &registration.credentials else {
        return Err("expected SAS hub credentials for a symmetric-key device".into());
    };
    let token = signer.token(Duration::from_secs(3600)).await?;
    steps.say(format!(
        "hub SAS token for {} (valid 1 h, signed through the driver):",
        signer.resource()
    ));
    println!("{}", token.expose());
    emulator.shutdown().await;
    Ok(())
}
