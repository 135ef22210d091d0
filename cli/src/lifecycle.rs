//! The credential's life on the command line: `connect --state-dir` (the assignment cache,
//! reprovisioning), `renew` (a new key and certificate now) and `status` (what the cache
//! says, and when the certificate is renewed).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use hsm_core::KeyStore;
use provisioning::device::{
    CachedAssignment, ConnectedVia, Connection, CredentialKind, Device, RegisterReason,
};
use serde_json::{Value, json};

use crate::Error;
use crate::config::ConfigFile;
use crate::register::{self, Prepared, RegisterArgs};

/// The key label prefix when none is given.
const DEFAULT_KEY_LABEL: &str = "device-key";

/// The lifecycle flags `connect` and `renew` take.
#[derive(Clone, Debug, Default, Args)]
pub(crate) struct LifeArgs {
    /// Keep the assignment in this folder (assignment.json) and use it at the next start:
    /// DPS is asked only when there is none, it is invalid, or the hub refuses it.
    #[arg(long, value_name = "DIR", help_heading = "Lifecycle")]
    state_dir: Option<PathBuf>,
    /// Where to generate the key of an issued certificate, and its successors at each
    /// renewal: a folder (key files), a pkcs11: token URI, or `tpm` (the --tpm TCTI, or
    /// `tpm:TCTI`). Implies --csr.
    #[arg(long, value_name = "DIR|URI|tpm", help_heading = "Lifecycle")]
    key_store: Option<String>,
    /// The label prefix of generated keys: PREFIX-1, PREFIX-2, ... [default: device-key].
    #[arg(long, value_name = "PREFIX", help_heading = "Lifecycle")]
    key_label: Option<String>,
}

/// `[provisioning]`'s lifecycle settings, paths resolved against the file's folder.
#[derive(Clone, Debug, Default)]
pub(crate) struct LifeConfig {
    state_dir: Option<PathBuf>,
    key_store: Option<String>,
    key_label: Option<String>,
}

impl LifeConfig {
    pub(crate) fn from_file(file: &ConfigFile) -> Self {
        let section = &file.provisioning;
        Self {
            state_dir: section.state_dir.as_deref().map(|p| file.path(p)),
            key_store: section.key_store.as_deref().map(|text| {
                if text.starts_with("pkcs11:") || text == "tpm" || text.starts_with("tpm:") {
                    text.to_owned()
                } else {
                    file.path(text).display().to_string()
                }
            }),
            key_label: section.key_label.clone(),
        }
    }
}

/// The lifecycle settings, flags over the config file.
struct Life {
    state_dir: Option<PathBuf>,
    key_store: Option<String>,
    key_label: String,
}

impl Life {
    fn resolve(args: &LifeArgs, prepared: &Prepared) -> Self {
        let file = &prepared.life;
        Self {
            state_dir: args.state_dir.clone().or_else(|| file.state_dir.clone()),
            key_store: args.key_store.clone().or_else(|| file.key_store.clone()),
            key_label: args
                .key_label
                .clone()
                .or_else(|| file.key_label.clone())
                .unwrap_or_else(|| DEFAULT_KEY_LABEL.to_owned()),
        }
    }

    /// Whether anything asks for the lifecycle (else `connect` registers as before).
    fn wanted(&self) -> bool {
        self.state_dir.is_some() || self.key_store.is_some()
    }
}

/// Opens the key store `--key-store` names.
fn open_store(
    text: &str,
    prepared: &Prepared,
    state_dir: Option<&Path>,
) -> Result<Arc<dyn KeyStore>, Error> {
    if text.starts_with("pkcs11:") {
        let uri = crate::device::pkcs11::parse_uri(text)?;
        let token = crate::device::pkcs11::open_token(&uri, &prepared.pkcs11)?;
        return Ok(Arc::new(token));
    }
    if text == "tpm" || text.starts_with("tpm:") {
        return open_tpm_store(text.strip_prefix("tpm:"), prepared, state_dir);
    }
    hsm_x509::KeyFolder::open(text)
        .map(|folder| Arc::new(folder) as Arc<dyn KeyStore>)
        .map_err(|source| Error::X509 {
            operation: "cannot open the key folder",
            source,
        })
}

#[cfg(feature = "tpm")]
fn open_tpm_store(
    tcti: Option<&str>,
    prepared: &Prepared,
    state_dir: Option<&Path>,
) -> Result<Arc<dyn KeyStore>, Error> {
    let tpm = crate::device::tpm::open_tpm(tcti.or(prepared.tcti.as_deref()))?;
    let index = state_dir.map(|dir| dir.join("tpm-keys")).ok_or_else(|| {
        Error::usage("--key-store tpm needs --state-dir (it keeps the key index there)")
    })?;
    hsm_tpm::TpmKeyStore::open(&tpm, index)
        .map(|store| Arc::new(store) as Arc<dyn KeyStore>)
        .map_err(|source| Error::Tpm {
            operation: "cannot open the TPM key store",
            source,
        })
}

