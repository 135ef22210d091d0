use der::{Decode as _, Encode as _, Reader as _, SliceReader};
use hsm_core::CertificateDer;
use x509_cert::Certificate;

use crate::{Error, pem};

/// Loads a certificate chain from PEM (every `CERTIFICATE` block, in order; other blocks such as
/// a private key in the same file are skipped) or DER (one or more concatenated certificates).
///
/// Each certificate is parsed, so a malformed one is reported by its position.
///
/// # Errors
/// [`Error::MalformedPem`], [`Error::MalformedCertificate`], or [`Error::EmptyChain`] when the
/// input holds no certificate.
pub fn load_certificates(input: &[u8]) -> Result<Vec<CertificateDer<'static>>, Error> {
    let ders: Vec<Vec<u8>> = if pem::is_pem(input) {
        pem::parse(input)?
            .into_iter()
            .filter(|b| matches!(b.label.as_str(), "CERTIFICATE" | "X509 CERTIFICATE"))
            .map(|b| b.der.to_vec())
            .collect()
    } else {
        split_der(input)?
    };
    if ders.is_empty() {
        return Err(Error::EmptyChain);
    }
    for (index, der) in ders.iter().enumerate() {
        Certificate::from_der(der)
            .map_err(|source| Error::MalformedCertificate { index, source })?;
    }
    Ok(ders.into_iter().map(CertificateDer::from).collect())
}

/// Splits concatenated DER certificates.
fn split_der(input: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
    let mut out = Vec::new();
    let mut reader = SliceReader::new(input)
        .map_err(|source| Error::MalformedCertificate { index: 0, source })?;
    while !reader.is_finished() {
        let index = out.len();
        let cert = Certificate::decode(&mut reader)
            .map_err(|source| Error::MalformedCertificate { index, source })?;
        out.push(
            cert.to_der()
                .map_err(|source| Error::MalformedCertificate { index, source })?,
        );
    }
    Ok(out)
}
