//! A fleet from one process: many symmetric-key group members register with keys derived from
//! the group key, then each connects to its assigned hub once and has one telemetry message
//! acknowledged, with a bounded number of devices in flight. A factory line or a load test
//! starts from here.
//!
//! Run: `cargo run --release --example fleet -- --devices 1000` (an in-process dps-emulator
//! with a symmetric-key enrollment group), or against a DPS of your own:
//!
//! ```text
//! fleet --dps HOST[:PORT] --scope ID_SCOPE --group-key BASE64 [--ca PEM] [--hub-address ADDR]
//!       [--devices N] [--in-flight K] [--transport https|mqtt] [--prefix ID_PREFIX]
//!       [--mqtt-port PORT] [--min-poll-ms MS] [--results FILE.csv]
//! ```
//!
//! The client waits at least a second between DPS's polls whatever `Retry-After` says (the
//! default that keeps a fleet from hammering the service): a registration takes about a second.
//! `--min-poll-ms 0` follows `Retry-After` alone, for load tests against an emulator that answers
//! `Retry-After: 0` (the in-process one does).
//!
//! Every device's result is checked (assigned, device id, hub, telemetry acknowledged) and, with
//! `--results`, written one line per device. It prints a progress line every second and ends
//! with throughput, p50/p99 of registration and of the whole device, and the process's peak RSS.
//! Exit status 0 only when every device succeeded. Derive keys on the line only in a trusted
//! station: the group key never goes onto a device.

use std::error::Error;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dps_emulator::{Emulator, EnrollmentGroup, KeyPair};
use hsm_core::{RegistrationId, SecretString};
use hsm_examples::exit_code;
use hsm_symmkey::SymmetricKey;
use provisioning::hub::{HubClient, Message};
use provisioning::{ProvisioningClient, RegistrationStatus, RetryPolicy, Transport};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

type BoxError = Box<dyn Error + Send + Sync>;

/// The in-process emulator's group key (an example value: never ship a group key on a device).
const DEMO_GROUP_KEY: &str = "ZmxlZXQtZ3JvdXAta2V5LWZvci10aGUtZXhhbXBsZS1vbmx5LTAxMjM0NTY3OA==";

const USAGE: &str = "usage: fleet [--devices N] [--in-flight K] [--transport https|mqtt] \
[--prefix ID_PREFIX] [--min-poll-ms MS] [--results FILE.csv] [--dps HOST[:PORT] --scope ID_SCOPE --group-key BASE64 \
[--ca PEM] [--hub-address ADDR] [--mqtt-port PORT]]";

