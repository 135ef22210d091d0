//! PKCS#11 URIs (RFC 7512) as p11-kit and OpenSSL write them.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use hsm_core::SecretString;

/// Why a PKCS#11 URI was refused. Messages name the attribute and never echo a PIN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UriError {
    /// The text does not start with `pkcs11:`.
    #[error("not a PKCS#11 URI: it must start with \"pkcs11:\"")]
    MissingScheme,
    /// An attribute has no `=value`.
    #[error("attribute \"{0}\" has no '=' and value")]
    MissingValue(String),
    /// An attribute has an empty name (`;;` or `=value`).
    #[error("empty attribute name at byte {0}")]
    EmptyName(usize),
    /// An attribute name with characters other than letters, digits, `-` and `_`.
    #[error("attribute name {0:?} has characters other than letters, digits, '-' and '_'")]
    BadName(String),
    /// A `%` is not followed by two hex digits.
    #[error("invalid percent-encoding in attribute \"{0}\"")]
    BadPercentEncoding(String),
    /// A value that must be text is not UTF-8 after decoding.
    #[error("attribute \"{0}\" is not valid UTF-8 once decoded")]
    NotUtf8(String),
    /// The same attribute appears twice.
    #[error("attribute \"{0}\" appears more than once")]
    Duplicate(String),
    /// An attribute RFC 7512 does not define (vendor attributes start with `x-`).
    #[error("unknown attribute \"{0}\"")]
    Unknown(String),
    /// A path attribute in the query, or a query attribute in the path.
    #[error("attribute \"{name}\" belongs in the {expected} part of the URI")]
    WrongComponent {
        /// The attribute.
        name: String,
        /// `"path"` (before `?`) or `"query"` (after `?`).
        expected: &'static str,
    },
    /// `slot-id` is not a decimal number.
    #[error("slot-id \"{0}\" is not a decimal number")]
    BadSlotId(String),
    /// `type` is not one of the RFC 7512 object classes.
    #[error("type \"{0}\" is not one of private, public, cert, secret-key, data")]
    BadType(String),
    /// `library-version` is not `M` or `M.m`.
    #[error("library-version \"{0}\" is not M or M.m")]
    BadLibraryVersion(String),
    /// `pin-source` is neither a `file:` URI nor a path.
    #[error("pin-source \"{0}\" is not a file: URI or an absolute path")]
    BadPinSource(String),
}

/// The object class a URI names with `type=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectType {
    /// `private`: a private key.
    Private,
    /// `public`: a public key.
    Public,
    /// `cert`: a certificate.
    Certificate,
    /// `secret-key`: a secret (symmetric) key.
    SecretKey,
    /// `data`: a data object.
    Data,
}

impl ObjectType {
    fn as_str(self) -> &'static str {
        match self {
            Self::Private => "private",
            Self::Public => "public",
            Self::Certificate => "cert",
            Self::SecretKey => "secret-key",
            Self::Data => "data",
        }
    }
}

