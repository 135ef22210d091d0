//! Opening a device from what the command line or the config file says: one attestation from
//! one driver, plus a key for a CSR.

use std::path::PathBuf;
use std::sync::Arc;

use hsm_core::{KeyHandle, RegistrationId, SecretBytes, SymmetricKeyAttestation, X509Attestation};
use hsm_pkcs11::{OpenOptions, Pin, Pkcs11Uri, Token};
use hsm_riot::{DevRoot, Issuer, Name, RiotIdentity, Validity};
use hsm_tpm::{EkTemplate, Tcti, Tpm, TpmIdentity};

use crate::Error;
use crate::util::{self, Secret};

/// The development root's default common name, as the C SDK names it.
pub(crate) const DEFAULT_ROOT_CN: &str = "riot-root";

/// One attestation, as configured.
#[derive(Debug)]
pub(crate) enum DeviceSpec {
    /// A chain and key from files (hsm-x509).
    X509Files {
        cert: PathBuf,
        key: PathBuf,
        registration_id: Option<String>,
    },
    /// A DICE device (hsm-riot).
    Riot(RiotSpec),
    /// A device key (hsm-symmkey).
    SymmetricKey {
        registration_id: String,
        key: Secret,
    },
    /// A group key the device key is derived from (hsm-symmkey).
    GroupKey {
        registration_id: String,
        group_key: Secret,
    },
    /// An X.509 key (and by default its chain) on a PKCS#11 token.
    Pkcs11X509 {
        uri: String,
        certificates: Option<PathBuf>,
        registration_id: Option<String>,
        options: Pkcs11Options,
    },
    /// An HMAC key on a PKCS#11 token (symmetric-key attestation).
    Pkcs11Hmac {
        uri: String,
        registration_id: String,
        options: Pkcs11Options,
    },
    /// A TPM.
    Tpm {
        tcti: Option<String>,
        ek_template: EkTemplate,
        /// The registration id the configuration expects (checked against the EK's).
        expected_id: Option<String>,
    },
}

/// Module and PIN options for PKCS#11 URIs.
#[derive(Clone, Debug, Default)]
pub(crate) struct Pkcs11Options {
    /// The module to load when the URI names none.
    pub(crate) module: Option<PathBuf>,
    /// A file holding the user PIN.
    pub(crate) pin_file: Option<PathBuf>,
}

impl Pkcs11Options {
    fn open_options(&self) -> OpenOptions {
        OpenOptions {
            module: self.module.clone(),
            pin: self.pin_file.clone().map(Pin::File),
        }
    }
}

/// A DICE device: its secrets, measurements and who issues its DeviceID certificate.
#[derive(Debug)]
pub(crate) struct RiotSpec {
    pub(crate) uds: SeedSource,
    pub(crate) measurement: Option<String>,
    pub(crate) fwid: String,
    pub(crate) root: RootSpec,
    pub(crate) registration_id: Option<String>,
}

/// Where secret bytes come from: hex text, or a file (hex text or raw bytes).
#[derive(Debug)]
pub(crate) enum SeedSource {
    /// Hex.
    Hex(Secret),
    /// A file.
    File(PathBuf),
}

impl SeedSource {
    /// The bytes.
    pub(crate) fn bytes(&self, what: &str) -> Result<SecretBytes, Error> {
        match self {
            Self::Hex(hex) => Ok(SecretBytes::copy_from(&util::hex_decode(
                what,
                hex.expose(),
            )?)),
            Self::File(path) => util::read_secret(what, path),
        }
    }
}

/// Who signs the DeviceID certificate.
#[derive(Debug)]
pub(crate) enum RootSpec {
    /// A development root derived from a seed.
    Seed {
        seed: SeedSource,
        common_name: String,
    },
    /// A CA certificate and its private key from files.
    Files { cert: PathBuf, key: PathBuf },
    /// Nobody: the DeviceID certificate is self-signed.
    SelfSigned,
}

impl RootSpec {
    /// The issuer, and the root certificate to put at the end of the chain files.
    pub(crate) fn issuer(&self) -> Result<Issuer, Error> {
        match self {
            Self::Seed { seed, common_name } => Ok(dev_root(seed, common_name)?.issuer()),
            Self::Files { cert, key } => {
                let certificate = util::load_certificates(cert)?.swap_remove(0);
                let key = hsm_x509::SoftwareKey::from_bytes(&util::read(key)?, None).map_err(
                    |source| Error::X509 {
                        operation: "cannot load the root key",
                        source,
                    },
                )?;
                Ok(Issuer::Root {
                    key: Arc::new(key),
                    certificate,
                })
            }
            Self::SelfSigned => Ok(Issuer::SelfSigned),
        }
    }
}

