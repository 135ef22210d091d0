//! EK, SRK and identity-key activation on swtpm, cross-checked with tpm2-tools and a software
//! HMAC. Every test starts its own swtpm.

#![allow(clippy::unwrap_used)]

mod common;

use hsm_core::{SasTokenBuilder, TpmAttestation};
use hsm_testkit::swtpm::Swtpm;
use hsm_tpm::{EkTemplate, Error, PersistentHandle, TpmIdentity};

use common::{blob_for, connect, hmac_key, hmac_sha256, leftovers, pattern};

#[test]
fn ek_equals_tpm2_createek_and_legacy_template_differs() {
    let swtpm = Swtpm::start();
    // tpm2-tools first (swtpm serves one connection at a time); transient, not persisted.
    swtpm.tpm2_ok(&["createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub"]);
    let theirs = std::fs::read(swtpm.work_dir().join("ek.pub")).unwrap();
    // tpm2_createek leaves its EK loaded; flush it so that leaks of ours show below.
    swtpm.tpm2_ok(&["flushcontext", "-t"]);
    assert_eq!(leftovers(&swtpm), "");

    let tpm = connect(&swtpm);
    assert!(!tpm.contains(PersistentHandle::EK).unwrap());
    let identity = TpmIdentity::open(&tpm).unwrap();
    assert_eq!(identity.endorsement_key(), theirs.as_slice(), "TCG L-1 EK");
    assert!(tpm.contains(PersistentHandle::EK).unwrap());
    assert!(tpm.contains(PersistentHandle::SRK).unwrap());
    assert_eq!(
        identity.registration_id(),
        &hsm_core::tpm_registration_id(&theirs)
    );
    assert_eq!(
        TpmAttestation::registration_id(&identity).unwrap(),
        hsm_core::tpm_registration_id(&theirs)
    );

    // Reopening reuses the persisted keys.
    let again = TpmIdentity::open(&tpm).unwrap();
    assert_eq!(again.endorsement_key(), identity.endorsement_key());
    assert_eq!(again.storage_root_key(), identity.storage_root_key());

    // The C SDK's template (empty unique) gives another key from the same seed.
    let legacy_handle = PersistentHandle::new(0x8101_0002).unwrap();
    let legacy = TpmIdentity::builder(&tpm)
        .ek_template(EkTemplate::Legacy)
        .ek_handle(legacy_handle)
        .build()
        .unwrap();
    assert_ne!(legacy.endorsement_key(), identity.endorsement_key());
    assert_ne!(legacy.registration_id(), identity.registration_id());
    assert_eq!(legacy.storage_root_key(), identity.storage_root_key());
    // Same structure, different modulus: only `unique` (and so the key) differs in the template.
    assert_eq!(
        &legacy.endorsement_key()[..2 + 54],
        &identity.endorsement_key()[..2 + 54]
    );

    // tpm2-tools reads back what we persisted, byte for byte.
    tpm.disconnect().unwrap();
    for (handle, ours, file) in [
        ("0x81010001", identity.endorsement_key(), "ek-read.pub"),
        ("0x81000001", identity.storage_root_key(), "srk-read.pub"),
        ("0x81010002", legacy.endorsement_key(), "legacy-read.pub"),
    ] {
        swtpm.tpm2_ok(&["readpublic", "-c", handle, "-f", "tss", "-o", file]);
        let read = std::fs::read(swtpm.work_dir().join(file)).unwrap();
        assert_eq!(read, ours, "{handle}");
    }
    assert_eq!(leftovers(&swtpm), "");
}

