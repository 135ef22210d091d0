//! The credential's whole life against the emulator: the assignment cache (two starts, one
//! registration; corrupt, truncated and foreign caches), reprovisioning (a device disabled on
//! its hub and enrolled for another, a device moved, a device DPS disables), renewal with the
//! key rotated in a key store (files, SoftHSM2, swtpm; a 20-second certificate renewed under
//! a telemetry loop; stopped at every step; a busy, broken or silent hub; DPS as the
//! fallback) and clock skew of a day either way.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::*;
use dps_emulator::{Emulator, Enrollment, Fault, FaultKind, FaultTarget};
use hsm_core::{KeyLabel, KeyStore};
use provisioning::device::{
    CachedAssignment, ConnectedVia, CredentialKind, Device, RegisterReason, RenewalPolicy,
    RenewalStep, RenewedVia, ReprovisionPolicy,
};
use provisioning::hub::Message;
use provisioning::{Error, RegistrationStatus, Transport};

const ID: &str = "life-device";

fn enrolled(hubs: &[&str]) -> Enrollment {
    Enrollment::symmetric_key(ID, key_pair(ID, DEVICE_KEY)).iot_hubs(hubs.iter().copied())
}

/// A device attesting with its symmetric key, caching in `state`, issuing its hub
/// certificate for a key in `store` when one is given.
fn device(
    emulator: &Emulator,
    state: &Path,
    store: Option<Arc<dyn KeyStore>>,
    transport: Transport,
) -> provisioning::device::DeviceBuilder {
    let client = client(emulator, transport)
        .symmetric_key(symmetric_key(ID, DEVICE_KEY))
        .build()
        .unwrap();
    let hub = emulator.hub_addr().unwrap().to_string();
    let mut builder = Device::builder(client)
        .state_dir(state)
        .reprovision(ReprovisionPolicy::new(
            3,
            Duration::from_millis(50),
            Duration::from_millis(200),
        ))
        .renewal(RenewalPolicy::default().retries(3, Duration::from_millis(100)))
        .hub_options(move |b| {
            b.connect_to(hub.clone())
                .timeout(Duration::from_secs(20))
                .certificate_timeout(Duration::from_secs(3))
        });
    if let Some(store) = store {
        builder = builder.issue_certificates(store, "dev-key");
    }
    builder
}

/// Sends one telemetry message, which the emulator must have recorded from this device.
async fn telemetry(emulator: &Emulator, connection: &provisioning::device::Connection) {
    let marker = format!("{:x}", rand_u64());
    connection
        .hub()
        .send_telemetry(Message::json(&serde_json::json!({ "marker": marker })))
        .await
        .unwrap();
    assert!(
        emulator
            .telemetry()
            .iter()
            .any(|m| m.device_id == connection.assignment().device_id
                && String::from_utf8_lossy(&m.payload).contains(&marker)),
        "telemetry not recorded"
    );
}

fn registrations(emulator: &Emulator) -> u32 {
    emulator
        .registrations()
        .iter()
        .find(|r| r.registration_id == ID)
        .map_or(0, |r| r.registrations)
}

fn leaf_sha256(assignment: &CachedAssignment) -> String {
    use base64::Engine as _;
    let key = assignment.key.as_ref().expect("an issued key");
    let der = base64::engine::general_purpose::STANDARD
        .decode(&key.chain[0])
        .unwrap();
    hsm_testkit::pki::sha256_hex(&der)
}

