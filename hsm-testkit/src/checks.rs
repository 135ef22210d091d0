//! The conformance checks. Each takes a [`Subject`] and panics with a precise message when the
//! driver breaks the contract; [`conformance_tests!`](crate::conformance_tests) turns them into
//! one `#[test]` each.

use std::sync::{Arc, Barrier};

use hsm_core::{CertificateDer, Error, RcgenSigner, SignatureScheme};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::RootCertStore;
use rustls::pki_types::UnixTime;
use spki::der::{Decode as _, Encode as _};
use tls_bridge::TlsIdentity;

use crate::pki::{cert_pem, sha256_hex};
use crate::tls::{self, Version};
use crate::{Subject, tools, verify};

/// One check of the suite: its name (the test's, in [`conformance_tests!`](crate::conformance_tests)) and the
/// function, which panics with a precise message when the driver breaks the contract.
pub type Check = (&'static str, fn(&Subject));

/// Every check, in the order [`conformance_tests!`](crate::conformance_tests) lists them: for
/// runners outside `cargo test` (`hsm-provision conformance`).
pub fn all() -> Vec<Check> {
    vec![
        ("sign_round_trip_every_scheme", sign_round_trip),
        ("public_key_matches_leaf", public_key_matches_leaf),
        (
            "certificate_signed_through_handle_verifies",
            certificate_through_handle,
        ),
        ("csr_signed_through_handle_verifies", csr_through_handle),
        ("tls13_mutual_auth_rustls_server", |s| {
            tls_rustls(s, Version::Tls13)
        }),
        ("tls12_mutual_auth_rustls_server", |s| {
            tls_rustls(s, Version::Tls12)
        }),
        ("tls13_mutual_auth_openssl_s_server", |s| {
            tls_openssl(s, Version::Tls13)
        }),
        ("tls12_mutual_auth_openssl_s_server", |s| {
            tls_openssl(s, Version::Tls12)
        }),
        ("concurrent_signing_8_threads", concurrent_signing),
        ("unsupported_schemes_are_typed_errors", unsupported_schemes),
        ("debug_output_is_redacted", debug_redacted),
    ]
}

fn messages() -> Vec<Vec<u8>> {
    vec![
        Vec::new(),
        b"hsm-testkit conformance".to_vec(),
        (0..10_000u32).map(|i| (i % 251) as u8).collect(),
    ]
}

/// Every scheme the handle claims signs the unhashed message in TLS/X.509 format: verified by
/// RustCrypto and by webpki's algorithms, and a tampered message fails to verify.
pub fn sign_round_trip(subject: &Subject) {
    let key = &subject.key;
    let schemes = key.schemes();
    assert!(
        !schemes.is_empty(),
        "{}: the handle claims no scheme",
        subject.name
    );
    for &scheme in schemes {
        assert!(
            key.algorithm().supports(scheme),
            "{}: claims {scheme}, which a {} key cannot do",
            subject.name,
            key.algorithm()
        );
        for message in messages() {
            let signature = key
                .sign(scheme, &message)
                .unwrap_or_else(|e| panic!("{}: sign with {scheme}: {e}", subject.name));
            let spki = key.public_key_der();
            verify::rustcrypto(scheme, spki, &message, &signature).unwrap_or_else(|e| {
                panic!(
                    "{}: RustCrypto rejects the {scheme} signature: {e}",
                    subject.name
                )
            });
            verify::webpki(scheme, spki, &message, &signature).unwrap_or_else(|e| {
                panic!(
                    "{}: webpki rejects the {scheme} signature: {e}",
                    subject.name
                )
            });
            let mut tampered = message.clone();
            tampered.push(1);
            assert!(
                verify::rustcrypto(scheme, spki, &tampered, &signature).is_err(),
                "{}: a {scheme} signature also verifies for another message",
                subject.name
            );
        }
    }
}

/// The handle's public key is the leaf certificate's, byte for byte, and tls-bridge accepts the
/// pair.
pub fn public_key_matches_leaf(subject: &Subject) {
    let leaf = subject
        .chain
        .first()
        .unwrap_or_else(|| panic!("{}: empty certificate chain", subject.name));
    let cert = x509_cert::Certificate::from_der(leaf)
        .unwrap_or_else(|e| panic!("{}: leaf does not parse: {e}", subject.name));
    let leaf_spki = cert
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .expect("encode SPKI");
    assert_eq!(
        leaf_spki,
        subject.key.public_key_der(),
        "{}: the handle's public key is not the leaf's",
        subject.name
    );
    TlsIdentity::new(subject.key.clone(), subject.chain.clone())
        .unwrap_or_else(|e| panic!("{}: tls-bridge refuses the pair: {e}", subject.name));
}

/// A self-signed CA certificate made by rcgen through the handle (a key rcgen cannot see), and
/// a leaf it issues, verify with `openssl verify -check_ss_sig`, webpki and RustCrypto.
pub fn certificate_through_handle(subject: &Subject) {
    let signer = rcgen_signer(subject);
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(
        DnType::CommonName,
        "hsm-testkit root signed through the handle",
    );
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let root = params
        .self_signed(&signer)
        .unwrap_or_else(|e| panic!("{}: self-signed certificate: {e}", subject.name));
    let root_der = root.der().clone();

    // The root's own signature, checked independently.
    let cert = x509_cert::Certificate::from_der(&root_der).expect("root parses");
    let tbs = cert.tbs_certificate().to_der().expect("tbs");
    let sig = cert.signature().raw_bytes();
    verify::rustcrypto(signer.scheme(), subject.key.public_key_der(), &tbs, sig)
        .unwrap_or_else(|e| panic!("{}: self-signed certificate: {e}", subject.name));

    // A leaf issued by the handle.
    let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("leaf key");
    let mut leaf_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    leaf_params.distinguished_name.push(
        DnType::CommonName,
        "hsm-testkit leaf issued through the handle",
    );
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let issuer = Issuer::new(params, &signer);
    let leaf = leaf_params
        .signed_by(&leaf_key, &issuer)
        .unwrap_or_else(|e| panic!("{}: issue a leaf: {e}", subject.name));

    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("root.pem"), cert_pem(&root_der)).expect("write");
    std::fs::write(dir.path().join("leaf.pem"), leaf.pem()).expect("write");
    let out = tools::openssl(
        dir.path(),
        &["verify", "-check_ss_sig", "-CAfile", "root.pem", "leaf.pem"],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "leaf.pem: OK");

    let anchor = webpki::anchor_from_trusted_cert(&root_der)
        .unwrap_or_else(|e| panic!("{}: webpki refuses the root: {e}", subject.name))
        .to_owned();
    let leaf_der = leaf.der().clone();
    let end_entity = webpki::EndEntityCert::try_from(&leaf_der).expect("webpki parses the leaf");
    end_entity
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &[anchor],
            &[],
            UnixTime::now(),
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .unwrap_or_else(|e| panic!("{}: webpki rejects the chain: {e}", subject.name));
}

