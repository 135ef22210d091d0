use std::fmt::Debug;

use crate::{Error, KeyAlgorithm, SignatureScheme};

/// An opaque handle to a private key that lives in an HSM, a token, a TPM or a key store.
///
/// The framework can *use* the key (sign with it) but never *see* it: there is no method that
/// returns private key material, and drivers must not add one.
///
/// Handles are synchronous (rustls and rcgen call them synchronously; PKCS#11 and TSS are
/// blocking FFI), dyn-compatible and shared as `Arc<dyn KeyHandle>` across threads.
///
/// # Signature contract
/// [`sign`](Self::sign) takes the **unhashed** message and returns what TLS and X.509 expect:
/// - ECDSA: a DER `Ecdsa-Sig-Value` (`SEQUENCE { r INTEGER, s INTEGER }`). Backends that produce
///   raw `r||s` convert with [`signature::ecdsa_raw_to_der`](crate::signature::ecdsa_raw_to_der).
/// - RSA: the PKCS#1 v1.5 or PSS signature, as long as the modulus.
/// - Ed25519: the 64-byte signature.
pub trait KeyHandle: Debug + Send + Sync {
    /// The key's algorithm; it fixes which [`SignatureScheme`]s the key can produce.
    fn algorithm(&self) -> KeyAlgorithm;

    /// The public key as a DER `SubjectPublicKeyInfo`.
    fn public_key_der(&self) -> &[u8];

    /// Signs `message` (unhashed) with `scheme`.
    ///
    /// # Errors
    /// [`Error::UnsupportedScheme`] when the key cannot sign with `scheme`;
    /// [`Error::Device`] when the backend fails, with the backend's error as its source.
    fn sign(&self, scheme: SignatureScheme, message: &[u8]) -> Result<Vec<u8>, Error>;

    /// The schemes this key can sign with, in order of preference.
    fn schemes(&self) -> &'static [SignatureScheme] {
        self.algorithm().schemes()
    }
}

/// `Ok(())` when `key` can sign with `scheme`: the scheme is among the key's
/// [`schemes`](KeyHandle::schemes) (which a driver narrows to what its backend offers, never
/// widens beyond the algorithm's). Drivers call this first in [`KeyHandle::sign`].
///
/// # Errors
/// [`Error::UnsupportedScheme`] naming the key's algorithm and the scheme.
pub fn check_scheme<K: KeyHandle + ?Sized>(key: &K, scheme: SignatureScheme) -> Result<(), Error> {
    if key.schemes().contains(&scheme) && key.algorithm().supports(scheme) {
        Ok(())
    } else {
        Err(Error::UnsupportedScheme {
            algorithm: key.algorithm(),
            scheme,
        })
    }
}
