#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
// The test kit is test code: its `expect`s are the suite's assertions, each naming what failed.
#![allow(clippy::expect_used)]

pub mod checks;
pub mod child;
pub mod key_store;
pub mod opencryptoki;
pub mod p11kit;
pub mod pki;
pub mod report;
pub mod softhsm;
pub mod swtpm;
pub mod tabrmd;
pub mod tinyproxy;
pub mod tls;
pub mod tools;
pub mod tpm2_pkcs11;
pub mod verify;

use std::sync::Arc;

use hsm_core::{CertificateDer, KeyHandle};

/// What a driver hands the conformance suite: a key handle with its certificate chain, the root
/// that chain leads to, and the secrets that must never show up in `Debug` output.
#[derive(Debug)]
pub struct Subject {
    /// A short name for messages, e.g. `"hsm-x509 P-256"`.
    pub name: String,
    /// The handle under test.
    pub key: Arc<dyn KeyHandle>,
    /// The handle's certificate chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The root certificate the chain leads to (the TLS test servers trust it for clients).
    pub trust_anchor: CertificateDer<'static>,
    /// Text that must never appear in `Debug` output: PEM body lines of the private key,
    /// passphrases, PINs, hex or base64 of secret bytes.
    pub secrets: Vec<String>,
    /// `Debug` renderings of the driver's other objects (its attestation, its builder, ...), also
    /// checked for `secrets`.
    pub debug_views: Vec<String>,
}

/// The ways a leaked secret could show up in text: lowercase and uppercase hex, the decimal list
/// `Debug` prints for a byte slice, and base64, for 12-byte windows of `secret` at a quarter and
/// three eighths of its length (inside the private part of PKCS#8 EC, RSA and Ed25519 keys, before
/// any embedded public key). Add them to [`Subject::secrets`].
pub fn secret_renderings(secret: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    for start in [secret.len() / 4, secret.len() * 3 / 8] {
        let window = &secret[start..secret.len().min(start + 12)];
        if window.len() < 8 {
            continue;
        }
        let hex: String = window.iter().map(|b| format!("{b:02x}")).collect();
        out.push(hex.to_uppercase());
        out.push(hex);
        out.push(
            window
                .iter()
                .map(u8::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        );
        out.push(pki::base64_encode(window).trim_end_matches('=').to_owned());
    }
    out
}

/// Instantiates the whole conformance suite as `#[test]` functions, one per check, for a
/// factory expression of type `fn() -> Subject` (a function path or a closure).
///
/// See the crate documentation for a complete example; in short:
/// `mod p256 { hsm_testkit::conformance_tests!(|| crate::subject("p256")); }`
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr) => {
        $crate::conformance_tests!($factory, wrap = |body: &dyn Fn()| body());
    };
    ($factory:expr, wrap = $wrap:expr) => {
        #[test]
        fn sign_round_trip_every_scheme() {
            ($wrap)(&|| {
                $crate::checks::sign_round_trip(&($factory)());
            });
        }
        #[test]
        fn public_key_matches_leaf() {
            ($wrap)(&|| {
                $crate::checks::public_key_matches_leaf(&($factory)());
            });
        }
        #[test]
        fn certificate_signed_through_handle_verifies() {
            ($wrap)(&|| {
                $crate::checks::certificate_through_handle(&($factory)());
            });
        }
        #[test]
        fn csr_signed_through_handle_verifies() {
            ($wrap)(&|| {
                $crate::checks::csr_through_handle(&($factory)());
            });
        }
        #[test]
        fn tls13_mutual_auth_rustls_server() {
            ($wrap)(&|| {
                $crate::checks::tls_rustls(&($factory)(), $crate::tls::Version::Tls13);
            });
        }
        #[test]
        fn tls12_mutual_auth_rustls_server() {
            ($wrap)(&|| {
                $crate::checks::tls_rustls(&($factory)(), $crate::tls::Version::Tls12);
            });
        }
        #[test]
        fn tls13_mutual_auth_openssl_s_server() {
            ($wrap)(&|| {
                $crate::checks::tls_openssl(&($factory)(), $crate::tls::Version::Tls13);
            });
        }
        #[test]
        fn tls12_mutual_auth_openssl_s_server() {
            ($wrap)(&|| {
                $crate::checks::tls_openssl(&($factory)(), $crate::tls::Version::Tls12);
            });
        }
        #[test]
        fn concurrent_signing_8_threads() {
            ($wrap)(&|| {
                $crate::checks::concurrent_signing(&($factory)());
            });
        }
        #[test]
        fn unsupported_schemes_are_typed_errors() {
            ($wrap)(&|| {
                $crate::checks::unsupported_schemes(&($factory)());
            });
        }
        #[test]
        fn debug_output_is_redacted() {
            ($wrap)(&|| {
                $crate::checks::debug_redacted(&($factory)());
            });
        }
    };
}