/// A parsed PKCS#11 URI. Every field is optional; an absent field matches anything.
///
/// ```
/// use hsm_pkcs11::Pkcs11Uri;
///
/// let uri: Pkcs11Uri = "pkcs11:token=dev;object=device%20key;id=%01%02;type=private\
///     ?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=1234".parse()?;
/// assert_eq!(uri.token.as_deref(), Some("dev"));
/// assert_eq!(uri.object.as_deref(), Some("device key"));
/// assert_eq!(uri.id.as_deref(), Some(&[1u8, 2][..]));
/// // The PIN never shows in Debug or Display.
/// assert!(!format!("{uri:?} {uri}").contains("1234"));
/// # Ok::<(), hsm_pkcs11::UriError>(())
/// ```
#[derive(Default)]
#[non_exhaustive]
pub struct Pkcs11Uri {
    /// `token`: the token label.
    pub token: Option<String>,
    /// `manufacturer`: the token manufacturer.
    pub manufacturer: Option<String>,
    /// `model`: the token model.
    pub model: Option<String>,
    /// `serial`: the token serial number.
    pub serial: Option<String>,
    /// `slot-description`.
    pub slot_description: Option<String>,
    /// `slot-manufacturer`.
    pub slot_manufacturer: Option<String>,
    /// `slot-id`: accepted, but tokens are selected by their attributes, since SoftHSM and others
    /// renumber slots.
    pub slot_id: Option<u64>,
    /// `library-description`.
    pub library_description: Option<String>,
    /// `library-manufacturer`.
    pub library_manufacturer: Option<String>,
    /// `library-version` as (major, minor).
    pub library_version: Option<(u8, u8)>,
    /// `object`: the object label (`CKA_LABEL`).
    pub object: Option<String>,
    /// `id`: the object id (`CKA_ID`), raw bytes.
    pub id: Option<Vec<u8>>,
    /// `type`: the object class.
    pub object_type: Option<ObjectType>,
    /// `pin-value`: the user PIN.
    pub pin_value: Option<SecretString>,
    /// `pin-source`: a file holding the user PIN.
    pub pin_source: Option<PathBuf>,
    /// `module-path`: the PKCS#11 module to load.
    pub module_path: Option<PathBuf>,
    /// `module-name`: the module's name, looked up in the usual module directories.
    pub module_name: Option<String>,
    /// Vendor attributes (`x-...`), in order.
    pub vendor: Vec<(String, String)>,
}

