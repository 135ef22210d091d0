//! `hsm-provision connect`: register, then prove the provisioned credential at the assigned
//! IoT Hub: connect, send one telemetry message, read the twin.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use provisioning::Registration;
use provisioning::device::Device;
use provisioning::hub::{HubClient, HubClientBuilder, Message, Twin};
use serde_json::{Value, json};

use crate::Error;
use crate::lifecycle::{self, LifeArgs};
use crate::register::{self, Prepared, RegisterArgs};
use crate::util;

pub(crate) const CONNECT_ABOUT: &str = "\
Register this device with DPS, then connect to the IoT Hub it was assigned with the credential
it was given (a SAS token signed by the driver, or the TLS client certificate whose key stays in
the HSM), send one telemetry message and read the device twin.

Takes every option of `register` (device, DPS, config file). The hub is reached by its name, on
port 8883 unless the assignment carries one; --connect-to reaches it at another address (for
private DNS, or the emulator: `--connect-to 127.0.0.1:PORT`).

With --state-dir the assignment is cached there and used at the next start (DPS is asked only
when there is no valid cache, or the hub refuses the cached credential: then the device
registers again and goes to the hub DPS names). With --key-store the hub certificate is issued
for a key generated in that store (renewed with `hsm-provision renew`).";

/// `connect`'s arguments: `register`'s and the hub's.
#[derive(Debug, Args)]
pub(crate) struct ConnectArgs {
    #[command(flatten)]
    register: RegisterArgs,

    /// The telemetry message, JSON (`@file.json` reads a file) [default: a small status
    /// document].
    #[arg(long, value_name = "JSON", help_heading = "Hub")]
    message: Option<String>,
    /// Connect to this address instead of the one the hub's name resolves to, still checking
    /// the hub's certificate for its name.
    #[arg(long, value_name = "HOST:PORT", help_heading = "Hub")]
    connect_to: Option<String>,
    /// How long each hub step may take (connect, acknowledgement, twin) [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = util::parse_duration, help_heading = "Hub")]
    hub_timeout: Option<Duration>,

    #[command(flatten)]
    life: LifeArgs,
}

/// What the hub leg did.
struct Proved {
    telemetry_bytes: usize,
    twin: Twin,
}

/// Runs `connect`.
pub(crate) fn run(args: &ConnectArgs) -> Result<(), Error> {
    // The message is checked before anything is registered.
    let message = match &args.message {
        Some(text) => Some(parse_message(text)?),
        None => None,
    };
    let prepared = register::prepare(&args.register)?;
    let (connect_to, timeout) = (args.connect_to.clone(), args.hub_timeout);
    let hub_options = move |mut builder: HubClientBuilder| {
        if let Some(address) = &connect_to {
            builder = builder.connect_to(address);
        }
        if let Some(timeout) = timeout {
            builder = builder.timeout(timeout);
        }
        builder
    };
    if let Some(device) = lifecycle::device(&args.life, &prepared, hub_options)? {
        return run_device(args, &prepared, &device, message);
    }
    let registered = register::register_prepared(prepared)?;
    let registration = &registered.registration;
    let message = message.unwrap_or_else(|| default_message(&registration.device_id));
    let status = &registered.status;
    status.show(&format!(
        "connecting to {} as '{}'",
        hsm_core::untrusted::printable(&registration.assigned_hub),
        hsm_core::untrusted::printable(&registration.device_id)
    ));
    let proved = registered
        .runtime
        .block_on(prove(args, registration, &message));
    status.clear();
    let proved = proved.map_err(|source| Error::Provisioning {
        operation: "the hub leg failed",
        source,
    })?;
    if args.register.json() {
        let mut out = register::to_json(registration);
        out["telemetry"] = json!("acknowledged");
        out["telemetryBytes"] = json!(proved.telemetry_bytes);
        out["twin"] = json!({
            "desiredVersion": proved.twin.desired_version,
            "reportedVersion": proved.twin.reported_version,
            "desired": proved.twin.desired,
            "reported": proved.twin.reported,
        });
        println!("{out}");
    } else {
        print_human(registration, &proved, registered.issued_cert_out.as_deref());
    }
    Ok(())
}

