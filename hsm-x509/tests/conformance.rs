//! The hsm-testkit conformance suite for software keys from files, one key type per module.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::path::PathBuf;

use base64::Engine as _;
use hsm_core::{SecretString, X509Attestation};
use hsm_testkit::Subject;
use hsm_x509::{X509IdentityBuilder, load_certificates};

const PASSPHRASE: &str = "fixture-passphrase";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The identity for fixture `name`, loaded from its chain and its encrypted key when there is one.
fn subject(name: &str, key_file: &str) -> Subject {
    let identity = X509IdentityBuilder::new()
        .certificates_file(fixture(&format!("{name}-chain.pem")))
        .key_file(fixture(key_file))
        .passphrase(SecretString::from(PASSPHRASE))
        .build()
        .unwrap();
    let root = load_certificates(&std::fs::read(fixture("ca.pem")).unwrap()).unwrap();
    // Every base64 line of the unencrypted key must stay out of Debug output.
    let key_pem = std::fs::read_to_string(fixture(&format!("{name}.key.pem"))).unwrap();
    let mut secrets: Vec<String> = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_owned)
        .collect();
    secrets.push(PASSPHRASE.to_owned());
    let body: String = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    secrets.extend(hsm_testkit::secret_renderings(&der));
    Subject {
        name: format!("hsm-x509 {name}"),
        key: identity.alias_key(),
        chain: identity.certificate_chain().to_vec(),
        trust_anchor: root[0].clone(),
        secrets,
        debug_views: vec![format!("{identity:?}"), format!("{identity:#?}")],
    }
}

mod p256 {
    hsm_testkit::conformance_tests!(|| super::subject("p256", "p256.enc.pem"));
}

mod p384 {
    hsm_testkit::conformance_tests!(|| super::subject("p384", "p384.enc.der"));
}

mod rsa2048 {
    hsm_testkit::conformance_tests!(|| super::subject("rsa2048", "rsa2048.key.pem"));
}

mod rsa4096 {
    hsm_testkit::conformance_tests!(|| super::subject("rsa4096", "rsa4096.key.pem"));
}

mod ed25519 {
    hsm_testkit::conformance_tests!(|| super::subject("ed25519", "ed25519.enc.pem"));
}
