/// Errors of the DICE engine. Messages never contain the UDS, a CDI or a private key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An input has the wrong length.
    #[error("{what} must be {expected} bytes, got {got}")]
    WrongLength {
        /// `"UDS"`, `"CDI"`, `"FWID"`, `"measurement"`, `"layer measurement"`.
        what: &'static str,
        /// The required length.
        expected: usize,
        /// The length given.
        got: usize,
    },

    /// The UDS is all zeros: a device that was never provisioned with a secret.
    #[error("the UDS is all zeros; refuse it unless explicitly allowed for tests")]
    ZeroUds,

    /// The root key cannot sign certificates (only ECDSA P-256/P-384, RSA and Ed25519 can).
    #[error("the root key cannot sign certificates")]
    UnsupportedRootKey(#[source] hsm_core::Error),

    /// A common name is not a valid registration id (for the Alias) or is too long.
    #[error("invalid common name {name:?}: {reason}")]
    InvalidCommonName {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },

    /// The root certificate does not parse or does not belong to the root key.
    #[error("the root certificate is unusable: {0}")]
    RootCertificate(String),

    /// rcgen refused to build a certificate.
    #[error("cannot build the {what} certificate")]
    Certificate {
        /// Which certificate.
        what: &'static str,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },

    /// The derived chain does not form an identity with the Alias key (a bug: the chain was
    /// just issued for it).
    #[error("the derived chain is not an identity for the Alias key")]
    Identity(#[source] hsm_core::Error),
}
