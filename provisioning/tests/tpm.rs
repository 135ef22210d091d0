//! TPM attestation: hsm-tpm on swtpm against the emulator over HTTPS (EK/SRK registration, the
//! 401 challenge, activation in the TPM, SAS signed in the TPM, the hub key imported on
//! assignment) and over AMQP and AMQP over WebSockets (the same, the challenge carried by SASL
//! `TPM` in segments), and the typed refusal of TPM over MQTT.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use dps_emulator::Enrollment;
use hsm_core::{Expiry, RegistrationId, TpmAttestation};
use hsm_testkit::swtpm::Swtpm;
use hsm_tpm::{Tpm, TpmIdentity};
use provisioning::{Error, HubCredentials, RegistrationStatus, Transport};

fn identity(swtpm: &Swtpm) -> Arc<TpmIdentity> {
    let tpm = Tpm::open(swtpm.tcti().parse().unwrap()).unwrap();
    Arc::new(TpmIdentity::open(&tpm).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn tpm_on_swtpm_registers_over_https_and_amqp_and_imports_the_hub_key() {
    let swtpm = Swtpm::start();
    let device = identity(&swtpm);
    let id = device.registration_id().clone();
    let emulator = emulator()
        .enroll(
            Enrollment::tpm(id.as_str(), device.endorsement_key().to_vec()).device_id("tpm-device"),
        )
        .started()
        .await;
    let transports = [Transport::Https, Transport::Amqp, Transport::AmqpWs];
    for (transport, round) in transports.into_iter().flat_map(|t| [(t, 0), (t, 1)]) {
        let counter = Counter::default();
        let client = client(&emulator, transport)
            .tpm(device.clone())
            .build()
            .unwrap();
        let requests_before = emulator.requests();
        let registration = counter
            .wrap(client.register())
            .await
            .unwrap_or_else(|e| panic!("{transport:?} round {round}: {e:?}"));
        assert_eq!(registration.status, RegistrationStatus::Assigned);
        assert_eq!(registration.registration_id, id);
        assert_eq!(registration.device_id, "tpm-device");
        // HTTPS: register (401 challenge), register with the TPM's SAS (202), poll (200).
        // AMQP: the challenge is answered inside SASL (the service sees the challenge and
        // the token as two requests), then register (202) and poll (200).
        let (client_requests, service_requests) = if transport == Transport::Https {
            (3, 3u64)
        } else {
            (2, 4)
        };
        assert_eq!(registration.requests, client_requests, "{transport:?}");
        assert_eq!(counter.get(), client_requests, "{transport:?}");
        assert_eq!(
            emulator.requests() - requests_before,
            service_requests,
            "{transport:?}"
        );
        let blob = registration.tpm_authentication_key.as_ref().unwrap();
        assert!(tpm_wire::ActivationBlob::parse(blob).is_ok());
        let HubCredentials::Sas(signer) = &registration.credentials else {
            panic!("{:?}", registration.credentials)
        };
        assert_eq!(
            signer.resource(),
            "emulated-hub.azure-devices.net/devices/tpm-device"
        );
        // The hub token is signed in the TPM with the imported hub key.
        let token = signer.token(Duration::from_secs(600)).await.unwrap();
        let to_sign = format!(
            "{}\n{}",
            signer.resource().replace('/', "%2f"),
            token.expiry()
        );
        let mac = device.sign_with_identity(to_sign.as_bytes()).unwrap();
        use base64::Engine as _;
        let sig = base64::engine::general_purpose::STANDARD.encode(mac);
        assert!(
            token.expose().contains(
                &sig.replace('+', "%2B")
                    .replace('/', "%2F")
                    .replace('=', "%3D")
            ),
            "{}",
            token.expose()
        );
        let blocking = signer.token_blocking(Expiry::At(token.expiry())).unwrap();
        assert_eq!(blocking.expose(), token.expose());
        // The hub takes the TPM-signed token: the key it sent in this round's activation
        // blob is the one in the TPM now.
        proves_on_hub(&emulator, &registration).await;
    }
    assert_eq!(emulator.registrations()[0].attestation.as_str(), "tpm");
    assert_eq!(emulator.registrations()[0].registrations, 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn unenrolled_tpm_is_unauthorized_at_once() {
    let swtpm = Swtpm::start();
    let device = identity(&swtpm);
    // Enrolled under its registration id, but with another TPM's EK.
    let mut other_ek = device.endorsement_key().to_vec();
    let last = other_ek.len() - 1;
    other_ek[last] ^= 1;
    let emulator = emulator()
        .enroll(Enrollment::tpm(device.registration_id().as_str(), other_ek))
        .started()
        .await;
    for transport in [Transport::Https, Transport::Amqp, Transport::AmqpWs] {
        let counter = Counter::default();
        let started = Instant::now();
        let error = counter
            .wrap(
                client(&emulator, transport)
                    .tpm(device.clone())
                    .build()
                    .unwrap()
                    .register(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(error, Error::Unauthorized { .. }),
            "{transport:?}: {error:?}"
        );
        assert_eq!(counter.get(), 1, "{transport:?}");
        assert!(started.elapsed() < Duration::from_secs(2), "{transport:?}");
    }
    assert!(emulator.registrations().is_empty());
}

/// A TPM that must never be asked anything.
#[derive(Debug)]
struct Untouchable;

impl TpmAttestation for Untouchable {
    fn registration_id(&self) -> Result<RegistrationId, hsm_core::Error> {
        panic!("TPM over MQTT must fail before the driver is used")
    }
    fn endorsement_key(&self) -> Result<Vec<u8>, hsm_core::Error> {
        panic!("not reached")
    }
    fn storage_root_key(&self) -> Result<Vec<u8>, hsm_core::Error> {
        panic!("not reached")
    }
    fn activate_identity_key(&self, _: &[u8]) -> Result<(), hsm_core::Error> {
        panic!("not reached")
    }
    fn sign_with_identity(&self, _: &[u8]) -> Result<[u8; 32], hsm_core::Error> {
        panic!("not reached")
    }
}

#[test]
fn tpm_over_mqtt_is_refused_with_a_typed_error() {
    let error = provisioning::ProvisioningClient::builder("localhost", "0ne00000EMU")
        .trust_anchor(hsm_testkit::pki::TestCa::new("x").cert().clone())
        .transport(Transport::Mqtt)
        .tpm(Arc::new(Untouchable))
        .build()
        .unwrap_err();
    assert!(
        matches!(error, Error::UnsupportedOverMqtt { attestation: "TPM" }),
        "{error:?}"
    );
    assert!(error.to_string().contains("HTTPS"));
}
