//! The token as a key store (hsm-core's key-generation contract) on SoftHSM2: the key-store
//! conformance suite, and what only PKCS#11 has: the generated private key's attributes, as
//! `pkcs11-tool` reads them.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use hsm_core::{KeyAlgorithm, KeyLabel, KeyStore as _};
use hsm_pkcs11::Token;
use hsm_testkit::key_store::StoreSubject;
use hsm_testkit::softhsm::{SoftHsm, USER_PIN};

fn open(softhsm: &SoftHsm) -> Token {
    Token::open(&softhsm.uri("store", "any").parse().unwrap()).unwrap()
}

fn subject() -> StoreSubject {
    let softhsm = SoftHsm::current();
    softhsm.init_token("store");
    let reopen = SoftHsm::current();
    StoreSubject {
        name: "hsm-pkcs11 on SoftHSM2".into(),
        store: Arc::new(open(&softhsm)),
        reopen: Box::new(move || Arc::new(open(&reopen))),
        algorithms: vec![
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::EcdsaP384,
            KeyAlgorithm::Rsa { bits: 2048 },
        ],
        unsupported: vec![KeyAlgorithm::Ed25519, KeyAlgorithm::Rsa { bits: 4096 }],
    }
}

hsm_testkit::key_store_conformance_tests!(subject, wrap = SoftHsm::wrap);

/// The generated private key is sensitive and never extractable, and no other object than
/// the pair and the chain is left on the token; delete leaves nothing.
#[test]
fn generated_keys_never_leave_the_token() {
    SoftHsm::isolated(|softhsm| {
        softhsm.init_token("store");
        let token = open(softhsm);
        let label = KeyLabel::new("rotated-key-2").unwrap();
        let key = token.generate(&label, KeyAlgorithm::EcdsaP256).unwrap();
        let chain = hsm_testkit::pki::TestCa::new("ca").certify_handle(&key, "device");
        token.store_chain(&label, &chain).unwrap();
        let listing = softhsm.pkcs11_tool(&[
            "--token-label",
            "store",
            "--login",
            "--pin",
            USER_PIN,
            "--list-objects",
        ]);
        let text = String::from_utf8_lossy(&listing.stdout);
        let private = text
            .split("Private Key Object")
            .nth(1)
            .unwrap_or_else(|| panic!("no private key listed:\n{text}"));
        let private = private.split("Object").next().unwrap();
        assert!(private.contains("label:      rotated-key-2"), "{private}");
        assert!(private.contains("sensitive"), "{private}");
        assert!(private.contains("never extractable"), "{private}");
        assert_eq!(text.matches("Certificate Object").count(), 2, "{text}");
        assert!(text.contains("label:      rotated-key-2.issuer1"), "{text}");
        assert!(token.delete(&label).unwrap());
        let listing = softhsm.pkcs11_tool(&[
            "--token-label",
            "store",
            "--login",
            "--pin",
            USER_PIN,
            "--list-objects",
        ]);
        let text = String::from_utf8_lossy(&listing.stdout);
        assert!(
            !text.contains("rotated-key-2"),
            "left on the token:\n{text}"
        );
    });
}
