//! Individual enrollments and enrollment groups, built in code or read from TOML.

use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use hsm_core::SecretBytes;
use rustls_pki_types::CertificateDer;
use sha2::Sha256;

use crate::Error;

/// How a device assigned through an enrollment is placed on an IoT Hub.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllocationPolicy {
    /// Devices are spread evenly over the hubs by a hash of their registration id (DPS's
    /// "evenly weighted distribution"). The default.
    #[default]
    Hashed,
    /// Every device goes to the first hub of the list (DPS's "static configuration").
    Static,
}

/// A symmetric-key pair as DPS stores it: primary and optional secondary key, both accepted.
pub struct KeyPair {
    primary: SecretBytes,
    secondary: Option<SecretBytes>,
}

impl KeyPair {
    /// Decodes base64 keys as the Azure portal shows them.
    ///
    /// # Errors
    /// [`Error::Enrollment`] when a key is not base64 or is empty.
    pub fn from_base64(id: &str, primary: &str, secondary: Option<&str>) -> Result<Self, Error> {
        let decode = |which: &str, key: &str| {
            let bytes = BASE64.decode(key.trim()).map_err(|e| Error::Enrollment {
                id: id.to_owned(),
                reason: format!("the {which} key is not base64: {e}"),
            })?;
            if bytes.is_empty() {
                return Err(Error::Enrollment {
                    id: id.to_owned(),
                    reason: format!("the {which} key is empty"),
                });
            }
            Ok(SecretBytes::new(bytes))
        };
        Ok(Self {
            primary: decode("primary", primary)?,
            secondary: secondary.map(|s| decode("secondary", s)).transpose()?,
        })
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &[u8]> {
        std::iter::once(self.primary.expose()).chain(self.secondary.as_ref().map(|s| s.expose()))
    }

    /// The device keys of a group key pair for one registration id:
    /// `HMAC-SHA256(group key, registration id)` per key.
    pub(crate) fn derive(&self, registration_id: &str) -> KeyPair {
        let derive = |key: &[u8]| {
            // HMAC-SHA256 takes keys of any length.
            let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
                .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
            mac.update(registration_id.as_bytes());
            SecretBytes::new(mac.finalize().into_bytes().to_vec())
        };
        KeyPair {
            primary: derive(self.primary.expose()),
            secondary: self.secondary.as_ref().map(|s| derive(s.expose())),
        }
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyPair([redacted])")
    }
}

/// A certificate thumbprint: the SHA-1 or SHA-256 of its DER, as DPS accepts in an individual
/// X.509 enrollment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Thumbprint(Vec<u8>);

impl Thumbprint {
    /// Parses a hex thumbprint (40 or 64 hex digits, colons and spaces ignored).
    ///
    /// # Errors
    /// [`Error::Enrollment`] for anything else.
    pub fn from_hex(id: &str, hex: &str) -> Result<Self, Error> {
        let clean: String = hex
            .chars()
            .filter(|c| !matches!(c, ':' | ' '))
            .collect::<String>()
            .to_ascii_uppercase();
        let bytes = data_encoding::HEXUPPER
            .decode(clean.as_bytes())
            .map_err(|e| Error::Enrollment {
                id: id.to_owned(),
                reason: format!("the thumbprint is not hex: {e}"),
            })?;
        if bytes.len() != 20 && bytes.len() != 32 {
            return Err(Error::Enrollment {
                id: id.to_owned(),
                reason: "a thumbprint is a SHA-1 (40 hex digits) or SHA-256 (64 hex digits)".into(),
            });
        }
        Ok(Self(bytes))
    }

