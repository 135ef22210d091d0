//! The hub leg against the emulator's hubs: a provisioned device connects with its credential,
//! sends telemetry, reads and reports its twin; every wrong credential is refused with a typed
//! error (and the emulator's reason); the connection survives SAS renewal and drops; a hub
//! with a port (as Azure's mock DPS assigns) works.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use dps_emulator::{Emulator, Enrollment, EnrollmentGroup, RefusalReason, SasError};
use hsm_testkit::pki::TestCa;
use provisioning::hub::{HubClient, Message};
use provisioning::{Error, HubCredentials, HubSasSigner, Registration, Transport};

async fn symmetric_device(emulator: &Emulator, id: &str, transport: Transport) -> Registration {
    client(emulator, transport)
        .symmetric_key(symmetric_key(id, DEVICE_KEY))
        .assigned()
        .await
}

/// The reason the emulator gave for its last refusal of `device_id`.
fn last_refusal(emulator: &Emulator, device_id: &str) -> RefusalReason {
    emulator
        .hub_refusals()
        .into_iter()
        .rev()
        .find(|r| r.device_id == device_id)
        .unwrap_or_else(|| panic!("no refusal of {device_id}"))
        .reason
}

/// Connects `device` to `hub` with `credentials`, which the hub must refuse (CONNACK 5).
async fn hub_refuses(
    emulator: &Emulator,
    hub: &str,
    device: &str,
    credentials: HubCredentials,
) -> Error {
    let error = HubClient::builder(hub, device, credentials)
        .connect_to(emulator.hub_addr().unwrap().to_string())
        .connect()
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(error.is_hub_refusal(), "{error:?}");
    assert!(
        matches!(error, Error::HubRefused { code: 5, .. }),
        "{error:?}"
    );
    error
}

