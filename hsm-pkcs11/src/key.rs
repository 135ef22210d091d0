//! A private key on the token as an `hsm-core` key handle.

use std::borrow::Cow;
use std::fmt;

use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use hsm_core::{KeyAlgorithm, KeyHandle, SignatureScheme};
use sha2::{Digest as _, Sha256, Sha384};

use crate::objects::{CachedObject, Locator, bytes_attribute, find_all, find_one};
use crate::public_key::{certificate_spki, ec_algorithm, ec_spki, rsa_bits, rsa_spki};
use crate::{Error, Pkcs11Uri, Token};

const RSA_PKCS1_ONLY: [SignatureScheme; 3] = [
    SignatureScheme::RsaPkcs1Sha256,
    SignatureScheme::RsaPkcs1Sha384,
    SignatureScheme::RsaPkcs1Sha512,
];

/// A private key on a PKCS#11 token, used through [`KeyHandle`]; its value is never read.
///
/// The object handle is looked up once and cached; it is looked up again only after the token
/// reconnects or reports the handle invalid. ECDSA signs with `CKM_ECDSA_SHA256/384` when the
/// token offers them, else with `CKM_ECDSA` over a digest computed here; RSA with
/// `CKM_SHA*_RSA_PKCS` and `CKM_SHA*_RSA_PKCS_PSS` (PSS only where offered); Ed25519 with
/// `CKM_EDDSA` where offered.
pub struct Pkcs11Key {
    token: Token,
    algorithm: KeyAlgorithm,
    spki: Vec<u8>,
    schemes: &'static [SignatureScheme],
    ecdsa_hash_on_token: bool,
    signature_len: usize,
    object: CachedObject,
}

impl fmt::Debug for Pkcs11Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Key")
            .field("token", &self.token.label())
            .field("object", &self.object.locator.describe())
            .field("algorithm", &self.algorithm)
            .finish()
    }
}

impl Pkcs11Key {
    /// Opens the private key the URI names (`object=` and/or `id=`) on `token`.
    ///
    /// The public key comes from the private key's `CKA_PUBLIC_KEY_INFO`, else the public-key
    /// object with the same id/label, else the certificate object with the same id/label.
    ///
    /// # Errors
    /// [`Error::NoObjectSelector`], [`Error::ObjectNotFound`], [`Error::AmbiguousObject`],
    /// [`Error::UnsupportedKeyType`], [`Error::UnsupportedCurve`],
    /// [`Error::UnsupportedMechanism`], [`Error::PublicKeyNotFound`] or [`Error::Pkcs11`].
    pub fn open(token: &Token, uri: &Pkcs11Uri) -> Result<Self, Error> {
        Self::open_with_spki(token, uri, None)
    }

