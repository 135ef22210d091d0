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

/// `{ value = "..." }`, `{ file = "path" }` or `{ uri = "file:///path" | "pkcs11:..." }`. Read
/// through `toml::Value`, so that no error quotes what it refused (serde's messages would: a
/// key written as a bare string would end up on the terminal).
impl<'de> Deserialize<'de> for SecretSource {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        const SHAPE: &str = "a secret is a table: { value = \"...\" }, { file = \"path\" } or \
                             { uri = \"file://...\" | \"pkcs11:...\" }";
        let toml::Value::Table(mut table) = toml::Value::deserialize(deserializer)? else {
            return Err(D::Error::custom(SHAPE));
        };
        let mut take = |name: &str| match table.remove(name) {
            None => Ok(None),
            Some(toml::Value::String(text)) => Ok(Some(zeroize::Zeroizing::new(text))),
            Some(other) => Err(D::Error::custom(format!(
                "{name} must be a string, not a {}",
                other.type_str()
            ))),
        };
        let (value, file, uri) = (take("value")?, take("file")?, take("uri")?);
        if let Some(unknown) = table.keys().next() {
            return Err(D::Error::custom(format!(
                "unknown field `{unknown}` in a secret: {SHAPE}"
            )));
        }
        match (value, file, uri) {
            (Some(value), None, None) => Ok(Self::Value(
                value.parse().unwrap_or_else(|never| match never {}),
            )),
            (None, Some(file), None) => Ok(Self::File(PathBuf::from(file.as_str()))),
            (None, None, Some(uri)) => {
                if let Some(path) = uri.strip_prefix("file://") {
                    Ok(Self::File(PathBuf::from(path)))
                } else if uri.starts_with("pkcs11:") {
                    Ok(Self::Pkcs11(uri.as_str().to_owned()))
                } else {
                    Err(D::Error::custom("uri must be file:// or pkcs11:"))
                }
            }
            _ => Err(D::Error::custom("give exactly one of value, file or uri")),
        }
    }
}
