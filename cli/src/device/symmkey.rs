//! Symmetric key (hsm-symmkey): a device key (`--symmetric-key`) or a group key the device key
//! is derived from (`--group-key`); in a config file `method = "symmetric_key"` with
//! `symmetric_key` or `group_key` as a value, a file, or (the device key) a `pkcs11:` URI.

use std::path::Path;

use clap::Args;
use serde::Deserialize;

use super::secret::SecretSource;
use crate::Error;
use crate::util::{self, Secret};

/// The symmetric-key flags (and `method = "symmetric_key"` of the config file).
#[derive(Clone, Debug, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SymmetricKeyArgs {
    /// Symmetric key: the device key (base64).
    #[arg(long = "symmetric-key", value_name = "BASE64", value_parser = SecretSource::value, help_heading = "Symmetric key")]
    #[serde(default)]
    pub(crate) symmetric_key: Option<SecretSource>,
    /// Symmetric key: an enrollment group's key (base64); the device key is derived from it
    /// and the registration id.
    #[arg(long = "group-key", value_name = "BASE64", value_parser = SecretSource::value, help_heading = "Symmetric key")]
    #[serde(default)]
    pub(crate) group_key: Option<SecretSource>,
    /// The registration id (config file; the flag is --registration-id).
    #[arg(skip)]
    #[serde(default)]
    pub(crate) registration_id: Option<String>,
}

impl SymmetricKeyArgs {
    /// Resolves the config file's relative paths against its folder.
    pub(crate) fn rebase(&mut self, base: &Path) {
        for source in [&mut self.symmetric_key, &mut self.group_key]
            .into_iter()
            .flatten()
        {
            source.rebase(base);
        }
    }
}

/// A base64 key: the text itself, or the first line of a file.
pub(crate) fn key_text(source: &SecretSource) -> Result<Secret, Error> {
    match source {
        SecretSource::Value(text) => Ok(text.clone()),
        SecretSource::File(path) => read_key_file(path),
        SecretSource::Pkcs11(_) => Err(Error::usage(
            "a group key cannot be a pkcs11: URI (derive the device key, then import it)",
        )),
    }
}

/// A base64 key from the first line of a file.
fn read_key_file(path: &std::path::Path) -> Result<Secret, Error> {
    let bytes = zeroize::Zeroizing::new(util::read(path)?);
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| Error::usage(format!("{} is not a base64 key", path.display())))?;
    Ok(text
        .trim()
        .parse()
        .unwrap_or_else(|never: std::convert::Infallible| match never {}))
}
