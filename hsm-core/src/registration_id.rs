use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::Error;

/// The longest registration id DPS accepts.
pub const MAX_REGISTRATION_ID_LEN: usize = 128;

/// The longest X.509 common name (RFC 5280 `ub-common-name`). An X.509 registration id is the
/// leaf's CN, so it is limited to this length in practice.
pub const MAX_CN_LEN: usize = 64;

/// A DPS registration id, checked once against the service's rules and then trusted.
///
/// Rules: 1 to 128 characters from `A-Z a-z 0-9 - . _ :`, the last one alphanumeric or `-`.
/// DPS treats ids case-insensitively, so equality and hashing ignore ASCII case; the original
/// spelling is kept for display and for the wire.
#[derive(Clone, Debug)]
pub struct RegistrationId(String);

impl RegistrationId {
    /// Parses and checks a registration id.
    ///
    /// # Errors
    /// [`Error::InvalidRegistrationId`] naming the rule broken (and the offending character and
    /// its position, where there is one).
    pub fn new(id: impl Into<String>) -> Result<Self, Error> {
        let id = id.into();
        let invalid = |reason: String| Err(Error::InvalidRegistrationId { reason });
        if id.is_empty() {
            return invalid("it is empty".into());
        }
        let chars = id.chars().count();
        if chars > MAX_REGISTRATION_ID_LEN {
            return invalid(format!(
                "it has {chars} characters, at most {MAX_REGISTRATION_ID_LEN} are allowed"
            ));
        }
        if let Some((pos, c)) = id
            .chars()
            .enumerate()
            .find(|&(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':')))
        {
            return invalid(format!(
                "character {c:?} at position {pos} is not allowed (use A-Z, a-z, 0-9, '-', '.', '_', ':')"
            ));
        }
        // Non-empty and ASCII-only from here on.
        let last = id.as_bytes()[id.len() - 1];
        if !(last.is_ascii_alphanumeric() || last == b'-') {
            return invalid(format!(
                "it ends with {:?}; the last character must be alphanumeric or '-'",
                last as char
            ));
        }
        Ok(Self(id))
    }

    /// The id as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the id fits in an X.509 common name (at most 64 characters).
    pub fn fits_common_name(&self) -> bool {
        self.0.len() <= MAX_CN_LEN
    }
}

impl PartialEq for RegistrationId {
    fn eq(&self, other: &Self) -> bool {
        self.0.eq_ignore_ascii_case(&other.0)
    }
}

impl Eq for RegistrationId {}

impl Hash for RegistrationId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for b in self.0.bytes() {
            state.write_u8(b.to_ascii_lowercase());
        }
    }
}

impl fmt::Display for RegistrationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for RegistrationId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::new(s)
    }
}

impl AsRef<str> for RegistrationId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The registration id DPS expects for a TPM: lowercase RFC 4648 base32 of SHA-256 over the
/// marshaled endorsement key (the `TPM2B_PUBLIC` bytes sent as `endorsementKey`), with the `=`
/// padding stripped. Always 52 characters.
pub fn tpm_registration_id(marshaled_ek: &[u8]) -> RegistrationId {
    let digest = Sha256::digest(marshaled_ek);
    let encoded = data_encoding::BASE32_NOPAD
        .encode(&digest)
        .to_ascii_lowercase();
    // Base32 of 32 bytes is 52 characters from [a-z2-7]: always a valid registration id.
    RegistrationId(encoded)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn accepts_dps_examples() {
        for id in [
            "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6",
            "device.01_a:b",
            "A",
            "ends-with-",
            &"a".repeat(128),
        ] {
            RegistrationId::new(id).unwrap();
        }
    }

    #[test]
    fn rejects_with_a_reason() {
        let cases = [
            ("", "empty"),
            ("has space", "' ' at position 3"),
            ("slash/no", "'/' at position 5"),
            ("ümlaut", "'ü' at position 0"),
            ("ends.", "ends with '.'"),
            ("ends_", "ends with '_'"),
            ("ends:", "ends with ':'"),
        ];
        for (id, reason) in cases {
            let err = RegistrationId::new(id).unwrap_err().to_string();
            assert!(err.contains(reason), "{id:?}: {err}");
        }
        let err = RegistrationId::new("a".repeat(129))
            .unwrap_err()
            .to_string();
        assert!(err.contains("129 characters"), "{err}");
    }

    #[test]
    fn case_insensitive_equality_and_hash() {
        let a = RegistrationId::new("Device-A").unwrap();
        let b = RegistrationId::new("device-a").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.as_str(), "Device-A");
        let set: HashSet<_> = [a, b].into_iter().collect();
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn common_name_limit() {
        assert!(
            RegistrationId::new("a".repeat(64))
                .unwrap()
                .fits_common_name()
        );
        assert!(
            !RegistrationId::new("a".repeat(65))
                .unwrap()
                .fits_common_name()
        );
    }

    #[test]
    fn tpm_id_is_lowercase_unpadded_base32_of_sha256() {
        // SHA-256("abc") = ba7816bf...; its base32 computed independently with Python's
        // base64.b32encode(hashlib.sha256(b"abc").digest()).lower().rstrip("=").
        let id = tpm_registration_id(b"abc");
        assert_eq!(
            id.as_str(),
            "xj4bnp4pahh6uqkbidpf3lrceoyagyndsylxvhfucd7wd4qacwwq"
        );
        assert_eq!(id.as_str().len(), 52);
    }

    proptest! {
        #[test]
        fn valid_ids_round_trip(id in "[A-Za-z0-9._:-]{0,127}[A-Za-z0-9-]") {
            let parsed = RegistrationId::new(id.clone()).unwrap();
            prop_assert_eq!(parsed.as_str(), id.as_str());
        }

        #[test]
        fn arbitrary_text_never_panics(id in ".{0,200}") {
            let _ = RegistrationId::new(id);
        }

        #[test]
        fn tpm_ids_are_valid(ek in proptest::collection::vec(any::<u8>(), 0..400)) {
            let id = tpm_registration_id(&ek);
            prop_assert!(RegistrationId::new(id.as_str()).is_ok());
        }
    }
}
