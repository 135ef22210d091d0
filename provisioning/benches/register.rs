//! Registration latency: 1000 sequential registrations each for symmetric key and X.509 over
//! HTTPS and MQTT (each against the protocol floor) and over AMQP (against HTTPS in the same
//! run), every one with a new client and so a new TLS connection; then 1000 times "provisioned
//! and first telemetry acknowledged" (register, connect to the assigned hub over MQTT with the
//! SAS credential, send one message, wait for the PUBACK), new connections each; prints p50
//! and p99.
//!
//! `cargo bench -p provisioning --features amqp --bench register` (set `REGISTRATIONS` to change the count;
//! `cargo test --benches` runs 20 of each)
//! registers against an in-process dps-emulator (Retry-After 0, loopback). With
//! `DPS_BENCH_ENDPOINT` set it registers against that DPS instead (an emulator run as its own
//! process by `scripts/bench-provisioning.sh`, so the official Node SDK can be measured against
//! the same server), with devices it must already have enrolled:
//! `DPS_BENCH_SCOPE` (ID scope), `DPS_BENCH_CA` (PEM of the CA to trust), `DPS_BENCH_SYM_ID` and
//! `DPS_BENCH_KEY` (an individual symmetric-key enrollment and its base64 key),
//! `DPS_BENCH_X509_CHAIN` and `DPS_BENCH_X509_KEY` (PEM chain and key of a device whose CN is its
//! registration id, enrolled individually or through a CA group), and `DPS_BENCH_HUB` (the
//! `host:port` the symmetric-key device's hub is reached at).
#![allow(clippy::unwrap_used)]
// A benchmark harness: an `expect` is a failed set-up, reported with what failed.
#![allow(clippy::expect_used)]

#[path = "register/floor.rs"]
mod floor;

use std::sync::Arc;
use std::time::{Duration, Instant};

use dps_emulator::{Emulator, Enrollment, EnrollmentGroup, KeyPair};
use floor::{Auth, Floor};
use hsm_core::SymmetricKeyAttestation as _;
use hsm_core::{RegistrationId, SecretString};
use hsm_symmkey::SymmetricKey;
use hsm_testkit::pki::TestCa;
use hsm_testkit::report::{self, Goal};
use provisioning::hub::{HubClient, Message};
use provisioning::{ProvisioningClient, ProvisioningClientBuilder, Transport};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

/// p50 and p99 in milliseconds of sorted samples.
fn p50_p99(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    (
        percentile(samples, 0.5).as_secs_f64() * 1e3,
        percentile(samples, 0.99).as_secs_f64() * 1e3,
    )
}

/// `n` registrations by our client (a new client, so a new TLS connection, each), and as many
/// by the protocol floor, interleaved (ours, floor, ours, ...) so that both see the same
/// machine; prints both and their ratio.
async fn measure(
    name: &str,
    n: usize,
    make: impl Fn() -> ProvisioningClientBuilder,
    floor: impl AsyncFn() -> String,
) {
    // Warm up (first connection, page faults, provider initialisation).
    for _ in 0..10 {
        make().build().unwrap().register().await.unwrap();
        floor().await;
    }
    let mut ours = Vec::with_capacity(n);
    let mut bare = Vec::with_capacity(n);
    let mut ours_total = Duration::ZERO;
    for _ in 0..n {
        let started = Instant::now();
        let registration = make().build().unwrap().register().await.unwrap();
        let elapsed = started.elapsed();
        ours.push(elapsed);
        ours_total += elapsed;
        assert!(!registration.assigned_hub.is_empty());
        let started = Instant::now();
        let hub = floor().await;
        bare.push(started.elapsed());
        assert_eq!(hub, registration.assigned_hub);
    }
    let (p50, p99) = p50_p99(&mut ours);
    let (floor_p50, floor_p99) = p50_p99(&mut bare);
    println!(
        "{name:<28} n={n}  p50 {p50:>8.3} ms  p99 {p99:>8.3} ms  ({:.0} registrations/s sequential)",
        n as f64 / ours_total.as_secs_f64()
    );
    println!(
        "  protocol floor             n={n}  p50 {floor_p50:>8.3} ms  p99 {floor_p99:>8.3} ms  \
         ours / floor p50 {:.3}",
        p50 / floor_p50
    );
    report::row(
        "provisioning",
        &format!("registration p50 (ms), {name}, new client and TLS connection each"),
        &format!("{p50:.3} ms (p99 {p99:.3})"),
        "-",
        p50,
        Goal::None,
    );
    report::row(
        "provisioning",
        &format!("registration p50 / protocol floor p50, {name}"),
        &format!("{p50:.3} ms"),
        &format!("{floor_p50:.3} ms"),
        p50 / floor_p50,
        Goal::AtMost(1.3),
    );
}