impl Pkcs11Uri {
    /// Parses a URI.
    ///
    /// # Errors
    /// A [`UriError`] naming what is wrong.
    pub fn parse(text: &str) -> Result<Self, UriError> {
        let rest = text
            .trim()
            .strip_prefix("pkcs11:")
            .ok_or(UriError::MissingScheme)?;
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let mut uri = Self::default();
        let mut seen: Vec<String> = Vec::new();
        let offset = text.len() - rest.len();
        for (component, separator, part) in [("path", ';', Some(path)), ("query", '&', query)] {
            let Some(part) = part else { continue };
            let mut position = offset;
            for attribute in part.split(separator) {
                let here = position;
                position += attribute.len() + 1;
                if attribute.is_empty() {
                    // A trailing separator or an empty path ("pkcs11:") is harmless.
                    continue;
                }
                let (name, raw) = attribute
                    .split_once('=')
                    .ok_or_else(|| UriError::MissingValue(attribute.to_owned()))?;
                if name.is_empty() {
                    return Err(UriError::EmptyName(here));
                }
                if !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    return Err(UriError::BadName(name.to_owned()));
                }
                let name = name.to_ascii_lowercase();
                if !name.starts_with("x-") && seen.contains(&name) {
                    return Err(UriError::Duplicate(name));
                }
                seen.push(name.clone());
                let bytes = hsm_core::percent::decode(raw)
                    .ok_or_else(|| UriError::BadPercentEncoding(name.clone()))?;
                uri.set(component, &name, bytes)?;
            }
        }
        Ok(uri)
    }

    fn set(&mut self, component: &'static str, name: &str, bytes: Vec<u8>) -> Result<(), UriError> {
        const QUERY: [&str; 4] = ["pin-value", "pin-source", "module-path", "module-name"];
        let is_query = QUERY.contains(&name);
        if !name.starts_with("x-") {
            match (component, is_query) {
                ("path", true) => {
                    return Err(UriError::WrongComponent {
                        name: name.to_owned(),
                        expected: "query",
                    });
                }
                ("query", false) if PATH_ATTRIBUTES.contains(&name) => {
                    return Err(UriError::WrongComponent {
                        name: name.to_owned(),
                        expected: "path",
                    });
                }
                _ => {}
            }
        }
        let text = |bytes: Vec<u8>| {
            String::from_utf8(bytes).map_err(|_| UriError::NotUtf8(name.to_owned()))
        };
        match name {
            "token" => self.token = Some(text(bytes)?),
            "manufacturer" => self.manufacturer = Some(text(bytes)?),
            "model" => self.model = Some(text(bytes)?),
            "serial" => self.serial = Some(text(bytes)?),
            "slot-description" => self.slot_description = Some(text(bytes)?),
            "slot-manufacturer" => self.slot_manufacturer = Some(text(bytes)?),
            "library-description" => self.library_description = Some(text(bytes)?),
            "library-manufacturer" => self.library_manufacturer = Some(text(bytes)?),
            "object" => self.object = Some(text(bytes)?),
            "id" => self.id = Some(bytes),
            "slot-id" => {
                let value = text(bytes)?;
                let id = value
                    .parse()
                    .ok()
                    .filter(|_| value.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or(UriError::BadSlotId(value))?;
                self.slot_id = Some(id);
            }
            "library-version" => {
                let value = text(bytes)?;
                self.library_version =
                    Some(parse_version(&value).ok_or(UriError::BadLibraryVersion(value))?);
            }
            "type" => {
                let value = text(bytes)?;
                self.object_type = Some(match value.as_str() {
                    "private" => ObjectType::Private,
                    "public" => ObjectType::Public,
                    "cert" => ObjectType::Certificate,
                    "secret-key" => ObjectType::SecretKey,
                    "data" => ObjectType::Data,
                    _ => return Err(UriError::BadType(value)),
                });
            }
            "pin-value" => {
                let pin = SecretString::new(String::from_utf8(bytes).map_err(|e| {
                    // Wipe the bytes before reporting: they are a PIN.
                    let mut bytes = e.into_bytes();
                    zeroize::Zeroize::zeroize(&mut bytes);
                    UriError::NotUtf8(name.to_owned())
                })?);
                self.pin_value = Some(pin);
            }
            "pin-source" => {
                let value = text(bytes)?;
                let path = value
                    .strip_prefix("file://")
                    .or_else(|| value.strip_prefix("file:"))
                    .unwrap_or(&value);
                if !path.starts_with('/') {
                    return Err(UriError::BadPinSource(value));
                }
                self.pin_source = Some(PathBuf::from(path));
            }
            "module-path" => self.module_path = Some(PathBuf::from(text(bytes)?)),
            "module-name" => self.module_name = Some(text(bytes)?),
            _ if name.starts_with("x-") => self.vendor.push((name.to_owned(), text(bytes)?)),
            _ => return Err(UriError::Unknown(name.to_owned())),
        }
        Ok(())
    }
}

const PATH_ATTRIBUTES: [&str; 13] = [
    "token",
    "manufacturer",
    "model",
    "serial",
    "slot-description",
    "slot-manufacturer",
    "slot-id",
    "library-description",
    "library-manufacturer",
    "library-version",
    "object",
    "id",
    "type",
];

impl Pkcs11Uri {
    /// Only the attributes that select a token (no object, PIN or module attributes).
    pub fn token_attributes(&self) -> Self {
        Self {
            token: self.token.clone(),
            manufacturer: self.manufacturer.clone(),
            model: self.model.clone(),
            serial: self.serial.clone(),
            slot_description: self.slot_description.clone(),
            slot_manufacturer: self.slot_manufacturer.clone(),
            slot_id: self.slot_id,
            ..Self::default()
        }
    }
}

impl FromStr for Pkcs11Uri {
    type Err = UriError;

    fn from_str(s: &str) -> Result<Self, UriError> {
        Self::parse(s)
    }
}

