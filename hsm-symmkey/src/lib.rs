#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

use std::fmt;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, KeyInit as _, Mac as _};
use hsm_core::{RegistrationId, SecretBytes, SecretString, SymmetricKeyAttestation};
use sha2::Sha256;
use zeroize::Zeroizing;

/// Standard-alphabet base64 that accepts keys with or without `=` padding, as portals and tools
/// write them both ways.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Errors of this crate. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key text is not valid base64 (its content is not repeated here).
    #[error("the {what} is not valid base64")]
    InvalidBase64 {
        /// `"device key"` or `"group key"`.
        what: &'static str,
    },

    /// The key decodes to zero bytes.
    #[error("the {what} is empty")]
    EmptyKey {
        /// `"device key"` or `"group key"`.
        what: &'static str,
    },
}

/// A device's symmetric key and registration id. Implements [`SymmetricKeyAttestation`]: it
/// computes HMAC-SHA256 for SAS tokens and never hands the key out.
pub struct SymmetricKey {
    registration_id: RegistrationId,
    key: SecretBytes,
}

impl SymmetricKey {
    /// A device key given as raw bytes.
    ///
    /// # Errors
    /// [`Error::EmptyKey`] for an empty key.
    pub fn new(registration_id: RegistrationId, key: SecretBytes) -> Result<Self, Error> {
        if key.is_empty() {
            return Err(Error::EmptyKey { what: "device key" });
        }
        Ok(Self {
            registration_id,
            key,
        })
    }

    /// A device key given in base64, as the Azure portal and CLI show it.
    ///
    /// # Errors
    /// [`Error::InvalidBase64`] or [`Error::EmptyKey`].
    pub fn from_base64(registration_id: RegistrationId, key: &SecretString) -> Result<Self, Error> {
        Self::new(registration_id, decode(key, "device key")?)
    }

    /// The device key derived from a group enrollment's key:
    /// `HMAC-SHA256(base64decode(group_key), registration_id)` (see [`derive_device_key`]).
    ///
    /// # Errors
    /// [`Error::InvalidBase64`] or [`Error::EmptyKey`] for the group key.
    pub fn from_group_key(
        registration_id: RegistrationId,
        group_key: &SecretString,
    ) -> Result<Self, Error> {
        let group = decode(group_key, "group key")?;
        let key =
            SecretBytes::copy_from(&*hmac(group.expose(), registration_id.as_str().as_bytes()));
        Self::new(registration_id, key)
    }
}

impl SymmetricKeyAttestation for SymmetricKey {
    fn registration_id(&self) -> &RegistrationId {
        &self.registration_id
    }

    fn hmac_sha256(&self, data: &[u8]) -> Result<[u8; 32], hsm_core::Error> {
        Ok(*hmac(self.key.expose(), data))
    }
}

impl fmt::Debug for SymmetricKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SymmetricKey")
            .field("registration_id", &self.registration_id)
            .field("key", &self.key)
            .finish()
    }
}

/// Derives a device's key from its group enrollment's key, as DPS does:
/// `base64(HMAC-SHA256(base64decode(group_key), utf8(registration_id)))`.
///
/// Use it on the provisioning side (to hand a device its key) or in tools; a device that holds
/// the group key can use [`SymmetricKey::from_group_key`] directly.
///
/// # Errors
/// [`Error::InvalidBase64`] or [`Error::EmptyKey`] for the group key.
pub fn derive_device_key(
    group_key: &SecretString,
    registration_id: &RegistrationId,
) -> Result<SecretString, Error> {
    let group = decode(group_key, "group key")?;
    let derived = hmac(group.expose(), registration_id.as_str().as_bytes());
    Ok(SecretString::new(BASE64.encode(derived.as_slice())))
}

fn decode(key: &SecretString, what: &'static str) -> Result<SecretBytes, Error> {
    let mut bytes = Zeroizing::new(Vec::new());
    BASE64
        .decode_vec(key.expose().trim(), &mut bytes)
        .map_err(|_| Error::InvalidBase64 { what })?;
    if bytes.is_empty() {
        return Err(Error::EmptyKey { what });
    }
    Ok(SecretBytes::new(std::mem::take(&mut *bytes)))
}

