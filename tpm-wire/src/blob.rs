//! The DPS activation blob: five TPM2B structures back to back.

use crate::marshal::{Reader, put_tpm2b, put_u32};
use crate::public::{MAX_DIGEST, MAX_PUBLIC};
use crate::{Error, Public};

/// Largest `TPMS_ID_OBJECT`: two SHA-512-sized `TPM2B_DIGEST`s.
pub const MAX_ID_OBJECT: usize = 2 * (2 + MAX_DIGEST);
/// Largest `TPMU_ENCRYPTED_SECRET`: an RSA-4096 ciphertext.
pub const MAX_ENCRYPTED_SECRET: usize = 512;
/// Largest `_PRIVATE` (outer and inner integrity digests and the largest `TPM2B_SENSITIVE`), as
/// tpm2-tss sizes `TPM2B_PRIVATE`.
pub const MAX_PRIVATE: usize = 1550;

/// The magic number opening a tpm2-tools credential file (`tpm2_makecredential -o`).
const TPM2_TOOLS_CREDENTIAL_MAGIC: u32 = 0xBADC_C0DE;
/// The credential file format version tpm2-tools 5.x writes.
const TPM2_TOOLS_CREDENTIAL_VERSION: u32 = 1;

/// What DPS sends a TPM device to activate (the `authenticationKey` of its TPM challenge): the
/// *contents* of five TPM2B structures, in this order on the wire.
///
/// All five are either encrypted or public; none is secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActivationBlob {
    /// `TPM2B_ID_OBJECT`: the credential (the inner wrapping key), encrypted under a seed only
    /// the EK can recover, bound to the SRK's Name.
    pub credential_blob: Vec<u8>,
    /// `TPM2B_ENCRYPTED_SECRET`: the credential seed, RSA-OAEP-encrypted to the EK (label
    /// `"IDENTITY\0"`).
    pub ek_encrypted_seed: Vec<u8>,
    /// `TPM2B_PRIVATE`: the duplicated HMAC key (outer wrapper to the SRK, inner wrapper keyed
    /// with the credential).
    pub duplicate: Vec<u8>,
    /// `TPM2B_ENCRYPTED_SECRET`: the duplication seed, RSA-OAEP-encrypted to the SRK (label
    /// `"DUPLICATE\0"`).
    pub srk_encrypted_seed: Vec<u8>,
    /// `TPM2B_PUBLIC`: the HMAC key's public area (`TPMT_PUBLIC`).
    pub public: Vec<u8>,
}

/// The five parts: name and largest size, in wire order.
const PARTS: [(&str, usize); 5] = [
    ("activation blob: TPM2B_ID_OBJECT", MAX_ID_OBJECT),
    (
        "activation blob: TPM2B_ENCRYPTED_SECRET (EK seed)",
        MAX_ENCRYPTED_SECRET,
    ),
    ("activation blob: TPM2B_PRIVATE", MAX_PRIVATE),
    (
        "activation blob: TPM2B_ENCRYPTED_SECRET (SRK seed)",
        MAX_ENCRYPTED_SECRET,
    ),
    ("activation blob: TPM2B_PUBLIC", MAX_PUBLIC),
];

impl ActivationBlob {
    /// Parses the five TPM2B structures. Only the framing is checked here (sizes, limits,
    /// nothing missing or left over); [`public_area`](Self::public_area) parses the public
    /// area, and the TPM checks the rest.
    ///
    /// # Errors
    /// [`Error::Truncated`] when the input ends inside a part, [`Error::Oversize`] when a size
    /// exceeds what the TPM allows for that structure, [`Error::Empty`] for an empty part,
    /// [`Error::TrailingBytes`] for bytes after the fifth part. Never panics.
    pub fn parse(bytes: &[u8]) -> Result<ActivationBlob, Error> {
        let mut r = Reader::new(bytes);
        let mut parts: [Vec<u8>; 5] = Default::default();
        for (part, (structure, max)) in parts.iter_mut().zip(PARTS) {
            let contents = r.tpm2b(max, structure)?;
            if contents.is_empty() {
                return Err(Error::Empty { structure });
            }
            *part = contents.to_vec();
        }
        r.finish("activation blob")?;
        let [
            credential_blob,
            ek_encrypted_seed,
            duplicate,
            srk_encrypted_seed,
            public,
        ] = parts;
        Ok(ActivationBlob {
            credential_blob,
            ek_encrypted_seed,
            duplicate,
            srk_encrypted_seed,
            public,
        })
    }

    fn parts(&self) -> [&[u8]; 5] {
        [
            &self.credential_blob,
            &self.ek_encrypted_seed,
            &self.duplicate,
            &self.srk_encrypted_seed,
            &self.public,
        ]
    }

