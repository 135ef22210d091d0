//! Algorithm identifiers (`TPM_ALG_ID`) and object attributes (`TPMA_OBJECT`).

use std::fmt;

use zeroize::Zeroizing;

use crate::Error;

/// A TPM 2.0 algorithm identifier (`TPM_ALG_ID`, TPM 2.0 Part 2 section 6.3). Unknown values are
/// kept as they are; [`Display`](fmt::Display) names the known ones.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AlgId(pub u16);

impl AlgId {
    /// `TPM_ALG_RSA`.
    pub const RSA: AlgId = AlgId(0x0001);
    /// `TPM_ALG_SHA1`.
    pub const SHA1: AlgId = AlgId(0x0004);
    /// `TPM_ALG_HMAC`.
    pub const HMAC: AlgId = AlgId(0x0005);
    /// `TPM_ALG_AES`.
    pub const AES: AlgId = AlgId(0x0006);
    /// `TPM_ALG_MGF1`.
    pub const MGF1: AlgId = AlgId(0x0007);
    /// `TPM_ALG_KEYEDHASH`.
    pub const KEYEDHASH: AlgId = AlgId(0x0008);
    /// `TPM_ALG_XOR`.
    pub const XOR: AlgId = AlgId(0x000A);
    /// `TPM_ALG_SHA256`.
    pub const SHA256: AlgId = AlgId(0x000B);
    /// `TPM_ALG_SHA384`.
    pub const SHA384: AlgId = AlgId(0x000C);
    /// `TPM_ALG_SHA512`.
    pub const SHA512: AlgId = AlgId(0x000D);
    /// `TPM_ALG_NULL`.
    pub const NULL: AlgId = AlgId(0x0010);
    /// `TPM_ALG_SM3_256`.
    pub const SM3_256: AlgId = AlgId(0x0012);
    /// `TPM_ALG_SM4`.
    pub const SM4: AlgId = AlgId(0x0013);
    /// `TPM_ALG_RSASSA`.
    pub const RSASSA: AlgId = AlgId(0x0014);
    /// `TPM_ALG_RSAES`.
    pub const RSAES: AlgId = AlgId(0x0015);
    /// `TPM_ALG_RSAPSS`.
    pub const RSAPSS: AlgId = AlgId(0x0016);
    /// `TPM_ALG_OAEP`.
    pub const OAEP: AlgId = AlgId(0x0017);
    /// `TPM_ALG_ECDSA`.
    pub const ECDSA: AlgId = AlgId(0x0018);
    /// `TPM_ALG_ECDH`.
    pub const ECDH: AlgId = AlgId(0x0019);
    /// `TPM_ALG_ECDAA`.
    pub const ECDAA: AlgId = AlgId(0x001A);
    /// `TPM_ALG_SM2`.
    pub const SM2: AlgId = AlgId(0x001B);
    /// `TPM_ALG_ECSCHNORR`.
    pub const ECSCHNORR: AlgId = AlgId(0x001C);
    /// `TPM_ALG_ECMQV`.
    pub const ECMQV: AlgId = AlgId(0x001D);
    /// `TPM_ALG_KDF1_SP800_56A`.
    pub const KDF1_SP800_56A: AlgId = AlgId(0x0020);
    /// `TPM_ALG_KDF2`.
    pub const KDF2: AlgId = AlgId(0x0021);
    /// `TPM_ALG_KDF1_SP800_108`.
    pub const KDF1_SP800_108: AlgId = AlgId(0x0022);
    /// `TPM_ALG_ECC`.
    pub const ECC: AlgId = AlgId(0x0023);
    /// `TPM_ALG_SYMCIPHER`.
    pub const SYMCIPHER: AlgId = AlgId(0x0025);
    /// `TPM_ALG_CAMELLIA`.
    pub const CAMELLIA: AlgId = AlgId(0x0026);
    /// `TPM_ALG_CTR`.
    pub const CTR: AlgId = AlgId(0x0040);
    /// `TPM_ALG_OFB`.
    pub const OFB: AlgId = AlgId(0x0041);
    /// `TPM_ALG_CBC`.
    pub const CBC: AlgId = AlgId(0x0042);
    /// `TPM_ALG_CFB`.
    pub const CFB: AlgId = AlgId(0x0043);
    /// `TPM_ALG_ECB`.
    pub const ECB: AlgId = AlgId(0x0044);

