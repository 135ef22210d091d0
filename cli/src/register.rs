//! `hsm-provision register`: one registration with DPS through any driver.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use hsm_tpm::EkTemplate;
use provisioning::{
    DEFAULT_TIMEOUT, HubCredentials, ProvisioningClient, Registration, RetryPolicy, Transport,
};
use serde_json::{Value, json};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::Error;
use crate::config::{self, ConfigFile, SecretLocation};
use crate::drivers::{
    CsrKey, DEFAULT_ROOT_CN, Device, DeviceSpec, Pkcs11Options, RiotSpec, RootSpec, SeedSource,
};
use crate::status::Status;
use crate::util::{self, Secret};

/// The global endpoint of Azure's public DPS.
const AZURE_GLOBAL_ENDPOINT: &str = "global.azure-devices-provisioning.net";

pub(crate) const REGISTER_ABOUT: &str = "\
Register this device with the Device Provisioning Service and print its IoT Hub assignment.

Choose one attestation with its flags (or put it in a --config file):
  X.509 from files   --x509-cert chain.pem --x509-key key.pem
  DICE (hsm-riot)    --riot-uds-hex HEX --riot-fwid-hex HEX --riot-root-seed-hex HEX
  symmetric key      --symmetric-key BASE64 --registration-id ID
  group key          --group-key BASE64 --registration-id ID   (device key derived from it)
  PKCS#11 X.509      --pkcs11 'pkcs11:token=...;object=...?module-path=...&pin-source=...'
  PKCS#11 HMAC key   --pkcs11-hmac URI --registration-id ID
  TPM                --tpm device:/dev/tpmrm0

Flags override the config file. Private keys stay where they are: TLS, CSRs and SAS tokens are
signed through the driver. While it waits, a status line on stderr shows what is happening
(--quiet hides it). Keys given on the command line are visible to other local users (ps); prefer
a config file with `file = ...` for real keys.";

/// How the device talks to DPS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum TransportArg {
    /// HTTPS (every attestation).
    Https,
    /// MQTT over TLS (X.509 and symmetric key; DPS has no TPM attestation over MQTT).
    Mqtt,
}

impl TransportArg {
    fn parse(text: &str) -> Option<Self> {
        <Self as ValueEnum>::from_str(text, true).ok()
    }
}

impl From<TransportArg> for Transport {
    fn from(t: TransportArg) -> Self {
        match t {
            TransportArg::Https => Transport::Https,
            TransportArg::Mqtt => Transport::Mqtt,
        }
    }
}

/// Which EK template to create the EK from when the TPM has none persisted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum EkTemplateArg {
    /// The TCG L-1 template (what tpm2_createek makes).
    #[default]
    TcgL1,
    /// The Azure IoT C SDK's template (for devices enrolled with their C SDK registration id).
    Legacy,
}

impl From<EkTemplateArg> for EkTemplate {
    fn from(t: EkTemplateArg) -> Self {
        match t {
            EkTemplateArg::TcgL1 => EkTemplate::TcgL1,
            EkTemplateArg::Legacy => EkTemplate::Legacy,
        }
    }
}

