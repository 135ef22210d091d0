use std::fmt;

use der::Decode as _;
use der::asn1::ObjectIdentifier;
use hsm_core::{Error as CoreError, KeyAlgorithm, KeyHandle, SecretString, SignatureScheme};

use crate::backend::lib::rand::SystemRandom;
use crate::backend::lib::signature as lc;
use crate::backend::{self, OID_EC_PUBLIC_KEY, OID_ED25519, OID_RSA_ENCRYPTION};
use crate::{Error, pem};

const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

/// A private key held in process memory, behind the [`KeyHandle`] contract.
///
/// This is the development and migration driver: the key comes from a PEM or DER file. Signing
/// is done by AWS-LC (through `aws-lc-rs`; feature `aws-lc-rs`, the default), which keeps the key
/// in its own memory and cleanses it when the key is freed, or by ring (feature `ring`, for
/// small builds that link ring already); every buffer this crate decodes the key into is
/// zeroized on drop.
///
/// Accepted encodings: PKCS#8 (`PRIVATE KEY`), encrypted PKCS#8 (`ENCRYPTED PRIVATE KEY`,
/// PBES2 with PBKDF2 or scrypt), SEC1 (`EC PRIVATE KEY`) and PKCS#1 (`RSA PRIVATE KEY`), as PEM
/// or DER. Key types: ECDSA P-256 and P-384, RSA 2048-4096, Ed25519.
pub struct SoftwareKey {
    inner: Inner,
    algorithm: KeyAlgorithm,
    spki: Vec<u8>,
    rng: SystemRandom,
}

enum Inner {
    Ecdsa(lc::EcdsaKeyPair),
    Rsa(lc::RsaKeyPair),
    Ed25519(lc::Ed25519KeyPair),
}

impl SoftwareKey {
    /// Loads a private key from PEM or DER bytes (detected automatically).
    ///
    /// `passphrase` decrypts an encrypted PKCS#8 key; it is ignored for unencrypted keys.
    ///
    /// # Errors
    /// [`Error::MalformedPem`], [`Error::CertificateWhereKeyExpected`], [`Error::NoPrivateKey`],
    /// [`Error::PassphraseRequired`], [`Error::WrongPassphrase`], [`Error::MalformedKey`],
    /// [`Error::UnsupportedKeyType`], [`Error::UnsupportedCurve`], [`Error::UnsupportedKeySize`],
    /// [`Error::InvalidKey`], and the others named on [`Error`].
    pub fn from_bytes(input: &[u8], passphrase: Option<&SecretString>) -> Result<Self, Error> {
        if pem::is_pem(input) {
            Self::from_pem(input, passphrase)
        } else {
            Self::from_der(input, passphrase)
        }
    }

    /// Loads a private key from PEM text.
    ///
    /// # Errors
    /// As for [`from_bytes`](Self::from_bytes).
    pub fn from_pem(input: &[u8], passphrase: Option<&SecretString>) -> Result<Self, Error> {
        let blocks = pem::parse(input)?;
        let mut keys = Vec::new();
        let mut saw_certificate = false;
        let mut other = None;
        for block in blocks {
            match block.label.as_str() {
                "PRIVATE KEY" | "ENCRYPTED PRIVATE KEY" | "EC PRIVATE KEY" | "RSA PRIVATE KEY" => {
                    keys.push(block)
                }
                "CERTIFICATE" | "TRUSTED CERTIFICATE" | "X509 CERTIFICATE" => {
                    saw_certificate = true
                }
                // OpenSSL writes the curve's parameters before a SEC1 key; the key names it too.
                "EC PARAMETERS" => {}
                _ => other = other.or(Some(block.label)),
            }
        }
        let block = match keys.len() {
            1 => keys.remove(0),
            0 if saw_certificate => return Err(Error::CertificateWhereKeyExpected),
            0 => {
                return Err(match other {
                    Some(label) => Error::UnexpectedPemLabel {
                        label,
                        expected: "a private key",
                    },
                    None => Error::NoPrivateKey,
                });
            }
            count => return Err(Error::MultiplePrivateKeys { count }),
        };
        if block.encrypted_headers {
            return Err(Error::LegacyEncryptedPem);
        }
        match block.label.as_str() {
            "PRIVATE KEY" => Self::from_pkcs8(&block.der),
            "ENCRYPTED PRIVATE KEY" => Self::from_encrypted_pkcs8(&block.der, passphrase),
            "EC PRIVATE KEY" => Self::from_sec1(&block.der),
            _ => Self::from_pkcs1(&block.der),
        }
    }

