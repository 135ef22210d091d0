//! Custom driver: a complete, minimal `hsm-core` driver whose private key lives in another
//! process, reached over a Unix socket, registering a device with DPS. The template for a
//! vendor's driver; the driver itself is `examples/remote_signer.rs` and
//! `examples/remote_signer/` (about 1,000 lines, unit tests included), and
//! `docs/writing-a-driver.md` walks through it.
//!
//! Needs nothing but this repository and a Unix-like OS (Unix sockets): no hardware, no cloud.
//!
//! 1. Starts the signer: this same binary, run as a child process with
//!    `--signer SOCKET --key-type p256`. It generates a P-256 key that exists only in its own
//!    address space and answers public-key and sign requests on the socket (length-prefixed
//!    frames; ECDSA answered as raw `r||s`, as secure elements do).
//! 2. Connects the driver (`RemoteKey`, a `KeyHandle`): it learns the algorithm and public key.
//! 3. A development "manufacturer" CA certifies that public key (the key is never asked for);
//!    `hsm_core::CertifiedKey` pairs the chain with the handle as an `X509Attestation`, checking
//!    that the leaf certifies the handle's key.
//! 4. Starts the `dps-emulator` in-process with the CA enrolled as a group and registers over
//!    HTTPS: the TLS client signature is made in the signer process, through the socket.
//! 5. Stops the signer and shows the typed error the handle then returns.
//!
//! Run: `cargo run --example custom_driver`
//!
//! The conformance suite runs against this driver in `examples/tests/custom_driver.rs`
//! (`cargo test -p hsm-examples --test custom_driver`).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use dps_emulator::{Emulator, EnrollmentGroup};
use hsm_core::{CertifiedKey, KeyHandle, SignatureScheme, X509Attestation};
use hsm_examples::dev_ca::DevCa;
use hsm_examples::remote_signer::{KeyType, RemoteKey, SignerKey, SignerProcess, run_signer};
use hsm_examples::{Steps, exit_code};
use provisioning::{ProvisioningClient, Transport};

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    if args.first().is_some_and(|a| a == "--signer") {
        return exit_code("custom_driver --signer", signer(&args[1..]));
    }
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Into::into)
        .and_then(|runtime| runtime.block_on(run()));
    exit_code("custom_driver", result)
}

/// The signer side: `--signer SOCKET [--key-type p256|p384|ed25519 | --key-file PKCS8]`.
fn signer(args: &[OsString]) -> Result<(), Box<dyn std::error::Error>> {
    let usage =
        "usage: custom_driver --signer SOCKET [--key-type p256|p384|ed25519 | --key-file PKCS8]";
    let (socket, key) = match args {
        [socket] => (socket, SignerKey::Generate(KeyType::EcdsaP256)),
        [socket, flag, value] => (socket, SignerKey::from_args(flag, value).ok_or(usage)?),
        _ => return Err(usage.into()),
    };
    run_signer(&PathBuf::from(socket), &key)?;
    Ok(())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let steps = Steps::start();

    // 1. The signer: this binary again, in a process of its own, holding the key.
    let signer = SignerProcess::spawn(
        &std::env::current_exe()?,
        &SignerKey::Generate(KeyType::EcdsaP256),
    )?;
    steps.say(format!(
        "signer process started: pid {} (this process: pid {}), socket {}",
        signer.id(),
        std::process::id(),
        signer.socket().display()
    ));

    // 2. The driver: a key handle whose key is in the signer.
    let key = Arc::new(RemoteKey::connect(signer.socket())?);
    steps.say(format!(
        "driver connected: {} key, public key {} bytes (SubjectPublicKeyInfo); the private key stays in pid {}",
        key.algorithm(),
        key.public_key_der().len(),
        signer.id()
    ));

    // 3. A manufacturer CA certifies the public key; the chain and the handle make the identity.
    let ca = DevCa::generate("custom-driver manufacturer CA")?;
    let leaf = ca.issue(key.clone(), "custom-driver-device-01")?;
    let device = Arc::new(CertifiedKey::new(
        key.clone(),
        vec![leaf, ca.certificate().clone()],
    )?);
    steps.say(format!(
        "the manufacturer CA certified it: registration id '{}', chain of {}",
        device.registration_id(),
        device.certificate_chain().len()
    ));

    // 4. Register with a local DPS that trusts the CA.
    let emulator = Emulator::builder()
        .retry_after(0)
        .iot_hubs(["custom-driver-hub.azure-devices.net"])
        .enroll_group(EnrollmentGroup::x509_ca(
            "custom-driver-group",
            ca.certificate().clone(),
        ))
        .start()
        .await?;
    let client = ProvisioningClient::builder(emulator.global_endpoint(), emulator.id_scope())
        .x509(device)
        .transport(Transport::Https)
        .trust_anchor(emulator.ca_certificate().clone())
        .timeout(Duration::from_secs(30))
        .build()?;
    steps.say(format!(
        "registering over HTTPS with dps-emulator on {} (TLS client key = the remote key)",
        emulator.https_addr()
    ));
    let registration = client.register().await?;
    steps.say(format!(
        "assigned: hub '{}', device id '{}' (group '{}')",
        registration.assigned_hub,
        registration.device_id,
        registration.enrollment_group_id.as_deref().unwrap_or("-"),
    ));
    steps.say(format!(
        "signatures made by the signer process over the socket: {}",
        key.signatures()
    ));
    emulator.shutdown().await;

    // 5. Without its signer the handle fails with a typed error, never a panic.
    drop(signer);
    let key_handle: Arc<dyn KeyHandle> = key;
    let error = tokio::task::spawn_blocking(move || {
        key_handle.sign(
            SignatureScheme::EcdsaP256Sha256,
            b"after the signer stopped",
        )
    })
    .await?
    .err()
    .ok_or("signing succeeded without a signer")?;
    let cause = std::error::Error::source(&error).map_or_else(String::new, |c| format!(": {c}"));
    steps.say(format!(
        "signer stopped; signing now fails with: {error}{cause}"
    ));
    Ok(())
}
