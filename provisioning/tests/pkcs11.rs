//! hsm-pkcs11 on SoftHSM2 against the emulator, over HTTPS and MQTT: an X.509 key made on the
//! token (certificate stored on the token), an HMAC key on the token for symmetric-key
//! attestation, and a CSR signed on the token. Each test runs in its own process with its own
//! token store (`SoftHsm::isolated`: SoftHSM reads `SOFTHSM2_CONF` once per process).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::*;
use der::Decode as _;
use dps_emulator::Enrollment;
use hsm_core::{KeyHandle, RegistrationId, SecretBytes};
use hsm_pkcs11::{KeySpec, Pkcs11HmacKey, Pkcs11IdentityBuilder, Pkcs11Uri, Token};
use hsm_testkit::softhsm::SoftHsm;
use provisioning::{HubCredentials, RegistrationStatus};

fn uri(text: &str) -> Pkcs11Uri {
    text.parse().unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn x509_key_on_softhsm_over_every_transport() {
    SoftHsm::isolated(|softhsm| {
        softhsm.init_token("prov");
        let key_uri = uri(&softhsm.uri("prov", "device-key"));
        let token = Token::open(&key_uri).unwrap();
        let key = Arc::new(
            token
                .generate_key_pair(&key_uri, KeySpec::EcdsaP256)
                .unwrap(),
        );
        let cert = hsm_pkcs11::self_signed_certificate(&key, "p11-x509-dev").unwrap();
        token.store_certificate(&key_uri, &cert).unwrap();
        let device = Arc::new(Pkcs11IdentityBuilder::new(key_uri).build().unwrap());
        assert_eq!(device.registration_id().as_str(), "p11-x509-dev");
        runtime().block_on(async {
            let emulator = emulator()
                .enroll(Enrollment::x509_certificate("p11-x509-dev", cert.clone()))
                .started()
                .await;
            for transport in TRANSPORTS {
                let registration = client(&emulator, transport)
                    .x509(device.clone())
                    .assigned()
                    .await;
                assert_eq!(registration.status, RegistrationStatus::Assigned);
                assert_eq!(registration.device_id, "p11-x509-dev");
                assert!(matches!(registration.credentials, HubCredentials::X509(_)));
                // TLS client authentication at the hub signs on the token.
                proves_on_hub(&emulator, &registration).await;
            }
        });
    });
}

#[test]
fn hmac_key_on_softhsm_and_csr_signed_on_the_token() {
    SoftHsm::isolated(|softhsm| {
        softhsm.init_token("prov");
        let hmac_uri = uri(&softhsm.uri("prov", "sas-key"));
        let token = Token::open(&hmac_uri).unwrap();
        let device_key = SecretBytes::copy_from(&[0x5c; 32]);
        let device = Arc::new(
            Pkcs11HmacKey::import(
                &token,
                &hmac_uri,
                RegistrationId::new("p11-sym-dev").unwrap(),
                &device_key,
            )
            .unwrap(),
        );
        let csr_uri = uri(&softhsm.uri("prov", "csr-key"));
        let csr_key: Arc<dyn KeyHandle> = Arc::new(
            token
                .generate_key_pair(&csr_uri, KeySpec::EcdsaP256)
                .unwrap(),
        );
        runtime().block_on(async {
            use base64::Engine as _;
            let key = base64::engine::general_purpose::STANDARD.encode(device_key.expose());
            let emulator = emulator()
                .enroll(Enrollment::symmetric_key(
                    "p11-sym-dev",
                    key_pair("p11-sym-dev", &key),
                ))
                .started()
                .await;
            for transport in TRANSPORTS {
                // SAS tokens HMAC'd on the token.
                let registration = client(&emulator, transport)
                    .symmetric_key(device.clone())
                    .assigned()
                    .await;
                assert_eq!(registration.device_id, "p11-sym-dev");
                let HubCredentials::Sas(signer) = &registration.credentials else {
                    panic!("{:?}", registration.credentials)
                };
                signer
                    .token(std::time::Duration::from_secs(60))
                    .await
                    .unwrap();
                // The hub's SAS tokens are HMAC'd on the token too.
                proves_on_hub(&emulator, &registration).await;

                // And a certificate for a key that never leaves the token.
                let registration = client(&emulator, transport)
                    .symmetric_key(device.clone())
                    .certificate_request(csr_key.clone())
                    .build()
                    .unwrap()
                    .register()
                    .await
                    .unwrap_or_else(|e| panic!("{transport:?} CSR: {e:?}"));
                let leaf = registration.issued_certificate_chain.first().unwrap();
                let cert = x509_cert::Certificate::from_der(leaf.as_ref()).unwrap();
                let spki =
                    der::Encode::to_der(cert.tbs_certificate().subject_public_key_info()).unwrap();
                assert_eq!(spki, csr_key.public_key_der());
                assert!(matches!(registration.credentials, HubCredentials::X509(_)));
                proves_on_hub(&emulator, &registration).await;
            }
        });
    });
}
