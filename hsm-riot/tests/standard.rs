//! The standard profile: chains verified by openssl and webpki, the conformance suite for the
//! Alias key, determinism, the TcbInfo extension, and typed errors for bad input.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::sync::Arc;

use der::{Decode as _, Encode as _};
use hsm_core::CertifiedKey;
use hsm_core::{KeyAlgorithm, KeyHandle, SecretBytes, SignatureScheme, X509Attestation};
use hsm_riot::{DevRoot, Error, Issuer, Name, RiotIdentityBuilder, Validity};
use hsm_testkit::pki::cert_pem;
use hsm_testkit::{Subject, tools};

const UDS: [u8; 32] = [0x5a; 32];
const MEASUREMENT: [u8; 32] = [0x11; 32];
const FWID: [u8; 32] = [0x22; 32];

fn root() -> DevRoot {
    DevRoot::from_seed(
        &SecretBytes::copy_from(b"test root seed"),
        Name::cn("riot test root"),
        Validity::default(),
    )
    .unwrap()
}

fn device(root: &DevRoot, fwid: &[u8; 32]) -> CertifiedKey {
    RiotIdentityBuilder::new()
        .uds(SecretBytes::copy_from(&UDS))
        .measurement(&MEASUREMENT)
        .fwid(fwid)
        .issuer(root.issuer())
        .build()
        .unwrap()
}

fn subject() -> Subject {
    let root = root();
    let identity = device(&root, &FWID);
    Subject {
        name: "hsm-riot standard Alias".into(),
        key: identity.alias_key(),
        chain: identity.certificate_chain().to_vec(),
        trust_anchor: root.certificate().clone(),
        secrets: hsm_testkit::secret_renderings(&[0x5a; 32]),
        debug_views: vec![
            format!("{identity:?}"),
            format!(
                "{:?}",
                RiotIdentityBuilder::new().uds(SecretBytes::copy_from(&UDS))
            ),
        ],
    }
}

mod alias_key {
    hsm_testkit::conformance_tests!(super::subject);
}

#[test]
fn chain_verifies_with_openssl_and_webpki() {
    let root = root();
    let identity = device(&root, &FWID);
    let chain = identity.certificate_chain();
    assert_eq!(chain.len(), 3, "alias, DeviceID, root");
    assert_eq!(identity.registration_id().as_str(), "riot-device-cert");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("root.pem"), cert_pem(root.certificate())).unwrap();
    std::fs::write(dir.path().join("deviceid.pem"), cert_pem(&chain[1])).unwrap();
    std::fs::write(dir.path().join("alias.pem"), cert_pem(&chain[0])).unwrap();
    let out = tools::openssl(
        dir.path(),
        &[
            "verify",
            "-x509_strict",
            "-check_ss_sig",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "deviceid.pem",
            "-purpose",
            "sslclient",
            "alias.pem",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "alias.pem: OK");

    let anchor = webpki::anchor_from_trusted_cert(root.certificate())
        .unwrap()
        .to_owned();
    let ee = webpki::EndEntityCert::try_from(&chain[0]).unwrap();
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &[anchor],
        &chain[1..2],
        rustls_pki_types::UnixTime::now(),
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .unwrap();

    // The DeviceID certificate is a CA with path length 1; the Alias an end entity.
    let text = String::from_utf8_lossy(
        &tools::openssl(
            dir.path(),
            &["x509", "-noout", "-text", "-in", "deviceid.pem"],
        )
        .stdout,
    )
    .into_owned();
    assert!(text.contains("CA:TRUE, pathlen:1"), "{text}");
    let text = String::from_utf8_lossy(
        &tools::openssl(dir.path(), &["x509", "-noout", "-text", "-in", "alias.pem"]).stdout,
    )
    .into_owned();
    assert!(
        text.contains("CA:FALSE") && text.contains("TLS Web Client Authentication"),
        "{text}"
    );
    assert!(text.contains("2.23.133.5.4.1"), "TcbInfo extension: {text}");
    assert!(
        text.contains("Authority Key Identifier") && text.contains("Subject Key Identifier"),
        "{text}"
    );
}

