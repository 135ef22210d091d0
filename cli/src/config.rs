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
use crate::device::ConfigAttestation;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigFile {
    /// Where and how to reach DPS.
    pub(crate) provisioning: ProvisioningSection,
    /// How the device attests (may also sit inside `[provisioning]`).
    #[serde(default)]
    attestation: Option<ConfigAttestation>,
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
    pub(crate) amqp_port: Option<u16>,
    pub(crate) api_version: Option<String>,
    pub(crate) timeout_secs: Option<u64>,
    pub(crate) retries: Option<u32>,
    #[serde(default)]
    trust_ca: Option<OneOrMany>,
    pub(crate) payload: Option<toml::Value>,
    pub(crate) csr: Option<bool>,
    pub(crate) csr_key: Option<String>,
    pub(crate) issued_cert_out: Option<String>,
    /// An HTTP proxy URL, or `none`.
    pub(crate) proxy: Option<String>,
    /// The folder of the assignment cache (`connect`, `renew`, `status`).
    pub(crate) state_dir: Option<String>,
    /// Where issued certificates' keys are generated: a folder, a `pkcs11:` URI, `tpm`.
    pub(crate) key_store: Option<String>,
    /// The label prefix of generated keys.
    pub(crate) key_label: Option<String>,
    #[serde(default)]
    attestation: Option<ConfigAttestation>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
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
        let base = config.base.clone();
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
        if let Some(attestation) = &mut config.attestation {
            attestation.rebase(&base);
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

    /// The `[attestation]` section, its paths resolved against the file's folder.
    pub(crate) fn attestation(&self) -> Option<ConfigAttestation> {
        self.attestation.clone()
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
    use crate::device::secret::SecretSource;

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
        let Some(ConfigAttestation::SymmetricKey(a)) = config.attestation() else {
            panic!("{:?}", config.attestation)
        };
        assert_eq!(a.registration_id.as_deref(), Some("my-device"));
        let location = a.symmetric_key.as_ref().unwrap();
        assert!(matches!(location, SecretSource::Value(v) if v.expose() == "AAAA"));
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
        let Some(ConfigAttestation::X509(a)) = config.attestation() else {
            panic!()
        };
        assert!(a.cert.as_deref().unwrap().ends_with("certs/chain.pem"));
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
