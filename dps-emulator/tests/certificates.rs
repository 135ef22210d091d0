//! The emulator's certificates pass strict X.509 verification (`openssl verify -x509_strict`):
//! its CA, the TLS server certificate it serves, and certificates it issues from CSRs.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use base64::Engine as _;
use common::{Https, b64, sas, tls, tls_config};
use dps_emulator::{Emulator, Enrollment, KeyPair};
use hsm_testkit::pki::cert_pem;
use hsm_testkit::tools;
use serde_json::json;

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

/// `openssl verify -x509_strict` of `leaf` against the emulator's CA: what it printed, and
/// whether it said OK.
fn strict_verify(dir: &Path, emulator: &Emulator, leaf: &[u8]) -> (bool, String) {
    let leaf = rustls::pki_types::CertificateDer::from(leaf.to_vec());
    std::fs::write(dir.join("ca.pem"), emulator.ca_pem()).unwrap();
    std::fs::write(dir.join("leaf.pem"), cert_pem(&leaf)).unwrap();
    let out = tools::openssl(
        dir,
        &["verify", "-x509_strict", "-CAfile", "ca.pem", "leaf.pem"],
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success() && said.contains("leaf.pem: OK"), said)
}

#[tokio::test]
async fn the_ca_and_the_server_certificate_pass_strict_verification_with_each_name_once() {
    // The default names again, in another case: each must still appear once.
    let emulator = Emulator::builder()
        .server_name("localhost")
        .server_name("127.0.0.1")
        .server_name("LOCALHOST")
        .server_name("dps.example.test")
        .start()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (ok, said) = strict_verify(dir.path(), &emulator, emulator.ca_certificate());
    assert!(ok, "the CA itself: {said}");

    let stream = tls(
        emulator.https_addr(),
        tls_config(&emulator, None, b"http/1.1"),
    )
    .await;
    let served = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (ok, said) = strict_verify(dir.path(), &emulator, &served);
    assert!(ok, "the server certificate: {said}");

    let out = tools::openssl(
        dir.path(),
        &[
            "x509",
            "-in",
            "leaf.pem",
            "-noout",
            "-ext",
            "subjectAltName",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    let names: Vec<&str> = text
        .lines()
        .skip(1)
        .flat_map(|l| l.split(','))
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    assert_eq!(
        names,
        [
            "dns:localhost",
            "ip address:127.0.0.1",
            "ip address:0:0:0:0:0:0:0:1",
            "dns:dps.example.test",
            // The hubs are served too.
            "dns:emulated-hub.azure-devices.net"
        ],
        "{text}"
    );
}

#[tokio::test]
async fn a_certificate_issued_from_a_csr_passes_strict_verification() {
    let key = KeyPair::from_base64("strict-dev", &b64(KEY), None).unwrap();
    let emulator = Emulator::builder()
        .retry_after(0)
        .enroll(Enrollment::symmetric_key("strict-dev", key))
        .start()
        .await
        .unwrap();
    let device_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "strict-dev");
    let csr = b64(params.serialize_request(&device_key).unwrap().der());
    let mut client = Https::connect(&emulator, None).await;
    let token = sas(emulator.id_scope(), "strict-dev", KEY);
    let reply = client
        .register(
            "strict-dev",
            Some(&token),
            json!({"registrationId": "strict-dev", "csr": csr}),
            "2025-07-01-preview",
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let leaf = base64::engine::general_purpose::STANDARD
        .decode(
            reply.json()["registrationState"]["issuedCertificateChain"][0]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (ok, said) = strict_verify(dir.path(), &emulator, &leaf);
    assert!(ok, "the issued certificate: {said}");
}
