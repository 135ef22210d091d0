//! [`KeyStore`] on a token: key pairs generated on the token under a `CKA_LABEL`, their chain
//! kept as `CKO_CERTIFICATE` objects beside them.

use std::sync::Arc;

use cryptoki::object::{AttributeType, ObjectClass};
use hsm_core::key_store::check_chain;
use hsm_core::{
    CertificateDer, Error as CoreError, KeyAlgorithm, KeyHandle, KeyLabel, KeyStore, StoredKey,
};

use crate::identity::chain_from_token;
use crate::objects::{Locator, bytes_attribute, find_all};
use crate::{Error, KeySpec, Pkcs11Key, Pkcs11Uri, Token};

/// The URI naming the objects of `label` on this token.
fn uri(label: &str) -> Pkcs11Uri {
    Pkcs11Uri {
        object: Some(label.to_owned()),
        ..Pkcs11Uri::default()
    }
}

/// The label of the `n`th issuer certificate (1-based) stored with the key `label`.
fn issuer_label(label: &KeyLabel, n: usize) -> String {
    format!("{label}.issuer{n}")
}

fn device(operation: &'static str) -> impl FnOnce(Error) -> CoreError {
    move |e| CoreError::device(operation, e)
}

/// A token is a key store: [`generate`](KeyStore::generate) makes the key pair on the token
/// (`C_GenerateKeyPair`: the private key `CKA_TOKEN`, `CKA_PRIVATE`, `CKA_SENSITIVE`, never
/// `CKA_EXTRACTABLE`, usable only to sign) with the label as `CKA_LABEL`;
/// [`store_chain`](KeyStore::store_chain) stores the leaf as a certificate object with the
/// same label and each issuer as `{label}.issuer{n}`; [`delete`](KeyStore::delete) destroys
/// them all. P-256, P-384, RSA 2048 and 3072 keys.
impl KeyStore for Token {
    fn generate(
        &self,
        label: &KeyLabel,
        algorithm: KeyAlgorithm,
    ) -> Result<Arc<dyn KeyHandle>, CoreError> {
        let spec = match algorithm {
            KeyAlgorithm::EcdsaP256 => KeySpec::EcdsaP256,
            KeyAlgorithm::EcdsaP384 => KeySpec::EcdsaP384,
            KeyAlgorithm::Rsa { bits: 2048 } => KeySpec::Rsa2048,
            KeyAlgorithm::Rsa { bits: 3072 } => KeySpec::Rsa3072,
            _ => return Err(CoreError::CannotGenerate { algorithm }),
        };
        match self.generate_key_pair(&uri(label.as_str()), spec) {
            Ok(key) => Ok(Arc::new(key)),
            Err(Error::AlreadyExists { .. }) => Err(CoreError::KeyExists {
                label: label.to_string(),
            }),
            Err(e) => Err(CoreError::device("generate a key pair on the token", e)),
        }
    }

    fn find(&self, label: &KeyLabel) -> Result<Option<StoredKey>, CoreError> {
        let key = match Pkcs11Key::open(self, &uri(label.as_str())) {
            Ok(key) => key,
            Err(Error::ObjectNotFound { .. }) => return Ok(None),
            Err(e) => return Err(CoreError::device("open a key on the token", e)),
        };
        let locator = Locator {
            label: Some(label.to_string()),
            id: None,
        };
        let chain = match chain_from_token(self, &locator) {
            Ok(chain) => chain,
            Err(Error::ObjectNotFound { .. }) => Vec::new(),
            Err(e) => return Err(CoreError::device("read certificates from the token", e)),
        };
        Ok(Some(StoredKey {
            label: label.clone(),
            key: Arc::new(key),
            chain,
        }))
    }

    fn store_chain(
        &self,
        label: &KeyLabel,
        chain: &[CertificateDer<'static>],
    ) -> Result<(), CoreError> {
        let stored = self.find(label)?.ok_or_else(|| CoreError::NoSuchKey {
            label: label.to_string(),
        })?;
        check_chain(stored.key.as_ref(), chain)?;
        destroy_certificates(self, label).map_err(device("replace certificates on the token"))?;
        for (n, certificate) in chain.iter().enumerate() {
            let name = if n == 0 {
                label.to_string()
            } else {
                issuer_label(label, n)
            };
            self.store_certificate(&uri(&name), certificate)
                .map_err(device("store a certificate on the token"))?;
        }
        Ok(())
    }

    fn delete(&self, label: &KeyLabel) -> Result<bool, CoreError> {
        // Certificates first: a key left without its chain is an unfinished rotation, which
        // the next start cleans up.
        let certificates =
            destroy_certificates(self, label).map_err(device("delete certificates"))?;
        let keys = destroy(
            self,
            label.as_str(),
            &[ObjectClass::PUBLIC_KEY, ObjectClass::PRIVATE_KEY],
        )
        .map_err(device("delete a key pair on the token"))?;
        Ok(certificates + keys > 0)
    }
}

/// Destroys the certificate objects stored for `label` (the leaf and its issuers); returns
/// how many there were.
fn destroy_certificates(token: &Token, label: &KeyLabel) -> Result<usize, Error> {
    let mut destroyed = destroy(token, label.as_str(), &[ObjectClass::CERTIFICATE])?;
    for n in 1.. {
        let gone = destroy(token, &issuer_label(label, n), &[ObjectClass::CERTIFICATE])?;
        if gone == 0 {
            break;
        }
        destroyed += gone;
    }
    Ok(destroyed)
}

/// Destroys every object of these classes labelled `label`; returns how many there were.
fn destroy(token: &Token, label: &str, classes: &[ObjectClass]) -> Result<usize, Error> {
    let inner = &token.inner;
    let (_, session) = inner.rw_session()?;
    let locator = Locator {
        label: Some(label.to_owned()),
        id: None,
    };
    let mut destroyed = 0;
    for class in classes {
        for object in find_all(&session, *class, &locator, &inner.label)? {
            // Only objects whose label is exactly this one (some tokens match prefixes).
            let exact = bytes_attribute(&session, object, AttributeType::Label)
                .is_some_and(|l| l == label.as_bytes());
            if !exact {
                continue;
            }
            session
                .destroy_object(object)
                .map_err(|e| Error::from_cryptoki(e, inner.context(&locator.describe())))?;
            destroyed += 1;
        }
    }
    Ok(destroyed)
}
