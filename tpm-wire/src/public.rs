//! `TPMT_PUBLIC` / `TPM2B_PUBLIC`: the public area of a TPM object, and its Name.

use rsa::BoxedUint;

use crate::alg::Hash;
use crate::marshal::{Reader, put_tpm2b, put_u16, put_u32};
use crate::{AlgId, Error, ObjectAttributes};

/// Largest `TPM2B_DIGEST` (SHA-512).
pub(crate) const MAX_DIGEST: usize = 64;
/// Largest RSA modulus (`MAX_RSA_KEY_BYTES`, 4096 bits).
const MAX_RSA_KEY_BYTES: usize = 512;
/// Largest ECC coordinate (`MAX_ECC_KEY_BYTES`).
const MAX_ECC_KEY_BYTES: usize = 128;
/// Largest marshaled `TPMT_PUBLIC`: type, nameAlg, attributes, a SHA-512 authPolicy, the
/// largest parameters (ECC, 18 bytes) and the largest unique (a 4096-bit RSA modulus).
pub const MAX_PUBLIC: usize = 2 + 2 + 4 + (2 + MAX_DIGEST) + 18 + (2 + MAX_RSA_KEY_BYTES);

/// The default RSA public exponent, marshaled as 0 in `TPMS_RSA_PARMS.exponent`.
const DEFAULT_RSA_EXPONENT: u32 = 65537;

/// A parsed public area (`TPMT_PUBLIC`, TPM 2.0 Part 2 section 12.2.4).
///
/// Parsing keeps every field as found, so [`to_tpmt`](Self::to_tpmt) reproduces the input byte
/// for byte and [`name`](Self::name) is the Name the TPM computes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Public {
    /// The hash algorithm of the Name (`nameAlg`).
    pub name_alg: AlgId,
    /// `objectAttributes`.
    pub attributes: ObjectAttributes,
    /// `authPolicy`: the policy digest (empty for none).
    pub auth_policy: Vec<u8>,
    /// The type-specific `parameters` and `unique` fields.
    pub details: PublicDetails,
}

/// The type-dependent part of a public area: `TPMU_PUBLIC_PARMS` and `TPMU_PUBLIC_ID`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicDetails {
    /// `TPM_ALG_RSA`.
    Rsa(RsaDetails),
    /// `TPM_ALG_ECC`.
    Ecc(EccDetails),
    /// `TPM_ALG_KEYEDHASH` (HMAC keys, sealed data).
    KeyedHash(KeyedHashDetails),
    /// `TPM_ALG_SYMCIPHER` (AES keys).
    SymCipher(SymCipherDetails),
}

/// `TPMS_RSA_PARMS` and the modulus (`TPM2B_PUBLIC_KEY_RSA`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RsaDetails {
    /// The symmetric algorithm of a storage key (AES-128-CFB for EKs and SRKs), else null.
    pub symmetric: SymDef,
    /// The signing or encryption scheme (null for storage keys and EKs).
    pub scheme: Scheme,
    /// The modulus size in bits.
    pub key_bits: u16,
    /// The public exponent as marshaled: 0 means the default, 65537.
    pub exponent: u32,
    /// The modulus, big endian.
    pub modulus: Vec<u8>,
}

/// `TPMS_ECC_PARMS` and the public point (`TPMS_ECC_POINT`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EccDetails {
    /// The symmetric algorithm of a storage key, else null.
    pub symmetric: SymDef,
    /// The signing or key-exchange scheme.
    pub scheme: Scheme,
    /// `TPM_ECC_CURVE` (0x0003 is NIST P-256).
    pub curve: u16,
    /// The key derivation scheme (usually null).
    pub kdf: Scheme,
    /// The x coordinate, big endian.
    pub x: Vec<u8>,
    /// The y coordinate, big endian.
    pub y: Vec<u8>,
}

/// `TPMS_KEYEDHASH_PARMS` and `unique` (a digest binding the sensitive data).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyedHashDetails {
    /// HMAC with a hash, XOR, or null (sealed data).
    pub scheme: Scheme,
    /// For an object made outside the TPM: `H_nameAlg(seedValue || key)`.
    pub unique: Vec<u8>,
}