    /// Loads a private key from DER: PKCS#8, encrypted PKCS#8, SEC1 or PKCS#1, tried in that
    /// order.
    ///
    /// # Errors
    /// As for [`from_bytes`](Self::from_bytes).
    pub fn from_der(input: &[u8], passphrase: Option<&SecretString>) -> Result<Self, Error> {
        if pkcs8::PrivateKeyInfoRef::from_der(input).is_ok() {
            return Self::from_pkcs8(input);
        }
        if pkcs8::EncryptedPrivateKeyInfoRef::from_der(input).is_ok() {
            return Self::from_encrypted_pkcs8(input, passphrase);
        }
        if sec1::EcPrivateKey::from_der(input).is_ok() {
            return Self::from_sec1(input);
        }
        if x509_cert::Certificate::from_der(input).is_ok() {
            return Err(Error::CertificateWhereKeyExpected);
        }
        Self::from_pkcs1(input)
    }

    fn from_pkcs8(der: &[u8]) -> Result<Self, Error> {
        let info = pkcs8::PrivateKeyInfoRef::from_der(der).map_err(|_| Error::MalformedKey)?;
        let oid = info.algorithm.oid;
        if oid == OID_EC_PUBLIC_KEY {
            let curve = info
                .algorithm
                .parameters_oid()
                .map_err(|_| Error::UnsupportedCurve { oid: "none".into() })?;
            let (algorithm, signing) = ec_algorithm(curve)?;
            let pair = backend::ecdsa_from_pkcs8(signing, der)?;
            Self::ecdsa(algorithm, curve, pair)
        } else if oid == OID_RSA_ENCRYPTION {
            check_rsa_size(info.private_key.as_bytes())?;
            Self::rsa(lc::RsaKeyPair::from_pkcs8(der).map_err(backend::rejected)?)
        } else if oid == OID_ED25519 {
            let pair =
                lc::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(backend::rejected)?;
            let spki = backend::ed25519_spki(&pair)?;
            Ok(Self::new(Inner::Ed25519(pair), KeyAlgorithm::Ed25519, spki))
        } else {
            Err(Error::UnsupportedKeyType {
                oid: oid.to_string(),
            })
        }
    }

    fn from_encrypted_pkcs8(der: &[u8], passphrase: Option<&SecretString>) -> Result<Self, Error> {
        let passphrase = passphrase.ok_or(Error::PassphraseRequired)?;
        let info =
            pkcs8::EncryptedPrivateKeyInfoRef::from_der(der).map_err(|_| Error::MalformedKey)?;
        let plain = info
            .decrypt(passphrase.expose().as_bytes())
            .map_err(|_| Error::WrongPassphrase)?;
        Self::from_pkcs8(plain.as_bytes())
    }

    fn from_sec1(der: &[u8]) -> Result<Self, Error> {
        let key = sec1::EcPrivateKey::from_der(der).map_err(|_| Error::MalformedKey)?;
        let curve = key
            .parameters
            .as_ref()
            .and_then(|p| p.named_curve())
            .ok_or(Error::UnsupportedCurve { oid: "none".into() })?;
        let (algorithm, signing) = ec_algorithm(curve)?;
        let pair = backend::ecdsa_from_sec1(signing, curve, der)?;
        Self::ecdsa(algorithm, curve, pair)
    }

    fn from_pkcs1(der: &[u8]) -> Result<Self, Error> {
        check_rsa_size(der)?;
        let pair = lc::RsaKeyPair::from_der(der).map_err(|_| Error::MalformedKey)?;
        Self::rsa(pair)
    }

    fn ecdsa(
        algorithm: KeyAlgorithm,
        curve: ObjectIdentifier,
        pair: lc::EcdsaKeyPair,
    ) -> Result<Self, Error> {
        let spki = backend::ecdsa_spki(&pair, curve)?;
        Ok(Self::new(Inner::Ecdsa(pair), algorithm, spki))
    }

