//! Public areas: marshaled `TPM2B_PUBLIC` for DPS, DER `SubjectPublicKeyInfo` for X.509 and TLS.

use der::Encode as _;
use der::asn1::{BitString, Null, ObjectIdentifier, UintRef};
use hsm_core::KeyAlgorithm;
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::structures::{Public, PublicBuffer};
use tss_esapi::traits::Marshall as _;

use crate::Error;

const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// The marshaled `TPM2B_PUBLIC` (a big-endian `u16` size, then the `TPMT_PUBLIC`), as DPS and
/// `tpm2_readpublic -f tss` have it.
pub(crate) fn marshal_tpm2b(public: &Public) -> Result<Vec<u8>, Error> {
    PublicBuffer::try_from(public.clone())
        .and_then(|buffer| buffer.marshall())
        .map_err(|_| Error::MalformedPublic {
            what: "TPM2B_PUBLIC",
        })
}

/// The key algorithm and DER `SubjectPublicKeyInfo` of a signing key's public area.
pub(crate) fn signing_key(public: &Public) -> Result<(KeyAlgorithm, Vec<u8>), String> {
    match public {
        Public::Ecc {
            parameters, unique, ..
        } => {
            if parameters.ecc_curve() != EccCurve::NistP256 {
                return Err(format!(
                    "ECC curve {:?} (only NIST P-256 is supported)",
                    parameters.ecc_curve()
                ));
            }
            let mut point = Vec::with_capacity(65);
            point.push(0x04);
            for coordinate in [unique.x().value(), unique.y().value()] {
                if coordinate.len() > 32 {
                    return Err("an ECC coordinate longer than 32 bytes".into());
                }
                point.extend(std::iter::repeat_n(0, 32 - coordinate.len()));
                point.extend_from_slice(coordinate);
            }
            let key = p256::PublicKey::from_sec1_bytes(&point)
                .map_err(|_| "a point that is not on P-256".to_owned())?;
            let der = p256::pkcs8::EncodePublicKey::to_public_key_der(&key)
                .map_err(|_| "an unencodable P-256 key".to_owned())?;
            Ok((KeyAlgorithm::EcdsaP256, der.as_bytes().to_vec()))
        }
        Public::Rsa {
            parameters, unique, ..
        } => {
            let modulus = unique.value();
            let bits = u16::try_from(modulus.len() * 8)
                .map_err(|_| "an oversized RSA modulus".to_owned())?;
            if !(KeyAlgorithm::MIN_RSA_BITS..=KeyAlgorithm::MAX_RSA_BITS).contains(&bits)
                || modulus.first().is_none_or(|&b| b < 0x80)
            {
                return Err(format!("RSA key of {bits} bits (2048-4096 supported)"));
            }
            // TPM exponent 0 means the default 65537.
            let exponent = match parameters.exponent().value() {
                0 => 65_537,
                e => e,
            };
            let exponent = exponent.to_be_bytes();
            let start = exponent.iter().position(|&b| b != 0).unwrap_or(3);
            let rsa = pkcs1::RsaPublicKey {
                modulus: UintRef::new(modulus).map_err(|e| e.to_string())?,
                public_exponent: UintRef::new(&exponent[start..]).map_err(|e| e.to_string())?,
            };
            let key = rsa.to_der().map_err(|e| e.to_string())?;
            let spki = SubjectPublicKeyInfoOwned {
                algorithm: AlgorithmIdentifierOwned {
                    oid: OID_RSA,
                    parameters: Some(der::Any::encode_from(&Null).map_err(|e| e.to_string())?),
                },
                subject_public_key: BitString::from_bytes(&key).map_err(|e| e.to_string())?,
            };
            Ok((
                KeyAlgorithm::Rsa { bits },
                spki.to_der().map_err(|e| e.to_string())?,
            ))
        }
        _ => Err("not an RSA or ECC key".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeySpec;

    #[test]
    fn marshaled_template_has_a_size_prefix() {
        let public = crate::EkTemplate::TcgL1.public().unwrap();
        let bytes = marshal_tpm2b(&public).unwrap();
        let size = usize::from(u16::from_be_bytes([bytes[0], bytes[1]]));
        assert_eq!(size, bytes.len() - 2);
        // TPMT_PUBLIC starts with type TPM_ALG_RSA (0x0001) and nameAlg SHA-256 (0x000b).
        assert_eq!(&bytes[2..6], &[0x00, 0x01, 0x00, 0x0b]);
        // ... and ends with the 256 zero bytes of unique.
        assert!(bytes.ends_with(&[0u8; 256]));
        assert_eq!(&bytes[bytes.len() - 258..bytes.len() - 256], &[0x01, 0x00]);
    }

    #[test]
    fn an_empty_template_is_no_signing_key() {
        // A template has no key yet: the all-zero point is not on the curve.
        let err = signing_key(&KeySpec::EcdsaP256.public().unwrap()).unwrap_err();
        assert!(err.contains("P-256"), "{err}");
        let err = signing_key(&KeySpec::Rsa2048.public().unwrap()).unwrap_err();
        assert!(err.contains("RSA"), "{err}");
    }
}
