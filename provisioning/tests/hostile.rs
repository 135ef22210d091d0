//! Hostile servers: a hand-written HTTPS server answering with huge bodies, invalid JSON,
//! missing fields, wrong operation and registration ids, a hub name that is not a host name, or
//! nothing at all; and the emulator assigning forever; servers on the MQTT and AMQP ports that
//! speak something else or break the protocol. Every case ends in a typed error within the
//! deadline. And hostile AMQP clients, which the emulator survives.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::*;
use dps_emulator::Enrollment;
use hsm_testkit::pki::TestCa;
use provisioning::{Error, ProvisioningClient, RetryPolicy};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

type Script = Arc<dyn Fn(&str) -> Vec<u8> + Send + Sync>;

/// In a response, anywhere: the server closes the connection 200 ms after sending it, without
/// telling the client.
const CLOSE_LATER: &str = "close-200ms-later";

/// A TLS server that answers each HTTP/1.1 request with the bytes `script` returns for it (the
/// whole request: head and body).
struct Hostile {
    addr: SocketAddr,
    ca: TestCa,
    requests: Arc<AtomicU32>,
    connections: Arc<AtomicU32>,
}

impl Hostile {
    async fn start(script: Script) -> Self {
        let ca = TestCa::new("hostile CA");
        let server = ca.issue_server();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(server.chain.clone(), server.private_key())
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicU32::new(0));
        let connections = Arc::new(AtomicU32::new(0));
        let counter = requests.clone();
        let accepted = connections.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                accepted.fetch_add(1, Ordering::SeqCst);
                let (acceptor, script, counter) =
                    (acceptor.clone(), script.clone(), counter.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buffer = Vec::new();
                    loop {
                        // Read one request head and its body.
                        let head_end = loop {
                            if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            let mut chunk = [0u8; 4096];
                            match tls.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
                        let length: usize = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse().ok())?
                            })
                            .unwrap_or(0);
                        while buffer.len() < head_end + length {
                            let mut chunk = [0u8; 4096];
                            match tls.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let request =
                            String::from_utf8_lossy(&buffer[..head_end + length]).into_owned();
                        buffer.drain(..head_end + length);
                        counter.fetch_add(1, Ordering::SeqCst);
                        let response = script(&request);
                        if response.is_empty() {
                            // Never answer.
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                        }
                        if tls.write_all(&response).await.is_err() || tls.flush().await.is_err() {
                            return;
                        }
                        let text = String::from_utf8_lossy(&response);
                        if text.contains(CLOSE_LATER) {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        if text.contains("Connection: close") || text.contains(CLOSE_LATER) {
                            let _ = tls.shutdown().await;
                            return;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            ca,
            requests,
            connections,
        }
    }

    fn client(&self, timeout: Duration) -> ProvisioningClient {
        ProvisioningClient::builder(format!("localhost:{}", self.addr.port()), "0ne00000EMU")
            .trust_anchor(self.ca.cert().clone())
            .symmetric_key(symmetric_key("hostile-dev", DEVICE_KEY))
            .retry_policy(RetryPolicy {
                max_retries: 2,
                request_timeout: Duration::from_millis(500),
                ..fast_policy()
            })
            .timeout(timeout)
            .build()
            .unwrap()
    }
}

fn http(status: u16, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nRetry-After: 0\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// Register answers 202 with operation `op-1`; polls get `poll`.
fn with_poll(poll: &'static str) -> Script {
    Arc::new(move |line: &str| {
        if line.starts_with("PUT ") {
            http(202, br#"{"operationId":"op-1","status":"assigning"}"#)
        } else {
            http(200, poll.as_bytes())
        }
    })
}

/// Registers against `script`; the error must pass `check` within the deadline. Returns the
/// requests the server saw.
async fn expect(script: Script, check: impl Fn(&Error) -> bool, what: &str) -> u32 {
    let server = Hostile::start(script).await;
    let started = Instant::now();
    let error = server
        .client(Duration::from_secs(5))
        .register()
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(check(&error), "{what}: {error:?}");
    assert!(elapsed < Duration::from_secs(5), "{what}: {elapsed:?}");
    server.requests.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread")]
async fn huge_bodies_are_cut_off() {
    let huge: Script = Arc::new(|_: &str| {
        let body = vec![b' '; 10 * 1024 * 1024];
        http(202, &body)
    });
    let n = expect(
        huge,
        |e| matches!(e, Error::ResponseTooLarge { limit: 65536, .. }),
        "content-length",
    )
    .await;
    assert_eq!(n, 1, "a protocol error is not retried");
    let chunked: Script = Arc::new(|_: &str| {
        let mut out = b"HTTP/1.1 202 X\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        let chunk = vec![b' '; 16 * 1024];
        for _ in 0..64 {
            out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            out.extend_from_slice(&chunk);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    });
    expect(
        chunked,
        |e| matches!(e, Error::ResponseTooLarge { .. }),
        "chunked",
    )
    .await;
    // A huge error body is cut off too.
    let huge_error: Script = Arc::new(|_: &str| http(503, &vec![b'x'; 1 << 20]));
    expect(
        huge_error,
        |e| matches!(e, Error::ResponseTooLarge { .. }),
        "error body",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_json_and_missing_fields_are_malformed_at_once() {
    let malformed = |e: &Error| matches!(e, Error::MalformedResponse { .. }) && !e.is_transient();
    expect(
        Arc::new(|_: &str| http(202, b"{not json")),
        malformed,
        "invalid JSON",
    )
    .await;
    expect(
        Arc::new(|_: &str| http(202, b"\xff\xfe\x00")),
        malformed,
        "binary",
    )
    .await;
    expect(
        Arc::new(|_: &str| http(202, br#"{"status":"assigning"}"#)),
        malformed,
        "no operationId",
    )
    .await;
    expect(
        Arc::new(|_: &str| http(202, br#"{}"#)),
        malformed,
        "no status and no operationId",
    )
    .await;
    expect(
        with_poll(r#"{"operationId":"op-1","status":"assigned"}"#),
        malformed,
        "no registrationState",
    )
    .await;
    expect(
        with_poll(r#"{"operationId":"op-1","status":"assigned","registrationState":{"deviceId":"d","status":"assigned"}}"#),
        malformed,
        "no assignedHub",
    )
    .await;
    expect(
        with_poll(r#"{"operationId":"op-1","status":"assigned","registrationState":{"assignedHub":"h.example","status":"assigned"}}"#),
        malformed,
        "no deviceId",
    )
    .await;
    expect(
        with_poll(r#"{"operationId":"op-1","status":"assigned","registrationState":{"assignedHub":"evil.example/../x","deviceId":"d"}}"#),
        malformed,
        "hub that is not a host name",
    )
    .await;
    expect(
        with_poll(r#"{"operationId":"op-1","status":"levitating"}"#),
        malformed,
        "unknown status",
    )
    .await;
    expect(with_poll("[1,2,3]"), malformed, "array").await;
    // Not retried: the first malformed answer is the error, after one request (two with the
    // register request before a malformed poll).
    assert_eq!(
        expect(
            Arc::new(|_: &str| http(202, b"{not json")),
            malformed,
            "once"
        )
        .await,
        1
    );
    assert_eq!(expect(with_poll("[1,2,3]"), malformed, "once").await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_operation_and_registration_ids_are_malformed() {
    let malformed = |e: &Error| {
        matches!(
            e,
            Error::MalformedResponse {
                operation: "poll",
                ..
            }
        )
    };
    expect(
        with_poll(r#"{"operationId":"op-2","status":"assigning"}"#),
        malformed,
        "other operation",
    )
    .await;
    expect(
        with_poll(r#"{"operationId":"op-2","status":"assigned","registrationState":{"assignedHub":"h.example","deviceId":"d"}}"#),
        malformed,
        "other operation, assigned",
    )
    .await;
    expect(
        with_poll(r#"{"operationId":"op-1","status":"assigned","registrationState":{"registrationId":"someone-else","assignedHub":"h.example","deviceId":"d"}}"#),
        malformed,
        "other registration id",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_and_slow_servers_time_out() {
    // Accepts TCP, never speaks TLS.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    let client = ProvisioningClient::builder(format!("localhost:{port}"), "scope")
        .trust_anchor(TestCa::new("x").cert().clone())
        .symmetric_key(symmetric_key("hostile-dev", DEVICE_KEY))
        .retry_policy(RetryPolicy {
            request_timeout: Duration::from_millis(300),
            ..fast_policy()
        })
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let started = Instant::now();
    let error = client.register().await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    match error {
        Error::Timeout {
            last: Some(last), ..
        } => assert!(matches!(*last, Error::Io { .. }), "{last:?}"),
        other => panic!("{other:?}"),
    }
    // TLS up, but no HTTP answer: per-request timeouts, then the typed I/O error.
    let server = Hostile::start(Arc::new(|_: &str| Vec::new())).await;
    let error = server
        .client(Duration::from_secs(10))
        .register()
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::Io {
                operation: "wait for DPS",
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(server.requests.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn endless_assigning_times_out_within_the_deadline() {
    let emulator = emulator()
        .assigning_polls(u32::MAX)
        .enroll(Enrollment::symmetric_key(
            "endless",
            key_pair("endless", DEVICE_KEY),
        ))
        .started()
        .await;
    for transport in TRANSPORTS {
        let client = client(&emulator, transport)
            .symmetric_key(symmetric_key("endless", DEVICE_KEY))
            .timeout(Duration::from_millis(1500))
            .build()
            .unwrap();
        let started = Instant::now();
        let error = client.register().await.unwrap_err();
        let elapsed = started.elapsed();
        assert!(
            matches!(error, Error::Timeout { .. }),
            "{transport:?}: {error:?}"
        );
        assert!(
            elapsed < Duration::from_secs(2),
            "{transport:?}: {elapsed:?}"
        );
    }
}

const ASSIGNED: &str = r#"{"operationId":"op-1","status":"assigned","registrationState":{"registrationId":"hostile-dev","assignedHub":"hub.example.net","deviceId":"hostile-dev","status":"assigned","substatus":"initialAssignment"}}"#;

#[tokio::test(flavor = "multi_thread")]
async fn one_connection_for_register_and_polls_and_reconnect_when_closed() {
    // PUT -> 202, GET -> 202, GET -> 200: three requests on one connection, with the headers
    // DPS expects.
    let polls = Arc::new(AtomicU32::new(0));
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let (p, lines) = (polls.clone(), seen.clone());
    let server = Hostile::start(Arc::new(move |line: &str| {
        lines
            .lock()
            .unwrap()
            .push(line.lines().next().unwrap().to_owned());
        if line.starts_with("PUT ") {
            return http(202, br#"{"operationId":"op-1","status":"assigning"}"#);
        }
        match p.fetch_add(1, Ordering::SeqCst) {
            0 => http(202, br#"{"operationId":"op-1","status":"assigning"}"#),
            _ => http(200, ASSIGNED.as_bytes()),
        }
    }))
    .await;
    let registration = server
        .client(Duration::from_secs(5))
        .register()
        .await
        .unwrap();
    assert_eq!(registration.assigned_hub, "hub.example.net");
    assert_eq!(registration.requests, 3);
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
    let lines = seen.lock().unwrap().clone();
    assert_eq!(
        lines[0],
        "PUT /0ne00000EMU/registrations/hostile-dev/register?api-version=2021-06-01 HTTP/1.1"
    );
    assert_eq!(
        lines[1],
        "GET /0ne00000EMU/registrations/hostile-dev/operations/op-1?api-version=2021-06-01 HTTP/1.1"
    );

    // The server closes the connection after each answer: the client reconnects each time.
    let closing = Hostile::start(Arc::new(|line: &str| {
        let mut response = if line.starts_with("PUT ") {
            http(202, br#"{"operationId":"op-1","status":"assigning"}"#)
        } else {
            http(200, ASSIGNED.as_bytes())
        };
        let at = response.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
        response.splice(at..at, b"Connection: close\r\n".iter().copied());
        response
    }))
    .await;
    let registration = closing
        .client(Duration::from_secs(5))
        .register()
        .await
        .unwrap();
    assert_eq!(registration.requests, 2, "no request failed");
    assert_eq!(closing.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn reconnect_without_a_failed_request_when_closed_silently_while_waiting() {
    // The server closes the connection 200 ms after the 202, without a `Connection: close`
    // header, while the client waits out Retry-After (1 s): the poll goes out on a new
    // connection, not as a failed request and a retry.
    let server = Hostile::start(Arc::new(|line: &str| {
        if line.starts_with("PUT ") {
            let body =
                format!(r#"{{"operationId":"op-1","status":"assigning","x":"{CLOSE_LATER}"}}"#);
            let mut response = http(202, body.as_bytes());
            let at = response.windows(3).position(|w| w == b": 0").unwrap();
            response[at + 2] = b'1';
            response
        } else {
            http(200, ASSIGNED.as_bytes())
        }
    }))
    .await;
    let started = Instant::now();
    let registration = server
        .client(Duration::from_secs(5))
        .register()
        .await
        .unwrap();
    assert_eq!(registration.requests, 2, "no request failed");
    assert_eq!(server.requests.load(Ordering::SeqCst), 2);
    assert_eq!(server.connections.load(Ordering::SeqCst), 2);
    assert!(
        started.elapsed() < Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_carry_the_headers_and_body_dps_expects() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let requests = seen.clone();
    let server = Hostile::start(Arc::new(move |request: &str| {
        requests.lock().unwrap().push(request.to_owned());
        if request.starts_with("PUT ") {
            http(202, br#"{"operationId":"op-1","status":"assigning"}"#)
        } else {
            http(200, ASSIGNED.as_bytes())
        }
    }))
    .await;
    server
        .client(Duration::from_secs(5))
        .register()
        .await
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    let header = |request: &str, name: &str| {
        request
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
            .unwrap_or_else(|| panic!("no {name} in {request}"))
    };
    let (put, get) = (&seen[0], &seen[1]);
    assert_eq!(
        header(put, "host"),
        format!("localhost:{}", server.addr.port())
    );
    assert_eq!(
        header(put, "content-type"),
        "application/json; charset=utf-8"
    );
    assert_eq!(header(put, "accept"), "application/json");
    assert!(header(put, "user-agent").starts_with("hsm-provisioning/"));
    for request in [put, get] {
        let auth = header(request, "authorization");
        assert!(
            auth.starts_with(
                "SharedAccessSignature sr=0ne00000EMU%2fregistrations%2fhostile-dev&sig="
            ),
            "{auth}"
        );
        assert!(auth.ends_with("&skn=registration"), "{auth}");
    }
    assert!(
        put.ends_with(r#"{"registrationId":"hostile-dev"}"#),
        "{put}"
    );
}

/// What Azure's own mock DPS (iot-identity-service's `mock-iot-server`) does: the register reply
/// is only `{"operationId"}` (the spec's minimal 202), an operation answers once and is then
/// gone, and the assigned hub carries a port.
#[tokio::test(flavor = "multi_thread")]
async fn a_mock_dps_like_azures_registers() {
    let answered = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let once = answered.clone();
    let server = Hostile::start(Arc::new(move |request: &str| {
        if request.starts_with("PUT /0ne00000EMU/registrations/hostile-dev/register?") {
            return http(202, br#"{"operationId":"mock-op-1"}"#);
        }
        if !request.starts_with("GET /0ne00000EMU/registrations/hostile-dev/operations/mock-op-1?")
            || once.swap(true, Ordering::SeqCst)
        {
            return http(404, br#"{"message":"no such operation"}"#);
        }
        http(
            200,
            br#"{"operationId":"mock-op-1","status":"assigned","registrationState":{"registrationId":"hostile-dev","assignedHub":"localhost:40123","deviceId":"hostile-dev","status":"assigned"}}"#,
        )
    }))
    .await;
    let registration = server
        .client(Duration::from_secs(5))
        .register()
        .await
        .unwrap();
    assert_eq!(registration.assigned_hub, "localhost:40123");
    assert_eq!(registration.device_id, "hostile-dev");
    assert_eq!(registration.requests, 2, "register, then one poll");
    assert!(answered.load(Ordering::SeqCst));
    // A port that is not one is still refused.
    expect(
        with_poll(r#"{"operationId":"op-1","status":"assigned","registrationState":{"assignedHub":"localhost:99999","deviceId":"d"}}"#),
        |e| matches!(e, Error::MalformedResponse { .. }),
        "hub with a bad port",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_after_zero_is_floored_by_the_policy() {
    // Always "assigning, ask again at once".
    let server = Hostile::start(Arc::new(|_: &str| {
        http(202, br#"{"operationId":"op-1","status":"assigning"}"#)
    }))
    .await;
    let client =
        ProvisioningClient::builder(format!("localhost:{}", server.addr.port()), "0ne00000EMU")
            .trust_anchor(server.ca.cert().clone())
            .symmetric_key(symmetric_key("hostile-dev", DEVICE_KEY))
            .retry_policy(RetryPolicy {
                min_poll_interval: Duration::from_millis(200),
                ..fast_policy()
            })
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap();
    let error = client.register().await.unwrap_err();
    assert!(matches!(error, Error::Timeout { .. }), "{error:?}");
    // One register and at most one poll per 200 ms (without the floor: thousands).
    let requests = server.requests.load(Ordering::SeqCst);
    assert!((2..=6).contains(&requests), "{requests} requests in 1 s");
}

#[tokio::test(flavor = "multi_thread")]
async fn server_text_reaches_messages_with_control_characters_escaped() {
    let error = {
        let server = Hostile::start(Arc::new(|_: &str| {
            http(
                400,
                b"{\"errorCode\":400004,\"message\":\"\\u001b[31mred\\r\\nforged line\",\"trackingId\":\"\\u0007\"}",
            )
        }))
        .await;
        server
            .client(Duration::from_secs(5))
            .register()
            .await
            .unwrap_err()
    };
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    assert!(!text.chars().any(char::is_control), "{text:?}");
    assert!(text.contains("\\u{1b}[31mred\\r\\nforged line"), "{text}");
    // The data itself is kept as sent.
    let Error::Rejected { error } = &error else {
        panic!("{error:?}")
    };
    assert_eq!(
        error.message.as_deref(),
        Some("\u{1b}[31mred\r\nforged line")
    );
}

/// A TLS server that answers whatever it reads first with `answer`, then holds the connection;
/// its port, CA and a count of the connections it accepted.
async fn answers_with(answer: &'static [u8]) -> (u16, TestCa, Arc<AtomicU32>) {
    let ca = TestCa::new("not-mqtt CA");
    let server = ca.issue_server();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(server.chain.clone(), server.private_key())
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicU32::new(0));
    let accepted = connections.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            accepted.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buffer = [0u8; 1024];
                if tls.read(&mut buffer).await.is_ok() {
                    let _ = tls.write_all(answer).await;
                    let _ = tls.flush().await;
                }
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    (port, ca, connections)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_on_the_mqtt_port_that_does_not_speak_mqtt_is_named_so() {
    for (answer, says) in [
        // An MQTT PUBACK where the CONNACK belongs.
        (
            &[0x40, 0x02, 0x00, 0x01][..],
            "answered CONNECT with a PUBACK packet",
        ),
        // Packet type 0 is reserved in MQTT 3.1.1.
        (&[0x00, 0x00][..], "its first answer is not an MQTT packet"),
    ] {
        let (port, ca, connections) = answers_with(answer).await;
        let client = ProvisioningClient::builder(format!("localhost:{port}"), "0ne00000EMU")
            .trust_anchor(ca.cert().clone())
            .transport(provisioning::Transport::Mqtt)
            .mqtt_port(port)
            .symmetric_key(symmetric_key("hostile-dev", DEVICE_KEY))
            .retry_policy(fast_policy())
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let error = client.register().await.unwrap_err();
        assert!(matches!(error, Error::NotMqtt { .. }), "{error:?}");
        let text = error.to_string();
        assert!(
            text.starts_with("the server at the MQTT port does not speak MQTT: ")
                && text.contains(says),
            "{text}"
        );
        assert!(!text.contains("PubAck("), "no Debug names: {text}");
        assert_eq!(connections.load(Ordering::SeqCst), 1, "not retried");
    }
}

/// A SASL frame as fe2o3-amqp encodes it, with its length.
fn sasl_frame(frame: fe2o3_amqp::frames::sasl::Frame) -> Vec<u8> {
    use tokio_util::codec::Encoder as _;
    let mut body = bytes::BytesMut::new();
    fe2o3_amqp::frames::sasl::FrameCodec {}
        .encode(frame, &mut body)
        .unwrap();
    let mut out = u32::try_from(body.len() + 4)
        .unwrap()
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(&body);
    out
}

const SASL_HEADER: &[u8] = b"AMQP\x03\x01\x00\x00";

#[tokio::test(flavor = "multi_thread")]
async fn a_server_on_the_amqp_port_that_breaks_amqp_is_named_so() {
    use fe2o3_amqp::frames::sasl::Frame;
    use fe2o3_amqp::types::sasl::{SaslCode, SaslOutcome};
    let outcome_first = [
        SASL_HEADER,
        &sasl_frame(Frame::Outcome(SaslOutcome {
            code: SaslCode::Ok,
            additional_data: None,
        })),
    ]
    .concat();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec(),
            "the SASL protocol header",
        ),
        // A frame shorter than its own header.
        ([SASL_HEADER, &[0, 0, 0, 6, 2, 1][..]].concat(), "too short"),
        // A frame that claims 2 GiB.
        (
            [SASL_HEADER, &[0x7f, 0xff, 0xff, 0xff, 2, 1, 0, 0][..]].concat(),
            "a SASL frame",
        ),
        // An outcome before the mechanisms.
        (outcome_first, "before the mechanisms"),
        // A frame whose body is not a SASL performative.
        (
            [
                SASL_HEADER,
                &[0, 0, 0, 12, 2, 1, 0, 0, 0x00, 0x53, 0x10, 0x45][..],
            ]
            .concat(),
            "undecodable SASL frame",
        ),
    ];
    for (answer, says) in cases {
        let answer: &'static [u8] = Box::leak(answer.into_boxed_slice());
        let (port, ca, connections) = answers_with(answer).await;
        let started = Instant::now();
        let client = ProvisioningClient::builder(format!("localhost:{port}"), "0ne00000EMU")
            .trust_anchor(ca.cert().clone())
            .transport(provisioning::Transport::Amqp)
            .amqp_port(port)
            .symmetric_key(symmetric_key("hostile-dev", DEVICE_KEY))
            .retry_policy(fast_policy())
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let error = client.register().await.unwrap_err();
        assert!(matches!(error, Error::NotAmqp { .. }), "{says}: {error:?}");
        let text = error.to_string();
        assert!(
            text.starts_with("the server does not speak AMQP as DPS does: ") && text.contains(says),
            "{text}"
        );
        assert!(!error.is_transient());
        assert_eq!(connections.load(Ordering::SeqCst), 1, "{says}: not retried");
        assert!(started.elapsed() < Duration::from_secs(3), "{says}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_emulator_survives_hostile_amqp_clients() {
    use fe2o3_amqp::frames::sasl::Frame;
    use fe2o3_amqp::types::primitives::{Binary, Symbol};
    use fe2o3_amqp::types::sasl::{SaslInit, SaslResponse};
    let emulator = emulator()
        .limits(dps_emulator::Limits {
            read_timeout: Duration::from_secs(2),
            ..dps_emulator::Limits::default()
        })
        .enroll(Enrollment::symmetric_key(
            "amqp-survivor",
            key_pair("amqp-survivor", DEVICE_KEY),
        ))
        .started()
        .await;
    let port = emulator.amqp_addr().unwrap().port();
    let init = |mechanism: &str, response: &[u8]| {
        sasl_frame(Frame::Init(SaslInit {
            mechanism: Symbol::from(mechanism),
            initial_response: Some(Binary::from(response.to_vec())),
            hostname: None,
        }))
    };
    let hostile: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        // A frame shorter than its own header, after SASL and after AMQP headers.
        [SASL_HEADER, &[0, 0, 0, 6, 2, 1][..]].concat(),
        [b"AMQP\x00\x01\x00\x00", &[0, 0, 0, 5, 2][..]].concat(),
        // Frames that claim 2 GiB.
        [SASL_HEADER, &[0x7f, 0xff, 0xff, 0xff, 2, 1, 0, 0][..]].concat(),
        [
            b"AMQP\x00\x01\x00\x00",
            &[0x7f, 0xff, 0xff, 0xff, 2, 0, 0, 0][..],
        ]
        .concat(),
        // A response where the init belongs; an unoffered mechanism; TPM inits cut short.
        [
            SASL_HEADER,
            &sasl_frame(Frame::Response(SaslResponse {
                response: Binary::from(vec![0]),
            })),
        ]
        .concat(),
        [SASL_HEADER, &init("SCRAM-SHA-256", b"n,,n=x,r=y")].concat(),
        [SASL_HEADER, &init("TPM", &[0])].concat(),
        [SASL_HEADER, &init("TPM", b"\x00scope\x00")].concat(),
        [SASL_HEADER, &init("PLAIN", b"\x00only-a-name")].concat(),
        // The header, then silence.
        SASL_HEADER.to_vec(),
    ];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates({
            let mut roots = rustls::RootCertStore::empty();
            roots.add(emulator.ca_certificate().clone()).unwrap();
            roots
        })
        .with_no_client_auth(),
    ));
    for bytes in &hostile {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let mut tls = connector
            .connect("localhost".try_into().unwrap(), tcp)
            .await
            .unwrap();
        tls.write_all(bytes).await.unwrap();
        tls.flush().await.unwrap();
        // The emulator ends every one of them (within its 2 s read deadline, plus slack).
        tokio::time::timeout(Duration::from_secs(10), async {
            let mut buffer = [0u8; 4096];
            loop {
                match tls.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the emulator kept {bytes:?} open"));
    }
    // And still serves devices, over both AMQP transports.
    for transport in [
        provisioning::Transport::Amqp,
        provisioning::Transport::AmqpWs,
    ] {
        let registration = client(&emulator, transport)
            .symmetric_key(symmetric_key("amqp-survivor", DEVICE_KEY))
            .assigned()
            .await;
        assert_eq!(registration.device_id, "amqp-survivor");
    }
}
