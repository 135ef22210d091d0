//! Conversion between the raw `r||s` ECDSA signatures that tokens and TPMs return and the DER
//! `Ecdsa-Sig-Value` that TLS and X.509 carry.
//!
//! This is the one place in the project that does the conversion; drivers call it instead of
//! writing DER by hand. Both directions validate the scalars (non-zero, below the group order)
//! with the RustCrypto types, so malformed input is a typed error, never a panic.

use crate::{Error, KeyAlgorithm};

/// Converts a raw `r||s` ECDSA signature (each scalar big-endian, padded to the curve's size) to
/// DER.
///
/// # Errors
/// [`Error::MalformedSignature`] when the length is not twice the curve's scalar size or a scalar
/// is zero or not below the group order; [`Error::MalformedSignature`] also when `algorithm` is not
/// an ECDSA algorithm.
pub fn ecdsa_raw_to_der(algorithm: KeyAlgorithm, raw: &[u8]) -> Result<Vec<u8>, Error> {
    let malformed = || Error::MalformedSignature {
        algorithm,
        format: "raw r||s",
    };
    match algorithm {
        KeyAlgorithm::EcdsaP256 => p256::ecdsa::Signature::from_slice(raw)
            .map(|s| s.to_der().as_bytes().to_vec())
            .map_err(|_| malformed()),
        KeyAlgorithm::EcdsaP384 => p384::ecdsa::Signature::from_slice(raw)
            .map(|s| s.to_der().as_bytes().to_vec())
            .map_err(|_| malformed()),
        _ => Err(malformed()),
    }
}

/// Converts a DER `Ecdsa-Sig-Value` to raw `r||s`, each scalar padded to the curve's size.
///
/// # Errors
/// [`Error::MalformedSignature`] when the DER is malformed, has trailing data, or holds a scalar
/// that is zero, too long or not below the group order; also when `algorithm` is not ECDSA.
pub fn ecdsa_der_to_raw(algorithm: KeyAlgorithm, der: &[u8]) -> Result<Vec<u8>, Error> {
    let malformed = || Error::MalformedSignature {
        algorithm,
        format: "DER",
    };
    match algorithm {
        KeyAlgorithm::EcdsaP256 => p256::ecdsa::Signature::from_der(der)
            .map(|s| s.to_vec())
            .map_err(|_| malformed()),
        KeyAlgorithm::EcdsaP384 => p384::ecdsa::Signature::from_der(der)
            .map(|s| s.to_vec())
            .map_err(|_| malformed()),
        _ => Err(malformed()),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    // A valid P-256 r||s: r = 1, s = 2.
    fn small_p256() -> Vec<u8> {
        let mut raw = vec![0u8; 64];
        raw[31] = 1;
        raw[63] = 2;
        raw
    }

    #[test]
    fn small_scalars_encode_minimally() {
        let der = ecdsa_raw_to_der(KeyAlgorithm::EcdsaP256, &small_p256()).unwrap();
        assert_eq!(der, [0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x02]);
        assert_eq!(
            ecdsa_der_to_raw(KeyAlgorithm::EcdsaP256, &der).unwrap(),
            small_p256()
        );
    }

    #[test]
    fn high_bit_scalars_get_a_zero_byte() {
        let mut raw = vec![0u8; 64];
        raw[0] = 0x80;
        raw[63] = 1;
        let der = ecdsa_raw_to_der(KeyAlgorithm::EcdsaP256, &raw).unwrap();
        assert_eq!(&der[..4], &[0x30, 0x26, 0x02, 0x21]);
        assert_eq!(der[4], 0x00);
    }

    #[test]
    fn rejects_bad_raw() {
        for raw in [
            vec![],
            vec![0u8; 63],
            vec![0u8; 64],
            vec![0xffu8; 64],
            small_p256()[..64].repeat(2),
        ] {
            assert!(matches!(
                ecdsa_raw_to_der(KeyAlgorithm::EcdsaP256, &raw),
                Err(Error::MalformedSignature { .. })
            ));
        }
        assert!(ecdsa_raw_to_der(KeyAlgorithm::Ed25519, &[1u8; 64]).is_err());
        assert!(ecdsa_raw_to_der(KeyAlgorithm::EcdsaP384, &small_p256()).is_err());
    }

    #[test]
    fn rejects_bad_der() {
        let good = ecdsa_raw_to_der(KeyAlgorithm::EcdsaP256, &small_p256()).unwrap();
        let mut trailing = good.clone();
        trailing.push(0);
        let mut negative = good.clone();
        negative[4] = 0x81;
        for der in [
            vec![],
            vec![0x30, 0x00],
            trailing,
            negative,
            good[..5].to_vec(),
        ] {
            assert!(
                ecdsa_der_to_raw(KeyAlgorithm::EcdsaP256, &der).is_err(),
                "{der:02x?}"
            );
        }
    }

    fn scalar(len: usize) -> impl Strategy<Value = Vec<u8>> {
        // Top byte below 0xff keeps the value under the group order of both curves.
        (1u8..0xff, proptest::collection::vec(any::<u8>(), len - 1)).prop_map(|(top, rest)| {
            let mut v = vec![top];
            v.extend(rest);
            v
        })
    }

    proptest! {
        #[test]
        fn p256_round_trip(r in scalar(32), s in scalar(32)) {
            let raw = [r, s].concat();
            let der = ecdsa_raw_to_der(KeyAlgorithm::EcdsaP256, &raw).unwrap();
            prop_assert_eq!(ecdsa_der_to_raw(KeyAlgorithm::EcdsaP256, &der).unwrap(), raw);
        }

        #[test]
        fn p384_round_trip(r in scalar(48), s in scalar(48)) {
            let raw = [r, s].concat();
            let der = ecdsa_raw_to_der(KeyAlgorithm::EcdsaP384, &raw).unwrap();
            prop_assert_eq!(ecdsa_der_to_raw(KeyAlgorithm::EcdsaP384, &der).unwrap(), raw);
        }

        #[test]
        fn arbitrary_der_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            for alg in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::EcdsaP384] {
                if let Ok(raw) = ecdsa_der_to_raw(alg, &bytes) {
                    // Whatever parses re-encodes to the same DER (DER is canonical).
                    prop_assert_eq!(ecdsa_raw_to_der(alg, &raw).unwrap(), bytes.clone());
                }
            }
        }
    }
}
