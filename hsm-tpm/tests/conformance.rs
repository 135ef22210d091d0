//! The hsm-testkit conformance suite for signing keys inside the TPM (swtpm), mutual TLS against
//! rustls and `openssl s_server` included. Each test starts its own swtpm; the key is created in
//! it by the driver and certified by a software test CA.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod common;

use std::cell::RefCell;
use std::sync::Arc;

use hsm_core::{KeyHandle, RcgenSigner};
use hsm_testkit::Subject;
use hsm_testkit::swtpm::Swtpm;
use hsm_tpm::{KeySpec, PersistentHandle, TpmIdentity, TpmKey};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

thread_local! {
    /// The swtpm of the test running on this thread (see `with_swtpm`).
    static SWTPM: RefCell<Option<Swtpm>> = const { RefCell::new(None) };
}

/// Runs a check with a fresh swtpm of its own, stopped afterwards.
fn with_swtpm(body: &dyn Fn()) {
    SWTPM.with(|s| *s.borrow_mut() = Some(Swtpm::start()));
    body();
    SWTPM.with(|s| s.borrow_mut().take());
}

fn subject(spec: KeySpec) -> Subject {
    let tpm = SWTPM.with(|s| common::connect(s.borrow().as_ref().unwrap()));
    let key =
        Arc::new(TpmKey::create(&tpm, spec, PersistentHandle::new(0x8100_0030).unwrap()).unwrap());

    // The identity key in the same TPM: its bytes must never show in Debug output.
    let identity = TpmIdentity::open(&tpm).unwrap();
    let hmac_key = common::hmac_key(42);
    identity
        .activate_identity_key(&common::blob_for(
            identity.endorsement_key(),
            identity.storage_root_key(),
            &hmac_key,
        ))
        .unwrap();

    // A software CA certifies the TPM key.
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "hsm-tpm test root");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, identity.registration_id().as_str());
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let handle: Arc<dyn KeyHandle> = key.clone();
    let public = RcgenSigner::new(handle.clone()).unwrap();
    let leaf = leaf.signed_by(&public, &issuer).unwrap();

    Subject {
        name: format!("hsm-tpm swtpm {spec:?}"),
        key: handle,
        chain: vec![leaf.der().clone(), ca_cert.der().clone()],
        trust_anchor: ca_cert.der().clone(),
        secrets: hsm_testkit::secret_renderings(&hmac_key),
        debug_views: vec![
            format!("{identity:?}"),
            format!("{identity:#?}"),
            format!("{:?}", identity.identity_key()),
            format!("{tpm:?}"),
        ],
    }
}

mod p256 {
    hsm_testkit::conformance_tests!(
        || super::subject(hsm_tpm::KeySpec::EcdsaP256),
        wrap = super::with_swtpm
    );
}

mod rsa2048 {
    hsm_testkit::conformance_tests!(
        || super::subject(hsm_tpm::KeySpec::Rsa2048),
        wrap = super::with_swtpm
    );
}
