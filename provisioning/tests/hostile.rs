//! Hostile servers: a hand-written HTTPS server answering with huge bodies, invalid JSON,
//! missing fields, wrong operation and registration ids, a hub name that is not a host name, or
//! nothing at all; and the emulator assigning forever. Every case ends in a typed error within
//! the deadline.
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

/// A TLS server that answers each HTTP/1.1 request with the bytes `script` returns for its
/// request line.
struct Hostile {
    addr: SocketAddr,
    ca: TestCa,
    requests: Arc<AtomicU32>,
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
        let counter = requests.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
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
                        buffer.drain(..head_end + length);
                        counter.fetch_add(1, Ordering::SeqCst);
                        let line = head.lines().next().unwrap_or_default().to_owned();
                        let response = script(&line);
                        if response.is_empty() {
                            // Never answer.
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                        }
                        if tls.write_all(&response).await.is_err() || tls.flush().await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { addr, ca, requests }
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
    assert_eq!(n, 3, "1 + 2 retries");
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
async fn invalid_json_and_missing_fields_are_malformed() {
    let malformed = |e: &Error| matches!(e, Error::MalformedResponse { .. });
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
        Arc::new(|_: &str| http(202, br#"{"operationId":"x"}"#)),
        malformed,
        "no status",
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
        .start()
        .await
        .unwrap();
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