#[test]
fn tcb_info_carries_the_fwid() {
    let identity = device(&root(), &FWID);
    let cert = x509_cert::Certificate::from_der(&identity.certificate_chain()[0]).unwrap();
    let extensions = cert.tbs_certificate().extensions().unwrap();
    let tcb = extensions
        .iter()
        .find(|e| e.extn_id.to_string() == "2.23.133.5.4.1")
        .expect("TcbInfo extension");
    assert!(!tcb.critical);
    assert_eq!(
        hsm_riot::tcb_info::fwids(tcb.extn_value.as_bytes()).unwrap(),
        vec![FWID.to_vec()]
    );
}

#[test]
fn same_inputs_same_identity_and_firmware_changes_only_the_alias() {
    let root = root();
    let a = device(&root, &FWID);
    let b = device(&root, &FWID);
    assert_eq!(
        a.certificate_chain(),
        b.certificate_chain(),
        "byte-identical certificates"
    );
    let updated = device(&root, &[0x33; 32]);
    // The DeviceID key (in the DeviceID certificate, the chain's second) does not change.
    let device_id_key = |identity: &CertifiedKey| {
        x509_cert::Certificate::from_der(&identity.chain()[1])
            .unwrap()
            .tbs_certificate()
            .subject_public_key_info()
            .to_der()
            .unwrap()
    };
    assert_eq!(device_id_key(&a), device_id_key(&updated));
    assert_ne!(
        a.alias_key().public_key_der(),
        updated.alias_key().public_key_der()
    );
    // A CDI given directly equals the one derived from UDS and measurement.
    use sha2::Digest as _;
    let cdi = sha2::Sha256::digest([sha2::Sha256::digest(UDS).as_slice(), &MEASUREMENT].concat());
    let from_cdi = RiotIdentityBuilder::new()
        .cdi(SecretBytes::copy_from(&cdi))
        .fwid(&FWID)
        .issuer(root.issuer())
        .build()
        .unwrap();
    assert_eq!(from_cdi.certificate_chain(), a.certificate_chain());
    // Serial numbers are derived from the public keys: positive, 16 bytes.
    let cert = x509_cert::Certificate::from_der(&a.certificate_chain()[0]).unwrap();
    let serial = cert.tbs_certificate().serial_number().as_bytes().to_vec();
    assert_eq!(serial.len(), 16);
    assert!(serial[0] & 0x80 == 0);
}

#[test]
fn self_signed_device_id_and_layers() {
    let identity = RiotIdentityBuilder::new()
        .uds(SecretBytes::copy_from(&UDS))
        .measurement(&MEASUREMENT)
        .fwid(&FWID)
        .layer(&[1; 32])
        .alias_name(Name {
            common_name: "device-0042".into(),
            organization: Some("Example".into()),
            country: Some("DE".into()),
        })
        .build()
        .unwrap();
    assert_eq!(identity.certificate_chain().len(), 2);
    assert_eq!(identity.registration_id().as_str(), "device-0042");
    let plain = device(&root(), &FWID);
    assert_ne!(
        identity.alias_key().public_key_der(),
        plain.alias_key().public_key_der(),
        "layers change the Alias key"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("deviceid.pem"),
        cert_pem(&identity.certificate_chain()[1]),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("alias.pem"),
        cert_pem(&identity.certificate_chain()[0]),
    )
    .unwrap();
    let out = tools::openssl(
        dir.path(),
        &[
            "verify",
            "-x509_strict",
            "-check_ss_sig",
            "-CAfile",
            "deviceid.pem",
            "alias.pem",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "alias.pem: OK");
}

#[test]
fn verification_code_certificate() {
    let root = root();
    let code = "4D3C1B9A2F0E7D6C5B4A39281706F5E4D3C2B1A098";
    let cert = root.verification_certificate(code).unwrap();
    let parsed = x509_cert::Certificate::from_der(&cert).unwrap();
    let cn = parsed
        .tbs_certificate()
        .subject()
        .common_name()
        .unwrap()
        .unwrap();
    assert_eq!(cn.value(), code);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("root.pem"), cert_pem(root.certificate())).unwrap();
    std::fs::write(dir.path().join("verify.pem"), cert_pem(&cert)).unwrap();
    let out = tools::openssl(dir.path(), &["verify", "-CAfile", "root.pem", "verify.pem"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "verify.pem: OK"
    );
    assert!(matches!(
        root.verification_certificate(""),
        Err(Error::InvalidCommonName { .. })
    ));
    // A generated root is random, a seeded one reproducible.
    let g1 = DevRoot::generate(Name::cn("r"), Validity::default()).unwrap();
    let g2 = DevRoot::generate(Name::cn("r"), Validity::default()).unwrap();
    assert_ne!(g1.certificate(), g2.certificate());
    assert_eq!(root.certificate(), self::root().certificate());
}

/// A key that claims P-256 but can sign nothing.
#[derive(Debug)]
struct Useless(Vec<u8>);

impl KeyHandle for Useless {
    fn algorithm(&self) -> KeyAlgorithm {
        KeyAlgorithm::EcdsaP256
    }
    fn public_key_der(&self) -> &[u8] {
        &self.0
    }
    fn sign(&self, scheme: SignatureScheme, _: &[u8]) -> Result<Vec<u8>, hsm_core::Error> {
        Err(hsm_core::Error::UnsupportedScheme {
            algorithm: KeyAlgorithm::EcdsaP256,
            scheme,
        })
    }
    fn schemes(&self) -> &'static [SignatureScheme] {
        &[]
    }
}