    /// The wire form: each part with its u16 size prefix, in order.
    ///
    /// # Errors
    /// [`Error::Oversize`] or [`Error::Empty`] when a part breaks the limits
    /// [`parse`](Self::parse) enforces (only possible for a blob built or edited by hand), so
    /// that whatever this returns parses again.
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        let parts = self.parts();
        let mut out = Vec::with_capacity(10 + parts.iter().map(|p| p.len()).sum::<usize>());
        for (part, (structure, max)) in parts.into_iter().zip(PARTS) {
            if part.is_empty() {
                return Err(Error::Empty { structure });
            }
            put_tpm2b(&mut out, part, max, structure)?;
        }
        Ok(out)
    }

    /// Parses [`public`](Self::public), the HMAC key's public area.
    ///
    /// # Errors
    /// As [`Public::from_tpmt`].
    pub fn public_area(&self) -> Result<Public, Error> {
        Public::from_tpmt(&self.public)
    }

    /// The credential as a tpm2-tools credential file (what `tpm2_makecredential -o` writes and
    /// `tpm2_activatecredential -i` reads in tpm2-tools 5.x): magic `0xBADCC0DE` and version 1
    /// (big-endian u32 each), then `TPM2B_ID_OBJECT` and `TPM2B_ENCRYPTED_SECRET`.
    ///
    /// # Errors
    /// As [`to_bytes`](Self::to_bytes).
    pub fn to_tpm2_tools_credential(&self) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        put_u32(&mut out, TPM2_TOOLS_CREDENTIAL_MAGIC);
        put_u32(&mut out, TPM2_TOOLS_CREDENTIAL_VERSION);
        put_tpm2b(&mut out, &self.credential_blob, PARTS[0].1, PARTS[0].0)?;
        put_tpm2b(&mut out, &self.ek_encrypted_seed, PARTS[1].1, PARTS[1].0)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn blob(sizes: [usize; 5]) -> ActivationBlob {
        let part = |i: usize| vec![i as u8 + 1; sizes[i]];
        ActivationBlob {
            credential_blob: part(0),
            ek_encrypted_seed: part(1),
            duplicate: part(2),
            srk_encrypted_seed: part(3),
            public: part(4),
        }
    }

    #[test]
    fn layout_is_five_size_prefixed_parts() {
        let bytes = blob([1, 2, 3, 4, 5]).to_bytes().unwrap();
        assert_eq!(
            bytes,
            [
                0, 1, 1, 0, 2, 2, 2, 0, 3, 3, 3, 3, 0, 4, 4, 4, 4, 4, 0, 5, 5, 5, 5, 5, 5
            ]
        );
    }

    #[test]
    fn typed_errors() {
        let good = blob([50, 256, 200, 256, 100]).to_bytes().unwrap();
        assert!(matches!(
            ActivationBlob::parse(&good[..good.len() - 1]),
            Err(Error::Truncated {
                structure: "activation blob: TPM2B_PUBLIC",
                needed: 1,
                ..
            })
        ));
        let mut long = good.clone();
        long.push(0);
        assert!(matches!(
            ActivationBlob::parse(&long),
            Err(Error::TrailingBytes { count: 1, .. })
        ));
        assert!(matches!(
            ActivationBlob::parse(&[]),
            Err(Error::Truncated { offset: 0, .. })
        ));
        // An ID object larger than two SHA-512 digests.
        let mut oversize = good.clone();
        oversize[..2].copy_from_slice(&(MAX_ID_OBJECT as u16 + 1).to_be_bytes());
        assert!(matches!(
            ActivationBlob::parse(&oversize),
            Err(Error::Oversize {
                structure: "activation blob: TPM2B_ID_OBJECT",
                ..
            })
        ));
        let mut empty = blob([50, 256, 200, 256, 100]);
        empty.duplicate.clear();
        assert!(matches!(
            empty.to_bytes(),
            Err(Error::Empty {
                structure: "activation blob: TPM2B_PRIVATE"
            })
        ));
        let mut bytes = blob([1, 1, 1, 1, 1]).to_bytes().unwrap();
        bytes.splice(6..9, [0, 0]);
        assert!(matches!(
            ActivationBlob::parse(&bytes),
            Err(Error::Empty {
                structure: "activation blob: TPM2B_PRIVATE"
            })
        ));
    }

    #[test]
    fn credential_file_has_the_tpm2_tools_header() {
        let file = blob([3, 2, 1, 1, 1]).to_tpm2_tools_credential().unwrap();
        assert_eq!(
            file,
            [
                0xba, 0xdc, 0xc0, 0xde, 0, 0, 0, 1, 0, 3, 1, 1, 1, 0, 2, 2, 2
            ]
        );
    }

    fn part(max: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 1..=max)
    }

    proptest! {
        #[test]
        fn round_trip(
            credential_blob in part(MAX_ID_OBJECT),
            ek_encrypted_seed in part(MAX_ENCRYPTED_SECRET),
            duplicate in part(MAX_PRIVATE),
            srk_encrypted_seed in part(MAX_ENCRYPTED_SECRET),
            public in part(MAX_PUBLIC),
        ) {
            let blob = ActivationBlob {
                credential_blob,
                ek_encrypted_seed,
                duplicate,
                srk_encrypted_seed,
                public,
            };
            let bytes = blob.to_bytes().unwrap();
            prop_assert_eq!(ActivationBlob::parse(&bytes).unwrap(), blob);
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..3000)) {
            if let Ok(blob) = ActivationBlob::parse(&bytes) {
                prop_assert_eq!(blob.to_bytes().unwrap(), bytes);
            }
        }

        #[test]
        fn truncation_is_always_an_error(cut in 0usize..40) {
            let bytes = blob([20, 10, 30, 10, 40]).to_bytes().unwrap();
            let cut = cut.min(bytes.len() - 1);
            prop_assert!(ActivationBlob::parse(&bytes[..bytes.len() - 1 - cut]).is_err());
        }
    }
}
