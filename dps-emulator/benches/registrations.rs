//! Emulator throughput: symmetric-key registrations over HTTPS from many concurrent devices,
//! client and emulator in one process on the same cores (loopback, `Retry-After: 0`). Each
//! registration is a device's whole job: a new TLS connection, the PUT, the poll until assigned.
//!
//! Prints registrations/s and the p50/p99 latency per registration, with 100 concurrent devices
//! (goal >= 1000/s on 2 cores), and the same with connections kept alive, for comparison.
//!
//! Run: `cargo bench -p dps-emulator --bench registrations`. Under `cargo test --benches` it
//! does a short smoke run.
#![allow(clippy::unwrap_used, missing_docs, unreachable_pub)]
// A benchmark harness: an `expect` is a failed set-up, reported with what failed.
#![allow(clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use hsm_testkit::report::{self, Goal};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{API, Https, b64, sas};
use dps_emulator::{Emulator, EnrollmentGroup, KeyPair};
use serde_json::json;

const GROUP_KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let (devices, per_device) = if quick { (10, 2) } else { (100, 20) };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let emulator = Arc::new(
            Emulator::builder()
                .retry_after(0)
                .mqtt_listen(None)
                .limits(dps_emulator::Limits {
                    max_connections: 4096,
                    read_timeout: Duration::from_secs(30),
                    ..dps_emulator::Limits::default()
                })
                .enroll_group(EnrollmentGroup::symmetric_key(
                    "bench",
                    KeyPair::from_base64("bench", &b64(GROUP_KEY), None).unwrap(),
                ))
                .start()
                .await
                .unwrap(),
        );
        // Warm up (allocations, the accept loop).
        run(&emulator, devices.min(10), 1, true).await;
        println!("dps-emulator: {devices} concurrent symmetric-key devices x {per_device} registrations, HTTPS on loopback");
        for (label, new_connection) in [("new TLS connection per registration", true), ("connection kept alive", false)] {
            let (elapsed, mut latencies) = run(&emulator, devices, per_device, new_connection).await;
            latencies.sort();
            let n = latencies.len();
            let pct = |p: f64| latencies[((n as f64 * p) as usize).min(n - 1)];
            let rate = n as f64 / elapsed.as_secs_f64();
            println!(
                "  {label:<38} {rate:>7.0} registrations/s   p50 {:>6.2} ms   p99 {:>6.2} ms   ({n} registrations)",
                pct(0.50).as_secs_f64() * 1e3,
                pct(0.99).as_secs_f64() * 1e3,
            );
            report::row(
                "dps-emulator",
                &format!("registrations/s, {devices} devices at once, {label}"),
                &format!("{rate:.0}/s"),
                "-",
                rate,
                if new_connection { Goal::AtLeast(1000.0) } else { Goal::None },
            );
        }
        let registered = emulator.registrations().len();
        assert!(registered >= devices, "every device registered ({registered})");
    });
}

async fn run(
    emulator: &Arc<Emulator>,
    devices: usize,
    per_device: usize,
    new_connection: bool,
) -> (Duration, Vec<Duration>) {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for d in 0..devices {
        let emulator = emulator.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("bench-device-{d}");
            let token = sas(
                emulator.id_scope(),
                &id,
                &common::hmac(GROUP_KEY, id.as_bytes()),
            );
            let mut latencies = Vec::with_capacity(per_device);
            let mut kept = None;
            for _ in 0..per_device {
                let t = Instant::now();
                if new_connection || kept.is_none() {
                    kept = Some(Https::connect(&emulator, None).await);
                }
                let client = kept.as_mut().unwrap();
                let r = client
                    .register(&id, Some(&token), json!({"registrationId": id}), API)
                    .await;
                assert_eq!(r.status, 200);
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    (start.elapsed(), all)
}