/// The development root a seed gives.
pub(crate) fn dev_root(seed: &SeedSource, common_name: &str) -> Result<DevRoot, Error> {
    let seed = seed.bytes("root seed")?;
    DevRoot::from_seed(&seed, Name::cn(common_name), Validity::default()).map_err(|source| {
        Error::Riot {
            operation: "cannot make the development root",
            source,
        }
    })
}

impl RiotSpec {
    /// Derives the device.
    pub(crate) fn build(&self) -> Result<RiotIdentity, Error> {
        let uds = self.uds.bytes("UDS")?;
        let measurement = match &self.measurement {
            Some(hex) => util::hex_exact("measurement", hex, 32)?,
            None => zeroize::Zeroizing::new(vec![0; 32]),
        };
        let fwid = util::hex_exact("FWID", &self.fwid, 32)?;
        let mut builder = RiotIdentity::builder()
            .uds(uds)
            .measurement(&measurement)
            .fwid(&fwid)
            .issuer(self.root.issuer()?);
        if let Some(id) = &self.registration_id {
            builder = builder.alias_name(Name::cn(id));
        }
        builder.build().map_err(|source| Error::Riot {
            operation: "cannot derive the DICE device",
            source,
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
    Tpm(Arc<TpmIdentity>),
}

impl Device {
    /// The key a CSR is signed with, when the attestation has one.
    pub(crate) fn csr_key(&self) -> Option<Arc<dyn KeyHandle>> {
        match self {
            Self::X509(a) => Some(a.alias_key()),
            Self::SymmetricKey(_) | Self::Tpm(_) => None,
        }
    }

    /// The registration id.
    pub(crate) fn registration_id(&self) -> RegistrationId {
        match self {
            Self::X509(a) => a.registration_id().clone(),
            Self::SymmetricKey(a) => a.registration_id().clone(),
            Self::Tpm(t) => t.registration_id().clone(),
        }
    }
}

fn registration_id(text: &str) -> Result<RegistrationId, Error> {
    RegistrationId::new(text).map_err(|source| Error::Core {
        operation: "invalid registration id",
        source,
    })
}

impl DeviceSpec {
    /// A short name for messages.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::X509Files { .. } => "X.509 (files)",
            Self::Riot(_) => "X.509 (DICE)",
            Self::SymmetricKey { .. } => "symmetric key",
            Self::GroupKey { .. } => "symmetric key (group)",
            Self::Pkcs11X509 { .. } => "X.509 (PKCS#11)",
            Self::Pkcs11Hmac { .. } => "symmetric key (PKCS#11)",
            Self::Tpm { .. } => "TPM",
        }
    }

    /// Opens the device (loads files, opens the token or the TPM).
    pub(crate) fn open(&self) -> Result<Device, Error> {
        Ok(match self {
            Self::X509Files {
                cert,
                key,
                registration_id: id,
            } => {
                let mut builder = hsm_x509::X509Identity::builder()
                    .certificates(&util::read(cert)?)
                    .key(&util::read(key)?);
                if let Some(id) = id {
                    builder = builder.registration_id(registration_id(id)?);
                }
                let identity = builder.build().map_err(|source| Error::X509 {
                    operation: "cannot load the X.509 identity",
                    source,
                })?;
                Device::X509(Arc::new(identity))
            }
            Self::Riot(spec) => Device::X509(Arc::new(spec.build()?)),
            Self::SymmetricKey {
                registration_id: id,
                key,
            } => {
                let key = hsm_symmkey::SymmetricKey::from_base64(
                    registration_id(id)?,
                    &key.to_secret_string(),
                )
                .map_err(|source| Error::SymmetricKey {
                    operation: "invalid symmetric key",
                    source,
                })?;
                Device::SymmetricKey(Arc::new(key))
            }
            Self::GroupKey {
                registration_id: id,
                group_key,
            } => {
                let key = hsm_symmkey::SymmetricKey::from_group_key(
                    registration_id(id)?,
                    &group_key.to_secret_string(),
                )
                .map_err(|source| Error::SymmetricKey {
                    operation: "invalid group key",
                    source,
                })?;
                Device::SymmetricKey(Arc::new(key))
            }
            Self::Pkcs11X509 {
                uri,
                certificates,
                registration_id: id,
                options,
            } => {
                let mut builder = hsm_pkcs11::Pkcs11Identity::builder(parse_uri(uri)?)
                    .options(options.open_options());
                if let Some(path) = certificates {
                    builder = builder.certificates_file(path);
                }
                if let Some(id) = id {
                    builder = builder.registration_id(registration_id(id)?);
                }
                let identity = builder.build().map_err(|source| Error::Pkcs11 {
                    operation: "cannot open the X.509 identity on the PKCS#11 token",
                    source,
                })?;
                Device::X509(Arc::new(identity))
            }
            Self::Pkcs11Hmac {
                uri,
                registration_id: id,
                options,
            } => {
                let uri = parse_uri(uri)?;
                let token = open_token(&uri, options)?;
                let key = hsm_pkcs11::Pkcs11HmacKey::open(&token, &uri, registration_id(id)?)
                    .map_err(|source| Error::Pkcs11 {
                        operation: "cannot open the HMAC key on the PKCS#11 token",
                        source,
                    })?;
                Device::SymmetricKey(Arc::new(key))
            }
            Self::Tpm {
                tcti,
                ek_template,
                expected_id,
            } => {
                let tpm = open_tpm(tcti.as_deref())?;
                let identity = TpmIdentity::builder(&tpm)
                    .ek_template(*ek_template)
                    .build()
                    .map_err(|source| Error::Tpm {
                        operation: "cannot read the TPM's EK and SRK",
                        source,
                    })?;
                if let Some(expected) = expected_id
                    && expected != identity.registration_id().as_str()
                {
                    return Err(Error::usage(format!(
                        "the configured registration_id {expected:?} is not this TPM's, which is \
                         derived from its EK: {}",
                        identity.registration_id()
                    )));
                }
                Device::Tpm(Arc::new(identity))
            }
        })
    }
}

/// A key for a CSR: a PEM/DER key file or a `pkcs11:` URI.
#[derive(Debug)]
pub(crate) enum CsrKey {
    /// A software key in a file.
    File(PathBuf),
    /// A key on a token.
    Pkcs11 { uri: String, options: Pkcs11Options },
}

impl CsrKey {
    /// `pkcs11:` URIs name a token key, anything else a file.
    pub(crate) fn parse(text: &str, options: &Pkcs11Options) -> Self {
        if text.starts_with("pkcs11:") {
            Self::Pkcs11 {
                uri: text.to_owned(),
                options: options.clone(),
            }
        } else {
            Self::File(PathBuf::from(text.strip_prefix("file://").unwrap_or(text)))
        }
    }