/// `register`'s arguments.
#[derive(Debug, Args)]
pub(crate) struct RegisterArgs {
    /// A TOML file with `[provisioning]` and `[attestation]` (see the README); flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// The DPS global endpoint, `host` or `host:port` [default: global.azure-devices-provisioning.net].
    #[arg(long, value_name = "HOST[:PORT]", help_heading = "DPS")]
    global_endpoint: Option<String>,
    /// The ID scope of the DPS instance.
    #[arg(long, value_name = "SCOPE", help_heading = "DPS")]
    id_scope: Option<String>,
    /// The transport [default: https].
    #[arg(long, value_enum, help_heading = "DPS")]
    transport: Option<TransportArg>,
    /// The MQTT port on the endpoint's host [default: 8883].
    #[arg(long, value_name = "PORT", help_heading = "DPS")]
    mqtt_port: Option<u16>,
    /// A JSON payload for custom allocation (`@file.json` reads a file).
    #[arg(long, value_name = "JSON", help_heading = "DPS")]
    payload: Option<String>,
    /// Ask DPS to issue a certificate: a CSR signed by the driver's key (or --csr-key).
    #[arg(long, help_heading = "DPS")]
    csr: bool,
    /// The key for the CSR: a PEM/DER key file or a pkcs11: URI (implies --csr). Needed for
    /// symmetric-key and TPM attestation, which have no key pair.
    #[arg(long, value_name = "FILE|URI", help_heading = "DPS")]
    csr_key: Option<String>,
    /// Trust this CA certificate (PEM) for DPS instead of the platform's roots (repeatable).
    #[arg(long, value_name = "PEM", help_heading = "DPS")]
    trust_ca: Vec<PathBuf>,
    /// The DPS API version [default: 2021-06-01; 2025-07-01-preview with a CSR].
    #[arg(long, value_name = "VERSION", help_heading = "DPS")]
    api_version: Option<String>,
    /// The overall deadline, retries and polls included: 90, 90s, 500ms, 2m [default: 90s].
    #[arg(long, value_name = "DURATION", value_parser = util::parse_duration, help_heading = "DPS")]
    timeout: Option<Duration>,
    /// How often one request is retried after a transient failure [default: 6].
    #[arg(long, value_name = "N", help_heading = "DPS")]
    retries: Option<u32>,

    /// The registration id: required for symmetric keys; overrides the certificate's CN for
    /// X.509 and PKCS#11; the Alias CN for DICE.
    #[arg(long, value_name = "ID", help_heading = "Attestation")]
    registration_id: Option<String>,

    /// X.509: the certificate chain (PEM or DER, leaf first); with --pkcs11, the chain to use
    /// instead of the token's certificates.
    #[arg(long, value_name = "FILE", help_heading = "X.509 from files")]
    x509_cert: Option<PathBuf>,
    /// X.509: the private key (PKCS#8, SEC1 or PKCS#1; PEM or DER).
    #[arg(long, value_name = "FILE", help_heading = "X.509 from files")]
    x509_key: Option<PathBuf>,

