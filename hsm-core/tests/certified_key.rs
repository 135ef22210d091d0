//! `CertifiedKey`, `check_scheme` and `csr_der`: the pieces of the contract every driver shares.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use hsm_core::{
    CertificateDer, CertificateProblem, CertifiedKey, Error, KeyAlgorithm, KeyHandle,
    RegistrationId, SignatureScheme, X509Attestation as _, check_scheme,
};

/// A key that knows its public key and signs with rcgen, or fails on purpose.
#[derive(Debug)]
struct TestKey {
    spki: Vec<u8>,
    key: Option<rcgen::KeyPair>,
    schemes: &'static [SignatureScheme],
}

impl TestKey {
    fn new() -> Self {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        Self {
            spki: rcgen::PublicKeyData::subject_public_key_info(&key),
            key: Some(key),
            schemes: KeyAlgorithm::EcdsaP256.schemes(),
        }
    }

    /// The same public key, but every signature fails (a device that broke).
    #[cfg_attr(not(feature = "rcgen"), allow(dead_code))]
    fn broken(&self) -> Self {
        Self {
            spki: self.spki.clone(),
            key: None,
            schemes: self.schemes,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the device is on fire")]
struct OnFire;

impl KeyHandle for TestKey {
    fn algorithm(&self) -> KeyAlgorithm {
        KeyAlgorithm::EcdsaP256
    }

    fn public_key_der(&self) -> &[u8] {
        &self.spki
    }

    fn schemes(&self) -> &'static [SignatureScheme] {
        self.schemes
    }

    fn sign(&self, scheme: SignatureScheme, message: &[u8]) -> Result<Vec<u8>, Error> {
        check_scheme(self, scheme)?;
        let key = self.key.as_ref().ok_or(Error::device("sign", OnFire))?;
        rcgen::SigningKey::sign(key, message).map_err(|e| Error::device("sign", e))
    }
}

/// A self-signed certificate for `key` with this subject CN (none for `None`).
fn certificate(key: &TestKey, common_name: Option<&str>) -> CertificateDer<'static> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(cn) = common_name {
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
    } else {
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "no common name");
    }
    params
        .self_signed(key.key.as_ref().unwrap())
        .unwrap()
        .der()
        .clone()
}

fn problem(result: Result<CertifiedKey, Error>) -> CertificateProblem {
    match result {
        Err(Error::Certificate { problem }) => problem,
        other => panic!("expected Error::Certificate, got {other:?}"),
    }
}

#[test]
fn the_leaf_common_name_is_the_registration_id_and_the_handle_is_the_alias_key() {
    let key = Arc::new(TestKey::new());
    let chain = vec![certificate(&key, Some("device-01"))];
    let identity = CertifiedKey::new(key.clone(), chain.clone()).unwrap();
    assert_eq!(identity.registration_id().as_str(), "device-01");
    assert_eq!(identity.chain(), chain.as_slice());
    assert_eq!(identity.certificate_chain(), chain.as_slice());
    assert_eq!(identity.alias_key().public_key_der(), key.public_key_der());
    let debug = format!("{identity:?}");
    assert!(
        debug.contains("device-01") && debug.contains("certificates: 1"),
        "{debug}"
    );

    let other_id = RegistrationId::new("explicit-id").unwrap();
    let identity = CertifiedKey::with_registration_id(key.clone(), chain, other_id).unwrap();
    assert_eq!(identity.registration_id().as_str(), "explicit-id");
}

#[test]
fn chains_that_cannot_be_an_identity_are_refused_by_their_problem() {
    let key = Arc::new(TestKey::new());
    let other = TestKey::new();
    assert_eq!(
        problem(CertifiedKey::new(key.clone(), Vec::new())),
        CertificateProblem::EmptyChain
    );
    assert_eq!(
        problem(CertifiedKey::new(
            key.clone(),
            vec![CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])]
        )),
        CertificateProblem::MalformedLeaf
    );
    assert_eq!(
        problem(CertifiedKey::new(
            key.clone(),
            vec![certificate(&other, Some("device-01"))]
        )),
        CertificateProblem::KeyMismatch
    );
    // An explicit registration id does not excuse a leaf for another key.
    assert_eq!(
        problem(CertifiedKey::with_registration_id(
            key.clone(),
            vec![certificate(&other, Some("device-01"))],
            RegistrationId::new("x").unwrap()
        )),
        CertificateProblem::KeyMismatch
    );
    assert_eq!(
        problem(CertifiedKey::new(
            key.clone(),
            vec![certificate(&key, None)]
        )),
        CertificateProblem::NoCommonName
    );
    match problem(CertifiedKey::new(
        key.clone(),
        vec![certificate(&key, Some("not an id!"))],
    )) {
        CertificateProblem::InvalidCommonName { reason } => {
            assert!(reason.contains("' '"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // Without a common name, an explicit id makes it usable.
    CertifiedKey::with_registration_id(
        key.clone(),
        vec![certificate(&key, None)],
        RegistrationId::new("given").unwrap(),
    )
    .unwrap();
    let text = Error::Certificate {
        problem: CertificateProblem::KeyMismatch,
    }
    .to_string();
    assert_eq!(text, "the leaf certificate is for another key");
}

#[test]
fn check_scheme_honours_what_the_key_offers() {
    let mut key = TestKey::new();
    check_scheme(&key, SignatureScheme::EcdsaP256Sha256).unwrap();
    for refused in [SignatureScheme::EcdsaP384Sha384, SignatureScheme::Ed25519] {
        assert!(matches!(
            check_scheme(&key, refused),
            Err(Error::UnsupportedScheme { scheme, .. }) if scheme == refused
        ));
    }
    // A backend that offers less than the algorithm allows.
    key.schemes = &[];
    assert!(matches!(
        check_scheme(&key, SignatureScheme::EcdsaP256Sha256),
        Err(Error::UnsupportedScheme {
            algorithm: KeyAlgorithm::EcdsaP256,
            ..
        })
    ));
}

// `csr_der` is behind the `rcgen` feature, which every driver (and so `cargo test --workspace`)
// turns on.
#[cfg(feature = "rcgen")]
#[test]
fn a_csr_is_signed_through_the_handle_and_a_failing_handle_keeps_its_cause() {
    let key = TestKey::new();
    let csr = hsm_core::csr_der(Arc::new(key.broken()), "csr-device").unwrap_err();
    // The driver's own error, not rcgen's cause-less "remote key error".
    match &csr {
        Error::Device { operation, source } => {
            assert_eq!(*operation, "sign");
            assert_eq!(source.to_string(), "the device is on fire");
        }
        other => panic!("{other:?}"),
    }
    let key_spki = key.spki.clone();
    let der = hsm_core::csr_der(Arc::new(key), "csr-device").unwrap();
    use der::{Decode as _, Encode as _};
    let request = x509_cert::request::CertReq::from_der(&der).unwrap();
    let cn = request.info.subject.common_name().unwrap().unwrap();
    assert_eq!(cn.value(), "csr-device");
    assert_eq!(request.info.public_key.to_der().unwrap(), key_spki);
}