#[test]
fn bad_input_gives_typed_errors() {
    let base = || {
        RiotIdentityBuilder::new()
            .uds(SecretBytes::copy_from(&UDS))
            .measurement(&MEASUREMENT)
            .fwid(&FWID)
    };
    let err = RiotIdentityBuilder::new()
        .uds(SecretBytes::copy_from(&[1; 31]))
        .measurement(&MEASUREMENT)
        .fwid(&FWID)
        .build()
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::WrongLength {
                what: "UDS",
                expected: 32,
                got: 31
            }
        ),
        "{err}"
    );
    let err = base().fwid(&[1; 20]).build().unwrap_err();
    assert!(
        matches!(
            err,
            Error::WrongLength {
                what: "FWID",
                got: 20,
                ..
            }
        ),
        "{err}"
    );
    let err = base().measurement(&[1; 33]).build().unwrap_err();
    assert!(
        matches!(
            err,
            Error::WrongLength {
                what: "measurement",
                ..
            }
        ),
        "{err}"
    );
    let err = base().layer(&[1; 2]).build().unwrap_err();
    assert!(
        matches!(
            err,
            Error::WrongLength {
                what: "layer measurement",
                ..
            }
        ),
        "{err}"
    );
    let zero = || {
        RiotIdentityBuilder::new()
            .uds(SecretBytes::copy_from(&[0; 32]))
            .measurement(&MEASUREMENT)
            .fwid(&FWID)
    };
    assert!(matches!(zero().build(), Err(Error::ZeroUds)));
    zero().allow_zero_uds(true).build().unwrap();
    let err = base()
        .alias_name(Name::cn("not a valid id!"))
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidCommonName { .. }), "{err}");
    let err = base()
        .alias_name(Name::cn("a".repeat(65)))
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidCommonName { .. }), "{err}");

    let root = root();
    let useless: Arc<dyn KeyHandle> = Arc::new(Useless(root.key().public_key_der().to_vec()));
    let err = base()
        .issuer(Issuer::Root {
            key: useless,
            certificate: root.certificate().clone(),
        })
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::UnsupportedRootKey(_)), "{err}");
    let other = DevRoot::generate(Name::cn("other"), Validity::default()).unwrap();
    let err = base()
        .issuer(Issuer::Root {
            key: other.key(),
            certificate: root.certificate().clone(),
        })
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::RootCertificate(_)), "{err}");
    let err = base()
        .issuer(Issuer::Root {
            key: root.key(),
            certificate: b"junk".to_vec().into(),
        })
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::RootCertificate(_)), "{err}");
    // Secrets stay out of errors and Debug.
    let shown = format!("{err} {:?}", base());
    assert!(!shown.contains("5a5a"), "{shown}");
    let _ = der::asn1::Null.to_der();
}
