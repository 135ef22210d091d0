//! A private key on the token as an `hsm-core` key handle.

use std::borrow::Cow;
use std::fmt;

use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use hsm_core::{KeyAlgorithm, KeyHandle, SignatureScheme};
use sha2::{Digest as _, Sha256, Sha384, Sha512};

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
/// reconnects or reports the handle invalid. Each scheme signs with the hashing mechanism when
/// the token offers it (`CKM_ECDSA_SHA256/384`, `CKM_SHA*_RSA_PKCS`, `CKM_SHA*_RSA_PKCS_PSS`),
/// else with the raw one over a digest computed here (`CKM_ECDSA`; `CKM_RSA_PKCS` over a
/// DigestInfo; `CKM_RSA_PKCS_PSS`); PSS only where either is offered; Ed25519 with `CKM_EDDSA`.
pub struct Pkcs11Key {
    token: Token,
    algorithm: KeyAlgorithm,
    spki: Vec<u8>,
    schemes: &'static [SignatureScheme],
    /// The schemes whose hashing mechanism the token offers; the others hash here.
    hashed_on_token: Vec<SignatureScheme>,
    signature_len: usize,
    /// `CKA_ALWAYS_AUTHENTICATE`: each signature needs a context-specific login.
    always_authenticate: bool,
    object: CachedObject,
}

