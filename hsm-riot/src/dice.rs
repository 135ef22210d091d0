//! The standard profile's derivations: CDI from the UDS and the measurement, then the DeviceID
//! and Alias keys from the CDI by HKDF-SHA256 with rejection sampling onto P-256.

use hkdf::Hkdf;
use hsm_core::SecretBytes;
use p256::ecdsa::SigningKey;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::Error;

/// A 32-byte digest input (FWID, measurement).
pub(crate) type Digest32 = [u8; 32];

/// The info prefix of the DeviceID key derivation.
pub const DEVICE_ID_INFO: &[u8] = b"DICE DeviceID";
/// The info prefix of the Alias key derivation.
pub const ALIAS_INFO: &[u8] = b"DICE Alias";

/// `CDI = SHA-256(SHA-256(UDS) || measurement)`.
pub(crate) fn cdi(uds: &SecretBytes, measurement: &Digest32) -> Zeroizing<[u8; 32]> {
    let digest = Zeroizing::new(Sha256::digest(uds.expose()));
    let mut hasher = Sha256::new();
    hasher.update(digest.as_slice());
    hasher.update(measurement);
    Zeroizing::new(hasher.finalize().into())
}

/// Folds further layer measurements into a CDI: `CDI' = SHA-256(CDI || layer)` per layer.
pub(crate) fn fold_layers(cdi: &[u8; 32], layers: &[Digest32]) -> Zeroizing<[u8; 32]> {
    let mut current = Zeroizing::new(*cdi);
    for layer in layers {
        let mut hasher = Sha256::new();
        hasher.update(current.as_slice());
        hasher.update(layer);
        *current = hasher.finalize().into();
    }
    current
}

/// A P-256 key from `ikm`: `HKDF-SHA256(salt, ikm, info || counter)` read as a big-endian scalar,
/// the counter (one byte, from 0) incremented until the scalar lies in `[1, n-1]`.
pub(crate) fn derive_p256(
    ikm: &[u8],
    salt: Option<&[u8]>,
    info: &[u8],
) -> Result<SigningKey, Error> {
    let hkdf = Hkdf::<Sha256>::new(salt, ikm);
    for counter in 0u8..=255 {
        let mut okm = Zeroizing::new([0u8; 32]);
        let full_info = [info, &[counter]].concat();
        // 32 bytes is far below HKDF-SHA256's 8160-byte limit.
        if hkdf.expand(&full_info, okm.as_mut_slice()).is_err() {
            break;
        }
        if let Ok(key) = SigningKey::from_slice(okm.as_slice()) {
            return Ok(key);
        }
    }
    // Probability below 2^-8000: 256 consecutive out-of-range draws.
    Err(Error::WrongLength {
        what: "derived scalar",
        expected: 32,
        got: 0,
    })
}

/// Copies a slice into a 32-byte array, naming the input on a length mismatch.
pub(crate) fn digest32(what: &'static str, bytes: &[u8]) -> Result<Digest32, Error> {
    bytes.try_into().map_err(|_| Error::WrongLength {
        what,
        expected: 32,
        got: bytes.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdi_is_sha256_of_sha256_uds_and_measurement() {
        // Computed independently: python3 -c "import hashlib;u=bytes(range(32));m=bytes([7]*32);
        // print(hashlib.sha256(hashlib.sha256(u).digest()+m).hexdigest())"
        let uds = SecretBytes::copy_from(&(0u8..32).collect::<Vec<_>>());
        let cdi = cdi(&uds, &[7; 32]);
        assert_eq!(
            hex(cdi.as_slice()),
            include_str!("../tests/data/cdi-range32-7s.txt").trim()
        );
    }

    #[test]
    fn derivation_is_deterministic_and_label_separated() {
        let a = derive_p256(&[1; 32], None, DEVICE_ID_INFO).unwrap();
        let b = derive_p256(&[1; 32], None, DEVICE_ID_INFO).unwrap();
        let c = derive_p256(&[1; 32], None, ALIAS_INFO).unwrap();
        let d = derive_p256(&[1; 32], Some(&[2; 32]), ALIAS_INFO).unwrap();
        assert_eq!(a.to_bytes(), b.to_bytes());
        assert_ne!(a.to_bytes(), c.to_bytes());
        assert_ne!(c.to_bytes(), d.to_bytes());
    }

    #[test]
    fn layers_change_the_cdi() {
        let base = [3u8; 32];
        assert_eq!(*fold_layers(&base, &[]), base);
        assert_ne!(*fold_layers(&base, &[[1; 32]]), base);
        assert_ne!(
            *fold_layers(&base, &[[1; 32]]),
            *fold_layers(&base, &[[2; 32]])
        );
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