/// A PKCS#10 CSR made through the handle by `hsm_core::csr_der` (what DPS certificate issuance
/// sends) verifies with `openssl req -verify`, RustCrypto and webpki's algorithms, and carries
/// the handle's public key.
pub fn csr_through_handle(subject: &Subject) {
    let scheme = rcgen_signer(subject).scheme();
    let csr = hsm_core::csr_der(subject.key.clone(), "hsm-testkit-csr")
        .unwrap_or_else(|e| panic!("{}: CSR: {e}", subject.name));

    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("req.der"), &csr).expect("write");
    let out = tools::openssl(
        dir.path(),
        &[
            "req", "-verify", "-noout", "-inform", "DER", "-in", "req.der",
        ],
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("verify OK"),
        "{}: openssl req -verify: {said}",
        subject.name
    );

    let request = x509_cert::request::CertReq::from_der(&csr).expect("CSR parses");
    let info = request.info.to_der().expect("info");
    let spki = request.info.public_key.to_der().expect("spki");
    assert_eq!(
        spki,
        subject.key.public_key_der(),
        "{}: CSR key",
        subject.name
    );
    let sig = request.signature.raw_bytes();
    verify::rustcrypto(scheme, &spki, &info, sig)
        .unwrap_or_else(|e| panic!("{}: CSR signature (RustCrypto): {e}", subject.name));
    verify::webpki(scheme, &spki, &info, sig)
        .unwrap_or_else(|e| panic!("{}: CSR signature (webpki): {e}", subject.name));
}

/// Mutual TLS through tls-bridge against an in-process rustls server that requires a client
/// certificate chaining to the subject's trust anchor; the server reports the leaf it verified.
pub fn tls_rustls(subject: &Subject, version: Version) {
    let server = tls::RustlsServer::start(&subject.trust_anchor, version);
    let config = client_config(subject, server.server_root(), version);
    let outcome = tls::connect(config, server.addr(), b"hello\n")
        .unwrap_or_else(|e| panic!("{}: {version:?} handshake with rustls: {e}", subject.name));
    assert_eq!(outcome.version, expected_version(version));
    assert_eq!(
        outcome.reply,
        format!("verified {}\n", sha256_hex(&subject.chain[0])),
        "{}: the server did not verify our leaf",
        subject.name
    );
}