    /// DICE: the unique device secret, 32 bytes in hex.
    #[arg(
        long,
        value_name = "HEX",
        help_heading = "DICE (hsm-riot)",
        conflicts_with = "riot_uds_file"
    )]
    riot_uds_hex: Option<Secret>,
    /// DICE: a file holding the UDS (hex text or 32 raw bytes).
    #[arg(long, value_name = "FILE", help_heading = "DICE (hsm-riot)")]
    riot_uds_file: Option<PathBuf>,
    /// DICE: the RIoT Core measurement, 32 bytes in hex [default: 32 zero bytes].
    #[arg(long, value_name = "HEX", help_heading = "DICE (hsm-riot)")]
    riot_measurement_hex: Option<String>,
    /// DICE: the firmware id (FWID), SHA-256 in hex.
    #[arg(
        long,
        visible_alias = "riot-fwid",
        value_name = "HEX",
        help_heading = "DICE (hsm-riot)"
    )]
    riot_fwid_hex: Option<String>,
    /// DICE: the development root's seed in hex (the same seed gives the same root).
    #[arg(long, visible_alias = "riot-root-seed", value_name = "HEX", help_heading = "DICE (hsm-riot)",
          conflicts_with_all = ["riot_root_seed_file", "riot_root_cert"])]
    riot_root_seed_hex: Option<Secret>,
    /// DICE: a file holding the root seed (hex text or raw bytes).
    #[arg(
        long,
        value_name = "FILE",
        help_heading = "DICE (hsm-riot)",
        conflicts_with = "riot_root_cert"
    )]
    riot_root_seed_file: Option<PathBuf>,
    /// DICE: the root's common name [default: riot-root].
    #[arg(long, value_name = "CN", help_heading = "DICE (hsm-riot)")]
    riot_root_cn: Option<String>,
    /// DICE: a CA certificate (PEM) to issue the DeviceID certificate, with --riot-root-key.
    #[arg(
        long,
        value_name = "FILE",
        help_heading = "DICE (hsm-riot)",
        requires = "riot_root_key"
    )]
    riot_root_cert: Option<PathBuf>,
    /// DICE: the CA's private key (PEM or DER).
    #[arg(
        long,
        value_name = "FILE",
        help_heading = "DICE (hsm-riot)",
        requires = "riot_root_cert"
    )]
    riot_root_key: Option<PathBuf>,

    /// Symmetric key: the device key (base64).
    #[arg(long, value_name = "BASE64", help_heading = "Symmetric key")]
    symmetric_key: Option<Secret>,
    /// Symmetric key: an enrollment group's key (base64); the device key is derived from it
    /// and the registration id.
    #[arg(long, value_name = "BASE64", help_heading = "Symmetric key")]
    group_key: Option<Secret>,

    /// PKCS#11: the X.509 private key's URI; the chain comes from the token (or --x509-cert).
    #[arg(long, value_name = "URI", help_heading = "PKCS#11")]
    pkcs11: Option<String>,
    /// PKCS#11: an HMAC (generic secret) key's URI, for symmetric-key attestation.
    #[arg(long, value_name = "URI", help_heading = "PKCS#11")]
    pkcs11_hmac: Option<String>,
    /// PKCS#11: the module to load when the URI has no module-path.
    #[arg(long, value_name = "PATH", help_heading = "PKCS#11")]
    pkcs11_module: Option<PathBuf>,
    /// PKCS#11: a file holding the user PIN (else the URI's pin-value/pin-source, else
    /// $PKCS11_PIN).
    #[arg(long, value_name = "FILE", help_heading = "PKCS#11")]
    pkcs11_pin_file: Option<PathBuf>,

    /// TPM: the TCTI, as tpm2-tools writes it (device:/dev/tpmrm0, swtpm:host=H,port=P, tabrmd).
    #[arg(long, value_name = "TCTI", help_heading = "TPM")]
    tpm: Option<String>,
    /// TPM: the EK template used when no EK is persisted.
    #[arg(long, value_enum, value_name = "TEMPLATE", help_heading = "TPM")]
    tpm_ek_template: Option<EkTemplateArg>,

    /// Print one JSON object on stdout instead of text.
    #[arg(long, help_heading = "Output")]
    json: bool,
    /// No status line on stderr.
    #[arg(long, short, help_heading = "Output")]
    quiet: bool,
    /// Also log the client's events (connections, requests, responses) to stderr.
    #[arg(long, short, help_heading = "Output")]
    verbose: bool,
    /// Write the certificate chain DPS issued (PEM, leaf first) to this file.
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    issued_cert_out: Option<PathBuf>,
}

/// Everything a registration needs, from the flags over the config file over the defaults.
#[derive(Debug)]
struct Settings {
    global_endpoint: String,
    id_scope: String,
    transport: Transport,
    mqtt_port: Option<u16>,
    payload: Option<Value>,
    csr: bool,
    csr_key: Option<CsrKey>,
    trust_ca: Vec<PathBuf>,
    api_version: Option<String>,
    timeout: Duration,
    retries: Option<u32>,
    issued_cert_out: Option<PathBuf>,
    device: DeviceSpec,
}

