//! The C SDK compatibility profile against its checkpoints and the spec's expected bytes.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use der::Decode as _;
use hsm_core::{SecretBytes, SignatureScheme, X509Attestation};
use hsm_riot::compat::{SDK_FWID, SDK_MEASUREMENT, SdkDevice};
use hsm_testkit::pki::cert_pem;
use hsm_testkit::{tools, verify};

fn pem_der(pem: &str) -> Vec<u8> {
    hsm_x509::load_certificates(pem.as_bytes())
        .unwrap()
        .remove(0)
        .to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn root_certificate_tbs_is_the_sdks() {
    // Built only from constants in the SDK's source (names, serial, validity, the off-curve
    // root point, key usage, basic constraints): fully deterministic.
    let device = SdkDevice::development().unwrap();
    let cert = x509_cert::Certificate::from_der(device.root_certificate()).unwrap_or_else(|_| {
        // x509-cert checks the SPKI's structure only; the point itself is the SDK's.
        panic!("the root certificate must still parse")
    });
    let tbs = der::Encode::to_der(cert.tbs_certificate()).unwrap();
    assert_eq!(hex(&tbs), include_str!("data/sdk-root-tbs.hex").trim());
}

#[test]
fn alias_and_root_certificates_match_the_independent_model() {
    // data/*-model.pem come from data/model/build.py, an independent Python model of the SDK's
    // code (glibc rand, mbed TLS HMAC_DRBG and ECDSA draw order, the RIoT DER rules): a second
    // implementation of the same specification, not a C build.
    let device = SdkDevice::development().unwrap();
    assert_eq!(
        device.identity().certificate_chain()[0].as_ref(),
        pem_der(include_str!("data/sdk-alias-model.pem")),
        "Alias certificate"
    );
    assert_eq!(
        device.root_certificate().as_ref(),
        pem_der(include_str!("data/sdk-root-model.pem")),
        "root certificate"
    );
}

#[test]
fn checkpoints_and_alias_key() {
    let device = SdkDevice::development().unwrap();
    assert_eq!(
        hex(device.device_id_public_point()),
        "94014b094fb4b76519ad2bb404f1be94d2ffba8cc40341160c40a6f69ee0764407c7b117080d9481a11f07753c7e584779693372f3c229fd3855e1057f1de5bb"
    );
    assert_eq!(
        device.identity().registration_id().as_str(),
        "riot-device-cert"
    );
    // The Alias key signs (TLS) and its public key is the one in the Alias certificate.
    let alias = device.identity().alias_key();
    let cert = x509_cert::Certificate::from_der(&device.identity().certificate_chain()[0]).unwrap();
    let spki = der::Encode::to_der(cert.tbs_certificate().subject_public_key_info()).unwrap();
    assert_eq!(spki, alias.public_key_der());
    let signature = alias
        .sign(SignatureScheme::EcdsaP256Sha256, b"tls")
        .unwrap();
    verify::rustcrypto(
        SignatureScheme::EcdsaP256Sha256,
        alias.public_key_der(),
        b"tls",
        &signature,
    )
    .unwrap();
    assert!(!format!("{device:?}").contains(&hex(&device.alias_private_key_der().expose()[7..39])));
}

#[test]
fn alias_certificate_is_signed_by_the_device_id_key() {
    let device = SdkDevice::development().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("deviceid.pem"),
        cert_pem(&device.identity().certificate_chain()[1]),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("alias.pem"),
        cert_pem(&device.identity().certificate_chain()[0]),
    )
    .unwrap();
    // openssl reads both and checks the Alias signature with the DeviceID key (the SDK's own
    // root cannot anchor anything: its public key is off the curve).
    let out = tools::openssl(
        dir.path(),
        &[
            "verify",
            "-partial_chain",
            "-CAfile",
            "deviceid.pem",
            "alias.pem",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "alias.pem: OK");
    let text = tools::openssl(
        dir.path(),
        &["x509", "-noout", "-subject", "-issuer", "-in", "alias.pem"],
    );
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("CN = riot-device-cert, C = US, O = MSR_TEST"),
        "{text}"
    );
}

#[test]
fn other_inputs_and_bad_input() {
    let other = SdkDevice::new(
        &SecretBytes::copy_from(&[7; 32]),
        &SDK_MEASUREMENT,
        &SDK_FWID,
    );
    match other {
        Ok(device) => assert_ne!(
            device.device_id_public_point(),
            SdkDevice::development().unwrap().device_id_public_point()
        ),
        // 1 in 256 inputs hit the SDK's own signature-encoding bug: a typed error, not garbage.
        Err(e) => assert!(matches!(e, hsm_riot::Error::RootCertificate(_)), "{e}"),
    }
    let err = SdkDevice::new(
        &SecretBytes::copy_from(&[7; 16]),
        &SDK_MEASUREMENT,
        &SDK_FWID,
    )
    .unwrap_err();
    assert!(
        matches!(err, hsm_riot::Error::WrongLength { what: "UDS", .. }),
        "{err}"
    );
}
