//! Symmetric key: a SAS token signed with the enrollment's key (primary or secondary), or with
//! the key derived from a group's key and the registration id.

use super::{Authenticated, DPS_KEY_NAME, Signed, unauthorized};
use crate::enrollment::{Enrollment, EnrollmentGroup, GroupAttestation, KeyPair};
use crate::service::{AttestationKind, Reply, Request};

/// An individual enrollment's device.
pub(super) fn individual(
    request: &Request<'_>,
    signed: &Signed<'_>,
    enrollment: &Enrollment,
    keys: &KeyPair,
) -> Result<Authenticated, Reply> {
    signed
        .token
        .verify(signed.resource, signed.now, Some(DPS_KEY_NAME), keys.keys())
        .map_err(|e| unauthorized(request, &e.to_string()))?;
    Ok(Authenticated::individual(
        enrollment,
        request,
        AttestationKind::SymmetricKey,
        None,
    ))
}

/// A group member: the first symmetric-key group whose derived key signed the token.
pub(super) fn group(
    request: &Request<'_>,
    signed: &Signed<'_>,
    groups: &[EnrollmentGroup],
) -> Result<Authenticated, Reply> {
    let id = request.registration_id.as_str();
    for g in groups {
        let GroupAttestation::SymmetricKey(keys) = &g.attestation else {
            continue;
        };
        let derived = keys.derive(id);
        if signed
            .token
            .verify(
                signed.resource,
                signed.now,
                Some(DPS_KEY_NAME),
                derived.keys(),
            )
            .is_ok()
        {
            return Ok(Authenticated::group(
                g,
                request,
                AttestationKind::SymmetricKey,
            ));
        }
    }
    Err(unauthorized(
        request,
        "no enrolled key signed the SAS token",
    ))
}