/// `TPMS_SYMCIPHER_PARMS` and `unique`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SymCipherDetails {
    /// The cipher, key size and mode.
    pub symmetric: SymDef,
    /// For an object made outside the TPM: `H_nameAlg(seedValue || key)`.
    pub unique: Vec<u8>,
}

/// `TPMT_SYM_DEF_OBJECT`: a block cipher with key size and mode, or null.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SymDef {
    /// `TPM_ALG_NULL`.
    Null,
    /// A block cipher (`TPM_ALG_AES`, `TPM_ALG_SM4`, `TPM_ALG_CAMELLIA`).
    Block {
        /// The cipher.
        algorithm: AlgId,
        /// The key size in bits.
        key_bits: u16,
        /// The mode (`TPM_ALG_CFB` for storage keys).
        mode: AlgId,
    },
}

impl SymDef {
    /// AES-128-CFB, the symmetric algorithm of the TCG EK templates and of SRKs.
    pub const AES_128_CFB: SymDef = SymDef::Block {
        algorithm: AlgId::AES,
        key_bits: 128,
        mode: AlgId::CFB,
    };
}

/// A scheme (`TPMT_RSA_SCHEME`, `TPMT_ECC_SCHEME`, `TPMT_KEYEDHASH_SCHEME`, `TPMT_KDF_SCHEME`),
/// by the shape of its details.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// `TPM_ALG_NULL`.
    Null,
    /// A scheme whose only detail is a hash: RSASSA, RSAPSS, OAEP, ECDSA, ECDH, SM2, ECSCHNORR,
    /// ECMQV, HMAC, MGF1, KDF1_SP800_56A, KDF2, KDF1_SP800_108.
    Hash {
        /// The scheme.
        scheme: AlgId,
        /// Its hash.
        hash: AlgId,
    },
    /// `TPM_ALG_RSAES`, which has no details.
    RsaEs,
    /// `TPM_ALG_ECDAA`: a hash and a commit counter.
    Ecdaa {
        /// The hash.
        hash: AlgId,
        /// The commit count.
        count: u16,
    },
    /// `TPM_ALG_XOR` (keyed-hash objects): a hash and a KDF.
    Xor {
        /// The hash.
        hash: AlgId,
        /// The KDF.
        kdf: AlgId,
    },
}

impl Scheme {
    /// HMAC-SHA256 (`TPMT_KEYEDHASH_SCHEME` of an HMAC key).
    pub const HMAC_SHA256: Scheme = Scheme::Hash {
        scheme: AlgId::HMAC,
        hash: AlgId::SHA256,
    };
}

impl Public {
    /// Parses a marshaled `TPM2B_PUBLIC` (a u16 size, then `TPMT_PUBLIC`), as
    /// `tpm2_readpublic -o` and `tpm2_createek -u` write it and as DPS receives the EK and SRK.
    ///
    /// # Errors
    /// [`Error::Truncated`], [`Error::TrailingBytes`], [`Error::Oversize`] or
    /// [`Error::Empty`] for a malformed structure; [`Error::UnsupportedAlgorithm`] for an object
    /// type, symmetric algorithm or scheme this crate cannot lay out.
    pub fn from_tpm2b(bytes: &[u8]) -> Result<Public, Error> {
        let mut r = Reader::new(bytes);
        let inner = r.tpm2b(MAX_PUBLIC, "TPM2B_PUBLIC")?;
        r.finish("TPM2B_PUBLIC")?;
        Self::parse_tpmt(inner, 2)
    }

    /// Parses a marshaled `TPMT_PUBLIC` (the contents of a `TPM2B_PUBLIC`, without the size).
    ///
    /// # Errors
    /// As [`from_tpm2b`](Self::from_tpm2b).
    pub fn from_tpmt(bytes: &[u8]) -> Result<Public, Error> {
        if bytes.len() > MAX_PUBLIC {
            return Err(Error::Oversize {
                structure: "TPMT_PUBLIC",
                size: bytes.len(),
                max: MAX_PUBLIC,
            });
        }
        Self::parse_tpmt(bytes, 0)
    }