    /// As [`open`](Self::open), with the public key given (for example from a certificate file)
    /// when the token holds neither a public-key object nor a certificate.
    ///
    /// # Errors
    /// As for [`open`](Self::open).
    pub fn open_with_spki(
        token: &Token,
        uri: &Pkcs11Uri,
        spki: Option<Vec<u8>>,
    ) -> Result<Self, Error> {
        let locator = Locator::from_uri(uri)?;
        let inner = &token.inner;
        inner.with_session("open private key", |session, generation| {
            let object = find_one(
                session,
                ObjectClass::PRIVATE_KEY,
                "private key",
                &locator,
                &inner.label,
            )?;
            let (algorithm, bits_or_scalar) = key_algorithm(session, object)?;
            let public = match &spki {
                Some(spki) => spki.clone(),
                None => find_spki(session, object, &locator, algorithm, &inner.label)?,
            };
            let (schemes, signature_len) = match algorithm {
                KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 => {
                    require(token, MechanismType::ECDSA, "CKM_ECDSA")?;
                    (algorithm.schemes(), 2 * bits_or_scalar)
                }
                KeyAlgorithm::Rsa { .. } => {
                    require(token, MechanismType::SHA256_RSA_PKCS, "CKM_SHA256_RSA_PKCS")?;
                    let pss = token.offers(MechanismType::SHA256_RSA_PKCS_PSS);
                    let schemes: &'static [SignatureScheme] = if pss {
                        algorithm.schemes()
                    } else {
                        &RSA_PKCS1_ONLY
                    };
                    (schemes, bits_or_scalar.div_ceil(8))
                }
                _ => {
                    require(token, MechanismType::EDDSA, "CKM_EDDSA")?;
                    (algorithm.schemes(), 64)
                }
            };
            let ecdsa_hash_on_token = match algorithm {
                KeyAlgorithm::EcdsaP256 => token.offers(MechanismType::ECDSA_SHA256),
                KeyAlgorithm::EcdsaP384 => token.offers(MechanismType::ECDSA_SHA384),
                _ => false,
            };
            Ok(Self {
                token: token.clone(),
                algorithm,
                spki: public,
                schemes,
                ecdsa_hash_on_token,
                signature_len,
                object: CachedObject::new(
                    locator.clone(),
                    ObjectClass::PRIVATE_KEY,
                    "private key",
                    generation,
                    object,
                ),
            })
        })
    }

    /// The token the key lives on.
    pub fn token(&self) -> &Token {
        &self.token
    }

    /// The key's `CKA_ID`, when the URI gave one.
    pub fn id(&self) -> Option<&[u8]> {
        self.object.locator.id.as_deref()
    }

    /// The key's `CKA_LABEL`, when the URI gave one.
    pub fn label(&self) -> Option<&str> {
        self.object.locator.label.as_deref()
    }

    fn mechanism<'a>(
        &self,
        scheme: SignatureScheme,
        message: &'a [u8],
    ) -> (Mechanism<'static>, Cow<'a, [u8]>) {
        use SignatureScheme::*;
        let pss = |hash: MechanismType, mgf: PkcsMgfType, len: u64| PkcsPssParams {
            hash_alg: hash,
            mgf,
            s_len: len.into(),
        };
        match scheme {
            EcdsaP256Sha256 if self.ecdsa_hash_on_token => (Mechanism::EcdsaSha256, message.into()),
            EcdsaP256Sha256 => (Mechanism::Ecdsa, Sha256::digest(message).to_vec().into()),
            EcdsaP384Sha384 if self.ecdsa_hash_on_token => (Mechanism::EcdsaSha384, message.into()),
            EcdsaP384Sha384 => (Mechanism::Ecdsa, Sha384::digest(message).to_vec().into()),
            RsaPkcs1Sha256 => (Mechanism::Sha256RsaPkcs, message.into()),
            RsaPkcs1Sha384 => (Mechanism::Sha384RsaPkcs, message.into()),
            RsaPkcs1Sha512 => (Mechanism::Sha512RsaPkcs, message.into()),
            RsaPssSha256 => (
                Mechanism::Sha256RsaPkcsPss(pss(
                    MechanismType::SHA256,
                    PkcsMgfType::MGF1_SHA256,
                    32,
                )),
                message.into(),
            ),
            RsaPssSha384 => (
                Mechanism::Sha384RsaPkcsPss(pss(
                    MechanismType::SHA384,
                    PkcsMgfType::MGF1_SHA384,
                    48,
                )),
                message.into(),
            ),
            RsaPssSha512 => (
                Mechanism::Sha512RsaPkcsPss(pss(
                    MechanismType::SHA512,
                    PkcsMgfType::MGF1_SHA512,
                    64,
                )),
                message.into(),
            ),
            _ => (
                Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                message.into(),
            ),
        }
    }
}

impl KeyHandle for Pkcs11Key {
    fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    fn public_key_der(&self) -> &[u8] {
        &self.spki
    }

    fn schemes(&self) -> &'static [SignatureScheme] {
        self.schemes
    }

    fn sign(&self, scheme: SignatureScheme, message: &[u8]) -> Result<Vec<u8>, hsm_core::Error> {
        hsm_core::check_scheme(self, scheme)?;
        let (mechanism, data) = self.mechanism(scheme, message);
        let raw = self
            .object
            .sign(&self.token.inner, &mechanism, &data, self.signature_len)
            .map_err(|e| hsm_core::Error::device("C_Sign", e))?;
        match self.algorithm {
            KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 => {
                hsm_core::signature::ecdsa_raw_to_der(self.algorithm, &raw)
            }
            _ => Ok(raw),
        }
    }
}

