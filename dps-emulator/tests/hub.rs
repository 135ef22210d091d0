//! The emulator's hubs against a raw MQTT client over real TLS sockets: IoT Hub's CONNECT
//! rules, subscriptions, telemetry, twin GET and PATCH, desired-property notifications,
//! sessions kept across connections, the end of a session, and the admin HTTP API.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{API, Https, Mqtt, b64, hub_sas, sas};
use dps_emulator::{Emulator, Enrollment, KeyPair, RefusalReason, SasError};
use hsm_core::Expiry;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{ConnectReturnCode, Packet, Publish, Subscribe, SubscribeReasonCode};
use serde_json::{Value, json};

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
const HUB: &str = "emulated-hub.azure-devices.net";
const DEVICE: &str = "raw-hub-device";

fn username(device: &str) -> String {
    format!("{HUB}/{device}/?api-version=2021-04-12&DeviceClientType=raw-test")
}

fn token() -> String {
    hub_sas(HUB, DEVICE, KEY, Expiry::In(Duration::from_secs(600)))
}

/// An emulator where `raw-hub-1` (device `raw-hub-device`) has registered.
async fn registered() -> Emulator {
    let emulator = Emulator::builder()
        .retry_after(0)
        .enroll(
            Enrollment::symmetric_key(
                "raw-hub-1",
                KeyPair::from_base64("raw-hub-1", &b64(KEY), None).unwrap(),
            )
            .device_id(DEVICE)
            .initial_twin(json!({"properties": {"desired": {"interval": 5}}})),
        )
        .start()
        .await
        .unwrap();
    let mut https = Https::connect(&emulator, None).await;
    let token = sas(emulator.id_scope(), "raw-hub-1", KEY);
    let done = https
        .register(
            "raw-hub-1",
            Some(&token),
            json!({"registrationId": "raw-hub-1"}),
            API,
        )
        .await;
    assert_eq!(done.json()["status"], "assigned");
    emulator
}

async fn connected(emulator: &Emulator, clean: bool) -> (Mqtt, bool) {
    let mut mqtt = Mqtt::open(emulator, None).await;
    let ack = mqtt
        .connect_hub(DEVICE, &username(DEVICE), &token(), clean)
        .await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    (mqtt, ack.session_present)
}

async fn publish(mqtt: &mut Mqtt, topic: &str, qos: QoS, payload: &[u8], pkid: u16) {
    let mut p = Publish::new(topic, qos, payload.to_vec());
    p.pkid = pkid;
    mqtt.write(Packet::Publish(p)).await;
}