    /// The specification's name without the `TPM_ALG_` prefix, for known values.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::RSA => "RSA",
            Self::SHA1 => "SHA1",
            Self::HMAC => "HMAC",
            Self::AES => "AES",
            Self::MGF1 => "MGF1",
            Self::KEYEDHASH => "KEYEDHASH",
            Self::XOR => "XOR",
            Self::SHA256 => "SHA256",
            Self::SHA384 => "SHA384",
            Self::SHA512 => "SHA512",
            Self::NULL => "NULL",
            Self::SM3_256 => "SM3_256",
            Self::SM4 => "SM4",
            Self::RSASSA => "RSASSA",
            Self::RSAES => "RSAES",
            Self::RSAPSS => "RSAPSS",
            Self::OAEP => "OAEP",
            Self::ECDSA => "ECDSA",
            Self::ECDH => "ECDH",
            Self::ECDAA => "ECDAA",
            Self::SM2 => "SM2",
            Self::ECSCHNORR => "ECSCHNORR",
            Self::ECMQV => "ECMQV",
            Self::KDF1_SP800_56A => "KDF1_SP800_56A",
            Self::KDF2 => "KDF2",
            Self::KDF1_SP800_108 => "KDF1_SP800_108",
            Self::ECC => "ECC",
            Self::SYMCIPHER => "SYMCIPHER",
            Self::CAMELLIA => "CAMELLIA",
            Self::CTR => "CTR",
            Self::OFB => "OFB",
            Self::CBC => "CBC",
            Self::CFB => "CFB",
            Self::ECB => "ECB",
            _ => return None,
        })
    }
}

impl fmt::Display for AlgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "TPM_ALG_{name}"),
            None => write!(f, "TPM_ALG_ID 0x{:04x}", self.0),
        }
    }
}

impl fmt::Debug for AlgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Object attributes (`TPMA_OBJECT`, TPM 2.0 Part 2 section 8.3): a bit set.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ObjectAttributes(pub u32);

impl ObjectAttributes {
    /// `fixedTPM`: the object cannot be duplicated.
    pub const FIXED_TPM: ObjectAttributes = ObjectAttributes(1 << 1);
    /// `stClear`: the object is flushed on TPM reset/restart.
    pub const ST_CLEAR: ObjectAttributes = ObjectAttributes(1 << 2);
    /// `fixedParent`: the object cannot be re-parented.
    pub const FIXED_PARENT: ObjectAttributes = ObjectAttributes(1 << 4);
    /// `sensitiveDataOrigin`: the TPM generated the sensitive data.
    pub const SENSITIVE_DATA_ORIGIN: ObjectAttributes = ObjectAttributes(1 << 5);
    /// `userWithAuth`: USER role actions accept the authValue (not only a policy).
    pub const USER_WITH_AUTH: ObjectAttributes = ObjectAttributes(1 << 6);
    /// `adminWithPolicy`: ADMIN role actions need the policy.
    pub const ADMIN_WITH_POLICY: ObjectAttributes = ObjectAttributes(1 << 7);
    /// `noDA`: not subject to dictionary-attack protection.
    pub const NO_DA: ObjectAttributes = ObjectAttributes(1 << 10);
    /// `encryptedDuplication`: duplication needs an inner wrapper.
    pub const ENCRYPTED_DUPLICATION: ObjectAttributes = ObjectAttributes(1 << 11);
    /// `restricted`: a restricted key (storage parent, attestation key).
    pub const RESTRICTED: ObjectAttributes = ObjectAttributes(1 << 16);
    /// `decrypt`: a decryption (or storage) key.
    pub const DECRYPT: ObjectAttributes = ObjectAttributes(1 << 17);
    /// `sign` / `encrypt`: a signing (or symmetric encryption) key.
    pub const SIGN_ENCRYPT: ObjectAttributes = ObjectAttributes(1 << 18);
    /// `x509sign`.
    pub const X509_SIGN: ObjectAttributes = ObjectAttributes(1 << 19);

