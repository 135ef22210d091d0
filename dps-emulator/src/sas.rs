//! Parsing and checking the SAS tokens devices send (untrusted input: never panics).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Why a SAS token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SasError {
    /// Not `SharedAccessSignature k=v&k=v...`.
    #[error("the authorization is not a SharedAccessSignature token")]
    NotSas,
    /// A field is missing, repeated or malformed.
    #[error("the SAS token's {0} field is missing, repeated or malformed")]
    Field(&'static str),
    /// The token does not apply to this registration.
    #[error("the SAS token's resource does not match the registration")]
    WrongResource,
    /// The token has expired.
    #[error("the SAS token has expired")]
    Expired,
    /// The key name (`skn`) is not the one the service expects: `registration` for DPS
    /// (as Azure documents it: for the device API the policy is always `registration`), none
    /// for a device's own key.
    #[error("the SAS token's key name (skn) {}", match expected {
        Some(name) => format!("must be '{name}'"),
        None => "must be absent for a device key".to_owned(),
    })]
    WrongKeyName {
        /// The key name expected, or `None` when there must be none.
        expected: Option<&'static str>,
    },
    /// No enrolled key produced this signature.
    #[error("the SAS token's signature does not verify")]
    BadSignature,
}

/// A parsed `SharedAccessSignature` token. Fields keep the text exactly as sent (`sr_raw`), since
/// the signature covers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SasToken {
    sr_raw: String,
    sr: String,
    sig: Vec<u8>,
    se: u64,
    skn: Option<String>,
}

impl SasToken {
    /// Parses a token (the whole `Authorization` header value or MQTT password).
    ///
    /// # Errors
    /// [`SasError::NotSas`] or [`SasError::Field`].
    pub fn parse(text: &str) -> Result<Self, SasError> {
        let rest = text
            .trim()
            .strip_prefix("SharedAccessSignature ")
            .ok_or(SasError::NotSas)?;
        let (mut sr, mut sig, mut se, mut skn) = (None, None, None, None);
        for pair in rest.split('&') {
            let (k, v) = pair.split_once('=').ok_or(SasError::Field("key=value"))?;
            let slot = match k {
                "sr" => &mut sr,
                "sig" => &mut sig,
                "se" => &mut se,
                "skn" => &mut skn,
                _ => continue,
            };
            if slot.replace(v).is_some() {
                return Err(SasError::Field(static_name(k)));
            }
        }
        let sr_raw = sr.ok_or(SasError::Field("sr"))?;
        let sr_decoded = hsm_core::percent::decode_utf8(sr_raw).ok_or(SasError::Field("sr"))?;
        let sig = hsm_core::percent::decode_utf8(sig.ok_or(SasError::Field("sig"))?)
            .and_then(|s| BASE64.decode(s).ok())
            .filter(|s| s.len() == 32)
            .ok_or(SasError::Field("sig"))?;
        let se = se
            .ok_or(SasError::Field("se"))?
            .parse::<u64>()
            .map_err(|_| SasError::Field("se"))?;
        let skn = skn
            .map(|s| hsm_core::percent::decode_utf8(s).ok_or(SasError::Field("skn")))
            .transpose()?;
        Ok(Self {
            sr_raw: sr_raw.to_owned(),
            sr: sr_decoded,
            sig,
            se,
            skn,
        })
    }

    /// The resource, decoded.
    pub fn resource(&self) -> &str {
        &self.sr
    }

    /// The expiry, in seconds since the Unix epoch.
    pub fn expiry(&self) -> u64 {
        self.se
    }

    /// The key name (`skn`), if the token has one.
    pub fn key_name(&self) -> Option<&str> {
        self.skn.as_deref()
    }

    /// Checks the token: its resource, its expiry, its key name (`key_name`, or none at all),
    /// and that one of `keys` signed it.
    ///
    /// # Errors
    /// The first check that failed.
    pub fn verify<'k>(
        &self,
        resource: &str,
        now: u64,
        key_name: Option<&'static str>,
        keys: impl IntoIterator<Item = &'k [u8]>,
    ) -> Result<(), SasError> {
        if !self.sr.eq_ignore_ascii_case(resource) {
            return Err(SasError::WrongResource);
        }
        if self.se <= now {
            return Err(SasError::Expired);
        }
        if self.skn.as_deref() != key_name {
            return Err(SasError::WrongKeyName { expected: key_name });
        }
        // Clients sign the `sr` text they send; accept the decoded form too (identical for the
        // plain encoding).
        let messages = [
            format!("{}\n{}", self.sr_raw, self.se),
            format!("{}\n{}", self.sr, self.se),
        ];
        for key in keys {
            for message in &messages {
                let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) else {
                    continue;
                };
                mac.update(message.as_bytes());
                if mac.verify_slice(&self.sig).is_ok() {
                    return Ok(());
                }
            }
        }
        Err(SasError::BadSignature)
    }
}

