use std::path::PathBuf;

/// Everything that can go wrong loading certificates and keys.
///
/// Messages never contain key material or passphrases.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The PEM text is malformed.
    #[error("malformed PEM at line {line}: {reason}")]
    MalformedPem {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },

    /// A PEM block with a label this crate does not load.
    #[error("unexpected PEM block \"{label}\" where {expected} was expected")]
    UnexpectedPemLabel {
        /// The block's label, e.g. `PUBLIC KEY`.
        label: String,
        /// What was expected.
        expected: &'static str,
    },

    /// Only certificates were found where a private key was expected.
    #[error("found a certificate where a private key was expected")]
    CertificateWhereKeyExpected,

    /// No private key was found in the input.
    #[error(
        "no private key found (expected PEM PRIVATE KEY, ENCRYPTED PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY, or DER)"
    )]
    NoPrivateKey,

    /// More than one private key was found; the input is ambiguous.
    #[error("found {count} private keys; give exactly one")]
    MultiplePrivateKeys {
        /// How many were found.
        count: usize,
    },

    /// A key encrypted with OpenSSL's legacy PEM encryption (`Proc-Type: 4,ENCRYPTED`).
    #[error(
        "legacy PEM encryption (Proc-Type: 4,ENCRYPTED) is not supported; convert with `openssl pkcs8 -topk8 -v2 aes-256-cbc`"
    )]
    LegacyEncryptedPem,

    /// The key is encrypted and no passphrase was given.
    #[error("the private key is encrypted: a passphrase is required")]
    PassphraseRequired,

    /// The passphrase did not decrypt the key (or the encrypted key is corrupt).
    #[error("cannot decrypt the private key: wrong passphrase or corrupt data")]
    WrongPassphrase,

    /// The key's DER did not parse in any supported format.
    #[error("malformed private key: not PKCS#8, SEC1 or PKCS#1 DER")]
    MalformedKey,

    /// A key type other than EC, RSA or Ed25519.
    #[error("unsupported key type (algorithm OID {oid})")]
    UnsupportedKeyType {
        /// The algorithm's object identifier.
        oid: String,
    },

    /// An EC key on a curve other than P-256 or P-384.
    #[error("unsupported elliptic curve (OID {oid}); P-256 and P-384 are supported")]
    UnsupportedCurve {
        /// The curve's object identifier, or `"none"` when the key names none.
        oid: String,
    },

    /// An RSA key outside 2048-4096 bits.
    #[error("unsupported RSA key size {bits} bits; 2048 to 4096 are supported")]
    UnsupportedKeySize {
        /// The modulus length.
        bits: usize,
    },

    /// The crypto library rejected the key (inconsistent or invalid key values).
    #[error("invalid private key: {reason}")]
    InvalidKey {
        /// The crypto library's reason.
        reason: &'static str,
    },

    /// A certificate did not parse.
    #[error("certificate {index} (0 = leaf) is malformed")]
    MalformedCertificate {
        /// Position in the chain.
        index: usize,
        /// The DER error.
        #[source]
        source: der::Error,
    },

    /// No certificate in the input.
    #[error("the certificate chain is empty")]
    EmptyChain,

    /// The private key does not belong to the leaf certificate.
    #[error("the private key does not match the leaf certificate's public key")]
    KeyMismatch,

    /// The leaf certificate has no usable common name and no registration id was given.
    #[error("the leaf certificate has no common name: set a registration id explicitly")]
    NoCommonName,

    /// The registration id (given, or the leaf's CN) breaks DPS's rules.
    #[error("invalid registration id")]
    RegistrationId(#[source] hsm_core::Error),

    /// The builder was not given a certificate or a key.
    #[error("missing {0}: set it on the builder")]
    Missing(&'static str),

    /// The chain cannot serve as an identity for the key for another reason (see
    /// [`hsm_core::CertifiedKey`]).
    #[error("unusable X.509 identity")]
    Identity(#[source] hsm_core::Error),
}

impl Error {
    /// The error for a chain and key that [`hsm_core::CertifiedKey`] refused.
    pub(crate) fn identity(error: hsm_core::Error) -> Self {
        use hsm_core::CertificateProblem as P;
        match error {
            hsm_core::Error::Certificate { problem } => match problem {
                P::EmptyChain => Self::EmptyChain,
                P::KeyMismatch => Self::KeyMismatch,
                P::NoCommonName => Self::NoCommonName,
                P::InvalidCommonName { reason } => {
                    Self::RegistrationId(hsm_core::Error::InvalidRegistrationId { reason })
                }
                other => Self::Identity(hsm_core::Error::Certificate { problem: other }),
            },
            other => Self::Identity(other),
        }
    }
}
