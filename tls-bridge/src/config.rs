use std::sync::Arc;

use hsm_core::{CertificateDer, KeyHandle, X509Attestation};
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};

use crate::{Error, HsmSigningKey};

/// A TLS client identity whose private key stays behind a [`KeyHandle`]: a certificate chain and
/// the handle, checked to match when built.
///
/// ```no_run
/// # fn demo(attestation: &dyn hsm_core::X509Attestation, roots: rustls::RootCertStore)
/// #     -> Result<(), tls_bridge::Error> {
/// let identity = tls_bridge::TlsIdentity::from_attestation(attestation)?;
/// let config = identity.client_config(roots)?; // TLS 1.3 and 1.2, default provider
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct TlsIdentity {
    certified: Arc<CertifiedKey>,
}

impl TlsIdentity {
    /// Pairs a key handle with its certificate chain (leaf first) and checks that the handle's
    /// public key is the leaf's.
    ///
    /// # Errors
    /// [`Error::EmptyChain`] or [`Error::KeyMismatch`].
    pub fn new(
        key: Arc<dyn KeyHandle>,
        chain: Vec<CertificateDer<'static>>,
    ) -> Result<Self, Error> {
        if chain.is_empty() {
            return Err(Error::EmptyChain);
        }
        let certified = CertifiedKey::new(chain, Arc::new(HsmSigningKey::new(key)));
        certified.keys_match().map_err(Error::KeyMismatch)?;
        Ok(Self {
            certified: Arc::new(certified),
        })
    }

    /// The identity of an X.509 attestation: its alias key and certificate chain.
    ///
    /// # Errors
    /// As for [`new`](Self::new).
    pub fn from_attestation(attestation: &dyn X509Attestation) -> Result<Self, Error> {
        Self::new(
            attestation.alias_key(),
            attestation.certificate_chain().to_vec(),
        )
    }

    /// The rustls certified key (chain plus [`HsmSigningKey`]).
    pub fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.certified
    }

    /// A client-certificate resolver that always presents this identity.
    pub fn resolver(&self) -> Arc<dyn ResolvesClientCert> {
        Arc::new(SingleCertAndKey::from(self.certified.clone()))
    }

    /// A client configuration trusting `roots`, with TLS 1.3 and 1.2 and the default provider:
    /// the process default if one is installed, else AWS-LC (feature `aws-lc-rs`, on by default),
    /// else ring (feature `ring`).
    ///
    /// # Errors
    /// [`Error::NoCryptoProvider`] or [`Error::Rustls`].
    pub fn client_config(&self, roots: RootCertStore) -> Result<ClientConfig, Error> {
        self.client_config_with(default_provider()?, rustls::DEFAULT_VERSIONS, roots)
    }

    /// A client configuration with the caller's crypto provider and protocol versions.
    ///
    /// # Errors
    /// [`Error::Rustls`] when the provider does not support the versions.
    pub fn client_config_with(
        &self,
        provider: Arc<CryptoProvider>,
        versions: &[&'static SupportedProtocolVersion],
        roots: RootCertStore,
    ) -> Result<ClientConfig, Error> {
        Ok(ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(Error::Rustls)?
            .with_root_certificates(roots)
            .with_client_cert_resolver(self.resolver()))
    }
}

/// The process-default provider, else the one the crate features select.
pub(crate) fn default_provider() -> Result<Arc<CryptoProvider>, Error> {
    if let Some(provider) = CryptoProvider::get_default() {
        return Ok(provider.clone());
    }
    #[cfg(feature = "aws-lc-rs")]
    return Ok(Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    #[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
    return Ok(Arc::new(rustls::crypto::ring::default_provider()));
    #[allow(unreachable_code)]
    Err(Error::NoCryptoProvider)
}