/// The next PUBLISH from the hub (skipping acknowledgements).
async fn next_publish(mqtt: &mut Mqtt) -> Publish {
    loop {
        match mqtt.read().await {
            Some(Packet::Publish(p)) => return p,
            Some(Packet::PubAck(_) | Packet::PingResp) => {}
            other => panic!("expected a PUBLISH, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_hub_session_as_iot_hub_speaks_it() {
    let emulator = registered().await;
    let (mut mqtt, present) = connected(&emulator, false).await;
    assert!(!present);

    // A twin request before subscribing to the responses gets none (as IoT Hub): the ping
    // sent after it is answered first.
    publish(
        &mut mqtt,
        "$iothub/twin/GET/?$rid=0",
        QoS::AtMostOnce,
        b" ",
        0,
    )
    .await;
    mqtt.write(Packet::PingReq).await;
    assert!(matches!(mqtt.read().await, Some(Packet::PingResp)));

    // Only the device's own filters are granted.
    let mut subscribe = Subscribe::new("$iothub/twin/res/#", QoS::AtMostOnce);
    subscribe.add(
        "devices/someone-else/messages/devicebound/#".into(),
        QoS::AtLeastOnce,
    );
    subscribe.add("#".into(), QoS::AtMostOnce);
    subscribe.add(
        "$iothub/twin/PATCH/properties/desired/#".into(),
        QoS::AtLeastOnce,
    );
    subscribe.pkid = 1;
    mqtt.write(Packet::Subscribe(subscribe)).await;
    let Some(Packet::SubAck(ack)) = mqtt.read().await else {
        panic!("no SUBACK")
    };
    assert_eq!(
        ack.return_codes,
        vec![
            SubscribeReasonCode::Success(QoS::AtMostOnce),
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
        ]
    );

    // Twin GET: desired from the enrollment's initial twin, both sections versioned.
    publish(
        &mut mqtt,
        "$iothub/twin/GET/?$rid=r1",
        QoS::AtMostOnce,
        b" ",
        0,
    )
    .await;
    let answer = next_publish(&mut mqtt).await;
    assert_eq!(answer.topic, "$iothub/twin/res/200/?$rid=r1");
    let twin: Value = serde_json::from_slice(&answer.payload).unwrap();
    assert_eq!(
        twin,
        json!({"desired": {"interval": 5, "$version": 1}, "reported": {"$version": 1}})
    );

    // Reported PATCH: 204 with the new version and an empty body; a bad patch: 400 with
    // IoT Hub's error body.
    let patch_topic = |rid: &str| format!("$iothub/twin/PATCH/properties/reported/?$rid={rid}");
    publish(
        &mut mqtt,
        &patch_topic("r2"),
        QoS::AtLeastOnce,
        br#"{"fw":"1.0"}"#,
        2,
    )
    .await;
    let answer = next_publish(&mut mqtt).await;
    assert_eq!(answer.topic, "$iothub/twin/res/204/?$rid=r2&$version=2");
    assert!(answer.payload.is_empty());
    publish(&mut mqtt, &patch_topic("r3"), QoS::AtMostOnce, b"[1]", 0).await;
    let answer = next_publish(&mut mqtt).await;
    assert_eq!(answer.topic, "$iothub/twin/res/400/?$rid=r3");
    let error: Value = serde_json::from_slice(&answer.payload).unwrap();
    assert_eq!(error["errorCode"], 400004);
    assert!(error["trackingId"].is_string() && error["message"].is_string());

    // Telemetry: acknowledged, recorded with its decoded properties.
    publish(
        &mut mqtt,
        &format!("devices/{DEVICE}/messages/events/%24.ct=text%2Fplain&$.ce=utf-8&k=a%20b"),
        QoS::AtLeastOnce,
        b"hello hub",
        7,
    )
    .await;
    match mqtt.read().await {
        Some(Packet::PubAck(ack)) => assert_eq!(ack.pkid, 7),
        other => panic!("expected PUBACK 7, got {other:?}"),
    }
    let message = emulator.telemetry().pop().unwrap();
    assert_eq!(
        (message.hub.as_str(), message.device_id.as_str()),
        (HUB, DEVICE)
    );
    assert_eq!(message.payload, b"hello hub");
    assert_eq!(message.property("$.ct"), Some("text/plain"));
    assert_eq!(message.property("$.ce"), Some("utf-8"));
    assert_eq!(message.property("k"), Some("a b"));
    assert_eq!(emulator.telemetry_received(), 1);

    // A desired patch reaches the subscribed device.
    let version = emulator
        .update_desired(DEVICE, &json!({"interval": 10}))
        .unwrap();
    let notification = next_publish(&mut mqtt).await;
    assert_eq!(
        notification.topic,
        format!("$iothub/twin/PATCH/properties/desired/?$version={version}")
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&notification.payload).unwrap(),
        json!({"interval": 10, "$version": 2})
    );

    // A newer connection ends this one and finds the subscriptions kept (clean session 0).
    let (mut newer, present) = connected(&emulator, false).await;
    assert!(present, "the session was kept");
    assert_eq!(mqtt.read().await, None, "the older connection was closed");
    publish(
        &mut newer,
        "$iothub/twin/GET/?$rid=r4",
        QoS::AtMostOnce,
        b"",
        0,
    )
    .await;
    let answer = next_publish(&mut newer).await;
    assert_eq!(answer.topic, "$iothub/twin/res/200/?$rid=r4");
    // Clean session 1 forgets them.
    let (mut clean, present) = connected(&emulator, true).await;
    assert!(!present);
    assert_eq!(newer.read().await, None);
    // Publishing for another device ends the connection, as IoT Hub does.
    publish(
        &mut clean,
        "devices/someone-else/messages/events/",
        QoS::AtLeastOnce,
        b"x",
        1,
    )
    .await;
    assert_eq!(clean.read().await, None);
    assert_eq!(emulator.telemetry_received(), 1);
    assert_eq!(emulator.hub_connections(), 3);
}

#[tokio::test]
async fn refusals_are_connack_5_or_4_with_the_reason_kept() {
    let emulator = registered().await;
    let refused = |client_id: &'static str, username: String, password: String| {
        let emulator = &emulator;
        async move {
            let mut mqtt = Mqtt::open(emulator, None).await;
            let ack = mqtt
                .connect_hub(client_id, &username, &password, false)
                .await;
            assert_eq!(mqtt.read().await, None, "closed after the refusal");
            let reason = emulator.hub_refusals().pop().unwrap().reason;
            (ack.code, reason)
        }
    };
    assert_eq!(
        refused(
            DEVICE,
            format!("{HUB}/{DEVICE}/?api-version=1999-01-01"),
            token()
        )
        .await,
        (
            ConnectReturnCode::BadUserNamePassword,
            RefusalReason::ApiVersion {
                api_version: Some("1999-01-01".into())
            }
        )
    );
    assert_eq!(
        refused("another-id", username(DEVICE), token()).await,
        (ConnectReturnCode::NotAuthorized, RefusalReason::ClientId)
    );
    assert_eq!(
        refused(DEVICE, username(DEVICE), String::new()).await,
        (
            ConnectReturnCode::NotAuthorized,
            RefusalReason::NoCredential
        )
    );
    let with_key_name = hsm_core::SasTokenBuilder::new(format!("{HUB}/devices/{DEVICE}"))
        .key_name("registration")
        .sign(|d| Ok(common::hmac(KEY, d)))
        .unwrap();
    assert_eq!(
        refused(DEVICE, username(DEVICE), with_key_name.expose().to_owned()).await,
        (
            ConnectReturnCode::NotAuthorized,
            RefusalReason::Sas(SasError::WrongKeyName { expected: None })
        )
    );
    let expired = hub_sas(HUB, DEVICE, KEY, Expiry::At(1_000_000));
    assert_eq!(
        refused(DEVICE, username(DEVICE), expired).await,
        (
            ConnectReturnCode::NotAuthorized,
            RefusalReason::Sas(SasError::Expired)
        )
    );
    assert_eq!(
        refused(DEVICE, username(DEVICE), "not a token".into()).await,
        (
            ConnectReturnCode::NotAuthorized,
            RefusalReason::Sas(SasError::NotSas)
        )
    );
    assert_eq!(emulator.hub_connections(), 0);
    // A user name that is neither DPS's nor a hub's.
    let mut mqtt = Mqtt::open(&emulator, None).await;
    let ack = mqtt.connect_hub(DEVICE, "nonsense", &token(), false).await;
    assert_eq!(ack.code, ConnectReturnCode::BadUserNamePassword);
}

#[tokio::test]
async fn the_session_ends_with_its_token_and_when_the_device_is_disabled() {
    let emulator = registered().await;
    let mut mqtt = Mqtt::open(&emulator, None).await;
    let short = hub_sas(HUB, DEVICE, KEY, Expiry::In(Duration::from_secs(2)));
    let ack = mqtt
        .connect_hub(DEVICE, &username(DEVICE), &short, false)
        .await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    assert_eq!(mqtt.read().await, None, "closed when the token expired");

    let (mut mqtt, _) = connected(&emulator, false).await;
    assert_eq!(emulator.connected_devices(), 1);
    emulator.disable_device(DEVICE).unwrap();
    assert_eq!(
        mqtt.read().await,
        None,
        "closed when the device was disabled"
    );
    assert_eq!(
        emulator.device(DEVICE).unwrap().status,
        dps_emulator::DeviceStatus::Disabled
    );
    assert!(emulator.disable_device("nobody").is_err());
}

#[tokio::test]
async fn the_admin_api_changes_and_shows_devices() {
    let emulator = registered().await;
    let mut https = Https::connect(&emulator, None).await;
    let mut call = async |method: &str, path: &str, body: Option<Value>| {
        let r = https
            .send(
                method,
                path,
                None,
                body.map(|b| serde_json::to_vec(&b).unwrap()),
            )
            .await
            .unwrap();
        (r.status, r.json())
    };
    let (status, devices) = call("GET", "/admin/devices", None).await;
    assert_eq!(status, 200);
    assert_eq!(devices[0]["deviceId"], DEVICE);
    assert_eq!(devices[0]["status"], "enabled");

    let (status, record) = call(
        "PATCH",
        &format!("/admin/devices/{DEVICE}"),
        Some(json!({"status": "disabled"})),
    )
    .await;
    assert_eq!((status, record["status"].as_str()), (200, Some("disabled")));
    let mut mqtt = Mqtt::open(&emulator, None).await;
    let ack = mqtt
        .connect_hub(DEVICE, &username(DEVICE), &token(), false)
        .await;
    assert_eq!(ack.code, ConnectReturnCode::NotAuthorized);
    let (status, _) = call(
        "PATCH",
        &format!("/admin/devices/{DEVICE}"),
        Some(json!({"status": "enabled"})),
    )
    .await;
    assert_eq!(status, 200);

    let (status, version) = call(
        "PATCH",
        &format!("/admin/devices/{DEVICE}/twin/desired"),
        Some(json!({"mode": "eco"})),
    )
    .await;
    assert_eq!((status, version["$version"].as_u64()), (200, Some(2)));
    let (mut mqtt, _) = connected(&emulator, false).await;
    publish(
        &mut mqtt,
        &format!("devices/{DEVICE}/messages/events/"),
        QoS::AtLeastOnce,
        br#"{"t":1}"#,
        1,
    )
    .await;
    assert!(matches!(mqtt.read().await, Some(Packet::PubAck(_))));
    let (status, shown) = call("GET", &format!("/admin/devices/{DEVICE}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(shown["twin"]["desired"]["mode"], "eco");
    assert_eq!(shown["connected"], true);
    let (_, telemetry) = call("GET", &format!("/admin/telemetry?deviceId={DEVICE}"), None).await;
    assert_eq!(telemetry[0]["payload"], r#"{"t":1}"#);
    assert_eq!(telemetry[0]["hub"], HUB);
    let (_, none) = call("GET", "/admin/telemetry?deviceId=nobody", None).await;
    assert_eq!(none, json!([]));
    let (_, refusals) = call("GET", "/admin/hub/refusals", None).await;
    assert_eq!(refusals[0]["reason"], "the device is disabled");

    let (status, record) = call(
        "PATCH",
        &format!("/admin/devices/{DEVICE}"),
        Some(json!({"assignedHub": "other-hub.example.net"})),
    )
    .await;
    assert_eq!(
        (status, record["assignedHub"].as_str()),
        (200, Some("other-hub.example.net"))
    );
    assert_eq!(
        mqtt.read().await,
        None,
        "moving the device ended its connection"
    );

    for (method, path, body, want) in [
        (
            "PATCH",
            format!("/admin/devices/{DEVICE}"),
            Some(json!({"colour": "red"})),
            400,
        ),
        (
            "PATCH",
            format!("/admin/devices/{DEVICE}"),
            Some(json!({})),
            400,
        ),
        (
            "PATCH",
            format!("/admin/devices/{DEVICE}/twin/desired"),
            Some(json!([1])),
            400,
        ),
        ("GET", "/admin/devices/nobody".to_owned(), None, 404),
        ("DELETE", "/admin/devices".to_owned(), None, 405),
        ("GET", "/admin/nothing".to_owned(), None, 404),
    ] {
        let (status, body) = call(method, &path, body).await;
        assert_eq!(status, want, "{method} {path}: {body}");
        assert!(body["message"].is_string(), "{body}");
    }
}
