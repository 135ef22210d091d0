//! The HTTPS endpoint against a raw test client over real TLS sockets: every credential check,
//! the operation lifecycle, CSR issuance, faults and hostile input.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{API, Https, b64, sas, sas_with};
use dps_emulator::{
    AllocationPolicy, Emulator, Enrollment, EnrollmentGroup, Fault, FaultKind, FaultTarget,
    KeyPair, Thumbprint,
};
use hsm_core::{Expiry, ResourceEncoding};
use hsm_testkit::pki::{TestCa, sha256_hex};
use serde_json::json;

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
const KEY2: &[u8] = b"fedcba9876543210fedcba9876543210";

fn keys(id: &str) -> KeyPair {
    KeyPair::from_base64(id, &b64(KEY), Some(&b64(KEY2))).unwrap()
}

async fn emulator(
    f: impl FnOnce(dps_emulator::EmulatorBuilder) -> dps_emulator::EmulatorBuilder,
) -> Emulator {
    f(Emulator::builder().retry_after(0)).start().await.unwrap()
}

#[tokio::test]
async fn symmetric_key_individual_assigned_with_either_key_and_encoding() {
    let emu = emulator(|b| {
        b.enroll(Enrollment::symmetric_key("dev-1", keys("dev-1")).device_id("device-one"))
    })
    .await;
    let mut c = Https::connect(&emu, None).await;
    let scope = emu.id_scope().to_owned();
    for (key, encoding) in [
        (KEY, ResourceEncoding::LowercasePercent),
        (KEY2, ResourceEncoding::Plain),
    ] {
        let token = sas_with(
            &scope,
            "dev-1",
            key,
            Expiry::In(Duration::from_secs(60)),
            encoding,
        );
        let first = c
            .register_raw(
                "dev-1",
                Some(&token),
                json!({"registrationId": "dev-1"}),
                API,
            )
            .await;
        assert_eq!(first.status, 202);
        assert_eq!(first.retry_after.as_deref(), Some("0"));
        assert_eq!(
            first.json()["status"],
            "assigning",
            "the Node SDK needs status on 202"
        );
        let done = c
            .register(
                "dev-1",
                Some(&token),
                json!({"registrationId": "dev-1"}),
                API,
            )
            .await;
        assert_eq!(done.status, 200);
        let state = &done.json()["registrationState"];
        assert_eq!(state["status"], "assigned");
        assert_eq!(state["assignedHub"], "emulated-hub.azure-devices.net");
        assert_eq!(state["deviceId"], "device-one");
        assert_eq!(state["substatus"], "initialAssignment");
        assert!(state["symmetricKey"].is_object());
    }
    assert_eq!(
        emu.registrations()[0].registrations,
        4,
        "two registrations per key"
    );
}

#[tokio::test]
async fn symmetric_key_refusals() {
    let emu = emulator(|b| b.enroll(Enrollment::symmetric_key("dev-1", keys("dev-1")))).await;
    let mut c = Https::connect(&emu, None).await;
    let scope = emu.id_scope().to_owned();
    let body = json!({"registrationId": "dev-1"});
    let cases = [
        ("wrong key", sas(&scope, "dev-1", b"wrong")),
        (
            "expired",
            sas_with(
                &scope,
                "dev-1",
                KEY,
                Expiry::At(1_000_000),
                ResourceEncoding::Plain,
            ),
        ),
        ("other registration's resource", sas(&scope, "dev-2", KEY)),
        ("not a SAS token", "Bearer abc".to_owned()),
    ];
    for (what, token) in cases {
        let r = c
            .register_raw("dev-1", Some(&token), body.clone(), API)
            .await;
        assert_eq!(r.status, 401, "{what}");
        assert_eq!(r.json()["errorCode"], 401002, "{what}");
        assert!(r.json()["trackingId"].is_string());
    }
    let r = c.register_raw("dev-1", None, body.clone(), API).await;
    assert_eq!(r.status, 401, "no credential at all");
    // A device that is not enrolled, with a well-formed token.
    let r = c
        .register_raw("dev-9", Some(&sas(&scope, "dev-9", KEY)), json!({}), API)
        .await;
    assert_eq!(r.status, 401);
    assert!(emu.registrations().is_empty());
}

