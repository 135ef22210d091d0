//! Percent-encoding (RFC 3986) for the places our protocols need it: SAS token fields, URL
//! paths, MQTT topics and PKCS#11 URIs. Everything but the unreserved characters
//! (`A-Z a-z 0-9 - . _ ~`) is encoded; decoding is strict.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode, percent_encode};

/// Every byte but RFC 3986's unreserved characters.
const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes every byte outside the unreserved set, with uppercase hex digits (`%2F`), as
/// RFC 3986 recommends.
pub fn encode(bytes: &[u8]) -> String {
    percent_encode(bytes, NOT_UNRESERVED).to_string()
}

/// As [`encode`], with lowercase hex digits (`%2f`): the form the Azure IoT C SDK writes into a
/// SAS token's `sr`, and PKCS#11 URIs conventionally use.
pub fn encode_lowercase(bytes: &[u8]) -> String {
    lowercase(bytes, NOT_UNRESERVED)
}

/// Percent-encodes every byte, unreserved ones too, with lowercase hex digits (`%01%ab`): the
/// form RFC 7512 recommends for a PKCS#11 URI's binary `id`.
pub fn encode_every_byte_lowercase(bytes: &[u8]) -> String {
    const EVERY_BYTE: &AsciiSet = &AsciiSet::EMPTY.complement();
    lowercase(bytes, EVERY_BYTE)
}

fn lowercase(bytes: &[u8], set: &'static AsciiSet) -> String {
    percent_encode(bytes, set)
        .map(|chunk| {
            if chunk.starts_with('%') {
                chunk.to_ascii_lowercase()
            } else {
                chunk.to_owned()
            }
        })
        .collect()
}

/// Decodes `%XX` escapes (either case) and nothing else; `None` when a `%` is not followed by
/// two hex digits.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let well_formed = bytes.iter().enumerate().all(|(i, &b)| {
        b != b'%'
            || bytes
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    well_formed.then(|| percent_decode(bytes).collect())
}

/// [`decode`], then UTF-8; `None` for a bad escape or bytes that are not UTF-8.
pub fn decode_utf8(text: &str) -> Option<String> {
    String::from_utf8(decode(text)?).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn known_answers() {
        assert_eq!(encode(b"5.ab-c_d~"), "5.ab-c_d~");
        assert_eq!(encode(b"a/b?c&d=e f"), "a%2Fb%3Fc%26d%3De%20f");
        assert_eq!(
            encode_lowercase(b"Scope/registrations/D+1"),
            "Scope%2fregistrations%2fD%2b1"
        );
        assert_eq!(decode("a%2Fb%2fc").unwrap(), b"a/b/c");
        assert_eq!(encode_every_byte_lowercase(b"a\x01\xff"), "%61%01%ff");
        for bad in ["%", "%2", "%zz", "a%g0", "%2%41"] {
            assert_eq!(decode(bad), None, "{bad}");
        }
        assert_eq!(decode_utf8("%ff"), None);
    }

    proptest! {
        #[test]
        fn round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(decode(&encode(&bytes)).unwrap(), bytes.clone());
            prop_assert_eq!(decode(&encode_lowercase(&bytes)).unwrap(), bytes.clone());
            prop_assert_eq!(decode(&encode_every_byte_lowercase(&bytes)).unwrap(), bytes.clone());
            let encoded = encode(&bytes);
            prop_assert!(encoded.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)));
        }
    }
}
