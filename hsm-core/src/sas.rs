use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use zeroize::Zeroizing;

use crate::{Error, RegistrationId};

/// How the resource URI (`sr`) is written into the token and into the string that is signed.
///
/// The service accepts both; the token signs exactly the `sr` it sends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResourceEncoding {
    /// URL-encoded with lowercase hex digits (`scope%2fregistrations%2fdevice`), as the C SDK
    /// writes it. The default.
    #[default]
    LowercasePercent,
    /// The resource as is (`scope/registrations/device`).
    Plain,
}

/// When a SAS token expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// At this many seconds since the Unix epoch.
    At(u64),
    /// This long after the token is built (read from the system clock).
    In(Duration),
}

impl Default for Expiry {
    /// One hour from now.
    fn default() -> Self {
        Self::In(Duration::from_secs(3600))
    }
}

/// Builds a shared access signature token:
/// `SharedAccessSignature sr={resource}&sig={signature}&se={expiry}[&skn={key name}]`, where
/// `signature = urlencode(base64(HMAC-SHA256(key, "{resource}\n{expiry}")))`.
///
/// The HMAC is computed by a caller-supplied function, so the key stays wherever it lives (a
/// symmetric-key driver, a PKCS#11 token, the TPM's identity key). Symmetric-key and TPM
/// attestation, and IoT Hub tokens, all build their tokens here.
///
/// ```
/// use hsm_core::{Expiry, RegistrationId, SasTokenBuilder};
/// # fn hmac(data: &[u8]) -> Result<[u8; 32], hsm_core::Error> { Ok([7; 32]) }
/// let id = RegistrationId::new("my-device")?;
/// let token = SasTokenBuilder::for_registration("0ne00000001", &id)
///     .expiry(Expiry::At(1_700_000_000))
///     .sign(hmac)?;
/// assert!(token.expose().starts_with(
///     "SharedAccessSignature sr=0ne00000001%2fregistrations%2fmy-device&sig="));
/// assert!(token.expose().ends_with("&se=1700000000&skn=registration"));
/// # Ok::<(), hsm_core::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct SasTokenBuilder {
    resource: String,
    key_name: Option<String>,
    expiry: Expiry,
    encoding: ResourceEncoding,
}

impl SasTokenBuilder {
    /// A token for `resource` (unencoded, e.g. `myhub.azure-devices.net/devices/dev1`), expiring
    /// in one hour, without a key name, with the lowercase URL encoding.
    pub fn new(resource: impl Into<String>) -> Self {
        Self {
            resource: resource.into(),
            key_name: None,
            expiry: Expiry::default(),
            encoding: ResourceEncoding::default(),
        }
    }

    /// A DPS registration token: resource `{id_scope}/registrations/{registration_id}`, key name
    /// `registration`.
    pub fn for_registration(id_scope: &str, registration_id: &RegistrationId) -> Self {
        Self::new(format!("{id_scope}/registrations/{registration_id}")).key_name("registration")
    }

    /// Sets the `skn` (key name) field.
    pub fn key_name(mut self, name: impl Into<String>) -> Self {
        self.key_name = Some(name.into());
        self
    }

    /// Sets the expiry.
    pub fn expiry(mut self, expiry: Expiry) -> Self {
        self.expiry = expiry;
        self
    }

    /// Sets how the resource is encoded.
    pub fn encoding(mut self, encoding: ResourceEncoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// The `sr` value as it will appear in the token.
    pub fn encoded_resource(&self) -> String {
        match self.encoding {
            ResourceEncoding::LowercasePercent => {
                crate::percent::encode_lowercase(self.resource.as_bytes())
            }
            ResourceEncoding::Plain => self.resource.clone(),
        }
    }

    /// Computes the expiry and the string to sign, `"{sr}\n{se}"`.
    ///
    /// # Errors
    /// [`Error::InvalidSasToken`] for an empty resource or an unreadable system clock.
    pub fn string_to_sign(&self) -> Result<(u64, String), Error> {
        if self.resource.is_empty() {
            return Err(Error::InvalidSasToken {
                reason: "the resource is empty",
            });
        }
        let se = match self.expiry {
            Expiry::At(se) => se,
            Expiry::In(ttl) => SystemTime::now()
                .checked_add(ttl)
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .ok_or(Error::InvalidSasToken {
                    reason: "the system clock is before 1970 or the expiry overflows",
                })?
                .as_secs(),
        };
        Ok((se, format!("{}\n{se}", self.encoded_resource())))
    }

    /// Builds the token, asking `hmac_sha256` for the HMAC-SHA256 of the string to sign.
    ///
    /// # Errors
    /// [`Error::InvalidSasToken`] as for [`string_to_sign`](Self::string_to_sign), or whatever
    /// `hmac_sha256` returns.
    pub fn sign(
        self,
        hmac_sha256: impl FnOnce(&[u8]) -> Result<[u8; 32], Error>,
    ) -> Result<SasToken, Error> {
        let (expiry, to_sign) = self.string_to_sign()?;
        let mac = Zeroizing::new(hmac_sha256(to_sign.as_bytes())?);
        let sig = crate::percent::encode(BASE64.encode(mac.as_slice()).as_bytes());
        let mut token = format!(
            "SharedAccessSignature sr={}&sig={sig}&se={expiry}",
            self.encoded_resource()
        );
        if let Some(skn) = &self.key_name {
            token.push_str("&skn=");
            token.push_str(&crate::percent::encode(skn.as_bytes()));
        }
        Ok(SasToken {
            token: Zeroizing::new(token),
            resource: self.resource,
            expiry,
        })
    }
}

/// A signed SAS token. It is a bearer credential until it expires, so `Debug` leaves out the
/// signature; use [`expose`](Self::expose) to put it on the wire.
pub struct SasToken {
    token: Zeroizing<String>,
    resource: String,
    expiry: u64,
}

impl SasToken {
    /// The whole token, `SharedAccessSignature sr=...`, for an `Authorization` header or an MQTT
    /// password.
    pub fn expose(&self) -> &str {
        &self.token
    }