impl Settings {
    fn resolve(args: &RegisterArgs) -> Result<Self, Error> {
        let file = args.config.as_deref().map(ConfigFile::load).transpose()?;
        let section = file.as_ref().map(|f| &f.provisioning);
        let pkcs11_options = Pkcs11Options {
            module: args.pkcs11_module.clone(),
            pin_file: args.pkcs11_pin_file.clone(),
        };
        let device = match device_from_flags(args, &pkcs11_options)? {
            Some(device) => device,
            None => match &file {
                Some(file) => {
                    let mut device = device_from_config(file, &pkcs11_options)?;
                    override_from_flags(&mut device, args);
                    device
                }
                None => return Err(Error::usage(NO_ATTESTATION)),
            },
        };
        let transport = match (args.transport, section.and_then(|s| s.transport.as_deref())) {
            (Some(t), _) => t,
            (None, Some(text)) => TransportArg::parse(text).ok_or_else(|| {
                file.as_ref().map_or_else(
                    || Error::usage("invalid transport"),
                    |f| {
                        f.invalid(format!(
                            "transport {text:?}: expected \"https\" or \"mqtt\""
                        ))
                    },
                )
            })?,
            (None, None) => TransportArg::Https,
        };
        let payload = match (&args.payload, section.and_then(|s| s.payload.as_ref())) {
            (Some(text), _) => Some(parse_payload(text)?),
            (None, Some(value)) => Some(serde_json::to_value(value).map_err(|e| {
                Error::usage(format!("the configuration's payload is not JSON: {e}"))
            })?),
            (None, None) => None,
        };
        let csr_key = match (&args.csr_key, section.and_then(|s| s.csr_key.as_deref())) {
            (Some(text), _) => Some(CsrKey::parse(text, &pkcs11_options)),
            (None, Some(text)) => Some(match file.as_ref() {
                Some(f) if !text.starts_with("pkcs11:") => CsrKey::File(f.path(text)),
                _ => CsrKey::parse(text, &pkcs11_options),
            }),
            (None, None) => None,
        };
        let mut trust_ca = file.as_ref().map(ConfigFile::trust_ca).unwrap_or_default();
        if !args.trust_ca.is_empty() {
            trust_ca.clone_from(&args.trust_ca);
        }
        let id_scope = args
            .id_scope
            .clone()
            .or_else(|| section.and_then(|s| s.id_scope.clone()))
            .ok_or_else(|| {
                Error::usage(
                    "no ID scope: give --id-scope or id_scope in the config file's [provisioning]",
                )
            })?;
        let timeout = match (args.timeout, section.and_then(|s| s.timeout_secs)) {
            (Some(t), _) => t,
            (None, Some(0)) => return Err(Error::usage("timeout_secs must be more than zero")),
            (None, Some(secs)) => Duration::from_secs(secs),
            (None, None) => DEFAULT_TIMEOUT,
        };
        Ok(Self {
            global_endpoint: args
                .global_endpoint
                .clone()
                .or_else(|| section.and_then(|s| s.global_endpoint.clone()))
                .unwrap_or_else(|| AZURE_GLOBAL_ENDPOINT.to_owned()),
            id_scope,
            transport: transport.into(),
            mqtt_port: args.mqtt_port.or(section.and_then(|s| s.mqtt_port)),
            payload,
            csr: args.csr || csr_key.is_some() || section.and_then(|s| s.csr).unwrap_or(false),
            csr_key,
            trust_ca,
            api_version: args
                .api_version
                .clone()
                .or_else(|| section.and_then(|s| s.api_version.clone())),
            timeout,
            retries: args.retries.or(section.and_then(|s| s.retries)),
            issued_cert_out: args.issued_cert_out.clone().or_else(|| {
                let f = file.as_ref()?;
                Some(f.path(f.provisioning.issued_cert_out.as_deref()?))
            }),
            device,
        })
    }
}

const NO_ATTESTATION: &str = "no attestation: give --x509-cert/--x509-key, --riot-uds-hex, \
    --symmetric-key, --group-key, --pkcs11, --pkcs11-hmac or --tpm (or --config with an \
    [attestation] section)";

