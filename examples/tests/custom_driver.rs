//! The `remote_signer` driver of the `custom_driver` example: the hsm-testkit conformance suite
//! for each key type, every test with a signer process of its own (the example binary run as
//! `--signer`, holding a key the test wrote to a file), and the driver's typed errors against
//! a stopped signer and a hostile one.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixListener;
use std::sync::Arc;

use base64::Engine as _;
use hsm_core::{CertifiedKey, KeyAlgorithm, KeyHandle, SignatureScheme, X509Attestation};
use hsm_examples::dev_ca::DevCa;
use hsm_examples::remote_signer::{Error, MAX_FRAME, RemoteKey, SignerKey, SignerProcess, Status};
use hsm_testkit::Subject;

/// The driver's handle together with the signer process it talks to, so that the process lives
/// exactly as long as the handle. Every call goes to the driver unchanged.
#[derive(Debug)]
struct WithSigner {
    key: Arc<RemoteKey>,
    _signer: SignerProcess,
}

impl KeyHandle for WithSigner {
    fn algorithm(&self) -> KeyAlgorithm {
        self.key.algorithm()
    }

    fn public_key_der(&self) -> &[u8] {
        self.key.public_key_der()
    }

    fn sign(&self, scheme: SignatureScheme, message: &[u8]) -> Result<Vec<u8>, hsm_core::Error> {
        self.key.sign(scheme, message)
    }

    fn schemes(&self) -> &'static [SignatureScheme] {
        self.key.schemes()
    }
}

/// A signer process holding a fresh key of `algorithm`, and the key's PKCS#8 PEM.
fn signer(algorithm: &'static rcgen::SignatureAlgorithm) -> (SignerProcess, String) {
    let pair = rcgen::KeyPair::generate_for(algorithm).unwrap();
    let pem = pair.serialize_pem();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signer-key.pem");
    std::fs::write(&path, &pem).unwrap();
    // The signer reads its key before it reports ready; the file can go afterwards.
    let signer =
        SignerProcess::spawn(&common::example("custom_driver"), &SignerKey::File(path)).unwrap();
    (signer, pem)
}

fn subject(algorithm: &'static rcgen::SignatureAlgorithm, name: &str) -> Subject {
    let (signer, key_pem) = signer(algorithm);
    assert_ne!(signer.id(), std::process::id());
    let key = Arc::new(RemoteKey::connect(signer.socket()).unwrap());
    let ca = DevCa::generate("remote-signer conformance CA").unwrap();
    let leaf = ca.issue(key.clone(), "remote-signer-device").unwrap();
    let identity = CertifiedKey::new(key.clone(), vec![leaf, ca.certificate().clone()]).unwrap();

    // The key is in the signer process only; none of it may show in this process's objects.
    let mut secrets: Vec<String> = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_owned)
        .collect();
    let body: String = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    secrets.extend(hsm_testkit::secret_renderings(&der));
    Subject {
        name: format!("remote_signer {name}"),
        key: Arc::new(WithSigner {
            key,
            _signer: signer,
        }),
        chain: identity.certificate_chain().to_vec(),
        trust_anchor: ca.certificate().clone(),
        secrets,
        debug_views: vec![format!("{identity:?}"), format!("{identity:#?}")],
    }
}

mod p256 {
    hsm_testkit::conformance_tests!(|| super::subject(&rcgen::PKCS_ECDSA_P256_SHA256, "P-256"));
}

mod p384 {
    hsm_testkit::conformance_tests!(|| super::subject(&rcgen::PKCS_ECDSA_P384_SHA384, "P-384"));
}

mod ed25519 {
    hsm_testkit::conformance_tests!(|| super::subject(&rcgen::PKCS_ED25519, "Ed25519"));
}

mod rsa2048 {
    hsm_testkit::conformance_tests!(|| super::subject(&rcgen::PKCS_RSA_SHA256, "RSA-2048"));
}

/// The driver's error behind `hsm_core::Error::Device`.
fn driver_error(error: &hsm_core::Error) -> &Error {
    match error {
        hsm_core::Error::Device { source, .. } => source
            .downcast_ref::<Error>()
            .unwrap_or_else(|| panic!("not a remote_signer error: {source:?}")),
        other => panic!("expected Error::Device, got {other:?}"),
    }
}

#[test]
fn a_stopped_signer_is_a_typed_connect_error() {
    let (signer, _) = signer(&rcgen::PKCS_ECDSA_P256_SHA256);
    let key = RemoteKey::connect(signer.socket()).unwrap();
    key.sign(SignatureScheme::EcdsaP256Sha256, b"before")
        .unwrap();
    drop(signer);
    let error = key
        .sign(SignatureScheme::EcdsaP256Sha256, b"after")
        .unwrap_err();
    assert!(
        matches!(driver_error(&error), Error::Connect { .. }),
        "{error:?}"
    );
    assert_eq!(key.signatures(), 1);
}