/// `n` registrations over AMQP and `n` over HTTPS by our client, interleaved (AMQP, HTTPS, ...)
/// so that both see the same machine, each a new client and connection; prints both and the
/// ratio of their p50s.
async fn measure_amqp(
    name: &str,
    n: usize,
    amqp: impl Fn() -> ProvisioningClientBuilder,
    https: impl Fn() -> ProvisioningClientBuilder,
) {
    assert!(
        Transport::Amqp.is_built(),
        "the AMQP rows need provisioning's `amqp` feature: cargo bench -p provisioning --features amqp --bench register"
    );
    for _ in 0..10 {
        amqp().build().unwrap().register().await.unwrap();
        https().build().unwrap().register().await.unwrap();
    }
    let mut over_amqp = Vec::with_capacity(n);
    let mut over_https = Vec::with_capacity(n);
    for _ in 0..n {
        let makes: [(&dyn Fn() -> ProvisioningClientBuilder, &mut Vec<Duration>); 2] =
            [(&amqp, &mut over_amqp), (&https, &mut over_https)];
        for (make, samples) in makes {
            let started = Instant::now();
            let registration = make().build().unwrap().register().await.unwrap();
            samples.push(started.elapsed());
            assert!(!registration.assigned_hub.is_empty());
        }
    }
    let (p50, p99) = p50_p99(&mut over_amqp);
    let (https_p50, https_p99) = p50_p99(&mut over_https);
    println!("{name:<28} n={n}  p50 {p50:>8.3} ms  p99 {p99:>8.3} ms");
    println!(
        "  HTTPS, interleaved         n={n}  p50 {https_p50:>8.3} ms  p99 {https_p99:>8.3} ms  \
         AMQP / HTTPS p50 {:.3}",
        p50 / https_p50
    );
    report::row(
        "provisioning",
        &format!("registration p50 (ms), {name}, new client and connection each"),
        &format!("{p50:.3} ms (p99 {p99:.3})"),
        "-",
        p50,
        Goal::None,
    );
    report::row(
        "provisioning",
        &format!("registration p50, {name} / HTTPS (same run)"),
        &format!("{p50:.3} ms"),
        &format!("{https_p50:.3} ms"),
        p50 / https_p50,
        Goal::None,
    );
}

/// Register, connect to the hub, first telemetry acknowledged: `n` times, each with a new
/// provisioning client and new DPS and hub connections.
async fn measure_first_telemetry(
    n: usize,
    hub_address: &str,
    make: impl Fn() -> ProvisioningClientBuilder,
) {
    let once = || async {
        let registration = make().build().unwrap().register().await.unwrap();
        let hub = HubClient::builder_for(&registration)
            .connect_to(hub_address)
            .connect()
            .await
            .unwrap();
        hub.send_telemetry(Message::new(&b"{\"bench\":1}"[..]))
            .await
            .unwrap();
        hub
    };
    for _ in 0..10 {
        once().await.disconnect().await;
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let hub = once().await;
        samples.push(started.elapsed());
        // The disconnect is not part of the measure (the Node SDK's close is not either).
        hub.disconnect().await;
    }
    samples.sort();
    let (p50, p99) = (
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
    );
    let name = "provisioned + first telemetry";
    println!(
        "{name:<28} n={n}  p50 {p50:>8.3} ms  p99 {p99:>8.3} ms  (symmetric key, HTTPS then MQTT)"
    );
    report::row(
        "provisioning",
        "provisioned and first telemetry acknowledged p50 (ms), symmetric key, new connections",
        &format!("{p50:.3} ms (p99 {p99:.3})"),
        "-",
        p50,
        Goal::None,
    );
}