    pub(crate) fn matches(&self, der: &[u8]) -> bool {
        use sha1::Digest as _;
        match self.0.len() {
            20 => sha1::Sha1::digest(der).as_slice() == self.0.as_slice(),
            _ => sha2::Sha256::digest(der).as_slice() == self.0.as_slice(),
        }
    }
}

/// How an individual enrollment attests.
#[derive(Debug)]
#[non_exhaustive]
pub enum IndividualAttestation {
    /// X.509: the device presents this exact certificate (or one with this thumbprint).
    X509(X509Match),
    /// Symmetric key: the device signs its SAS token with one of these keys.
    SymmetricKey(KeyPair),
    /// TPM: the device's endorsement key (marshaled `TPM2B_PUBLIC`).
    Tpm {
        /// The marshaled `TPM2B_PUBLIC` of the EK, as the device sends it.
        endorsement_key: Vec<u8>,
    },
}

/// What an individual X.509 enrollment recognises.
#[derive(Debug)]
#[non_exhaustive]
pub enum X509Match {
    /// The device's certificate itself.
    Certificate(CertificateDer<'static>),
    /// A thumbprint of the device's certificate.
    Thumbprint(Thumbprint),
}

/// How an enrollment group attests its devices.
#[derive(Debug)]
#[non_exhaustive]
pub enum GroupAttestation {
    /// X.509: devices present a chain that verifies to this root or intermediate CA certificate.
    X509Ca(CertificateDer<'static>),
    /// Symmetric key: devices sign with `HMAC-SHA256(group key, registration id)`.
    SymmetricKey(KeyPair),
}

/// Settings shared by individual enrollments and groups.
#[derive(Debug, Default, Clone)]
pub(crate) struct Common {
    pub(crate) enabled: bool,
    pub(crate) iot_hubs: Vec<String>,
    pub(crate) allocation: Option<AllocationPolicy>,
    pub(crate) initial_twin: Option<serde_json::Value>,
    pub(crate) return_payload: Option<serde_json::Value>,
}

macro_rules! common_setters {
    () => {
        /// Disables the enrollment: devices get the status `disabled`.
        #[must_use]
        pub fn disabled(mut self) -> Self {
            self.common.enabled = false;
            self
        }

        /// Sets whether the enrollment is enabled (the default).
        #[must_use]
        pub fn enabled(mut self, enabled: bool) -> Self {
            self.common.enabled = enabled;
            self
        }

        /// The IoT Hubs this enrollment's devices are allocated to (default: the emulator's).
        #[must_use]
        pub fn iot_hubs<I, S>(mut self, hubs: I) -> Self
        where
            I: IntoIterator<Item = S>,
            S: Into<String>,
        {
            self.common.iot_hubs = hubs.into_iter().map(Into::into).collect();
            self
        }

        /// How devices are spread over the hubs (default: the emulator's).
        #[must_use]
        pub fn allocation(mut self, policy: AllocationPolicy) -> Self {
            self.common.allocation = Some(policy);
            self
        }

        /// The initial device twin recorded with the registration.
        #[must_use]
        pub fn initial_twin(mut self, twin: serde_json::Value) -> Self {
            self.common.initial_twin = Some(twin);
            self
        }

        /// The payload returned to the device on assignment. Without one, the payload the device
        /// sent is echoed back (as a custom allocation function that returns it would).
        #[must_use]
        pub fn return_payload(mut self, payload: serde_json::Value) -> Self {
            self.common.return_payload = Some(payload);
            self
        }
    };
}

/// An individual enrollment: one device, by registration id.
#[derive(Debug)]
pub struct Enrollment {
    pub(crate) registration_id: String,
    pub(crate) device_id: Option<String>,
    pub(crate) attestation: IndividualAttestation,
    pub(crate) common: Common,
}

impl Enrollment {
    fn new(registration_id: impl Into<String>, attestation: IndividualAttestation) -> Self {
        Self {
            registration_id: registration_id.into(),
            device_id: None,
            attestation,
            common: Common {
                enabled: true,
                ..Common::default()
            },
        }
    }

    /// An X.509 enrollment of this device certificate (its CN must be the registration id).
    pub fn x509_certificate(
        registration_id: impl Into<String>,
        certificate: CertificateDer<'static>,
    ) -> Self {
        Self::new(
            registration_id,
            IndividualAttestation::X509(X509Match::Certificate(certificate)),
        )
    }