fn parse_version(value: &str) -> Option<(u8, u8)> {
    let (major, minor) = value.split_once('.').unwrap_or((value, "0"));
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Percent-encodes everything outside RFC 3986's unreserved set (and `id` always fully).
fn encode(out: &mut String, bytes: &[u8], all: bool) {
    out.push_str(&if all {
        hsm_core::percent::encode_every_byte_lowercase(bytes)
    } else {
        hsm_core::percent::encode_lowercase(bytes)
    });
}

impl fmt::Display for Pkcs11Uri {
    /// The URI in canonical form, with `pin-value` left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut path = Vec::new();
        let mut push = |name: &str, value: &[u8], all: bool| {
            let mut s = format!("{name}=");
            encode(&mut s, value, all);
            path.push(s);
        };
        let text_fields = [
            ("token", &self.token),
            ("manufacturer", &self.manufacturer),
            ("model", &self.model),
            ("serial", &self.serial),
            ("slot-description", &self.slot_description),
            ("slot-manufacturer", &self.slot_manufacturer),
            ("library-description", &self.library_description),
            ("library-manufacturer", &self.library_manufacturer),
            ("object", &self.object),
        ];
        for (name, value) in text_fields {
            if let Some(value) = value {
                push(name, value.as_bytes(), false);
            }
        }
        if let Some(id) = self.slot_id {
            push("slot-id", id.to_string().as_bytes(), false);
        }
        if let Some((major, minor)) = self.library_version {
            push(
                "library-version",
                format!("{major}.{minor}").as_bytes(),
                false,
            );
        }
        if let Some(id) = &self.id {
            push("id", id, true);
        }
        if let Some(t) = self.object_type {
            push("type", t.as_str().as_bytes(), false);
        }
        for (name, value) in &self.vendor {
            push(name, value.as_bytes(), false);
        }
        write!(f, "pkcs11:{}", path.join(";"))?;
        let mut query = Vec::new();
        if let Some(p) = &self.pin_source {
            let mut s = String::from("pin-source=");
            encode(&mut s, p.to_string_lossy().as_bytes(), false);
            query.push(s.replace("%2f", "/"));
        }
        if let Some(p) = &self.module_path {
            let mut s = String::from("module-path=");
            encode(&mut s, p.to_string_lossy().as_bytes(), false);
            query.push(s.replace("%2f", "/"));
        }
        if let Some(n) = &self.module_name {
            let mut s = String::from("module-name=");
            encode(&mut s, n.as_bytes(), false);
            query.push(s);
        }
        if !query.is_empty() {
            write!(f, "?{}", query.join("&"))?;
        }
        Ok(())
    }
}

