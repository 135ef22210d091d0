//! The driver on the tokens people have, each set up by the test kit in a state of its own:
//! tpm2-pkcs11 (keys in a swtpm behind tpm2-abrmd; CKM_ECDSA_SHA256), opencryptoki's software
//! token (RSA with raw CKM_RSA_PKCS and PSS only; pkcsslotd; the SO sets the user PIN), and
//! SoftHSM2 through p11-kit's remoting (the module in another process). Each runs the whole
//! conformance suite (mutual TLS against rustls and `openssl s_server` included) with a key the
//! driver generated on the token; then what differs between tokens: lockout after wrong PINs,
//! a token without a user PIN, `CKA_ALWAYS_AUTHENTICATE`, a session limit.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::sync::Arc;

use hsm_core::{KeyAlgorithm, KeyHandle, KeyLabel, KeyStore as _};
use hsm_pkcs11::{Error, OpenOptions, Token};
use hsm_testkit::Subject;
use hsm_testkit::opencryptoki::Opencryptoki;
use hsm_testkit::p11kit::P11KitRemote;
use hsm_testkit::pki::TestCa;
use hsm_testkit::tpm2_pkcs11::Tpm2Pkcs11;

/// A key generated on the token behind `uri`, certified by a test CA.
fn subject(name: &str, uri: &str, algorithm: KeyAlgorithm, pin: &str) -> Subject {
    let token = Token::open(&uri.parse().unwrap()).unwrap();
    let key = token
        .generate(&KeyLabel::new("conformance").unwrap(), algorithm)
        .unwrap_or_else(|e| {
            panic!(
                "{name}: generate: {e} ({:?})",
                std::error::Error::source(&e)
            )
        });
    let ca = TestCa::new(&format!("{name} CA"));
    let chain = ca.certify_handle(&key, "token-device");
    Subject {
        name: name.into(),
        key,
        chain,
        trust_anchor: ca.cert().clone(),
        secrets: vec![format!("pin-value={pin}"), format!("\"{pin}\"")],
        debug_views: vec![format!("{token:?}")],
    }
}

mod tpm2_pkcs11 {
    use super::*;

    fn subject() -> Subject {
        let tpm2 = Tpm2Pkcs11::current();
        super::subject(
            "hsm-pkcs11 on tpm2-pkcs11",
            &tpm2.uri("any"),
            KeyAlgorithm::EcdsaP256,
            hsm_testkit::tpm2_pkcs11::USER_PIN,
        )
    }

    hsm_testkit::conformance_tests!(subject, wrap = Tpm2Pkcs11::wrap);
}

mod opencryptoki {
    use super::*;

    fn subject() -> Subject {
        let ock = Opencryptoki::current();
        super::subject(
            "hsm-pkcs11 on opencryptoki",
            &ock.uri("any"),
            KeyAlgorithm::Rsa { bits: 2048 },
            hsm_testkit::opencryptoki::USER_PIN,
        )
    }

    hsm_testkit::conformance_tests!(subject, wrap = Opencryptoki::wrap);
}

mod p11_kit_remote {
    use super::*;

    fn subject() -> Subject {
        let remote = P11KitRemote::current();
        super::subject(
            "hsm-pkcs11 through p11-kit remoting (SoftHSM2)",
            &remote.uri("any"),
            KeyAlgorithm::EcdsaP256,
            hsm_testkit::softhsm::USER_PIN,
        )
    }

    hsm_testkit::conformance_tests!(subject, wrap = P11KitRemote::wrap);
}

/// What tpm2-pkcs11 offers is used: ECDSA with the hash on the token, RSA without PSS.
#[test]
fn tpm2_pkcs11_mechanisms_are_discovered() {
    Tpm2Pkcs11::isolated(|tpm2| {
        let token = Token::open(&tpm2.uri("any").parse().unwrap()).unwrap();
        assert!(token.offers(hsm_pkcs11::MechanismType::ECDSA_SHA256));
        let key = token
            .generate(
                &KeyLabel::new("rsa").unwrap(),
                KeyAlgorithm::Rsa { bits: 2048 },
            )
            .unwrap();
        // Everything hashes on the token here (CKM_ECDSA_SHA256, CKM_SHA256_RSA_PKCS,
        // CKM_SHA256_RSA_PKCS_PSS); PSS is used only where the token offers it.
        let pss = token.offers(hsm_pkcs11::MechanismType::SHA256_RSA_PKCS_PSS)
            || token.offers(hsm_pkcs11::MechanismType::RSA_PKCS_PSS);
        assert_eq!(
            key.schemes()
                .contains(&hsm_core::SignatureScheme::RsaPssSha256),
            pss
        );
        for &scheme in key.schemes() {
            let signature = key.sign(scheme, b"tpm2-pkcs11").unwrap();
            hsm_testkit::verify::rustcrypto(
                scheme,
                key.public_key_der(),
                b"tpm2-pkcs11",
                &signature,
            )
            .unwrap();
        }
    });
}

