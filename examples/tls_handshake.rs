//! TLS handshake: mutual TLS with a device key that is only ever used through a key handle.
//!
//! Needs nothing but this repository: no hardware, no cloud, no setup.
//!
//! 1. Makes a development CA and a device certificate + key, and writes them as PEM files.
//! 2. Loads them with the `hsm-x509` driver: the key is now an opaque `KeyHandle`.
//! 3. Starts a local rustls server that requires a client certificate from that CA.
//! 4. Connects through `tls-bridge`, so the client's TLS signature is made by the handle, and
//!    prints what was negotiated and what the server verified.
//!
//! Run: `cargo run --example tls_handshake`

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use hsm_core::{KeyAlgorithm, KeyHandle, SignatureScheme, X509Attestation};
use hsm_testkit::pki::{TestCa, sha256_hex};
use hsm_testkit::tls::{self, RustlsServer, Version};
use tls_bridge::TlsIdentity;

/// A key handle that passes every call to the driver's handle and remembers what it signed,
/// to show that TLS really signs through the handle.
#[derive(Debug)]
struct Observed {
    inner: Arc<dyn KeyHandle>,
    signatures: AtomicUsize,
    last_scheme: Mutex<Option<SignatureScheme>>,
}

impl KeyHandle for Observed {
    fn algorithm(&self) -> KeyAlgorithm {
        self.inner.algorithm()
    }

    fn public_key_der(&self) -> &[u8] {
        self.inner.public_key_der()
    }

    fn sign(&self, scheme: SignatureScheme, message: &[u8]) -> Result<Vec<u8>, hsm_core::Error> {
        self.signatures.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut last) = self.last_scheme.lock() {
            *last = Some(scheme);
        }
        self.inner.sign(scheme, message)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    println!("quickstart: mutual TLS with a key that only signs through a handle\n");

    // 1. A development PKI, written out the way a device would ship it.
    let dir = tempfile::tempdir()?;
    let ca = TestCa::new("quickstart development CA");
    let device = ca.issue_client("quickstart-device", &rcgen::PKCS_ECDSA_P256_SHA256);
    let chain_path = dir.path().join("device-chain.pem");
    let key_path = dir.path().join("device.key.pem");
    std::fs::write(&chain_path, &device.chain_pem)?;
    std::fs::write(&key_path, &device.key_pem)?;
    println!(
        "1. created a development CA and a device certificate + key in {}",
        dir.path().display()
    );

    // 2. The driver turns the files into an attestation with an opaque key handle.
    let identity = hsm_x509::from_files(&chain_path, &key_path)?;
    let observed = Arc::new(Observed {
        inner: identity.alias_key(),
        signatures: AtomicUsize::new(0),
        last_scheme: Mutex::new(None),
    });
    println!(
        "2. hsm-x509 loaded registration id '{}' with an {} key behind a KeyHandle",
        identity.registration_id(),
        observed.algorithm()
    );

    // 3. A local server that insists on a client certificate from the development CA.
    let server = RustlsServer::start(ca.cert(), Version::Tls13);
    println!(
        "3. TLS server listening on {} (client certificate required)",
        server.addr()
    );

    // 4. tls-bridge: the handle becomes rustls's signing key.
    let tls_identity = TlsIdentity::new(observed.clone(), identity.certificate_chain().to_vec())?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(server.server_root().clone())?;
    let config = Arc::new(tls_identity.client_config(roots)?);
    let outcome = tls::connect(config, server.addr(), b"hello from the quickstart\n")?;
    let scheme = observed
        .last_scheme
        .lock()
        .ok()
        .and_then(|s| *s)
        .map_or_else(|| "none".to_owned(), |s| s.to_string());
    println!(
        "4. handshake through tls-bridge: {:?}, {:?}; the client signed with {scheme} ({} signature through the handle)",
        outcome.version,
        outcome.cipher_suite,
        observed.signatures.load(Ordering::SeqCst)
    );
    let expected = format!("verified {}", sha256_hex(&identity.certificate_chain()[0]));
    let verified = outcome.reply.trim() == expected;
    println!(
        "5. the server {} the device certificate (sha256 {})",
        if verified {
            "verified"
        } else {
            "did NOT verify"
        },
        &sha256_hex(&identity.certificate_chain()[0])[..16]
    );
    println!("\ndone in {} ms", started.elapsed().as_millis());
    if !verified {
        return Err(format!("unexpected server reply: {}", outcome.reply).into());
    }
    Ok(())
}
