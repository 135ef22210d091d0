//! tls-bridge against real rustls peers: scheme choice, key/certificate checks, and driver
//! errors reaching rustls with their cause.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::sync::Arc;

use hsm_core::{Error, KeyAlgorithm, KeyHandle, SignatureScheme};
use hsm_testkit::pki::{Identity, TestCa};
use hsm_testkit::tls::{self, RustlsServer, Version};
use hsm_x509::SoftwareKey;
use rustls::SignatureScheme as R;
use rustls::sign::SigningKey as _;
use tls_bridge::{HsmSigningKey, TlsIdentity};

fn software(identity: &Identity) -> Arc<dyn KeyHandle> {
    Arc::new(SoftwareKey::from_der(&identity.key_der, None).unwrap())
}

fn chosen(key: &Arc<dyn KeyHandle>, offered: &[R]) -> Option<R> {
    HsmSigningKey::new(key.clone())
        .choose_scheme(offered)
        .map(|signer| signer.scheme())
}

#[test]
fn scheme_choice_per_key_type() {
    let ca = TestCa::new("scheme choice");
    let p256 = software(&ca.issue_client("p256", &rcgen::PKCS_ECDSA_P256_SHA256));
    let p384 = software(&ca.issue_client("p384", &rcgen::PKCS_ECDSA_P384_SHA384));
    let ed = software(&ca.issue_client("ed", &rcgen::PKCS_ED25519));
    let rsa = software(&ca.issue_client("rsa", &rcgen::PKCS_RSA_SHA256));
    assert_eq!(rsa.algorithm(), KeyAlgorithm::Rsa { bits: 2048 });

    let everything = [
        R::RSA_PKCS1_SHA256,
        R::RSA_PKCS1_SHA384,
        R::ED25519,
        R::ECDSA_NISTP384_SHA384,
        R::RSA_PSS_SHA512,
        R::ECDSA_NISTP256_SHA256,
        R::RSA_PSS_SHA256,
    ];
    assert_eq!(chosen(&p256, &everything), Some(R::ECDSA_NISTP256_SHA256));
    assert_eq!(chosen(&p384, &everything), Some(R::ECDSA_NISTP384_SHA384));
    assert_eq!(chosen(&ed, &everything), Some(R::ED25519));
    // PSS before PKCS#1, SHA-256 first among the PSS schemes.
    assert_eq!(chosen(&rsa, &everything), Some(R::RSA_PSS_SHA256));
    assert_eq!(
        chosen(&rsa, &[R::RSA_PKCS1_SHA384, R::RSA_PKCS1_SHA256]),
        Some(R::RSA_PKCS1_SHA256)
    );
    // A curve's key never signs with another curve's hash.
    assert_eq!(chosen(&p256, &[R::ECDSA_NISTP384_SHA384]), None);
    assert_eq!(chosen(&p384, &[R::ECDSA_NISTP256_SHA256]), None);
    assert_eq!(
        chosen(&ed, &[R::ECDSA_NISTP256_SHA256, R::RSA_PSS_SHA256]),
        None
    );

    let signing = HsmSigningKey::new(p256.clone());
    assert_eq!(signing.algorithm(), rustls::SignatureAlgorithm::ECDSA);
    assert_eq!(
        signing.public_key().unwrap().as_ref(),
        p256.public_key_der()
    );
}

#[test]
fn identity_checks_chain_and_key() {
    let ca = TestCa::new("checks");
    let a = ca.issue_client("a", &rcgen::PKCS_ECDSA_P256_SHA256);
    let b = ca.issue_client("b", &rcgen::PKCS_ECDSA_P256_SHA256);
    assert!(matches!(
        TlsIdentity::new(software(&a), Vec::new()),
        Err(tls_bridge::Error::EmptyChain)
    ));
    assert!(matches!(
        TlsIdentity::new(software(&a), b.chain.clone()),
        Err(tls_bridge::Error::KeyMismatch(_))
    ));
    assert!(matches!(
        TlsIdentity::new(software(&a), vec![b"not a certificate".to_vec().into()]),
        Err(tls_bridge::Error::KeyMismatch(_))
    ));
    TlsIdentity::new(software(&a), a.chain.clone()).unwrap();
}

#[test]
fn default_config_completes_mutual_tls() {
    let ca = TestCa::new("default config");
    let client = ca.issue_client("device-1", &rcgen::PKCS_ECDSA_P256_SHA256);
    let server = RustlsServer::start(ca.cert(), Version::Tls13);
    let identity = TlsIdentity::new(software(&client), client.chain.clone()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(server.server_root().clone()).unwrap();
    let config = Arc::new(identity.client_config(roots).unwrap());
    let outcome = tls::connect(config, server.addr(), b"hi\n").unwrap();
    assert_eq!(outcome.version, rustls::ProtocolVersion::TLSv1_3);
    assert!(outcome.reply.starts_with("verified "));
}

/// A handle whose device has gone away.
#[derive(Debug)]
struct RemovedToken(Arc<dyn KeyHandle>);

#[derive(Debug, thiserror::Error)]
#[error("C_Sign returned CKR_DEVICE_REMOVED")]
struct DeviceRemoved;

impl KeyHandle for RemovedToken {
    fn algorithm(&self) -> KeyAlgorithm {
        self.0.algorithm()
    }

    fn public_key_der(&self) -> &[u8] {
        self.0.public_key_der()
    }

    fn sign(&self, _scheme: SignatureScheme, _message: &[u8]) -> Result<Vec<u8>, Error> {
        Err(Error::device("C_Sign", DeviceRemoved))
    }
}

#[test]
fn driver_errors_reach_rustls_with_their_cause() {
    let ca = TestCa::new("failing driver");
    let client = ca.issue_client("device-1", &rcgen::PKCS_ECDSA_P256_SHA256);
    for version in [Version::Tls13, Version::Tls12] {
        let server = RustlsServer::start(ca.cert(), version);
        let key: Arc<dyn KeyHandle> = Arc::new(RemovedToken(software(&client)));
        let identity = TlsIdentity::new(key, client.chain.clone()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(server.server_root().clone()).unwrap();
        let config = identity
            .client_config_with(tls::provider(), &[version.rustls()], roots)
            .unwrap();
        let err = tls::connect(Arc::new(config), server.addr(), b"hi\n").unwrap_err();
        let rustls_err = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
            .unwrap_or_else(|| panic!("{version:?}: not a rustls error: {err:?}"));
        let rustls::Error::Other(other) = rustls_err else {
            panic!("{version:?}: expected rustls::Error::Other, got {rustls_err:?}");
        };
        let core = other
            .0
            .downcast_ref::<Error>()
            .unwrap_or_else(|| panic!("{version:?}: cause lost: {other:?}"));
        assert!(
            matches!(
                core,
                Error::Device {
                    operation: "C_Sign",
                    ..
                }
            ),
            "{core:?}"
        );
        let cause = std::error::Error::source(core).unwrap();
        assert_eq!(cause.to_string(), "C_Sign returned CKR_DEVICE_REMOVED");
    }
}
