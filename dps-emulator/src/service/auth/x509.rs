//! X.509: the TLS client certificate, its CN the registration id, either the enrolled
//! certificate (or thumbprint) or a chain that verifies to an enrollment group's CA.

use rustls_pki_types::CertificateDer;

use super::{Authenticated, unauthorized};
use crate::enrollment::{
    Enrollment, EnrollmentGroup, GroupAttestation, IndividualAttestation, X509Match,
};
use crate::service::{AttestationKind, Reply, Request};
use crate::x509::{chain_verifies, common_name, valid_now};

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
