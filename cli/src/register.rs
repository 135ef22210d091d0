//! `hsm-provision register`: one registration with DPS through any driver.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use provisioning::{
    DEFAULT_TIMEOUT, HubCredentials, ProvisioningClient, Proxy, ProxySetting, Registration,
    RetryPolicy, Transport,
};
use serde_json::{Value, json};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::Error;
use crate::config::ConfigFile;
use crate::device::x509::KeyLocation;
use crate::device::{Device, DeviceArgs, NO_ATTESTATION};
use crate::status::Status;
use crate::util;

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
    /// MQTT over a WebSocket on port 443 (wss://host/$iothub/websocket), for networks that
    /// allow only 443; the hub connection of `connect` uses it too.
    MqttWs,
    /// AMQP 1.0 over TLS, port 5671 (every attestation; TPM through SASL).
    Amqp,
    /// AMQP 1.0 over a WebSocket on port 443 (every attestation); the hub connection of
    /// `connect` uses MQTT over WebSockets.
    AmqpWs,
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
            TransportArg::MqttWs => Transport::MqttWs,
            TransportArg::Amqp => Transport::Amqp,
            TransportArg::AmqpWs => Transport::AmqpWs,
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
    /// The AMQP port on the endpoint's host [default: 5671].
    #[arg(long, value_name = "PORT", help_heading = "DPS")]
    amqp_port: Option<u16>,
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
    /// An HTTP proxy for DPS and the hub, http://user:password@host:port (credentials and port
    /// optional; the TLS session runs inside its CONNECT tunnel), or `none` to ignore
    /// HTTPS_PROXY [default: HTTPS_PROXY unless NO_PROXY names the host].
    #[arg(long, value_name = "URL|none", help_heading = "DPS")]
    proxy: Option<String>,

    #[command(flatten)]
    device: DeviceArgs,

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
    amqp_port: Option<u16>,
    payload: Option<Value>,
    csr: bool,
    csr_key: Option<KeyLocation>,
    trust_ca: Vec<PathBuf>,
    api_version: Option<String>,
    timeout: Duration,
    retries: Option<u32>,
    proxy: ProxySetting,
    issued_cert_out: Option<PathBuf>,
    device: DeviceArgs,
    life: crate::lifecycle::LifeConfig,
}