    fn parse_tpmt(bytes: &[u8], base: usize) -> Result<Public, Error> {
        const S: &str = "TPMT_PUBLIC";
        if bytes.is_empty() {
            return Err(Error::Empty { structure: S });
        }
        let mut r = Reader::with_base(bytes, base);
        let object_type = AlgId(r.u16(S)?);
        let name_alg = AlgId(r.u16(S)?);
        let attributes = ObjectAttributes(r.u32(S)?);
        let auth_policy = r.tpm2b(MAX_DIGEST, "TPMT_PUBLIC.authPolicy")?.to_vec();
        let details = match object_type {
            AlgId::RSA => {
                const P: &str = "TPMS_RSA_PARMS";
                let symmetric = read_sym_def(&mut r, P)?;
                let scheme = read_scheme(&mut r, P)?;
                let key_bits = r.u16(P)?;
                let exponent = r.u32(P)?;
                let modulus = r
                    .tpm2b(MAX_RSA_KEY_BYTES, "TPMT_PUBLIC.unique.rsa")?
                    .to_vec();
                PublicDetails::Rsa(RsaDetails {
                    symmetric,
                    scheme,
                    key_bits,
                    exponent,
                    modulus,
                })
            }
            AlgId::ECC => {
                const P: &str = "TPMS_ECC_PARMS";
                let symmetric = read_sym_def(&mut r, P)?;
                let scheme = read_scheme(&mut r, P)?;
                let curve = r.u16(P)?;
                let kdf = read_scheme(&mut r, P)?;
                let x = r.tpm2b(MAX_ECC_KEY_BYTES, "TPMT_PUBLIC.unique.ecc.x")?;
                let y = r.tpm2b(MAX_ECC_KEY_BYTES, "TPMT_PUBLIC.unique.ecc.y")?;
                PublicDetails::Ecc(EccDetails {
                    symmetric,
                    scheme,
                    curve,
                    kdf,
                    x: x.to_vec(),
                    y: y.to_vec(),
                })
            }
            AlgId::KEYEDHASH => {
                let scheme = read_scheme(&mut r, "TPMS_KEYEDHASH_PARMS")?;
                let unique = r.tpm2b(MAX_DIGEST, "TPMT_PUBLIC.unique.keyedHash")?;
                PublicDetails::KeyedHash(KeyedHashDetails {
                    scheme,
                    unique: unique.to_vec(),
                })
            }
            AlgId::SYMCIPHER => {
                let symmetric = read_sym_def(&mut r, "TPMS_SYMCIPHER_PARMS")?;
                let unique = r.tpm2b(MAX_DIGEST, "TPMT_PUBLIC.unique.sym")?;
                PublicDetails::SymCipher(SymCipherDetails {
                    symmetric,
                    unique: unique.to_vec(),
                })
            }
            alg => {
                return Err(Error::UnsupportedAlgorithm {
                    structure: "TPMT_PUBLIC.type",
                    alg,
                });
            }
        };
        r.finish(S)?;
        Ok(Public {
            name_alg,
            attributes,
            auth_policy,
            details,
        })
    }

    /// The object type (`TPMT_PUBLIC.type`): `TPM_ALG_RSA`, `TPM_ALG_ECC`, `TPM_ALG_KEYEDHASH` or
    /// `TPM_ALG_SYMCIPHER`.
    pub fn object_type(&self) -> AlgId {
        match self.details {
            PublicDetails::Rsa(_) => AlgId::RSA,
            PublicDetails::Ecc(_) => AlgId::ECC,
            PublicDetails::KeyedHash(_) => AlgId::KEYEDHASH,
            PublicDetails::SymCipher(_) => AlgId::SYMCIPHER,
        }
    }