/// The attestation the flags choose, if any.
fn device_from_flags(
    args: &RegisterArgs,
    pkcs11_options: &Pkcs11Options,
) -> Result<Option<DeviceSpec>, Error> {
    let mut chosen: Vec<&str> = Vec::new();
    if args.pkcs11.is_some() {
        chosen.push("--pkcs11");
    } else if args.x509_cert.is_some() || args.x509_key.is_some() {
        chosen.push("--x509-cert/--x509-key");
    }
    let riot = args.riot_uds_hex.is_some()
        || args.riot_uds_file.is_some()
        || args.riot_fwid_hex.is_some()
        || args.riot_measurement_hex.is_some()
        || args.riot_root_seed_hex.is_some()
        || args.riot_root_seed_file.is_some()
        || args.riot_root_cert.is_some()
        || args.riot_root_cn.is_some();
    if riot {
        chosen.push("--riot-*");
    }
    for (given, name) in [
        (args.symmetric_key.is_some(), "--symmetric-key"),
        (args.group_key.is_some(), "--group-key"),
        (args.pkcs11_hmac.is_some(), "--pkcs11-hmac"),
        (args.tpm.is_some(), "--tpm"),
    ] {
        if given {
            chosen.push(name);
        }
    }
    if chosen.len() > 1 {
        return Err(Error::usage(format!(
            "choose one attestation, not {}",
            chosen.join(" and ")
        )));
    }
    if args.pkcs11.is_some() && args.x509_key.is_some() {
        return Err(Error::usage(
            "--x509-key and --pkcs11 both name the private key: give one",
        ));
    }
    let need_id = |flag: &str| {
        args.registration_id
            .clone()
            .ok_or_else(|| Error::usage(format!("{flag} needs --registration-id")))
    };
    let spec = if let Some(uri) = &args.pkcs11 {
        DeviceSpec::Pkcs11X509 {
            uri: uri.clone(),
            certificates: args.x509_cert.clone(),
            registration_id: args.registration_id.clone(),
            options: pkcs11_options.clone(),
        }
    } else if args.x509_cert.is_some() || args.x509_key.is_some() {
        match (&args.x509_cert, &args.x509_key) {
            (Some(cert), Some(key)) => DeviceSpec::X509Files {
                cert: cert.clone(),
                key: key.clone(),
                registration_id: args.registration_id.clone(),
            },
            _ => return Err(Error::usage("X.509 needs both --x509-cert and --x509-key")),
        }
    } else if riot {
        let uds = match (&args.riot_uds_hex, &args.riot_uds_file) {
            (Some(hex), _) => SeedSource::Hex(hex.clone()),
            (None, Some(path)) => SeedSource::File(path.clone()),
            (None, None) => {
                return Err(Error::usage(
                    "DICE needs the UDS: --riot-uds-hex or --riot-uds-file",
                ));
            }
        };
        let fwid = args
            .riot_fwid_hex
            .clone()
            .ok_or_else(|| Error::usage("DICE needs --riot-fwid-hex"))?;
        let common_name = args
            .riot_root_cn
            .clone()
            .unwrap_or_else(|| DEFAULT_ROOT_CN.to_owned());
        let root = match (
            &args.riot_root_seed_hex,
            &args.riot_root_seed_file,
            &args.riot_root_cert,
            &args.riot_root_key,
        ) {
            (Some(hex), _, _, _) => RootSpec::Seed {
                seed: SeedSource::Hex(hex.clone()),
                common_name,
            },
            (None, Some(path), _, _) => RootSpec::Seed {
                seed: SeedSource::File(path.clone()),
                common_name,
            },
            (None, None, Some(cert), Some(key)) => RootSpec::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            _ => RootSpec::SelfSigned,
        };
        DeviceSpec::Riot(RiotSpec {
            uds,
            measurement: args.riot_measurement_hex.clone(),
            fwid,
            root,
            registration_id: args.registration_id.clone(),
        })
    } else if let Some(key) = &args.symmetric_key {
        DeviceSpec::SymmetricKey {
            registration_id: need_id("--symmetric-key")?,
            key: key.clone(),
        }
    } else if let Some(group_key) = &args.group_key {
        DeviceSpec::GroupKey {
            registration_id: need_id("--group-key")?,
            group_key: group_key.clone(),
        }
    } else if let Some(uri) = &args.pkcs11_hmac {
        DeviceSpec::Pkcs11Hmac {
            uri: uri.clone(),
            registration_id: need_id("--pkcs11-hmac")?,
            options: pkcs11_options.clone(),
        }
    } else if let Some(tcti) = &args.tpm {
        if args.registration_id.is_some() {
            return Err(Error::usage(
                "--registration-id does not apply to a TPM: its id is derived from the EK",
            ));
        }
        DeviceSpec::Tpm {
            tcti: Some(tcti.clone()),
            ek_template: args.tpm_ek_template.unwrap_or_default().into(),
            expected_id: None,
        }
    } else {
        return Ok(None);
    };
    Ok(Some(spec))
}