struct Options {
    devices: usize,
    in_flight: usize,
    transport: Transport,
    prefix: String,
    results: Option<PathBuf>,
    dps: Option<String>,
    scope: Option<String>,
    group_key: Option<SecretString>,
    ca: Option<PathBuf>,
    hub_address: Option<String>,
    mqtt_port: Option<u16>,
    min_poll: Option<Duration>,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        devices: 100,
        in_flight: 256,
        transport: Transport::Https,
        prefix: "fleet-".into(),
        results: None,
        dps: None,
        scope: None,
        group_key: None,
        ca: None,
        hub_address: None,
        mqtt_port: None,
        min_poll: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        let number = |text: String| {
            text.parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or(format!("{flag}: {text} is not a positive number"))
        };
        match flag.as_str() {
            "--devices" => options.devices = number(value()?)?,
            "--in-flight" => options.in_flight = number(value()?)?,
            "--transport" => {
                options.transport = match value()?.as_str() {
                    "https" => Transport::Https,
                    "mqtt" => Transport::Mqtt,
                    other => return Err(format!("unknown transport {other} (https, mqtt)")),
                }
            }
            "--prefix" => options.prefix = value()?,
            "--min-poll-ms" => {
                let text = value()?;
                options.min_poll =
                    Some(Duration::from_millis(text.parse().map_err(|_| {
                        format!("--min-poll-ms: {text} is not a number")
                    })?));
            }
            "--results" => options.results = Some(value()?.into()),
            "--dps" => options.dps = Some(value()?),
            "--scope" => options.scope = Some(value()?),
            "--group-key" => options.group_key = Some(SecretString::from(value()?)),
            "--ca" => options.ca = Some(value()?.into()),
            "--hub-address" => options.hub_address = Some(value()?),
            "--mqtt-port" => {
                let text = value()?;
                options.mqtt_port = Some(
                    text.parse()
                        .map_err(|_| format!("--mqtt-port: {text} is not a port"))?,
                );
            }
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if options.dps.is_some() && (options.scope.is_none() || options.group_key.is_none()) {
        return Err("--dps needs --scope and --group-key".into());
    }
    Ok(options)
}

/// Where the fleet registers.
struct Target {
    endpoint: String,
    scope: String,
    group_key: SecretString,
    anchors: Vec<CertificateDer<'static>>,
    hub_address: Option<String>,
    mqtt_port: Option<u16>,
    emulator: Option<Emulator>,
}

async fn target(options: &mut Options) -> Result<Target, BoxError> {
    let Some(endpoint) = options.dps.take() else {
        let emulator = Emulator::builder()
            .retry_after(0)
            .iot_hubs([
                "fleet-hub-1.azure-devices.net",
                "fleet-hub-2.azure-devices.net",
            ])
            .enroll_group(EnrollmentGroup::symmetric_key(
                "fleet-group",
                KeyPair::from_base64("fleet-group", DEMO_GROUP_KEY, None)?,
            ))
            .start()
            .await?;
        println!(
            "started an in-process dps-emulator at {} (ID scope {}, symmetric-key group 'fleet-group')",
            emulator.global_endpoint(),
            emulator.id_scope()
        );
        return Ok(Target {
            endpoint: emulator.global_endpoint(),
            scope: emulator.id_scope().to_owned(),
            group_key: SecretString::from(DEMO_GROUP_KEY),
            anchors: vec![emulator.ca_certificate().clone()],
            hub_address: emulator.hub_addr().map(|a| a.to_string()),
            mqtt_port: emulator.mqtt_addr().map(|a| a.port()),
            emulator: Some(emulator),
        });
    };
    let anchors = match &options.ca {
        Some(path) => CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{}: {e}", path.display()))?,
        None => Vec::new(),
    };
    Ok(Target {
        endpoint,
        scope: options.scope.take().unwrap_or_default(),
        group_key: options
            .group_key
            .take()
            .unwrap_or_else(|| SecretString::from("")),
        anchors,
        hub_address: options.hub_address.take(),
        mqtt_port: options.mqtt_port,
        emulator: None,
    })
}

/// One device's outcome.
struct Outcome {
    registration_id: String,
    result: Result<Done, String>,
}

struct Done {
    hub: String,
    device_id: String,
    registered: Duration,
    total: Duration,
}

async fn device(
    target: &Target,
    transport: Transport,
    min_poll: Option<Duration>,
    registration_id: &str,
) -> Result<Done, BoxError> {
    let started = Instant::now();
    let id = RegistrationId::new(registration_id)?;
    let key = SymmetricKey::from_group_key(id, &target.group_key)?;
    let mut builder = ProvisioningClient::builder(&target.endpoint, &target.scope)
        .transport(transport)
        .symmetric_key(Arc::new(key));
    if let Some(port) = target.mqtt_port {
        builder = builder.mqtt_port(port);
    }
    if let Some(min_poll_interval) = min_poll {
        builder = builder.retry_policy(RetryPolicy {
            min_poll_interval,
            ..RetryPolicy::default()
        });
    }
    for anchor in &target.anchors {
        builder = builder.trust_anchor(anchor.clone());
    }
    let registration = builder.build()?.register().await?;
    let registered = started.elapsed();
    if registration.status != RegistrationStatus::Assigned {
        return Err(format!("status {:?}", registration.status).into());
    }
    if registration.device_id != registration_id {
        return Err(format!(
            "device id '{}', not the registration id",
            registration.device_id
        )
        .into());
    }
    let mut hub = HubClient::builder_for(&registration);
    if let Some(address) = &target.hub_address {
        hub = hub.connect_to(address);
    }
    let hub = hub.connect().await?;
    hub.send_telemetry(Message::new(
        format!("{{\"fleet\":\"{registration_id}\"}}").into_bytes(),
    ))
    .await?;
    hub.disconnect().await;
    Ok(Done {
        hub: registration.assigned_hub,
        device_id: registration.device_id,
        registered,
        total: started.elapsed(),
    })
}

/// The process's peak resident set (VmHWM), in KiB, where the OS says.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1e3
}

