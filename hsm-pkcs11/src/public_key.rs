//! Building a DER SubjectPublicKeyInfo from PKCS#11 public-key attributes.

use der::asn1::{BitString, Null, ObjectIdentifier, OctetString, PrintableStringRef};
use der::{Any, Decode as _, Encode as _};
use hsm_core::KeyAlgorithm;
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

use crate::Error;

pub(crate) const OID_EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
pub(crate) const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
pub(crate) const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
pub(crate) const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// The curve a `CKA_EC_PARAMS` value names.
pub(crate) fn ec_algorithm(params: &[u8]) -> Result<KeyAlgorithm, Error> {
    if let Ok(oid) = ObjectIdentifier::from_der(params) {
        return match oid {
            OID_P256 => Ok(KeyAlgorithm::EcdsaP256),
            OID_P384 => Ok(KeyAlgorithm::EcdsaP384),
            OID_ED25519 => Ok(KeyAlgorithm::Ed25519),
            other => Err(Error::UnsupportedCurve(other.to_string())),
        };
    }
    // PKCS#11 3.0 lets Edwards curves be named by a PrintableString.
    match PrintableStringRef::from_der(params).map(|s| s.as_str().to_owned()) {
        Ok(name) if name == "edwards25519" => Ok(KeyAlgorithm::Ed25519),
        Ok(name) => Err(Error::UnsupportedCurve(name)),
        Err(_) => Err(Error::MalformedPublicKey("CKA_EC_PARAMS")),
    }
}

/// SPKI of an EC or EdDSA key from `CKA_EC_PARAMS` and `CKA_EC_POINT` (a DER OCTET STRING, or
/// the raw point as some tokens return it).
pub(crate) fn ec_spki(algorithm: KeyAlgorithm, point: &[u8]) -> Result<Vec<u8>, Error> {
    let raw = match OctetString::from_der(point) {
        Ok(octets) => octets.as_bytes().to_vec(),
        Err(_) => point.to_vec(),
    };
    let (oid, parameters) = match algorithm {
        KeyAlgorithm::EcdsaP256 => (OID_EC, Some(any(&OID_P256)?)),
        KeyAlgorithm::EcdsaP384 => (OID_EC, Some(any(&OID_P384)?)),
        KeyAlgorithm::Ed25519 => (OID_ED25519, None),
        _ => return Err(Error::MalformedPublicKey("CKA_EC_POINT")),
    };
    encode(oid, parameters, &raw)
}

/// SPKI of an RSA key from `CKA_MODULUS` and `CKA_PUBLIC_EXPONENT`.
pub(crate) fn rsa_spki(modulus: &[u8], exponent: &[u8]) -> Result<Vec<u8>, Error> {
    let bad = |_| Error::MalformedPublicKey("CKA_MODULUS");
    let key = pkcs1::RsaPublicKey {
        modulus: der::asn1::UintRef::new(modulus).map_err(bad)?,
        public_exponent: der::asn1::UintRef::new(exponent).map_err(bad)?,
    };
    let der = key.to_der().map_err(bad)?;
    encode(OID_RSA, Some(any(&Null)?), &der)
}

/// The modulus length in bits.
pub(crate) fn rsa_bits(modulus: &[u8]) -> usize {
    let significant: Vec<u8> = modulus.iter().copied().skip_while(|&b| b == 0).collect();
    match significant.first() {
        Some(top) => significant.len() * 8 - top.leading_zeros() as usize,
        None => 0,
    }
}

fn any(value: &(impl der::EncodeValue + der::Tagged)) -> Result<Any, Error> {
    Any::encode_from(value).map_err(|_| Error::MalformedPublicKey("parameters"))
}

fn encode(oid: ObjectIdentifier, parameters: Option<Any>, key: &[u8]) -> Result<Vec<u8>, Error> {
    let spki = SubjectPublicKeyInfoOwned {
        algorithm: AlgorithmIdentifierOwned { oid, parameters },
        subject_public_key: BitString::from_bytes(key)
            .map_err(|_| Error::MalformedPublicKey("public key bits"))?,
    };
    spki.to_der()
        .map_err(|_| Error::MalformedPublicKey("SubjectPublicKeyInfo"))
}

/// The SPKI of a DER certificate.
pub(crate) fn certificate_spki(der: &[u8]) -> Option<Vec<u8>> {
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    cert.tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .ok()
}