/// `--registration-id` and `--tpm-ek-template` override what the config file's attestation says.
fn override_from_flags(device: &mut DeviceSpec, args: &RegisterArgs) {
    if let Some(id) = &args.registration_id {
        match device {
            DeviceSpec::X509Files {
                registration_id, ..
            }
            | DeviceSpec::Pkcs11X509 {
                registration_id, ..
            } => *registration_id = Some(id.clone()),
            DeviceSpec::Riot(spec) => spec.registration_id = Some(id.clone()),
            DeviceSpec::SymmetricKey {
                registration_id, ..
            }
            | DeviceSpec::GroupKey {
                registration_id, ..
            }
            | DeviceSpec::Pkcs11Hmac {
                registration_id, ..
            } => registration_id.clone_from(id),
            DeviceSpec::Tpm { expected_id, .. } => *expected_id = Some(id.clone()),
        }
    }
    if let (Some(template), DeviceSpec::Tpm { ek_template, .. }) = (args.tpm_ek_template, device) {
        *ek_template = template.into();
    }
}

/// The attestation the config file gives.
fn device_from_config(
    file: &ConfigFile,
    pkcs11_options: &Pkcs11Options,
) -> Result<DeviceSpec, Error> {
    let attestation = file
        .attestation
        .as_ref()
        .ok_or_else(|| Error::usage(NO_ATTESTATION))?;
    Ok(match attestation {
        config::Attestation::X509(a) => {
            let certificates = a.identity_cert.as_deref().map(|p| file.path(p));
            if a.identity_pk.starts_with("pkcs11:") {
                DeviceSpec::Pkcs11X509 {
                    uri: a.identity_pk.clone(),
                    certificates,
                    registration_id: a.registration_id.clone(),
                    options: pkcs11_options.clone(),
                }
            } else {
                DeviceSpec::X509Files {
                    cert: certificates.ok_or_else(|| {
                        file.invalid("method = \"x509\" with a key file needs identity_cert")
                    })?,
                    key: file.path(&a.identity_pk),
                    registration_id: a.registration_id.clone(),
                }
            }
        }
        config::Attestation::SymmetricKey(a) => {
            let registration_id = a.registration_id.clone();
            match (&a.symmetric_key, &a.group_key) {
                (Some(key), None) => match file.locate("symmetric_key", key)? {
                    SecretLocation::Value(key) => DeviceSpec::SymmetricKey {
                        registration_id,
                        key,
                    },
                    SecretLocation::File(path) => DeviceSpec::SymmetricKey {
                        registration_id,
                        key: read_key_file(&path)?,
                    },
                    SecretLocation::Pkcs11(uri) => DeviceSpec::Pkcs11Hmac {
                        uri,
                        registration_id,
                        options: pkcs11_options.clone(),
                    },
                },
                (None, Some(group)) => match file.locate("group_key", group)? {
                    SecretLocation::Value(group_key) => DeviceSpec::GroupKey {
                        registration_id,
                        group_key,
                    },
                    SecretLocation::File(path) => DeviceSpec::GroupKey {
                        registration_id,
                        group_key: read_key_file(&path)?,
                    },
                    SecretLocation::Pkcs11(_) => {
                        return Err(file.invalid(
                            "group_key cannot be a pkcs11: URI (derive the device key, then import it)",
                        ));
                    }
                },
                _ => {
                    return Err(file.invalid(
                        "method = \"symmetric_key\" needs exactly one of symmetric_key or group_key",
                    ));
                }
            }
        }
        config::Attestation::Tpm(a) => DeviceSpec::Tpm {
            tcti: a.tcti.clone(),
            expected_id: a.registration_id.clone(),
            ek_template: match a.ek_template.as_deref() {
                None => EkTemplate::default(),
                Some(text) => <EkTemplateArg as ValueEnum>::from_str(text, true)
                    .map_err(|_| {
                        file.invalid(format!(
                            "ek_template {text:?}: expected \"tcg-l1\" or \"legacy\""
                        ))
                    })?
                    .into(),
            },
        },
        config::Attestation::Riot(a) => {
            let seed = |location| match location {
                SecretLocation::Value(hex) => Ok(SeedSource::Hex(hex)),
                SecretLocation::File(path) => Ok(SeedSource::File(path)),
                SecretLocation::Pkcs11(_) => {
                    Err(file.invalid("a DICE secret cannot be a pkcs11: URI"))
                }
            };
            let root = match (&a.root_seed, &a.root_cert, &a.root_key) {
                (Some(s), None, None) => RootSpec::Seed {
                    seed: seed(file.locate("root_seed", s)?)?,
                    common_name: a
                        .root_cn
                        .clone()
                        .unwrap_or_else(|| DEFAULT_ROOT_CN.to_owned()),
                },
                (None, Some(cert), Some(key)) => RootSpec::Files {
                    cert: file.path(cert),
                    key: file.path(key),
                },
                (None, None, None) => RootSpec::SelfSigned,
                _ => {
                    return Err(file.invalid(
                        "method = \"riot\": give root_seed, or root_cert with root_key, or neither (self-signed)",
                    ));
                }
            };
            DeviceSpec::Riot(RiotSpec {
                uds: seed(file.locate("uds", &a.uds)?)?,
                measurement: a.measurement.clone(),
                fwid: a.fwid.clone(),
                root,
                registration_id: a.registration_id.clone(),
            })
        }
    })
}