/// Mutual TLS through tls-bridge against `openssl s_server -Verify 1 -verify_return_error`,
/// whose `-www` page must show our leaf certificate as the verified client certificate.
pub fn tls_openssl(subject: &Subject, version: Version) {
    let server = tls::OpensslServer::start(&subject.trust_anchor, version);
    let config = client_config(subject, server.server_root(), version);
    let outcome = tls::connect(config, server.addr(), b"GET / HTTP/1.0\r\n\r\n")
        .unwrap_or_else(|e| panic!("{}: {version:?} handshake with openssl: {e}", subject.name));
    assert_eq!(outcome.version, expected_version(version));
    let leaf_pem = cert_pem(&subject.chain[0]);
    let body: String = leaf_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let page: String = outcome
        .reply
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(
        outcome.reply.contains("Client certificate") && page.contains(&body),
        "{}: openssl did not report our client certificate:\n{}",
        subject.name,
        outcome.reply
    );
}

/// Eight threads sign through one handle at once; every signature verifies.
pub fn concurrent_signing(subject: &Subject) {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 16;
    let barrier = Arc::new(Barrier::new(THREADS));
    let scheme = subject.key.schemes()[0];
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let key = subject.key.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                (0..PER_THREAD)
                    .map(|i| {
                        let message = format!("thread {t} message {i}").into_bytes();
                        let signature = key.sign(scheme, &message);
                        (message, signature)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    // Every thread joined before any result is judged: a failure must not leave threads
    // signing through the driver while the process goes on (or exits under them).
    let results: Vec<_> = handles
        .into_iter()
        .map(std::thread::JoinHandle::join)
        .collect();
    let mut verified = 0;
    for result in results {
        for (message, signature) in result.expect("signing thread panicked") {
            let signature =
                signature.unwrap_or_else(|e| panic!("{}: concurrent sign: {e}", subject.name));
            verify::rustcrypto(scheme, subject.key.public_key_der(), &message, &signature)
                .unwrap_or_else(|e| panic!("{}: concurrent signature: {e}", subject.name));
            verified += 1;
        }
    }
    assert_eq!(verified, THREADS * PER_THREAD);
}

/// Every scheme the handle does not claim is refused with [`Error::UnsupportedScheme`], and
/// tls-bridge declines when a peer offers only such schemes.
pub fn unsupported_schemes(subject: &Subject) {
    let claimed = subject.key.schemes();
    let others: Vec<_> = SignatureScheme::ALL
        .into_iter()
        .filter(|s| !claimed.contains(s))
        .collect();
    assert!(!others.is_empty(), "{}: claims every scheme", subject.name);
    for &scheme in &others {
        match subject.key.sign(scheme, b"message") {
            Err(Error::UnsupportedScheme { scheme: s, .. }) => assert_eq!(s, scheme),
            other => panic!(
                "{}: {scheme} should be Error::UnsupportedScheme, got {other:?}",
                subject.name
            ),
        }
    }
    let offered: Vec<_> = others
        .iter()
        .map(|&s| tls_bridge::to_rustls_scheme(s))
        .collect();
    assert!(
        tls_bridge::choose_scheme(subject.key.as_ref(), &offered).is_none(),
        "{}: tls-bridge chose a scheme the key cannot do",
        subject.name
    );
}

/// No secret appears in the `Debug` output of the handle or of the driver's other objects.
pub fn debug_redacted(subject: &Subject) {
    assert!(
        !subject.secrets.is_empty(),
        "{}: give the suite the secrets to look for",
        subject.name
    );
    let mut views = vec![format!("{:?}", subject.key), format!("{:#?}", subject.key)];
    views.extend(subject.debug_views.iter().cloned());
    for view in &views {
        for secret in &subject.secrets {
            assert!(
                !view.contains(secret.as_str()),
                "{}: a secret appears in Debug output: {view}",
                subject.name
            );
        }
    }
}

fn rcgen_signer(subject: &Subject) -> RcgenSigner {
    RcgenSigner::new(subject.key.clone())
        .unwrap_or_else(|e| panic!("{}: rcgen signer: {e}", subject.name))
}

fn client_config(
    subject: &Subject,
    server_root: &CertificateDer<'static>,
    version: Version,
) -> Arc<rustls::ClientConfig> {
    let identity = TlsIdentity::new(subject.key.clone(), subject.chain.clone())
        .unwrap_or_else(|e| panic!("{}: tls identity: {e}", subject.name));
    let mut roots = RootCertStore::empty();
    roots.add(server_root.clone()).expect("server root");
    let config = identity
        .client_config_with(tls::provider(), &[version.rustls()], roots)
        .unwrap_or_else(|e| panic!("{}: client config: {e}", subject.name));
    Arc::new(config)
}

fn expected_version(version: Version) -> rustls::ProtocolVersion {
    match version {
        Version::Tls13 => rustls::ProtocolVersion::TLSv1_3,
        Version::Tls12 => rustls::ProtocolVersion::TLSv1_2,
    }
}