    /// Opens the key.
    pub(crate) fn open(&self) -> Result<Arc<dyn KeyHandle>, Error> {
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
            Self::Pkcs11 { uri, options } => {
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

/// Parses a PKCS#11 URI.
pub(crate) fn parse_uri(text: &str) -> Result<Pkcs11Uri, Error> {
    Pkcs11Uri::parse(text).map_err(|e| Error::Pkcs11 {
        operation: "invalid PKCS#11 URI",
        source: e.into(),
    })
}

/// Opens and logs in to the token a URI names.
pub(crate) fn open_token(uri: &Pkcs11Uri, options: &Pkcs11Options) -> Result<Token, Error> {
    Token::open_with(uri, &options.open_options()).map_err(|source| Error::Pkcs11 {
        operation: "cannot open the PKCS#11 token",
        source,
    })
}

/// Connects to the TPM a TCTI string names, else the one `TPM2TOOLS_TCTI`/`TCTI` names.
pub(crate) fn open_tpm(tcti: Option<&str>) -> Result<Tpm, Error> {
    let tcti: Tcti = match tcti {
        Some(text) => text.parse().map_err(|e| Error::Tpm {
            operation: "invalid TCTI",
            source: hsm_tpm::Error::Tcti(e),
        })?,
        None => Tcti::from_env().map_err(|e| {
            Error::usage(format!(
                "no TPM given: name its TCTI (e.g. device:/dev/tpmrm0 or swtpm:host=127.0.0.1,port=2321) or set TPM2TOOLS_TCTI ({e})"
            ))
        })?,
    };
    Tpm::open(tcti).map_err(|source| Error::Tpm {
        operation: "cannot connect to the TPM",
        source,
    })
}