fn require(token: &Token, mechanism: MechanismType, name: &str) -> Result<(), Error> {
    if token.offers(mechanism) {
        Ok(())
    } else {
        Err(Error::UnsupportedMechanism {
            mechanism: name.to_owned(),
            token: token.label().to_owned(),
        })
    }
}

/// The key's algorithm and its size: the scalar length in bytes for EC, the modulus length in
/// bits for RSA.
fn key_algorithm(session: &Session, object: ObjectHandle) -> Result<(KeyAlgorithm, usize), Error> {
    let attributes = session
        .get_attributes(object, &[AttributeType::KeyType])
        .map_err(|e| Error::from_cryptoki(e, "read CKA_KEY_TYPE"))?;
    let key_type = attributes
        .into_iter()
        .find_map(|a| match a {
            Attribute::KeyType(t) => Some(t),
            _ => None,
        })
        .ok_or(Error::UnsupportedKeyType("(none)".into()))?;
    if key_type == KeyType::EC || key_type == KeyType::EC_EDWARDS {
        let params = bytes_attribute(session, object, AttributeType::EcParams)
            .ok_or(Error::MalformedPublicKey("CKA_EC_PARAMS"))?;
        let algorithm = ec_algorithm(&params)?;
        let scalar = algorithm.ecdsa_scalar_len().unwrap_or(32);
        Ok((algorithm, scalar))
    } else if key_type == KeyType::RSA {
        let modulus = bytes_attribute(session, object, AttributeType::Modulus)
            .ok_or(Error::MalformedPublicKey("CKA_MODULUS"))?;
        let bits = rsa_bits(&modulus);
        let bits16 =
            u16::try_from(bits).map_err(|_| Error::UnsupportedKeyType(format!("RSA-{bits}")))?;
        if !(KeyAlgorithm::MIN_RSA_BITS..=KeyAlgorithm::MAX_RSA_BITS).contains(&bits16) {
            return Err(Error::UnsupportedKeyType(format!("RSA-{bits}")));
        }
        Ok((KeyAlgorithm::Rsa { bits: bits16 }, bits))
    } else {
        Err(Error::UnsupportedKeyType(key_type.to_string()))
    }
}

/// The public key: `CKA_PUBLIC_KEY_INFO`, the public-key object, or the certificate object.
fn find_spki(
    session: &Session,
    private: ObjectHandle,
    locator: &Locator,
    algorithm: KeyAlgorithm,
    token: &str,
) -> Result<Vec<u8>, Error> {
    if let Some(info) = bytes_attribute(session, private, AttributeType::PublicKeyInfo) {
        return Ok(info);
    }
    // Objects of a pair share their CKA_ID; fall back to the label when the URI has no id.
    let pair = Locator {
        label: if locator.id.is_some() {
            None
        } else {
            locator.label.clone()
        },
        id: locator
            .id
            .clone()
            .or_else(|| bytes_attribute(session, private, AttributeType::Id)),
    };
    if let [public] = find_all(session, ObjectClass::PUBLIC_KEY, &pair, token)?.as_slice() {
        let spki = match algorithm {
            KeyAlgorithm::Rsa { .. } => {
                let modulus = bytes_attribute(session, *public, AttributeType::Modulus);
                let exponent = bytes_attribute(session, *public, AttributeType::PublicExponent);
                match (modulus, exponent) {
                    (Some(m), Some(e)) => Some(rsa_spki(&m, &e)?),
                    _ => None,
                }
            }
            _ => bytes_attribute(session, *public, AttributeType::EcPoint)
                .map(|point| ec_spki(algorithm, &point))
                .transpose()?,
        };
        if let Some(spki) = spki {
            return Ok(spki);
        }
    }
    for certificate in find_all(session, ObjectClass::CERTIFICATE, &pair, token)? {
        if let Some(spki) = bytes_attribute(session, certificate, AttributeType::Value)
            .and_then(|der| certificate_spki(&der))
        {
            return Ok(spki);
        }
    }
    Err(Error::PublicKeyNotFound {
        selector: locator.describe(),
    })
}