#[tokio::test]
async fn symmetric_key_group_accepts_derived_keys_only() {
    let emu = emulator(|b| {
        b.enroll_group(
            EnrollmentGroup::symmetric_key("group-a", keys("group-a"))
                .iot_hubs(["hub-a.azure-devices.net"]),
        )
    })
    .await;
    let scope = emu.id_scope().to_owned();
    let mut c = Https::connect(&emu, None).await;
    let derived = common::hmac(KEY, b"sensor-7");
    let r = c
        .register(
            "sensor-7",
            Some(&sas(&scope, "sensor-7", &derived)),
            json!({}),
            API,
        )
        .await;
    assert_eq!(r.status, 200);
    let state = &r.json()["registrationState"];
    assert_eq!(state["assignedHub"], "hub-a.azure-devices.net");
    assert_eq!(state["symmetricKey"]["enrollmentGroupId"], "group-a");
    // The group key itself is not a device key; nor is another device's derived key.
    for key in [KEY.to_vec(), common::hmac(KEY, b"sensor-8").to_vec()] {
        let r = c
            .register_raw(
                "sensor-7",
                Some(&sas(&scope, "sensor-7", &key)),
                json!({}),
                API,
            )
            .await;
        assert_eq!(r.status, 401);
    }
}

#[tokio::test]
async fn x509_individual_by_certificate_and_thumbprint() {
    let ca = TestCa::new("Test Device CA");
    let dev = ca.issue_client("cert-dev", &rcgen::PKCS_ECDSA_P256_SHA256);
    let dev2 = ca.issue_client("thumb-dev", &rcgen::PKCS_ECDSA_P256_SHA256);
    let impostor = ca.issue_client("cert-dev", &rcgen::PKCS_ECDSA_P256_SHA256);
    let thumb = Thumbprint::from_hex("thumb-dev", &sha256_hex(&dev2.chain[0])).unwrap();
    let emu = emulator(|b| {
        b.enroll(Enrollment::x509_certificate(
            "cert-dev",
            dev.chain[0].clone(),
        ))
        .enroll(Enrollment::x509_thumbprint("thumb-dev", thumb))
    })
    .await;
    for (id, identity) in [("cert-dev", &dev), ("thumb-dev", &dev2)] {
        let mut c = Https::connect(&emu, Some(identity)).await;
        let r = c
            .register(id, None, json!({"registrationId": id}), API)
            .await;
        assert_eq!(r.status, 200, "{id}");
        assert!(r.json()["registrationState"]["x509"].is_object());
    }
    // Same CN, same CA, but not the enrolled certificate.
    let mut c = Https::connect(&emu, Some(&impostor)).await;
    assert_eq!(
        c.register_raw("cert-dev", None, json!({}), API)
            .await
            .status,
        401
    );
    // The certificate's CN is not the registration id in the URL.
    let mut c = Https::connect(&emu, Some(&dev)).await;
    assert_eq!(
        c.register_raw("thumb-dev", None, json!({}), API)
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn x509_group_verifies_the_chain_to_the_enrolled_ca() {
    let ca = TestCa::new("Group CA");
    let rogue = TestCa::new("Group CA");
    let emu = emulator(|b| {
        b.enroll_group(EnrollmentGroup::x509_ca("ca-group", ca.cert().clone()))
            .iot_hubs([
                "h1.azure-devices.net",
                "h2.azure-devices.net",
                "h3.azure-devices.net",
            ])
            .allocation(AllocationPolicy::Hashed)
    })
    .await;
    let mut hubs = std::collections::BTreeSet::new();
    for i in 0..12 {
        let id = format!("group-dev-{i}");
        let dev = ca.issue_client(&id, &rcgen::PKCS_ECDSA_P256_SHA256);
        let mut c = Https::connect(&emu, Some(&dev)).await;
        let r = c.register(&id, None, json!({}), API).await;
        assert_eq!(r.status, 200);
        let state = r.json()["registrationState"].clone();
        assert_eq!(state["x509"]["enrollmentGroupId"], "ca-group");
        hubs.insert(state["assignedHub"].as_str().unwrap().to_owned());
    }
    assert!(
        hubs.len() >= 2,
        "hashed allocation spreads devices: {hubs:?}"
    );
    let dev = rogue.issue_client("group-dev-0", &rcgen::PKCS_ECDSA_P256_SHA256);
    let mut c = Https::connect(&emu, Some(&dev)).await;
    assert_eq!(
        c.register_raw("group-dev-0", None, json!({}), API)
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn disabled_enrollment_reports_disabled() {
    let emu =
        emulator(|b| b.enroll(Enrollment::symmetric_key("dev-1", keys("dev-1")).disabled())).await;
    let mut c = Https::connect(&emu, None).await;
    let token = sas(emu.id_scope(), "dev-1", KEY);
    let r = c.register("dev-1", Some(&token), json!({}), API).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "disabled");
    assert_eq!(r.json()["registrationState"]["status"], "disabled");
    emu.with_enrollments(|e| assert!(e.set_enabled("dev-1", true)));
    let r = c.register("dev-1", Some(&token), json!({}), API).await;
    assert_eq!(r.json()["status"], "assigned");
}

#[tokio::test]
async fn payload_echo_and_fixed_payload() {
    let emu = emulator(|b| {
        b.enroll(Enrollment::symmetric_key("echo", keys("echo")))
            .enroll(
                Enrollment::symmetric_key("fixed", keys("fixed")).return_payload(json!({"x": 1})),
            )
    })
    .await;
    let mut c = Https::connect(&emu, None).await;
    let body = json!({"registrationId": "echo", "payload": {"model": "m1"}});
    let r = c
        .register("echo", Some(&sas(emu.id_scope(), "echo", KEY)), body, API)
        .await;
    assert_eq!(
        r.json()["registrationState"]["payload"],
        json!({"model": "m1"})
    );
    let body = json!({"payload": {"model": "m1"}});
    let r = c
        .register("fixed", Some(&sas(emu.id_scope(), "fixed", KEY)), body, API)
        .await;
    assert_eq!(r.json()["registrationState"]["payload"], json!({"x": 1}));
}

#[tokio::test]
async fn reregistration_keeps_assignment_and_state_file_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("registrations.json");
    let hubs = ["h1.azure-devices.net", "h2.azure-devices.net"];
    let emu = emulator(|b| {
        b.iot_hubs(hubs)
            .state_file(&state)
            .enroll(Enrollment::symmetric_key("dev-1", keys("dev-1")))
    })
    .await;
    let token = sas(emu.id_scope(), "dev-1", KEY);
    let mut c = Https::connect(&emu, None).await;
    let first = c
        .register("dev-1", Some(&token), json!({}), API)
        .await
        .json();
    let ca_cert = emu.ca_pem().to_owned();
    let ca_key = emu.ca_key_pem();
    emu.shutdown().await;
    assert!(state.exists());
    let emu = emulator(|b| {
        b.iot_hubs(hubs)
            .state_file(&state)
            .ca_pem(ca_cert, ca_key)
            .enroll(Enrollment::symmetric_key("dev-1", keys("dev-1")))
    })
    .await;
    let mut c = Https::connect(&emu, None).await;
    let second = c
        .register("dev-1", Some(&token), json!({}), API)
        .await
        .json();
    let (a, b) = (&first["registrationState"], &second["registrationState"]);
    assert_eq!(a["assignedHub"], b["assignedHub"]);
    assert_eq!(a["createdDateTimeUtc"], b["createdDateTimeUtc"]);
    assert_ne!(a["etag"], b["etag"]);
    assert_eq!(emu.registrations()[0].registrations, 2);
    // The status lookup sees the same record.
    let path = format!("/{}/registrations/dev-1?api-version={API}", emu.id_scope());
    let r = c
        .send("POST", &path, Some(&token), Some(b"{}".to_vec()))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["assignedHub"], a["assignedHub"]);
}

#[tokio::test]
async fn csr_issuance_with_the_preview_api() {
    let emu = emulator(|b| b.enroll(Enrollment::symmetric_key("csr-dev", keys("csr-dev")))).await;
    let token = sas(emu.id_scope(), "csr-dev", KEY);
    let mut c = Https::connect(&emu, None).await;
    let csr_for = |cn: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        (b64(params.serialize_request(&key).unwrap().der()), key)
    };
    let (csr, key) = csr_for("csr-dev");
    let preview = "2025-07-01-preview";
    let r = c
        .register(
            "csr-dev",
            Some(&token),
            json!({"registrationId": "csr-dev", "csr": csr}),
            preview,
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let chain = r.json()["registrationState"]["issuedCertificateChain"].clone();
    let chain: Vec<Vec<u8>> = chain
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(c.as_str().unwrap())
                .unwrap()
        })
        .collect();
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[1], emu.ca_certificate().as_ref());
    // The issued leaf carries the CSR's key and verifies to the emulator's CA (webpki).
    let leaf = rustls::pki_types::CertificateDer::from(chain[0].clone());
    let anchor = webpki::anchor_from_trusted_cert(emu.ca_certificate()).unwrap();
    webpki::EndEntityCert::try_from(&leaf)
        .unwrap()
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &[anchor],
            &[],
            rustls::pki_types::UnixTime::now(),
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .unwrap();
    use rcgen::PublicKeyData as _;
    assert!(
        chain[0]
            .windows(key.der_bytes().len())
            .any(|w| w == key.der_bytes())
    );
    // CN must be the registration id; the stable API has no CSR; the CSR must be base64 PKCS#10.
    let (wrong, _) = csr_for("someone-else");
    let r = c
        .register_raw("csr-dev", Some(&token), json!({"csr": wrong}), preview)
        .await;
    assert_eq!(r.status, 400);
    let r = c
        .register_raw("csr-dev", Some(&token), json!({"csr": csr}), API)
        .await;
    assert_eq!(r.status, 400);
    let r = c
        .register_raw(
            "csr-dev",
            Some(&token),
            json!({"csr": b64(b"junk")}),
            preview,
        )
        .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn faults_throttle_status_malformed_drop_delay() {
    let emu = emulator(|b| b.enroll(Enrollment::symmetric_key("dev-1", keys("dev-1")))).await;
    let token = sas(emu.id_scope(), "dev-1", KEY);
    let body = json!({"registrationId": "dev-1"});
    let mut c = Https::connect(&emu, None).await;

    emu.inject(Fault::new(FaultKind::Throttle { retry_after: 3 }, 2));
    for _ in 0..2 {
        let r = c
            .register_raw("dev-1", Some(&token), body.clone(), API)
            .await;
        assert_eq!(r.status, 429);
        assert_eq!(r.retry_after.as_deref(), Some("3"));
        assert_eq!(r.json()["errorCode"], 429001);
    }
    assert_eq!(
        c.register_raw("dev-1", Some(&token), body.clone(), API)
            .await
            .status,
        202
    );

    for status in [500, 503] {
        emu.inject(Fault::new(FaultKind::Status { status }, 1).on(FaultTarget::Poll));
        let first = c
            .register_raw("dev-1", Some(&token), body.clone(), API)
            .await;
        let op = first.json()["operationId"].as_str().unwrap().to_owned();
        assert_eq!(c.poll("dev-1", &op, Some(&token), API).await.status, status);
        assert_eq!(c.poll("dev-1", &op, Some(&token), API).await.status, 200);
    }

    emu.inject(Fault::new(FaultKind::MalformedBody, 1));
    let r = c
        .register_raw("dev-1", Some(&token), body.clone(), API)
        .await;
    assert!(serde_json::from_slice::<serde_json::Value>(&r.body).is_err());

    emu.inject(Fault::new(FaultKind::Delay { delay_ms: 300 }, 1));
    let start = std::time::Instant::now();
    assert_eq!(
        c.register_raw("dev-1", Some(&token), body.clone(), API)
            .await
            .status,
        202
    );
    assert!(start.elapsed() >= Duration::from_millis(300));

    emu.inject(Fault::new(FaultKind::Drop, 1).for_registration("dev-1"));
    let path = format!(
        "/{}/registrations/dev-1/register?api-version={API}",
        emu.id_scope()
    );
    let r = c
        .send("PUT", &path, Some(&token), Some(b"{}".to_vec()))
        .await;
    assert!(
        r.is_err(),
        "the connection is dropped without an answer: {r:?}"
    );
    let mut c = Https::connect(&emu, None).await;
    assert_eq!(
        c.register("dev-1", Some(&token), body, API).await.status,
        200
    );
}

