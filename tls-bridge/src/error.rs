/// Errors building TLS configuration from a key handle.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The certificate chain is empty.
    #[error("the certificate chain is empty")]
    EmptyChain,

    /// The key handle's public key is not the leaf certificate's (or the leaf does not parse).
    #[error("the key handle does not match the leaf certificate")]
    KeyMismatch(#[source] rustls::Error),

    /// No crypto provider: none was given, none is installed as the process default, and neither
    /// the `aws-lc-rs` nor the `ring` feature is enabled.
    #[error(
        "no rustls crypto provider: pass one, install a process default, or enable the aws-lc-rs or ring feature"
    )]
    NoCryptoProvider,

    /// rustls refused the configuration (for example protocol versions the provider lacks).
    #[error("rustls configuration")]
    Rustls(#[source] rustls::Error),
}