fn hmac(key: &[u8], data: &[u8]) -> Zeroizing<[u8; 32]> {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(data);
    Zeroizing::new(mac.finalize().into_bytes().into())
}

#[cfg(test)]
mod tests {
    use hsm_core::{Expiry, SasTokenBuilder};
    use proptest::prelude::*;

    use super::*;

    const GROUP_KEY: &str =
        "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==";
    const DEVICE_ID: &str = "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6";
    const DERIVED: &str = "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc=";

    fn id(s: &str) -> RegistrationId {
        RegistrationId::new(s).unwrap()
    }

    #[test]
    fn published_group_derivation_vector() {
        let derived = derive_device_key(&GROUP_KEY.into(), &id(DEVICE_ID)).unwrap();
        assert_eq!(derived.expose(), DERIVED);
    }

    #[test]
    fn group_key_and_derived_key_sign_alike() {
        let from_group = SymmetricKey::from_group_key(id(DEVICE_ID), &GROUP_KEY.into()).unwrap();
        let from_derived = SymmetricKey::from_base64(id(DEVICE_ID), &DERIVED.into()).unwrap();
        assert_eq!(
            from_group.hmac_sha256(b"data").unwrap(),
            from_derived.hmac_sha256(b"data").unwrap()
        );
    }

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        // RFC 4231 test case 2: key "Jefe".
        let key = SymmetricKey::new(id("d"), SecretBytes::copy_from(b"Jefe")).unwrap();
        let mac = key.hmac_sha256(b"what do ya want for nothing?").unwrap();
        assert_eq!(mac[..8], [0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e]);
    }

    #[test]
    fn sas_token_through_the_attestation_trait() {
        let key = SymmetricKey::from_base64(id(DEVICE_ID), &DERIVED.into()).unwrap();
        let token = SasTokenBuilder::for_registration("0ne000000", key.registration_id())
            .expiry(Expiry::At(1))
            .sign(|data| key.hmac_sha256(data))
            .unwrap();
        assert!(token.expose().contains("&skn=registration"));
    }

    #[test]
    fn unpadded_base64_is_accepted() {
        let unpadded = DERIVED.trim_end_matches('=');
        let a = SymmetricKey::from_base64(id("d"), &unpadded.into()).unwrap();
        let b = SymmetricKey::from_base64(id("d"), &DERIVED.into()).unwrap();
        assert_eq!(a.hmac_sha256(b"x").unwrap(), b.hmac_sha256(b"x").unwrap());
    }

    #[test]
    fn bad_keys_are_typed_errors() {
        for (text, expected) in [
            ("not base64!", "not valid base64"),
            ("", "is empty"),
            ("   ", "is empty"),
            ("abc$", "not valid base64"),
        ] {
            let err = SymmetricKey::from_base64(id("d"), &text.into()).unwrap_err();
            assert!(err.to_string().contains(expected), "{text:?}: {err}");
            assert!(!err.to_string().contains(text.trim()) || text.trim().is_empty());
        }
        let err = derive_device_key(&"%%%".into(), &id("d")).unwrap_err();
        assert_eq!(err.to_string(), "the group key is not valid base64");
        assert!(SymmetricKey::new(id("d"), SecretBytes::new(Vec::new())).is_err());
    }

    #[test]
    fn debug_is_redacted() {
        let key = SymmetricKey::from_base64(id("dev-1"), &DERIVED.into()).unwrap();
        let shown = format!("{key:?}");
        assert!(shown.contains("dev-1"));
        assert!(!shown.contains("Jsm0"), "{shown}");
        assert!(shown.contains("[redacted]"));
    }

    proptest! {
        #[test]
        fn arbitrary_key_text_never_panics(text in ".{0,100}") {
            let _ = SymmetricKey::from_base64(id("d"), &text.as_str().into());
        }
    }
}