#[cfg(not(feature = "tpm"))]
fn open_tpm_store(
    _tcti: Option<&str>,
    _prepared: &Prepared,
    _state_dir: Option<&Path>,
) -> Result<Arc<dyn KeyStore>, Error> {
    Err(Error::usage(crate::device::tpm::NO_TPM_SUPPORT))
}

/// The device `connect` and `renew` work with.
pub(crate) fn device(
    args: &LifeArgs,
    prepared: &Prepared,
    hub: impl Fn(provisioning::hub::HubClientBuilder) -> provisioning::hub::HubClientBuilder
    + Send
    + Sync
    + 'static,
) -> Result<Option<Device>, Error> {
    let life = Life::resolve(args, prepared);
    if !life.wanted() {
        return Ok(None);
    }
    let mut builder = Device::builder(prepared.client.clone()).hub_options(hub);
    if let Some(dir) = &life.state_dir {
        builder = builder.state_dir(dir);
    }
    match &life.key_store {
        Some(_) if prepared.dice => {
            return Err(Error::usage(
                "a DICE device cannot rotate its key (its keys follow its firmware): drop --key-store",
            ));
        }
        Some(text) => {
            let store = open_store(text, prepared, life.state_dir.as_deref())?;
            builder = builder.issue_certificates(store, &life.key_label);
        }
        None if prepared.csr && life.state_dir.is_some() => {
            return Err(Error::usage(
                "with --state-dir, an issued certificate needs --key-store (where its key is generated and later rotated)",
            ));
        }
        None => {}
    }
    builder
        .build()
        .map(Some)
        .map_err(|source| Error::Provisioning {
            operation: "invalid lifecycle settings",
            source,
        })
}

/// Connects as `connect --state-dir` does, with the status line.
pub(crate) fn connect(prepared: &Prepared, device: &Device) -> Result<Connection, Error> {
    prepared
        .status
        .show(&format!("connecting {}", prepared.what));
    let connection = prepared.runtime.block_on(device.connect());
    prepared.status.clear();
    connection.map_err(|source| Error::Provisioning {
        operation: "cannot connect",
        source,
    })
}

/// How the connection came about, in words.
pub(crate) fn via_text(via: &ConnectedVia) -> String {
    match via {
        ConnectedVia::Cache => "the cached assignment (DPS not asked)".into(),
        ConnectedVia::Registration { reason, substatus } => {
            let why = match reason {
                RegisterReason::NoStateDir => "no state folder".to_owned(),
                RegisterReason::NoCache => "no cached assignment".to_owned(),
                RegisterReason::Policy => "the policy registers every time".to_owned(),
                RegisterReason::InvalidCache(why) => format!("the cache was unusable: {why}"),
                RegisterReason::OtherIdentity => "the cache was for another identity".to_owned(),
                RegisterReason::HubRefused(why) => format!("reprovisioned: {why}"),
                _ => "registered".to_owned(),
            };
            match substatus {
                Some(s) => format!(
                    "a DPS registration ({why}; {})",
                    hsm_core::untrusted::printable(s)
                ),
                None => format!("a DPS registration ({why})"),
            }
        }
        _ => "a connection".into(),
    }
}

/// `via` for `--json`.
pub(crate) fn via_json(via: &ConnectedVia) -> Value {
    match via {
        ConnectedVia::Cache => json!({"source": "cache"}),
        ConnectedVia::Registration { substatus, .. } => {
            json!({"source": "registration", "reason": via_text(via), "substatus": substatus})
        }
        _ => json!({"source": "other"}),
    }
}

/// `renew`'s arguments.
#[derive(Debug, Args)]
pub(crate) struct RenewArgs {
    #[command(flatten)]
    register: RegisterArgs,
    #[command(flatten)]
    life: LifeArgs,
    /// Connect to this address instead of the one the hub's name resolves to.
    #[arg(long, value_name = "HOST:PORT", help_heading = "Hub")]
    connect_to: Option<String>,
}

pub(crate) const RENEW_ABOUT: &str = "\
Renew the device's issued certificate now: connect (from the assignment cache, registering
only if needed), generate a new key in the key store (--key-store), have the hub certify it
(IoT Hub certificate management, or DPS when the hub has none), connect with it, and only then
delete the old key. Every step is recorded in the state folder first: a device stopped at any
step connects on its next start. A DICE device cannot rotate its key (exit 2).";

