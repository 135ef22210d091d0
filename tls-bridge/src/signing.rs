use std::fmt;
use std::sync::Arc;

use hsm_core::{KeyAlgorithm, KeyHandle, SignatureScheme};
use rustls::pki_types::SubjectPublicKeyInfoDer;
use rustls::sign::{Signer, SigningKey};
use rustls::{OtherError, SignatureAlgorithm};

/// A [`KeyHandle`] as a rustls [`SigningKey`]: every TLS signature is made by the handle, so the
/// private key stays in the HSM.
///
/// Scheme choice follows the key's own preference order (for RSA: PSS before PKCS#1 v1.5, which
/// TLS 1.3 forbids anyway; for ECDSA: the curve's own hash), restricted to what the peer offers.
/// A handle failure reaches rustls as [`rustls::Error::Other`] with the `hsm_core::Error` (and its
/// device cause) kept as the source.
pub struct HsmSigningKey {
    key: Arc<dyn KeyHandle>,
}

impl HsmSigningKey {
    /// Wraps a key handle.
    pub fn new(key: Arc<dyn KeyHandle>) -> Self {
        Self { key }
    }

    /// The wrapped handle.
    pub fn key(&self) -> &Arc<dyn KeyHandle> {
        &self.key
    }
}

impl fmt::Debug for HsmSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HsmSigningKey")
            .field("key", &self.key)
            .finish()
    }
}

impl SigningKey for HsmSigningKey {
    fn choose_scheme(&self, offered: &[rustls::SignatureScheme]) -> Option<Box<dyn Signer>> {
        match choose_scheme(self.key.as_ref(), offered) {
            Some(scheme) => Some(Box::new(HsmSigner {
                key: self.key.clone(),
                scheme,
            })),
            None => {
                log::warn!(
                    "{} key can sign none of the schemes the peer offers: {offered:?}",
                    self.key.algorithm()
                );
                None
            }
        }
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(SubjectPublicKeyInfoDer::from(self.key.public_key_der()))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        match self.key.algorithm() {
            KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 => SignatureAlgorithm::ECDSA,
            KeyAlgorithm::Rsa { .. } => SignatureAlgorithm::RSA,
            KeyAlgorithm::Ed25519 => SignatureAlgorithm::ED25519,
            // `KeyAlgorithm` is non-exhaustive; a future algorithm has no rustls mapping yet.
            _ => SignatureAlgorithm::Unknown(0),
        }
    }
}

struct HsmSigner {
    key: Arc<dyn KeyHandle>,
    scheme: SignatureScheme,
}

impl fmt::Debug for HsmSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HsmSigner")
            .field("key", &self.key)
            .field("scheme", &self.scheme)
            .finish()
    }
}

impl Signer for HsmSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.key.sign(self.scheme, message).map_err(|e| {
            log::warn!("TLS signature with {} failed: {e}", self.scheme);
            rustls::Error::Other(OtherError(Arc::new(e)))
        })
    }

    fn scheme(&self) -> rustls::SignatureScheme {
        to_rustls_scheme(self.scheme)
    }
}

/// The scheme a key handle signs with when the peer offers `offered`: the first of the key's own
/// schemes (its preference order) that the peer offers, or `None` when there is none.
pub fn choose_scheme(
    key: &dyn KeyHandle,
    offered: &[rustls::SignatureScheme],
) -> Option<SignatureScheme> {
    key.schemes()
        .iter()
        .copied()
        .find(|&ours| offered.contains(&to_rustls_scheme(ours)))
}

/// The rustls name of an `hsm-core` signature scheme.
pub fn to_rustls_scheme(scheme: SignatureScheme) -> rustls::SignatureScheme {
    use rustls::SignatureScheme as R;
    match scheme {
        SignatureScheme::EcdsaP256Sha256 => R::ECDSA_NISTP256_SHA256,
        SignatureScheme::EcdsaP384Sha384 => R::ECDSA_NISTP384_SHA384,
        SignatureScheme::RsaPkcs1Sha256 => R::RSA_PKCS1_SHA256,
        SignatureScheme::RsaPkcs1Sha384 => R::RSA_PKCS1_SHA384,
        SignatureScheme::RsaPkcs1Sha512 => R::RSA_PKCS1_SHA512,
        SignatureScheme::RsaPssSha256 => R::RSA_PSS_SHA256,
        SignatureScheme::RsaPssSha384 => R::RSA_PSS_SHA384,
        SignatureScheme::RsaPssSha512 => R::RSA_PSS_SHA512,
        SignatureScheme::Ed25519 => R::ED25519,
        // `SignatureScheme` is non-exhaustive; an unknown scheme is never offered by a peer.
        _ => R::Unknown(0),
    }
}
