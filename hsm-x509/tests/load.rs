//! Loading every supported encoding, and every kind of bad input as a typed error.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::path::PathBuf;

use hsm_core::CertifiedKey;
use hsm_core::{KeyAlgorithm, RegistrationId, SecretString, X509Attestation};
use hsm_x509::{Error, SoftwareKey, X509IdentityBuilder, load_certificates};

const PASSPHRASE: &str = "fixture-passphrase";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap()
}

fn key(name: &str) -> Result<SoftwareKey, Error> {
    SoftwareKey::from_bytes(&read(name), Some(&SecretString::from(PASSPHRASE)))
}

fn identity(chain: &str, key: &str) -> Result<CertifiedKey, Error> {
    X509IdentityBuilder::new()
        .certificates_file(fixture(chain))
        .key_file(fixture(key))
        .passphrase(SecretString::from(PASSPHRASE))
        .build()
}

#[test]
fn every_encoding_loads_and_matches_its_leaf() {
    let cases = [
        ("p256-chain.pem", "p256.key.pem", KeyAlgorithm::EcdsaP256),
        ("p256.der", "p256.key.der", KeyAlgorithm::EcdsaP256),
        ("p256.pem", "p256.sec1.pem", KeyAlgorithm::EcdsaP256),
        ("p256.pem", "p256.sec1.der", KeyAlgorithm::EcdsaP256),
        (
            "p256.pem",
            "p256.params-and-sec1.pem",
            KeyAlgorithm::EcdsaP256,
        ),
        ("p256.pem", "p256.enc.pem", KeyAlgorithm::EcdsaP256),
        ("p384-chain.pem", "p384.key.pem", KeyAlgorithm::EcdsaP384),
        ("p384.pem", "p384.enc.der", KeyAlgorithm::EcdsaP384),
        (
            "rsa2048-chain.pem",
            "rsa2048.key.pem",
            KeyAlgorithm::Rsa { bits: 2048 },
        ),
        (
            "rsa2048.pem",
            "rsa2048.pkcs1.pem",
            KeyAlgorithm::Rsa { bits: 2048 },
        ),
        (
            "rsa2048.pem",
            "rsa2048.pkcs1.der",
            KeyAlgorithm::Rsa { bits: 2048 },
        ),
        (
            "rsa2048.pem",
            "rsa2048.enc.pem",
            KeyAlgorithm::Rsa { bits: 2048 },
        ),
        (
            "rsa4096-chain.pem",
            "rsa4096.key.pem",
            KeyAlgorithm::Rsa { bits: 4096 },
        ),
        (
            "ed25519-chain.pem",
            "ed25519.key.pem",
            KeyAlgorithm::Ed25519,
        ),
        ("ed25519.pem", "ed25519.enc.pem", KeyAlgorithm::Ed25519),
    ];
    for (chain, key, algorithm) in cases {
        let id = identity(chain, key).unwrap_or_else(|e| panic!("{chain} + {key}: {e}"));
        assert_eq!(id.alias_key().algorithm(), algorithm, "{key}");
        let expected_len = if chain.ends_with("-chain.pem") { 2 } else { 1 };
        assert_eq!(id.certificate_chain().len(), expected_len, "{chain}");
        let name = chain.split(['-', '.']).next().unwrap();
        assert_eq!(id.registration_id().as_str(), format!("device-{name}"));
    }
}

#[test]
fn a_combined_file_gives_both_chain_and_key() {
    let mut combined = read("p256.key.pem");
    combined.extend(read("p256-chain.pem"));
    let id = X509IdentityBuilder::new()
        .certificates(&combined)
        .key(&combined)
        .build()
        .unwrap();
    assert_eq!(id.certificate_chain().len(), 2);
}

#[test]
fn concatenated_der_certificates_load_as_a_chain() {
    let mut der = read("p256.der");
    der.extend(read("p256.der"));
    assert_eq!(load_certificates(&der).unwrap().len(), 2);
}

#[test]
fn registration_id_override() {
    let id = X509IdentityBuilder::new()
        .certificates_file(fixture("no-cn.pem"))
        .key_file(fixture("p256.key.pem"))
        .registration_id(RegistrationId::new("chosen-id").unwrap())
        .build()
        .unwrap();
    assert_eq!(id.registration_id().as_str(), "chosen-id");
}

