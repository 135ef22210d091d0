//! Checks on the client certificates devices present, to DPS and to their hubs: the common
//! name, the validity period, and a chain to a CA (webpki, for client authentication).

use std::time::SystemTime;

use rustls_pki_types::CertificateDer;

/// The subject CN of a certificate, if it parses and has one.
pub(crate) fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    use der::Decode as _;
    let cert = x509_cert::Certificate::from_der(cert.as_ref()).ok()?;
    cert.tbs_certificate()
        .subject()
        .common_name()
        .ok()
        .flatten()
        .map(|cn| cn.value().into_owned())
}

/// Whether the certificate parses and is valid at this moment.
pub(crate) fn valid_now(cert: &CertificateDer<'_>) -> bool {
    use der::Decode as _;
    let Ok(cert) = x509_cert::Certificate::from_der(cert.as_ref()) else {
        return false;
    };
    let validity = cert.tbs_certificate().validity();
    let now = SystemTime::now();
    validity.not_before.to_system_time() <= now && now <= validity.not_after.to_system_time()
}

/// Whether `leaf` (with these intermediates) verifies to `ca` for client authentication, now.
pub(crate) fn chain_verifies(
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'static>],
    ca: &CertificateDer<'static>,
) -> bool {
    let Ok(anchor) = webpki::anchor_from_trusted_cert(ca) else {
        return false;
    };
    let Ok(ee) = webpki::EndEntityCert::try_from(leaf) else {
        return false;
    };
    let now = rustls_pki_types::UnixTime::now();
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &[anchor],
        intermediates,
        now,
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .is_ok()
}