    /// The marshaled `TPMT_PUBLIC`.
    ///
    /// # Errors
    /// [`Error::Oversize`] when a field is longer than its TPM2B allows (only possible for a
    /// `Public` built or edited by hand), [`Error::UnsupportedAlgorithm`] for a scheme or
    /// symmetric definition that does not fit its position.
    pub fn to_tpmt(&self) -> Result<Vec<u8>, Error> {
        const S: &str = "TPMT_PUBLIC.parameters";
        let mut out = Vec::with_capacity(64 + 2 * MAX_DIGEST + MAX_RSA_KEY_BYTES);
        put_u16(&mut out, self.object_type().0);
        put_u16(&mut out, self.name_alg.0);
        put_u32(&mut out, self.attributes.0);
        put_tpm2b(
            &mut out,
            &self.auth_policy,
            MAX_DIGEST,
            "TPMT_PUBLIC.authPolicy",
        )?;
        match &self.details {
            PublicDetails::Rsa(d) => {
                put_sym_def(&mut out, d.symmetric, S)?;
                put_scheme(&mut out, d.scheme, S)?;
                put_u16(&mut out, d.key_bits);
                put_u32(&mut out, d.exponent);
                put_tpm2b(
                    &mut out,
                    &d.modulus,
                    MAX_RSA_KEY_BYTES,
                    "TPMT_PUBLIC.unique.rsa",
                )?;
            }
            PublicDetails::Ecc(d) => {
                put_sym_def(&mut out, d.symmetric, S)?;
                put_scheme(&mut out, d.scheme, S)?;
                put_u16(&mut out, d.curve);
                put_scheme(&mut out, d.kdf, S)?;
                put_tpm2b(
                    &mut out,
                    &d.x,
                    MAX_ECC_KEY_BYTES,
                    "TPMT_PUBLIC.unique.ecc.x",
                )?;
                put_tpm2b(
                    &mut out,
                    &d.y,
                    MAX_ECC_KEY_BYTES,
                    "TPMT_PUBLIC.unique.ecc.y",
                )?;
            }
            PublicDetails::KeyedHash(d) => {
                put_scheme(&mut out, d.scheme, S)?;
                put_tpm2b(
                    &mut out,
                    &d.unique,
                    MAX_DIGEST,
                    "TPMT_PUBLIC.unique.keyedHash",
                )?;
            }
            PublicDetails::SymCipher(d) => {
                put_sym_def(&mut out, d.symmetric, S)?;
                put_tpm2b(&mut out, &d.unique, MAX_DIGEST, "TPMT_PUBLIC.unique.sym")?;
            }
        }
        Ok(out)
    }

    /// The marshaled `TPM2B_PUBLIC` (what [`from_tpm2b`](Self::from_tpm2b) parses).
    ///
    /// # Errors
    /// As [`to_tpmt`](Self::to_tpmt).
    pub fn to_tpm2b(&self) -> Result<Vec<u8>, Error> {
        let tpmt = self.to_tpmt()?;
        let mut out = Vec::with_capacity(tpmt.len() + 2);
        put_tpm2b(&mut out, &tpmt, MAX_PUBLIC, "TPM2B_PUBLIC")?;
        Ok(out)
    }

    /// The object's Name: `nameAlg` (u16, big endian) followed by `H_nameAlg(TPMT_PUBLIC)`, as
    /// the TPM computes it (`tpm2_readpublic` prints it as `name:`).
    ///
    /// # Errors
    /// [`Error::UnsupportedAlgorithm`] unless `nameAlg` is SHA-256, SHA-384 or SHA-512; errors
    /// of [`to_tpmt`](Self::to_tpmt).
    pub fn name(&self) -> Result<Vec<u8>, Error> {
        let hash = Hash::from_alg(self.name_alg, "TPMT_PUBLIC.nameAlg")?;
        let tpmt = self.to_tpmt()?;
        let mut name = self.name_alg.0.to_be_bytes().to_vec();
        name.extend_from_slice(&hash.digest(&[&tpmt]));
        Ok(name)
    }

