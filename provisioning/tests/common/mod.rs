//! Shared test helpers: an emulator per test, client builders trusting it, devices.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use dps_emulator::{Emulator, EmulatorBuilder, KeyPair};
use hsm_core::{RegistrationId, SecretString};
use hsm_symmkey::SymmetricKey;
use hsm_testkit::pki::TestCa;
use provisioning::{
    ProvisioningClient, ProvisioningClientBuilder, Registration, RetryPolicy, Transport,
};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt as _};

/// Every transport: the suites that loop over it run each attestation over each. AMQP needs
/// the `amqp` feature (a workspace build has it; alone: `cargo test -p provisioning --features
/// amqp`); without it those cases fail with the error that names the feature.
pub const TRANSPORTS: [Transport; 4] = [
    Transport::Https,
    Transport::Mqtt,
    Transport::Amqp,
    Transport::AmqpWs,
];

/// A device key (base64) for symmetric-key enrollments.
pub const DEVICE_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// Another key, never enrolled.
pub const WRONG_KEY: &str = "HxwdHBsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=";
/// A group key.
pub const GROUP_KEY: &str =
    "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==";

/// An emulator that answers at once (Retry-After 0).
pub fn emulator() -> EmulatorBuilder {
    Emulator::builder().retry_after(0)
}

/// Fast retries for tests, with no poll floor: the emulator answers `Retry-After: 0`.
pub fn fast_policy() -> RetryPolicy {
    RetryPolicy {
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        request_timeout: Duration::from_secs(10),
        min_poll_interval: Duration::ZERO,
        ..RetryPolicy::default()
    }
}

/// A client builder for `emulator` over `transport`, trusting its CA.
pub fn client(emulator: &Emulator, transport: Transport) -> ProvisioningClientBuilder {
    ProvisioningClient::builder(emulator.global_endpoint(), emulator.id_scope())
        .trust_anchor(emulator.ca_certificate().clone())
        .mqtt_port(emulator.mqtt_addr().unwrap().port())
        .amqp_port(emulator.amqp_addr().unwrap().port())
        .transport(transport)
        .retry_policy(fast_policy())
        .timeout(Duration::from_secs(30))
}

pub fn key_pair(id: &str, key: &str) -> KeyPair {
    KeyPair::from_base64(id, key, None).unwrap()
}

pub fn symmetric_key(id: &str, key: &str) -> Arc<SymmetricKey> {
    Arc::new(
        SymmetricKey::from_base64(RegistrationId::new(id).unwrap(), &SecretString::from(key))
            .unwrap(),
    )
}

/// An X.509 device issued by `ca` with CN `cn`, loaded through hsm-x509.
pub fn x509_device(
    ca: &TestCa,
    cn: &str,
) -> (Arc<hsm_core::CertifiedKey>, hsm_testkit::pki::Identity) {
    let issued = ca.issue_client(cn, &rcgen::PKCS_ECDSA_P256_SHA256);
    let device = hsm_x509::X509IdentityBuilder::new()
        .certificates(issued.chain_pem.as_bytes())
        .key(issued.key_pem.as_bytes())
        .build()
        .unwrap();
    (Arc::new(device), issued)
}

/// Counts the requests the client sends (its `dps request` debug events), for every future run
/// under [`Counter::wrap`].
#[derive(Clone, Default)]
pub struct Counter(Arc<AtomicU32>);

impl Counter {
    pub fn get(&self) -> u32 {
        self.0.load(Ordering::SeqCst)
    }

    /// Runs `future`, counting the requests its registration sends. The counting subscriber is
    /// the process's global default (installed once): a scoped subscriber per test misses
    /// events when other tests of the binary run at the same time (tracing caches callsite
    /// interest process-wide). Each wrapped future finds its counter in a task-local.
    pub async fn wrap<F: std::future::Future>(&self, future: F) -> F::Output {
        static INSTALL: std::sync::Once = std::sync::Once::new();
        INSTALL.call_once(|| {
            let subscriber = tracing_subscriber::registry().with(CountLayer);
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other global subscriber in the provisioning tests");
        });
        COUNT.scope(self.0.clone(), future).await
    }
}