/// A base64 key from the first line of a file.
fn read_key_file(path: &Path) -> Result<Secret, Error> {
    let bytes = zeroize::Zeroizing::new(util::read(path)?);
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| Error::usage(format!("{} is not a base64 key", path.display())))?;
    Ok(text
        .trim()
        .parse()
        .unwrap_or_else(|never: std::convert::Infallible| match never {}))
}

/// `--payload`: JSON, or `@file` with JSON.
fn parse_payload(text: &str) -> Result<Value, Error> {
    let (json, source) = match text.strip_prefix('@') {
        Some(path) => (
            String::from_utf8_lossy(&util::read(Path::new(path))?).into_owned(),
            path.to_owned(),
        ),
        None => (text.to_owned(), "--payload".to_owned()),
    };
    serde_json::from_str(&json)
        .map_err(|e| Error::usage(format!("{source} is not valid JSON: {e}")))
}

/// Runs `register`.
pub(crate) fn run(args: &RegisterArgs) -> Result<(), Error> {
    let settings = Settings::resolve(args)?;
    if settings.issued_cert_out.is_some() && !settings.csr {
        return Err(Error::usage(
            "--issued-cert-out needs --csr (DPS issues certificates only for a CSR)",
        ));
    }
    let status = Status::new(!args.quiet);
    let verbose = args.verbose.then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(EnvFilter::new("provisioning=debug"))
    });
    let subscriber = tracing_subscriber::registry()
        .with(status.layer())
        .with(verbose);
    // Only fails when a subscriber is already set, which nothing else in this process does.
    let _ = tracing::subscriber::set_global_default(subscriber);

    status.show(&format!(
        "opening the {} attestation",
        settings.device.name()
    ));
    let device = settings.device.open();
    status.clear();
    let device = device?;
    let mut builder = ProvisioningClient::builder(&settings.global_endpoint, &settings.id_scope)
        .transport(settings.transport)
        .timeout(settings.timeout);
    if let Some(port) = settings.mqtt_port {
        builder = builder.mqtt_port(port);
    }
    if let Some(payload) = &settings.payload {
        builder = builder.payload(payload.clone());
    }
    if let Some(version) = &settings.api_version {
        builder = builder.api_version(version);
    }
    if let Some(retries) = settings.retries {
        builder = builder.retry_policy(RetryPolicy {
            max_retries: retries,
            ..RetryPolicy::default()
        });
    }
    for path in &settings.trust_ca {
        for certificate in util::load_certificates(path)? {
            builder = builder.trust_anchor(certificate);
        }
    }
    if settings.csr {
        let key = match (&settings.csr_key, device.csr_key()) {
            (Some(key), _) => key.open()?,
            (None, Some(key)) => key,
            (None, None) => {
                return Err(Error::usage(
                    "--csr with symmetric-key or TPM attestation needs --csr-key (a key file or pkcs11: URI)",
                ));
            }
        };
        builder = builder.certificate_request(key);
    }
    let registration_id = device.registration_id();
    builder = match device {
        Device::X509(a) => builder.x509(a),
        Device::SymmetricKey(a) => builder.symmetric_key(a),
        Device::Tpm(t) => builder.tpm(t),
    };
    let client = builder.build().map_err(|source| Error::Provisioning {
        operation: "invalid registration settings",
        source,
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    status.show(&format!(
        "'{registration_id}' at {} over {}",
        settings.global_endpoint,
        match settings.transport {
            Transport::Mqtt => "MQTT",
            _ => "HTTPS",
        }
    ));
    let result = runtime.block_on(client.register());
    status.clear();
    let registration = result.map_err(|source| Error::Provisioning {
        operation: "registration failed",
        source,
    })?;
    if let Some(path) = &settings.issued_cert_out {
        if registration.issued_certificate_chain.is_empty() {
            return Err(Error::NotIssued { path: path.clone() });
        }
        util::write(
            path,
            util::chain_pem(&registration.issued_certificate_chain).as_bytes(),
        )?;
    }
    if args.json {
        println!("{}", to_json(&registration));
    } else {
        print_human(&registration, settings.issued_cert_out.as_deref());
    }
    Ok(())
}

/// The `--json` object.
fn to_json(r: &Registration) -> Value {
    let chain = (!r.issued_certificate_chain.is_empty())
        .then(|| util::chain_pem(&r.issued_certificate_chain));
    json!({
        "registrationId": r.registration_id.as_str(),
        "assignedHub": r.assigned_hub,
        "deviceId": r.device_id,
        "status": r.status.as_str(),
        "substatus": r.substatus,
        "enrollmentGroupId": r.enrollment_group_id,
        "payload": r.payload,
        "createdDateTimeUtc": r.created_date_time_utc,
        "lastUpdatedDateTimeUtc": r.last_updated_date_time_utc,
        "etag": r.etag,
        "issuedCertificateChain": chain,
        "hubCredentials": credentials_kind(&r.credentials),
        "requests": r.requests,
    })
}

fn credentials_kind(credentials: &HubCredentials) -> &'static str {
    match credentials {
        HubCredentials::X509(_) => "x509",
        HubCredentials::Sas(_) => "sas",
        _ => "other",
    }
}

