//! X.509: the TLS client certificate, its CN the registration id, either the enrolled
//! certificate (or thumbprint) or a chain that verifies to an enrollment group's CA.

use std::time::SystemTime;

use rustls_pki_types::CertificateDer;

use super::{Authenticated, unauthorized};
use crate::enrollment::{
    Enrollment, EnrollmentGroup, GroupAttestation, IndividualAttestation, X509Match,
};
use crate::service::{AttestationKind, Reply, Request};

pub(super) fn authenticate(
    request: &Request<'_>,
    leaf: &CertificateDer<'static>,
    individual: Option<&Enrollment>,
    groups: &[EnrollmentGroup],
) -> Result<Authenticated, Reply> {
    let id = request.registration_id.as_str();
    if common_name(leaf).as_deref() != Some(id) {
        return Err(unauthorized(
            request,
            "certificate CN is not the registration id",
        ));
    }
    if let Some(e) = individual {
        let IndividualAttestation::X509(m) = &e.attestation else {
            return Err(unauthorized(request, "the enrollment is not X.509"));
        };
        let matches = match m {
            X509Match::Certificate(c) => c.as_ref() == leaf.as_ref(),
            X509Match::Thumbprint(t) => t.matches(leaf),
        };
        if !matches || !valid_now(leaf) {
            return Err(unauthorized(request, "certificate is not the enrolled one"));
        }
        return Ok(Authenticated::individual(
            e,
            request,
            AttestationKind::X509,
            None,
        ));
    }
    for g in groups {
        let GroupAttestation::X509Ca(ca) = &g.attestation else {
            continue;
        };
        if chain_verifies(leaf, &request.client_chain[1..], ca) {
            return Ok(Authenticated::group(g, request, AttestationKind::X509));
        }
    }
    Err(unauthorized(
        request,
        "no enrollment group CA verifies the chain",
    ))
}

/// The subject CN of a certificate, if it parses and has one.
fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    use der::Decode as _;
    let cert = x509_cert::Certificate::from_der(cert.as_ref()).ok()?;
    cert.tbs_certificate()
        .subject()
        .common_name()
        .ok()
        .flatten()
        .map(|cn| cn.value().into_owned())
}

fn valid_now(cert: &CertificateDer<'_>) -> bool {
    use der::Decode as _;
    let Ok(cert) = x509_cert::Certificate::from_der(cert.as_ref()) else {
        return false;
    };
    let validity = cert.tbs_certificate().validity();
    let now = SystemTime::now();
    validity.not_before.to_system_time() <= now && now <= validity.not_after.to_system_time()
}

fn chain_verifies(
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