#[test]
fn activation_round_trip_hmac_equals_software() {
    let swtpm = Swtpm::start();
    let tpm = connect(&swtpm);
    let identity = TpmIdentity::open(&tpm).unwrap();
    assert!(matches!(
        identity.sign_with_identity(b"before activation"),
        Err(Error::NotFound { handle, .. }) if handle == PersistentHandle::IDENTITY
    ));

    let key = hmac_key(1);
    let blob = blob_for(
        identity.endorsement_key(),
        identity.storage_root_key(),
        &key,
    );
    // Through the hsm-core trait, as the provisioning client uses it.
    let attestation: &dyn TpmAttestation = &identity;
    attestation.activate_identity_key(&blob).unwrap();

    let sas = b"0ne00000001%2fregistrations%2fdevice-1\n1700000000";
    assert_eq!(
        attestation.sign_with_identity(sas).unwrap(),
        hmac_sha256(&key, sas)
    );
    // Around and past the TPM's 1024-byte input buffer: one TPM2_HMAC, then HMAC sequences.
    assert_eq!(tpm.input_buffer_size().unwrap(), 1024);
    for len in [0, 1, 1023, 1024, 1025, 2048, 3000, 10_000] {
        let data = pattern(len, 7);
        assert_eq!(
            identity.sign_with_identity(&data).unwrap(),
            hmac_sha256(&key, &data),
            "{len} bytes"
        );
    }
    // A SAS token signed in the TPM.
    let token = SasTokenBuilder::new("0ne00000001/registrations/device-1")
        .expiry(hsm_core::Expiry::At(1_700_000_000))
        .sign(|data| attestation.sign_with_identity(data))
        .unwrap();
    let software = SasTokenBuilder::new("0ne00000001/registrations/device-1")
        .expiry(hsm_core::Expiry::At(1_700_000_000))
        .sign(|data| Ok(hmac_sha256(&key, data)))
        .unwrap();
    assert_eq!(token.expose(), software.expose());

    // The key persisted: a new connection (and tpm2-tools) sees it.
    tpm.disconnect().unwrap();
    assert_eq!(
        leftovers(&swtpm),
        "",
        "transient objects or sessions leaked"
    );
    std::fs::write(swtpm.work_dir().join("msg"), sas).unwrap();
    let out = swtpm.tpm2_ok(&["hmac", "-c", "0x81000100", "--hex", "msg"]);
    let hex: String = hmac_sha256(&key, sas)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), hex);

    // Replacing the identity key.
    let key2 = hmac_key(2);
    identity
        .activate_identity_key(&blob_for(
            identity.endorsement_key(),
            identity.storage_root_key(),
            &key2,
        ))
        .unwrap();
    assert_eq!(
        identity.sign_with_identity(sas).unwrap(),
        hmac_sha256(&key2, sas)
    );
    tpm.disconnect().unwrap();
    assert_eq!(
        leftovers(&swtpm),
        "",
        "transient objects or sessions leaked"
    );
}