    /// Whether every bit of `other` is set.
    pub fn contains(self, other: ObjectAttributes) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for ObjectAttributes {
    type Output = ObjectAttributes;

    fn bitor(self, rhs: ObjectAttributes) -> ObjectAttributes {
        ObjectAttributes(self.0 | rhs.0)
    }
}

impl fmt::Debug for ObjectAttributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [(ObjectAttributes, &str); 12] = [
            (ObjectAttributes::FIXED_TPM, "fixedTPM"),
            (ObjectAttributes::ST_CLEAR, "stClear"),
            (ObjectAttributes::FIXED_PARENT, "fixedParent"),
            (
                ObjectAttributes::SENSITIVE_DATA_ORIGIN,
                "sensitiveDataOrigin",
            ),
            (ObjectAttributes::USER_WITH_AUTH, "userWithAuth"),
            (ObjectAttributes::ADMIN_WITH_POLICY, "adminWithPolicy"),
            (ObjectAttributes::NO_DA, "noDA"),
            (
                ObjectAttributes::ENCRYPTED_DUPLICATION,
                "encryptedDuplication",
            ),
            (ObjectAttributes::RESTRICTED, "restricted"),
            (ObjectAttributes::DECRYPT, "decrypt"),
            (ObjectAttributes::SIGN_ENCRYPT, "sign"),
            (ObjectAttributes::X509_SIGN, "x509sign"),
        ];
        write!(f, "0x{:08x}", self.0)?;
        let mut sep = " (";
        for (bit, name) in NAMES {
            if self.contains(bit) {
                write!(f, "{sep}{name}")?;
                sep = "|";
            }
        }
        if sep != " (" {
            write!(f, ")")?;
        }
        Ok(())
    }
}

/// The hash algorithms this crate computes with (names, KDFa, HMACs, OAEP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    pub(crate) fn from_alg(alg: AlgId, structure: &'static str) -> Result<Hash, Error> {
        match alg {
            AlgId::SHA256 => Ok(Hash::Sha256),
            AlgId::SHA384 => Ok(Hash::Sha384),
            AlgId::SHA512 => Ok(Hash::Sha512),
            alg => Err(Error::UnsupportedAlgorithm { structure, alg }),
        }
    }

    pub(crate) fn size(self) -> usize {
        match self {
            Hash::Sha256 => 32,
            Hash::Sha384 => 48,
            Hash::Sha512 => 64,
        }
    }

    /// `H(parts[0] || parts[1] || ...)`.
    pub(crate) fn digest(self, parts: &[&[u8]]) -> Vec<u8> {
        use sha2::Digest;
        fn run<D: Digest>(parts: &[&[u8]]) -> Vec<u8> {
            let mut d = D::new();
            for p in parts {
                d.update(p);
            }
            d.finalize().to_vec()
        }
        match self {
            Hash::Sha256 => run::<sha2::Sha256>(parts),
            Hash::Sha384 => run::<sha2::Sha384>(parts),
            Hash::Sha512 => run::<sha2::Sha512>(parts),
        }
    }

    /// `HMAC_H(key, parts[0] || parts[1] || ...)`, zeroized on drop (KDFa output blocks are
    /// key material).
    pub(crate) fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
        use hmac::{KeyInit, Mac};
        fn run<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
            // HMAC takes keys of any length: new_from_slice cannot fail for it.
            let Ok(mut mac) = <M as KeyInit>::new_from_slice(key) else {
                unreachable!("HMAC accepts keys of every length")
            };
            for p in parts {
                mac.update(p);
            }
            Zeroizing::new(mac.finalize().into_bytes().to_vec())
        }
        match self {
            Hash::Sha256 => run::<hmac::Hmac<sha2::Sha256>>(key, parts),
            Hash::Sha384 => run::<hmac::Hmac<sha2::Sha384>>(key, parts),
            Hash::Sha512 => run::<hmac::Hmac<sha2::Sha512>>(key, parts),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn display_names_known_and_unknown_algorithms() {
        assert_eq!(AlgId::SHA256.to_string(), "TPM_ALG_SHA256");
        assert_eq!(AlgId(0x7777).to_string(), "TPM_ALG_ID 0x7777");
    }

    #[test]
    fn attributes_debug_lists_bits() {
        let ek = ObjectAttributes(0x000300b2);
        assert_eq!(
            format!("{ek:?}"),
            "0x000300b2 (fixedTPM|fixedParent|sensitiveDataOrigin|adminWithPolicy|restricted|decrypt)"
        );
        assert!(ek.contains(ObjectAttributes::RESTRICTED | ObjectAttributes::DECRYPT));
        assert!(!ek.contains(ObjectAttributes::SIGN_ENCRYPT));
    }

    #[test]
    fn hmac_sha256_rfc4231_case_2() {
        let mac = Hash::Sha256.hmac(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            *mac,
            hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
    }

    pub(crate) fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
