//! X.509 attestation against the emulator, over HTTPS and MQTT: hsm-x509 devices (individual
//! and CA group), hsm-riot DICE devices (CA group through the dev root), CSR issuance.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use der::Decode as _;
use dps_emulator::{Enrollment, EnrollmentGroup};
use hsm_core::{KeyHandle, SecretBytes, X509Attestation};
use hsm_riot::{DevRoot, Name, RiotIdentityBuilder, Validity};
use hsm_testkit::pki::TestCa;
use hsm_x509::SoftwareKey;
use provisioning::{Error, HubCredentials, Registration, RegistrationStatus, Transport};

/// The certificate chain the hub TLS configuration presents.
fn hub_chain(registration: &Registration) -> Vec<Vec<u8>> {
    let HubCredentials::X509(config) = &registration.credentials else {
        panic!("{:?}", registration.credentials)
    };
    assert!(config.client_auth_cert_resolver.has_certs());
    let certified = config
        .client_auth_cert_resolver
        .resolve(&[], &[rustls::SignatureScheme::ECDSA_NISTP256_SHA256])
        .unwrap();
    certified.cert.iter().map(|c| c.to_vec()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn individual_certificate_enrollment_over_every_transport() {
    let ca = TestCa::new("provisioning test CA");
    let (device, issued) = x509_device(&ca, "x509-dev-1");
    let emulator = emulator()
        .enroll(Enrollment::x509_certificate(
            "x509-dev-1",
            issued.chain[0].clone(),
        ))
        .started()
        .await;
    for transport in TRANSPORTS {
        let registration = client(&emulator, transport)
            .x509(device.clone())
            .assigned()
            .await;
        assert_eq!(registration.status, RegistrationStatus::Assigned);
        assert_eq!(registration.device_id, "x509-dev-1");
        assert_eq!(registration.assigned_hub, "emulated-hub.azure-devices.net");
        assert!(registration.issued_certificate_chain.is_empty());
        // The hub credentials present the device's own chain, signing through the handle.
        assert_eq!(hub_chain(&registration)[0], issued.chain[0].to_vec());
        proves_on_hub(&emulator, &registration).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ca_group_enrollment_over_every_transport() {
    let ca = TestCa::new("group CA");
    let emulator = emulator()
        .enroll_group(EnrollmentGroup::x509_ca("x509-group", ca.cert().clone()))
        .started()
        .await;
    for (transport, id) in TRANSPORTS
        .into_iter()
        .zip(["grp-dev-https", "grp-dev-mqtt"])
    {
        let (device, _) = x509_device(&ca, id);
        let registration = client(&emulator, transport).x509(device).assigned().await;
        assert_eq!(registration.device_id, id);
        assert_eq!(
            registration.enrollment_group_id.as_deref(),
            Some("x509-group")
        );
        proves_on_hub(&emulator, &registration).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rogue_certificate_is_unauthorized_at_once() {
    let enrolled = TestCa::new("enrolled CA");
    let rogue = TestCa::new("rogue CA");
    let (_, issued) = x509_device(&enrolled, "x509-dev-2");
    let emulator = emulator()
        .enroll(Enrollment::x509_certificate(
            "x509-dev-2",
            issued.chain[0].clone(),
        ))
        .enroll_group(EnrollmentGroup::x509_ca(
            "x509-group",
            enrolled.cert().clone(),
        ))
        .started()
        .await;
    // Same CN, other key and issuer.
    let (impostor, _) = x509_device(&rogue, "x509-dev-2");
    let (stranger, _) = x509_device(&rogue, "x509-dev-3");
    for transport in TRANSPORTS {
        for device in [impostor.clone(), stranger.clone()] {
            let counter = Counter::default();
            let client = client(&emulator, transport).x509(device).build().unwrap();
            let started = Instant::now();
            let error = counter.wrap(client.register()).await.unwrap_err();
            assert!(
                matches!(error, Error::Unauthorized { .. }),
                "{transport:?}: {error:?}"
            );
            assert!(started.elapsed() < Duration::from_secs(2));
            assert_eq!(counter.get(), 1, "{transport:?}");
        }
    }
    assert!(emulator.registrations().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn untrusted_server_certificate_is_a_tls_error_without_retries() {
    let ca = TestCa::new("device CA");
    let (device, _) = x509_device(&ca, "x509-dev-4");
    let emulator = emulator().start().await.unwrap();
    for transport in TRANSPORTS {
        let counter = Counter::default();
        let client = provisioning::ProvisioningClient::builder(
            emulator.global_endpoint(),
            emulator.id_scope(),
        )
        .trust_anchor(TestCa::new("not the emulator").cert().clone())
        .mqtt_port(emulator.mqtt_addr().unwrap().port())
        .amqp_port(emulator.amqp_addr().unwrap().port())
        .transport(transport)
        .x509(device.clone())
        .build()
        .unwrap();
        let error = counter.wrap(client.register()).await.unwrap_err();
        assert!(
            matches!(error, Error::Tls { .. }),
            "{transport:?}: {error:?}"
        );
        assert_eq!(counter.get(), 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn key_that_does_not_match_the_certificate_is_refused_at_build() {
    let ca = TestCa::new("device CA");
    let a = ca.issue_client("mismatch", &rcgen::PKCS_ECDSA_P256_SHA256);
    let b = ca.issue_client("mismatch", &rcgen::PKCS_ECDSA_P256_SHA256);
    // hsm-x509 itself refuses a mismatched pair, so pair them behind its back.
    let device = Arc::new(Mismatched {
        id: hsm_core::RegistrationId::new("mismatch").unwrap(),
        chain: a.chain.clone(),
        key: Arc::new(SoftwareKey::from_pem(b.key_pem.as_bytes(), None).unwrap()),
    });
    let error = provisioning::ProvisioningClient::builder("localhost", "scope")
        .trust_anchor(ca.cert().clone())
        .x509(device)
        .build()
        .unwrap_err();
    assert!(matches!(error, Error::Tls { .. }), "{error:?}");
}

#[derive(Debug)]
struct Mismatched {
    id: hsm_core::RegistrationId,
    chain: Vec<hsm_core::CertificateDer<'static>>,
    key: Arc<SoftwareKey>,
}

impl X509Attestation for Mismatched {
    fn registration_id(&self) -> &hsm_core::RegistrationId {
        &self.id
    }
    fn certificate_chain(&self) -> &[hsm_core::CertificateDer<'static>] {
        &self.chain
    }
    fn alias_key(&self) -> Arc<dyn KeyHandle> {
        self.key.clone()
    }
}

fn riot_root() -> DevRoot {
    DevRoot::from_seed(
        &SecretBytes::copy_from(&[0x42; 32]),
        Name::cn("provisioning riot root"),
        Validity::default(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn riot_device_through_its_dev_root_over_every_transport() {
    let root = riot_root();
    let emulator = emulator()
        .enroll_group(EnrollmentGroup::x509_ca(
            "riot-group",
            root.certificate().clone(),
        ))
        .started()
        .await;
    let device = Arc::new(
        RiotIdentityBuilder::new()
            .uds(SecretBytes::copy_from(&[0x5a; 32]))
            .measurement(&[0x11; 32])
            .fwid(&[0x22; 32])
            .issuer(root.issuer())
            .build()
            .unwrap(),
    );
    assert_eq!(device.certificate_chain().len(), 3);
    for transport in TRANSPORTS {
        let registration = client(&emulator, transport)
            .x509(device.clone())
            .assigned()
            .await;
        assert_eq!(registration.device_id, "riot-device-cert");
        assert_eq!(
            registration.enrollment_group_id.as_deref(),
            Some("riot-group")
        );
        assert_eq!(hub_chain(&registration).len(), 3);
        proves_on_hub(&emulator, &registration).await;
    }
    // New firmware (another FWID) means a new Alias key: still in the group.
    let updated = Arc::new(
        RiotIdentityBuilder::new()
            .uds(SecretBytes::copy_from(&[0x5a; 32]))
            .measurement(&[0x11; 32])
            .fwid(&[0x33; 32])
            .issuer(root.issuer())
            .build()
            .unwrap(),
    );
    client(&emulator, Transport::Https)
        .x509(updated)
        .assigned()
        .await;
    // A DICE device under another root is refused.
    let other_root = DevRoot::generate(Name::cn("other root"), Validity::default()).unwrap();
    let stranger = Arc::new(
        RiotIdentityBuilder::new()
            .uds(SecretBytes::copy_from(&[0x5a; 32]))
            .measurement(&[0x11; 32])
            .fwid(&[0x22; 32])
            .issuer(other_root.issuer())
            .build()
            .unwrap(),
    );
    let error = client(&emulator, Transport::Https)
        .x509(stranger)
        .refused()
        .await;
    assert!(matches!(error, Error::Unauthorized { .. }), "{error:?}");
}

/// Subject CN and SubjectPublicKeyInfo DER of a certificate.
fn cn_and_spki(der: &[u8]) -> (String, Vec<u8>) {
    use der::Encode as _;
    let cert = x509_cert::Certificate::from_der(der).unwrap();
    let tbs = cert.tbs_certificate();
    let cn = tbs
        .subject()
        .common_name()
        .unwrap()
        .unwrap()
        .value()
        .into_owned();
    (cn, tbs.subject_public_key_info().to_der().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn csr_issuance_over_every_transport_and_attestations() {
    let ca = TestCa::new("csr CA");
    let (device, issued) = x509_device(&ca, "csr-x509");
    let emulator = emulator()
        .enroll(Enrollment::x509_certificate(
            "csr-x509",
            issued.chain[0].clone(),
        ))
        .enroll(Enrollment::symmetric_key(
            "csr-sym",
            key_pair("csr-sym", DEVICE_KEY),
        ))
        .started()
        .await;
    for transport in TRANSPORTS {
        for attestation in ["x509", "sym"] {
            let fresh = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let key: Arc<dyn KeyHandle> =
                Arc::new(SoftwareKey::from_pem(fresh.serialize_pem().as_bytes(), None).unwrap());
            let builder = client(&emulator, transport).certificate_request(key.clone());
            let (builder, id) = match attestation {
                "x509" => (builder.x509(device.clone()), "csr-x509"),
                _ => (
                    builder.symmetric_key(symmetric_key("csr-sym", DEVICE_KEY)),
                    "csr-sym",
                ),
            };
            let client = builder.build().unwrap();
            assert_eq!(client.api_version(), provisioning::CSR_API_VERSION);
            let registration = client
                .register()
                .await
                .unwrap_or_else(|e| panic!("{transport:?} {attestation}: {e:?}"));
            let chain = &registration.issued_certificate_chain;
            assert!(!chain.is_empty(), "{transport:?} {attestation}");
            let (cn, spki) = cn_and_spki(chain[0].as_ref());
            assert_eq!(cn, id);
            assert_eq!(
                spki,
                key.public_key_der(),
                "the issued certificate is for the CSR key"
            );
            // The chain verifies to the emulator's CA, independently of the client.
            let anchor = webpki_anchor(emulator.ca_certificate());
            let ee = webpki::EndEntityCert::try_from(&chain[0]).unwrap();
            ee.verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &[anchor],
                &chain[1..],
                rustls::pki_types::UnixTime::now(),
                webpki::KeyUsage::client_auth(),
                None,
                None,
            )
            .unwrap();
            // Hub credentials use the issued chain with the CSR key, and the hub takes them.
            assert_eq!(hub_chain(&registration)[0], chain[0].to_vec());
            proves_on_hub(&emulator, &registration).await;
        }
    }
}

fn webpki_anchor(
    ca: &hsm_core::CertificateDer<'static>,
) -> rustls::pki_types::TrustAnchor<'static> {
    webpki::anchor_from_trusted_cert(ca).unwrap().to_owned()
}
