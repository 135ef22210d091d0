//! PKCS#11 on SoftHSM2: a device whose keys are generated on a token and never leave it
//! registers with X.509 through the token, then gets an operational certificate for a second
//! token key from a CSR signed on the token (the C SDK's OpenSSL engine +
//! `pkcs11:` URI setup, without OpenSSL).
//!
//! Needs SoftHSM2: `sudo apt-get install softhsm2` (`./scripts/test.sh` installs it). The
//! example makes its own token store in a temporary directory and leaves your SoftHSM
//! configuration alone.
//!
//! 1. Points SoftHSM at a fresh token store (`SOFTHSM2_CONF`) and initialises a token through
//!    `hsm-pkcs11` (`C_InitToken`, `C_InitPIN`).
//! 2. Generates a P-256 key pair on the token (`CKA_SENSITIVE`, not `CKA_EXTRACTABLE`); a
//!    development CA certifies its public key, and the certificate and the CA's are stored on
//!    the token next to it.
//! 3. Opens the device by RFC 7512 URI (`Pkcs11IdentityBuilder`: key and chain from the token) and
//!    registers over HTTPS with a `dps-emulator` that has the CA enrolled as a group: the TLS
//!    signature is made by `C_Sign` on the token.
//! 4. Generates a second key on the token, registers again with a CSR signed on the token, and
//!    stores the certificate DPS issued on the token next to that key.
//! 5. Lists the token's objects.
//!
//! Run: `cargo run --example pkcs11_softhsm`

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use der::Decode as _;
use dps_emulator::{Emulator, EnrollmentGroup};
use hsm_core::{KeyHandle, SecretString, X509Attestation};
use hsm_examples::dev_ca::DevCa;
use hsm_examples::{Steps, exit_code};
use hsm_pkcs11::{KeySpec, Module, OpenOptions, Pin, Pkcs11IdentityBuilder, Pkcs11Uri, Token};
use provisioning::{ProvisioningClient, Transport};

/// Where Debian, Ubuntu and source builds put the SoftHSM2 module.
const MODULE_PATHS: [&str; 3] = [
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
];
const TOKEN: &str = "example-device";
/// Demo PINs for a throw-away token. A device reads its PIN from a file or a callback
/// (`Pin::File`, `Pin::Callback`, `pin-source=` in the URI).
const USER_PIN: &str = "example-user-pin";
const SO_PIN: &str = "example-so-pin";

fn main() -> ExitCode {
    exit_code("pkcs11_softhsm", run())
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let steps = Steps::start();

    // 1. A token store of our own. SoftHSM reads SOFTHSM2_CONF once, when the module
    //    initialises, so it is set first, while this process still has a single thread.
    let module_path = MODULE_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or(
            "SoftHSM2 is not installed (no libsofthsm2.so found). Install it with \
             `sudo apt-get install softhsm2` (./scripts/test.sh does this for you)",
        )?;
    let store = tempfile::Builder::new()
        .prefix("softhsm-example-")
        .tempdir()?;
    let conf = write_softhsm_config(store.path())?;
    // SAFETY: no other thread exists yet (the tokio runtime is built below), so nothing can
    // read the environment concurrently.
    unsafe { std::env::set_var("SOFTHSM2_CONF", &conf) };
    let module = Module::load(&module_path)?;
    let user_pin = SecretString::from(USER_PIN);
    module.init_token(TOKEN, &SecretString::from(SO_PIN), &user_pin)?;
    steps.say(format!(
        "SoftHSM2 token '{TOKEN}' initialised in {} (module {})",
        store.path().display(),
        module_path.display()
    ));

    // 2. A key pair made on the token, certified by a development CA.
    let options = OpenOptions::default().pin(Pin::Value(Arc::new(user_pin)));
    let key_uri = uri(&module_path, "device-key", "%01")?;
    let token = Token::open_with(&key_uri, &options)?;
    let key: Arc<dyn KeyHandle> = Arc::new(token.generate_key_pair(&key_uri, KeySpec::EcdsaP256)?);
    let ca = DevCa::generate("pkcs11 example device CA")?;
    let leaf = ca.issue(key.clone(), "pkcs11-device-01")?;
    token.store_certificate(&key_uri, &leaf)?;
    token.store_certificate(&uri(&module_path, "device-ca", "%ca")?, ca.certificate())?;
    steps.say(format!(
        "generated an {} key on the token (sensitive, not extractable); the CA certified it; \
         certificate and CA stored on the token",
        key.algorithm()
    ));

    // 3. The device by URI: key and chain from the token.
    let device = Arc::new(
        Pkcs11IdentityBuilder::new(uri(&module_path, "device-key", "%01")?)
            .options(options.clone())
            .build()?,
    );
    steps.say(format!(
        "opened pkcs11:token={TOKEN};object=device-key: registration id '{}', chain of {} from the token",
        device.registration_id(),
        device.certificate_chain().len()
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let emulator = runtime.block_on(
        Emulator::builder()
            .retry_after(0)
            .iot_hubs(["pkcs11-hub.azure-devices.net"])
            .enroll_group(EnrollmentGroup::x509_ca(
                "pkcs11-group",
                ca.certificate().clone(),
            ))
            .start(),
    )?;
    let client = |csr_key: Option<Arc<dyn KeyHandle>>| {
        let builder = ProvisioningClient::builder(emulator.global_endpoint(), emulator.id_scope())
            .x509(device.clone())
            .transport(Transport::Https)
            .trust_anchor(emulator.ca_certificate().clone())
            .timeout(Duration::from_secs(30));
        match csr_key {
            Some(key) => builder.certificate_request(key),
            None => builder,
        }
        .build()
    };
    let registration = runtime.block_on(client(None)?.register())?;
    steps.say(format!(
        "assigned: hub '{}', device id '{}' (X.509 over HTTPS, TLS signature made by C_Sign on the token)",
        registration.assigned_hub, registration.device_id
    ));

    // 4. An operational certificate for a second token key, from a CSR signed on the token.
    let operational_uri = uri(&module_path, "operational-key", "%02")?;
    let operational: Arc<dyn KeyHandle> =
        Arc::new(token.generate_key_pair(&operational_uri, KeySpec::EcdsaP256)?);
    let registration = runtime.block_on(client(Some(operational.clone()))?.register())?;
    let issued = registration
        .issued_certificate_chain
        .first()
        .ok_or("DPS issued no certificate")?;
    let certificate = x509_cert::Certificate::from_der(issued)?;
    let tbs = certificate.tbs_certificate();
    token.store_certificate(&operational_uri, issued)?;
    steps.say(format!(
        "CSR signed on the token; DPS issued subject '{}', issuer '{}'; stored on the token next to 'operational-key'",
        tbs.subject(),
        tbs.issuer()
    ));
    runtime.block_on(emulator.shutdown());

    // 5. What the token holds now.
    steps.say("token objects:");
    for object in token.list_objects()? {
        println!("    {:<10} {}", object.class, object.label);
    }
    Ok(())
}

/// A URI for `object` (label) with `id` (percent-encoded) on the example token.
fn uri(module: &Path, object: &str, id: &str) -> Result<Pkcs11Uri, hsm_pkcs11::UriError> {
    format!(
        "pkcs11:token={TOKEN};object={object};id={id}?module-path={}",
        module.display()
    )
    .parse()
}

/// Writes a SoftHSM2 configuration with its token directory inside `dir`.
fn write_softhsm_config(dir: &Path) -> std::io::Result<PathBuf> {
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens)?;
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
            tokens.display()
        ),
    )?;
    Ok(conf)
}