/// opencryptoki's soft token signs RSA PKCS#1 v1.5 only raw (`CKM_RSA_PKCS`, no
/// `CKM_SHA256_RSA_PKCS`): the driver hashes and builds the DigestInfo itself.
#[test]
fn opencryptoki_rsa_pkcs1_signs_through_the_raw_mechanism() {
    Opencryptoki::isolated(|ock| {
        let token = Token::open(&ock.uri("any").parse().unwrap()).unwrap();
        assert!(!token.offers(hsm_pkcs11::MechanismType::SHA256_RSA_PKCS));
        assert!(token.offers(hsm_pkcs11::MechanismType::RSA_PKCS));
        assert!(!token.offers(hsm_pkcs11::MechanismType::ECC_KEY_PAIR_GEN));
        let key = token
            .generate(
                &KeyLabel::new("rsa").unwrap(),
                KeyAlgorithm::Rsa { bits: 2048 },
            )
            .unwrap();
        for scheme in [
            hsm_core::SignatureScheme::RsaPkcs1Sha256,
            hsm_core::SignatureScheme::RsaPkcs1Sha384,
            hsm_core::SignatureScheme::RsaPkcs1Sha512,
            hsm_core::SignatureScheme::RsaPssSha256,
        ] {
            assert!(key.schemes().contains(&scheme), "{scheme:?}");
            let signature = key.sign(scheme, b"opencryptoki").unwrap();
            hsm_testkit::verify::rustcrypto(
                scheme,
                key.public_key_der(),
                b"opencryptoki",
                &signature,
            )
            .unwrap_or_else(|e| panic!("{scheme:?}: {e}"));
        }
    });
}

/// Wrong PINs until the token locks: each a typed `WrongPin` (with what the token says of the
/// tries left), then `PinLocked`, also for the right PIN, which is not even tried.
fn locks_after_wrong_pins(uri_with_pin: &str, right_pin: &str) -> usize {
    let wrong = uri_with_pin.replace(&format!("pin-value={right_pin}"), "pin-value=0000bad");
    let mut wrong_pins = 0;
    let locked = loop {
        match Token::open(&wrong.parse().unwrap()) {
            Err(Error::WrongPin { .. }) => wrong_pins += 1,
            Err(Error::PinLocked { token }) => break token,
            other => panic!("after {wrong_pins} wrong PINs: {other:?}"),
        }
        assert!(wrong_pins <= 20, "the token never locked");
    };
    assert!(wrong_pins >= 1, "locked before any wrong PIN");
    match Token::open(&uri_with_pin.parse().unwrap()) {
        Err(Error::PinLocked { token }) => assert_eq!(token, locked),
        other => panic!("the right PIN on a locked token: {other:?}"),
    }
    let message = Error::PinLocked { token: locked }.to_string();
    assert!(message.contains("unlock it with the SO PIN"), "{message}");
    wrong_pins
}

#[test]
fn opencryptoki_locks_its_pin() {
    Opencryptoki::isolated(|ock| {
        let wrong = locks_after_wrong_pins(&ock.uri("any"), hsm_testkit::opencryptoki::USER_PIN);
        // opencryptoki's soft token locks the user PIN at the third wrong one.
        assert_eq!(wrong, 3);
    });
}

