//! Where a secret comes from: inline, a file, or (for a symmetric key) a key on a PKCS#11
//! token. The same type serves a flag (`--symmetric-key BASE64`, `--riot-uds-file FILE`) and a
//! config file's table (`symmetric_key = { file = "device.key" }`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::util::Secret;

/// A secret's source.
#[derive(Clone, Debug)]
pub(crate) enum SecretSource {
    /// The secret itself (base64 or hex text, as the field says).
    Value(Secret),
    /// A file holding it.
    File(PathBuf),
    /// A key on a PKCS#11 token (`pkcs11:` URI); only a symmetric key can be one.
    Pkcs11(String),
}

impl SecretSource {
    /// Clap's parser for a flag that takes the secret itself.
    pub(crate) fn value(text: &str) -> Result<Self, std::convert::Infallible> {
        Ok(Self::Value(text.parse()?))
    }

    /// Clap's parser for a flag that takes a file.
    pub(crate) fn file(text: &str) -> Result<Self, std::convert::Infallible> {
        Ok(Self::File(PathBuf::from(text)))
    }

    /// A relative file (from a config file) resolved against the file's folder.
    pub(crate) fn rebase(&mut self, base: &Path) {
        if let Self::File(path) = self {
            *path = base.join(&*path);
        }
    }
}

/// `{ value = "..." }`, `{ file = "path" }` or `{ uri = "file:///path" | "pkcs11:..." }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    value: Option<Secret>,
    file: Option<String>,
    uri: Option<String>,
}

impl<'de> Deserialize<'de> for SecretSource {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let table = Table::deserialize(deserializer)?;
        match (table.value, table.file, table.uri) {
            (Some(value), None, None) => Ok(Self::Value(value)),
            (None, Some(file), None) => Ok(Self::File(PathBuf::from(file))),
            (None, None, Some(uri)) => {
                if let Some(path) = uri.strip_prefix("file://") {
                    Ok(Self::File(PathBuf::from(path)))
                } else if uri.starts_with("pkcs11:") {
                    Ok(Self::Pkcs11(uri))
                } else {
                    Err(D::Error::custom("uri must be file:// or pkcs11:"))
                }
            }
            _ => Err(D::Error::custom("give exactly one of value, file or uri")),
        }
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = zeroize::Zeroizing::new(String::deserialize(deserializer)?);
        Ok(text.parse().unwrap_or_else(|never| match never {}))
    }
}
