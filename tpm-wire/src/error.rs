use std::error::Error as StdError;

use crate::AlgId;

/// Everything that can go wrong parsing or building TPM structures.
///
/// Parse errors name the structure (`"TPM2B_PUBLIC"`, `"TPMT_PUBLIC.parameters"`,
/// `"activation blob: TPM2B_PRIVATE"`, ...) so that a rejected blob says where it broke.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input ended inside a structure.
    #[error("{structure}: truncated at byte {offset}: {needed} more byte(s) needed")]
    Truncated {
        /// The structure being read.
        structure: &'static str,
        /// Offset of the read that failed, from the start of the input.
        offset: usize,
        /// How many bytes were missing.
        needed: usize,
    },

    /// Bytes were left over after the last structure.
    #[error("{structure}: {count} trailing byte(s) at offset {offset}")]
    TrailingBytes {
        /// The structure that should have ended the input.
        structure: &'static str,
        /// Where the extra bytes start.
        offset: usize,
        /// How many extra bytes there are.
        count: usize,
    },

    /// A size field (or a value to be marshaled) is larger than the TPM allows for the structure.
    #[error("{structure}: size {size} exceeds the maximum {max}")]
    Oversize {
        /// The structure.
        structure: &'static str,
        /// The size found.
        size: usize,
        /// The largest size the structure may have.
        max: usize,
    },

    /// A structure that must have content was empty.
    #[error("{structure} is empty")]
    Empty {
        /// The structure.
        structure: &'static str,
    },

    /// An algorithm identifier this crate does not handle in this position.
    #[error("{structure}: unsupported algorithm {alg}")]
    UnsupportedAlgorithm {
        /// Where the algorithm appeared, e.g. `"TPMT_PUBLIC.type"` or `"seed encryption"`.
        structure: &'static str,
        /// The algorithm identifier.
        alg: AlgId,
    },

    /// A structure is well formed but not usable for the operation (wrong object type, missing
    /// symmetric algorithm on a parent, wrong key size, ...).
    #[error("{structure}: {reason}")]
    Invalid {
        /// The structure or operation.
        structure: &'static str,
        /// What is wrong.
        reason: &'static str,
    },

    /// The RSA public key in a public area was rejected by the RSA implementation.
    #[error("{structure}: invalid RSA public key")]
    RsaKey {
        /// The public area, e.g. `"EK public"`.
        structure: &'static str,
        /// The RSA implementation's error.
        #[source]
        source: rsa::Error,
    },

    /// RSA-OAEP encryption of a seed failed.
    #[error("RSA-OAEP encryption of the {purpose} seed failed")]
    SeedEncryption {
        /// `"credential"` (to the EK) or `"duplication"` (to the SRK).
        purpose: &'static str,
        /// The RSA implementation's error.
        #[source]
        source: rsa::Error,
    },

    /// The random number generator failed.
    #[error("random number generator failed")]
    Random(#[source] Box<dyn StdError + Send + Sync + 'static>),
}
