//! The TPM goes away mid-run: calls fail with a typed error, and once swtpm is back (same state
//! directory and ports) the same handles work again.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use hsm_core::{KeyHandle, SignatureScheme};
use hsm_testkit::swtpm::Swtpm;
use hsm_tpm::{Error, KeySpec, PersistentHandle, Tcti, Tpm, TpmIdentity, TpmKey, TpmOptions};

use common::{blob_for, connect, hmac_key, hmac_sha256, pattern};

#[test]
fn swtpm_stopped_then_restarted() {
    let mut swtpm = Swtpm::start();
    let tpm = connect(&swtpm);
    let identity = TpmIdentity::open(&tpm).unwrap();
    let key = hmac_key(11);
    identity
        .activate_identity_key(&blob_for(
            identity.endorsement_key(),
            identity.storage_root_key(),
            &key,
        ))
        .unwrap();
    let signer = TpmKey::create(&tpm, KeySpec::EcdsaP256, "0x81000020".parse().unwrap()).unwrap();
    let sas = b"scope/registrations/id\n42";
    assert_eq!(
        identity.sign_with_identity(sas).unwrap(),
        hmac_sha256(&key, sas)
    );

    swtpm.stop();
    let started = Instant::now();
    let err = identity.sign_with_identity(sas).unwrap_err();
    match &err {
        Error::Unavailable {
            tcti,
            attempts,
            source,
            ..
        } => {
            assert_eq!(*tcti, swtpm.tcti());
            assert_eq!(*attempts, 3);
            assert!(source.is_transport(), "{source}");
        }
        other => panic!("with swtpm stopped: {other:?}"),
    }
    assert!(err.is_connection_error());
    // Three attempts, 50 + 100 ms apart: a prompt failure, not a hang.
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(err.to_string().contains("unavailable"), "{err}");
    match signer.sign(SignatureScheme::EcdsaP256Sha256, b"while down") {
        Err(hsm_core::Error::Device { source, .. }) => assert!(
            matches!(
                source.downcast_ref::<Error>(),
                Some(Error::Unavailable { .. })
            ),
            "{source:?}"
        ),
        other => panic!("{other:?}"),
    }
    // Long inputs take the HMAC-sequence path, which connects on its own.
    assert!(matches!(
        identity.sign_with_identity(&pattern(4000, 1)),
        Err(Error::Unavailable { .. })
    ));

    swtpm.restart();
    assert_eq!(
        identity.sign_with_identity(sas).unwrap(),
        hmac_sha256(&key, sas)
    );
    let long = pattern(4000, 2);
    assert_eq!(
        identity.sign_with_identity(&long).unwrap(),
        hmac_sha256(&key, &long)
    );
    let signature = signer
        .sign(SignatureScheme::EcdsaP256Sha256, b"after the restart")
        .unwrap();
    hsm_testkit::verify::rustcrypto(
        SignatureScheme::EcdsaP256Sha256,
        signer.public_key_der(),
        b"after the restart",
        &signature,
    )
    .unwrap();
    // And again: a restart while idle (the connection breaks between calls).
    swtpm.restart();
    assert_eq!(
        identity.sign_with_identity(sas).unwrap(),
        hmac_sha256(&key, sas)
    );
    assert!(tpm.contains(PersistentHandle::IDENTITY).unwrap());
}

#[test]
fn opening_a_tpm_that_is_not_there() {
    let mut swtpm = Swtpm::start();
    let tcti: Tcti = swtpm.tcti().parse().unwrap();
    swtpm.stop();
    let options = TpmOptions::default()
        .attempts(2)
        .retry_delay(Duration::from_millis(10));
    match Tpm::open_with(tcti.clone(), options) {
        Err(Error::Unavailable {
            operation,
            attempts,
            ..
        }) => {
            assert_eq!(operation, "connect");
            assert_eq!(attempts, 2);
        }
        other => panic!("{other:?}"),
    }
    match Tpm::open("device:/nonexistent/tpm".parse().unwrap()) {
        Err(Error::Unavailable { tcti, .. }) => assert_eq!(tcti, "device:/nonexistent/tpm"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn handles_are_shared_across_threads() {
    let swtpm = Swtpm::start();
    let tpm = connect(&swtpm);
    let identity = TpmIdentity::open(&tpm).unwrap();
    let key = hmac_key(12);
    identity
        .activate_identity_key(&blob_for(
            identity.endorsement_key(),
            identity.storage_root_key(),
            &key,
        ))
        .unwrap();
    std::thread::scope(|scope| {
        for t in 0..4u8 {
            let identity = identity.clone();
            let key = &key;
            scope.spawn(move || {
                for i in 0..25u8 {
                    let data = [t, i];
                    assert_eq!(
                        identity.sign_with_identity(&data).unwrap(),
                        hmac_sha256(key, &data)
                    );
                }
            });
        }
    });
    // Dropping the last handle closes the connection: tpm2-tools can connect right away.
    drop(identity);
    drop(tpm);
    swtpm.tpm2_ok(&["getrandom", "--hex", "4"]);
}
