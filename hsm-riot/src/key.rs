//! An ECDSA P-256 key derived by the DICE engine and held in memory, behind [`KeyHandle`].

use std::fmt;

use hsm_core::{KeyAlgorithm, KeyHandle, SignatureScheme};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::EncodePublicKey as _;
use signature::Signer as _;

/// A DICE-derived P-256 private key. Signing is deterministic (RFC 6979); the scalar is
/// zeroized on drop and never printed. The Alias key is handed out as this type; the DeviceID key
/// never leaves the crate.
pub struct DiceKey {
    key: SigningKey,
    spki: Vec<u8>,
}

impl DiceKey {
    pub(crate) fn new(key: SigningKey) -> Self {
        // Encoding a valid P-256 point as SPKI cannot fail; an empty SPKI would only make every
        // key comparison fail loudly.
        let spki = VerifyingKey::from(&key)
            .to_public_key_der()
            .map(|d| d.as_bytes().to_vec())
            .unwrap_or_default();
        Self { key, spki }
    }

    /// The uncompressed public point (65 bytes, `04 || x || y`).
    pub fn public_point(&self) -> Vec<u8> {
        VerifyingKey::from(&self.key)
            .to_sec1_point(false)
            .as_bytes()
            .to_vec()
    }
}

impl KeyHandle for DiceKey {
    fn algorithm(&self) -> KeyAlgorithm {
        KeyAlgorithm::EcdsaP256
    }

    fn public_key_der(&self) -> &[u8] {
        &self.spki
    }

    fn sign(&self, scheme: SignatureScheme, message: &[u8]) -> Result<Vec<u8>, hsm_core::Error> {
        hsm_core::check_scheme(self, scheme)?;
        let signature: Signature = self.key.sign(message);
        Ok(signature.to_der().as_bytes().to_vec())
    }
}

impl fmt::Debug for DiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiceKey")
            .field("algorithm", &KeyAlgorithm::EcdsaP256)
            .field("private_key", &"[redacted]")
            .finish()
    }
}
