//! The emulator under hostile and sloppy clients, over real sockets: a request whose body never
//! comes, a CONNECT sent a byte at a time, a device that registers again and again, tokens
//! without the key name, and configuration files that are wrong in ways that used to pass.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{API, Https, b64, sas, tls, tls_config};
use dps_emulator::{Config, Emulator, Enrollment, KeyPair, Limits};
use hsm_core::{Expiry, RegistrationId, SasTokenBuilder};
use rumqttc::mqttbytes::v4::{Connect, Login, Packet};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

fn keys(id: &str) -> KeyPair {
    KeyPair::from_base64(id, &b64(KEY), None).unwrap()
}

fn limits(read_timeout: Duration) -> Limits {
    Limits {
        max_connections: 8,
        read_timeout,
        ..Limits::default()
    }
}

/// Reads until the server closes the connection (or `within` passes, which fails the test);
/// returns what it sent.
async fn read_to_close(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    within: Duration,
) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(within, async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await
    .expect("the emulator closes the connection");
    out
}

#[tokio::test]
async fn a_request_body_that_never_comes_is_cut_off_and_cannot_lock_devices_out() {
    let emu = Emulator::builder()
        .retry_after(0)
        .limits(limits(Duration::from_millis(500)))
        .enroll(Enrollment::symmetric_key("dev-1", keys("dev-1")))
        .start()
        .await
        .unwrap();
    // As many slow clients as there are connection slots: headers announcing 60,000 bytes,
    // then nothing.
    let head = format!(
        "PUT /{}/registrations/dev-1/register?api-version={API} HTTP/1.1\r\nHost: localhost\r\n\
         Content-Type: application/json\r\nContent-Length: 60000\r\n\r\n",
        emu.id_scope()
    );
    let mut slow = Vec::new();
    for _ in 0..8 {
        let mut stream = tls(emu.https_addr(), tls_config(&emu, None, b"http/1.1")).await;
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.flush().await.unwrap();
        slow.push(stream);
    }
    let started = Instant::now();
    for stream in &mut slow {
        let answer = read_to_close(stream, Duration::from_secs(5)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // The slots are free again: a device registers.
    let mut client = Https::connect(&emu, None).await;
    let token = sas(emu.id_scope(), "dev-1", KEY);
    let reply = client
        .register(
            "dev-1",
            Some(&token),
            json!({"registrationId": "dev-1"}),
            API,
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
}

#[tokio::test]
async fn a_connect_packet_sent_a_byte_at_a_time_is_cut_off_at_the_deadline() {
    let emu = Emulator::builder()
        .limits(limits(Duration::from_secs(1)))
        .start()
        .await
        .unwrap();
    let mut connect = Connect::new("dev-1");
    connect.login = Some(Login::new(
        format!("{}/registrations/dev-1/api-version={API}", emu.id_scope()),
        "",
    ));
    let mut bytes = bytes::BytesMut::new();
    Packet::Connect(connect)
        .write(&mut bytes, usize::MAX)
        .unwrap();
    let mut stream = tls(emu.mqtt_addr().unwrap(), tls_config(&emu, None, b"mqtt")).await;
    let started = Instant::now();
    // One byte every 200 ms: each read is well within the timeout, the packet is not.
    let mut closed = false;
    for byte in bytes.iter() {
        if stream.write_all(&[*byte]).await.is_err() || stream.flush().await.is_err() {
            closed = true;
            break;
        }
        let mut buffer = [0u8; 16];
        match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(_)) => panic!("the emulator answered a CONNECT it cannot have read"),
            Err(_) => {}
        }
    }
    let elapsed = started.elapsed();
    assert!(closed, "the connection was still open after {elapsed:?}");
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn operations_are_bounded_per_device_in_number_and_in_time() {
    let emu = Emulator::builder()
        .retry_after(0)
        .limits(Limits {
            max_operations: 3,
            operation_ttl: Duration::from_millis(800),
            ..Limits::default()
        })
        .enroll(Enrollment::symmetric_key("dev-1", keys("dev-1")))
        .enroll(Enrollment::symmetric_key("dev-2", keys("dev-2")))
        .enroll(Enrollment::symmetric_key("dev-3", keys("dev-3")))
        .enroll(Enrollment::symmetric_key("dev-4", keys("dev-4")))
        .start()
        .await
        .unwrap();
    let mut client = Https::connect(&emu, None).await;
    // One device registering 50 times with a large payload keeps one operation.
    let payload = json!({"blob": "x".repeat(60_000)});
    let token = sas(emu.id_scope(), "dev-1", KEY);
    let mut first = None;
    for _ in 0..50 {
        let reply = client
            .register_raw(
                "dev-1",
                Some(&token),
                json!({"registrationId": "dev-1", "payload": payload}),
                API,
            )
            .await;
        assert_eq!(reply.status, 202);
        first.get_or_insert(reply.json()["operationId"].as_str().unwrap().to_owned());
    }
    assert_eq!(emu.operations_kept(), 1);
    // Its first operation was replaced by the later ones.
    let old = client
        .poll("dev-1", first.as_deref().unwrap(), Some(&token), API)
        .await;
    assert_eq!(old.status, 404);
    // Four devices, at most three operations: the oldest goes.
    let mut operations = Vec::new();
    for id in ["dev-1", "dev-2", "dev-3", "dev-4"] {
        let token = sas(emu.id_scope(), id, KEY);
        let reply = client
            .register_raw(id, Some(&token), json!({"registrationId": id}), API)
            .await;
        operations.push((
            id,
            token,
            reply.json()["operationId"].as_str().unwrap().to_owned(),
        ));
    }
    assert_eq!(emu.operations_kept(), 3);
    let (id, token, op) = &operations[0];
    assert_eq!(client.poll(id, op, Some(token), API).await.status, 404);
    let (id, token, op) = &operations[3];
    assert_eq!(client.poll(id, op, Some(token), API).await.status, 200);
    // And none outlives the TTL.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(client.poll(id, op, Some(token), API).await.status, 404);
    assert_eq!(emu.operations_kept(), 0);
}

#[tokio::test]
async fn a_dps_token_needs_the_registration_key_name() {
    let emu = Emulator::builder()
        .retry_after(0)
        .enroll(Enrollment::symmetric_key("dev-1", keys("dev-1")))
        .start()
        .await
        .unwrap();
    let id = RegistrationId::new("dev-1").unwrap();
    let sign = |builder: SasTokenBuilder| {
        builder
            .expiry(Expiry::In(Duration::from_secs(60)))
            .sign(|data| Ok(common::hmac(KEY, data)))
            .unwrap()
            .expose()
            .to_owned()
    };
    let resource = format!("{}/registrations/dev-1", emu.id_scope());
    let mut client = Https::connect(&emu, None).await;
    for (token, status) in [
        (sign(SasTokenBuilder::new(resource.clone())), 401),
        (
            sign(SasTokenBuilder::new(resource.clone()).key_name("owner")),
            401,
        ),
        (
            sign(SasTokenBuilder::for_registration(emu.id_scope(), &id)),
            202,
        ),
    ] {
        let reply = client
            .register_raw(
                "dev-1",
                Some(&token),
                json!({"registrationId": "dev-1"}),
                API,
            )
            .await;
        assert_eq!(reply.status, status, "{token}");
    }
}

#[test]
fn enrollment_files_with_invalid_or_repeated_ids_are_refused_with_the_line() {
    for (text, needle) in [
        (
            "[[enrollment]]\nregistration_id = \"has space\"\nsymmetric_key = { primary = \"AAAA\" }\n",
            "line 2: the registration id is not valid: character ' ' at position 3",
        ),
        (
            "[[enrollment]]\nregistration_id = \"dev-1\"\nsymmetric_key = { primary = \"AAAA\" }\n\
             \n[[enrollment]]\nregistration_id = \"DEV-1\"\nsymmetric_key = { primary = \"AAAA\" }\n",
            "line 6: registration id \"DEV-1\" is given twice (first at line 2)",
        ),
        (
            "[[group]]\nid = \"g\"\nsymmetric_key = { primary = \"AAAA\" }\n\
             [[group]]\nid = \"g\"\nsymmetric_key = { primary = \"AAAA\" }\n",
            "line 5: group id \"g\" is given twice (first at line 2)",
        ),
    ] {
        let error = Config::from_toml(text).unwrap_err().to_string();
        assert!(error.contains(needle), "{error}");
    }
}

#[test]
fn configuration_errors_never_show_a_key() {
    let secret = "c2VjcmV0LWtleS1mb3ItdGVzdGluZy1vbmx5";
    for text in [
        // A wrong type next to the key: the parser's excerpt would show the key's line.
        format!(
            "[[enrollment]]\nregistration_id = \"d\"\nsymmetric_key = {{ primary = \"{secret}\", secondary = 5 }}\n"
        ),
        // The key itself of the wrong type.
        "[[enrollment]]\nregistration_id = \"d\"\nsymmetric_key = { primary = 123456789 }\n"
            .to_owned(),
        // A syntax error on the key's line.
        format!(
            "[[enrollment]]\nregistration_id = \"d\"\nsymmetric_key = {{ primary = \"{secret}\" \n"
        ),
    ] {
        let error = Config::from_toml(&text).unwrap_err().to_string();
        assert!(error.contains("line 3"), "{error}");
        assert!(
            !error.contains(secret) && !error.contains("123456789"),
            "{error}"
        );
    }
}

#[test]
fn a_bad_pem_file_is_described_in_words() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ca.pem"),
        "-----BEGIN CERTIFICATE-----\nMII!!!notbase64\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let config = dir.path().join("emulator.toml");
    std::fs::write(&config, "[[group]]\nid = \"g\"\nx509_ca = \"ca.pem\"\n").unwrap();
    let error = Config::from_file(&config)
        .and_then(Config::into_builder)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("is not a PEM certificate: the base64 inside a PEM section is invalid"),
        "{error}"
    );
    assert!(!error.contains("InvalidCharacter"), "{error}");
}
