//! The C SDK's certificate layout, byte for byte, with the small DER writer it needs: the RIoT
//! builder's quirks (UTF8String country, no NULL in the signature algorithm, key usage
//! `03 02 00 04`, an authority key identifier as `[0]` constructed around an OCTET STRING, its own
//! RIoT extension) are reproduced here and nowhere else.

use sha1::{Digest as _, Sha1};

const ECDSA_SHA256: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02];
const EC_PUBLIC_KEY: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];
const PRIME256V1: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
const CN: &[u8] = &[0x55, 0x04, 0x03];
const C: &[u8] = &[0x55, 0x04, 0x06];
const O: &[u8] = &[0x55, 0x04, 0x0A];
const KEY_USAGE: &[u8] = &[0x55, 0x1D, 0x0F];
const BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1D, 0x13];
const EXT_KEY_USAGE: &[u8] = &[0x55, 0x1D, 0x25];
const AUTHORITY_KEY_ID: &[u8] = &[0x55, 0x1D, 0x23];
const CLIENT_AUTH: &[u8] = &[0x2B, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];
const SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
const RIOT_EXTENSION: &[u8] = &[0x67, 0x81, 0x05, 0x05, 0x04, 0x01];

/// Validity of every certificate of the profile.
const VALID_FROM: &str = "170101000000Z";
const VALID_TO: &str = "370101000000Z";

/// A name of the profile: CN, C, O, in that order, all UTF8String.
pub(crate) struct SdkName<'a> {
    pub(crate) common_name: &'a str,
    pub(crate) organization: &'a str,
    pub(crate) country: &'a str,
}

/// An uncompressed P-256 point as the builder writes it (X and Y, 32 bytes each).
pub(crate) type Point = [u8; 64];

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 128 {
        out.push(len as u8);
    } else if len < 256 {
        out.extend([0x81, len as u8]);
    } else {
        out.extend([0x82, (len >> 8) as u8, len as u8]);
    }
    out.extend_from_slice(content);
    out
}

