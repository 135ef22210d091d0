use std::fmt;

/// The type of a key pair a [`KeyHandle`](crate::KeyHandle) holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyAlgorithm {
    /// ECDSA on NIST P-256 (secp256r1).
    EcdsaP256,
    /// ECDSA on NIST P-384 (secp384r1).
    EcdsaP384,
    /// RSA with a modulus of `bits` bits (2048 to 4096 are supported).
    Rsa {
        /// Modulus length in bits.
        bits: u16,
    },
    /// Ed25519 (pure EdDSA, RFC 8032).
    Ed25519,
}

impl KeyAlgorithm {
    /// Smallest RSA modulus this contract accepts.
    pub const MIN_RSA_BITS: u16 = 2048;
    /// Largest RSA modulus this contract accepts.
    pub const MAX_RSA_BITS: u16 = 4096;

    /// Every signature scheme a key of this algorithm can produce, in order of preference.
    ///
    /// For RSA, PSS comes before PKCS#1 v1.5, and stronger hashes before weaker ones.
    pub fn schemes(self) -> &'static [SignatureScheme] {
        use SignatureScheme::*;
        match self {
            Self::EcdsaP256 => &[EcdsaP256Sha256],
            Self::EcdsaP384 => &[EcdsaP384Sha384],
            Self::Rsa { .. } => &[
                RsaPssSha256,
                RsaPssSha384,
                RsaPssSha512,
                RsaPkcs1Sha256,
                RsaPkcs1Sha384,
                RsaPkcs1Sha512,
            ],
            Self::Ed25519 => &[Ed25519],
        }
    }

    /// Whether a key of this algorithm can sign with `scheme`.
    pub fn supports(self, scheme: SignatureScheme) -> bool {
        self.schemes().contains(&scheme)
    }

    /// Returns `Ok(())` if this algorithm can sign with `scheme`, the typed
    /// [`Error::UnsupportedScheme`](crate::Error::UnsupportedScheme) otherwise.
    ///
    /// Drivers call this first in [`KeyHandle::sign`](crate::KeyHandle::sign).
    ///
    /// # Errors
    /// [`Error::UnsupportedScheme`](crate::Error::UnsupportedScheme) when the scheme does not fit.
    pub fn check(self, scheme: SignatureScheme) -> Result<(), crate::Error> {
        if self.supports(scheme) {
            Ok(())
        } else {
            Err(crate::Error::UnsupportedScheme {
                algorithm: self,
                scheme,
            })
        }
    }

    /// The length in bytes of one ECDSA scalar (`r` or `s`) for this curve, if it is an ECDSA key.
    pub fn ecdsa_scalar_len(self) -> Option<usize> {
        match self {
            Self::EcdsaP256 => Some(32),
            Self::EcdsaP384 => Some(48),
            _ => None,
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EcdsaP256 => f.write_str("ECDSA P-256"),
            Self::EcdsaP384 => f.write_str("ECDSA P-384"),
            Self::Rsa { bits } => write!(f, "RSA-{bits}"),
            Self::Ed25519 => f.write_str("Ed25519"),
        }
    }
}

/// A signature scheme: key type, padding and hash, named as TLS 1.3 names them.
///
/// Every scheme signs the *unhashed* message; the output format is what TLS and X.509 expect
/// (see [`KeyHandle::sign`](crate::KeyHandle::sign)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SignatureScheme {
    /// ECDSA P-256 with SHA-256 (`ecdsa_secp256r1_sha256`).
    EcdsaP256Sha256,
    /// ECDSA P-384 with SHA-384 (`ecdsa_secp384r1_sha384`).
    EcdsaP384Sha384,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RsaPkcs1Sha256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RsaPkcs1Sha384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RsaPkcs1Sha512,
    /// RSASSA-PSS with SHA-256, MGF1-SHA-256, salt length 32.
    RsaPssSha256,
    /// RSASSA-PSS with SHA-384, MGF1-SHA-384, salt length 48.
    RsaPssSha384,
    /// RSASSA-PSS with SHA-512, MGF1-SHA-512, salt length 64.
    RsaPssSha512,
    /// Ed25519 (pure, no pre-hash).
    Ed25519,
}

impl SignatureScheme {
    /// Every scheme this contract knows.
    pub const ALL: [Self; 9] = [
        Self::EcdsaP256Sha256,
        Self::EcdsaP384Sha384,
        Self::RsaPkcs1Sha256,
        Self::RsaPkcs1Sha384,
        Self::RsaPkcs1Sha512,
        Self::RsaPssSha256,
        Self::RsaPssSha384,
        Self::RsaPssSha512,
        Self::Ed25519,
    ];

    /// Whether this scheme is an RSASSA-PSS scheme.
    pub fn is_pss(self) -> bool {
        matches!(
            self,
            Self::RsaPssSha256 | Self::RsaPssSha384 | Self::RsaPssSha512
        )
    }

    /// The IANA TLS name of the scheme, e.g. `rsa_pss_rsae_sha256`.
    pub fn tls_name(self) -> &'static str {
        match self {
            Self::EcdsaP256Sha256 => "ecdsa_secp256r1_sha256",
            Self::EcdsaP384Sha384 => "ecdsa_secp384r1_sha384",
            Self::RsaPkcs1Sha256 => "rsa_pkcs1_sha256",
            Self::RsaPkcs1Sha384 => "rsa_pkcs1_sha384",
            Self::RsaPkcs1Sha512 => "rsa_pkcs1_sha512",
            Self::RsaPssSha256 => "rsa_pss_rsae_sha256",
            Self::RsaPssSha384 => "rsa_pss_rsae_sha384",
            Self::RsaPssSha512 => "rsa_pss_rsae_sha512",
            Self::Ed25519 => "ed25519",
        }
    }
}

impl fmt::Display for SignatureScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.tls_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scheme_belongs_to_exactly_one_algorithm_family() {
        let algorithms = [
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::EcdsaP384,
            KeyAlgorithm::Rsa { bits: 2048 },
            KeyAlgorithm::Ed25519,
        ];
        for scheme in SignatureScheme::ALL {
            let owners = algorithms.iter().filter(|a| a.supports(scheme)).count();
            assert_eq!(owners, 1, "{scheme}");
        }
    }

    #[test]
    fn check_reports_the_pair() {
        let err = KeyAlgorithm::EcdsaP256
            .check(SignatureScheme::EcdsaP384Sha384)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "key algorithm ECDSA P-256 cannot sign with ecdsa_secp384r1_sha384"
        );
    }

    #[test]
    fn rsa_prefers_pss() {
        let schemes = KeyAlgorithm::Rsa { bits: 3072 }.schemes();
        assert!(schemes[0].is_pss());
        assert!(!schemes[schemes.len() - 1].is_pss());
    }
}
