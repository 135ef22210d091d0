//! One provisioning end to end on each token implementation the driver is proven on: a key
//! generated on the token (tpm2-pkcs11 in swtpm behind tpm2-abrmd; opencryptoki's soft token;
//! SoftHSM2 through p11-kit's remoting), certified by a group CA, registers over HTTPS with
//! TLS client authentication signed on the token, then connects to its hub and sends
//! telemetry.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::*;
use dps_emulator::EnrollmentGroup;
use hsm_core::{CertifiedKey, KeyAlgorithm, KeyLabel, KeyStore as _};
use hsm_testkit::pki::TestCa;
use provisioning::{ProxySetting, Transport};

fn provisions(name: &str, uri: &str, algorithm: KeyAlgorithm) {
    let token = hsm_pkcs11::Token::open(&uri.parse().unwrap()).unwrap();
    let key = token
        .generate(&KeyLabel::new("device").unwrap(), algorithm)
        .unwrap();
    let ca = TestCa::new(&format!("{name} group CA"));
    let device =
        Arc::new(CertifiedKey::new(key.clone(), ca.certify_handle(&key, "token-device")).unwrap());
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let emulator = emulator()
            .enroll_group(EnrollmentGroup::x509_ca("tokens", ca.cert().clone()))
            .started()
            .await;
        let registration = client(&emulator, Transport::Https)
            .proxy(ProxySetting::Direct)
            .x509(device)
            .assigned()
            .await;
        assert_eq!(
            registration.registration_id.as_str(),
            "token-device",
            "{name}"
        );
        proves_on_hub(&emulator, &registration).await;
    });
}

#[test]
fn tpm2_pkcs11() {
    hsm_testkit::tpm2_pkcs11::Tpm2Pkcs11::isolated(|tpm2| {
        provisions("tpm2-pkcs11", &tpm2.uri("any"), KeyAlgorithm::EcdsaP256);
    });
}

#[test]
fn opencryptoki() {
    hsm_testkit::opencryptoki::Opencryptoki::isolated(|ock| {
        provisions(
            "opencryptoki",
            &ock.uri("any"),
            KeyAlgorithm::Rsa { bits: 2048 },
        );
    });
}

#[test]
fn p11_kit_remote() {
    hsm_testkit::p11kit::P11KitRemote::isolated(|remote| {
        provisions(
            "p11-kit remoting",
            &remote.uri("any"),
            KeyAlgorithm::EcdsaP256,
        );
    });
}
