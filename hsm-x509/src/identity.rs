use std::path::{Path, PathBuf};
use std::sync::Arc;

use hsm_core::{CertifiedKey, RegistrationId, SecretString};
use zeroize::Zeroizing;

use crate::{Error, SoftwareKey, load_certificates};

/// Loads an unencrypted key and its chain from two files (PEM or DER): the identity
/// [`X509IdentityBuilder`] builds from them.
///
/// ```no_run
/// let identity = hsm_x509::from_files("device-chain.pem", "device.key")?;
/// println!("registration id: {}", identity.registration_id());
/// # Ok::<(), hsm_x509::Error>(())
/// ```
///
/// # Errors
/// See [`X509IdentityBuilder::build`].
pub fn from_files(
    certificates: impl AsRef<Path>,
    key: impl AsRef<Path>,
) -> Result<CertifiedKey, Error> {
    X509IdentityBuilder::new()
        .certificates_file(certificates)
        .key_file(key)
        .build()
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

/// Builds an X.509 identity (a [`CertifiedKey`]: the chain and the key behind a handle) from PEM
/// or DER files or bytes.
///
/// ```no_run
/// use hsm_x509::X509IdentityBuilder;
///
/// let identity = X509IdentityBuilder::new()
///     .certificates_file("device-chain.pem")
///     .key_file("device.key")
///     .build()?;
/// println!("registration id: {}", identity.registration_id());
/// # Ok::<(), hsm_x509::Error>(())
/// ```
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
    /// A builder; certificates and key are required, the rest optional.
    pub fn new() -> Self {
        Self::default()
    }

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
    pub fn build(self) -> Result<CertifiedKey, Error> {
        let certificates = self.certificates.ok_or(Error::Missing("certificates"))?;
        let key = self.key.ok_or(Error::Missing("private key"))?;
        let chain = load_certificates(&certificates.read()?)?;
        let key = SoftwareKey::from_bytes(&key.read()?, self.passphrase.as_ref())?;
        CertifiedKey::with_optional_registration_id(Arc::new(key), chain, self.registration_id)
            .map_err(Error::identity)
    }
}
