//! The TOML configuration file (`dps-emulator --config enrollments.toml`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use serde::Deserialize;

use crate::enrollment::{AllocationPolicy, Enrollment, EnrollmentGroup, KeyPair, Thumbprint};
use crate::{EmulatorBuilder, Error, Fault};

/// The emulator's configuration, as read from TOML. See `dps-emulator/enrollments.example.toml`
/// for every field.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    id_scope: Option<String>,
    #[serde(default)]
    iot_hubs: Option<Vec<String>>,
    #[serde(default)]
    allocation: Option<AllocationPolicy>,
    #[serde(default)]
    retry_after: Option<u32>,
    #[serde(default)]
    assigning_polls: Option<u32>,
    /// Seconds certificates issued from CSRs are valid.
    #[serde(default)]
    issued_certificate_seconds: Option<u64>,
    /// Whether the hubs answer certificate requests.
    #[serde(default)]
    hub_certificate_management: Option<bool>,
    #[serde(default)]
    state_file: Option<PathBuf>,
    #[serde(default)]
    https: Option<Listen>,
    #[serde(default)]
    mqtt: Option<MqttListen>,
    #[serde(default)]
    amqp: Option<MqttListen>,
    #[serde(default)]
    tls: Option<TlsConfig>,
    #[serde(default, rename = "enrollment")]
    enrollments: Vec<EnrollmentConfig>,
    #[serde(default, rename = "group")]
    groups: Vec<GroupConfig>,
    #[serde(default, rename = "fault")]
    faults: Vec<Fault>,
    #[serde(skip)]
    base: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Listen {
    listen: SocketAddr,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
/// `[mqtt]` or `[amqp]`: where it listens, or `enabled = false`.
struct MqttListen {
    #[serde(default)]
    listen: Option<SocketAddr>,
    #[serde(default = "yes")]
    enabled: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsConfig {
    #[serde(default)]
    ca_certificate: Option<PathBuf>,
    #[serde(default)]
    ca_key: Option<PathBuf>,
    #[serde(default)]
    write_ca: Option<PathBuf>,
    #[serde(default)]
    server_names: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Keys {
    primary: KeyText,
    #[serde(default)]
    secondary: Option<KeyText>,
}

/// A key from the file: a string, zeroized on drop, and never quoted in an error (serde's own
/// messages quote the value they refuse).
struct KeyText(zeroize::Zeroizing<String>);

impl std::fmt::Debug for KeyText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match toml::Value::deserialize(deserializer)? {
            toml::Value::String(text) => Ok(Self(zeroize::Zeroizing::new(text))),
            other => Err(serde::de::Error::custom(format!(
                "a key is a base64 string, not {} {}",
                article(other.type_str()),
                other.type_str()
            ))),
        }
    }
}

/// "a" or "an", for a TOML type name.
fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrollmentConfig {
    registration_id: toml::Spanned<String>,
    #[serde(default)]
    device_id: Option<String>,
    #[serde(default)]
    symmetric_key: Option<Keys>,
    #[serde(default)]
    x509_certificate: Option<PathBuf>,
    #[serde(default)]
    x509_thumbprint: Option<String>,
    #[serde(default)]
    tpm_endorsement_key: Option<String>,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    iot_hubs: Vec<String>,
    #[serde(default)]
    allocation: Option<AllocationPolicy>,
    #[serde(default)]
    initial_twin: Option<toml::Value>,
    #[serde(default)]
    return_payload: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupConfig {
    id: toml::Spanned<String>,
    #[serde(default)]
    symmetric_key: Option<Keys>,
    #[serde(default)]
    x509_ca: Option<PathBuf>,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    iot_hubs: Vec<String>,
    #[serde(default)]
    allocation: Option<AllocationPolicy>,
    #[serde(default)]
    initial_twin: Option<toml::Value>,
    #[serde(default)]
    return_payload: Option<toml::Value>,
}

impl Config {
    /// Reads a TOML file; relative paths inside it are relative to the file's folder.
    ///
    /// # Errors
    /// [`Error::File`] when it cannot be read, [`Error::Config`] when it is not valid.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let text = crate::files::read_text(path, "read configuration")?;
        let mut config = Self::from_toml(&text).map_err(|e| match e {
            Error::Config { reason, .. } => Error::Config {
                path: Some(path.to_owned()),
                reason,
            },
            other => other,
        })?;
        config.base = path.parent().map(Path::to_owned).unwrap_or_default();
        Ok(config)
    }

    /// Parses TOML text; relative paths are relative to the current directory.
    ///
    /// # Errors
    /// [`Error::Config`] when it is not valid.
    pub fn from_toml(text: &str) -> Result<Self, Error> {
        let invalid = |reason: String| Error::Config { path: None, reason };
        // The parser's message and the line, never its excerpt of the file: that line may hold
        // a key.
        let config: Self = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|s| format!(" (line {})", line_of(text, s.start)))
                .unwrap_or_default();
            invalid(format!("{}{at}", e.message().trim()))
        })?;
        config.check_ids(text).map_err(invalid)?;
        Ok(config)
    }

    /// Every registration id and group id valid, and none twice (DPS ids ignore case).
    fn check_ids(&self, text: &str) -> Result<(), String> {
        let mut seen: HashMap<String, usize> = HashMap::new();
        let ids = self
            .enrollments
            .iter()
            .map(|e| ("registration id", &e.registration_id))
            .chain(self.groups.iter().map(|g| ("group id", &g.id)));
        for (what, id) in ids {
            let line = line_of(text, id.span().start);
            if let Err(e) = hsm_core::RegistrationId::new(id.get_ref().as_str()) {
                let reason = match e {
                    hsm_core::Error::InvalidRegistrationId { reason } => reason,
                    other => other.to_string(),
                };
                return Err(format!("line {line}: the {what} is not valid: {reason}"));
            }
            let key = format!("{what}:{}", id.get_ref().to_ascii_lowercase());
            if let Some(first) = seen.insert(key, line) {
                return Err(format!(
                    "line {line}: {what} \"{}\" is given twice (first at line {first}); DPS ids \
                     ignore case",
                    id.get_ref()
                ));
            }
        }
        Ok(())
    }

    /// Where to write the CA certificate for clients, if configured.
    pub fn write_ca_path(&self) -> Option<PathBuf> {
        self.tls
            .as_ref()
            .and_then(|t| t.write_ca.as_ref())
            .map(|p| self.base.join(p))
    }

    fn read(&self, path: &Path, what: &'static str) -> Result<String, Error> {
        crate::files::read_text(&self.base.join(path), what)
    }

    fn certificate(&self, id: &str, path: &Path) -> Result<CertificateDer<'static>, Error> {
        let pem = self.read(path, "read certificate")?;
        CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| Error::Enrollment {
            id: id.to_owned(),
            reason: format!(
                "{} is not a PEM certificate: {}",
                path.display(),
                crate::tls::pem_problem(&e)
            ),
        })
    }

    /// Turns the configuration into a builder (which can still be changed, e.g. ports).
    ///
    /// # Errors
    /// [`Error::Enrollment`] for an invalid key, certificate or EK; [`Error::File`] for a file
    /// that cannot be read.
    pub fn into_builder(self) -> Result<EmulatorBuilder, Error> {
        let mut b = EmulatorBuilder::default();
        if let Some(scope) = &self.id_scope {
            b = b.id_scope(scope);
        }
        if let Some(hubs) = &self.iot_hubs {
            b = b.iot_hubs(hubs.clone());
        }
        if let Some(policy) = self.allocation {
            b = b.allocation(policy);
        }
        if let Some(r) = self.retry_after {
            b = b.retry_after(r);
        }
        if let Some(p) = self.assigning_polls {
            b = b.assigning_polls(p);
        }
        if let Some(seconds) = self.issued_certificate_seconds {
            b = b.issued_certificate_validity(std::time::Duration::from_secs(seconds.max(1)));
        }
        if let Some(enabled) = self.hub_certificate_management {
            b = b.hub_certificate_management(enabled);
        }
        if let Some(f) = &self.state_file {
            b = b.state_file(self.base.join(f));
        }
        if let Some(h) = &self.https {
            b = b.https_listen(h.listen);
        }
        if let Some(m) = &self.mqtt {
            b = b.mqtt_listen(if m.enabled {
                Some(m.listen.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0))))
            } else {
                None
            });
        }
        if let Some(a) = &self.amqp {
            b = b.amqp_listen(if a.enabled {
                Some(a.listen.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0))))
            } else {
                None
            });
        }
        if let Some(tls) = &self.tls {
            match (&tls.ca_certificate, &tls.ca_key) {
                (Some(c), Some(k)) => {
                    b = b.ca_pem(
                        self.read(c, "read CA certificate")?,
                        self.read(k, "read CA key")?,
                    );
                }
                (None, None) => {}
                _ => {
                    return Err(Error::Config {
                        path: None,
                        reason: "tls.ca_certificate and tls.ca_key go together".into(),
                    });
                }
            }
            for name in &tls.server_names {
                b = b.server_name(name);
            }
        }
        for e in &self.enrollments {
            b = b.enroll(self.enrollment(e)?);
        }
        for g in &self.groups {
            b = b.enroll_group(self.group(g)?);
        }
        for f in self.faults {
            b = b.fault(f);
        }
        Ok(b)
    }

    fn enrollment(&self, e: &EnrollmentConfig) -> Result<Enrollment, Error> {
        let id = e.registration_id.get_ref().as_str();
        let chosen = [
            e.symmetric_key.is_some(),
            e.x509_certificate.is_some(),
            e.x509_thumbprint.is_some(),
            e.tpm_endorsement_key.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if chosen != 1 {
            return Err(Error::Enrollment {
                id: id.to_owned(),
                reason: "give exactly one of symmetric_key, x509_certificate, x509_thumbprint, \
                         tpm_endorsement_key"
                    .into(),
            });
        }
        let mut enrollment = if let Some(k) = &e.symmetric_key {
            Enrollment::symmetric_key(
                id,
                KeyPair::from_base64(id, &k.primary.0, k.secondary.as_ref().map(|s| s.0.as_str()))?,
            )
        } else if let Some(path) = &e.x509_certificate {
            Enrollment::x509_certificate(id, self.certificate(id, path)?)
        } else if let Some(t) = &e.x509_thumbprint {
            Enrollment::x509_thumbprint(id, Thumbprint::from_hex(id, t)?)
        } else {
            let ek = e.tpm_endorsement_key.as_deref().unwrap_or_default();
            let ek = BASE64.decode(ek.trim()).map_err(|err| Error::Enrollment {
                id: id.to_owned(),
                reason: format!("tpm_endorsement_key is not base64: {err}"),
            })?;
            Enrollment::tpm(id, ek)
        };
        if let Some(d) = &e.device_id {
            enrollment = enrollment.device_id(d);
        }
        enrollment.common = common(
            e.enabled,
            &e.iot_hubs,
            e.allocation,
            &e.initial_twin,
            &e.return_payload,
        )?;
        Ok(enrollment)
    }

    fn group(&self, g: &GroupConfig) -> Result<EnrollmentGroup, Error> {
        let id = g.id.get_ref().as_str();
        let mut group = match (&g.symmetric_key, &g.x509_ca) {
            (Some(k), None) => EnrollmentGroup::symmetric_key(
                id,
                KeyPair::from_base64(id, &k.primary.0, k.secondary.as_ref().map(|s| s.0.as_str()))?,
            ),
            (None, Some(path)) => EnrollmentGroup::x509_ca(id, self.certificate(id, path)?),
            _ => {
                return Err(Error::Enrollment {
                    id: id.to_owned(),
                    reason: "give exactly one of symmetric_key, x509_ca".into(),
                });
            }
        };
        group.common = common(
            g.enabled,
            &g.iot_hubs,
            g.allocation,
            &g.initial_twin,
            &g.return_payload,
        )?;
        Ok(group)
    }
}

/// The 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(1, |t| t.bytes().filter(|&b| b == b'\n').count() + 1)
}

fn common(
    enabled: bool,
    iot_hubs: &[String],
    allocation: Option<AllocationPolicy>,
    initial_twin: &Option<toml::Value>,
    return_payload: &Option<toml::Value>,
) -> Result<crate::enrollment::Common, Error> {
    let json = |v: &Option<toml::Value>| {
        v.as_ref()
            .map(|v| {
                serde_json::to_value(v).map_err(|e| Error::Config {
                    path: None,
                    reason: e.to_string(),
                })
            })
            .transpose()
    };
    Ok(crate::enrollment::Common {
        enabled,
        iot_hubs: iot_hubs.to_vec(),
        allocation,
        initial_twin: json(initial_twin)?,
        return_payload: json(return_payload)?,
    })
}
