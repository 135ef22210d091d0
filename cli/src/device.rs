//! The device a command works with: one clap group of flags per driver ([`x509`], [`riot`],
//! [`symmkey`], [`pkcs11`], [`tpm`]), each also what a config file's `[attestation]` section
//! deserialises into, and one translation of the chosen group into an opened driver
//! ([`DeviceArgs::open`]).

pub(crate) mod pkcs11;
pub(crate) mod riot;
pub(crate) mod secret;
pub(crate) mod symmkey;
pub(crate) mod tpm;
pub(crate) mod x509;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use hsm_core::{
    KeyHandle, RegistrationId, SymmetricKeyAttestation, TpmAttestation, X509Attestation,
};
use serde::Deserialize;

use self::pkcs11::Pkcs11Args;
use self::riot::RiotArgs;
use self::secret::SecretSource;
use self::symmkey::SymmetricKeyArgs;
use self::tpm::TpmArgs;
use self::x509::{KeyLocation, X509Args};
use crate::Error;

/// What the `register` flags say about the device: one driver's group (or none, to take the
/// config file's), and the registration id.
#[derive(Clone, Debug, Default, Args)]
pub(crate) struct DeviceArgs {
    /// The registration id: required for symmetric keys; overrides the certificate's CN for
    /// X.509 and PKCS#11; the Alias CN for DICE.
    #[arg(long, value_name = "ID", help_heading = "Attestation")]
    pub(crate) registration_id: Option<String>,
    #[command(flatten)]
    pub(crate) x509: X509Args,
    #[command(flatten)]
    pub(crate) riot: RiotArgs,
    #[command(flatten)]
    pub(crate) symmetric: SymmetricKeyArgs,
    #[command(flatten)]
    pub(crate) pkcs11: Pkcs11Args,
    #[command(flatten)]
    pub(crate) tpm: TpmArgs,
    /// The config file chose a TPM (whose TCTI may come from the environment, so no field
    /// says so).
    #[arg(skip)]
    tpm_from_config: bool,
}

/// A config file's `[attestation]`: `method` and that method's fields, which are the same
/// groups the flags fill.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub(crate) enum ConfigAttestation {
    /// A certificate chain and its key (a file, or a `pkcs11:` URI).
    X509(X509Args),
    /// A device key or a group key (a value, a file, or a `pkcs11:` URI for a key on a token).
    SymmetricKey(SymmetricKeyArgs),
    /// A TPM by TCTI.
    Tpm(TpmArgs),
    /// A DICE device (hsm-riot).
    Riot(RiotArgs),
}

impl ConfigAttestation {
    /// Resolves relative paths against the config file's folder.
    pub(crate) fn rebase(&mut self, base: &Path) {
        match self {
            Self::X509(a) => a.rebase(base),
            Self::SymmetricKey(a) => a.rebase(base),
            Self::Riot(a) => a.rebase(base),
            Self::Tpm(_) => {}
        }
    }
}

/// What to say when no attestation is given at all.
pub(crate) const NO_ATTESTATION: &str = "no attestation: give --x509-cert/--x509-key, \
    --riot-uds-hex, --symmetric-key, --group-key, --pkcs11, --pkcs11-hmac or --tpm (or --config \
    with an [attestation] section)";