    fn rsa(pair: lc::RsaKeyPair) -> Result<Self, Error> {
        let bits = backend::rsa_modulus_len(&pair) * 8;
        let bits16 = u16::try_from(bits).map_err(|_| Error::UnsupportedKeySize { bits })?;
        if !(KeyAlgorithm::MIN_RSA_BITS..=KeyAlgorithm::MAX_RSA_BITS).contains(&bits16) {
            return Err(Error::UnsupportedKeySize { bits });
        }
        let spki = backend::rsa_spki(&pair)?;
        Ok(Self::new(
            Inner::Rsa(pair),
            KeyAlgorithm::Rsa { bits: bits16 },
            spki,
        ))
    }

    fn new(inner: Inner, algorithm: KeyAlgorithm, spki: Vec<u8>) -> Self {
        Self {
            inner,
            algorithm,
            spki,
            rng: SystemRandom::new(),
        }
    }
}

impl KeyHandle for SoftwareKey {
    fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    fn public_key_der(&self) -> &[u8] {
        &self.spki
    }

    fn sign(&self, scheme: SignatureScheme, message: &[u8]) -> Result<Vec<u8>, CoreError> {
        hsm_core::check_scheme(self, scheme)?;
        let failed = |_| CoreError::device("sign", SigningFailed(scheme));
        match &self.inner {
            // The pair is bound to the curve's hash, which `check` has just confirmed.
            Inner::Ecdsa(pair) => pair
                .sign(&self.rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(failed),
            Inner::Ed25519(pair) => Ok(pair.sign(message).as_ref().to_vec()),
            Inner::Rsa(pair) => {
                let padding: &'static dyn lc::RsaEncoding = match scheme {
                    SignatureScheme::RsaPkcs1Sha256 => &lc::RSA_PKCS1_SHA256,
                    SignatureScheme::RsaPkcs1Sha384 => &lc::RSA_PKCS1_SHA384,
                    SignatureScheme::RsaPkcs1Sha512 => &lc::RSA_PKCS1_SHA512,
                    SignatureScheme::RsaPssSha256 => &lc::RSA_PSS_SHA256,
                    SignatureScheme::RsaPssSha384 => &lc::RSA_PSS_SHA384,
                    _ => &lc::RSA_PSS_SHA512,
                };
                let mut signature = vec![0; backend::rsa_modulus_len(pair)];
                pair.sign(padding, &self.rng, message, &mut signature)
                    .map_err(failed)?;
                Ok(signature)
            }
        }
    }
}

impl fmt::Debug for SoftwareKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftwareKey")
            .field("algorithm", &self.algorithm)
            .field("private_key", &"[redacted]")
            .finish()
    }
}

/// The device-side cause of a failed software signature (the library gives no detail).
#[derive(Debug, thiserror::Error)]
#[error("{library} failed to sign with {scheme}", library = backend::NAME, scheme = .0)]
struct SigningFailed(SignatureScheme);

fn ec_algorithm(
    curve: ObjectIdentifier,
) -> Result<(KeyAlgorithm, &'static lc::EcdsaSigningAlgorithm), Error> {
    if curve == OID_P256 {
        Ok((KeyAlgorithm::EcdsaP256, &lc::ECDSA_P256_SHA256_ASN1_SIGNING))
    } else if curve == OID_P384 {
        Ok((KeyAlgorithm::EcdsaP384, &lc::ECDSA_P384_SHA384_ASN1_SIGNING))
    } else {
        Err(Error::UnsupportedCurve {
            oid: curve.to_string(),
        })
    }
}

/// Refuses RSA keys outside 2048-4096 bits with a precise error, before the library sees them.
fn check_rsa_size(pkcs1: &[u8]) -> Result<(), Error> {
    let key = pkcs1::RsaPrivateKeyRef::from_der(pkcs1).map_err(|_| Error::MalformedKey)?;
    let modulus = key.modulus.as_bytes();
    let leading = modulus.iter().take_while(|&&b| b == 0).count();
    let significant = &modulus[leading..];
    let bits = match significant.first() {
        Some(top) => significant.len() * 8 - top.leading_zeros() as usize,
        None => 0,
    };
    let range = usize::from(KeyAlgorithm::MIN_RSA_BITS)..=usize::from(KeyAlgorithm::MAX_RSA_BITS);
    if range.contains(&bits) {
        Ok(())
    } else {
        Err(Error::UnsupportedKeySize { bits })
    }
}