/// The text output.
fn print_human(r: &Registration, issued_out: Option<&Path>) {
    let substatus = r
        .substatus
        .as_deref()
        .map(|s| format!(" ({s})"))
        .unwrap_or_default();
    println!(
        "assigned: hub {}, device id {}",
        r.assigned_hub, r.device_id
    );
    println!("  registration id   {}", r.registration_id);
    println!("  assigned hub      {}", r.assigned_hub);
    println!("  device id         {}", r.device_id);
    println!("  status            {}{substatus}", r.status.as_str());
    if let Some(group) = &r.enrollment_group_id {
        println!("  enrollment group  {group}");
    }
    if let Some(payload) = &r.payload {
        println!("  payload           {payload}");
    }
    let credentials = match &r.credentials {
        HubCredentials::X509(_) => "TLS client certificate (the key stays in the HSM)".to_owned(),
        HubCredentials::Sas(signer) => {
            format!("SAS tokens for {}, signed by the driver", signer.resource())
        }
        _ => "other".to_owned(),
    };
    println!("  hub credentials   {credentials}");
    println!("  requests          {}", r.requests);
    if !r.issued_certificate_chain.is_empty() {
        match issued_out {
            Some(path) => println!(
                "  issued chain      {} certificate(s) written to {}",
                r.issued_certificate_chain.len(),
                path.display()
            ),
            None => {
                println!("issued certificate chain (leaf first):");
                print!("{}", util::chain_pem(&r.issued_certificate_chain));
            }
        }
    }
}