async fn run() -> Result<(), Box<dyn Error>> {
    let mut options = match options() {
        Ok(options) => options,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("error: {message}");
            }
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let target = Arc::new(target(&mut options).await.map_err(|e| e.to_string())?);
    let (n, transport, min_poll) = (options.devices, options.transport, options.min_poll);
    println!(
        "fleet: {n} devices, {} in flight, over {transport:?}, group members '{}0..'",
        options.in_flight, options.prefix
    );
    let finished = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let progress = {
        let finished = finished.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let done = finished.load(Ordering::Relaxed);
                println!(
                    "  [{:>5.1} s] {done} of {n} devices done",
                    started.elapsed().as_secs_f64()
                );
            }
        })
    };
    // At most `in_flight` devices at once, and only those exist as tasks: the next starts when
    // one ends, so memory follows what is in flight, not the size of the fleet.
    let in_flight = options.in_flight;
    let mut tasks = tokio::task::JoinSet::new();
    let mut outcomes = Vec::with_capacity(n);
    let joined = |result: Result<Outcome, tokio::task::JoinError>| {
        result.map_err(|e| format!("a device task failed: {e}"))
    };
    for i in 0..n {
        while tasks.len() >= in_flight {
            if let Some(result) = tasks.join_next().await {
                outcomes.push(joined(result)?);
            }
        }
        let registration_id = format!("{}{i}", options.prefix);
        let (target, finished) = (target.clone(), finished.clone());
        tasks.spawn(async move {
            let result = device(&target, transport, min_poll, &registration_id)
                .await
                .map_err(|e| chain(e.as_ref()));
            finished.fetch_add(1, Ordering::Relaxed);
            Outcome {
                registration_id,
                result,
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        outcomes.push(joined(result)?);
    }
    let elapsed = started.elapsed();
    progress.abort();
    outcomes.sort_by(|a, b| a.registration_id.cmp(&b.registration_id));

    let mut registered = Vec::with_capacity(n);
    let mut total = Vec::with_capacity(n);
    let mut failed = 0;
    let mut csv = String::from("registration_id,result,hub,device_id,register_ms,total_ms\n");
    for outcome in &outcomes {
        match &outcome.result {
            Ok(done) => {
                registered.push(done.registered);
                total.push(done.total);
                writeln!(
                    csv,
                    "{},ok,{},{},{:.3},{:.3}",
                    outcome.registration_id,
                    done.hub,
                    done.device_id,
                    done.registered.as_secs_f64() * 1e3,
                    done.total.as_secs_f64() * 1e3
                )?;
            }
            Err(e) => {
                failed += 1;
                if failed <= 10 {
                    eprintln!("{}: {e}", outcome.registration_id);
                }
                writeln!(
                    csv,
                    "{},failed: {},,,,",
                    outcome.registration_id,
                    e.replace([',', '\n'], ";")
                )?;
            }
        }
    }
    if let Some(path) = &options.results {
        std::fs::write(path, csv).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    registered.sort();
    total.sort();
    let ok = n - failed;
    println!(
        "{ok} of {n} devices provisioned and connected ({failed} failed) in {:.2} s: {:.0} devices/s",
        elapsed.as_secs_f64(),
        ok as f64 / elapsed.as_secs_f64()
    );
    println!(
        "registration p50 {:.3} ms p99 {:.3} ms; registration + hub + telemetry p50 {:.3} ms p99 {:.3} ms",
        percentile(&registered, 0.5),
        percentile(&registered, 0.99),
        percentile(&total, 0.5),
        percentile(&total, 0.99)
    );
    if let Some(emulator) = &target.emulator {
        println!(
            "the in-process emulator recorded {} registration(s) and {} telemetry message(s)",
            emulator.registrations().len(),
            emulator.telemetry_received()
        );
    }
    match peak_rss_kib() {
        Some(kib) => println!("peak RSS {kib} KiB"),
        None => println!("peak RSS unknown (no /proc/self/status)"),
    }
    if failed > 0 {
        return Err(format!("{failed} of {n} devices failed").into());
    }
    Ok(())
}

/// An error and its causes on one line.
fn chain(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

#[tokio::main]
async fn main() -> ExitCode {
    exit_code("fleet", run().await)
}
