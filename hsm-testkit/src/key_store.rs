//! The key-store conformance checks: what every [`KeyStore`] (hsm-core's key-generation
//! contract) must do, run against the real backend.
//! [`key_store_conformance_tests!`](crate::key_store_conformance_tests) turns each into a
//! `#[test]`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use hsm_core::{Error, KeyAlgorithm, KeyHandle, KeyLabel, KeyStore};

use crate::pki::TestCa;
use crate::verify;

/// What a driver hands the key-store suite.
pub struct StoreSubject {
    /// A short name for messages, e.g. `"hsm-pkcs11 on SoftHSM2"`.
    pub name: String,
    /// The store under test.
    pub store: Arc<dyn KeyStore>,
    /// Opens the same store again, as a new process would (a new token session, a new TPM
    /// connection, the same folder): what one instance made, the other must find.
    pub reopen: Box<dyn Fn() -> Arc<dyn KeyStore> + Send + Sync>,
    /// The algorithms the store generates; each is checked.
    pub algorithms: Vec<KeyAlgorithm>,
    /// Algorithms the store cannot generate; each must be [`Error::CannotGenerate`].
    pub unsupported: Vec<KeyAlgorithm>,
}

impl fmt::Debug for StoreSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreSubject")
            .field("name", &self.name)
            .field("store", &self.store)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

/// A label no other check of this process uses.
fn fresh_label(what: &str) -> KeyLabel {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    KeyLabel::new(format!("conformance-{what}-{}-{n}", std::process::id())).expect("label")
}

fn verify_signs(name: &str, key: &Arc<dyn KeyHandle>) {
    let message = b"hsm-testkit key store";
    for &scheme in key.schemes() {
        let signature = key
            .sign(scheme, message)
            .unwrap_or_else(|e| panic!("{name}: sign with {scheme}: {e}"));
        verify::rustcrypto(scheme, key.public_key_der(), message, &signature)
            .unwrap_or_else(|e| panic!("{name}: the {scheme} signature does not verify: {e}"));
    }
}

/// Each algorithm: a generated key signs (verified independently), is found by its label with
/// no chain, and is found again, the same key, by a reopened store.
pub fn generate_sign_find(subject: &StoreSubject) {
    assert!(
        !subject.algorithms.is_empty(),
        "{}: no algorithm",
        subject.name
    );
    for &algorithm in &subject.algorithms {
        let name = format!("{} {algorithm}", subject.name);
        let label = fresh_label("gen");
        let key = subject
            .store
            .generate(&label, algorithm)
            .unwrap_or_else(|e| panic!("{name}: generate: {e}"));
        assert_eq!(
            key.algorithm(),
            algorithm,
            "{name}: generated another algorithm"
        );
        verify_signs(&name, &key);
        let found = subject
            .store
            .find(&label)
            .unwrap_or_else(|e| panic!("{name}: find: {e}"))
            .unwrap_or_else(|| panic!("{name}: the generated key is not found by its label"));
        assert_eq!(found.label, label, "{name}: found under another label");
        assert_eq!(
            found.key.public_key_der(),
            key.public_key_der(),
            "{name}: found another key"
        );
        assert!(
            found.chain.is_empty(),
            "{name}: a chain before one was stored"
        );
        let again = (subject.reopen)()
            .find(&label)
            .unwrap_or_else(|e| panic!("{name}: find after reopening: {e}"))
            .unwrap_or_else(|| panic!("{name}: the key is gone after reopening the store"));
        assert_eq!(
            again.key.public_key_der(),
            key.public_key_der(),
            "{name}: a reopened store finds another key"
        );
        verify_signs(&name, &again.key);
        assert!(
            subject
                .store
                .delete(&label)
                .unwrap_or_else(|e| panic!("{name}: delete: {e}")),
            "{name}: delete says there was nothing"
        );
    }
}

