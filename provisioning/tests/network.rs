//! Networks as they are: MQTT over WebSockets on the HTTPS port (DPS and the hub), and every
//! transport through a real HTTP proxy (tinyproxy, started per test; its log proves each
//! connection went through it): HTTPS with X.509, symmetric key and TPM on swtpm; MQTT over
//! WebSockets with a key on SoftHSM2 and a symmetric key; MQTT over TCP; AMQP over TCP and over
//! WebSockets (a TPM too, its SASL exchange through the tunnel); the hub over
//! WebSockets through the proxy. Wrong proxy credentials, a proxy that is down, and the fault
//! matrix over the new transport.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use dps_emulator::{Emulator, Enrollment, EnrollmentGroup, Fault, FaultKind, FaultTarget};
use hsm_testkit::pki::TestCa;
use hsm_testkit::tinyproxy::Tinyproxy;
use provisioning::hub::{HubClient, Message};
use provisioning::{Error, Proxy, ProxySetting, Registration, RetryPolicy, Transport};

fn proxy(tinyproxy: &Tinyproxy) -> ProxySetting {
    ProxySetting::Proxy(Proxy::parse(&tinyproxy.url()).unwrap())
}

/// The device's hub connection over WebSockets, at the emulator's HTTPS port: telemetry
/// recorded there.
async fn telemetry_over_websockets(
    emulator: &Emulator,
    registration: &Registration,
    via: ProxySetting,
) {
    let hub = HubClient::builder_for(registration)
        .websocket(true)
        .proxy(via)
        .connect_to(emulator.https_addr().to_string())
        .timeout(Duration::from_secs(20))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{}: {e:?}", registration.device_id));
    let marker = format!("{:x}", rand_u64());
    hub.send_telemetry(Message::json(&serde_json::json!({ "marker": marker })))
        .await
        .unwrap();
    assert!(
        emulator
            .telemetry()
            .iter()
            .any(|m| String::from_utf8_lossy(&m.payload).contains(&marker)),
        "telemetry over WebSockets not recorded"
    );
    let twin = hub.twin().await.unwrap();
    assert!(twin.desired_version >= 1);
    hub.disconnect().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mqtt_over_websockets_direct_for_dps_and_the_hub() {
    let ca = TestCa::new("ws group CA");
    let emulator = emulator()
        .enroll(Enrollment::symmetric_key(
            "ws-sym",
            key_pair("ws-sym", DEVICE_KEY),
        ))
        .enroll_group(EnrollmentGroup::x509_ca("ws-group", ca.cert().clone()))
        .started()
        .await;
    let registration = client(&emulator, Transport::MqttWs)
        .proxy(ProxySetting::Direct)
        .symmetric_key(symmetric_key("ws-sym", DEVICE_KEY))
        .assigned()
        .await;
    assert_eq!(registration.device_id, "ws-sym");
    telemetry_over_websockets(&emulator, &registration, ProxySetting::Direct).await;
    let (device, _) = x509_device(&ca, "ws-x509");
    let registration = client(&emulator, Transport::MqttWs)
        .proxy(ProxySetting::Direct)
        .x509(device)
        .assigned()
        .await;
    telemetry_over_websockets(&emulator, &registration, ProxySetting::Direct).await;
    // The same registration over plain MQTT, for comparison: the emulator counted both.
    assert!(emulator.requests() >= 4);
}

#[test]
fn mqtt_over_websockets_with_the_key_on_softhsm_through_the_proxy() {
    hsm_testkit::softhsm::SoftHsm::isolated(|softhsm| {
        let ca = TestCa::new("ws pkcs11 CA");
        softhsm.init_token("ws");
        let token = hsm_pkcs11::Token::open(&softhsm.uri("ws", "any").parse().unwrap()).unwrap();
        let key = token
            .generate_key_pair(
                &softhsm.uri("ws", "ws-key").parse().unwrap(),
                hsm_pkcs11::KeySpec::EcdsaP256,
            )
            .unwrap();
        let key: Arc<dyn hsm_core::KeyHandle> = Arc::new(key);
        let chain = ca.certify_handle(&key, "ws-pkcs11");
        let device = Arc::new(hsm_core::CertifiedKey::new(key, chain).unwrap());
        let tinyproxy = Tinyproxy::start();
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            let emulator = emulator()
                .enroll_group(EnrollmentGroup::x509_ca(
                    "ws-pkcs11-group",
                    ca.cert().clone(),
                ))
                .started()
                .await;
            let registration = client(&emulator, Transport::MqttWs)
                .proxy(proxy(&tinyproxy))
                .x509(device)
                .assigned()
                .await;
            telemetry_over_websockets(&emulator, &registration, proxy(&tinyproxy)).await;
            let port = emulator.https_addr().port();
            assert!(
                tinyproxy.tunnels_to("localhost", port) >= 1,
                "{}",
                tinyproxy.log()
            );
            assert!(
                tinyproxy.tunnels_to("127.0.0.1", port) >= 1,
                "{}",
                tinyproxy.log()
            );
        });
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn https_through_the_proxy_with_x509_and_symmetric_key() {
    let tinyproxy = Tinyproxy::start();
    let ca = TestCa::new("proxy CA");
    let emulator = emulator()
        .enroll(Enrollment::symmetric_key(
            "px-sym",
            key_pair("px-sym", DEVICE_KEY),
        ))
        .enroll_group(EnrollmentGroup::x509_ca("px-group", ca.cert().clone()))
        .started()
        .await;
    let port = emulator.https_addr().port();
    let registration = client(&emulator, Transport::Https)
        .proxy(proxy(&tinyproxy))
        .symmetric_key(symmetric_key("px-sym", DEVICE_KEY))
        .assigned()
        .await;
    assert_eq!(registration.device_id, "px-sym");
    let (device, _) = x509_device(&ca, "px-x509");
    client(&emulator, Transport::Https)
        .proxy(proxy(&tinyproxy))
        .x509(device)
        .assigned()
        .await;
    assert_eq!(
        tinyproxy.tunnels_to("localhost", port),
        2,
        "{}",
        tinyproxy.log()
    );
    // MQTT over TCP through the proxy too (the proxy allows CONNECT to any port here).
    let mqtt = emulator.mqtt_addr().unwrap().port();
    client(&emulator, Transport::Mqtt)
        .proxy(proxy(&tinyproxy))
        .symmetric_key(symmetric_key("px-sym", DEVICE_KEY))
        .assigned()
        .await;
    assert_eq!(
        tinyproxy.tunnels_to("localhost", mqtt),
        1,
        "{}",
        tinyproxy.log()
    );
    // AMQP over TCP and over a WebSocket on the HTTPS port, through the proxy too.
    let amqp = emulator.amqp_addr().unwrap().port();
    for transport in [Transport::Amqp, Transport::AmqpWs] {
        client(&emulator, transport)
            .proxy(proxy(&tinyproxy))
            .symmetric_key(symmetric_key("px-sym", DEVICE_KEY))
            .assigned()
            .await;
    }
    assert_eq!(
        tinyproxy.tunnels_to("localhost", amqp),
        1,
        "{}",
        tinyproxy.log()
    );
    assert_eq!(
        tinyproxy.tunnels_to("localhost", port),
        3,
        "{}",
        tinyproxy.log()
    );
    // Direct clients do not touch it.
    client(&emulator, Transport::Https)
        .proxy(ProxySetting::Direct)
        .symmetric_key(symmetric_key("px-sym", DEVICE_KEY))
        .assigned()
        .await;
    assert_eq!(tinyproxy.tunnels_to("localhost", port), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tpm_registers_over_https_and_amqp_ws_through_an_authenticating_proxy() {
    let swtpm = hsm_testkit::swtpm::Swtpm::start();
    let tpm = hsm_tpm::Tpm::open(swtpm.tcti().parse().unwrap()).unwrap();
    let device = Arc::new(hsm_tpm::TpmIdentity::open(&tpm).unwrap());
    let tinyproxy = Tinyproxy::start_with_auth("device", "proxy-pass-7");
    let emulator = emulator()
        .enroll(Enrollment::tpm(
            device.registration_id().as_str(),
            device.endorsement_key().to_vec(),
        ))
        .started()
        .await;
    // HTTPS (the 401 challenge), and AMQP over a WebSocket (SASL TPM) through the same proxy.
    for transport in [Transport::Https, Transport::AmqpWs] {
        let registration = client(&emulator, transport)
            .proxy(proxy(&tinyproxy))
            .tpm(device.clone())
            .assigned()
            .await;
        assert!(registration.tpm_authentication_key.is_some());
    }
    assert!(tinyproxy.tunnels_to("localhost", emulator.https_addr().port()) >= 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_proxy_credentials_and_a_proxy_that_is_down_are_typed_errors() {
    let tinyproxy = Tinyproxy::start_with_auth("device", "right-pass");
    let emulator = emulator()
        .enroll(Enrollment::symmetric_key(
            "px-2",
            key_pair("px-2", DEVICE_KEY),
        ))
        .started()
        .await;
    let wrong = Proxy::parse(&format!(
        "http://device:wrong-pass-9@127.0.0.1:{}",
        tinyproxy.port()
    ))
    .unwrap();
    for transport in [
        Transport::Https,
        Transport::MqttWs,
        Transport::Mqtt,
        Transport::Amqp,
        Transport::AmqpWs,
    ] {
        let started = Instant::now();
        let error = client(&emulator, transport)
            .proxy(ProxySetting::Proxy(wrong.clone()))
            .symmetric_key(symmetric_key("px-2", DEVICE_KEY))
            .refused()
            .await;
        match &error {
            Error::Proxy { proxy, status, .. } => {
                // 407, or 401 as tinyproxy answers.
                assert!(
                    matches!(status, Some(401 | 407)),
                    "{transport:?}: {status:?}"
                );
                assert_eq!(proxy, &tinyproxy.url_without_credentials());
            }
            other => panic!("{transport:?}: {other:?}"),
        }
        // Not retried: credentials do not get better.
        assert!(started.elapsed() < Duration::from_secs(5));
        let text = format!("{error} {error:?} {:?}", std::error::Error::source(&error));
        assert!(!text.contains("wrong-pass-9"), "{text}");
        assert!(text.contains("refused the credentials"), "{text}");
    }
    // Without credentials: it needs them.
    let error = client(&emulator, Transport::Https)
        .proxy(ProxySetting::Proxy(
            Proxy::parse(&tinyproxy.url_without_credentials()).unwrap(),
        ))
        .symmetric_key(symmetric_key("px-2", DEVICE_KEY))
        .refused()
        .await;
    assert!(error.to_string().contains("needs credentials"), "{error}");

    // A proxy that is down: a typed network error naming the proxy, within the deadline.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = format!("http://127.0.0.1:{}", closed.local_addr().unwrap().port());
    drop(closed);
    let started = Instant::now();
    let error = client(&emulator, Transport::Https)
        .proxy(ProxySetting::Proxy(Proxy::parse(&down).unwrap()))
        .retry_policy(RetryPolicy {
            max_retries: 2,
            ..fast_policy()
        })
        .timeout(Duration::from_secs(10))
        .symmetric_key(symmetric_key("px-2", DEVICE_KEY))
        .refused()
        .await;
    assert!(
        matches!(&error, Error::Proxy { status: None, proxy, .. } if *proxy == down),
        "{error:?}"
    );
    assert!(error.is_transient());
    assert!(error.to_string().contains("cannot be reached"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // The proxy's Debug shows neither user nor password.
    let debug = format!("{wrong:?}");
    assert!(
        !debug.contains("wrong-pass-9") && !debug.contains("device"),
        "{debug}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_are_retried_over_websockets_as_over_the_other_transports() {
    let emulator = emulator()
        .enroll(Enrollment::symmetric_key(
            "ws-f",
            key_pair("ws-f", DEVICE_KEY),
        ))
        .started()
        .await;
    emulator
        .inject(Fault::new(FaultKind::Throttle { retry_after: 0 }, 2).on(FaultTarget::Register));
    emulator.inject(Fault::new(FaultKind::Drop, 1).on(FaultTarget::Poll));
    emulator.inject(Fault::new(FaultKind::Status { status: 503 }, 1).on(FaultTarget::Poll));
    let counter = Counter::default();
    let client = client(&emulator, Transport::MqttWs)
        .proxy(ProxySetting::Direct)
        .symmetric_key(symmetric_key("ws-f", DEVICE_KEY))
        .build()
        .unwrap();
    let registration = counter.wrap(client.register()).await.unwrap();
    assert_eq!(registration.device_id, "ws-f");
    // Two throttled registers, the register, a dropped poll, a 503 poll, the poll.
    assert_eq!(registration.requests, 6);
    // A WebSocket request to anything but MQTT is refused.
    let error = HubClient::builder_for(&registration)
        .websocket(true)
        .proxy(ProxySetting::Direct)
        .connect_to(emulator.mqtt_addr().unwrap().to_string())
        .timeout(Duration::from_secs(5))
        .attempts(1)
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::WebSocket { .. } | Error::Io { .. } | Error::HubTimeout { .. }
        ),
        "{error:?}"
    );
}

/// A hand-written "proxy" answering `CONNECT` with `reply`, then closing.
async fn fake_proxy(reply: Vec<u8>) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let reply = reply.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let _ = socket.write_all(&reply).await;
            });
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_proxy_gets_typed_errors() {
    let emulator = emulator()
        .enroll(Enrollment::symmetric_key(
            "px-h",
            key_pair("px-h", DEVICE_KEY),
        ))
        .started()
        .await;
    for (name, reply, says) in [
        (
            "not HTTP",
            b"SSH-2.0-OpenSSH\r\n\r\n".to_vec(),
            "did not answer as an HTTP proxy",
        ),
        ("closed", Vec::new(), "without answering CONNECT"),
        (
            "a huge head",
            [b"HTTP/1.1 200 OK\r\nX: ".to_vec(), vec![b'a'; 64 * 1024]].concat(),
            "too large",
        ),
        (
            "bytes before the tunnel is used",
            b"HTTP/1.1 200 Connection established\r\n\r\nsurprise".to_vec(),
            "sent data in the tunnel before it was used",
        ),
        (
            "forbidden",
            b"HTTP/1.1 403 Forbidden\r\n\r\n".to_vec(),
            "refused a tunnel to localhost",
        ),
        (
            "bad gateway",
            b"HTTP/1.1 502 Bad Gateway\r\n\r\n".to_vec(),
            "could not reach localhost",
        ),
    ] {
        let url = fake_proxy(reply).await;
        let error = client(&emulator, Transport::Https)
            .proxy(ProxySetting::Proxy(Proxy::parse(&url).unwrap()))
            .retry_policy(RetryPolicy {
                max_retries: 1,
                ..fast_policy()
            })
            .symmetric_key(symmetric_key("px-h", DEVICE_KEY))
            .refused()
            .await;
        assert!(matches!(error, Error::Proxy { .. }), "{name}: {error:?}");
        assert!(error.to_string().contains(says), "{name}: {error}");
    }
}