impl fmt::Debug for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Pkcs11Uri")
            .field(&self.to_string())
            .field(&self.pin_value.as_ref().map(|_| "pin-value=[redacted]"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn parses_p11_kit_and_openssl_forms() {
        let uri = Pkcs11Uri::parse(
            "pkcs11:model=SoftHSM%20v2;manufacturer=SoftHSM%20project;serial=1b2c3d4e5f607182;\
             token=my%20token;id=%a1%b2;object=dev-key;type=private\
             ?pin-source=file:/run/pin&module-path=/usr/lib/softhsm/libsofthsm2.so",
        )
        .unwrap();
        assert_eq!(uri.model.as_deref(), Some("SoftHSM v2"));
        assert_eq!(uri.manufacturer.as_deref(), Some("SoftHSM project"));
        assert_eq!(uri.serial.as_deref(), Some("1b2c3d4e5f607182"));
        assert_eq!(uri.token.as_deref(), Some("my token"));
        assert_eq!(uri.id.as_deref(), Some(&[0xa1, 0xb2][..]));
        assert_eq!(uri.object.as_deref(), Some("dev-key"));
        assert_eq!(uri.object_type, Some(ObjectType::Private));
        assert_eq!(uri.pin_source, Some(PathBuf::from("/run/pin")));
        assert_eq!(
            uri.module_path,
            Some(PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"))
        );
        let uri =
            Pkcs11Uri::parse("pkcs11:slot-id=3;x-vendor=1?module-name=softhsm2&pin-value=12%2534")
                .unwrap();
        assert_eq!(uri.slot_id, Some(3));
        assert_eq!(uri.module_name.as_deref(), Some("softhsm2"));
        assert_eq!(uri.pin_value.as_ref().unwrap().expose(), "12%34");
        assert_eq!(uri.vendor, vec![("x-vendor".to_owned(), "1".to_owned())]);
        assert!(Pkcs11Uri::parse("pkcs11:").unwrap().token.is_none());
    }

    #[test]
    fn precise_errors() {
        let cases = [
            ("token=a", UriError::MissingScheme),
            ("pkcs11:token", UriError::MissingValue("token".into())),
            (
                "pkcs11:token=a;token=b",
                UriError::Duplicate("token".into()),
            ),
            ("pkcs11:tokn=a", UriError::Unknown("tokn".into())),
            ("pkcs11:id=%zz", UriError::BadPercentEncoding("id".into())),
            ("pkcs11:id=%1", UriError::BadPercentEncoding("id".into())),
            ("pkcs11:object=%ff%fe", UriError::NotUtf8("object".into())),
            ("pkcs11:slot-id=-1", UriError::BadSlotId("-1".into())),
            (
                "pkcs11:slot-id=99999999999999999999",
                UriError::BadSlotId("99999999999999999999".into()),
            ),
            ("pkcs11:type=key", UriError::BadType("key".into())),
            (
                "pkcs11:library-version=a.b",
                UriError::BadLibraryVersion("a.b".into()),
            ),
            (
                "pkcs11:?pin-source=relative",
                UriError::BadPinSource("relative".into()),
            ),
            (
                "pkcs11:pin-value=1",
                UriError::WrongComponent {
                    name: "pin-value".into(),
                    expected: "query",
                },
            ),
            (
                "pkcs11:?token=a",
                UriError::WrongComponent {
                    name: "token".into(),
                    expected: "path",
                },
            ),
            ("pkcs11:=a", UriError::EmptyName(7)),
            // Found by the pkcs11_uri fuzz target: a vendor name that cannot be printed back.
            (
                "pkcs11:?x-11:?x-H .H .=/",
                UriError::BadName("x-11:?x-H .H .".into()),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(Pkcs11Uri::parse(text).unwrap_err(), expected, "{text}");
        }
    }

    #[test]
    fn pin_never_shown() {
        let uri = Pkcs11Uri::parse("pkcs11:token=t?pin-value=s3cr3t-pin").unwrap();
        let shown = format!("{uri} {uri:?} {uri:#?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("[redacted]"));
        let err = Pkcs11Uri::parse("pkcs11:token=t?pin-value=%ff%fes3cr3t").unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"));
    }

    #[test]
    fn display_round_trips() {
        let text =
            "pkcs11:token=my%20token;object=key%3b1;id=%01%ff;type=cert?module-path=/usr/lib/x.so";
        let uri = Pkcs11Uri::parse(text).unwrap();
        let again = Pkcs11Uri::parse(&uri.to_string()).unwrap();
        assert_eq!(again.token, uri.token);
        assert_eq!(again.object.as_deref(), Some("key;1"));
        assert_eq!(again.id, uri.id);
        assert_eq!(again.object_type, uri.object_type);
        assert_eq!(again.module_path, uri.module_path);
    }

    proptest! {
        #[test]
        fn never_panics(text in "pkcs11:[ -~]{0,80}") {
            let _ = Pkcs11Uri::parse(&text);
        }

        #[test]
        fn encoded_values_round_trip(token in ".{1,20}", id in proptest::collection::vec(any::<u8>(), 1..20)) {
            let uri = Pkcs11Uri { token: Some(token.clone()), id: Some(id.clone()), ..Default::default() };
            let back = Pkcs11Uri::parse(&uri.to_string()).unwrap();
            prop_assert_eq!(back.token, Some(token));
            prop_assert_eq!(back.id, Some(id));
        }
    }
}
