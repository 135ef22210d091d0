use std::fmt;
use std::sync::{Arc, Mutex};

use spki::der::Decode as _;

use crate::{Error, KeyAlgorithm, KeyHandle, SignatureScheme};

/// An rcgen signing key backed by a [`KeyHandle`]: certificates and PKCS#10 CSRs that rcgen
/// builds are signed inside the HSM, with a key rcgen never sees.
///
/// Requires the `rcgen` feature. Schemes: ECDSA with the curve's hash, RSA PKCS#1 v1.5 with
/// SHA-256, Ed25519.
///
/// rcgen's error for a failed remote signature carries no cause, so the handle's error is logged
/// (at `warn`) before it is mapped to `rcgen::Error::RemoteKeyError`, and kept: after rcgen
/// returns that error, [`take_error`](Self::take_error) gives the driver's own.
pub struct RcgenSigner {
    key: Arc<dyn KeyHandle>,
    scheme: SignatureScheme,
    algorithm: &'static rcgen::SignatureAlgorithm,
    public_key: Vec<u8>,
    last_error: Mutex<Option<Error>>,
}

impl RcgenSigner {
    /// Wraps a key handle.
    ///
    /// # Errors
    /// [`Error::UnsupportedScheme`] when the handle cannot sign with the scheme rcgen needs for its
    /// key type, and
    /// [`Error::Device`] when the handle's public key is not a valid `SubjectPublicKeyInfo`.
    pub fn new(key: Arc<dyn KeyHandle>) -> Result<Self, Error> {
        let (scheme, algorithm) = match key.algorithm() {
            KeyAlgorithm::EcdsaP256 => (
                SignatureScheme::EcdsaP256Sha256,
                &rcgen::PKCS_ECDSA_P256_SHA256,
            ),
            KeyAlgorithm::EcdsaP384 => (
                SignatureScheme::EcdsaP384Sha384,
                &rcgen::PKCS_ECDSA_P384_SHA384,
            ),
            KeyAlgorithm::Rsa { .. } => (SignatureScheme::RsaPkcs1Sha256, &rcgen::PKCS_RSA_SHA256),
            KeyAlgorithm::Ed25519 => (SignatureScheme::Ed25519, &rcgen::PKCS_ED25519),
        };
        crate::check_scheme(key.as_ref(), scheme)?;
        let public_key = spki::SubjectPublicKeyInfoRef::from_der(key.public_key_der())
            .map_err(|e| Error::device("parse the handle's public key", e))?
            .subject_public_key
            .raw_bytes()
            .to_vec();
        Ok(Self {
            key,
            scheme,
            algorithm,
            public_key,
            last_error: Mutex::new(None),
        })
    }

    /// The scheme certificates and CSRs are signed with.
    pub fn scheme(&self) -> SignatureScheme {
        self.scheme
    }

    /// The handle's error behind the last `rcgen::Error::RemoteKeyError`, if any (taken, so a
    /// second call returns `None`).
    pub fn take_error(&self) -> Option<Error> {
        self.last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

impl fmt::Debug for RcgenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RcgenSigner")
            .field("key", &self.key)
            .field("scheme", &self.scheme)
            .finish()
    }
}

impl rcgen::PublicKeyData for RcgenSigner {
    fn der_bytes(&self) -> &[u8] {
        &self.public_key
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.algorithm
    }
}

impl rcgen::SigningKey for RcgenSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.key.sign(self.scheme, message).map_err(|e| {
            log::warn!(
                "certificate signature with {} failed: {e}: {:?}",
                self.scheme,
                std::error::Error::source(&e)
            );
            *self
                .last_error
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e);
            rcgen::Error::RemoteKeyError
        })
    }
}
