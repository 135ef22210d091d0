use std::path::{Path, PathBuf};
use std::sync::Arc;

use hsm_core::{CertificateDer, KeyHandle, RegistrationId, SecretString, X509Attestation};
use zeroize::Zeroizing;

use crate::certificate::LeafInfo;
use crate::{Error, SoftwareKey, load_certificates};

/// An X.509 device identity: a certificate chain and the leaf's private key, loaded from PEM or
/// DER files or bytes. Implements [`X509Attestation`].
///
/// ```no_run
/// use hsm_x509::X509Identity;
///
/// let identity = X509Identity::builder()
///     .certificates_file("device-chain.pem")
///     .key_file("device.key")
///     .build()?;
/// println!("registration id: {}", hsm_core::X509Attestation::registration_id(&identity));
/// # Ok::<(), hsm_x509::Error>(())
/// ```
#[derive(Debug)]
pub struct X509Identity {
    registration_id: RegistrationId,
    chain: Vec<CertificateDer<'static>>,
    key: Arc<SoftwareKey>,
}

impl X509Identity {
    /// A builder; certificates and key are required, the rest optional.
    pub fn builder() -> X509IdentityBuilder {
        X509IdentityBuilder::default()
    }

    /// Loads an unencrypted key and its chain from two files (PEM or DER).
    ///
    /// # Errors
    /// See [`X509IdentityBuilder::build`].
    pub fn from_files(
        certificates: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, Error> {
        Self::builder()
            .certificates_file(certificates)
            .key_file(key)
            .build()
    }

    /// The private key, as its concrete type.
    pub fn key(&self) -> &Arc<SoftwareKey> {
        &self.key
    }
}

impl X509Attestation for X509Identity {
    fn registration_id(&self) -> &RegistrationId {
        &self.registration_id
    }

    fn certificate_chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    fn alias_key(&self) -> Arc<dyn KeyHandle> {
        self.key.clone()
    }
}

enum Source {
    File(PathBuf),
    Bytes(Zeroizing<Vec<u8>>),
}

impl Source {
    fn read(self) -> Result<Zeroizing<Vec<u8>>, Error> {
        match self {
            Self::File(path) => std::fs::read(&path)
                .map(Zeroizing::new)
                .map_err(|source| Error::Io { path, source }),
            Self::Bytes(bytes) => Ok(bytes),
        }
    }
}

/// Builds an [`X509Identity`].
#[derive(Default)]
pub struct X509IdentityBuilder {
    certificates: Option<Source>,
    key: Option<Source>,
    passphrase: Option<SecretString>,
    registration_id: Option<RegistrationId>,
}

impl std::fmt::Debug for X509IdentityBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X509IdentityBuilder")
            .field("registration_id", &self.registration_id)
            .field("passphrase", &self.passphrase)
            .finish_non_exhaustive()
    }
}

impl X509IdentityBuilder {
    /// The certificate chain from a file (PEM or DER), leaf first.
    pub fn certificates_file(mut self, path: impl AsRef<Path>) -> Self {
        self.certificates = Some(Source::File(path.as_ref().to_owned()));
        self
    }

    /// The certificate chain from PEM or DER bytes, leaf first.
    pub fn certificates(mut self, bytes: &[u8]) -> Self {
        self.certificates = Some(Source::Bytes(Zeroizing::new(bytes.to_vec())));
        self
    }

    /// The private key from a file (PEM or DER).
    pub fn key_file(mut self, path: impl AsRef<Path>) -> Self {
        self.key = Some(Source::File(path.as_ref().to_owned()));
        self
    }

    /// The private key from PEM or DER bytes (copied into a zeroizing buffer).
    pub fn key(mut self, bytes: &[u8]) -> Self {
        self.key = Some(Source::Bytes(Zeroizing::new(bytes.to_vec())));
        self
    }

    /// The passphrase of an encrypted PKCS#8 key.
    pub fn passphrase(mut self, passphrase: SecretString) -> Self {
        self.passphrase = Some(passphrase);
        self
    }

    /// The registration id, instead of the leaf certificate's common name.
    pub fn registration_id(mut self, id: RegistrationId) -> Self {
        self.registration_id = Some(id);
        self
    }

    /// Loads and checks everything: the chain parses and is not empty, the key parses and
    /// matches the leaf, and the registration id is valid.
    ///
    /// # Errors
    /// [`Error::Missing`], [`Error::Io`], any loading error of [`load_certificates`] or
    /// [`SoftwareKey::from_bytes`], [`Error::KeyMismatch`], [`Error::NoCommonName`] or
    /// [`Error::RegistrationId`].
    pub fn build(self) -> Result<X509Identity, Error> {
        let certificates = self.certificates.ok_or(Error::Missing("certificates"))?;
        let key = self.key.ok_or(Error::Missing("private key"))?;
        let chain = load_certificates(&certificates.read()?)?;
        let key = SoftwareKey::from_bytes(&key.read()?, self.passphrase.as_ref())?;
        let leaf = LeafInfo::parse(&chain[0])?;
        if leaf.spki != key.public_key_der() {
            return Err(Error::KeyMismatch);
        }
        let registration_id = match self.registration_id {
            Some(id) => id,
            None => RegistrationId::new(leaf.common_name.ok_or(Error::NoCommonName)?)
                .map_err(Error::RegistrationId)?,
        };
        Ok(X509Identity {
            registration_id,
            chain,
            key: Arc::new(key),
        })
    }
}
