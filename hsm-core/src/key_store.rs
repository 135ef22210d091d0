//! Key generation: the small contract a driver implements when its backend can make new keys
//! (a PKCS#11 token, a TPM, a key-file folder), so that a device can rotate its key inside
//! the same HSM when its certificate is renewed.
//!
//! The life of a rotated key, as `provisioning` drives it:
//! 1. [`generate`](KeyStore::generate) a new key pair under a new [`KeyLabel`]; the private key
//!    is made inside the backend and never leaves it (PKCS#11: `CKA_SENSITIVE`, not
//!    `CKA_EXTRACTABLE`; TPM: a key under the storage root key, `fixedTPM`);
//! 2. sign a CSR with its handle, have it certified;
//! 3. [`store_chain`](KeyStore::store_chain): keep the issued chain with the key;
//! 4. after a restart, [`find`](KeyStore::find) the key and its chain again by label;
//! 5. [`delete`](KeyStore::delete) the old key once the new one has proven itself.
//!
//! Every step is durable when it returns: a process killed between two steps finds, on the
//! next start, exactly the keys and chains the completed steps made.

use std::fmt::{self, Debug};
use std::sync::Arc;

use rustls_pki_types::CertificateDer;

use crate::{CertifiedKey, Error, KeyAlgorithm, KeyHandle};

/// The longest [`KeyLabel`].
pub const MAX_KEY_LABEL_LEN: usize = 64;

/// The name a key is generated and found under: 1 to [`MAX_KEY_LABEL_LEN`] characters from
/// `A-Z a-z 0-9 . _ -`, not starting with `.` or `-`. Drivers use it as it is (a PKCS#11
/// `CKA_LABEL`, a file name, a TPM key index entry), so it is restricted to what every one of
/// them takes without escaping.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyLabel(String);

impl KeyLabel {
    /// Checks and wraps a label.
    ///
    /// # Errors
    /// [`Error::InvalidKeyLabel`] naming the rule broken.
    pub fn new(label: impl Into<String>) -> Result<Self, Error> {
        let label = label.into();
        let invalid = |reason: String| Err(Error::InvalidKeyLabel { reason });
        if label.is_empty() {
            return invalid("it is empty".into());
        }
        if label.len() > MAX_KEY_LABEL_LEN {
            return invalid(format!(
                "it is {} characters long, more than {MAX_KEY_LABEL_LEN}",
                label.len()
            ));
        }
        if let Some((position, c)) = label
            .chars()
            .enumerate()
            .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return invalid(format!(
                "character {} ({}) is not one of A-Z a-z 0-9 . _ -",
                position + 1,
                c.escape_default()
            ));
        }
        if label.starts_with(['.', '-']) {
            return invalid("it starts with '.' or '-'".into());
        }
        Ok(Self(label))
    }

    /// The label.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Debug for KeyLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyLabel({:?})", self.0)
    }
}

impl std::str::FromStr for KeyLabel {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::new(s)
    }
}

/// A key a [`KeyStore`] holds, found by its label: the handle, and the certificate chain
/// stored with it (leaf first; empty until [`KeyStore::store_chain`] stored one).
#[derive(Clone)]
pub struct StoredKey {
    /// The label it was generated under.
    pub label: KeyLabel,
    /// The key's handle: sign with it; the private key stays in the store.
    pub key: Arc<dyn KeyHandle>,
    /// The chain stored with it, leaf first; empty if none was stored.
    pub chain: Vec<CertificateDer<'static>>,
}

impl StoredKey {
    /// The key with its chain as an X.509 identity (its registration id is the leaf's common
    /// name).
    ///
    /// # Errors
    /// [`Error::Certificate`] when no chain is stored or it does not fit the key.
    pub fn certified(&self) -> Result<CertifiedKey, Error> {
        CertifiedKey::new(self.key.clone(), self.chain.clone())
    }
}

impl Debug for StoredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredKey")
            .field("label", &self.label)
            .field("key", &self.key)
            .field("certificates", &self.chain.len())
            .finish()
    }
}

/// A backend that can make keys: generate a key pair under a label, find it again, keep a
/// certificate chain with it, delete it. Implemented by drivers whose backend makes keys
/// (hsm-pkcs11, hsm-tpm, hsm-x509's key folder); a DICE device cannot (its keys follow its
/// firmware).
///
/// Every method is synchronous and may block on the device (call it from a blocking task in
/// async code). Each one is durable when it returns. Implementations are checked by
/// `hsm-testkit`'s `key_store_conformance_tests!`.
pub trait KeyStore: Debug + Send + Sync {
    /// Generates a new key pair of this algorithm under `label`, inside the backend: the
    /// private key can sign and can never be read out.
    ///
    /// # Errors
    /// [`Error::KeyExists`] when a key with this label exists; [`Error::CannotGenerate`]
    /// when the backend cannot make keys of this algorithm; [`Error::Device`] when it fails.
    fn generate(
        &self,
        label: &KeyLabel,
        algorithm: KeyAlgorithm,
    ) -> Result<Arc<dyn KeyHandle>, Error>;

    /// The key under `label` with its stored chain; `None` when there is none.
    ///
    /// # Errors
    /// [`Error::Device`] when the backend fails or what it holds under the label is not a
    /// usable key.
    fn find(&self, label: &KeyLabel) -> Result<Option<StoredKey>, Error>;

    /// Keeps `chain` (leaf first) with the key under `label`, replacing a chain stored
    /// before.
    ///
    /// # Errors
    /// [`Error::NoSuchKey`]; [`Error::Certificate`] when the chain is empty, its leaf is
    /// malformed or certifies another key (checked with [`check_chain`]);
    /// [`Error::Device`].
    fn store_chain(&self, label: &KeyLabel, chain: &[CertificateDer<'static>])
    -> Result<(), Error>;

    /// Deletes the key under `label` and its chain. `Ok(false)` when there was none.
    ///
    /// # Errors
    /// [`Error::Device`] when the backend fails.
    fn delete(&self, label: &KeyLabel) -> Result<bool, Error>;
}

/// `Ok(())` when `chain`'s leaf certifies `key` (the [`CertifiedKey`] checks, without the
/// common name): what [`KeyStore::store_chain`] checks before storing.
///
/// # Errors
/// [`Error::Certificate`] for an empty chain, a malformed leaf, or a leaf for another key.
pub fn check_chain(key: &dyn KeyHandle, chain: &[CertificateDer<'static>]) -> Result<(), Error> {
    CertifiedKey::check_leaf(key, chain)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn labels() {
        for good in ["a", "device-key.2", "K_1", &"x".repeat(MAX_KEY_LABEL_LEN)] {
            assert_eq!(KeyLabel::new(good).unwrap().as_str(), good);
        }
        for (bad, says) in [
            ("", "empty"),
            ("-a", "starts with"),
            (".a", "starts with"),
            ("a/b", "character 2 (/)"),
            ("a b", "character 2 ( )"),
            ("é", "character 1 (\\u{e9})"),
            ("a\x1b", "character 2 (\\u{1b})"),
            (&"x".repeat(MAX_KEY_LABEL_LEN + 1), "65 characters"),
        ] {
            let error = KeyLabel::new(bad).unwrap_err().to_string();
            assert!(error.contains(says), "{bad:?}: {error}");
            assert!(error.starts_with("invalid key label: "), "{error}");
        }
        assert_eq!(
            format!("{:?}", KeyLabel::new("k").unwrap()),
            "KeyLabel(\"k\")"
        );
    }
}