tokio::task_local! {
    /// The counter of the registration running in this task.
    static COUNT: Arc<AtomicU32>;
}

struct CountLayer;

struct Message(bool);

impl Visit for Message {
    fn record_str(&mut self, _: &Field, _: &str) {}
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" && format!("{value:?}") == "dps request" {
            self.0 = true;
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CountLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut m = Message(false);
        event.record(&mut m);
        if m.0 {
            let _ = COUNT.try_with(|count| count.fetch_add(1, Ordering::SeqCst));
        }
    }
}

/// What most tests do with a client builder: build it and register.
pub trait Registers: Sized {
    /// Builds the client and registers; panics, naming the client and the error, if either
    /// fails.
    fn assigned(self) -> impl std::future::Future<Output = Registration>;
    /// Builds the client and registers; the error (panics if the device was assigned).
    fn refused(self) -> impl std::future::Future<Output = provisioning::Error>;
}

impl Registers for ProvisioningClientBuilder {
    async fn assigned(self) -> Registration {
        let client = self.build().unwrap();
        client
            .register()
            .await
            .unwrap_or_else(|e| panic!("{client:?}: {e:?}"))
    }

    async fn refused(self) -> provisioning::Error {
        match self.build().unwrap().register().await {
            Ok(registration) => panic!("assigned, but a refusal was expected: {registration:?}"),
            Err(e) => e,
        }
    }
}

/// Starting an emulator, which tests expect to work.
pub trait Starts: Sized {
    /// Starts it (panics if it cannot).
    fn started(self) -> impl std::future::Future<Output = Emulator>;
}

impl Starts for EmulatorBuilder {
    async fn started(self) -> Emulator {
        self.start().await.unwrap()
    }
}

/// A hub client builder for the hub `registration` was assigned, reached at the emulator's
/// hub address (the hub names do not resolve).
pub fn hub(
    emulator: &Emulator,
    registration: &Registration,
) -> provisioning::hub::HubClientBuilder {
    // A registration over a WebSocket connects to its hub over one, at the HTTPS port.
    let at = if registration.hub_over_websocket() {
        emulator.https_addr()
    } else {
        emulator.hub_addr().unwrap()
    };
    provisioning::hub::HubClient::builder_for(registration)
        .connect_to(at.to_string())
        .timeout(Duration::from_secs(20))
}

/// The device proves its provisioned credential at its hub: it connects, sends telemetry
/// (which the emulator must have received, with its properties, from this device on this
/// hub), reads its twin and reports a property (whose version must grow by one).
pub async fn proves_on_hub(emulator: &Emulator, registration: &Registration) {
    use provisioning::hub::Message;
    let who = format!(
        "{} on {}",
        registration.device_id, registration.assigned_hub
    );
    let hub = hub(emulator, registration)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{who}: connect: {e:?}"));
    let marker = format!("{:x}", rand_u64());
    hub.send_telemetry(
        Message::json(&serde_json::json!({ "marker": marker })).property("test", "proves_on_hub"),
    )
    .await
    .unwrap_or_else(|e| panic!("{who}: telemetry: {e:?}"));
    let received = emulator
        .telemetry()
        .into_iter()
        .find(|m| String::from_utf8_lossy(&m.payload).contains(&marker))
        .unwrap_or_else(|| panic!("{who}: the hub did not record the telemetry"));
    assert_eq!(received.device_id, registration.device_id);
    assert_eq!(received.hub, registration.assigned_hub);
    assert_eq!(received.property("$.ct"), Some("application/json"));
    assert_eq!(received.property("test"), Some("proves_on_hub"));
    let twin = hub
        .twin()
        .await
        .unwrap_or_else(|e| panic!("{who}: twin: {e:?}"));
    let version = hub
        .update_reported(&serde_json::json!({ "marker": marker }))
        .await
        .unwrap_or_else(|e| panic!("{who}: reported: {e:?}"));
    assert_eq!(version, twin.reported_version + 1, "{who}");
    let twin = hub.twin().await.unwrap();
    assert_eq!(twin.reported["marker"], marker.as_str(), "{who}");
    hub.disconnect().await;
}

/// A random number, for markers.
pub fn rand_u64() -> u64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).unwrap();
    u64::from_le_bytes(bytes)
}
