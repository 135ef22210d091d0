//! Certificate issuance: a device registers with DPS API `2025-07-01-preview`, sending a PKCS#10
//! CSR signed through a key handle, and DPS issues its operational certificate (the C SDK's
//! `Prov_Device_LL_Set_Certificate_Signing_Request` and
//! `Prov_Device_LL_Get_Issued_Client_Certificate`, without the private key in a PEM string).
//!
//! Needs nothing but this repository: no hardware, no cloud, no setup.
//!
//! 1. Makes the operational key: here a P-256 software key behind `hsm-x509`'s handle; any
//!    driver's handle works the same (`pkcs11_softhsm` does it with the key on a token,
//!    `hsm_tpm::TpmKey` in a TPM).
//! 2. Starts the `dps-emulator` in-process with a symmetric-key enrollment for the device.
//! 3. Registers over HTTPS with `.certificate_request(key)`: the client makes a CSR with
//!    CN = registration id, signs it through the handle, and sends it with API version
//!    `2025-07-01-preview`; the emulator's CA signs it.
//! 4. Prints the issued chain (subject, issuer, validity of each certificate) and checks that the
//!    leaf certifies the handle's public key. The hub credentials are now a TLS configuration
//!    presenting the issued chain with the handle.
//!
//! Run: `cargo run --example csr_issuance`

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use der::{Decode as _, Encode as _};
use dps_emulator::{Emulator, Enrollment, KeyPair};
use hsm_core::{KeyHandle, RegistrationId, SecretString};
use hsm_examples::{Steps, exit_code};
use hsm_symmkey::SymmetricKey;
use provisioning::{CSR_API_VERSION, HubCredentials, ProvisioningClient, Transport};
use zeroize::Zeroizing;

const REGISTRATION_ID: &str = "csr-device-01";
/// The device's enrollment key (base64; a demo value).
const DEVICE_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

#[tokio::main]
async fn main() -> ExitCode {
    exit_code("csr_issuance", run().await)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let steps = Steps::start();

    // 1. The operational key, behind a handle.
    let pkcs8 = Zeroizing::new(
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?.serialize_der(),
    );
    let key: Arc<dyn KeyHandle> = Arc::new(hsm_x509::SoftwareKey::from_der(&pkcs8, None)?);
    drop(pkcs8);
    steps.say(format!(
        "operational key: {} behind a KeyHandle (public key {} bytes)",
        key.algorithm(),
        key.public_key_der().len()
    ));

    // 2. A local DPS with the device enrolled by symmetric key.
    let emulator = Emulator::builder()
        .retry_after(0)
        .iot_hubs(["csr-hub.azure-devices.net"])
        .enroll(Enrollment::symmetric_key(
            REGISTRATION_ID,
            KeyPair::from_base64(REGISTRATION_ID, DEVICE_KEY, None)?,
        ))
        .start()
        .await?;
    steps.say(format!(
        "dps-emulator listening on https://{} (ID scope {}), '{REGISTRATION_ID}' enrolled",
        emulator.https_addr(),
        emulator.id_scope()
    ));

    // 3. Register, asking for a certificate for the handle's key.
    let device = SymmetricKey::from_base64(
        RegistrationId::new(REGISTRATION_ID)?,
        &SecretString::from(DEVICE_KEY),
    )?;
    let client = ProvisioningClient::builder(emulator.global_endpoint(), emulator.id_scope())
        .symmetric_key(Arc::new(device))
        .certificate_request(key.clone())
        .api_version(CSR_API_VERSION)
        .transport(Transport::Https)
        .trust_anchor(emulator.ca_certificate().clone())
        .timeout(Duration::from_secs(30))
        .build()?;
    steps.say(format!(
        "registering over HTTPS with API {} and a CSR (CN={REGISTRATION_ID}) signed through the handle",
        client.api_version()
    ));
    let registration = client.register().await?;
    steps.say(format!(
        "assigned: hub '{}', device id '{}'; issued chain of {} certificate(s):",
        registration.assigned_hub,
        registration.device_id,
        registration.issued_certificate_chain.len()
    ));

    // 4. The issued chain.
    let mut leaf_spki = None;
    for (i, der) in registration.issued_certificate_chain.iter().enumerate() {
        let certificate = x509_cert::Certificate::from_der(der)?;
        let tbs = certificate.tbs_certificate();
        println!(
            "    [{i}] subject: {}\n        issuer:  {}\n        valid:   {} to {}",
            tbs.subject(),
            tbs.issuer(),
            tbs.validity().not_before,
            tbs.validity().not_after,
        );
        if i == 0 {
            leaf_spki = Some(tbs.subject_public_key_info().to_der()?);
        }
    }
    if leaf_spki.as_deref() != Some(key.public_key_der()) {
        return Err("the issued leaf does not certify the handle's public key".into());
    }
    steps.say("the issued leaf certifies the handle's public key; the private key never left it");
    if let HubCredentials::X509(_) = registration.credentials {
        steps.say(
            "hub credentials: a rustls ClientConfig presenting the issued chain and the handle",
        );
    }
    emulator.shutdown().await;
    Ok(())
}
