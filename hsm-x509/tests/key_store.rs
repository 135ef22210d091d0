//! hsm-x509's key folder against the key-store conformance suite, and what only files have:
//! their permissions.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use hsm_core::{KeyAlgorithm, KeyLabel, KeyStore as _};
use hsm_testkit::key_store::StoreSubject;
use hsm_x509::KeyFolder;

fn subject() -> StoreSubject {
    let folder = tempfile::tempdir().unwrap().keep();
    let reopen_folder = folder.clone();
    StoreSubject {
        name: "hsm-x509 key folder".into(),
        store: Arc::new(KeyFolder::open(&folder).unwrap()),
        reopen: Box::new(move || Arc::new(KeyFolder::open(&reopen_folder).unwrap())),
        // With ring (feature `ring` alone) RSA keys cannot be generated.
        algorithms: if cfg!(feature = "aws-lc-rs") {
            vec![
                KeyAlgorithm::EcdsaP256,
                KeyAlgorithm::EcdsaP384,
                KeyAlgorithm::Ed25519,
                KeyAlgorithm::Rsa { bits: 2048 },
            ]
        } else {
            vec![
                KeyAlgorithm::EcdsaP256,
                KeyAlgorithm::EcdsaP384,
                KeyAlgorithm::Ed25519,
            ]
        },
        unsupported: if cfg!(feature = "aws-lc-rs") {
            vec![KeyAlgorithm::Rsa { bits: 2560 }]
        } else {
            vec![
                KeyAlgorithm::Rsa { bits: 2048 },
                KeyAlgorithm::Rsa { bits: 2560 },
            ]
        },
    }
}

hsm_testkit::key_store_conformance_tests!(subject);

#[cfg(unix)]
#[test]
fn files_are_private_and_pkcs8() {
    use std::os::unix::fs::PermissionsExt as _;

    let root = tempfile::tempdir().unwrap();
    let folder = KeyFolder::open(root.path().join("keys")).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(folder.path()), 0o700);
    let label = KeyLabel::new("device-key-1").unwrap();
    let key = folder.generate(&label, KeyAlgorithm::EcdsaP256).unwrap();
    let path = folder.key_path(&label);
    assert_eq!(mode(&path), 0o600);
    let pem = std::fs::read_to_string(&path).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
    // openssl reads it, and finds the handle's public key.
    let out = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, key.public_key_der());
    // Nothing but the key file (no temporary file left behind).
    let names: Vec<_> = std::fs::read_dir(folder.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["device-key-1.key.pem"]);
    assert!(!format!("{folder:?}").contains(pem.lines().nth(1).unwrap()));
}
