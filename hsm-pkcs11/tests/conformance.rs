//! The hsm-testkit conformance suite on SoftHSM2: keys imported with softhsm2-util, certificates
//! written with pkcs11-tool, chain read back from the token. Each test runs in its own process
//! with its own token store.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod common;

use hsm_core::X509Attestation;
use hsm_pkcs11::Pkcs11IdentityBuilder;
use hsm_testkit::Subject;
use hsm_testkit::softhsm::{SoftHsm, USER_PIN};

fn subject(name: &str) -> Subject {
    let softhsm = SoftHsm::current();
    common::token_with_fixture(&softhsm, "conformance", name);
    let uri = softhsm.uri("conformance", "device").parse().unwrap();
    let identity = Pkcs11IdentityBuilder::new(uri).build().unwrap();
    assert_eq!(
        identity.certificate_chain().len(),
        2,
        "leaf and CA from the token"
    );
    let root = hsm_x509::load_certificates(&std::fs::read(common::fixture("ca.pem")).unwrap())
        .unwrap()
        .remove(0);
    Subject {
        name: format!("hsm-pkcs11 SoftHSM {name}"),
        key: identity.alias_key(),
        chain: identity.certificate_chain().to_vec(),
        trust_anchor: root,
        secrets: vec![format!("pin-value={USER_PIN}"), format!("\"{USER_PIN}\"")],
        debug_views: vec![format!("{identity:?}"), format!("{identity:#?}")],
    }
}

mod p256 {
    hsm_testkit::conformance_tests!(
        || super::subject("p256"),
        wrap = hsm_testkit::softhsm::SoftHsm::wrap
    );
}

mod p384 {
    hsm_testkit::conformance_tests!(
        || super::subject("p384"),
        wrap = hsm_testkit::softhsm::SoftHsm::wrap
    );
}

mod rsa2048 {
    hsm_testkit::conformance_tests!(
        || super::subject("rsa2048"),
        wrap = hsm_testkit::softhsm::SoftHsm::wrap
    );
}