/// What the benchmark registers against, and as whom.
struct Target {
    endpoint: String,
    scope: String,
    anchors: Vec<CertificateDer<'static>>,
    symmetric: Arc<SymmetricKey>,
    x509: Arc<hsm_core::CertifiedKey>,
    /// The same device's chain and key, for the protocol floor's rustls.
    x509_der: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
    /// DPS's MQTT port.
    mqtt_port: u16,
    /// DPS's AMQP port.
    amqp_port: u16,
    /// Where the symmetric-key device's hub is reached.
    hub_address: String,
    /// Kept running for the in-process mode.
    _emulator: Option<Emulator>,
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} must be set with DPS_BENCH_ENDPOINT"))
}

/// The DPS given by `DPS_BENCH_*`.
fn external(endpoint: String) -> Target {
    let chain = std::fs::read(env("DPS_BENCH_X509_CHAIN")).unwrap();
    let key = std::fs::read(env("DPS_BENCH_X509_KEY")).unwrap();
    let x509_der = der_pair(&chain, &key);
    Target {
        endpoint,
        scope: env("DPS_BENCH_SCOPE"),
        anchors: CertificateDer::pem_file_iter(env("DPS_BENCH_CA"))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap(),
        symmetric: Arc::new(
            SymmetricKey::from_base64(
                RegistrationId::new(env("DPS_BENCH_SYM_ID")).unwrap(),
                &SecretString::from(env("DPS_BENCH_KEY")),
            )
            .unwrap(),
        ),
        x509: Arc::new(
            hsm_x509::X509IdentityBuilder::new()
                .certificates(&chain)
                .key(&key)
                .build()
                .unwrap(),
        ),
        x509_der,
        mqtt_port: std::env::var("DPS_BENCH_MQTT_PORT")
            .map(|p| p.parse().unwrap())
            .unwrap_or(provisioning::DEFAULT_MQTT_PORT),
        amqp_port: std::env::var("DPS_BENCH_AMQP_PORT")
            .map(|p| p.parse().unwrap())
            .unwrap_or(provisioning::DEFAULT_AMQP_PORT),
        hub_address: env("DPS_BENCH_HUB"),
        _emulator: None,
    }
}

/// A PEM chain and key as rustls takes them.
fn der_pair(chain: &[u8], key: &[u8]) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    (
        CertificateDer::pem_slice_iter(chain)
            .collect::<Result<_, _>>()
            .unwrap(),
        PrivateKeyDer::from_pem_slice(key).unwrap(),
    )
}

