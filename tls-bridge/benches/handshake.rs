//! TLS 1.3 mutual-authentication handshakes per second on loopback, with the client key
//! (a) loaded straight into rustls and (b) behind an hsm-x509 handle through tls-bridge,
//! measured in one run, interleaved, and reported as the ratio b/a.
//!
//! Run: `cargo bench -p tls-bridge --bench handshake` (env `HANDSHAKE_ROUNDS`, `HANDSHAKE_BATCH`
//! and `HANDSHAKE_KEY` = p256 | p384 | rsa2048 | ed25519 tune it).
// A benchmark harness: an `expect` is a failed set-up, reported with what failed.
#![allow(clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use hsm_core::KeyHandle;
use hsm_testkit::pki::TestCa;
use hsm_testkit::report::{self, Goal};
use hsm_testkit::tls::{self, RustlsServer, Version};
use hsm_x509::SoftwareKey;
use rustls::client::Resumption;
use rustls::{ClientConfig, RootCertStore};
use tls_bridge::TlsIdentity;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test --benches` this is a short smoke run.
    let quick = !std::env::args().any(|a| a == "--bench");
    let rounds = if quick {
        1
    } else {
        env_or("HANDSHAKE_ROUNDS", 41)
    };
    let batch = if quick {
        3
    } else {
        env_or("HANDSHAKE_BATCH", 20)
    };
    let key_name = std::env::var("HANDSHAKE_KEY").unwrap_or_else(|_| "p256".into());
    let algorithm = match key_name.as_str() {
        "p384" => &rcgen::PKCS_ECDSA_P384_SHA384,
        "rsa2048" => &rcgen::PKCS_RSA_SHA256,
        "ed25519" => &rcgen::PKCS_ED25519,
        _ => &rcgen::PKCS_ECDSA_P256_SHA256,
    };

    let ca = TestCa::new("bench root");
    let client = ca.issue_client("bench-device", algorithm);
    let server = RustlsServer::start(ca.cert(), Version::Tls13);
    let mut roots = RootCertStore::empty();
    roots
        .add(server.server_root().clone())
        .expect("server root");

    // (a) The key straight in rustls.
    let mut direct = ClientConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("versions")
        .with_root_certificates(roots.clone())
        .with_client_auth_cert(client.chain.clone(), client.private_key())
        .expect("client auth");
    direct.resumption = Resumption::disabled();

    // (b) The same key behind an hsm-x509 handle, through tls-bridge.
    let key: Arc<dyn KeyHandle> =
        Arc::new(SoftwareKey::from_der(&client.key_der, None).expect("hsm-x509 key"));
    let mut bridged = TlsIdentity::new(key, client.chain.clone())
        .expect("identity")
        .client_config_with(tls::provider(), &[&rustls::version::TLS13], roots)
        .expect("bridged config");
    bridged.resumption = Resumption::disabled();

    let direct = Arc::new(direct);
    let bridged = Arc::new(bridged);
    let run = |config: &Arc<ClientConfig>| -> Sample {
        let (start, cpu_start) = (Instant::now(), process_cpu());
        for _ in 0..batch {
            let outcome = tls::connect(config.clone(), server.addr(), b"x").expect("handshake");
            assert!(outcome.reply.starts_with("verified "), "{}", outcome.reply);
        }
        Sample {
            wall: start.elapsed() / batch as u32,
            cpu: process_cpu().saturating_sub(cpu_start) / batch as u32,
        }
    };

    // Warm up both paths, then interleave so drift on a shared machine hits both alike.
    run(&direct);
    run(&bridged);
    let mut a: Vec<Sample> = Vec::new();
    let mut b: Vec<Sample> = Vec::new();
    for round in 0..rounds {
        if round % 2 == 0 {
            a.push(run(&direct));
            b.push(run(&bridged));
        } else {
            b.push(run(&bridged));
            a.push(run(&direct));
        }
    }
    report(&key_name, rounds, batch, &a, &b);
}

/// One batch: wall-clock and CPU time (client and server threads together) per handshake.
#[derive(Clone, Copy)]
struct Sample {
    wall: Duration,
    cpu: Duration,
}

/// CPU time of every thread of this process (client and in-process server), from
/// `/proc/self/task/*/schedstat`; zero where that is unavailable.
fn process_cpu() -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let nanos: u64 = tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}

fn report(key_name: &str, rounds: usize, batch: usize, a: &[Sample], b: &[Sample]) {
    // Each round's pair ran back to back, so its ratio is immune to drift between rounds; the
    // median of those paired ratios is the figure to quote.
    let paired = |f: fn(&Sample) -> Duration| {
        let mut r: Vec<f64> = a
            .iter()
            .zip(b)
            .map(|(a, b)| f(a).as_secs_f64() / f(b).as_secs_f64().max(1e-12))
            .collect();
        r.sort_by(f64::total_cmp);
        (r[r.len() / 2], r[0], r[r.len() - 1])
    };
    let median = |v: &[Sample], f: fn(&Sample) -> Duration| {
        let mut d: Vec<Duration> = v.iter().map(f).collect();
        d.sort();
        d[d.len() / 2]
    };
    let (ma, mb) = (median(a, |s| s.wall), median(b, |s| s.wall));
    let (ca, cb) = (median(a, |s| s.cpu), median(b, |s| s.cpu));
    let (ratio, low, high) = paired(|s| s.wall);
    let (cpu_ratio, cpu_low, cpu_high) = paired(|s| s.cpu);
    let per_sec = |d: Duration| 1.0 / d.as_secs_f64();
    println!(
        "TLS 1.3 mutual-auth handshakes on loopback, client key {key_name}, {rounds} rounds x {batch}"
    );
    println!(
        "  (a) key loaded into rustls        {:>7.1} handshakes/s wall, {:>7.1} per CPU-second",
        per_sec(ma),
        per_sec(ca)
    );
    println!(
        "  (b) hsm-x509 handle + tls-bridge  {:>7.1} handshakes/s wall, {:>7.1} per CPU-second",
        per_sec(mb),
        per_sec(cb)
    );
    println!(
        "  ratio b/a (wall)  = {ratio:.3}  (median of {rounds} paired rounds; range {low:.3}..{high:.3})"
    );
    println!(
        "  ratio b/a (CPU)   = {cpu_ratio:.3}  (median of {rounds} paired rounds; range {cpu_low:.3}..{cpu_high:.3})"
    );
    report::row(
        "tls-bridge",
        &format!("TLS 1.3 handshakes/s, {key_name}: hsm-x509 handle / key in rustls"),
        &format!("{:.0}/s", per_sec(mb)),
        &format!("{:.0}/s", per_sec(ma)),
        ratio,
        Goal::AtLeast(0.97),
    );
}