#[tokio::test]
async fn endless_assigning_is_possible() {
    let emu = emulator(|b| {
        b.assigning_polls(3)
            .enroll(Enrollment::symmetric_key("dev-1", keys("dev-1")))
    })
    .await;
    let token = sas(emu.id_scope(), "dev-1", KEY);
    let mut c = Https::connect(&emu, None).await;
    let first = c.register_raw("dev-1", Some(&token), json!({}), API).await;
    let op = first.json()["operationId"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        let r = c.poll("dev-1", &op, Some(&token), API).await;
        assert_eq!(
            (r.status, r.json()["status"].as_str()),
            (202, Some("assigning"))
        );
    }
    assert_eq!(c.poll("dev-1", &op, Some(&token), API).await.status, 200);
}

#[tokio::test]
async fn hostile_requests_get_the_right_status() {
    let emu = emulator(|b| b.enroll(Enrollment::symmetric_key("dev-1", keys("dev-1")))).await;
    let scope = emu.id_scope().to_owned();
    let token = sas(&scope, "dev-1", KEY);
    let mut c = Https::connect(&emu, None).await;
    let reg = format!("/{scope}/registrations/dev-1/register?api-version={API}");

    let big = vec![b' '; dps_emulator::MAX_BODY + 1];
    assert_eq!(
        c.send("PUT", &reg, Some(&token), Some(big))
            .await
            .unwrap()
            .status,
        413
    );
    for body in [&b"{not json"[..], b"\xff\xfe\x00", b"[]", b"{\"tpm\": 5}"] {
        let r = c
            .send("PUT", &reg, Some(&token), Some(body.to_vec()))
            .await
            .unwrap();
        assert_eq!(r.status, 400, "{body:?}");
        assert_eq!(r.json()["errorCode"], 400004);
    }
    let mismatch = serde_json::to_vec(&json!({"registrationId": "dev-2"})).unwrap();
    assert_eq!(
        c.send("PUT", &reg, Some(&token), Some(mismatch))
            .await
            .unwrap()
            .status,
        400
    );
    let cases = [
        (format!("/{scope}/registrations/dev-1/register"), 400),
        (
            format!("/{scope}/registrations/dev-1/register?api-version=1999-01-01"),
            400,
        ),
        (
            format!("/{scope}/registrations/bad%20id!/register?api-version={API}"),
            400,
        ),
        (
            format!("/0neOTHER/registrations/dev-1/register?api-version={API}"),
            404,
        ),
        (
            format!("/{scope}/nothing/dev-1/register?api-version={API}"),
            404,
        ),
    ];
    for (path, status) in cases {
        let r = c
            .send("PUT", &path, Some(&token), Some(b"{}".to_vec()))
            .await
            .unwrap();
        assert_eq!(r.status, status, "{path}");
    }
    let r = c.send("DELETE", &reg, Some(&token), None).await.unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(
        c.poll("dev-1", "5.unknown", Some(&token), API).await.status,
        404
    );
    // Another device cannot read this device's operation.
    let first = c.register_raw("dev-1", Some(&token), json!({}), API).await;
    let op = first.json()["operationId"].as_str().unwrap().to_owned();
    assert_eq!(c.poll("dev-1", &op, None, API).await.status, 401);
    // Every request after all this still works.
    assert_eq!(c.poll("dev-1", &op, Some(&token), API).await.status, 200);
}

#[tokio::test]
async fn slow_clients_are_cut_off_and_connections_are_limited() {
    let emu = emulator(|b| {
        b.limits(dps_emulator::Limits {
            max_connections: 2,
            read_timeout: Duration::from_millis(300),
            ..dps_emulator::Limits::default()
        })
    })
    .await;
    // A TCP client that never starts TLS is closed after the read timeout.
    let mut idle = tokio::net::TcpStream::connect(emu.https_addr())
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    use tokio::io::AsyncReadExt as _;
    let n = tokio::time::timeout(Duration::from_secs(10), idle.read(&mut buf))
        .await
        .expect("the emulator closes the idle connection")
        .unwrap_or(0);
    assert_eq!(n, 0);
    // With two connections open, a third is closed at once.
    let _a = Https::connect(&emu, None).await;
    let _b = Https::connect(&emu, None).await;
    let tcp = tokio::net::TcpStream::connect(emu.https_addr())
        .await
        .unwrap();
    let config = common::tls_config(&emu, None, b"http/1.1");
    let third = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        ),
    )
    .await
    .unwrap();
    assert!(third.is_err(), "the third connection is refused");
}