    /// The resource the token grants access to (unencoded).
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// Expiry in seconds since the Unix epoch.
    pub fn expiry(&self) -> u64 {
        self.expiry
    }
}

impl fmt::Debug for SasToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SasToken")
            .field("resource", &self.resource)
            .field("expiry", &self.expiry)
            .field("signature", &"[redacted]")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use hmac::{Hmac, KeyInit, Mac};
    use sha2::Sha256;

    use super::*;

    fn hmac_with(key: &'static [u8]) -> impl FnOnce(&[u8]) -> Result<[u8; 32], Error> {
        move |data| {
            let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
            mac.update(data);
            Ok(mac.finalize().into_bytes().into())
        }
    }

    #[test]
    fn registration_token_known_answer() {
        // Expected value computed independently with Python's hmac/base64/urllib modules:
        // sr = "0ne00000001%2fregistrations%2fdevice-1", se = 1700000000, key = b"secret-key".
        let id = RegistrationId::new("device-1").unwrap();
        let token = SasTokenBuilder::for_registration("0ne00000001", &id)
            .expiry(Expiry::At(1_700_000_000))
            .sign(hmac_with(b"secret-key"))
            .unwrap();
        assert_eq!(
            token.expose(),
            include_str!("../tests/data/sas-lowercase.txt").trim()
        );
    }

    #[test]
    fn plain_encoding_signs_the_plain_resource() {
        let id = RegistrationId::new("device-1").unwrap();
        let token = SasTokenBuilder::for_registration("0ne00000001", &id)
            .encoding(ResourceEncoding::Plain)
            .expiry(Expiry::At(1_700_000_000))
            .sign(hmac_with(b"secret-key"))
            .unwrap();
        assert_eq!(
            token.expose(),
            include_str!("../tests/data/sas-plain.txt").trim()
        );
    }

    #[test]
    fn hub_token_has_no_key_name_and_signs_what_it_sends() {
        let builder = SasTokenBuilder::new("hub.example.net/devices/dev 1").expiry(Expiry::At(42));
        let (se, to_sign) = builder.string_to_sign().unwrap();
        assert_eq!(se, 42);
        assert_eq!(to_sign, "hub.example.net%2fdevices%2fdev%201\n42");
        let mut seen = Vec::new();
        let token = builder
            .sign(|data| {
                seen = data.to_vec();
                Ok([0xfb; 32])
            })
            .unwrap();
        assert_eq!(seen, to_sign.as_bytes());
        assert!(token.expose().ends_with("&se=42"), "{}", token.expose());
        // base64 of 0xfb.. contains '+' and '/' and '=', all of which must be encoded.
        assert!(
            token.expose().contains("sig=%2B%2Fv7"),
            "{}",
            token.expose()
        );
        assert!(token.expose().contains("%3D&se=42"), "{}", token.expose());
    }

    #[test]
    fn computed_expiry_is_in_the_future() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let token = SasTokenBuilder::new("r")
            .expiry(Expiry::In(Duration::from_secs(600)))
            .sign(|_| Ok([0; 32]))
            .unwrap();
        assert!((now + 599..=now + 601).contains(&token.expiry()));
    }

    #[test]
    fn errors_are_typed_and_debug_is_redacted() {
        assert!(matches!(
            SasTokenBuilder::new("").sign(|_| Ok([0; 32])),
            Err(Error::InvalidSasToken { .. })
        ));
        let failing = SasTokenBuilder::new("r").sign(|_| {
            Err(Error::device(
                "hmac",
                std::io::Error::other("token removed"),
            ))
        });
        assert!(matches!(
            failing,
            Err(Error::Device {
                operation: "hmac",
                ..
            })
        ));
        let token = SasTokenBuilder::new("r").sign(|_| Ok([0x11; 32])).unwrap();
        let shown = format!("{token:?}");
        assert!(!shown.contains("ERER"), "{shown}");
        assert!(shown.contains("[redacted]"));
    }
}