/// The one driver a [`DeviceArgs`] names, with what it needs.
#[derive(Debug)]
enum Choice<'a> {
    X509Files {
        cert: &'a Path,
        key: &'a Path,
    },
    Riot(&'a RiotArgs),
    SymmetricKey(&'a SecretSource),
    GroupKey(&'a SecretSource),
    Pkcs11X509 {
        uri: &'a str,
        chain: Option<&'a Path>,
    },
    Pkcs11Hmac(&'a String),
    Tpm(&'a TpmArgs),
}

impl DeviceArgs {
    /// Whether the flags name any attestation.
    pub(crate) fn given(&self) -> bool {
        !self.named().is_empty()
    }

    /// The attestations the flags name (more than one is a usage error).
    fn named(&self) -> Vec<&'static str> {
        let mut named = Vec::new();
        if self.pkcs11.x509.is_some() {
            named.push("--pkcs11");
        } else if self.x509.given() {
            named.push("--x509-cert/--x509-key");
        }
        for (given, name) in [
            (self.riot.given(), "--riot-*"),
            (self.symmetric.symmetric_key.is_some(), "--symmetric-key"),
            (self.symmetric.group_key.is_some(), "--group-key"),
            (self.pkcs11.hmac.is_some(), "--pkcs11-hmac"),
            (self.tpm.tcti.is_some(), "--tpm"),
        ] {
            if given {
                named.push(name);
            }
        }
        named
    }

    /// The device the config file's `[attestation]` describes, with these flags' registration
    /// id, EK template and PKCS#11 options overriding it.
    pub(crate) fn with_config(&self, attestation: ConfigAttestation) -> Self {
        let mut device = Self {
            registration_id: self.registration_id.clone(),
            pkcs11: Pkcs11Args {
                options: self.pkcs11.options.clone(),
                ..Pkcs11Args::default()
            },
            ..Self::default()
        };
        let from_file = match attestation {
            ConfigAttestation::X509(mut a) => {
                // A pkcs11: key is the PKCS#11 driver's, as --pkcs11 is.
                if let Some(KeyLocation::Pkcs11(uri)) = &a.key {
                    device.pkcs11.x509 = Some(uri.clone());
                    a.key = None;
                }
                let id = a.registration_id.take();
                device.x509 = a;
                id
            }
            ConfigAttestation::SymmetricKey(mut a) => {
                if let Some(SecretSource::Pkcs11(uri)) = &a.symmetric_key {
                    device.pkcs11.hmac = Some(uri.clone());
                    a.symmetric_key = None;
                }
                let id = a.registration_id.take();
                device.symmetric = a;
                id
            }
            ConfigAttestation::Riot(mut a) => {
                let id = a.registration_id.take();
                device.riot = a;
                id
            }
            ConfigAttestation::Tpm(mut a) => {
                let id = a.registration_id.take();
                a.ek_template = self.tpm.ek_template.or(a.ek_template);
                // A TPM's id is derived from its EK: the configured one (or
                // --registration-id) is only checked against it.
                device.tpm = a;
                device.tpm_from_config = true;
                id
            }
        };
        device.registration_id = device.registration_id.or(from_file);
        device
    }

    fn choice(&self) -> Result<Choice<'_>, Error> {
        let named = self.named();
        if named.len() > 1 {
            return Err(Error::usage(format!(
                "choose one attestation, not {}",
                named.join(" and ")
            )));
        }
        if self.pkcs11.x509.is_some() && self.x509.key.is_some() {
            return Err(Error::usage(
                "--x509-key and --pkcs11 both name the private key: give one",
            ));
        }
        Ok(if let Some(uri) = &self.pkcs11.x509 {
            Choice::Pkcs11X509 {
                uri,
                chain: self.x509.cert.as_deref(),
            }
        } else if self.x509.given() {
            match (&self.x509.cert, &self.x509.key) {
                (Some(cert), Some(KeyLocation::File(key))) => Choice::X509Files { cert, key },
                (chain, Some(KeyLocation::Pkcs11(uri))) => Choice::Pkcs11X509 {
                    uri,
                    chain: chain.as_deref(),
                },
                _ => {
                    return Err(Error::usage(
                        "X.509 needs both --x509-cert and --x509-key (identity_cert and \
                         identity_pk in a config file)",
                    ));
                }
            }
        } else if self.riot.given() {
            Choice::Riot(&self.riot)
        } else if let Some(key) = &self.symmetric.symmetric_key {
            Choice::SymmetricKey(key)
        } else if let Some(key) = &self.symmetric.group_key {
            Choice::GroupKey(key)
        } else if let Some(uri) = &self.pkcs11.hmac {
            Choice::Pkcs11Hmac(uri)
        } else if self.tpm.tcti.is_some() || self.tpm_from_config {
            Choice::Tpm(&self.tpm)
        } else {
            return Err(Error::usage(NO_ATTESTATION));
        })
    }

    /// Whether the chosen attestation is a DICE device.
    pub(crate) fn is_riot(&self) -> bool {
        matches!(self.choice(), Ok(Choice::Riot(_)))
    }

    /// Whether the chosen attestation is a TPM.
    pub(crate) fn is_tpm(&self) -> bool {
        matches!(self.choice(), Ok(Choice::Tpm(_)))
    }

    /// A short name of the attestation, for messages.
    pub(crate) fn name(&self) -> &'static str {
        match self.choice() {
            Ok(Choice::X509Files { .. }) => "X.509 (files)",
            Ok(Choice::Riot(_)) => "X.509 (DICE)",
            Ok(Choice::SymmetricKey(_)) => "symmetric key",
            Ok(Choice::GroupKey(_)) => "symmetric key (group)",
            Ok(Choice::Pkcs11X509 { .. }) => "X.509 (PKCS#11)",
            Ok(Choice::Pkcs11Hmac(_)) => "symmetric key (PKCS#11)",
            Ok(Choice::Tpm(_)) => "TPM",
            Err(_) => "device",
        }
    }

    /// Checks the choice without opening anything.
    pub(crate) fn check(&self) -> Result<(), Error> {
        let choice = self.choice()?;
        let needs_id = match choice {
            Choice::SymmetricKey(_) => Some("--symmetric-key"),
            Choice::GroupKey(_) => Some("--group-key"),
            Choice::Pkcs11Hmac(_) => Some("--pkcs11-hmac"),
            _ => None,
        };
        if let (Some(flag), None) = (needs_id, &self.registration_id) {
            return Err(Error::usage(format!(
                "{flag} needs --registration-id (registration_id in a config file)"
            )));
        }
        if matches!(choice, Choice::Tpm(_))
            && self.registration_id.is_some()
            && !self.tpm_from_config
        {
            return Err(Error::usage(
                "--registration-id does not apply to a TPM: its id is derived from the EK",
            ));
        }
        Ok(())
    }

    /// Opens the device: loads files, derives the DICE identity, opens the token or the TPM.
    pub(crate) fn open(&self) -> Result<Device, Error> {
        self.check()?;
        let id = || {
            self.registration_id
                .as_deref()
                .map(registration_id)
                .transpose()
        };
        let required_id = || {
            self.registration_id
                .as_deref()
                .map(registration_id)
                .unwrap_or_else(|| Err(Error::usage("a registration id is needed")))
        };
        Ok(match self.choice()? {
            Choice::X509Files { cert, key } => {
                Device::X509(Arc::new(X509Args::open(cert, key, id()?)?))
            }
            Choice::Riot(riot) => {
                Device::X509(Arc::new(riot.build(self.registration_id.as_deref())?))
            }
            Choice::SymmetricKey(SecretSource::Pkcs11(uri)) | Choice::Pkcs11Hmac(uri) => {
                Device::SymmetricKey(Arc::new(pkcs11::open_hmac(
                    uri,
                    required_id()?,
                    &self.pkcs11.options,
                )?))
            }
            Choice::SymmetricKey(source) => {
                let key = symmkey::key_text(source)?;
                let key =
                    hsm_symmkey::SymmetricKey::from_base64(required_id()?, &key.to_secret_string())
                        .map_err(|source| Error::SymmetricKey {
                            operation: "invalid symmetric key",
                            source,
                        })?;
                Device::SymmetricKey(Arc::new(key))
            }
            Choice::GroupKey(source) => {
                let group_key = symmkey::key_text(source)?;
                let key = hsm_symmkey::SymmetricKey::from_group_key(
                    required_id()?,
                    &group_key.to_secret_string(),
                )
                .map_err(|source| Error::SymmetricKey {
                    operation: "invalid group key",
                    source,
                })?;
                Device::SymmetricKey(Arc::new(key))
            }
            Choice::Pkcs11X509 { uri, chain } => Device::X509(Arc::new(pkcs11::open_x509(
                uri,
                chain,
                id()?,
                &self.pkcs11.options,
            )?)),
            Choice::Tpm(tpm) => {
                let opened = tpm.open(self.registration_id.as_deref())?;
                Device::Tpm {
                    attestation: opened.attestation,
                    registration_id: opened.registration_id,
                }
            }
        })
    }
}

/// An opened device.
#[derive(Debug)]
pub(crate) enum Device {
    /// X.509 attestation (files, DICE, PKCS#11).
    X509(Arc<dyn X509Attestation>),
    /// Symmetric-key attestation (a key, a group key, an HMAC key on a token).
    SymmetricKey(Arc<dyn SymmetricKeyAttestation>),
    /// TPM attestation.
    Tpm {
        attestation: Arc<dyn TpmAttestation>,
        registration_id: RegistrationId,
    },
}

impl Device {
    /// The key a CSR is signed with, when the attestation has one.
    pub(crate) fn csr_key(&self) -> Option<Arc<dyn KeyHandle>> {
        match self {
            Self::X509(a) => Some(a.alias_key()),
            Self::SymmetricKey(_) | Self::Tpm { .. } => None,
        }
    }

    /// The registration id.
    pub(crate) fn registration_id(&self) -> RegistrationId {
        match self {
            Self::X509(a) => a.registration_id().clone(),
            Self::SymmetricKey(a) => a.registration_id().clone(),
            Self::Tpm {
                registration_id, ..
            } => registration_id.clone(),
        }
    }
}

fn registration_id(text: &str) -> Result<RegistrationId, Error> {
    RegistrationId::new(text).map_err(|source| Error::Core {
        operation: "invalid registration id",
        source,
    })
}

/// A path from a config file: `file://` stripped, relative to the file's folder.
pub(crate) fn rebase(path: &mut PathBuf, base: &Path) {
    let text = path.to_string_lossy();
    let stripped = PathBuf::from(text.strip_prefix("file://").unwrap_or(&text));
    *path = base.join(stripped);
}
