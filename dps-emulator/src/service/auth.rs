//! Who is asking: the device's credential checked against the enrollments, one module per
//! mechanism. A TLS client certificate means X.509; a SAS token means a symmetric key (or a TPM
//! that has answered its challenge); EK and SRK without a token mean a TPM's first request,
//! answered with the challenge.

mod symmetric_key;
mod tpm;
mod x509;

pub(super) use tpm::activation_blob as tpm_activation_blob;

use zeroize::Zeroizing;

use super::{AttestationKind, Reply, Request, Service};
use crate::enrollment::{Common, Enrollment, EnrollmentGroup, IndividualAttestation};
use crate::sas::SasToken;

/// The key name (`skn`) of every DPS device token: "for the device API, this policy is always
/// `registration`" (Azure's "Control access to DPS").
const DPS_KEY_NAME: &str = "registration";

/// What authentication established.
pub(super) struct Authenticated {
    /// The enrollment's settings (hubs, allocation, payload, enabled).
    pub(super) common: Common,
    pub(super) device_id: String,
    /// The enrollment group, for group enrollments.
    pub(super) group: Option<String>,
    pub(super) attestation: AttestationKind,
    /// A TPM's keys, to send it the hub key on assignment.
    pub(super) tpm: Option<TpmKeys>,
}

impl Authenticated {
    /// A device of an individual enrollment (its device id, else the registration id).
    fn individual(
        enrollment: &Enrollment,
        request: &Request<'_>,
        attestation: AttestationKind,
        tpm: Option<TpmKeys>,
    ) -> Self {
        Self {
            common: enrollment.common.clone(),
            device_id: enrollment
                .device_id
                .clone()
                .unwrap_or_else(|| request.registration_id.clone()),
            group: None,
            attestation,
            tpm,
        }
    }

    /// A member of an enrollment group (its device id is its registration id).
    fn group(group: &EnrollmentGroup, request: &Request<'_>, attestation: AttestationKind) -> Self {
        Self {
            common: group.common.clone(),
            device_id: request.registration_id.clone(),
            group: Some(group.id.clone()),
            attestation,
            tpm: None,
        }
    }
}

/// A TPM's endorsement key and storage root key (marshaled `TPM2B_PUBLIC`s).
#[derive(Clone, Debug)]
pub(crate) struct TpmKeys {
    pub(crate) ek: Vec<u8>,
    pub(crate) srk: Vec<u8>,
}

/// The device-side half of a TPM registration: the key we duplicated to it.
pub(super) struct TpmSession {
    key: Zeroizing<Vec<u8>>,
}

/// The 401 a refused device gets; the reason goes to the log only, as DPS tells devices
/// nothing more.
fn unauthorized(request: &Request<'_>, why: &str) -> Reply {
    tracing::info!(registration_id = %request.registration_id, reason = why, "unauthorized");
    Reply::error(401, 401002, "The device is unauthorized.")
}

impl Service {
    /// Authenticates the device behind `request` (with its TPM's keys, for a register
    /// request that carries them). `Err` is the reply to send: 401, or the TPM challenge.
    pub(super) fn authenticate(
        &self,
        request: &Request<'_>,
        tpm: Option<&TpmKeys>,
    ) -> Result<Authenticated, Reply> {
        let id = request.registration_id.as_str();
        let enrollments = self.enrollments.read().unwrap_or_else(|e| e.into_inner());
        let individual = enrollments.individual.get(id);
        if let Some(leaf) = request.client_chain.first() {
            return x509::authenticate(request, leaf, individual, &enrollments.groups);
        }
        if let Some(header) = &request.authorization {
            let token =
                SasToken::parse(header).map_err(|e| unauthorized(request, &e.to_string()))?;
            let resource = format!("{}/registrations/{}", self.settings.id_scope, id);
            let signed = Signed {
                token: &token,
                resource: &resource,
                now: self.now(),
            };
            return match individual {
                Some(enrollment) => match &enrollment.attestation {
                    IndividualAttestation::SymmetricKey(keys) => {
                        symmetric_key::individual(request, &signed, enrollment, keys)
                    }
                    IndividualAttestation::Tpm { endorsement_key } => {
                        self.tpm_token(request, &signed, enrollment, endorsement_key, tpm)
                    }
                    IndividualAttestation::X509(_) => {
                        Err(unauthorized(request, "the enrollment is X.509"))
                    }
                },
                None => symmetric_key::group(request, &signed, &enrollments.groups),
            };
        }
        if let (Some(keys), Some(enrollment)) = (tpm, individual)
            && let IndividualAttestation::Tpm { endorsement_key } = &enrollment.attestation
        {
            if *endorsement_key != keys.ek {
                return Err(unauthorized(request, "the EK is not the enrolled one"));
            }
            return Err(self.tpm_challenge(id, keys));
        }
        Err(unauthorized(request, "no credential"))
    }
}

/// A SAS token and what it must have signed.
struct Signed<'a> {
    token: &'a SasToken,
    /// `{idScope}/registrations/{registrationId}`.
    resource: &'a str,
    /// Seconds since the epoch, for the expiry check.
    now: u64,
}