#[test]
fn bad_blobs_are_typed_errors_and_keep_the_previous_key() {
    let other = Swtpm::start();
    let other_ek = {
        let tpm = connect(&other);
        TpmIdentity::open(&tpm).unwrap().endorsement_key().to_vec()
    };
    drop(other);

    let swtpm = Swtpm::start();
    let tpm = connect(&swtpm);
    let identity = TpmIdentity::open(&tpm).unwrap();
    let (ek, srk) = (identity.endorsement_key(), identity.storage_root_key());
    let key = hmac_key(3);
    identity
        .activate_identity_key(&blob_for(ek, srk, &key))
        .unwrap();
    let sas = b"scope/registrations/id\n1";
    let still_works = || {
        assert_eq!(
            identity.sign_with_identity(sas).unwrap(),
            hmac_sha256(&key, sas)
        );
    };

    // Made for another TPM's EK.
    let foreign = blob_for(&other_ek, srk, &hmac_key(4));
    match identity.activate_identity_key(&foreign) {
        Err(Error::BlobRejected { command, .. }) => {
            assert_eq!(command, "TPM2_ActivateCredential")
        }
        other => panic!("foreign EK: {other:?}"),
    }
    still_works();

    // Truncated.
    let good = blob_for(ek, srk, &hmac_key(5));
    for cut in [0, 1, 10, good.len() / 2, good.len() - 1] {
        assert!(
            matches!(
                identity.activate_identity_key(&good[..cut]),
                Err(Error::MalformedBlob(_))
            ),
            "cut at {cut}"
        );
    }
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(matches!(
        identity.activate_identity_key(&trailing),
        Err(Error::MalformedBlob(_))
    ));
    still_works();

    // A corrupted integrity HMAC: the first bytes of TPM2B_ID_OBJECT's contents are the
    // integrity HMAC's size and then the HMAC itself.
    let mut parsed = tpm_wire::ActivationBlob::parse(&good).unwrap();
    parsed.credential_blob[5] ^= 0x01;
    let err = identity
        .activate_identity_key(&parsed.to_bytes().unwrap())
        .unwrap_err();
    match &err {
        Error::BlobRejected { command, source } => {
            assert_eq!(*command, "TPM2_ActivateCredential");
            // TPM_RC_INTEGRITY
            assert_eq!(source.tpm_rc(), Some(0x09f), "{err:?}");
        }
        other => panic!("corrupted HMAC: {other:?}"),
    }
    assert_eq!(err.response_code().map(|rc| rc & 0xbf), Some(0x09f));
    still_works();

    // A corrupted duplicate (its outer integrity HMAC): ActivateCredential passes, Import fails.
    let mut parsed = tpm_wire::ActivationBlob::parse(&good).unwrap();
    parsed.duplicate[5] ^= 0x01;
    match identity.activate_identity_key(&parsed.to_bytes().unwrap()) {
        Err(Error::BlobRejected { command, .. }) => assert_eq!(command, "TPM2_Import"),
        other => panic!("corrupted duplicate: {other:?}"),
    }
    still_works();

    tpm.disconnect().unwrap();
    assert_eq!(
        leftovers(&swtpm),
        "",
        "transient objects or sessions leaked"
    );
}

#[test]
fn device_key_imports_at_its_own_handle() {
    let swtpm = Swtpm::start();
    let tpm = connect(&swtpm);
    let identity = TpmIdentity::open(&tpm).unwrap();
    let (ek, srk) = (identity.endorsement_key(), identity.storage_root_key());
    let id_key = hmac_key(6);
    let device_key = hmac_key(7);
    identity
        .activate_identity_key(&blob_for(ek, srk, &id_key))
        .unwrap();
    let hub = identity
        .import_hmac_key(
            &blob_for(ek, srk, &device_key),
            PersistentHandle::DEVICE_KEY,
        )
        .unwrap();
    assert_eq!(hub.handle(), PersistentHandle::DEVICE_KEY);
    let data = b"hub.example.net%2fdevices%2fdevice-1\n1700000000";
    assert_eq!(
        hub.hmac_sha256(data).unwrap(),
        hmac_sha256(&device_key, data)
    );
    assert_eq!(
        identity.sign_with_identity(data).unwrap(),
        hmac_sha256(&id_key, data)
    );
    let handles = tpm.persistent_handles().unwrap();
    for h in [
        PersistentHandle::EK,
        PersistentHandle::SRK,
        PersistentHandle::IDENTITY,
        PersistentHandle::DEVICE_KEY,
    ] {
        assert!(handles.contains(&h), "{h} missing from {handles:?}");
    }
    // Evict and it is gone.
    assert!(tpm.evict(PersistentHandle::DEVICE_KEY).unwrap());
    assert!(!tpm.evict(PersistentHandle::DEVICE_KEY).unwrap());
    assert!(matches!(hub.hmac_sha256(data), Err(Error::NotFound { .. })));
    // Debug output names handles, never key bytes.
    let shown = format!("{identity:?} {hub:?} {tpm:?}");
    assert!(shown.contains("0x81000101"), "{shown}");
    for secret in hsm_testkit::secret_renderings(&device_key) {
        assert!(!shown.contains(&secret), "{shown}");
    }
}