    /// The RSA public key of an RSA object (an exponent of 0 is the default, 65537).
    ///
    /// # Errors
    /// [`Error::Invalid`] for a non-RSA object; [`Error::RsaKey`] when the modulus or exponent
    /// is not a usable RSA key (e.g. shorter than 1024 bits, even, or not `key_bits` long).
    pub fn rsa_public_key(&self) -> Result<rsa::PublicKey, Error> {
        let PublicDetails::Rsa(d) = &self.details else {
            return Err(Error::Invalid {
                structure: "TPMT_PUBLIC",
                reason: "not an RSA object",
            });
        };
        if d.modulus.len() * 8 != usize::from(d.key_bits) {
            return Err(Error::Invalid {
                structure: "TPMT_PUBLIC",
                reason: "RSA modulus length differs from keyBits",
            });
        }
        let exponent = match d.exponent {
            0 => DEFAULT_RSA_EXPONENT,
            e => e,
        };
        let n = BoxedUint::from_be_slice_vartime(&d.modulus);
        let e = BoxedUint::from_be_slice_vartime(&exponent.to_be_bytes());
        rsa::PublicKey::new(n, e).map_err(|source| Error::RsaKey {
            structure: "TPMT_PUBLIC",
            source,
        })
    }
}

fn read_sym_def(r: &mut Reader<'_>, structure: &'static str) -> Result<SymDef, Error> {
    match AlgId(r.u16(structure)?) {
        AlgId::NULL => Ok(SymDef::Null),
        algorithm if is_block_cipher(algorithm) => Ok(SymDef::Block {
            algorithm,
            key_bits: r.u16(structure)?,
            mode: AlgId(r.u16(structure)?),
        }),
        alg => Err(Error::UnsupportedAlgorithm { structure, alg }),
    }
}

fn is_block_cipher(alg: AlgId) -> bool {
    matches!(alg, AlgId::AES | AlgId::SM4 | AlgId::CAMELLIA)
}

fn put_sym_def(out: &mut Vec<u8>, sym: SymDef, structure: &'static str) -> Result<(), Error> {
    match sym {
        SymDef::Null => put_u16(out, AlgId::NULL.0),
        SymDef::Block {
            algorithm,
            key_bits,
            mode,
        } => {
            if !is_block_cipher(algorithm) {
                return Err(Error::UnsupportedAlgorithm {
                    structure,
                    alg: algorithm,
                });
            }
            put_u16(out, algorithm.0);
            put_u16(out, key_bits);
            put_u16(out, mode.0);
        }
    }
    Ok(())
}

fn read_scheme(r: &mut Reader<'_>, structure: &'static str) -> Result<Scheme, Error> {
    match AlgId(r.u16(structure)?) {
        AlgId::NULL => Ok(Scheme::Null),
        AlgId::RSAES => Ok(Scheme::RsaEs),
        AlgId::ECDAA => Ok(Scheme::Ecdaa {
            hash: AlgId(r.u16(structure)?),
            count: r.u16(structure)?,
        }),
        AlgId::XOR => Ok(Scheme::Xor {
            hash: AlgId(r.u16(structure)?),
            kdf: AlgId(r.u16(structure)?),
        }),
        scheme if is_hash_scheme(scheme) => Ok(Scheme::Hash {
            scheme,
            hash: AlgId(r.u16(structure)?),
        }),
        alg => Err(Error::UnsupportedAlgorithm { structure, alg }),
    }
}

/// Schemes whose details are exactly one hash algorithm.
fn is_hash_scheme(alg: AlgId) -> bool {
    matches!(
        alg,
        AlgId::RSASSA
            | AlgId::RSAPSS
            | AlgId::OAEP
            | AlgId::ECDSA
            | AlgId::ECDH
            | AlgId::SM2
            | AlgId::ECSCHNORR
            | AlgId::ECMQV
            | AlgId::HMAC
            | AlgId::MGF1
            | AlgId::KDF1_SP800_56A
            | AlgId::KDF2
            | AlgId::KDF1_SP800_108
    )
}