#[test]
fn malformed_pem() {
    let err = key_from(b"-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n");
    assert!(
        matches!(err, Error::MalformedPem { line: 3, .. }),
        "{err:?}"
    );
    let truncated = &read("p256.key.pem")[..100];
    assert!(matches!(key_from(truncated), Error::MalformedPem { .. }));
    let err = load_certificates(b"-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap_err();
    assert!(matches!(err, Error::MalformedPem { .. }), "{err:?}");
}

#[test]
fn malformed_der() {
    assert!(matches!(
        key_from(&[0x30, 0x03, 1, 2, 3]),
        Error::MalformedKey
    ));
    let mut der = read("p256.key.der");
    der.truncate(der.len() - 5);
    assert!(matches!(key_from(&der), Error::MalformedKey));
    let err = load_certificates(&read("p256.der")[..200]).unwrap_err();
    assert!(
        matches!(err, Error::MalformedCertificate { index: 0, .. }),
        "{err:?}"
    );
    let mut two = read("p256.der");
    two.extend(&read("p256.der")[..50]);
    let err = load_certificates(&two).unwrap_err();
    assert!(
        matches!(err, Error::MalformedCertificate { index: 1, .. }),
        "{err:?}"
    );
}

#[test]
fn certificate_where_key_expected() {
    assert!(matches!(
        key_from(&read("p256.pem")),
        Error::CertificateWhereKeyExpected
    ));
    assert!(matches!(
        key_from(&read("p256.der")),
        Error::CertificateWhereKeyExpected
    ));
}

#[test]
fn key_that_does_not_match_the_certificate() {
    let err = identity("p256.pem", "p384.key.pem").unwrap_err();
    assert!(matches!(err, Error::KeyMismatch), "{err:?}");
    let err = identity("rsa2048.pem", "rsa4096.key.pem").unwrap_err();
    assert!(matches!(err, Error::KeyMismatch), "{err:?}");
}

#[test]
fn unsupported_curves_and_types() {
    for (name, oid) in [
        ("bad-secp256k1.key.pem", "1.3.132.0.10"),
        ("bad-p521.key.pem", "1.3.132.0.35"),
    ] {
        match key(name) {
            Err(Error::UnsupportedCurve { oid: got }) => assert_eq!(got, oid),
            other => panic!("{name}: {other:?}"),
        }
    }
    assert!(matches!(
        key("bad-x25519.key.pem"),
        Err(Error::UnsupportedKeyType { .. })
    ));
    assert!(matches!(
        key("bad-rsa1024.key.pem"),
        Err(Error::UnsupportedKeySize { bits: 1024 })
    ));
}

#[test]
fn wrong_or_missing_passphrase() {
    for name in [
        "p256.enc.pem",
        "rsa2048.enc.pem",
        "ed25519.enc.pem",
        "p384.enc.der",
    ] {
        let err =
            SoftwareKey::from_bytes(&read(name), Some(&SecretString::from("wrong"))).unwrap_err();
        assert!(matches!(err, Error::WrongPassphrase), "{name}: {err:?}");
        let err = SoftwareKey::from_bytes(&read(name), None).unwrap_err();
        assert!(matches!(err, Error::PassphraseRequired), "{name}: {err:?}");
    }
    assert!(matches!(
        key("bad-legacy-encrypted.pem"),
        Err(Error::LegacyEncryptedPem)
    ));
}

#[test]
fn empty_chain_and_no_key() {
    assert!(matches!(load_certificates(b""), Err(Error::EmptyChain)));
    assert!(matches!(
        load_certificates(&read("p256.key.pem")),
        Err(Error::EmptyChain)
    ));
    assert!(matches!(key_from(b""), Error::MalformedKey));
    assert!(matches!(
        key_from(b"-----BEGIN PUBLIC KEY-----\nAQID\n-----END PUBLIC KEY-----\n"),
        Error::UnexpectedPemLabel { .. }
    ));
    let mut two = read("p256.key.pem");
    two.extend(read("p384.key.pem"));
    assert!(matches!(
        key_from(&two),
        Error::MultiplePrivateKeys { count: 2 }
    ));
    let err = X509IdentityBuilder::new()
        .key_file(fixture("p256.key.pem"))
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::Missing("certificates")));
    let err = identity("does-not-exist.pem", "p256.key.pem").unwrap_err();
    assert!(matches!(err, Error::Io { .. }));
    assert!(err.to_string().contains("does-not-exist.pem"));
}

#[test]
fn invalid_registration_id_from_the_common_name() {
    let err = identity("bad-cn.pem", "p256.key.pem").unwrap_err();
    assert!(matches!(err, Error::RegistrationId(_)), "{err:?}");
    let err = identity("no-cn.pem", "p256.key.pem").unwrap_err();
    assert!(matches!(err, Error::NoCommonName), "{err:?}");
}

#[test]
fn debug_output_holds_no_secret() {
    let pem = read("p256.key.pem");
    let id = identity("p256-chain.pem", "p256.key.pem").unwrap();
    let builder = X509IdentityBuilder::new()
        .key(&pem)
        .passphrase(SecretString::from(PASSPHRASE));
    let shown = format!("{id:?} {:?} {builder:?}", id.alias_key());
    assert!(!shown.contains(PASSPHRASE), "{shown}");
    let body: String = String::from_utf8(pem)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_owned();
    assert!(!shown.contains(&body[..20]), "{shown}");
    assert!(shown.contains("[redacted]"));
}

fn key_from(bytes: &[u8]) -> Error {
    SoftwareKey::from_bytes(bytes, None).unwrap_err()
}