    /// An X.509 enrollment by certificate thumbprint.
    pub fn x509_thumbprint(registration_id: impl Into<String>, thumbprint: Thumbprint) -> Self {
        Self::new(
            registration_id,
            IndividualAttestation::X509(X509Match::Thumbprint(thumbprint)),
        )
    }

    /// A symmetric-key enrollment.
    pub fn symmetric_key(registration_id: impl Into<String>, keys: KeyPair) -> Self {
        Self::new(registration_id, IndividualAttestation::SymmetricKey(keys))
    }

    /// A TPM enrollment by endorsement key (marshaled `TPM2B_PUBLIC`).
    pub fn tpm(registration_id: impl Into<String>, endorsement_key: Vec<u8>) -> Self {
        Self::new(
            registration_id,
            IndividualAttestation::Tpm { endorsement_key },
        )
    }

    /// The device id on the hub (default: the registration id).
    #[must_use]
    pub fn device_id(mut self, device_id: impl Into<String>) -> Self {
        self.device_id = Some(device_id.into());
        self
    }

    /// The registration id.
    pub fn registration_id(&self) -> &str {
        &self.registration_id
    }

    common_setters!();
}

/// An enrollment group: any number of devices sharing one CA or one group key.
#[derive(Debug)]
pub struct EnrollmentGroup {
    pub(crate) id: String,
    pub(crate) attestation: GroupAttestation,
    pub(crate) common: Common,
}

impl EnrollmentGroup {
    fn new(id: impl Into<String>, attestation: GroupAttestation) -> Self {
        Self {
            id: id.into(),
            attestation,
            common: Common {
                enabled: true,
                ..Common::default()
            },
        }
    }

    /// A group of devices whose chains verify to this CA certificate (root or intermediate).
    pub fn x509_ca(id: impl Into<String>, ca: CertificateDer<'static>) -> Self {
        Self::new(id, GroupAttestation::X509Ca(ca))
    }

    /// A group of devices whose keys derive from this group key pair.
    pub fn symmetric_key(id: impl Into<String>, keys: KeyPair) -> Self {
        Self::new(id, GroupAttestation::SymmetricKey(keys))
    }

    /// The group id.
    pub fn id(&self) -> &str {
        &self.id
    }

    common_setters!();
}

/// The enrollment list the emulator checks devices against.
#[derive(Debug, Default)]
pub struct Enrollments {
    pub(crate) individual: HashMap<String, Enrollment>,
    pub(crate) groups: Vec<EnrollmentGroup>,
}

impl Enrollments {
    /// Every hub an enrollment names.
    pub(crate) fn hubs(&self) -> impl Iterator<Item = &String> {
        self.individual
            .values()
            .map(|e| &e.common)
            .chain(self.groups.iter().map(|g| &g.common))
            .flat_map(|c| c.iot_hubs.iter())
    }

    /// Adds or replaces an individual enrollment.
    pub fn add(&mut self, enrollment: Enrollment) {
        self.individual
            .insert(enrollment.registration_id.clone(), enrollment);
    }

    /// Adds or replaces an enrollment group.
    pub fn add_group(&mut self, group: EnrollmentGroup) {
        self.groups.retain(|g| g.id != group.id);
        self.groups.push(group);
    }

    /// Removes an individual enrollment; returns whether there was one.
    pub fn remove(&mut self, registration_id: &str) -> bool {
        self.individual.remove(registration_id).is_some()
    }

    /// Enables or disables an individual enrollment or a group, by id; returns whether one was found.
    pub fn set_enabled(&mut self, id: &str, enabled: bool) -> bool {
        if let Some(e) = self.individual.get_mut(id) {
            e.common.enabled = enabled;
            return true;
        }
        self.groups
            .iter_mut()
            .find(|g| g.id == id)
            .map(|g| g.common.enabled = enabled)
            .is_some()
    }

    /// How many individual enrollments and groups there are.
    pub fn len(&self) -> (usize, usize) {
        (self.individual.len(), self.groups.len())
    }
}