#[test]
fn oversized_messages_are_refused_before_sending_and_the_handle_keeps_working() {
    let (signer, _) = signer(&rcgen::PKCS_ED25519);
    let key = RemoteKey::connect(signer.socket()).unwrap();
    let error = key
        .sign(SignatureScheme::Ed25519, &vec![0; MAX_FRAME])
        .unwrap_err();
    assert!(
        matches!(driver_error(&error), Error::FrameTooLarge { .. }),
        "{error:?}"
    );
    let signature = key.sign(SignatureScheme::Ed25519, b"still here").unwrap();
    hsm_testkit::verify::rustcrypto(
        SignatureScheme::Ed25519,
        key.public_key_der(),
        b"still here",
        &signature,
    )
    .unwrap();
}

#[test]
fn a_chain_for_another_key_is_refused() {
    let (signer, _) = signer(&rcgen::PKCS_ECDSA_P256_SHA256);
    let key = Arc::new(RemoteKey::connect(signer.socket()).unwrap());
    let other = hsm_testkit::pki::TestCa::new("other CA")
        .issue_client("other-device", &rcgen::PKCS_ECDSA_P256_SHA256);
    assert!(matches!(
        CertifiedKey::new(key.clone(), other.chain),
        Err(hsm_core::Error::Certificate { .. })
    ));
    assert!(matches!(
        CertifiedKey::new(key, Vec::new()),
        Err(hsm_core::Error::Certificate { .. })
    ));
}

/// A fake signer on a thread that answers the public-key request properly and every later
/// request with `reply` (raw bytes, framing included).
fn hostile_signer(reply: Vec<u8>) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("hostile.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let spki = hsm_x509::SoftwareKey::from_pem(
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .unwrap()
            .serialize_pem()
            .as_bytes(),
        None,
    )
    .unwrap()
    .public_key_der()
    .to_vec();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut first = true;
        loop {
            let mut header = [0u8; 4];
            if stream.read_exact(&mut header).is_err() {
                return;
            }
            let mut request = vec![0u8; u32::from_be_bytes(header) as usize];
            stream.read_exact(&mut request).unwrap();
            if first {
                let mut body = vec![0u8, 1]; // OK, P-256
                body.extend_from_slice(&spki);
                stream
                    .write_all(&u32::try_from(body.len()).unwrap().to_be_bytes())
                    .unwrap();
                stream.write_all(&body).unwrap();
                first = false;
            } else {
                stream.write_all(&reply).unwrap();
            }
        }
    });
    (dir, socket)
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(payload.len()).unwrap().to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// Whether `error` is the driver's error and `matches` it.
fn driver(error: &hsm_core::Error, matches: fn(&Error) -> bool) -> bool {
    matches!(error, hsm_core::Error::Device { .. }) && matches(driver_error(error))
}

#[test]
fn hostile_answers_are_typed_errors_never_panics() {
    type Check = fn(&hsm_core::Error) -> bool;
    let cases: [(&str, Vec<u8>, Check); 6] = [
        (
            "a length past the limit",
            u32::MAX.to_be_bytes().to_vec(),
            |e| driver(e, |e| matches!(e, Error::FrameTooLarge { .. })),
        ),
        ("an empty frame", frame(&[]), |e| {
            driver(e, |e| matches!(e, Error::Protocol { .. }))
        }),
        ("an unknown status", frame(&[0x7f, b'?']), |e| {
            driver(e, |e| {
                matches!(
                    e,
                    Error::Refused {
                        status: Status::Unknown(0x7f),
                        ..
                    }
                )
            })
        }),
        ("the signer's failure", frame(b"\x03token removed"), |e| {
            driver(
                e,
                |e| matches!(e, Error::Refused { status: Status::KeyFailure, message } if message == "token removed"),
            )
        }),
        (
            "a signature of the wrong length",
            frame(&[0, 1, 2, 3]),
            |e| driver(e, |e| matches!(e, Error::Protocol { .. })),
        ),
        ("an r||s of zeros", frame(&[0u8; 65]), |e| {
            matches!(e, hsm_core::Error::MalformedSignature { .. })
        }),
    ];
    for (what, reply, expected) in cases {
        let (_dir, socket) = hostile_signer(reply);
        let key = RemoteKey::connect(&socket).unwrap();
        let error = key
            .sign(SignatureScheme::EcdsaP256Sha256, b"message")
            .unwrap_err();
        assert!(expected(&error), "{what}: {error:?}");
    }
}