/// A SAS signer for `device_id` on `hub` with another key than the registration's.
fn signer(registration: &Registration, hub: &str, device_id: &str, key: &str) -> HubCredentials {
    HubCredentials::Sas(HubSasSigner::symmetric_key(
        hub,
        device_id,
        symmetric_key(device_id, key),
        registration.credentials.tls_config().clone(),
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn symmetric_key_devices_connect_individually_and_through_a_group() {
    let emulator = emulator()
        .enroll(
            Enrollment::symmetric_key("hub-sym-1", key_pair("hub-sym-1", DEVICE_KEY))
                .device_id("hub-sym-device")
                .initial_twin(serde_json::json!({"properties": {"desired": {"interval": 30}}})),
        )
        .enroll_group(EnrollmentGroup::symmetric_key(
            "hub-sym-group",
            key_pair("hub-sym-group", GROUP_KEY),
        ))
        .started()
        .await;
    for transport in TRANSPORTS {
        let registration = symmetric_device(&emulator, "hub-sym-1", transport).await;
        assert_eq!(registration.device_id, "hub-sym-device");
        proves_on_hub(&emulator, &registration).await;
        let member = hsm_symmkey::SymmetricKey::from_group_key(
            hsm_core::RegistrationId::new("hub-group-member").unwrap(),
            &hsm_core::SecretString::from(GROUP_KEY),
        )
        .unwrap();
        let registration = client(&emulator, transport)
            .symmetric_key(Arc::new(member))
            .assigned()
            .await;
        proves_on_hub(&emulator, &registration).await;
    }
    // The desired properties come from the enrollment's initial twin, and admin patches.
    let registration = symmetric_device(&emulator, "hub-sym-1", Transport::Https).await;
    let hub = hub(&emulator, &registration).connect().await.unwrap();
    let twin = hub.twin().await.unwrap();
    assert_eq!(twin.desired["interval"], 30);
    let version = emulator
        .update_desired("hub-sym-device", &serde_json::json!({"interval": 60}))
        .unwrap();
    let twin = hub.twin().await.unwrap();
    assert_eq!(
        (twin.desired["interval"].as_u64(), twin.desired_version),
        (Some(60), version)
    );
    // A patch the hub refuses is a typed error with the hub's status.
    let error = hub
        .update_reported(&serde_json::json!({"$bad": 1}))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::HubRequest { error, .. } if error.status == 400),
        "{error:?}"
    );
    hub.disconnect().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_wrong_credential_is_refused_with_a_typed_error_and_a_reason() {
    let emulator = emulator()
        .iot_hubs(["hub-1.example.net", "hub-2.example.net"])
        .allocation(dps_emulator::AllocationPolicy::Static)
        .enroll(Enrollment::symmetric_key(
            "refused-1",
            key_pair("refused-1", DEVICE_KEY),
        ))
        .enroll(Enrollment::symmetric_key(
            "refused-2",
            key_pair("refused-2", DEVICE_KEY),
        ))
        .started()
        .await;
    let registration = symmetric_device(&emulator, "refused-1", Transport::Https).await;
    assert_eq!(registration.assigned_hub, "hub-1.example.net");
    // A device id no registration made.
    hub_refuses(
        &emulator,
        "hub-1.example.net",
        "nobody",
        signer(&registration, "hub-1.example.net", "nobody", DEVICE_KEY),
    )
    .await;
    assert_eq!(
        last_refusal(&emulator, "nobody"),
        RefusalReason::UnknownDevice
    );
    // A SAS token signed with another key.
    hub_refuses(
        &emulator,
        "hub-1.example.net",
        "refused-1",
        signer(&registration, "hub-1.example.net", "refused-1", WRONG_KEY),
    )
    .await;
    assert_eq!(
        last_refusal(&emulator, "refused-1"),
        RefusalReason::Sas(SasError::BadSignature)
    );
    // The right key, the other hub.
    hub_refuses(
        &emulator,
        "hub-2.example.net",
        "refused-1",
        signer(&registration, "hub-2.example.net", "refused-1", DEVICE_KEY),
    )
    .await;
    assert_eq!(
        last_refusal(&emulator, "refused-1"),
        RefusalReason::WrongHub {
            assigned: "hub-1.example.net".into()
        }
    );
    // A token for another device's resource, presented as this device.
    let other = symmetric_device(&emulator, "refused-2", Transport::Https).await;
    let HubCredentials::Sas(theirs) = other.credentials.clone() else {
        panic!()
    };
    hub_refuses(
        &emulator,
        "hub-1.example.net",
        "refused-1",
        HubCredentials::Sas(theirs),
    )
    .await;
    assert_eq!(
        last_refusal(&emulator, "refused-1"),
        RefusalReason::Sas(SasError::WrongResource)
    );
    // The right credential once the device is disabled; its live connection ends too.
    let live = hub(&emulator, &registration).connect().await.unwrap();
    live.send_telemetry(Message::new("before")).await.unwrap();
    emulator.disable_device("refused-1").unwrap();
    let error = live
        .send_telemetry(Message::new("after"))
        .await
        .unwrap_err();
    assert!(error.is_hub_refusal(), "{error:?}");
    assert_eq!(
        last_refusal(&emulator, "refused-1"),
        RefusalReason::Disabled
    );
    // Registering again does not enable it.
    let again = symmetric_device(&emulator, "refused-1", Transport::Https).await;
    hub_refuses(
        &emulator,
        "hub-1.example.net",
        "refused-1",
        again.credentials.clone(),
    )
    .await;
    emulator.enable_device("refused-1").unwrap();
    proves_on_hub(&emulator, &again).await;
    // Moved to hub-2 by an operator: hub-1 refuses it, registering again assigns hub-2.
    emulator
        .move_device("refused-1", "hub-2.example.net")
        .unwrap();
    hub_refuses(
        &emulator,
        "hub-1.example.net",
        "refused-1",
        again.credentials.clone(),
    )
    .await;
    let moved = symmetric_device(&emulator, "refused-1", Transport::Https).await;
    assert_eq!(moved.assigned_hub, "hub-2.example.net");
    proves_on_hub(&emulator, &moved).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_sas_token_is_refused_when_the_device_clock_is_behind() {
    let emulator = emulator()
        .enroll(Enrollment::symmetric_key(
            "late-1",
            key_pair("late-1", DEVICE_KEY),
        ))
        .started()
        .await;
    let registration = symmetric_device(&emulator, "late-1", Transport::Https).await;
    // Now the emulator's clock is two hours ahead: the device's one-hour tokens have expired.
    emulator.set_clock_offset(2 * 3600);
    let error = hub(&emulator, &registration)
        .connect()
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(error, Error::HubRefused { code: 5, .. }),
        "{error:?}"
    );
    assert_eq!(
        last_refusal(&emulator, "late-1"),
        RefusalReason::Sas(SasError::Expired)
    );
    // A token that outlives the skew is accepted.
    hub(&emulator, &registration)
        .sas_lifetime(Duration::from_secs(3 * 3600), Duration::from_secs(900))
        .connect()
        .await
        .unwrap()
        .disconnect()
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_other_than_the_registered_or_issued_one_are_refused() {
    let ca = TestCa::new("hub CA");
    let (device, issued) = x509_device(&ca, "hub-x509");
    let (impostor, _) = x509_device(&ca, "hub-x509");
    let emulator = emulator()
        .enroll(Enrollment::x509_certificate(
            "hub-x509",
            issued.chain[0].clone(),
        ))
        .started()
        .await;
    let registration = client(&emulator, Transport::Mqtt)
        .x509(device.clone())
        .assigned()
        .await;
    proves_on_hub(&emulator, &registration).await;
    let roots = || {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(emulator.ca_certificate().clone()).unwrap();
        roots
    };
    // Same subject, same CA, another key: not the registered certificate.
    hub_refuses(
        &emulator,
        &registration.assigned_hub,
        "hub-x509",
        HubCredentials::x509(impostor.as_ref(), roots()).unwrap(),
    )
    .await;
    assert_eq!(
        last_refusal(&emulator, "hub-x509"),
        RefusalReason::NotTheCertificate
    );
    // After a CSR, the issued certificate is the device's; the old one is refused.
    let fresh = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let key: Arc<dyn hsm_core::KeyHandle> =
        Arc::new(hsm_x509::SoftwareKey::from_pem(fresh.serialize_pem().as_bytes(), None).unwrap());
    let renewed = client(&emulator, Transport::Https)
        .x509(device.clone())
        .certificate_request(key)
        .assigned()
        .await;
    assert!(!renewed.issued_certificate_chain.is_empty());
    proves_on_hub(&emulator, &renewed).await;
    hub_refuses(
        &emulator,
        &registration.assigned_hub,
        "hub-x509",
        HubCredentials::x509(device.as_ref(), roots()).unwrap(),
    )
    .await;
    assert_eq!(
        last_refusal(&emulator, "hub-x509"),
        RefusalReason::NotTheCertificate
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_connection_outlives_sas_renewal_and_drops() {
    let emulator = emulator()
        .enroll(Enrollment::symmetric_key(
            "renew-1",
            key_pair("renew-1", DEVICE_KEY),
        ))
        .started()
        .await;
    let registration = symmetric_device(&emulator, "renew-1", Transport::Https).await;
    // Tokens for 3 s, renewed 1 s before they expire: by 4 s at least one new connection
    // (the hub also closes a connection whose token has expired, which forces one).
    let hub = hub(&emulator, &registration)
        .sas_lifetime(Duration::from_secs(3), Duration::from_secs(1))
        .connect()
        .await
        .unwrap();
    let before = emulator.hub_connections();
    tokio::time::sleep(Duration::from_secs(4)).await;
    hub.send_telemetry(Message::new("after renewal"))
        .await
        .unwrap();
    assert!(
        emulator.hub_connections() > before,
        "no new connection after the token's lifetime"
    );
    // The hub drops the connection: the next message goes over a new one.
    let before = emulator.hub_connections();
    assert!(emulator.disconnect_device("renew-1"));
    hub.send_telemetry(Message::new("after the drop"))
        .await
        .unwrap();
    hub.twin().await.unwrap();
    assert!(emulator.hub_connections() > before);
    let payloads: Vec<_> = emulator
        .telemetry()
        .into_iter()
        .filter(|m| m.device_id == "renew-1")
        .map(|m| m.payload)
        .collect();
    assert!(payloads.contains(&b"after renewal".to_vec()));
    assert!(payloads.contains(&b"after the drop".to_vec()));
    hub.disconnect().await;
    // Requests after disconnect fail with a typed error.
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hub_assigned_with_a_port_is_reached_at_that_port() {
    let emulator = emulator().started().await;
    // Azure's mock DPS assigns `localhost:PORT`: the name, port included, is what the user
    // name and SAS resource carry, and no connect_to is needed.
    let hub_name = format!("localhost:{}", emulator.hub_addr().unwrap().port());
    emulator.with_enrollments(|e| {
        e.add(
            Enrollment::symmetric_key("port-1", key_pair("port-1", DEVICE_KEY))
                .iot_hubs([hub_name.clone()]),
        );
    });
    let registration = symmetric_device(&emulator, "port-1", Transport::Mqtt).await;
    assert_eq!(registration.assigned_hub, hub_name);
    let hub = HubClient::builder_for(&registration)
        .connect()
        .await
        .unwrap();
    hub.send_telemetry(Message::new("{}")).await.unwrap();
    let received = emulator.telemetry().pop().unwrap();
    assert_eq!(received.hub, hub_name);
    hub.disconnect().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_hubs_and_bad_names_are_typed_errors() {
    let emulator = emulator()
        .enroll(Enrollment::symmetric_key(
            "unreach-1",
            key_pair("unreach-1", DEVICE_KEY),
        ))
        .started()
        .await;
    let registration = symmetric_device(&emulator, "unreach-1", Transport::Https).await;
    // Nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = closed.local_addr().unwrap().to_string();
    drop(closed);
    let error = HubClient::builder_for(&registration)
        .connect_to(address)
        .attempts(2)
        .connect()
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(error, Error::Io { .. }), "{error:?}");
    assert!(!error.is_hub_refusal());
    for bad in ["", "bad host", "hub:99999"] {
        let error = HubClient::builder(bad, "d", registration.credentials.clone())
            .connect()
            .await
            .map(|_| ())
            .unwrap_err();
        assert!(matches!(error, Error::Config { .. }), "{bad}: {error:?}");
        assert!(error.to_string().contains("hub name"), "{error}");
    }
    for builder in [
        HubClient::builder_for(&registration)
            .sas_lifetime(Duration::from_secs(60), Duration::from_secs(60)),
        HubClient::builder_for(&registration).timeout(Duration::ZERO),
    ] {
        let error = builder.connect().await.map(|_| ()).unwrap_err();
        assert!(matches!(error, Error::Config { .. }), "{error:?}");
    }
    // A message larger than IoT Hub takes is refused before it is sent.
    let hub = hub(&emulator, &registration).connect().await.unwrap();
    let error = hub
        .send_telemetry(Message::new(vec![0u8; provisioning::hub::MAX_MESSAGE + 1]))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::MessageTooLarge { .. }), "{error:?}");
    let clone = hub.clone();
    hub.disconnect().await;
    let error = clone.send_telemetry(Message::new("x")).await.unwrap_err();
    assert!(matches!(error, Error::HubClosed), "{error:?}");
}