impl fmt::Debug for Pkcs11Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Key")
            .field("token", &self.token.label())
            .field("object", &self.object.locator.describe())
            .field("algorithm", &self.algorithm)
            .field("always_authenticate", &self.always_authenticate)
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
            // What the token offers decides how each scheme is signed: the hash on the token
            // (CKM_ECDSA_SHA256, CKM_SHA256_RSA_PKCS, as TPM-backed tokens offer) or here (raw
            // CKM_ECDSA, all SoftHSM2 has; CKM_RSA_PKCS, all opencryptoki's soft token has); a
            // scheme with neither cannot be signed.
            let offered = |scheme: SignatureScheme| {
                let (hashed, raw) = mechanisms(scheme);
                (token.offers(hashed), token.offers(raw))
            };
            let hashed_on_token: Vec<SignatureScheme> = algorithm
                .schemes()
                .iter()
                .copied()
                .filter(|s| offered(*s).0)
                .collect();
            let usable = |scheme: SignatureScheme| {
                let (hashed, raw) = offered(scheme);
                hashed || raw
            };
            let missing = |schemes: &[SignatureScheme]| {
                schemes.iter().find(|s| !usable(**s)).map(|s| {
                    let (hashed, raw) = mechanisms(*s);
                    Error::UnsupportedMechanism {
                        mechanism: format!("{hashed} or {raw}"),
                        token: token.label().to_owned(),
                    }
                })
            };
            let (schemes, signature_len) = match algorithm {
                KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 => {
                    if let Some(e) = missing(algorithm.schemes()) {
                        return Err(e);
                    }
                    (algorithm.schemes(), 2 * bits_or_scalar)
                }
                KeyAlgorithm::Rsa { .. } => {
                    if let Some(e) = missing(&RSA_PKCS1_ONLY) {
                        return Err(e);
                    }
                    let schemes: &'static [SignatureScheme] =
                        if missing(algorithm.schemes()).is_none() {
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
            let always_authenticate = session
                .get_attributes(object, &[AttributeType::AlwaysAuthenticate])
                .ok()
                .into_iter()
                .flatten()
                .any(|a| matches!(a, Attribute::AlwaysAuthenticate(true)));
            Ok(Self {
                token: token.clone(),
                algorithm,
                spki: public,
                schemes,
                hashed_on_token,
                signature_len,
                always_authenticate,
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
        let pss256 = || pss(MechanismType::SHA256, PkcsMgfType::MGF1_SHA256, 32);
        let pss384 = || pss(MechanismType::SHA384, PkcsMgfType::MGF1_SHA384, 48);
        let pss512 = || pss(MechanismType::SHA512, PkcsMgfType::MGF1_SHA512, 64);
        let whole: Cow<'a, [u8]> = message.into();
        if self.hashed_on_token.contains(&scheme) {
            let mechanism = match scheme {
                EcdsaP256Sha256 => Mechanism::EcdsaSha256,
                EcdsaP384Sha384 => Mechanism::EcdsaSha384,
                RsaPkcs1Sha256 => Mechanism::Sha256RsaPkcs,
                RsaPkcs1Sha384 => Mechanism::Sha384RsaPkcs,
                RsaPkcs1Sha512 => Mechanism::Sha512RsaPkcs,
                RsaPssSha256 => Mechanism::Sha256RsaPkcsPss(pss256()),
                RsaPssSha384 => Mechanism::Sha384RsaPkcsPss(pss384()),
                RsaPssSha512 => Mechanism::Sha512RsaPkcsPss(pss512()),
                _ => Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
            };
            return (mechanism, whole);
        }
        let digest_info = |prefix: &[u8], digest: &[u8]| [prefix, digest].concat().into();
        match scheme {
            EcdsaP256Sha256 => (Mechanism::Ecdsa, Sha256::digest(message).to_vec().into()),
            EcdsaP384Sha384 => (Mechanism::Ecdsa, Sha384::digest(message).to_vec().into()),
            RsaPkcs1Sha256 => (
                Mechanism::RsaPkcs,
                digest_info(&DIGEST_INFO_SHA256, &Sha256::digest(message)),
            ),
            RsaPkcs1Sha384 => (
                Mechanism::RsaPkcs,
                digest_info(&DIGEST_INFO_SHA384, &Sha384::digest(message)),
            ),
            RsaPkcs1Sha512 => (
                Mechanism::RsaPkcs,
                digest_info(&DIGEST_INFO_SHA512, &Sha512::digest(message)),
            ),
            RsaPssSha256 => (
                Mechanism::RsaPkcsPss(pss256()),
                Sha256::digest(message).to_vec().into(),
            ),
            RsaPssSha384 => (
                Mechanism::RsaPkcsPss(pss384()),
                Sha384::digest(message).to_vec().into(),
            ),
            RsaPssSha512 => (
                Mechanism::RsaPkcsPss(pss512()),
                Sha512::digest(message).to_vec().into(),
            ),
            _ => (
                Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                whole,
            ),
        }
    }
}

/// The DER DigestInfo prefixes (RFC 8017, section 9.2, note 1) that `CKM_RSA_PKCS` needs before
/// a digest computed here.
const DIGEST_INFO_SHA256: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];
const DIGEST_INFO_SHA384: [u8; 19] = [
    0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05,
    0x00, 0x04, 0x30,
];
const DIGEST_INFO_SHA512: [u8; 19] = [
    0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05,
    0x00, 0x04, 0x40,
];

/// A scheme's mechanisms: the one that hashes on the token, and the raw one that signs a digest
/// computed here (the same for Ed25519, which has no raw form).
fn mechanisms(scheme: SignatureScheme) -> (MechanismType, MechanismType) {
    use SignatureScheme::*;
    match scheme {
        EcdsaP256Sha256 => (MechanismType::ECDSA_SHA256, MechanismType::ECDSA),
        EcdsaP384Sha384 => (MechanismType::ECDSA_SHA384, MechanismType::ECDSA),
        RsaPkcs1Sha256 => (MechanismType::SHA256_RSA_PKCS, MechanismType::RSA_PKCS),
        RsaPkcs1Sha384 => (MechanismType::SHA384_RSA_PKCS, MechanismType::RSA_PKCS),
        RsaPkcs1Sha512 => (MechanismType::SHA512_RSA_PKCS, MechanismType::RSA_PKCS),
        RsaPssSha256 => (
            MechanismType::SHA256_RSA_PKCS_PSS,
            MechanismType::RSA_PKCS_PSS,
        ),
        RsaPssSha384 => (
            MechanismType::SHA384_RSA_PKCS_PSS,
            MechanismType::RSA_PKCS_PSS,
        ),
        RsaPssSha512 => (
            MechanismType::SHA512_RSA_PKCS_PSS,
            MechanismType::RSA_PKCS_PSS,
        ),
        _ => (MechanismType::EDDSA, MechanismType::EDDSA),
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
            .sign(
                &self.token.inner,
                &mechanism,
                &data,
                self.signature_len,
                self.always_authenticate,
            )
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
