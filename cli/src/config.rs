//! The `register --config` file, in the spirit of aziot's `config.toml`.
//!
//! ```toml
//! [provisioning]
//! global_endpoint = "https://global.azure-devices-provisioning.net"
//! id_scope = "0ne00000000"
//!
//! [attestation]            # or [provisioning.attestation], as aziot writes it
//! method = "symmetric_key"
//! registration_id = "my-device"
//! symmetric_key = { value = "BASE64" }
//! ```
//!
//! Relative paths are relative to the file's folder.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::Error;
use crate::util::Secret;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigFile {
    /// Where and how to reach DPS.
    pub(crate) provisioning: ProvisioningSection,
    /// How the device attests (may also sit inside `[provisioning]`).
    #[serde(default)]
    pub(crate) attestation: Option<Attestation>,
    /// The file.
    #[serde(skip)]
    path: PathBuf,
    /// The folder relative paths are resolved against.
    #[serde(skip)]
    base: PathBuf,
}

/// `[provisioning]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProvisioningSection {
    /// Only `"dps"` (accepted for aziot compatibility).
    #[serde(default)]
    source: Option<String>,
    pub(crate) global_endpoint: Option<String>,
    pub(crate) id_scope: Option<String>,
    pub(crate) transport: Option<String>,
    pub(crate) mqtt_port: Option<u16>,
    pub(crate) api_version: Option<String>,
    pub(crate) timeout_secs: Option<u64>,
    pub(crate) retries: Option<u32>,
    #[serde(default)]
    trust_ca: Option<OneOrMany>,
    pub(crate) payload: Option<toml::Value>,
    pub(crate) csr: Option<bool>,
    pub(crate) csr_key: Option<String>,
    pub(crate) issued_cert_out: Option<String>,
    #[serde(default)]
    attestation: Option<Attestation>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// `[attestation]`: one method and its fields.
#[derive(Debug, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub(crate) enum Attestation {
    /// A certificate chain and its key (a file, or a `pkcs11:` URI).
    X509(X509Attestation),
    /// A device key or a group key (a value, a file, or a `pkcs11:` URI for a key on a token).
    SymmetricKey(SymmetricKeyAttestation),
    /// A TPM by TCTI.
    Tpm(TpmAttestation),
    /// A DICE device (hsm-riot).
    Riot(RiotAttestation),
}

/// `method = "x509"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct X509Attestation {
    pub(crate) registration_id: Option<String>,
    /// The chain, leaf first: a path or `file://` URI. Optional when `identity_pk` is a
    /// `pkcs11:` URI (the chain is then read from the token).
    pub(crate) identity_cert: Option<String>,
    /// The private key: a path, a `file://` URI, or a `pkcs11:` URI.
    pub(crate) identity_pk: String,
}

/// `method = "symmetric_key"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SymmetricKeyAttestation {
    pub(crate) registration_id: String,
    pub(crate) symmetric_key: Option<SecretSource>,
    pub(crate) group_key: Option<SecretSource>,
}

/// `method = "tpm"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TpmAttestation {
    /// Checked against the TPM's registration id (derived from its EK) when present; aziot's
    /// files carry it.
    #[serde(default)]
    pub(crate) registration_id: Option<String>,
    pub(crate) tcti: Option<String>,
    pub(crate) ek_template: Option<String>,
}

/// `method = "riot"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RiotAttestation {
    pub(crate) registration_id: Option<String>,
    pub(crate) uds: SecretSource,
    pub(crate) measurement: Option<String>,
    pub(crate) fwid: String,
    pub(crate) root_seed: Option<SecretSource>,
    pub(crate) root_cert: Option<String>,
    pub(crate) root_key: Option<String>,
    pub(crate) root_cn: Option<String>,
}

/// A secret: `{ value = "..." }`, `{ file = "path" }` or `{ uri = "file:///path" }` (or, for a
/// symmetric key, `{ uri = "pkcs11:..." }`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SecretSource {
    value: Option<Secret>,
    file: Option<String>,
    uri: Option<String>,
}

/// Where a secret comes from, resolved against the config file's folder.
#[derive(Debug)]
pub(crate) enum SecretLocation {
    /// Inline.
    Value(Secret),
    /// A file.
    File(PathBuf),
    /// A key on a PKCS#11 token.
    Pkcs11(String),
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = zeroize::Zeroizing::new(String::deserialize(deserializer)?);
        Ok(text.parse().unwrap_or_else(|never| match never {}))
    }
}