/// Runs `renew`.
pub(crate) fn renew(args: &RenewArgs) -> Result<(), Error> {
    let prepared = register::prepare(&args.register)?;
    if prepared.dice {
        return Err(Error::Provisioning {
            operation: "cannot renew",
            source: provisioning::Error::CannotRenew {
                reason: "a DICE device's keys follow its firmware and cannot be rotated".into(),
            },
        });
    }
    let connect_to = args.connect_to.clone();
    let device = device(&args.life, &prepared, move |b| match &connect_to {
        Some(address) => b.connect_to(address),
        None => b,
    })?
    .ok_or_else(|| Error::usage("renew needs --state-dir and --key-store"))?;
    let connection = connect(&prepared, &device)?;
    prepared.status.show("renewing the certificate");
    let renewed = prepared.runtime.block_on(device.renew(&connection));
    prepared.status.clear();
    let renewed = renewed.map_err(|source| Error::Provisioning {
        operation: "renewal failed",
        source,
    });
    prepared.runtime.block_on(connection.disconnect());
    let renewed = renewed?;
    if args.register.json() {
        println!(
            "{}",
            json!({
                "renewed": true,
                "label": renewed.label,
                "replaced": renewed.replaced,
                "via": match renewed.via {
                    provisioning::device::RenewedVia::Hub => "hub",
                    _ => "dps",
                },
                "notAfter": renewed.not_after.map(rfc3339),
                "renewAt": renewed.renew_at.map(rfc3339),
            })
        );
    } else {
        println!(
            "renewed: key {} (replaces {}, deleted)",
            renewed.label, renewed.replaced
        );
        println!(
            "  issued by         {}",
            match renewed.via {
                provisioning::device::RenewedVia::Hub => "the hub (certificate management)",
                _ => "DPS (registration with a CSR)",
            }
        );
        if let Some(at) = renewed.not_after {
            println!("  valid until       {}", rfc3339(at));
        }
        if let Some(at) = renewed.renew_at {
            println!("  next renewal      {}", rfc3339(at));
        }
    }
    Ok(())
}

/// `status`'s arguments.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// The state folder (as given to `connect --state-dir`).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// A config file whose `[provisioning] state_dir` names the folder.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub(crate) const STATUS_ABOUT: &str = "\
Show the cached assignment: hub, device id, how the device authenticates, the issued
certificate's expiry and the next renewal. Reads the state folder only: no device, DPS or hub
is contacted. Exits 1 when there is no cached assignment, 2 when the cache is unreadable.";

/// Runs `status`.
pub(crate) fn status(args: &StatusArgs) -> Result<(), Error> {
    let dir = match (&args.state_dir, &args.config) {
        (Some(dir), _) => dir.clone(),
        (None, Some(path)) => {
            let file = ConfigFile::load(path)?;
            LifeConfig::from_file(&file)
                .state_dir
                .ok_or_else(|| Error::usage("the config file has no [provisioning] state_dir"))?
        }
        (None, None) => return Err(Error::usage("give --state-dir (or --config)")),
    };
    let cached = provisioning::device::load_cache(&dir).map_err(|source| Error::Provisioning {
        operation: "cannot read the assignment cache",
        source,
    })?;
    let Some(cached) = cached else {
        return Err(Error::NoAssignment { dir });
    };
    if args.json {
        println!("{}", status_json(&cached));
    } else {
        print_status(&cached);
    }
    Ok(())
}

fn status_json(c: &CachedAssignment) -> Value {
    let key = c.key.as_ref();
    json!({
        "registrationId": c.registration_id,
        "assignedHub": c.assigned_hub,
        "deviceId": c.device_id,
        "substatus": c.substatus,
        "credential": match c.credential {
            CredentialKind::Issued => "issued",
            _ => "attestation",
        },
        "keyLabel": key.map(|k| &k.label),
        "notAfter": key.and_then(|k| k.not_after).map(rfc3339),
        "renewAt": key.and_then(|k| k.renew_at).map(rfc3339),
        "renewalPending": c.pending.as_ref().map(|p| &p.label),
        "registeredAt": rfc3339(c.registered_at),
    })
}

fn print_status(c: &CachedAssignment) {
    use hsm_core::untrusted::printable;
    println!(
        "assigned: hub {}, device id {}",
        printable(&c.assigned_hub),
        printable(&c.device_id)
    );
    println!("  registration id   {}", c.registration_id);
    println!("  registered        {}", rfc3339(c.registered_at));
    match (&c.credential, &c.key) {
        (CredentialKind::Issued, Some(key)) => {
            println!("  hub credential    issued certificate, key {}", key.label);
            if let Some(at) = key.not_after {
                println!("  valid until       {}{}", rfc3339(at), left(at));
            }
            if let Some(at) = key.renew_at {
                println!("  next renewal      {}{}", rfc3339(at), left(at));
            }
        }
        _ => println!("  hub credential    the attestation (no issued certificate)"),
    }
    if let Some(pending) = &c.pending {
        println!(
            "  renewal pending   key {} (finished at the next start)",
            pending.label
        );
    }
}

/// ` (in 3h 20m)` or ` (passed)`.
fn left(at: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if at <= now {
        return " (passed)".into();
    }
    format!(" (in {})", human(Duration::from_secs(at - now)))
}

/// `45s`, `12m 5s`, `3h 20m`, `12d 4h`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Seconds since the Unix epoch as RFC 3339 UTC.
pub(crate) fn rfc3339(seconds: u64) -> String {
    let secs = i64::try_from(seconds).unwrap_or(i64::MAX);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| seconds.to_string())
}
