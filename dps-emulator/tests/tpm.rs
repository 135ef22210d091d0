//! The TPM challenge, with the public areas of a real (swtpm) EK and SRK from tpm-wire's
//! fixtures. The full round trip through a TPM is in the provisioning crate's TPM test.
#![allow(clippy::unwrap_used)]

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::{API, Https, sas};
use dps_emulator::{Emulator, Enrollment};
use serde_json::json;

const EK: &[u8] = include_bytes!("../../tpm-wire/tests/data/ek.pub");
const SRK: &[u8] = include_bytes!("../../tpm-wire/tests/data/srk.pub");

#[tokio::test]
async fn first_request_gets_an_activation_blob_for_the_enrolled_ek() {
    let emu = Emulator::builder()
        .retry_after(0)
        .enroll(Enrollment::tpm("tpm-dev", EK.to_vec()))
        .start()
        .await
        .unwrap();
    let mut c = Https::connect(&emu, None).await;
    let body = json!({
        "registrationId": "tpm-dev",
        "tpm": {"endorsementKey": BASE64.encode(EK), "storageRootKey": BASE64.encode(SRK)},
    });
    let r = c.register_raw("tpm-dev", None, body.clone(), API).await;
    assert_eq!(r.status, 401);
    let challenge = r.json();
    assert_eq!(challenge["keyName"], "registration");
    let blob = BASE64
        .decode(challenge["authenticationKey"].as_str().unwrap())
        .unwrap();
    let parsed = tpm_wire::ActivationBlob::parse(&blob).unwrap();
    assert_eq!(parsed.to_bytes().unwrap(), blob);
    // Each challenge carries a fresh key.
    let again = c
        .register_raw("tpm-dev", None, body.clone(), API)
        .await
        .json();
    assert_ne!(again["authenticationKey"], challenge["authenticationKey"]);

    // A SAS token not made with the challenge's key is refused.
    let forged = sas(emu.id_scope(), "tpm-dev", &[7u8; 32]);
    let r = c
        .register_raw("tpm-dev", Some(&forged), body.clone(), API)
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["errorCode"], 401002);

    // Another EK (here: the SRK's public area) is not the enrolled device.
    let other = json!({
        "tpm": {"endorsementKey": BASE64.encode(SRK), "storageRootKey": BASE64.encode(SRK)},
    });
    let r = c.register_raw("tpm-dev", None, other, API).await;
    assert_eq!(r.status, 401);
    assert!(r.json().get("authenticationKey").is_none());

    // Garbage instead of a public area is a bad request, not a crash.
    let junk = json!({"tpm": {"endorsementKey": "AAEC", "storageRootKey": "AAEC"}});
    emu.with_enrollments(|e| e.add(Enrollment::tpm("junk-dev", vec![0, 1, 2])));
    let r = c.register_raw("junk-dev", None, junk, API).await;
    assert_eq!(r.status, 400);
    assert!(emu.registrations().is_empty());
}
