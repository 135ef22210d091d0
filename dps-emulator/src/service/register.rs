//! `PUT .../register` (and MQTT's `iotdps-register`): a device asks to be assigned.

use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::TpmKeys;
use super::{Operation, Reply, Request, Service, Transport};
use crate::clock::{now_rfc3339, random_hex, random_uuid};

/// The first API version that carries a CSR.
const CSR_API_VERSION: &str = "2025-07-01-preview";

/// The register request body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegisterBody {
    registration_id: Option<String>,
    tpm: Option<TpmBody>,
    payload: Option<Value>,
    csr: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TpmBody {
    endorsement_key: String,
    storage_root_key: String,
}

impl Service {
    /// Checks the body, authenticates the device (or challenges its TPM), assigns it and
    /// answers `202 assigning` with the operation to poll.
    pub(super) fn register(&self, request: &Request<'_>, body: &[u8]) -> Reply {
        let body: RegisterBody = match serde_json::from_slice(body) {
            Ok(b) => b,
            Err(e) => {
                return Reply::error(
                    400,
                    400004,
                    &format!("The request body is not a valid registration: {e}"),
                );
            }
        };
        if body
            .registration_id
            .as_deref()
            .is_some_and(|id| id != request.registration_id)
        {
            return Reply::error(
                400,
                400004,
                "The registrationId in the body does not match the URL.",
            );
        }
        let tpm = match &body.tpm {
            None => None,
            Some(t) => match (
                BASE64.decode(&t.endorsement_key),
                BASE64.decode(&t.storage_root_key),
            ) {
                (Ok(ek), Ok(srk)) if !ek.is_empty() && !srk.is_empty() => Some(TpmKeys { ek, srk }),
                _ => {
                    return Reply::error(
                        400,
                        400004,
                        "The TPM endorsement or storage root key is not base64.",
                    );
                }
            },
        };
        if tpm.is_some() && request.transport == Transport::Mqtt {
            return Reply::error(400, 400004, "TPM attestation is not supported over MQTT.");
        }
        let csr = match &body.csr {
            None => None,
            Some(_) if request.api_version.as_deref() < Some(CSR_API_VERSION) => {
                return Reply::error(
                    400,
                    400004,
                    &format!("A CSR needs api-version {CSR_API_VERSION} or later."),
                );
            }
            Some(csr) => match BASE64.decode(csr) {
                Ok(der) => Some(der),
                Err(_) => return Reply::error(400, 400004, "The CSR is not base64."),
            },
        };
        let auth = match self.authenticate(request, tpm.as_ref()) {
            Ok(a) => a,
            Err(reply) => return reply,
        };
        let operation_id = format!("5.{}.{}", random_hex(8), random_uuid());
        let state = if auth.common.enabled {
            match self.assign(request, &auth, body.payload, csr.as_deref()) {
                Ok(state) => state,
                Err(reply) => return reply,
            }
        } else {
            tracing::info!(registration_id = %request.registration_id, "enrollment disabled");
            json!({
                "registrationId": request.registration_id,
                "status": "disabled",
                "errorCode": 401002,
                "errorMessage": "The enrollment is disabled.",
                "createdDateTimeUtc": now_rfc3339(),
                "lastUpdatedDateTimeUtc": now_rfc3339(),
            })
        };
        self.lock().operations.insert(
            operation_id.clone(),
            Operation {
                registration_id: request.registration_id.clone(),
                state,
                polls_left: self.settings.assigning_polls,
                created: Instant::now(),
            },
            &self.limits,
        );
        Reply::json(
            202,
            &json!({"operationId": operation_id, "status": "assigning"}),
        )
        .with_retry_after(self.settings.retry_after)
    }
}