fn label(text: &str) -> KeyLabel {
    KeyLabel::new(text).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_starts_one_registration_two_connections() {
    let emulator = emulator()
        .enroll(enrolled(&["hub-1.example.net"]))
        .started()
        .await;
    let state = tempfile::tempdir().unwrap();
    for transport in [Transport::Https, Transport::Mqtt] {
        let _ = std::fs::remove_file(state.path().join("assignment.json"));
        let before = registrations(&emulator);
        let connections = emulator.hub_connections();
        let first = device(&emulator, state.path(), None, transport)
            .build()
            .unwrap()
            .connect()
            .await
            .unwrap();
        assert_eq!(
            first.via(),
            &ConnectedVia::Registration {
                reason: RegisterReason::NoCache,
                substatus: Some("initialAssignment".into())
            }
        );
        assert_eq!(first.registrations(), 1);
        telemetry(&emulator, &first).await;
        first.disconnect().await;
        // A new start: the cache, no DPS.
        let second = device(&emulator, state.path(), None, transport)
            .build()
            .unwrap()
            .connect()
            .await
            .unwrap();
        assert_eq!(second.via(), &ConnectedVia::Cache);
        assert_eq!(second.registrations(), 0);
        assert_eq!(second.assignment().assigned_hub, "hub-1.example.net");
        assert_eq!(second.assignment().credential, CredentialKind::Attestation);
        telemetry(&emulator, &second).await;
        second.disconnect().await;
        assert_eq!(
            registrations(&emulator),
            before + 1,
            "{transport:?}: DPS registrations"
        );
        assert_eq!(emulator.hub_connections(), connections + 2, "{transport:?}");
    }
    // The cache holds no secret and is private.
    let text = std::fs::read_to_string(state.path().join("assignment.json")).unwrap();
    assert!(
        !text.contains(DEVICE_KEY) && !text.contains("SharedAccessSignature"),
        "{text}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(state.path().join("assignment.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // The policy can say: always register.
    let always = device(&emulator, state.path(), None, Transport::Https)
        .cache_policy(provisioning::device::CachePolicy::AlwaysRegister)
        .build()
        .unwrap()
        .connect()
        .await
        .unwrap();
    assert!(matches!(
        always.via(),
        ConnectedVia::Registration {
            reason: RegisterReason::Policy,
            ..
        }
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_truncated_and_foreign_caches_mean_registering() {
    let emulator = emulator()
        .enroll(enrolled(&["hub-1.example.net"]))
        .enroll(Enrollment::symmetric_key(
            "other-device",
            key_pair("other-device", DEVICE_KEY),
        ))
        .started()
        .await;
    let state = tempfile::tempdir().unwrap();
    let cache = state.path().join("assignment.json");
    let connect = || async {
        device(&emulator, state.path(), None, Transport::Https)
            .build()
            .unwrap()
            .connect()
            .await
            .unwrap()
    };
    connect().await.disconnect().await;
    let good = std::fs::read_to_string(&cache).unwrap();
    for (name, contents) in [
        ("truncated", good[..good.len() / 3].to_owned()),
        ("empty", String::new()),
        ("binary", "\u{0}\u{7f}garbage".to_owned()),
        (
            "wrong version",
            good.replace("\"version\": 1", "\"version\": 2"),
        ),
    ] {
        std::fs::write(&cache, &contents).unwrap();
        let connection = connect().await;
        match connection.via() {
            ConnectedVia::Registration {
                reason: RegisterReason::InvalidCache(why),
                ..
            } => assert!(why.contains("assignment.json"), "{name}: {why}"),
            other => panic!("{name}: {other:?}"),
        }
        connection.disconnect().await;
        // Registering wrote a good cache again.
        let rewritten = std::fs::read_to_string(&cache).unwrap();
        assert!(rewritten.contains("hub-1.example.net"), "{name}");
    }
    // Another device's cache in this device's folder: not used.
    let other = tempfile::tempdir().unwrap();
    let other_client = client(&emulator, Transport::Https)
        .symmetric_key(symmetric_key("other-device", DEVICE_KEY))
        .build()
        .unwrap();
    Device::builder(other_client)
        .state_dir(other.path())
        .hub_options({
            let hub = emulator.hub_addr().unwrap().to_string();
            move |b| b.connect_to(hub.clone())
        })
        .build()
        .unwrap()
        .connect()
        .await
        .unwrap()
        .disconnect()
        .await;
    std::fs::copy(other.path().join("assignment.json"), &cache).unwrap();
    let connection = connect().await;
    assert!(
        matches!(
            connection.via(),
            ConnectedVia::Registration {
                reason: RegisterReason::OtherIdentity,
                ..
            }
        ),
        "{:?}",
        connection.via()
    );
    assert_eq!(connection.assignment().registration_id, ID);
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_on_its_hub_the_device_reprovisions_once_to_the_new_hub() {
    // The hubs the emulator plays (its TLS certificate names them).
    let emulator = emulator()
        .iot_hubs([
            "hub-1.example.net",
            "hub-2.example.net",
            "hub-3.example.net",
        ])
        .enroll(enrolled(&["hub-1.example.net"]))
        .started()
        .await;
    let state = tempfile::tempdir().unwrap();
    let build = || {
        device(&emulator, state.path(), None, Transport::Https)
            .build()
            .unwrap()
    };
    let first = build().connect().await.unwrap();
    let device_id = first.assignment().device_id.clone();
    first.disconnect().await;
    // Disabled on hub-1, enrolled for hub-2.
    emulator.disable_device(&device_id).unwrap();
    emulator.with_enrollments(|e| e.add(enrolled(&["hub-2.example.net"])));
    let before = registrations(&emulator);
    let second = build().connect().await.unwrap();
    match second.via() {
        ConnectedVia::Registration {
            reason: RegisterReason::HubRefused(why),
            substatus,
        } => {
            assert!(why.contains("hub-1.example.net"), "{why}");
            assert_eq!(substatus.as_deref(), Some("deviceDataMigrated"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(second.registrations(), 1);
    assert_eq!(registrations(&emulator), before + 1);
    assert_eq!(second.assignment().assigned_hub, "hub-2.example.net");
    telemetry(&emulator, &second).await;
    second.disconnect().await;
    // The cache now names hub-2: the next start goes there directly.
    let third = build().connect().await.unwrap();
    assert_eq!(third.via(), &ConnectedVia::Cache);
    assert_eq!(third.assignment().assigned_hub, "hub-2.example.net");
    third.disconnect().await;

    // Moved by the solution to another of its enrollment's hubs: the cached hub refuses,
    // DPS knows the new one.
    emulator.with_enrollments(|e| e.add(enrolled(&["hub-2.example.net", "hub-3.example.net"])));
    emulator
        .move_device(&device_id, "hub-3.example.net")
        .unwrap();
    let moved = build().connect().await.unwrap();
    assert!(matches!(
        moved.via(),
        ConnectedVia::Registration {
            reason: RegisterReason::HubRefused(_),
            ..
        }
    ));
    assert_eq!(moved.assignment().assigned_hub, "hub-3.example.net");
    moved.disconnect().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_dps_disables_stops_after_one_registration_and_keeps_its_cache() {
    let emulator = emulator()
        .enroll(enrolled(&["hub-1.example.net"]))
        .started()
        .await;
    let state = tempfile::tempdir().unwrap();
    let build = || {
        device(&emulator, state.path(), None, Transport::Https)
            .build()
            .unwrap()
    };
    let first = build().connect().await.unwrap();
    let device_id = first.assignment().device_id.clone();
    first.disconnect().await;
    let cache = std::fs::read(state.path().join("assignment.json")).unwrap();
    emulator.disable_device(&device_id).unwrap();
    emulator.with_enrollments(|e| e.set_enabled(ID, false));
    let before = registrations(&emulator);
    let requests = emulator.requests();
    let error = build().connect().await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::Failed {
                status: RegistrationStatus::Disabled,
                ..
            } | Error::Unauthorized { .. }
        ),
        "{error:?}"
    );
    // One registration (register + at most a poll), no loop.
    assert!(
        emulator.requests() - requests <= 2,
        "{} requests",
        emulator.requests() - requests
    );
    assert_eq!(registrations(&emulator), before);
    // The last good cache is still there.
    assert_eq!(
        std::fs::read(state.path().join("assignment.json")).unwrap(),
        cache
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_whose_hub_keeps_refusing_gives_up_after_the_policy() {
    let emulator = emulator()
        .enroll(enrolled(&["hub-1.example.net"]))
        .started()
        .await;
    let state = tempfile::tempdir().unwrap();
    let build = || {
        device(&emulator, state.path(), None, Transport::Https)
            .build()
            .unwrap()
    };
    let first = build().connect().await.unwrap();
    let device_id = first.assignment().device_id.clone();
    first.disconnect().await;
    // Disabled on its hub, and DPS still sends it there: three registrations, then the
    // refusal.
    emulator.disable_device(&device_id).unwrap();
    let before = registrations(&emulator);
    let error = build().connect().await.unwrap_err();
    assert!(error.is_hub_refusal(), "{error:?}");
    assert_eq!(registrations(&emulator), before + 3);
}

/// The renewal every key store must support: a certificate issued for a key in the store,
/// renewed with a new key there; the old one deleted only after the new certificate
/// connected; a new start uses the new key.
async fn renews_in(store: Arc<dyn KeyStore>, name: &str) {
    let emulator = emulator()
        .enroll(enrolled(&["hub-1.example.net"]))
        .started()
        .await;
    let state = tempfile::tempdir().unwrap();
    let device = device(
        &emulator,
        state.path(),
        Some(store.clone()),
        Transport::Https,
    )
    .build()
    .unwrap();
    let connection = device.connect().await.unwrap();
    let first = connection.assignment().clone();
    assert_eq!(first.credential, CredentialKind::Issued, "{name}");
    assert_eq!(first.key.as_ref().unwrap().label, "dev-key-1", "{name}");
    let old = store
        .find(&label("dev-key-1"))
        .unwrap()
        .expect("the first key");
    assert_eq!(
        emulator.last_certificate(&first.device_id),
        Some(leaf_sha256(&first)),
        "{name}: connected with the issued certificate"
    );
    telemetry(&emulator, &connection).await;

    let renewed = device.renew(&connection).await.unwrap();
    assert_eq!(renewed.label, "dev-key-2", "{name}");
    assert_eq!(renewed.replaced, "dev-key-1", "{name}");
    assert_eq!(renewed.via, RenewedVia::Hub, "{name}");
    let new = store
        .find(&label("dev-key-2"))
        .unwrap()
        .expect("the new key");
    assert_ne!(
        new.key.public_key_der(),
        old.key.public_key_der(),
        "{name}: a new key"
    );
    assert!(
        store.find(&label("dev-key-1")).unwrap().is_none(),
        "{name}: old key deleted"
    );
    let cached = device.cached().unwrap().unwrap();
    assert_eq!(cached.key.as_ref().unwrap().label, "dev-key-2");
    assert!(cached.pending.is_none() && cached.retired.is_empty());
    assert_eq!(
        new.chain.len(),
        2,
        "{name}: the chain is stored with the key"
    );
    // The connection moved to the new certificate, and still works.
    assert_eq!(
        emulator.last_certificate(&first.device_id),
        Some(leaf_sha256(&cached)),
        "{name}"
    );
    telemetry(&emulator, &connection).await;
    connection.disconnect().await;
    // A new start: the cache and the new key.
    let again = self::device(
        &emulator,
        state.path(),
        Some(store.clone()),
        Transport::Https,
    )
    .build()
    .unwrap()
    .connect()
    .await
    .unwrap();
    assert_eq!(again.via(), &ConnectedVia::Cache);
    assert_eq!(
        emulator.last_certificate(&first.device_id),
        Some(leaf_sha256(&cached))
    );
    telemetry(&emulator, &again).await;
    again.disconnect().await;
    assert_eq!(
        registrations(&emulator),
        1,
        "{name}: renewal did not register"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn renewal_rotates_the_key_in_a_key_folder() {
    let keys = tempfile::tempdir().unwrap();
    renews_in(
        Arc::new(hsm_x509::KeyFolder::open(keys.path()).unwrap()),
        "key folder",
    )
    .await;
}

#[test]
fn renewal_rotates_the_key_on_softhsm() {
    hsm_testkit::softhsm::SoftHsm::isolated(|softhsm| {
        softhsm.init_token("life");
        let token = hsm_pkcs11::Token::open(&softhsm.uri("life", "any").parse().unwrap()).unwrap();
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(renews_in(Arc::new(token), "SoftHSM2"));
        // The key on the token: sensitive, never extractable.
        let listing = softhsm.pkcs11_tool(&[
            "--token-label",
            "life",
            "--login",
            "--pin",
            hsm_testkit::softhsm::USER_PIN,
            "--list-objects",
            "--type",
            "privkey",
        ]);
        let text = String::from_utf8_lossy(&listing.stdout);
        assert!(text.contains("dev-key-2"), "{text}");
        assert!(!text.contains("dev-key-1"), "{text}");
        assert!(
            text.contains("never extractable") && text.contains("sensitive"),
            "{text}"
        );
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn renewal_rotates_the_key_in_swtpm() {
    let swtpm = hsm_testkit::swtpm::Swtpm::start();
    let tpm = hsm_tpm::Tpm::open(swtpm.tcti().parse().unwrap()).unwrap();
    let index = tempfile::tempdir().unwrap();
    let store = hsm_tpm::TpmKeyStore::open(&tpm, index.path()).unwrap();
    renews_in(Arc::new(store), "swtpm").await;
    // One key of ours is left in the TPM, at the store's first handles.
    let handles = tpm.persistent_handles().unwrap();
    let ours: Vec<_> = handles
        .iter()
        .filter(|h| hsm_tpm::DEFAULT_KEY_HANDLES.contains(&h.value()))
        .collect();
    assert_eq!(ours.len(), 1, "{handles:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_twenty_second_certificate_is_renewed_before_it_expires_under_telemetry() {
    let emulator = emulator()
        .enroll(enrolled(&["hub-1.example.net"]))
        .issued_certificate_validity(Duration::from_secs(20))
        .started()
        .await;
    let state = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let store: Arc<dyn KeyStore> = Arc::new(hsm_x509::KeyFolder::open(keys.path()).unwrap());
    let device = device(&emulator, state.path(), Some(store), Transport::Https)
        .build()
        .unwrap();
    let connection = Arc::new(device.connect().await.unwrap());
    let first = connection.assignment().key.clone().unwrap();
    let not_after = first.not_after.unwrap();
    let renew_at = first.renew_at.unwrap();
    assert!(renew_at < not_after, "{renew_at} {not_after}");
    let renewer = {
        let (device, connection) = (device.clone(), connection.clone());
        tokio::spawn(async move { device.keep_renewed(&connection).await })
    };
    let sent = Arc::new(AtomicU32::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let loop_task = {
        let (connection, sent, stop) = (connection.clone(), sent.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                connection
                    .hub()
                    .send_telemetry(Message::new("tick"))
                    .await
                    .expect("telemetry while renewing");
                sent.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let started = Instant::now();
    let renewed = loop {
        let cached = device.cached().unwrap().unwrap();
        if cached.key.as_ref().unwrap().label == "dev-key-2" {
            break cached;
        }
        assert!(started.elapsed() < Duration::from_secs(40), "no renewal");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        now < not_after,
        "renewed at {now}, after the expiry {not_after}"
    );
    // Telemetry goes on with the new certificate.
    let at_renewal = sent.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    loop_task.await.unwrap();
    assert!(
        sent.load(Ordering::SeqCst) > at_renewal,
        "telemetry stopped"
    );
    assert!(at_renewal >= 10, "{at_renewal} messages before the renewal");
    assert_eq!(
        emulator.last_certificate(&renewed.device_id),
        Some(leaf_sha256(&renewed))
    );
    renewer.abort();
}

/// Stops a renewal after `step` (as a crash there would) and starts the device again.
async fn stopped_after(step: RenewalStep) {
    let emulator = emulator()
        .enroll(enrolled(&["hub-1.example.net"]))
        .started()
        .await;
    let state = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let store: Arc<dyn KeyStore> = Arc::new(hsm_x509::KeyFolder::open(keys.path()).unwrap());
    let crashing = device(
        &emulator,
        state.path(),
        Some(store.clone()),
        Transport::Https,
    )
    .stop_renewal_after(step)
    .build()
    .unwrap();
    let connection = crashing.connect().await.unwrap();
    match crashing.renew(&connection).await {
        Err(Error::RenewalStopped { step: s }) => assert_eq!(s, step.name()),
        other => panic!("{step:?}: {other:?}"),
    }
    // The old key is deleted only once the new certificate has connected and is the
    // device's: until the last step it is still there.
    assert_eq!(
        store.find(&label("dev-key-1")).unwrap().is_some(),
        step != RenewalStep::OldDeleted,
        "{step:?}"
    );
    // The process is gone: its connection with it.
    drop(connection);
    drop(crashing);
    let restarted = device(
        &emulator,
        state.path(),
        Some(store.clone()),
        Transport::Https,
    )
    .build()
    .unwrap();
    let connection = restarted
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{step:?}: the device cannot connect: {e:?}"));
    assert_eq!(connection.via(), &ConnectedVia::Cache, "{step:?}");
    telemetry(&emulator, &connection).await;
    let cached = restarted.cached().unwrap().unwrap();
    let (current, gone) = match step {
        RenewalStep::Recorded | RenewalStep::KeyGenerated | RenewalStep::CertificateIssued => {
            ("dev-key-1", "dev-key-2")
        }
        _ => ("dev-key-2", "dev-key-1"),
    };
    assert_eq!(cached.key.as_ref().unwrap().label, current, "{step:?}");
    assert!(
        cached.pending.is_none() && cached.retired.is_empty(),
        "{step:?}: {cached:?}"
    );
    assert!(store.find(&label(current)).unwrap().is_some(), "{step:?}");
    assert!(
        store.find(&label(gone)).unwrap().is_none(),
        "{step:?}: {gone} left"
    );
    assert_eq!(
        emulator.last_certificate(&cached.device_id),
        Some(leaf_sha256(&cached)),
        "{step:?}"
    );
    // And it renews again from there.
    let renewed = restarted.renew(&connection).await.unwrap();
    assert_ne!(renewed.label, current);
    connection.disconnect().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_renewal_stopped_at_any_step_leaves_a_device_that_connects() {
    for step in [
        RenewalStep::Recorded,
        RenewalStep::KeyGenerated,
        RenewalStep::CertificateIssued,
        RenewalStep::ChainStored,
        RenewalStep::Connected,
        RenewalStep::Promoted,
        RenewalStep::OldDeleted,
    ] {
        stopped_after(step).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_busy_broken_or_silent_hub_and_the_dps_fallback() {
    let emulator = emulator()
        .enroll(enrolled(&["hub-1.example.net"]))
        .started()
        .await;
    let state = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let store: Arc<dyn KeyStore> = Arc::new(hsm_x509::KeyFolder::open(keys.path()).unwrap());
    let device = device(
        &emulator,
        state.path(),
        Some(store.clone()),
        Transport::Https,
    )
    .build()
    .unwrap();
    let connection = device.connect().await.unwrap();
    let certificate = |kind| Fault::new(kind, 1).on(FaultTarget::Certificate);

    // 429 with retryAfter 1: asked again after a second, renewed.
    emulator.inject(certificate(FaultKind::Throttle { retry_after: 1 }));
    let started = Instant::now();
    assert_eq!(device.renew(&connection).await.unwrap().label, "dev-key-2");
    assert!(started.elapsed() >= Duration::from_secs(1));

    // 500 at every attempt: the typed error; the old credential stays, the new key is gone.
    emulator.inject(Fault::new(FaultKind::Status { status: 500 }, 3).on(FaultTarget::Certificate));
    match device.renew(&connection).await {
        Err(Error::HubRequest { error, .. }) => assert_eq!(error.status, 500),
        other => panic!("{other:?}"),
    }
    assert!(store.find(&label("dev-key-3")).unwrap().is_none());
    let cached = device.cached().unwrap().unwrap();
    assert_eq!(cached.key.as_ref().unwrap().label, "dev-key-2");
    assert!(cached.pending.is_none());
    telemetry(&emulator, &connection).await;

    // Accepted and never answered: a timeout, after the policy's attempts.
    emulator.inject(Fault::new(FaultKind::Drop, 3).on(FaultTarget::Certificate));
    let error = device.renew(&connection).await.unwrap_err();
    assert!(matches!(error, Error::HubTimeout { .. }), "{error:?}");
    telemetry(&emulator, &connection).await;

    // An answer without a readable chain: refused, typed; the old credential stays.
    emulator.inject(certificate(FaultKind::MalformedBody));
    let error = device.renew(&connection).await.unwrap_err();
    assert!(matches!(error, Error::Hub { .. }), "{error:?}");
    connection.disconnect().await;

    // A hub without certificate management: renewed through DPS.
    let plain = dps_emulator::Emulator::builder()
        .retry_after(0)
        .hub_certificate_management(false)
        .enroll(enrolled(&["hub-1.example.net"]))
        .started()
        .await;
    let state = tempfile::tempdir().unwrap();
    let device = self::device(&plain, state.path(), Some(store.clone()), Transport::Https)
        .build()
        .unwrap();
    let connection = device.connect().await.unwrap();
    let renewed = device.renew(&connection).await.unwrap();
    assert_eq!(renewed.via, RenewedVia::Dps);
    telemetry(&plain, &connection).await;
    assert_eq!(
        plain.last_certificate(&connection.assignment().device_id),
        Some(leaf_sha256(&device.cached().unwrap().unwrap()))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_without_a_key_store_cannot_renew() {
    let emulator = emulator()
        .enroll(enrolled(&["hub-1.example.net"]))
        .started()
        .await;
    let state = tempfile::tempdir().unwrap();
    let device = device(&emulator, state.path(), None, Transport::Https)
        .build()
        .unwrap();
    let connection = device.connect().await.unwrap();
    let error = device.renew(&connection).await.unwrap_err();
    match &error {
        Error::CannotRenew { reason } => assert!(reason.contains("DICE"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(
        error
            .to_string()
            .starts_with("cannot renew the device certificate: ")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_clock_a_day_off_registers_and_connects() {
    for (offset, transport) in [
        (86_400, Transport::Https),
        (-86_400, Transport::Https),
        (86_400, Transport::Mqtt),
        (-86_400, Transport::Mqtt),
    ] {
        // The service's clock a day ahead is the device's a day behind.
        let emulator = emulator()
            .enroll(enrolled(&["hub-1.example.net"]))
            .clock_offset(offset)
            .started()
            .await;
        let state = tempfile::tempdir().unwrap();
        let device = device(&emulator, state.path(), None, transport)
            .build()
            .unwrap();
        let connection = device
            .connect()
            .await
            .unwrap_or_else(|e| panic!("{offset} {transport:?}: {e:?}"));
        telemetry(&emulator, &connection).await;
        connection.disconnect().await;
    }
    // Skew that appears after the registration: the hub refuses, the device learns the time
    // and connects from its cache, without registering again.
    let emulator = emulator()
        .enroll(enrolled(&["hub-1.example.net"]))
        .started()
        .await;
    let state = tempfile::tempdir().unwrap();
    let build = || {
        device(&emulator, state.path(), None, Transport::Mqtt)
            .build()
            .unwrap()
    };
    build().connect().await.unwrap().disconnect().await;
    emulator.set_clock_offset(86_400);
    let connection = build().connect().await.unwrap();
    assert_eq!(connection.via(), &ConnectedVia::Cache);
    assert_eq!(registrations(&emulator), 1);
}