#[test]
fn opencryptoki_says_a_token_without_a_user_pin_needs_one() {
    Opencryptoki::isolated(|ock| {
        // Initialised again, as `C_InitToken` leaves a token: no user PIN yet.
        let pkcs11 = cryptoki::context::Pkcs11::new(ock.module()).unwrap();
        pkcs11
            .initialize(cryptoki::context::CInitializeArgs::new(
                cryptoki::context::CInitializeFlags::OS_LOCKING_OK,
            ))
            .unwrap();
        let slot = pkcs11
            .get_all_slots()
            .unwrap()
            .into_iter()
            .find(|s| s.id() == hsm_testkit::opencryptoki::SLOT)
            .unwrap();
        let so_pin = cryptoki::types::AuthPin::from(hsm_testkit::opencryptoki::SO_PIN.to_owned());
        pkcs11
            .init_token(slot, &so_pin, hsm_testkit::opencryptoki::TOKEN)
            .unwrap();
        // Mapped until the process ends (see `Opencryptoki::isolated`).
        std::mem::forget(pkcs11.clone());
        pkcs11.finalize().unwrap();
        match Token::open(&ock.uri("any").parse().unwrap()) {
            Err(e @ Error::PinNotInitialized { .. }) => {
                let message = e.to_string();
                assert!(message.contains("'ock-soft' has no user PIN"), "{message}");
                assert!(message.contains("--init-pin"), "{message}");
                assert!(!message.contains(hsm_testkit::opencryptoki::USER_PIN));
            }
            other => panic!("{other:?}"),
        }
    });
}

/// A key with `CKA_ALWAYS_AUTHENTICATE` signs, the PIN given again for each signature.
#[test]
fn always_authenticate_keys_sign_with_a_context_specific_login() {
    use cryptoki::object::Attribute;
    hsm_testkit::softhsm::SoftHsm::isolated(|softhsm| {
        softhsm.init_token("aa");
        let pkcs11 = cryptoki::context::Pkcs11::new(softhsm.module()).unwrap();
        pkcs11
            .initialize(cryptoki::context::CInitializeArgs::new(
                cryptoki::context::CInitializeFlags::OS_LOCKING_OK,
            ))
            .unwrap();
        let slot = pkcs11.get_slots_with_token().unwrap()[0];
        let session = pkcs11.open_rw_session(slot).unwrap();
        session
            .login(
                cryptoki::session::UserType::User,
                Some(&cryptoki::types::AuthPin::from(
                    hsm_testkit::softhsm::USER_PIN.to_owned(),
                )),
            )
            .unwrap();
        let p256 = vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
        session
            .generate_key_pair(
                &cryptoki::mechanism::Mechanism::EccKeyPairGen,
                &[
                    Attribute::Token(true),
                    Attribute::EcParams(p256),
                    Attribute::Verify(true),
                    Attribute::Label(b"aa-key".to_vec()),
                ],
                &[
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Sign(true),
                    Attribute::AlwaysAuthenticate(true),
                    Attribute::Label(b"aa-key".to_vec()),
                ],
            )
            .unwrap();
        drop(session);
        pkcs11.finalize().unwrap();
        let uri = softhsm.uri("aa", "aa-key").parse().unwrap();
        let token = Token::open(&uri).unwrap();
        let key = hsm_pkcs11::Pkcs11Key::open(&token, &uri).unwrap();
        assert!(format!("{key:?}").contains("always_authenticate: true"));
        for _ in 0..3 {
            let signature = key
                .sign(hsm_core::SignatureScheme::EcdsaP256Sha256, b"again")
                .unwrap();
            hsm_testkit::verify::rustcrypto(
                hsm_core::SignatureScheme::EcdsaP256Sha256,
                key.public_key_der(),
                b"again",
                &signature,
            )
            .unwrap();
        }
    });
}

/// Eight threads sign through a token allowed two sessions: all succeed, and no more than two
/// sessions are ever open.
#[test]
fn a_session_limit_is_respected() {
    hsm_testkit::softhsm::SoftHsm::isolated(|softhsm| {
        softhsm.init_token("limit");
        let uri: hsm_pkcs11::Pkcs11Uri = softhsm.uri("limit", "k").parse().unwrap();
        let token = Token::open_with(&uri, &OpenOptions::default().max_sessions(2)).unwrap();
        assert_eq!(token.session_limit(), Some(2));
        let key: Arc<dyn KeyHandle> = token
            .generate(&KeyLabel::new("k").unwrap(), KeyAlgorithm::EcdsaP256)
            .unwrap();
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        std::thread::scope(|scope| {
            for _ in 0..8 {
                let (key, token, peak) = (key.clone(), token.clone(), peak.clone());
                scope.spawn(move || {
                    for _ in 0..16 {
                        key.sign(hsm_core::SignatureScheme::EcdsaP256Sha256, b"limit")
                            .unwrap();
                        peak.fetch_max(token.open_sessions(), std::sync::atomic::Ordering::SeqCst);
                    }
                });
            }
        });
        assert!(
            peak.load(std::sync::atomic::Ordering::SeqCst) <= 2,
            "{peak:?}"
        );
        assert!(token.open_sessions() <= 2);
    });
}
