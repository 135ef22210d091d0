use std::error::Error as StdError;

use crate::{CertificateProblem, KeyAlgorithm, SignatureScheme};

/// The cause a driver reports for a failed device operation (a PKCS#11 return value, a TPM
/// response code, an I/O error, ...). Boxed so that `hsm-core` stays free of driver types.
pub type DeviceError = Box<dyn StdError + Send + Sync + 'static>;

/// Everything that can go wrong at the `hsm-core` contract.
///
/// Drivers report their own failures through [`Error::Device`], naming the operation and keeping
/// the device's error as the [`source`](std::error::Error::source), so that an operator sees
/// "sign failed: C_Sign: CKR_DEVICE_REMOVED" rather than an opaque "remote error".
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key cannot produce signatures with this scheme (wrong key type or curve).
    #[error("key algorithm {algorithm} cannot sign with {scheme}")]
    UnsupportedScheme {
        /// The key's algorithm.
        algorithm: KeyAlgorithm,
        /// The scheme that was asked for.
        scheme: SignatureScheme,
    },

    /// A raw or DER ECDSA signature was malformed (wrong length, zero or out-of-range scalars,
    /// bad DER).
    #[error("malformed {format} ECDSA signature for {algorithm}")]
    MalformedSignature {
        /// The curve the signature was meant for.
        algorithm: KeyAlgorithm,
        /// `"raw r||s"` or `"DER"`.
        format: &'static str,
    },

    /// A registration id broke one of DPS's rules.
    #[error("invalid registration id: {reason}")]
    InvalidRegistrationId {
        /// What is wrong, naming the offending character and position where there is one.
        reason: String,
    },

    /// A SAS token could not be built (empty resource, expiry in the past, clock error).
    #[error("cannot build SAS token: {reason}")]
    InvalidSasToken {
        /// What is wrong.
        reason: &'static str,
    },

    /// A certificate chain cannot serve as an X.509 identity for its key (see
    /// [`CertifiedKey`](crate::CertifiedKey)).
    #[error("{problem}")]
    Certificate {
        /// What is wrong with it.
        problem: CertificateProblem,
    },

    /// A certificate signing request could not be encoded.
    #[error("cannot encode the certificate signing request")]
    Csr {
        /// The encoder's error.
        #[source]
        source: DeviceError,
    },

    /// A key label broke one of [`KeyLabel`](crate::KeyLabel)'s rules.
    #[error("invalid key label: {reason}")]
    InvalidKeyLabel {
        /// What is wrong, naming the offending character and position where there is one.
        reason: String,
    },

    /// A key store already holds a key under this label.
    #[error("a key labelled {label} exists already")]
    KeyExists {
        /// The label.
        label: String,
    },

    /// A key store holds no key under this label.
    #[error("no key labelled {label}")]
    NoSuchKey {
        /// The label.
        label: String,
    },

    /// A key store cannot generate keys of this algorithm.
    #[error("this key store cannot generate {algorithm} keys")]
    CannotGenerate {
        /// The algorithm asked for.
        algorithm: KeyAlgorithm,
    },

    /// A device (HSM, token, TPM, key store) operation failed; `source` holds the device's cause.
    #[error("{operation} failed")]
    Device {
        /// The operation that failed, e.g. `"sign"` or `"C_Sign"`.
        operation: &'static str,
        /// The driver's error.
        #[source]
        source: DeviceError,
    },
}

impl Error {
    /// Wraps a driver's error for the operation that failed.
    pub fn device(operation: &'static str, source: impl Into<DeviceError>) -> Self {
        Self::Device {
            operation,
            source: source.into(),
        }
    }
}
