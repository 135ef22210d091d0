//! TPM: the first request (EK and SRK, no token) gets a challenge, an activation blob only the
//! enrolled TPM can open, carrying a fresh key; the next request's SAS token must be signed
//! with that key.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::json;
use zeroize::Zeroizing;

use super::{Authenticated, DPS_KEY_NAME, Signed, TpmKeys, TpmSession, unauthorized};
use crate::clock::random_bytes;
use crate::enrollment::{Enrollment, IndividualAttestation};
use crate::service::{AttestationKind, Reply, Request, Service};

impl Service {
    /// Answers a TPM device's first request: 401 with an activation blob that only its TPM can
    /// open, carrying a fresh key it must sign its SAS token with.
    pub(super) fn tpm_challenge(&self, id: &str, keys: &TpmKeys) -> Reply {
        match self.issue_tpm_challenge(id, keys) {
            Ok(blob) => Reply::json(
                401,
                &json!({
                    "authenticationKey": BASE64.encode(blob),
                    "keyName": "registration",
                }),
            ),
            Err(reply) => reply,
        }
    }

    /// A fresh identity key for the TPM with these keys, kept for its next token, and the
    /// activation blob that carries it.
    fn issue_tpm_challenge(&self, id: &str, keys: &TpmKeys) -> Result<Vec<u8>, Reply> {
        let key = Zeroizing::new(random_bytes(32));
        match activation_blob(keys, &key) {
            Ok(blob) => {
                self.lock().tpm.insert(id.to_owned(), TpmSession { key });
                tracing::info!(registration_id = %id, "TPM challenge issued");
                Ok(blob)
            }
            Err(reason) => Err(Reply::error(
                400,
                400004,
                &format!("The TPM endorsement or storage root key is not usable: {reason}"),
            )),
        }
    }

    /// The SASL `TPM` challenge for `request`'s device: only for an individual TPM enrollment
    /// with this EK.
    pub(in crate::service) fn tpm_blob(
        &self,
        request: &Request<'_>,
        keys: &TpmKeys,
    ) -> Result<Vec<u8>, Reply> {
        let id = request.registration_id.as_str();
        let enrolled = {
            let enrollments = self.enrollments.read().unwrap_or_else(|e| e.into_inner());
            match enrollments.individual.get(id).map(|e| &e.attestation) {
                Some(IndividualAttestation::Tpm { endorsement_key }) => {
                    Some(*endorsement_key == keys.ek)
                }
                _ => None,
            }
        };
        match enrolled {
            Some(true) => self.issue_tpm_challenge(id, keys),
            Some(false) => Err(unauthorized(request, "the EK is not the enrolled one")),
            None => Err(unauthorized(request, "no TPM enrollment")),
        }
    }

    /// A TPM device's token after its challenge: signed with the key the challenge carried.
    pub(super) fn tpm_token(
        &self,
        request: &Request<'_>,
        signed: &Signed<'_>,
        enrollment: &Enrollment,
        endorsement_key: &[u8],
        tpm: Option<&TpmKeys>,
    ) -> Result<Authenticated, Reply> {
        if tpm.is_some_and(|keys| keys.ek != endorsement_key) {
            return Err(unauthorized(request, "the EK is not the enrolled one"));
        }
        let state = self.lock();
        let session = state
            .tpm
            .get(&request.registration_id)
            .ok_or_else(|| unauthorized(request, "no TPM challenge was issued"))?;
        signed
            .token
            .verify(
                signed.resource,
                signed.now,
                Some(DPS_KEY_NAME),
                [session.key.as_slice()],
            )
            .map_err(|e| unauthorized(request, &e.to_string()))?;
        Ok(Authenticated::individual(
            enrollment,
            request,
            AttestationKind::Tpm,
            tpm.cloned(),
        ))
    }
}

/// The DPS activation blob carrying `key` for the TPM with these keys (built in pure Rust by
/// `tpm-wire`: the credential made to the EK, the HMAC key duplicated to the SRK).
pub(in crate::service) fn activation_blob(keys: &TpmKeys, key: &[u8]) -> Result<Vec<u8>, String> {
    tpm_wire::build_activation(&keys.ek, &keys.srk, key)
        .and_then(|blob| blob.to_bytes())
        .map_err(|e| e.to_string())
}
