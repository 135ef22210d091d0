//! What the networks cost: registration latency over MQTT over WebSockets against MQTT over TCP,
//! and over HTTPS through a real proxy (tinyproxy, started here) against HTTPS direct, side by
//! side in one run against an in-process dps-emulator (Retry-After 0, loopback). The four are
//! measured in interleaved rounds, so that a machine busier during one part of the run weighs
//! on all four alike; each registration uses a new client and new connections.
//!
//! `cargo bench -p provisioning --bench network` (`REGISTRATIONS` per transport, default 600;
//! `cargo test --benches` runs 16 of each). Goals: WebSockets / MQTT <= 1.2, through the proxy /
//! direct <= 1.5.
//!
//! tinyproxy relays without `TCP_NODELAY`: the client's TLS `Finished` and the first request
//! after it reach the server as two segments, the second held until the server's delayed ACK
//! (~40 ms on Linux). Every client pays it once per TLS connection (curl too), so the run also
//! measures what tinyproxy adds to one TLS request by curl (`curl -x`, same proxy, same
//! server), and reports the latency the proxy adds to ours against what it adds to curl's.
#![allow(clippy::unwrap_used)]
// A benchmark harness: an `expect` is a failed set-up, reported with what failed.
#![allow(clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use dps_emulator::{Emulator, Enrollment, KeyPair};
use hsm_core::{RegistrationId, SecretString};
use hsm_symmkey::SymmetricKey;
use hsm_testkit::report::{self, Goal};
use hsm_testkit::tinyproxy::Tinyproxy;
use provisioning::{ProvisioningClient, Proxy, ProxySetting, RetryPolicy, Transport};

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// Registrations of each kind per round.
const PER_ROUND: usize = 8;

fn p50(samples: &mut [Duration]) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1e3
}

/// Median wall time (ms) of `curl` fetching `/` from the emulator over TLS, direct and through
/// the proxy, `n` times each, interleaved.
fn curl_through(proxy: &Tinyproxy, emulator: &Emulator, n: usize) -> (f64, f64) {
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca.path(), emulator.ca_pem()).unwrap();
    let url = format!("https://{}/", emulator.global_endpoint());
    let fetch = |via: Option<&str>| {
        let mut command = std::process::Command::new("curl");
        command
            .args(["-s", "-o", "/dev/null", "--cacert"])
            .arg(ca.path());
        match via {
            Some(p) => command.args(["-x", p]),
            None => command.args(["--noproxy", "*"]),
        };
        let started = Instant::now();
        let status = command
            .arg(&url)
            .status()
            .expect("curl (apt-get install curl)");
        assert!(status.success(), "curl {url} failed: {status}");
        started.elapsed()
    };
    let (mut direct, mut proxied) = (Vec::new(), Vec::new());
    for _ in 0..n.max(4) {
        direct.push(fetch(None));
        proxied.push(fetch(Some(&proxy.url())));
    }
    (p50(&mut direct), p50(&mut proxied))
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("REGISTRATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 16 } else { 600 });
    let proxy = Tinyproxy::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let emulator = Emulator::builder()
            .retry_after(0)
            .enroll(Enrollment::symmetric_key(
                "bench-net",
                KeyPair::from_base64("bench-net", KEY, None).unwrap(),
            ))
            .start()
            .await
            .unwrap();
        let key = Arc::new(
            SymmetricKey::from_base64(
                RegistrationId::new("bench-net").unwrap(),
                &SecretString::from(KEY),
            )
            .unwrap(),
        );
        let via = ProxySetting::Proxy(Proxy::parse(&proxy.url()).unwrap());
        let kinds: [(&str, Transport, ProxySetting); 4] = [
            ("MQTT", Transport::Mqtt, ProxySetting::Direct),
            ("MQTT over WebSockets", Transport::MqttWs, ProxySetting::Direct),
            ("HTTPS", Transport::Https, ProxySetting::Direct),
            ("HTTPS through tinyproxy", Transport::Https, via),
        ];
        let register = |transport: Transport, proxy: ProxySetting| {
            let client = ProvisioningClient::builder(emulator.global_endpoint(), emulator.id_scope())
                .trust_anchor(emulator.ca_certificate().clone())
                .mqtt_port(emulator.mqtt_addr().unwrap().port())
                .transport(transport)
                .proxy(proxy)
                .retry_policy(RetryPolicy {
                    min_poll_interval: Duration::ZERO,
                    ..RetryPolicy::default()
                })
                .symmetric_key(key.clone())
                .build()
                .unwrap();
            async move { client.register().await.unwrap() }
        };
        // Warm up each.
        for (_, transport, proxy) in &kinds {
            for _ in 0..5 {
                register(*transport, proxy.clone()).await;
            }
        }
        let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(n); kinds.len()];
        let rounds = n.div_ceil(PER_ROUND);
        for _ in 0..rounds {
            for (i, (_, transport, proxy)) in kinds.iter().enumerate() {
                for _ in 0..PER_ROUND {
                    let started = Instant::now();
                    register(*transport, proxy.clone()).await;
                    samples[i].push(started.elapsed());
                }
            }
        }
        let medians: Vec<f64> = samples.iter_mut().map(|s| p50(s)).collect();
        for ((name, ..), median) in kinds.iter().zip(&medians) {
            println!("{name:<26} n={}  p50 {median:>8.3} ms", rounds * PER_ROUND);
        }
        let tunnels = proxy.tunnels_to("localhost", emulator.https_addr().port());
        assert!(tunnels >= rounds * PER_ROUND, "only {tunnels} tunnels through tinyproxy");
        let (curl_direct, curl_proxied) = curl_through(&proxy, &emulator, rounds * PER_ROUND / 4);
        let added = medians[3] - medians[2];
        let curl_added = curl_proxied - curl_direct;
        println!(
            "curl, one TLS request: direct {curl_direct:.3} ms, through tinyproxy {curl_proxied:.3} ms (+{curl_added:.3} ms)"
        );
        report::row(
            "provisioning",
            "latency tinyproxy adds to a registration (ours) / to one TLS request (curl), ms",
            &format!("+{added:.3} ms"),
            &format!("+{curl_added:.3} ms"),
            added / curl_added,
            Goal::AtMost(1.2),
        );
        let ws = medians[1] / medians[0];
        let proxied = medians[3] / medians[2];
        println!("MQTT over WebSockets / MQTT: {ws:.3} (goal <= 1.2)");
        println!("HTTPS through tinyproxy / direct: {proxied:.3} (goal <= 1.5)");
        report::row(
            "provisioning",
            "registration p50, MQTT over WebSockets / MQTT (symmetric key, new connections)",
            &format!("{:.3} ms", medians[1]),
            &format!("{:.3} ms", medians[0]),
            ws,
            Goal::AtMost(1.2),
        );
        report::row(
            "provisioning",
            "registration p50, HTTPS through tinyproxy / direct (symmetric key, new connections)",
            &format!("{:.3} ms", medians[3]),
            &format!("{:.3} ms", medians[2]),
            proxied,
            Goal::AtMost(1.5),
        );
    });
}
