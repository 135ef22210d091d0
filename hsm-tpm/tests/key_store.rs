//! The TPM as a key store (hsm-core's key-generation contract) on swtpm: the key-store
//! conformance suite, and what only the TPM has: handles from the store's range, checked with
//! tpm2-tools, keys another program put there never taken for ours, and a claim left by a
//! process that stopped before creating its key.

#![allow(clippy::unwrap_used)]

mod common;

use std::cell::RefCell;
use std::sync::Arc;

use hsm_core::{Error as CoreError, KeyAlgorithm, KeyLabel, KeyStore as _};
use hsm_testkit::key_store::StoreSubject;
use hsm_testkit::swtpm::Swtpm;
use hsm_tpm::{KeySpec, PersistentHandle, Tpm, TpmKey, TpmKeyStore};

thread_local! {
    static SWTPM: RefCell<Option<Swtpm>> = const { RefCell::new(None) };
}

fn with_swtpm(body: &dyn Fn()) {
    SWTPM.with(|s| *s.borrow_mut() = Some(Swtpm::start()));
    body();
    SWTPM.with(|s| s.borrow_mut().take());
}

fn subject() -> StoreSubject {
    let tcti = SWTPM.with(|s| s.borrow().as_ref().unwrap().tcti());
    let folder = tempfile::tempdir().unwrap().keep();
    let open = move || -> Arc<dyn hsm_core::KeyStore> {
        let tpm = Tpm::open(tcti.parse().unwrap()).unwrap();
        Arc::new(TpmKeyStore::open(&tpm, &folder).unwrap())
    };
    StoreSubject {
        name: "hsm-tpm on swtpm".into(),
        store: open(),
        reopen: Box::new(open),
        algorithms: vec![KeyAlgorithm::EcdsaP256, KeyAlgorithm::Rsa { bits: 2048 }],
        unsupported: vec![KeyAlgorithm::EcdsaP384, KeyAlgorithm::Ed25519],
    }
}

hsm_testkit::key_store_conformance_tests!(subject, wrap = with_swtpm);

#[test]
fn handles_from_the_range_and_foreign_keys_left_alone() {
    let swtpm = Swtpm::start();
    let tpm = common::connect(&swtpm);
    let folder = tempfile::tempdir().unwrap();
    let store = TpmKeyStore::open(&tpm, folder.path())
        .unwrap()
        .handles(0x8100_0300..=0x8100_0301)
        .unwrap();
    // Another program's key at the first handle of the range: skipped, never touched.
    let foreign = TpmKey::create(
        &tpm,
        KeySpec::EcdsaP256,
        PersistentHandle::new(0x8100_0300).unwrap(),
    )
    .unwrap();
    let label = KeyLabel::new("k1").unwrap();
    let key = store.generate(&label, KeyAlgorithm::EcdsaP256).unwrap();
    let listed =
        String::from_utf8(swtpm.tpm2_ok(&["getcap", "handles-persistent"]).stdout).unwrap();
    assert!(listed.contains("0x81000301"), "{listed}");
    // tpm2-tools reads the same public key at that handle.
    let der = folder.path().join("public.der");
    swtpm.tpm2_ok(&[
        "readpublic",
        "-c",
        "0x81000301",
        "-f",
        "der",
        "-o",
        der.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read(&der).unwrap(),
        key.public_key_der(),
        "tpm2_readpublic shows another key"
    );
    std::fs::remove_file(&der).unwrap();
    // The range is full now.
    match store.generate(&KeyLabel::new("k2").unwrap(), KeyAlgorithm::EcdsaP256) {
        Err(CoreError::Device { source, .. }) => {
            assert!(
                source.to_string().contains("no free persistent handle"),
                "{source}"
            )
        }
        other => panic!("expected a full range, got {other:?}"),
    }
    // A key put at our handle behind our back is refused, not used.
    assert!(
        tpm.evict(PersistentHandle::new(0x8100_0301).unwrap())
            .unwrap()
    );
    TpmKey::create(
        &tpm,
        KeySpec::EcdsaP256,
        PersistentHandle::new(0x8100_0301).unwrap(),
    )
    .unwrap();
    let error = store.find(&label).unwrap_err().to_string();
    assert!(error.contains("TPM key store"), "{error}");
    let source = std::error::Error::source(&store.find(&label).unwrap_err())
        .unwrap()
        .to_string();
    assert!(
        source.contains("another key than the one labelled k1"),
        "{source}"
    );
    // Deleting our label leaves the impostor and the foreign key in place.
    assert!(store.delete(&label).unwrap());
    assert!(
        tpm.contains(PersistentHandle::new(0x8100_0301).unwrap())
            .unwrap()
    );
    assert!(tpm.contains(foreign.handle()).unwrap());
}

#[test]
fn a_claim_without_a_key_is_nothing_and_a_recorded_key_is_adopted() {
    let swtpm = Swtpm::start();
    let tpm = common::connect(&swtpm);
    let folder = tempfile::tempdir().unwrap();
    let store = TpmKeyStore::open(&tpm, folder.path()).unwrap();
    let label = KeyLabel::new("half").unwrap();
    // As a process killed after claiming the handle and before creating the key leaves it.
    std::fs::write(folder.path().join("half.tpm"), "handle=0x81000200\n").unwrap();
    assert!(store.find(&label).unwrap().is_none());
    // Killed after creating it, before recording its public key: adopted.
    let key = TpmKey::create(
        &tpm,
        KeySpec::EcdsaP256,
        PersistentHandle::new(0x8100_0200).unwrap(),
    )
    .unwrap();
    let found = store.find(&label).unwrap().unwrap();
    assert_eq!(
        found.key.public_key_der(),
        hsm_core::KeyHandle::public_key_der(&key)
    );
    let index = std::fs::read_to_string(folder.path().join("half.tpm")).unwrap();
    assert!(index.contains("spki-sha256="), "{index}");
    // A malformed index entry is a typed error, not a panic.
    std::fs::write(folder.path().join("bad.tpm"), "handle=12\n").unwrap();
    assert!(store.find(&KeyLabel::new("bad").unwrap()).is_err());
}