fn seq(parts: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

fn oid(value: &[u8]) -> Vec<u8> {
    tlv(0x06, value)
}

/// `DERAddIntegerFromArray`: leading zero bytes stripped, a `00` added before a high bit.
fn integer(bytes: &[u8]) -> Vec<u8> {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    let mut content = Vec::with_capacity(bytes.len() + 1);
    if bytes.get(start).is_some_and(|&b| b >= 0x80) {
        content.push(0);
    }
    content.extend_from_slice(&bytes[start..]);
    if content.is_empty() {
        content.push(0);
    }
    tlv(0x02, &content)
}

fn name(name: &SdkName<'_>) -> Vec<u8> {
    let attribute =
        |kind: &[u8], value: &str| tlv(0x31, &seq(&[&oid(kind), &tlv(0x0C, value.as_bytes())]));
    seq(&[
        &attribute(CN, name.common_name),
        &attribute(C, name.country),
        &attribute(O, name.organization),
    ])
}

fn spki(point: &Point) -> Vec<u8> {
    let mut bits = vec![0x00, 0x04];
    bits.extend_from_slice(point);
    seq(&[
        &seq(&[&oid(EC_PUBLIC_KEY), &oid(PRIME256V1)]),
        &tlv(0x03, &bits),
    ])
}

fn extension(kind: &[u8], critical: bool, value: &[u8]) -> Vec<u8> {
    let critical: &[u8] = if critical { &[0x01, 0x01, 0xFF] } else { &[] };
    seq(&[&oid(kind), critical, &tlv(0x04, value)])
}

fn key_usage_cert_sign() -> Vec<u8> {
    // BIT STRING, "0 unused bits", keyCertSign: the builder's own (non-minimal) encoding.
    extension(KEY_USAGE, false, &[0x03, 0x02, 0x00, 0x04])
}

fn basic_constraints(path_len: u8) -> Vec<u8> {
    extension(
        BASIC_CONSTRAINTS,
        true,
        &seq(&[&[0x01, 0x01, 0xFF], &[0x02, 0x01, path_len]]),
    )
}

fn authority_key_id(key_id: &[u8; 20]) -> Vec<u8> {
    extension(
        AUTHORITY_KEY_ID,
        false,
        &seq(&[&tlv(0xA0, &tlv(0x04, key_id))]),
    )
}

fn tbs(
    serial: &[u8; 5],
    issuer: &SdkName<'_>,
    subject: &SdkName<'_>,
    public: &Point,
    extensions: &[Vec<u8>],
) -> Vec<u8> {
    // The serial array is 8 bytes in this era: 5 given, 3 zero.
    let mut serial8 = [0u8; 8];
    serial8[..5].copy_from_slice(serial);
    let validity = seq(&[
        &tlv(0x17, VALID_FROM.as_bytes()),
        &tlv(0x17, VALID_TO.as_bytes()),
    ]);
    let extensions = tlv(
        0xA3,
        &seq(&extensions.iter().map(Vec::as_slice).collect::<Vec<_>>()),
    );
    seq(&[
        &[0xA0, 0x03, 0x02, 0x01, 0x02],
        &integer(&serial8),
        &seq(&[&oid(ECDSA_SHA256)]),
        &name(issuer),
        &validity,
        &name(subject),
        &spki(public),
        &extensions,
    ])
}

/// SHA-1 of the uncompressed point `04 || X || Y`.
pub(crate) fn key_id(point: &Point) -> [u8; 20] {
    let mut hasher = Sha1::new();
    hasher.update([0x04]);
    hasher.update(point);
    hasher.finalize().into()
}

/// The Alias certificate's TBS.
pub(crate) fn alias_tbs(
    issuer: &SdkName<'_>,
    subject: &SdkName<'_>,
    alias: &Point,
    device_id: &Point,
    fwid: &[u8; 32],
) -> Vec<u8> {
    let eku = extension(EXT_KEY_USAGE, false, &seq(&[&oid(CLIENT_AUTH)]));
    let fwid_seq = seq(&[&oid(SHA256), &tlv(0x04, fwid)]);
    let riot = extension(
        RIOT_EXTENSION,
        false,
        &seq(&[&[0x02, 0x01, 0x01], &spki(device_id), &fwid_seq]),
    );
    tbs(
        &[0x0A, 0x0B, 0x0C, 0x0D, 0x0E],
        issuer,
        subject,
        alias,
        &[
            key_usage_cert_sign(),
            eku,
            authority_key_id(&key_id(device_id)),
            riot,
        ],
    )
}

/// The DeviceID certificate's TBS. The SDK's authority key identifier hashes heap pointers, so
/// no fixed value matches it; this one is SHA-1 of the root's point.
pub(crate) fn device_id_tbs(
    issuer: &SdkName<'_>,
    subject: &SdkName<'_>,
    device_id: &Point,
    root: &Point,
) -> Vec<u8> {
    tbs(
        &[0x0E, 0x0D, 0x0C, 0x0B, 0x0A],
        issuer,
        subject,
        device_id,
        &[
            key_usage_cert_sign(),
            basic_constraints(1),
            authority_key_id(&key_id(root)),
        ],
    )
}

/// The root certificate's TBS (self-issued, path length 2, no key identifiers).
pub(crate) fn root_tbs(name: &SdkName<'_>, root: &Point) -> Vec<u8> {
    tbs(
        &[0x1A, 0x2B, 0x3C, 0x4D, 0x5E],
        name,
        name,
        root,
        &[key_usage_cert_sign(), basic_constraints(2)],
    )
}

/// `SEQUENCE { TBS, SEQUENCE { ecdsa-with-SHA256 }, BIT STRING { SEQUENCE { r, s } } }`, or `None`
/// where the SDK would have written an invalid signature (r or s below 2^248: its encoder then
/// emits stale stack bytes).
pub(crate) fn certificate(tbs: &[u8], r: &[u8; 32], s: &[u8; 32]) -> Option<Vec<u8>> {
    if r[0] == 0 || s[0] == 0 {
        return None;
    }
    let mut bits = vec![0x00];
    bits.extend(seq(&[&integer(r), &integer(s)]));
    Some(seq(&[tbs, &seq(&[&oid(ECDSA_SHA256)]), &tlv(0x03, &bits)]))
}

/// The EC private key in the profile's RFC 5915 layout.
pub(crate) fn ec_private_key(d: &[u8; 32], public: &Point) -> Vec<u8> {
    let mut bits = vec![0x00, 0x04];
    bits.extend_from_slice(public);
    seq(&[
        &[0x02, 0x01, 0x01],
        &tlv(0x04, d),
        &tlv(0xA0, &oid(PRIME256V1)),
        &tlv(0xA1, &tlv(0x03, &bits)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_follow_the_builder() {
        assert_eq!(integer(&[0, 0, 1]), [0x02, 0x01, 0x01]);
        assert_eq!(integer(&[0x80]), [0x02, 0x02, 0x00, 0x80]);
        assert_eq!(
            integer(&[0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0, 0, 0]),
            [0x02, 0x08, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0, 0, 0]
        );
        assert_eq!(tlv(0x04, &[0; 200])[..3], [0x04, 0x81, 200]);
        assert_eq!(tlv(0x04, &[0; 300])[..4], [0x04, 0x82, 0x01, 0x2C]);
    }
}
