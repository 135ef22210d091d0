//! IoT Hub certificate management (preview): a connected device asks for a new certificate for
//! a CSR (`$iothub/credentials/POST/issueCertificate/?$rid=N`, body `{"id", "csr",
//! "replace"?}`) and gets `202 {"correlationId", "operationExpires"}` and then `200
//! {"correlationId", "certificates": [leaf, CA]}` on `$iothub/credentials/res/{status}/?$rid=N`.
//! The emulator checks what the hub checks: a connection made with API version
//! `2025-08-01-preview`, the device's own id, a CSR signed by its key whose common name is
//! the registration id, one request at a time. The new certificate is valid for the
//! emulator's issued-certificate lifetime and is accepted at the next connection, as the
//! earlier ones are until they expire.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use serde_json::json;

use super::Admitted;
use crate::faults::{FaultKind, FaultTarget};
use crate::service::Service;
use crate::tls::CsrError;

/// The API version certificate management needs.
pub(crate) const CERTIFICATE_API_VERSION: &str = "2025-08-01-preview";

/// A certificate request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IssueRequest {
    id: String,
    csr: String,
    #[serde(default)]
    replace: Option<String>,
}

/// What the hub answers a certificate request with: zero, one or two `(status, body)`
/// messages on the request's `$rid`, in order.
pub(crate) type Answers = Vec<(u16, Vec<u8>)>;

impl Service {
    /// Answers a certificate request of a connected device.
    pub(crate) fn issue_hub_certificate(&self, device: &Admitted, body: &[u8]) -> Answers {
        let error =
            |status: u16, code: u32, message: &str| vec![(status, error_body(code, message, None))];
        if !self.settings.hub_certificate_management {
            return error(
                403,
                403_010,
                "Certificate management is not available on this hub.",
            );
        }
        if device.api_version.as_deref() != Some(CERTIFICATE_API_VERSION) {
            return error(
                400,
                400_001,
                "Certificate management needs api-version 2025-08-01-preview.",
            );
        }
        let request: IssueRequest = match serde_json::from_slice(body) {
            Ok(request) => request,
            Err(_) => {
                return error(
                    400,
                    400_006,
                    "The request body is not a certificate request.",
                );
            }
        };
        if request.id != device.device_id {
            return error(400, 400_004, "The id is not the connected device's.");
        }
        if request
            .replace
            .as_deref()
            .is_some_and(|r| r != "*" && !valid_request_id(r))
        {
            return error(400, 400_004, "The replace value is not * or a request id.");
        }
        let Some(identity) = self.hub_identity(&device.device_id) else {
            return error(404, 404_001, "The device is not registered.");
        };
        let registration_id = identity.record.registration_id.clone();
        match self
            .faults
            .take(&registration_id, FaultTarget::Certificate)
            .map(|f| f.kind)
        {
            Some(FaultKind::Throttle { retry_after }) => {
                return vec![(
                    429,
                    error_body(429_002, "Too many certificate requests.", Some(retry_after)),
                )];
            }
            Some(FaultKind::Status { status }) => {
                return error(status, u32::from(status) * 1000 + 1, "Injected failure.");
            }
            // Accepted, and never answered: a lost operation.
            Some(FaultKind::Drop) => return vec![(202, accepted())],
            Some(FaultKind::MalformedBody) => {
                return vec![(202, accepted()), (200, b"{not json".to_vec())];
            }
            Some(FaultKind::Delay { .. }) | None => {}
        }
        let Ok(csr) = BASE64.decode(request.csr.trim()) else {
            return error(400, 400_040, "The CSR is not base64.");
        };
        if csr.len() > 8 * 1024 {
            return error(400, 400_004, "The CSR is larger than 8 KiB.");
        }
        let chain = match self.ca.issue_from_csr(
            &csr,
            &registration_id,
            self.settings.issued_certificate_validity,
        ) {
            Ok(chain) => chain,
            Err(e) => {
                let message = match e {
                    CsrError::Malformed => "The CSR is not a valid PKCS#10 request.",
                    CsrError::Signature => "The CSR's signature does not verify.",
                    CsrError::CommonName => "The CSR's common name must be the registration id.",
                };
                return vec![(202, accepted()), (400, error_body(400_037, message, None))];
            }
        };
        if let Some(leaf) = chain.first() {
            self.renew_issued_certificate(&device.device_id, leaf);
        }
        tracing::info!(device_id = %device.device_id, "certificate issued by the hub");
        let correlation = crate::clock::random_uuid();
        vec![
            (202, accepted()),
            (
                200,
                json!({
                    "correlationId": correlation,
                    "certificates": chain.iter().map(|c| BASE64.encode(c)).collect::<Vec<_>>(),
                })
                .to_string()
                .into_bytes(),
            ),
        ]
    }
}

/// A request id: 4 to 36 letters, digits and hyphens, not starting or ending with a hyphen.
fn valid_request_id(id: &str) -> bool {
    (4..=36).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !id.starts_with('-')
        && !id.ends_with('-')
}

fn accepted() -> Vec<u8> {
    let expires = time::OffsetDateTime::now_utc() + time::Duration::hours(12);
    json!({
        "correlationId": crate::clock::random_uuid(),
        "operationExpires": expires
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
    })
    .to_string()
    .into_bytes()
}

fn error_body(code: u32, message: &str, retry_after: Option<u32>) -> Vec<u8> {
    let mut body = json!({
        "errorCode": code,
        "message": message,
        "trackingId": crate::clock::random_hex(16),
        "timestampUtc": crate::clock::now_rfc3339(),
        "info": null,
    });
    if let Some(seconds) = retry_after {
        body["retryAfter"] = json!(seconds);
    }
    body.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids() {
        for good in ["0001", "abcd-1234", &"a".repeat(36)] {
            assert!(valid_request_id(good), "{good}");
        }
        for bad in ["abc", "-abc", "abc-", "ab_c", &"a".repeat(37)] {
            assert!(!valid_request_id(bad), "{bad}");
        }
    }
}
