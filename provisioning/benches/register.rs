//! Registration latency against the in-process dps-emulator (Retry-After 0, loopback): 1000
//! sequential registrations each for symmetric key and X.509 over HTTPS, every one with a new
//! client and so a new TLS connection; prints p50 and p99.
//!
//! `cargo bench -p provisioning --bench register` (set `REGISTRATIONS` to change the count).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use dps_emulator::{Emulator, Enrollment, EnrollmentGroup, KeyPair};
use hsm_core::{RegistrationId, SecretString};
use hsm_symmkey::SymmetricKey;
use hsm_testkit::pki::TestCa;
use hsm_x509::X509Identity;
use provisioning::{ProvisioningClient, ProvisioningClientBuilder};

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

async fn measure(name: &str, n: usize, make: impl Fn() -> ProvisioningClientBuilder) {
    // Warm up (first connection, page faults, provider initialisation).
    for _ in 0..10 {
        make().build().unwrap().register().await.unwrap();
    }
    let mut samples = Vec::with_capacity(n);
    let total = Instant::now();
    for _ in 0..n {
        let started = Instant::now();
        let registration = make().build().unwrap().register().await.unwrap();
        samples.push(started.elapsed());
        assert!(!registration.assigned_hub.is_empty());
    }
    let total = total.elapsed();
    samples.sort();
    println!(
        "{name:<28} n={n}  p50 {:>8.3} ms  p99 {:>8.3} ms  ({:.0} registrations/s sequential)",
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        n as f64 / total.as_secs_f64()
    );
}

fn main() {
    let n: usize = std::env::var("REGISTRATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
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
        let base = || {
            ProvisioningClient::builder(emulator.global_endpoint(), emulator.id_scope())
                .trust_anchor(emulator.ca_certificate().clone())
        };
        let symmetric = Arc::new(
            SymmetricKey::from_base64(
                RegistrationId::new("bench-sym").unwrap(),
                &SecretString::from(KEY),
            )
            .unwrap(),
        );
        let x509 = Arc::new(
            X509Identity::builder()
                .certificates(issued.chain_pem.as_bytes())
                .key(issued.key_pem.as_bytes())
                .build()
                .unwrap(),
        );
        measure("symmetric key, HTTPS", n, || {
            base().symmetric_key(symmetric.clone())
        })
        .await;
        measure("X.509 (P-256), HTTPS", n, || base().x509(x509.clone())).await;
    });
}
