//! Symmetric-key attestation (hsm-symmkey) against the emulator, over HTTPS and MQTT.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use dps_emulator::{Enrollment, EnrollmentGroup};
use hsm_core::{Expiry, RegistrationId, SecretString};
use hsm_symmkey::SymmetricKey;
use provisioning::{Error, HubCredentials, RegistrationStatus, Transport};

#[tokio::test(flavor = "multi_thread")]
async fn individual_enrollment_is_assigned_over_every_transport() {
    let emulator = emulator()
        .enroll(
            Enrollment::symmetric_key("sym-dev-1", key_pair("sym-dev-1", DEVICE_KEY))
                .device_id("device-one"),
        )
        .started()
        .await;
    for transport in TRANSPORTS {
        let registration = client(&emulator, transport)
            .symmetric_key(symmetric_key("sym-dev-1", DEVICE_KEY))
            .assigned()
            .await;
        assert_eq!(registration.status, RegistrationStatus::Assigned);
        assert_eq!(registration.assigned_hub, "emulated-hub.azure-devices.net");
        assert_eq!(registration.device_id, "device-one");
        assert_eq!(registration.registration_id.as_str(), "sym-dev-1");
        assert!(registration.substatus.is_some());
        let HubCredentials::Sas(signer) = &registration.credentials else {
            panic!("{:?}", registration.credentials)
        };
        assert_eq!(
            signer.resource(),
            "emulated-hub.azure-devices.net/devices/device-one"
        );
        let token = signer.token_blocking(Expiry::At(1_700_000_000)).unwrap();
        assert!(token.expose().starts_with(
            "SharedAccessSignature sr=emulated-hub.azure-devices.net%2fdevices%2fdevice-one&sig="
        ));
        let async_token = signer.token(Duration::from_secs(60)).await.unwrap();
        assert!(async_token.expiry() > 1_700_000_000);
        proves_on_hub(&emulator, &registration).await;
    }
    assert_eq!(
        emulator.registrations()[0].registrations as usize,
        TRANSPORTS.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn group_enrollment_with_derived_keys_over_every_transport() {
    let emulator = emulator()
        .enroll_group(EnrollmentGroup::symmetric_key(
            "sym-group",
            key_pair("sym-group", GROUP_KEY),
        ))
        .started()
        .await;
    for (transport, id) in TRANSPORTS
        .into_iter()
        .zip(["sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6", "group-dev-2"])
    {
        let device = SymmetricKey::from_group_key(
            RegistrationId::new(id).unwrap(),
            &SecretString::from(GROUP_KEY),
        )
        .unwrap();
        let registration = client(&emulator, transport)
            .symmetric_key(std::sync::Arc::new(device))
            .payload(serde_json::json!({"model": "x1", "n": [1, 2]}))
            .assigned()
            .await;
        assert_eq!(registration.device_id, id);
        assert_eq!(
            registration.enrollment_group_id.as_deref(),
            Some("sym-group")
        );
        proves_on_hub(&emulator, &registration).await;
        // The emulator echoes the payload, as a custom allocation function that returns it would.
        assert_eq!(
            registration.payload,
            Some(serde_json::json!({"model": "x1", "n": [1, 2]}))
        );
    }
    assert_eq!(emulator.registrations().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_key_is_unauthorized_at_once_without_retries() {
    let emulator = emulator()
        .enroll(Enrollment::symmetric_key(
            "sym-dev-2",
            key_pair("sym-dev-2", DEVICE_KEY),
        ))
        .started()
        .await;
    for transport in TRANSPORTS {
        let counter = Counter::default();
        let client = client(&emulator, transport)
            .symmetric_key(symmetric_key("sym-dev-2", WRONG_KEY))
            .build()
            .unwrap();
        let started = Instant::now();
        let error = counter.wrap(client.register()).await.unwrap_err();
        assert!(
            matches!(&error, Error::Unauthorized { error } if error.status == 401),
            "{transport:?}: {error:?}"
        );
        assert!(!error.is_transient());
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            counter.get(),
            1,
            "{transport:?}: one request, no retry loop"
        );
    }
    // Unknown device (no enrollment at all): also unauthorized.
    let error = client(&emulator, provisioning::Transport::Https)
        .symmetric_key(symmetric_key("nobody", DEVICE_KEY))
        .refused()
        .await;
    assert!(matches!(error, Error::Unauthorized { .. }), "{error:?}");
    assert!(emulator.registrations().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn disabled_enrollment_is_a_typed_failure() {
    let emulator = emulator()
        .enroll(Enrollment::symmetric_key("sym-off", key_pair("sym-off", DEVICE_KEY)).disabled())
        .started()
        .await;
    for transport in TRANSPORTS {
        let error = client(&emulator, transport)
            .symmetric_key(symmetric_key("sym-off", DEVICE_KEY))
            .refused()
            .await;
        match error {
            Error::Failed {
                status: RegistrationStatus::Disabled,
                error_code: Some(401002),
                message: Some(_),
            } => {}
            other => panic!("{transport:?}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_scope_is_rejected_and_bad_configuration_is_refused() {
    let emulator = emulator()
        .enroll(Enrollment::symmetric_key(
            "sym-dev-3",
            key_pair("sym-dev-3", DEVICE_KEY),
        ))
        .started()
        .await;
    let error =
        provisioning::ProvisioningClient::builder(emulator.global_endpoint(), "0ne0000FFFF")
            .trust_anchor(emulator.ca_certificate().clone())
            .symmetric_key(symmetric_key("sym-dev-3", DEVICE_KEY))
            .refused()
            .await;
    assert!(
        matches!(&error, Error::Rejected { error } if error.status == 404),
        "{error:?}"
    );
    // An API version the service does not know: 400, not retried.
    let error = client(&emulator, provisioning::Transport::Https)
        .api_version("1999-01-01")
        .symmetric_key(symmetric_key("sym-dev-3", DEVICE_KEY))
        .refused()
        .await;
    assert!(
        matches!(&error, Error::Rejected { error } if error.status == 400),
        "{error:?}"
    );
    let builder = || provisioning::ProvisioningClient::builder("localhost:1", "scope");
    for bad in [
        builder().build().unwrap_err(),
        builder()
            .symmetric_key(symmetric_key("a", DEVICE_KEY))
            .symmetric_key(symmetric_key("b", DEVICE_KEY))
            .build()
            .unwrap_err(),
        provisioning::ProvisioningClient::builder("bad host/", "scope")
            .symmetric_key(symmetric_key("a", DEVICE_KEY))
            .build()
            .unwrap_err(),
        provisioning::ProvisioningClient::builder("localhost", "bad/scope")
            .symmetric_key(symmetric_key("a", DEVICE_KEY))
            .build()
            .unwrap_err(),
        builder()
            .symmetric_key(symmetric_key("a", DEVICE_KEY))
            .api_version("2021-06-01&x=y")
            .build()
            .unwrap_err(),
        builder()
            .symmetric_key(symmetric_key("a", DEVICE_KEY))
            .timeout(Duration::ZERO)
            .build()
            .unwrap_err(),
    ] {
        assert!(matches!(bad, Error::Config { .. }), "{bad:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_service_fails_with_io_after_retries() {
    // A port nobody listens on: connection refused, retried, then the I/O error.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let counter = Counter::default();
    let client = provisioning::ProvisioningClient::builder(format!("127.0.0.1:{port}"), "scope")
        .trust_anchor(hsm_testkit::pki::TestCa::new("unused").cert().clone())
        .retry_policy(provisioning::RetryPolicy {
            max_retries: 2,
            ..fast_policy()
        })
        .symmetric_key(symmetric_key("sym-dev-4", DEVICE_KEY))
        .build()
        .unwrap();
    let error = counter.wrap(client.register()).await.unwrap_err();
    assert!(matches!(error, Error::Io { .. }), "{error:?}");
    assert!(error.is_transient());
    assert_eq!(counter.get(), 3);
}

#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tracing_reports_each_step_without_secrets() {
    use tracing::instrument::WithSubscriber as _;
    let emulator = emulator()
        .enroll(Enrollment::symmetric_key(
            "sym-traced",
            key_pair("sym-traced", DEVICE_KEY),
        ))
        .started()
        .await;
    emulator.inject(dps_emulator::Fault::new(
        dps_emulator::FaultKind::Status { status: 503 },
        1,
    ));
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let dispatch = tracing::Dispatch::new(subscriber);
    for transport in TRANSPORTS {
        let registration = client(&emulator, transport)
            .symmetric_key(symmetric_key("sym-traced", DEVICE_KEY))
            .build()
            .unwrap()
            .register()
            .with_subscriber(dispatch.clone())
            .await
            .unwrap();
        let HubCredentials::Sas(signer) = registration.credentials else {
            panic!()
        };
        let token = signer.token(Duration::from_secs(60)).await.unwrap();
        assert!(!format!("{signer:?} {token:?}").contains("sig="));
    }
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    for step in [
        "register",
        "connect",
        "poll",
        "retrying",
        "assigned",
        "dps response",
    ] {
        assert!(text.contains(step), "no {step:?} event in:\n{text}");
    }
    for secret in [
        "sig=",
        "SharedAccessSignature",
        DEVICE_KEY,
        &DEVICE_KEY[..12],
    ] {
        assert!(!text.contains(secret), "{secret:?} logged:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unsupported_api_version_is_reported_as_such_over_every_transport() {
    let emulator = emulator()
        .enroll(Enrollment::symmetric_key(
            "sym-api",
            key_pair("sym-api", DEVICE_KEY),
        ))
        .started()
        .await;
    for transport in TRANSPORTS {
        let error = client(&emulator, transport)
            .symmetric_key(symmetric_key("sym-api", DEVICE_KEY))
            .api_version("1999-01-01")
            .refused()
            .await;
        let Error::Rejected { error: service } = &error else {
            panic!("{transport:?}: refused credentials are not the cause: {error:?}")
        };
        let message = service.message.as_deref().unwrap_or_default();
        match transport {
            // AMQP's links carry the API version; DPS answers the register request.
            Transport::Https | Transport::Amqp | Transport::AmqpWs => {
                assert!(
                    message.contains("api-version '1999-01-01' is not supported"),
                    "{message}"
                );
            }
            _ => assert!(
                message.contains("CONNACK 4") && message.contains("API version"),
                "{message}"
            ),
        }
    }
}