impl ConfigFile {
    /// Reads and parses the file.
    pub(crate) fn load(path: &Path) -> Result<Self, Error> {
        let invalid = |reason: String| Error::Config {
            path: path.to_owned(),
            reason,
        };
        let text =
            String::from_utf8(crate::util::read(path)?).map_err(|_| invalid("not UTF-8".into()))?;
        let mut config: Self = toml::from_str(&text).map_err(|e| {
            let at = e
                .span()
                .map(|s| format!(" (line {})", line_of(&text, s.start)))
                .unwrap_or_default();
            invalid(format!("{}{at}", e.message().trim()))
        })?;
        config.path = path.to_owned();
        config.base = path.parent().map(Path::to_owned).unwrap_or_default();
        if let Some(source) = &config.provisioning.source
            && source != "dps"
        {
            return Err(invalid(format!(
                "[provisioning] source = {source:?}: only \"dps\" is supported"
            )));
        }
        if config.provisioning.attestation.is_some() {
            if config.attestation.is_some() {
                return Err(invalid(
                    "both [attestation] and [provisioning.attestation]: give one".into(),
                ));
            }
            config.attestation = config.provisioning.attestation.take();
        }
        Ok(config)
    }

    /// An error about this file.
    pub(crate) fn invalid(&self, reason: impl Into<String>) -> Error {
        Error::Config {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    /// A path from the file: `file://` stripped, relative to the file's folder.
    pub(crate) fn path(&self, text: &str) -> PathBuf {
        let text = text.strip_prefix("file://").unwrap_or(text);
        self.base.join(text)
    }

    /// The CA certificates to trust for DPS.
    pub(crate) fn trust_ca(&self) -> Vec<PathBuf> {
        match &self.provisioning.trust_ca {
            None => Vec::new(),
            Some(OneOrMany::One(one)) => vec![self.path(one)],
            Some(OneOrMany::Many(many)) => many.iter().map(|p| self.path(p)).collect(),
        }
    }

    /// Where a secret comes from.
    pub(crate) fn locate(
        &self,
        what: &str,
        source: &SecretSource,
    ) -> Result<SecretLocation, Error> {
        match (&source.value, &source.file, &source.uri) {
            (Some(value), None, None) => Ok(SecretLocation::Value(value.clone())),
            (None, Some(file), None) => Ok(SecretLocation::File(self.path(file))),
            (None, None, Some(uri)) if uri.starts_with("file://") => {
                Ok(SecretLocation::File(self.path(uri)))
            }
            (None, None, Some(uri)) if uri.starts_with("pkcs11:") => {
                Ok(SecretLocation::Pkcs11(uri.clone()))
            }
            (None, None, Some(uri)) => Err(self.invalid(format!(
                "{what}: uri {uri:?} is neither file:// nor pkcs11:"
            ))),
            _ => Err(self.invalid(format!("{what}: give exactly one of value, file or uri"))),
        }
    }
}

/// The 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(1, |t| t.bytes().filter(|&b| b == b'\n').count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ConfigFile, Error> {
        let dir = tempfile_dir();
        let path = dir.join("config.toml");
        std::fs::write(&path, text).unwrap();
        ConfigFile::load(&path)
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "hsm-provision-config-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn aziot_style_symmetric_key() {
        let config = parse(
            r#"
[provisioning]
source = "dps"
global_endpoint = "https://global.azure-devices-provisioning.net"
id_scope = "0ne00000000"

[provisioning.attestation]
method = "symmetric_key"
registration_id = "my-device"
symmetric_key = { value = "AAAA" }
"#,
        )
        .unwrap();
        let Some(Attestation::SymmetricKey(a)) = &config.attestation else {
            panic!("{:?}", config.attestation)
        };
        assert_eq!(a.registration_id, "my-device");
        let location = config
            .locate("symmetric_key", a.symmetric_key.as_ref().unwrap())
            .unwrap();
        assert!(matches!(location, SecretLocation::Value(v) if v.expose() == "AAAA"));
        assert!(!format!("{config:?}").contains("AAAA"));
    }

    #[test]
    fn x509_paths_are_relative_to_the_file() {
        let config = parse(
            r#"
[provisioning]
id_scope = "0ne00000000"
trust_ca = "ca.pem"
[attestation]
method = "x509"
identity_cert = "file://certs/chain.pem"
identity_pk = "pkcs11:token=t;object=k"
"#,
        )
        .unwrap();
        let Some(Attestation::X509(a)) = &config.attestation else {
            panic!()
        };
        assert!(
            config
                .path(a.identity_cert.as_deref().unwrap())
                .ends_with("certs/chain.pem")
        );
        assert!(config.trust_ca()[0].is_absolute() || config.trust_ca()[0].ends_with("ca.pem"));
    }

    #[test]
    fn mistakes_are_reported_with_the_line() {
        let e = parse("[provisioning]\nid_scope = \"x\"\n[attestation]\nmethod = \"x509\"\nidentity_pk = \"k\"\nbogus = 1\n")
            .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("bogus"), "{text}");
        let e = parse("[provisioning]\nid_scope = \"x\"\n[attestation]\nmethod = \"magic\"\n")
            .unwrap_err();
        assert!(e.to_string().contains("magic"), "{e}");
        let e = parse("[provisioning]\nsource = \"manual\"\n").unwrap_err();
        assert!(e.to_string().contains("only \"dps\""), "{e}");
    }
}
