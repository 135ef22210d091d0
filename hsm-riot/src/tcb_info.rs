//! The TCG DICE `TcbInfo` extension (OID 2.23.133.5.4.1), encoded with the `der` crate.

use der::asn1::{ObjectIdentifier, OctetStringRef, Utf8StringRef};
use der::{Encode as _, Sequence};

/// OID of the TCG DICE TcbInfo extension.
pub const TCB_INFO_OID: &[u64] = &[2, 23, 133, 5, 4, 1];
const SHA256_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");

/// `FWID ::= SEQUENCE { hashAlg OBJECT IDENTIFIER, digest OCTET STRING }`
#[derive(Sequence)]
struct Fwid<'a> {
    hash_alg: ObjectIdentifier,
    digest: &'a OctetStringRef,
}

/// `DiceTcbInfo`, the fields this engine fills: vendor [0], model [1], layer [4], fwids [6].
#[derive(Sequence)]
struct DiceTcbInfo<'a> {
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT", optional = "true")]
    vendor: Option<Utf8StringRef<'a>>,
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", optional = "true")]
    model: Option<Utf8StringRef<'a>>,
    #[asn1(context_specific = "4", tag_mode = "IMPLICIT", optional = "true")]
    layer: Option<u32>,
    #[asn1(context_specific = "6", tag_mode = "IMPLICIT", optional = "true")]
    fwids: Option<Vec<Fwid<'a>>>,
}

/// The DER value of a TcbInfo extension carrying `fwid` (SHA-256) for `layer`.
pub(crate) fn encode(
    vendor: Option<&str>,
    model: Option<&str>,
    layer: u32,
    fwid: &[u8; 32],
) -> Result<Vec<u8>, der::Error> {
    let info = DiceTcbInfo {
        vendor: vendor.map(Utf8StringRef::new).transpose()?,
        model: model.map(Utf8StringRef::new).transpose()?,
        layer: Some(layer),
        fwids: Some(vec![Fwid {
            hash_alg: SHA256_OID,
            digest: OctetStringRef::new(fwid)?,
        }]),
    };
    info.to_der()
}

/// The FWID digests in a TcbInfo extension value (for tests and verifiers).
pub fn fwids(value: &[u8]) -> Result<Vec<Vec<u8>>, der::Error> {
    use der::Decode as _;
    let info = DiceTcbInfo::from_der(value)?;
    Ok(info
        .fwids
        .unwrap_or_default()
        .into_iter()
        .map(|f| f.digest.as_bytes().to_vec())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_the_fwid() {
        let value = encode(Some("vendor"), None, 1, &[0xab; 32]).unwrap();
        assert_eq!(value[0], 0x30, "a SEQUENCE");
        assert_eq!(fwids(&value).unwrap(), vec![vec![0xab; 32]]);
        // [0] IMPLICIT UTF8String "vendor" comes first.
        assert_eq!(&value[2..4], &[0x80, 6]);
    }
}
