//! The MQTT endpoint against raw MQTT 3.1.1 packets over TLS.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Mqtt, b64, sas};
use dps_emulator::{Emulator, Enrollment, EnrollmentGroup, Fault, FaultKind, KeyPair};
use hsm_testkit::pki::TestCa;
use rumqttc::mqttbytes::v4::ConnectReturnCode;
use serde_json::json;

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
const API: &str = "2019-03-31";

#[tokio::test]
async fn symmetric_key_over_mqtt() {
    let emu = Emulator::builder()
        .retry_after(0)
        .enroll(Enrollment::symmetric_key(
            "mq-1",
            KeyPair::from_base64("mq-1", &b64(KEY), None).unwrap(),
        ))
        .start()
        .await
        .unwrap();
    let scope = emu.id_scope().to_owned();
    let mut m = Mqtt::open(&emu, None).await;
    assert_eq!(
        m.connect(&scope, "mq-1", &sas(&scope, "mq-1", KEY), API)
            .await,
        ConnectReturnCode::Success
    );
    m.subscribe().await;
    let (status, retry, body) = m
        .request(
            "$dps/registrations/PUT/iotdps-register/?$rid=7",
            serde_json::to_vec(&json!({"registrationId": "mq-1", "payload": {"a": 1}})).unwrap(),
            7,
        )
        .await;
    assert_eq!((status, retry), (202, Some(0)));
    assert_eq!(body["status"], "assigning");
    let op = body["operationId"].as_str().unwrap();
    let (status, _, body) = m
        .request(
            &format!("$dps/registrations/GET/iotdps-get-operationstatus/?$rid=8&operationId={op}"),
            Vec::new(),
            8,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["registrationState"]["status"], "assigned");
    assert_eq!(body["registrationState"]["payload"], json!({"a": 1}));
    // The Node SDK unsubscribes before disconnecting and waits for the UNSUBACK.
    let mut unsubscribe = rumqttc::mqttbytes::v4::Unsubscribe::new("$dps/registrations/res/#");
    unsubscribe.pkid = 42;
    m.write(rumqttc::mqttbytes::v4::Packet::Unsubscribe(unsubscribe))
        .await;
    assert!(matches!(
        m.read().await,
        Some(rumqttc::mqttbytes::v4::Packet::UnsubAck(a)) if a.pkid == 42
    ));

    // Wrong key, wrong client id, wrong username: refused at CONNECT.
    let mut m = Mqtt::open(&emu, None).await;
    assert_eq!(
        m.connect(&scope, "mq-1", &sas(&scope, "mq-1", b"wrong"), API)
            .await,
        ConnectReturnCode::NotAuthorized
    );
    assert!(
        m.read().await.is_none(),
        "the emulator closes a refused connection"
    );
}

#[tokio::test]
async fn x509_group_over_mqtt_and_faults() {
    let ca = TestCa::new("MQTT CA");
    let emu = Emulator::builder()
        .retry_after(0)
        .enroll_group(EnrollmentGroup::x509_ca("g", ca.cert().clone()))
        .start()
        .await
        .unwrap();
    let scope = emu.id_scope().to_owned();
    let dev = ca.issue_client("mq-x509", &rcgen::PKCS_ECDSA_P256_SHA256);
    let mut m = Mqtt::open(&emu, Some(&dev)).await;
    assert_eq!(
        m.connect(&scope, "mq-x509", "", API).await,
        ConnectReturnCode::Success
    );
    m.subscribe().await;
    emu.inject(Fault::new(FaultKind::Throttle { retry_after: 2 }, 1));
    let (status, retry, _) = m
        .request(
            "$dps/registrations/PUT/iotdps-register/?$rid=1",
            b"{}".to_vec(),
            1,
        )
        .await;
    assert_eq!((status, retry), (429, Some(2)));
    let (status, body) = m
        .register("mq-x509", json!({"registrationId": "mq-x509"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["registrationState"]["x509"]["enrollmentGroupId"], "g");
    // TPM is not offered over MQTT.
    let (status, _, _) = m
        .request(
            "$dps/registrations/PUT/iotdps-register/?$rid=3",
            serde_json::to_vec(
                &json!({"tpm": {"endorsementKey": "AAAA", "storageRootKey": "AAAA"}}),
            )
            .unwrap(),
            3,
        )
        .await;
    assert_eq!(status, 400);
    // A dropped connection.
    emu.inject(Fault::new(FaultKind::Drop, 1));
    let mut publish = rumqttc::mqttbytes::v4::Publish::new(
        "$dps/registrations/PUT/iotdps-register/?$rid=4",
        rumqttc::mqttbytes::QoS::AtMostOnce,
        b"{}".to_vec(),
    );
    publish.pkid = 0;
    m.write(rumqttc::mqttbytes::v4::Packet::Publish(publish))
        .await;
    assert!(m.read().await.is_none());

    // A certificate from another CA is refused at CONNECT.
    let rogue = TestCa::new("MQTT CA").issue_client("mq-x509", &rcgen::PKCS_ECDSA_P256_SHA256);
    let mut m = Mqtt::open(&emu, Some(&rogue)).await;
    assert_eq!(
        m.connect(&scope, "mq-x509", "", API).await,
        ConnectReturnCode::NotAuthorized
    );
    // A client id that is not the registration id.
    let mut m = Mqtt::open(&emu, Some(&dev)).await;
    let mut connect = rumqttc::mqttbytes::v4::Connect::new("someone-else");
    connect.login = Some(rumqttc::mqttbytes::v4::Login::new(
        format!("{scope}/registrations/mq-x509/api-version={API}"),
        "",
    ));
    m.write(rumqttc::mqttbytes::v4::Packet::Connect(connect))
        .await;
    assert!(matches!(
        m.read().await,
        Some(rumqttc::mqttbytes::v4::Packet::ConnAck(a)) if a.code == ConnectReturnCode::BadClientId
    ));
}
