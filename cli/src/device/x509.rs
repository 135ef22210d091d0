//! X.509 from files (hsm-x509): `--x509-cert` and `--x509-key`, or in a config file
//! `method = "x509"` with `identity_cert` and `identity_pk`. An `identity_pk` that is a
//! `pkcs11:` URI names a key on a token instead (see [`super::pkcs11`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use hsm_core::KeyHandle;
use serde::Deserialize;

use super::pkcs11::{Pkcs11Options, open_token, parse_uri};
use super::rebase;
use crate::Error;
use crate::util;

/// The X.509 flags (and `method = "x509"` of the config file).
#[derive(Clone, Debug, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct X509Args {
    /// X.509: the certificate chain (PEM or DER, leaf first); with --pkcs11, the chain to use
    /// instead of the token's certificates.
    #[arg(
        long = "x509-cert",
        value_name = "FILE",
        help_heading = "X.509 from files"
    )]
    #[serde(rename = "identity_cert", default)]
    pub(crate) cert: Option<PathBuf>,
    /// X.509: the private key (PKCS#8, SEC1 or PKCS#1; PEM or DER).
    #[arg(long = "x509-key", value_name = "FILE", value_parser = KeyLocation::parse_flag, help_heading = "X.509 from files")]
    #[serde(rename = "identity_pk", default)]
    pub(crate) key: Option<KeyLocation>,
    /// The registration id (config file; the flag is --registration-id).
    #[arg(skip)]
    #[serde(default)]
    pub(crate) registration_id: Option<String>,
}

impl X509Args {
    /// Whether any X.509 flag was given.
    pub(crate) fn given(&self) -> bool {
        self.cert.is_some() || self.key.is_some()
    }

    /// Resolves the config file's relative paths against its folder.
    pub(crate) fn rebase(&mut self, base: &Path) {
        if let Some(cert) = &mut self.cert {
            rebase(cert, base);
        }
        if let Some(KeyLocation::File(key)) = &mut self.key {
            rebase(key, base);
        }
    }

    /// Opens the identity from its two files.
    pub(crate) fn open(
        cert: &Path,
        key: &Path,
        registration_id: Option<hsm_core::RegistrationId>,
    ) -> Result<hsm_core::CertifiedKey, Error> {
        let mut builder = hsm_x509::X509IdentityBuilder::new()
            .certificates(&util::read(cert)?)
            .key(&util::read(key)?);
        if let Some(id) = registration_id {
            builder = builder.registration_id(id);
        }
        builder.build().map_err(|source| Error::X509 {
            operation: "cannot load the X.509 identity",
            source,
        })
    }
}

/// A private key: a PEM/DER file (or `file://` URI), or a key on a PKCS#11 token.
#[derive(Clone, Debug)]
pub(crate) enum KeyLocation {
    /// A software key in a file.
    File(PathBuf),
    /// A key on a token, by `pkcs11:` URI.
    Pkcs11(String),
}

impl KeyLocation {
    /// `pkcs11:` URIs name a token key, anything else a file (`file://` stripped).
    pub(crate) fn parse(text: &str) -> Self {
        if text.starts_with("pkcs11:") {
            Self::Pkcs11(text.to_owned())
        } else {
            Self::File(PathBuf::from(text.strip_prefix("file://").unwrap_or(text)))
        }
    }

    /// Clap's parser.
    pub(crate) fn parse_flag(text: &str) -> Result<Self, std::convert::Infallible> {
        Ok(Self::parse(text))
    }

    /// Opens the key (for a CSR): the file's software key, or the token's key.
    pub(crate) fn open(&self, options: &Pkcs11Options) -> Result<Arc<dyn KeyHandle>, Error> {
        match self {
            Self::File(path) => {
                let key = hsm_x509::SoftwareKey::from_bytes(&util::read(path)?, None).map_err(
                    |source| Error::X509 {
                        operation: "cannot load the CSR key",
                        source,
                    },
                )?;
                Ok(Arc::new(key))
            }
            Self::Pkcs11(uri) => {
                let uri = parse_uri(uri)?;
                let token = open_token(&uri, options)?;
                let key =
                    hsm_pkcs11::Pkcs11Key::open(&token, &uri).map_err(|source| Error::Pkcs11 {
                        operation: "cannot open the CSR key on the PKCS#11 token",
                        source,
                    })?;
                Ok(Arc::new(key))
            }
        }
    }
}

impl<'de> Deserialize<'de> for KeyLocation {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Self::parse(&String::deserialize(deserializer)?))
    }
}