impl Settings {
    fn resolve(args: &RegisterArgs) -> Result<Self, Error> {
        let file = args.config.as_deref().map(ConfigFile::load).transpose()?;
        let section = file.as_ref().map(|f| &f.provisioning);
        let device = match (args.device.given(), file.as_ref()) {
            (true, _) => args.device.clone(),
            (false, Some(file)) => {
                let attestation = file
                    .attestation()
                    .ok_or_else(|| Error::usage(NO_ATTESTATION))?;
                args.device.with_config(attestation)
            }
            (false, None) => return Err(Error::usage(NO_ATTESTATION)),
        };
        device.check()?;
        let transport = match (args.transport, section.and_then(|s| s.transport.as_deref())) {
            (Some(t), _) => t,
            (None, Some(text)) => TransportArg::parse(text).ok_or_else(|| {
                file.as_ref().map_or_else(
                    || Error::usage("invalid transport"),
                    |f| {
                        f.invalid(format!(
                            "transport {text:?}: expected \"https\", \"mqtt\", \"mqtt-ws\", \"amqp\" or \"amqp-ws\""
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
            (Some(text), _) => Some(KeyLocation::parse(text)),
            (None, Some(text)) => Some(match (KeyLocation::parse(text), file.as_ref()) {
                (KeyLocation::File(_), Some(f)) => KeyLocation::File(f.path(text)),
                (location, _) => location,
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
            amqp_port: args.amqp_port.or(section.and_then(|s| s.amqp_port)),
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
            proxy: match args
                .proxy
                .as_deref()
                .or(section.and_then(|s| s.proxy.as_deref()))
            {
                None => ProxySetting::FromEnvironment,
                Some(text) if text.eq_ignore_ascii_case("none") => ProxySetting::Direct,
                Some(text) => ProxySetting::Proxy(Proxy::parse(text).map_err(|source| {
                    Error::Provisioning {
                        operation: "invalid --proxy",
                        source,
                    }
                })?),
            },
            issued_cert_out: args.issued_cert_out.clone().or_else(|| {
                let f = file.as_ref()?;
                Some(f.path(f.provisioning.issued_cert_out.as_deref()?))
            }),
            device,
            life: file
                .as_ref()
                .map(crate::lifecycle::LifeConfig::from_file)
                .unwrap_or_default(),
        })
    }
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
    let registered = register(args)?;
    let registration = &registered.registration;
    if args.json {
        println!("{}", to_json(registration));
    } else {
        print_human(registration, registered.issued_cert_out.as_deref());
    }
    Ok(())
}

/// A device registered by [`register`], with what the commands that go on need.
pub(crate) struct Registered {
    pub(crate) registration: Registration,
    /// The runtime it registered on.
    pub(crate) runtime: tokio::runtime::Runtime,
    /// The status line.
    pub(crate) status: Status,
    /// Where the issued chain was written, if it was.
    pub(crate) issued_cert_out: Option<PathBuf>,
}

impl RegisterArgs {
    /// Whether one JSON object is to be printed instead of text.
    pub(crate) fn json(&self) -> bool {
        self.json
    }
}

/// A client ready to register, with what the commands need around it.
pub(crate) struct Prepared {
    pub(crate) client: ProvisioningClient,
    pub(crate) runtime: tokio::runtime::Runtime,
    pub(crate) status: Status,
    /// `'{id}' at {endpoint} over {transport}`, for the status line.
    pub(crate) what: String,
    pub(crate) issued_cert_out: Option<PathBuf>,
    /// Whether a CSR was asked for.
    pub(crate) csr: bool,
    /// Whether the device is a DICE one (its keys cannot rotate).
    pub(crate) dice: bool,
    /// The config file's lifecycle settings (`state_dir`, `key_store`, `key_label`), paths
    /// resolved against its folder.
    pub(crate) life: crate::lifecycle::LifeConfig,
    /// PKCS#11 module and PIN options, for a `pkcs11:` key store.
    pub(crate) pkcs11: crate::device::pkcs11::Pkcs11Options,
    /// The TPM's TCTI, for a `tpm` key store (read only by builds with TPM support).
    #[cfg_attr(not(feature = "tpm"), allow(dead_code))]
    pub(crate) tcti: Option<String>,
}

/// Registers the device as `register` does (status line, `-v` logging, issued chain written),
/// without printing the result.
pub(crate) fn register(args: &RegisterArgs) -> Result<Registered, Error> {
    register_prepared(prepare(args)?)
}

/// Registers a prepared client (see [`register`]).
pub(crate) fn register_prepared(prepared: Prepared) -> Result<Registered, Error> {
    let Prepared {
        client,
        runtime,
        status,
        what,
        issued_cert_out,
        ..
    } = prepared;
    status.show(&what);
    let result = runtime.block_on(client.register());
    status.clear();
    let registration = result.map_err(|source| Error::Provisioning {
        operation: "registration failed",
        source,
    })?;
    if let Some(path) = &issued_cert_out {
        if registration.issued_certificate_chain.is_empty() {
            return Err(Error::NotIssued { path: path.clone() });
        }
        util::write(
            path,
            util::chain_pem(&registration.issued_certificate_chain).as_bytes(),
        )?;
    }
    Ok(Registered {
        registration,
        runtime,
        status,
        issued_cert_out,
    })
}

/// Resolves the settings, opens the device, builds the client and the runtime, sets up the
/// status line and `-v` logging: everything before the first request.
pub(crate) fn prepare(args: &RegisterArgs) -> Result<Prepared, Error> {
    let settings = Settings::resolve(args)?;
    if settings.issued_cert_out.is_some() && !settings.csr {
        return Err(Error::usage(
            "--issued-cert-out needs --csr (DPS issues certificates only for a CSR)",
        ));
    }
    // What the transport cannot carry is a usage error, found before the device is opened
    // (a TPM that is unreachable as well must not turn it into a device error).
    if settings.transport.is_mqtt() && settings.device.is_tpm() {
        return Err(Error::usage(
            "DPS has no TPM attestation over MQTT: use --transport https or amqp",
        ));
    }
    let status = Status::new(!args.quiet);
    let verbose = args.verbose.then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            // Colours only for a terminal: `-v 2>log` gets plain text.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
        .proxy(settings.proxy.clone())
        .timeout(settings.timeout);
    if let Some(port) = settings.mqtt_port {
        builder = builder.mqtt_port(port);
    }
    if let Some(port) = settings.amqp_port {
        builder = builder.amqp_port(port);
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
            (Some(key), _) => key.open(&settings.device.pkcs11.options)?,
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
    let dice = settings.device.is_riot();
    builder = match device {
        Device::X509(a) => builder.x509(a),
        Device::SymmetricKey(a) => builder.symmetric_key(a),
        Device::Tpm { attestation, .. } => builder.tpm(attestation),
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
    let what = format!(
        "'{registration_id}' at {} over {}",
        settings.global_endpoint,
        settings.transport.name()
    );
    Ok(Prepared {
        client,
        runtime,
        status,
        what,
        issued_cert_out: settings.issued_cert_out,
        csr: settings.csr,
        dice,
        life: settings.life,
        pkcs11: settings.device.pkcs11.options.clone(),
        tcti: settings.device.tpm.tcti.clone(),
    })
}

/// The `--json` object.
pub(crate) fn to_json(r: &Registration) -> Value {
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

pub(crate) fn credentials_kind(credentials: &HubCredentials) -> &'static str {
    match credentials {
        HubCredentials::X509(_) => "x509",
        HubCredentials::Sas(_) => "sas",
        _ => "other",
    }
}

/// The hub credentials, in words (what DPS sent escaped).
pub(crate) fn credentials_text(credentials: &HubCredentials) -> String {
    match credentials {
        HubCredentials::X509(_) => "TLS client certificate (the key stays in the HSM)".to_owned(),
        HubCredentials::Sas(signer) => format!(
            "SAS tokens for {}, signed by the driver",
            hsm_core::untrusted::printable(&signer.resource())
        ),
        _ => "other".to_owned(),
    }
}

/// The text output. What DPS sent is printed with its control characters escaped.
fn print_human(r: &Registration, issued_out: Option<&Path>) {
    use hsm_core::untrusted::printable;
    let (hub, device_id) = (printable(&r.assigned_hub), printable(&r.device_id));
    let substatus = r
        .substatus
        .as_deref()
        .map(|s| format!(" ({})", printable(s)))
        .unwrap_or_default();
    println!("assigned: hub {hub}, device id {device_id}");
    println!("  registration id   {}", r.registration_id);
    println!("  assigned hub      {hub}");
    println!("  device id         {device_id}");
    println!("  status            {}{substatus}", r.status.as_str());
    if let Some(group) = &r.enrollment_group_id {
        println!("  enrollment group  {}", printable(group));
    }
    if let Some(payload) = &r.payload {
        println!("  payload           {payload}");
    }
    println!("  hub credentials   {}", credentials_text(&r.credentials));
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
