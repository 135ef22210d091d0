//! PEM text out of DER (RFC 7468: 64 base64 characters a line), the one encoder the drivers,
//! the client and the CLI share. Reading PEM is `rustls-pki-types`' `PemObject`, or
//! `hsm-x509`'s loaders with their typed errors.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rustls_pki_types::CertificateDer;
use zeroize::Zeroizing;

/// `-----BEGIN {label}-----`, the base64 of `der` in lines of 64 characters, and
/// `-----END {label}-----`, each line ending in `\n`.
///
/// The text is built in one buffer sized up front (no reallocation leaves a copy behind) and
/// the intermediate base64 is zeroized, so a private key's PEM can be made and then wrapped
/// in `Zeroizing` by the caller.
pub fn encode(label: &str, der: &[u8]) -> String {
    let body = Zeroizing::new(BASE64.encode(der));
    let mut pem = String::with_capacity(body.len() + body.len() / 64 + 2 * label.len() + 40);
    pem.push_str("-----BEGIN ");
    pem.push_str(label);
    pem.push_str("-----\n");
    for line in body.as_bytes().chunks(64) {
        // Base64 is ASCII: every chunk is UTF-8.
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END ");
    pem.push_str(label);
    pem.push_str("-----\n");
    pem
}

/// A certificate chain as PEM, in order.
pub fn chain(certificates: &[CertificateDer<'_>]) -> String {
    certificates
        .iter()
        .map(|c| encode("CERTIFICATE", c))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rustls_pki_types::pem::PemObject as _;

    use super::*;

    #[test]
    fn round_trips() {
        for len in [0, 1, 47, 48, 49, 100, 1000] {
            let der: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let pem = encode("CERTIFICATE", &der);
            assert!(pem.lines().all(|l| l.len() <= 64), "{pem}");
            assert!(pem.ends_with("-----END CERTIFICATE-----\n"));
            if len > 0 {
                let back = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
                assert_eq!(back.as_ref(), der.as_slice());
            }
        }
        let two = chain(&[
            CertificateDer::from(vec![1u8; 5]),
            CertificateDer::from(vec![2u8; 9]),
        ]);
        let back: Vec<_> = CertificateDer::pem_slice_iter(two.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[1].as_ref(), &[2u8; 9][..]);
    }
}