fn static_name(k: &str) -> &'static str {
    match k {
        "sr" => "sr",
        "sig" => "sig",
        "se" => "se",
        _ => "skn",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use hsm_core::{Expiry, RegistrationId, ResourceEncoding, SasTokenBuilder};
    use proptest::prelude::*;

    use super::*;

    fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    impl SasToken {
        fn sig_base64(&self) -> String {
            hsm_core::percent::encode(BASE64.encode(&self.sig).as_bytes())
        }
    }

    fn token(key: &[u8], encoding: ResourceEncoding, se: u64) -> String {
        let id = RegistrationId::new("dev-1").unwrap();
        SasTokenBuilder::for_registration("0ne0000A", &id)
            .encoding(encoding)
            .expiry(Expiry::At(se))
            .key_name("registration")
            .sign(|d| Ok(hmac(key, d)))
            .unwrap()
            .expose()
            .to_owned()
    }

    #[test]
    fn verifies_both_resource_encodings() {
        for encoding in [ResourceEncoding::LowercasePercent, ResourceEncoding::Plain] {
            let t = SasToken::parse(&token(b"k1", encoding, 2000)).unwrap();
            assert_eq!(t.resource(), "0ne0000A/registrations/dev-1");
            t.verify(
                "0ne0000A/registrations/dev-1",
                1000,
                Some("registration"),
                [&b"k0"[..], b"k1"],
            )
            .unwrap();
        }
    }

    #[test]
    fn refuses_wrong_key_expiry_resource() {
        let t = SasToken::parse(&token(b"k1", ResourceEncoding::Plain, 2000)).unwrap();
        let r = "0ne0000A/registrations/dev-1";
        let dps = Some("registration");
        assert_eq!(
            t.verify(r, 1000, dps, [&b"k2"[..]]),
            Err(SasError::BadSignature)
        );
        assert_eq!(t.verify(r, 2000, dps, [&b"k1"[..]]), Err(SasError::Expired));
        assert_eq!(
            t.verify("0ne0000A/registrations/dev-2", 1000, dps, [&b"k1"[..]]),
            Err(SasError::WrongResource)
        );
    }

    #[test]
    fn the_key_name_must_be_the_expected_one_and_not_missing() {
        let r = "0ne0000A/registrations/dev-1";
        let with = SasToken::parse(&token(b"k1", ResourceEncoding::Plain, 2000)).unwrap();
        assert_eq!(with.key_name(), Some("registration"));
        assert_eq!(
            with.verify(r, 1000, None, [&b"k1"[..]]),
            Err(SasError::WrongKeyName { expected: None })
        );
        let without = SasToken::parse(&format!(
            "SharedAccessSignature sr={r}&sig={}&se=2000",
            with.sig_base64()
        ))
        .unwrap();
        let dps = Some("registration");
        assert_eq!(
            without.verify(r, 1000, dps, [&b"k1"[..]]),
            Err(SasError::WrongKeyName { expected: dps })
        );
        let other = SasToken::parse(&format!(
            "SharedAccessSignature sr={r}&sig={}&se=2000&skn=owner",
            with.sig_base64()
        ))
        .unwrap();
        let refused = other.verify(r, 1000, dps, [&b"k1"[..]]).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "the SAS token's key name (skn) must be 'registration'"
        );
        without.verify(r, 1000, None, [&b"k1"[..]]).unwrap();
    }

    #[test]
    fn refuses_malformed() {
        assert_eq!(SasToken::parse("Bearer x"), Err(SasError::NotSas));
        assert_eq!(
            SasToken::parse("SharedAccessSignature sr=a&se=1"),
            Err(SasError::Field("sig"))
        );
        assert_eq!(
            SasToken::parse("SharedAccessSignature sr=a&sr=b&sig=x&se=1"),
            Err(SasError::Field("sr"))
        );
        assert_eq!(
            SasToken::parse("SharedAccessSignature sr=%zz&sig=x&se=1"),
            Err(SasError::Field("sr"))
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,200}") {
            let _ = SasToken::parse(&s);
            let _ = SasToken::parse(&format!("SharedAccessSignature {s}"));
        }
    }
}
