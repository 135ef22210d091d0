//! A symmetric key on the token for DPS SAS tokens: HMAC-SHA256 inside the token.

use std::fmt;

use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use hsm_core::{RegistrationId, SecretBytes, SymmetricKeyAttestation};

use crate::objects::{CachedObject, Locator, find_all, find_one};
use crate::{Error, Pkcs11Uri, Token};

/// A generic secret key on the token, used with `CKM_SHA256_HMAC`: symmetric-key attestation
/// where the SAS key never leaves the token.
pub struct Pkcs11HmacKey {
    token: Token,
    registration_id: RegistrationId,
    object: CachedObject,
}

impl fmt::Debug for Pkcs11HmacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11HmacKey")
            .field("token", &self.token.label())
            .field("object", &self.object.locator.describe())
            .field("registration_id", &self.registration_id)
            .finish()
    }
}

impl Pkcs11HmacKey {
    /// Opens the secret key the URI names, for `registration_id`.
    ///
    /// # Errors
    /// [`Error::UnsupportedMechanism`] when the token lacks `CKM_SHA256_HMAC`,
    /// [`Error::ObjectNotFound`], [`Error::AmbiguousObject`], [`Error::Pkcs11`].
    pub fn open(
        token: &Token,
        uri: &Pkcs11Uri,
        registration_id: RegistrationId,
    ) -> Result<Self, Error> {
        if !token.offers(MechanismType::SHA256_HMAC) {
            return Err(Error::UnsupportedMechanism {
                mechanism: "CKM_SHA256_HMAC".into(),
                token: token.label().to_owned(),
            });
        }
        let locator = Locator::from_uri(uri)?;
        let inner = &token.inner;
        let (generation, object) =
            inner.with_session("open secret key", |session, generation| {
                let object = find_one(
                    session,
                    ObjectClass::SECRET_KEY,
                    "secret key",
                    &locator,
                    &inner.label,
                )?;
                Ok((generation, object))
            })?;
        Ok(Self {
            token: token.clone(),
            registration_id,
            object: CachedObject::new(
                locator,
                ObjectClass::SECRET_KEY,
                "secret key",
                generation,
                object,
            ),
        })
    }

    /// Puts `key` on the token once, as a sensitive, non-extractable generic secret usable only
    /// to sign (HMAC), with the URI's label and id; then opens it.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] when an object with that label or id is there already,
    /// [`Error::Pkcs11`] when the token refuses the object.
    pub fn import(
        token: &Token,
        uri: &Pkcs11Uri,
        registration_id: RegistrationId,
        key: &SecretBytes,
    ) -> Result<Self, Error> {
        let locator = Locator::from_uri(uri)?;
        let inner = &token.inner;
        let (_, session) = inner.rw_session()?;
        if !find_all(&session, ObjectClass::SECRET_KEY, &locator, &inner.label)?.is_empty() {
            return Err(Error::AlreadyExists {
                selector: locator.describe(),
                token: inner.label.clone(),
            });
        }
        let mut template = secret_key_template(key);
        if let Some(label) = &locator.label {
            template.push(Attribute::Label(label.as_bytes().to_vec()));
        }
        if let Some(id) = &locator.id {
            template.push(Attribute::Id(id.clone()));
        }
        let created = session.create_object(&template);
        // The template held the key bytes: wipe them whatever happened.
        for attribute in &mut template {
            if let Attribute::Value(v) = attribute {
                zeroize::Zeroize::zeroize(v);
            }
        }
        created.map_err(|e| Error::from_cryptoki(e, inner.context(&locator.describe())))?;
        drop(session);
        Self::open(token, uri, registration_id)
    }
}

/// The attributes of every secret key this crate creates.
pub(crate) fn secret_key_template(key: &SecretBytes) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Verify(true),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
        Attribute::Value(key.expose().to_vec()),
    ]
}

impl SymmetricKeyAttestation for Pkcs11HmacKey {
    fn registration_id(&self) -> &RegistrationId {
        &self.registration_id
    }

    fn hmac_sha256(&self, data: &[u8]) -> Result<[u8; 32], hsm_core::Error> {
        let mac = self
            .object
            .sign(&self.token.inner, &Mechanism::Sha256Hmac, data, 32, false)
            .map_err(|e| hsm_core::Error::device("C_Sign", e))?;
        mac.try_into().map_err(|_| {
            hsm_core::Error::device(
                "C_Sign",
                Error::UnexpectedOutput("an HMAC-SHA256 that is not 32 bytes"),
            )
        })
    }
}