/// A chain stored with a key comes back with it, leaf first, also from a reopened store; a
/// chain for another key, or for a label with no key, is refused with a typed error.
pub fn chain_round_trip(subject: &StoreSubject) {
    let name = &subject.name;
    let algorithm = subject.algorithms[0];
    let ca = TestCa::new("hsm-testkit key store CA");
    let label = fresh_label("chain");
    let key = subject
        .store
        .generate(&label, algorithm)
        .unwrap_or_else(|e| panic!("{name}: generate: {e}"));
    let chain = ca.certify_handle(&key, "store-device");
    subject
        .store
        .store_chain(&label, &chain)
        .unwrap_or_else(|e| panic!("{name}: store_chain: {e}"));
    for store in [subject.store.clone(), (subject.reopen)()] {
        let found = store
            .find(&label)
            .unwrap_or_else(|e| panic!("{name}: find: {e}"))
            .unwrap_or_else(|| panic!("{name}: key not found"));
        assert_eq!(
            found.chain, chain,
            "{name}: the stored chain comes back changed"
        );
        let identity = found
            .certified()
            .unwrap_or_else(|e| panic!("{name}: the stored key and chain are no identity: {e}"));
        assert_eq!(identity.registration_id().as_str(), "store-device");
    }
    // Storing again replaces.
    let renewed = ca.certify_handle(&key, "store-device-2");
    subject
        .store
        .store_chain(&label, &renewed[..1])
        .unwrap_or_else(|e| panic!("{name}: store_chain again: {e}"));
    let found = subject.store.find(&label).expect("find").expect("key");
    assert_eq!(
        found.chain,
        renewed[..1],
        "{name}: the chain was not replaced"
    );

    let other = TestCa::new("other").issue_client("other", &rcgen::PKCS_ECDSA_P256_SHA256);
    match subject.store.store_chain(&label, &other.chain) {
        Err(Error::Certificate { .. }) => {}
        other => {
            panic!("{name}: a chain for another key: expected Error::Certificate, got {other:?}")
        }
    }
    match subject.store.store_chain(&label, &[]) {
        Err(Error::Certificate { .. }) => {}
        other => panic!("{name}: an empty chain: expected Error::Certificate, got {other:?}"),
    }
    let missing = fresh_label("missing");
    match subject.store.store_chain(&missing, &chain) {
        Err(Error::NoSuchKey { label }) => assert_eq!(label, missing.as_str()),
        other => panic!("{name}: a chain for no key: expected Error::NoSuchKey, got {other:?}"),
    }
    assert!(subject.store.delete(&label).expect("delete"));
}

/// A second key under a label in use is [`Error::KeyExists`] (and the first is untouched);
/// delete removes key and chain (also for a reopened store), a second delete says there was
/// nothing, and the label can be used again; algorithms the store does not make are
/// [`Error::CannotGenerate`].
pub fn labels_and_delete(subject: &StoreSubject) {
    let name = &subject.name;
    let algorithm = subject.algorithms[0];
    let label = fresh_label("del");
    let key = subject.store.generate(&label, algorithm).expect("generate");
    match subject.store.generate(&label, algorithm) {
        Err(Error::KeyExists { label: l }) => assert_eq!(l, label.as_str()),
        other => {
            panic!("{name}: a second key under one label: expected Error::KeyExists, got {other:?}")
        }
    }
    let found = subject.store.find(&label).expect("find").expect("key");
    assert_eq!(
        found.key.public_key_der(),
        key.public_key_der(),
        "{name}: a refused generate replaced the key"
    );
    let chain = TestCa::new("ca").certify_handle(&key, "d");
    subject
        .store
        .store_chain(&label, &chain)
        .expect("store_chain");
    assert!(
        subject.store.delete(&label).expect("delete"),
        "{name}: delete found nothing"
    );
    for store in [subject.store.clone(), (subject.reopen)()] {
        assert!(
            store.find(&label).expect("find").is_none(),
            "{name}: a deleted key is still found"
        );
    }
    assert!(
        !subject.store.delete(&label).expect("delete again"),
        "{name}: a second delete says it deleted something"
    );
    let fresh = subject
        .store
        .generate(&label, algorithm)
        .expect("generate again");
    assert_ne!(
        fresh.public_key_der(),
        key.public_key_der(),
        "{name}: a new key under a reused label is the old one"
    );
    let found = subject.store.find(&label).expect("find").expect("key");
    assert!(
        found.chain.is_empty(),
        "{name}: the deleted key's chain came back"
    );
    assert!(subject.store.delete(&label).expect("delete"));
    for &algorithm in &subject.unsupported {
        match subject
            .store
            .generate(&fresh_label("unsupported"), algorithm)
        {
            Err(Error::CannotGenerate { algorithm: a }) => assert_eq!(a, algorithm),
            other => panic!(
                "{name}: generating {algorithm}: expected Error::CannotGenerate, got {other:?}"
            ),
        }
    }
}

/// One key-store check: its name and the function (which panics when the store breaks the
/// contract).
pub type StoreCheck = (&'static str, fn(&StoreSubject));

/// Every key-store check, in the order the macro lists them.
pub fn all() -> Vec<StoreCheck> {
    vec![
        ("key_store_generate_sign_find", generate_sign_find),
        ("key_store_chain_round_trip", chain_round_trip),
        ("key_store_labels_and_delete", labels_and_delete),
    ]
}

/// Instantiates the key-store conformance suite as `#[test]` functions for a factory
/// expression of type `fn() -> StoreSubject`, optionally inside a `wrap` (as
/// [`conformance_tests!`](crate::conformance_tests)).
#[macro_export]
macro_rules! key_store_conformance_tests {
    ($factory:expr) => {
        $crate::key_store_conformance_tests!($factory, wrap = |body: &dyn Fn()| body());
    };
    ($factory:expr, wrap = $wrap:expr) => {
        #[test]
        fn key_store_generate_sign_find() {
            ($wrap)(&|| $crate::key_store::generate_sign_find(&($factory)()));
        }
        #[test]
        fn key_store_chain_round_trip() {
            ($wrap)(&|| $crate::key_store::chain_round_trip(&($factory)()));
        }
        #[test]
        fn key_store_labels_and_delete() {
            ($wrap)(&|| $crate::key_store::labels_and_delete(&($factory)()));
        }
    };
}