fn put_scheme(out: &mut Vec<u8>, scheme: Scheme, structure: &'static str) -> Result<(), Error> {
    match scheme {
        Scheme::Null => put_u16(out, AlgId::NULL.0),
        Scheme::RsaEs => put_u16(out, AlgId::RSAES.0),
        Scheme::Hash { scheme, hash } => {
            if !is_hash_scheme(scheme) {
                return Err(Error::UnsupportedAlgorithm {
                    structure,
                    alg: scheme,
                });
            }
            put_u16(out, scheme.0);
            put_u16(out, hash.0);
        }
        Scheme::Ecdaa { hash, count } => {
            put_u16(out, AlgId::ECDAA.0);
            put_u16(out, hash.0);
            put_u16(out, count);
        }
        Scheme::Xor { hash, kdf } => {
            put_u16(out, AlgId::XOR.0);
            put_u16(out, hash.0);
            put_u16(out, kdf.0);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const EK: &[u8] = include_bytes!("../tests/data/ek.pub");
    const SRK: &[u8] = include_bytes!("../tests/data/srk.pub");

    #[test]
    fn ek_fixture_is_the_tcg_l1_template() {
        let ek = Public::from_tpm2b(EK).unwrap();
        assert_eq!(ek.name_alg, AlgId::SHA256);
        assert_eq!(ek.attributes, ObjectAttributes(0x0003_00b2));
        // PolicySecret(TPM_RH_ENDORSEMENT).
        assert_eq!(ek.auth_policy[..4], [0x83, 0x71, 0x97, 0x67]);
        let PublicDetails::Rsa(d) = &ek.details else {
            panic!("not RSA: {ek:?}")
        };
        assert_eq!(d.symmetric, SymDef::AES_128_CFB);
        assert_eq!(d.scheme, Scheme::Null);
        assert_eq!((d.key_bits, d.exponent, d.modulus.len()), (2048, 0, 256));
        assert_eq!(ek.to_tpm2b().unwrap(), EK);
        assert_eq!(ek.name().unwrap().len(), 34);
        ek.rsa_public_key().unwrap();
    }

    #[test]
    fn srk_fixture_round_trips() {
        let srk = Public::from_tpm2b(SRK).unwrap();
        assert_eq!(srk.attributes, ObjectAttributes(0x0003_0472));
        assert!(srk.auth_policy.is_empty());
        assert_eq!(srk.to_tpm2b().unwrap(), SRK);
        assert_eq!(Public::from_tpmt(&SRK[2..]).unwrap(), srk);
    }

    #[test]
    fn malformed_public_areas_are_typed_errors() {
        assert!(matches!(
            Public::from_tpm2b(&EK[..EK.len() - 1]),
            Err(Error::Truncated { .. })
        ));
        let mut long = EK.to_vec();
        long.push(0);
        assert!(matches!(
            Public::from_tpm2b(&long),
            Err(Error::TrailingBytes { .. })
        ));
        // The outer size claims one byte less than TPMT_PUBLIC needs.
        let mut short = EK[..EK.len() - 1].to_vec();
        short[..2].copy_from_slice(&((EK.len() - 3) as u16).to_be_bytes());
        assert!(matches!(
            Public::from_tpm2b(&short),
            Err(Error::Truncated { .. })
        ));
        assert!(matches!(
            Public::from_tpm2b(&[0, 0]),
            Err(Error::Empty { .. })
        ));
        let mut unknown_type = EK.to_vec();
        unknown_type[2..4].copy_from_slice(&[0x77, 0x77]);
        assert!(matches!(
            Public::from_tpm2b(&unknown_type),
            Err(Error::UnsupportedAlgorithm {
                alg: AlgId(0x7777),
                ..
            })
        ));
        let mut oversize_policy = EK.to_vec();
        oversize_policy[10..12].copy_from_slice(&65u16.to_be_bytes());
        assert!(matches!(
            Public::from_tpm2b(&oversize_policy),
            Err(Error::Oversize { max: 64, .. })
        ));
    }

    #[test]
    fn name_needs_a_supported_hash() {
        let mut ek = Public::from_tpm2b(EK).unwrap();
        ek.name_alg = AlgId::SHA1;
        assert!(matches!(
            ek.name(),
            Err(Error::UnsupportedAlgorithm {
                alg: AlgId::SHA1,
                ..
            })
        ));
    }

    #[test]
    fn hand_built_mismatches_do_not_marshal() {
        let mut public = Public::from_tpm2b(SRK).unwrap();
        if let PublicDetails::Rsa(d) = &mut public.details {
            d.scheme = Scheme::Hash {
                scheme: AlgId::NULL,
                hash: AlgId::SHA256,
            };
        }
        assert!(matches!(
            public.to_tpmt(),
            Err(Error::UnsupportedAlgorithm { .. })
        ));
    }

    fn alg() -> impl Strategy<Value = AlgId> {
        any::<u16>().prop_map(AlgId)
    }

    fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..=max)
    }

    fn sym_def() -> impl Strategy<Value = SymDef> {
        prop_oneof![
            Just(SymDef::Null),
            (
                prop_oneof![Just(AlgId::AES), Just(AlgId::SM4), Just(AlgId::CAMELLIA)],
                any::<u16>(),
                alg()
            )
                .prop_map(|(algorithm, key_bits, mode)| SymDef::Block {
                    algorithm,
                    key_bits,
                    mode
                }),
        ]
    }

    fn scheme() -> impl Strategy<Value = Scheme> {
        prop_oneof![
            Just(Scheme::Null),
            Just(Scheme::RsaEs),
            (
                prop_oneof![
                    Just(AlgId::RSASSA),
                    Just(AlgId::OAEP),
                    Just(AlgId::ECDSA),
                    Just(AlgId::HMAC),
                    Just(AlgId::KDF1_SP800_108)
                ],
                alg()
            )
                .prop_map(|(scheme, hash)| Scheme::Hash { scheme, hash }),
            (alg(), any::<u16>()).prop_map(|(hash, count)| Scheme::Ecdaa { hash, count }),
            (alg(), alg()).prop_map(|(hash, kdf)| Scheme::Xor { hash, kdf }),
        ]
    }

    fn details() -> impl Strategy<Value = PublicDetails> {
        prop_oneof![
            (sym_def(), scheme(), any::<u16>(), any::<u32>(), bytes(512)).prop_map(
                |(symmetric, scheme, key_bits, exponent, modulus)| {
                    PublicDetails::Rsa(RsaDetails {
                        symmetric,
                        scheme,
                        key_bits,
                        exponent,
                        modulus,
                    })
                }
            ),
            (
                sym_def(),
                scheme(),
                any::<u16>(),
                scheme(),
                bytes(128),
                bytes(128)
            )
                .prop_map(|(symmetric, scheme, curve, kdf, x, y)| {
                    PublicDetails::Ecc(EccDetails {
                        symmetric,
                        scheme,
                        curve,
                        kdf,
                        x,
                        y,
                    })
                }),
            (scheme(), bytes(64)).prop_map(|(scheme, unique)| PublicDetails::KeyedHash(
                KeyedHashDetails { scheme, unique }
            )),
            (sym_def(), bytes(64)).prop_map(|(symmetric, unique)| {
                PublicDetails::SymCipher(SymCipherDetails { symmetric, unique })
            }),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(
            name_alg in alg(),
            attributes in any::<u32>(),
            auth_policy in bytes(64),
            details in details(),
        ) {
            let public = Public {
                name_alg,
                attributes: ObjectAttributes(attributes),
                auth_policy,
                details,
            };
            let tpm2b = public.to_tpm2b().unwrap();
            prop_assert!(tpm2b.len() <= MAX_PUBLIC + 2);
            prop_assert_eq!(Public::from_tpm2b(&tpm2b).unwrap(), public.clone());
            prop_assert_eq!(Public::from_tpmt(&tpm2b[2..]).unwrap(), public);
        }

        #[test]
        fn parse_never_panics(data in bytes(700)) {
            if let Ok(public) = Public::from_tpm2b(&data) {
                prop_assert_eq!(public.to_tpm2b().unwrap(), data);
            }
        }

        #[test]
        fn mutated_fixtures_never_panic(index in 0..EK.len(), value in any::<u8>(), cut in 0..EK.len()) {
            let mut data = EK.to_vec();
            data[index] = value;
            data.truncate(EK.len() - cut);
            if let Ok(public) = Public::from_tpm2b(&data) {
                prop_assert_eq!(public.to_tpm2b().unwrap(), data);
                let _ = public.name();
                let _ = public.rsa_public_key();
            }
        }
    }
}