/// `connect` with the lifecycle: the cache, reprovisioning, an issued key in a key store.
fn run_device(
    args: &ConnectArgs,
    prepared: &Prepared,
    device: &Device,
    message: Option<Value>,
) -> Result<(), Error> {
    let connection = lifecycle::connect(prepared, device)?;
    let assignment = connection.assignment().clone();
    let message = message.unwrap_or_else(|| default_message(&assignment.device_id));
    prepared.status.show(&format!(
        "sending telemetry to {}",
        hsm_core::untrusted::printable(&assignment.assigned_hub)
    ));
    let proved = prepared
        .runtime
        .block_on(use_hub(connection.hub().clone(), &message));
    prepared.status.clear();
    let proved = proved.map_err(|source| Error::Provisioning {
        operation: "the hub leg failed",
        source,
    })?;
    if args.register.json() {
        println!(
            "{}",
            json!({
                "registrationId": assignment.registration_id,
                "assignedHub": assignment.assigned_hub,
                "deviceId": assignment.device_id,
                "via": lifecycle::via_json(connection.via()),
                "registrations": connection.registrations(),
                "hubCredentials": match assignment.credential {
                    provisioning::device::CredentialKind::Issued => "issued",
                    _ => "attestation",
                },
                "keyLabel": assignment.key.as_ref().map(|k| &k.label),
                "telemetry": "acknowledged",
                "telemetryBytes": proved.telemetry_bytes,
                "twin": {
                    "desiredVersion": proved.twin.desired_version,
                    "reportedVersion": proved.twin.reported_version,
                },
            })
        );
    } else {
        use hsm_core::untrusted::printable;
        println!(
            "connected: hub {}, device id {}",
            printable(&assignment.assigned_hub),
            printable(&assignment.device_id)
        );
        println!("  registration id   {}", assignment.registration_id);
        println!(
            "  through           {}",
            lifecycle::via_text(connection.via())
        );
        match &assignment.key {
            Some(key) => println!("  hub credentials   issued certificate, key {}", key.label),
            None => println!("  hub credentials   the attestation's"),
        }
        println!(
            "  telemetry         acknowledged ({} bytes)",
            proved.telemetry_bytes
        );
        println!(
            "  twin version      desired {}, reported {}",
            proved.twin.desired_version, proved.twin.reported_version
        );
        if let Some(dir) = device.cache_path() {
            println!("  cached in         {}", dir.display());
        }
    }
    Ok(())
}

async fn prove(
    args: &ConnectArgs,
    registration: &Registration,
    message: &Value,
) -> Result<Proved, provisioning::Error> {
    let mut builder = HubClient::builder_for(registration);
    if let Some(address) = &args.connect_to {
        builder = builder.connect_to(address);
    }
    if let Some(timeout) = args.hub_timeout {
        builder = builder.timeout(timeout);
    }
    let hub = builder.connect().await?;
    use_hub(hub, message).await
}

/// Sends the message, reads the twin, disconnects.
async fn use_hub(hub: HubClient, message: &Value) -> Result<Proved, provisioning::Error> {
    let message = Message::json(message);
    let telemetry_bytes = message.payload().len();
    let sent = hub.send_telemetry(message).await;
    let twin = match sent {
        Ok(()) => hub.twin().await,
        Err(e) => Err(e),
    };
    hub.disconnect().await;
    Ok(Proved {
        telemetry_bytes,
        twin: twin?,
    })
}

/// `--message`: JSON, or `@file` with JSON.
fn parse_message(text: &str) -> Result<Value, Error> {
    let (json, source) = match text.strip_prefix('@') {
        Some(path) => (
            String::from_utf8_lossy(&util::read(Path::new(path))?).into_owned(),
            path.to_owned(),
        ),
        None => (text.to_owned(), "--message".to_owned()),
    };
    serde_json::from_str(&json)
        .map_err(|e| Error::usage(format!("{source} is not valid JSON: {e}")))
}

/// The default telemetry: who sent it, with what, and when.
fn default_message(device_id: &str) -> Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    json!({
        "status": "connected",
        "deviceId": device_id,
        "agent": concat!("hsm-provision/", env!("CARGO_PKG_VERSION")),
        "time": now,
    })
}

fn print_human(r: &Registration, proved: &Proved, issued_out: Option<&Path>) {
    use hsm_core::untrusted::printable;
    let (hub, device_id) = (printable(&r.assigned_hub), printable(&r.device_id));
    println!("connected: hub {hub}, device id {device_id}");
    println!("  registration id   {}", r.registration_id);
    println!(
        "  hub credentials   {}",
        register::credentials_text(&r.credentials)
    );
    println!(
        "  telemetry         acknowledged ({} bytes)",
        proved.telemetry_bytes
    );
    println!(
        "  twin version      desired {}, reported {}",
        proved.twin.desired_version, proved.twin.reported_version
    );
    if let Some(path) = issued_out {
        println!("  issued chain      written to {}", path.display());
    }
}