/// A dps-emulator started in this process.
async fn in_process() -> Target {
    let ca = TestCa::new("bench CA");
    let issued = ca.issue_client("bench-x509", &rcgen::PKCS_ECDSA_P256_SHA256);
    let emulator = Emulator::builder()
        .retry_after(0)
        .enroll(Enrollment::symmetric_key(
            "bench-sym",
            KeyPair::from_base64("bench-sym", KEY, None).unwrap(),
        ))
        .enroll_group(EnrollmentGroup::x509_ca("bench-group", ca.cert().clone()))
        .start()
        .await
        .unwrap();
    Target {
        endpoint: emulator.global_endpoint(),
        scope: emulator.id_scope().to_owned(),
        anchors: vec![emulator.ca_certificate().clone()],
        symmetric: Arc::new(
            SymmetricKey::from_base64(
                RegistrationId::new("bench-sym").unwrap(),
                &SecretString::from(KEY),
            )
            .unwrap(),
        ),
        x509: Arc::new(
            hsm_x509::X509IdentityBuilder::new()
                .certificates(issued.chain_pem.as_bytes())
                .key(issued.key_pem.as_bytes())
                .build()
                .unwrap(),
        ),
        x509_der: der_pair(issued.chain_pem.as_bytes(), issued.key_pem.as_bytes()),
        mqtt_port: emulator.mqtt_addr().unwrap().port(),
        amqp_port: emulator.amqp_addr().unwrap().port(),
        hub_address: emulator.hub_addr().unwrap().to_string(),
        _emulator: Some(emulator),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test --benches` this is a short smoke run.
    let quick = !std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("REGISTRATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 20 } else { 1000 });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let target = match std::env::var("DPS_BENCH_ENDPOINT") {
            Ok(endpoint) => {
                println!("against the DPS at {endpoint} (DPS_BENCH_ENDPOINT)");
                external(endpoint)
            }
            Err(_) => {
                println!("against an in-process dps-emulator");
                in_process().await
            }
        };
        let base = || {
            // No poll floor: the emulator answers Retry-After 0, and the Node SDK polls at once
            // too, so both measure the protocol, not a wait.
            let mut builder = ProvisioningClient::builder(&target.endpoint, &target.scope)
                .retry_policy(provisioning::RetryPolicy {
                    min_poll_interval: std::time::Duration::ZERO,
                    ..provisioning::RetryPolicy::default()
                });
            for anchor in &target.anchors {
                builder = builder.trust_anchor(anchor.clone());
            }
            builder
        };
        let (host, https_port) = match target.endpoint.rsplit_once(':') {
            Some((host, port)) => (host.to_owned(), port.parse().unwrap()),
            None => (target.endpoint.clone(), 443),
        };
        let floor = Floor::new(
            &host,
            https_port,
            target.mqtt_port,
            &target.scope,
            &target.anchors,
            (target.x509_der.0.clone(), target.x509_der.1.clone_key()),
        );
        let sym_id = target.symmetric.registration_id().as_str().to_owned();
        let x509_id = target.x509.registration_id().as_str().to_owned();
        let mqtt = || {
            base()
                .transport(Transport::Mqtt)
                .mqtt_port(target.mqtt_port)
        };
        measure(
            "symmetric key, HTTPS",
            n,
            || base().symmetric_key(target.symmetric.clone()),
            async || floor.https(&sym_id, Auth::Sas(&target.symmetric)).await,
        )
        .await;
        measure(
            "X.509 (P-256), HTTPS",
            n,
            || base().x509(target.x509.clone()),
            async || floor.https(&x509_id, Auth::Certificate).await,
        )
        .await;
        measure(
            "symmetric key, MQTT",
            n,
            || mqtt().symmetric_key(target.symmetric.clone()),
            async || floor.mqtt(&sym_id, Auth::Sas(&target.symmetric)).await,
        )
        .await;
        measure(
            "X.509 (P-256), MQTT",
            n,
            || mqtt().x509(target.x509.clone()),
            async || floor.mqtt(&x509_id, Auth::Certificate).await,
        )
        .await;
        let amqp = || {
            base()
                .transport(Transport::Amqp)
                .amqp_port(target.amqp_port)
        };
        measure_amqp(
            "symmetric key, AMQP",
            n,
            || amqp().symmetric_key(target.symmetric.clone()),
            || base().symmetric_key(target.symmetric.clone()),
        )
        .await;
        measure_amqp(
            "X.509 (P-256), AMQP",
            n,
            || amqp().x509(target.x509.clone()),
            || base().x509(target.x509.clone()),
        )
        .await;
        measure_first_telemetry(n, &target.hub_address, || {
            base().symmetric_key(target.symmetric.clone())
        })
        .await;
    });
}
