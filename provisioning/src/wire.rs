//! DPS's JSON and MQTT topics: the request body we send, and the parser for everything that
//! comes back (untrusted input: every field is checked, nothing is assumed).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hsm_core::untrusted::quoted as quote;
use hsm_core::{CertificateDer, RegistrationId};
use serde::Deserialize;
use serde_json::Value;

use crate::ServiceError;

/// The largest response body (HTTPS) or payload (MQTT) the client reads.
pub(crate) const MAX_RESPONSE: usize = 64 * 1024;

/// The `tpm` member of a register request.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TpmKeys {
    pub(crate) endorsement_key: String,
    pub(crate) storage_root_key: String,
}

/// The register request body.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RegisterBody<'a> {
    pub(crate) registration_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tpm: Option<TpmKeys>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) payload: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) csr: Option<String>,
}

/// The status of a registration, as DPS reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RegistrationStatus {
    /// Not yet assigned (intermediate).
    Unassigned,
    /// Being assigned (intermediate).
    Assigning,
    /// Assigned to an IoT Hub.
    Assigned,
    /// Assignment failed.
    Failed,
    /// The enrollment is disabled.
    Disabled,
}

impl RegistrationStatus {
    fn parse(text: &str) -> Option<Self> {
        Some(match text.to_ascii_lowercase().as_str() {
            "unassigned" => Self::Unassigned,
            "assigning" => Self::Assigning,
            "assigned" => Self::Assigned,
            "failed" => Self::Failed,
            "disabled" => Self::Disabled,
            _ => return None,
        })
    }

    /// Whether polling goes on.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Unassigned | Self::Assigning)
    }

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unassigned => "unassigned",
            Self::Assigning => "assigning",
            Self::Assigned => "assigned",
            Self::Failed => "failed",
            Self::Disabled => "disabled",
        }
    }
}

impl std::fmt::Display for RegistrationStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A raw answer from either transport.
#[derive(Debug)]
pub(crate) struct RawResponse {
    pub(crate) status: u16,
    /// `Retry-After` (HTTPS header, parsed) or `retry-after` (MQTT topic), unclamped.
    pub(crate) retry_after: Option<Duration>,
    /// The service's time (HTTPS `Date`), when it said.
    pub(crate) date: Option<std::time::SystemTime>,
    pub(crate) body: bytes::Bytes,
}

/// `registrationState` once final, checked.
#[derive(Debug)]
pub(crate) struct FinalState {
    pub(crate) status: RegistrationStatus,
    pub(crate) assigned_hub: Option<String>,
    pub(crate) device_id: Option<String>,
    pub(crate) substatus: Option<String>,
    pub(crate) error_code: Option<u64>,
    pub(crate) error_message: Option<String>,
    pub(crate) created_date_time_utc: Option<String>,
    pub(crate) last_updated_date_time_utc: Option<String>,
    pub(crate) etag: Option<String>,
    pub(crate) payload: Option<Value>,
    pub(crate) enrollment_group_id: Option<String>,
    pub(crate) issued_certificate_chain: Vec<CertificateDer<'static>>,
    pub(crate) tpm_authentication_key: Option<Vec<u8>>,
}

/// What a response means for the registration.
#[derive(Debug)]
pub(crate) enum Reply {
    /// Accepted, still assigning: poll this operation.
    Pending {
        operation_id: String,
        retry_after: Option<Duration>,
    },
    /// The final registration state.
    Done(Box<FinalState>),
    /// The TPM challenge: 401 with an activation blob.
    Challenge { authentication_key: Vec<u8> },
    /// A DPS error status with its body.
    Status(ServiceError, Option<Duration>),
}

/// Why a response could not be used.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Malformed(pub(crate) String);

impl Malformed {
    fn new(reason: impl Into<String>) -> Self {
        Self(reason.into())
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OperationBody {
    operation_id: Option<String>,
    status: Option<String>,
    registration_state: Option<StateBody>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StateBody {
    registration_id: Option<String>,
    assigned_hub: Option<String>,
    device_id: Option<String>,
    status: Option<String>,
    substatus: Option<String>,
    error_code: Option<Value>,
    error_message: Option<String>,
    created_date_time_utc: Option<String>,
    last_updated_date_time_utc: Option<String>,
    etag: Option<String>,
    payload: Option<Value>,
    tpm: Option<TpmBody>,
    symmetric_key: Option<GroupBody>,
    x509: Option<GroupBody>,
    issued_certificate_chain: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TpmBody {
    authentication_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GroupBody {
    enrollment_group_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ErrorBody {
    error_code: Option<Value>,
    tracking_id: Option<String>,
    message: Option<String>,
    timestamp_utc: Option<String>,
    authentication_key: Option<String>,
}

/// DPS sends `errorCode` as a number; accept a numeric string too, ignore anything else.
fn error_code(value: Option<Value>) -> Option<u64> {
    match value? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn non_empty(field: Option<String>) -> Option<String> {
    field.filter(|s| !s.trim().is_empty())
}

/// Interprets one response. `operation_id` is the operation being polled (`None` for the
/// register request), `registration_id` the device's.
pub(crate) fn parse_reply(
    response: &RawResponse,
    operation_id: Option<&str>,
    registration_id: &RegistrationId,
) -> Result<Reply, Malformed> {
    match response.status {
        200..=299 => parse_operation(
            &response.body,
            response.retry_after,
            operation_id,
            registration_id,
        ),
        401 => {
            let body: Option<ErrorBody> = serde_json::from_slice(&response.body).ok();
            if let Some(key) = body.as_ref().and_then(|b| b.authentication_key.as_deref()) {
                let authentication_key = BASE64
                    .decode(key)
                    .map_err(|e| Malformed::new(format!("authenticationKey is not base64: {e}")))?;
                if authentication_key.is_empty() {
                    return Err(Malformed::new("authenticationKey is empty"));
                }
                return Ok(Reply::Challenge { authentication_key });
            }
            Ok(Reply::Status(
                service_error(401, body),
                response.retry_after,
            ))
        }
        status => {
            let body = serde_json::from_slice(&response.body).ok();
            Ok(Reply::Status(
                service_error(status, body),
                response.retry_after,
            ))
        }
    }
}

fn service_error(status: u16, body: Option<ErrorBody>) -> ServiceError {
    match body {
        None => ServiceError {
            status,
            ..ServiceError::default()
        },
        Some(b) => ServiceError {
            status,
            error_code: error_code(b.error_code),
            tracking_id: b.tracking_id,
            message: b.message,
            timestamp_utc: b.timestamp_utc,
        },
    }
}

fn parse_operation(
    body: &[u8],
    retry_after: Option<Duration>,
    expected_operation: Option<&str>,
    registration_id: &RegistrationId,
) -> Result<Reply, Malformed> {
    let body: OperationBody = serde_json::from_slice(body)
        .map_err(|e| Malformed::new(format!("not a DPS operation: {e}")))?;
    let operation_id = non_empty(body.operation_id);
    if let (Some(expected), Some(got)) = (expected_operation, operation_id.as_deref())
        && expected != got
    {
        return Err(Malformed::new(format!(
            "answers operation {}, not the one polled ({})",
            quote(got),
            quote(expected)
        )));
    }
    let state_status = body
        .registration_state
        .as_ref()
        .and_then(|s| s.status.as_deref());
    let status = match body.status.as_deref().or(state_status) {
        Some(text) => RegistrationStatus::parse(text)
            .ok_or_else(|| Malformed::new(format!("unknown status {}", quote(text))))?,
        // The DPS REST spec makes `status` optional: an accepted operation without one (what
        // Azure's own mock DPS answers a register request with) is still being assigned.
        None if operation_id.is_some() || expected_operation.is_some() => {
            RegistrationStatus::Assigning
        }
        None => return Err(Malformed::new("no status and no operationId")),
    };
    if !status.is_final() {
        let operation_id = operation_id
            .or_else(|| expected_operation.map(str::to_owned))
            .ok_or_else(|| Malformed::new("status is not final but there is no operationId"))?;
        return Ok(Reply::Pending {
            operation_id,
            retry_after,
        });
    }
    let state = body
        .registration_state
        .ok_or_else(|| Malformed::new(format!("status {status} without registrationState")))?;
    if let Some(s) = state.status.as_deref()
        && RegistrationStatus::parse(s) != Some(status)
    {
        return Err(Malformed::new(format!(
            "status {status} but registrationState.status {}",
            quote(s)
        )));
    }
    if let Some(id) = state.registration_id.as_deref()
        && !id.eq_ignore_ascii_case(registration_id.as_str())
    {
        return Err(Malformed::new(format!(
            "registrationState is for {}, not this device",
            quote(id)
        )));
    }
    let assigned_hub = non_empty(state.assigned_hub);
    let device_id = non_empty(state.device_id);
    if status == RegistrationStatus::Assigned {
        let hub = assigned_hub
            .as_deref()
            .ok_or_else(|| Malformed::new("assigned without assignedHub"))?;
        check_hub(hub)?;
        let device = device_id
            .as_deref()
            .ok_or_else(|| Malformed::new("assigned without deviceId"))?;
        if device.len() > 128 || device.chars().any(char::is_control) {
            return Err(Malformed::new("deviceId is not a device id"));
        }
    }
    let issued_certificate_chain = state
        .issued_certificate_chain
        .unwrap_or_default()
        .iter()
        .map(|c| {
            BASE64
                .decode(c)
                .map(CertificateDer::from)
                .map_err(|e| Malformed::new(format!("issuedCertificateChain is not base64: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let tpm_authentication_key = state
        .tpm
        .and_then(|t| t.authentication_key)
        .map(|k| {
            BASE64
                .decode(k)
                .map_err(|e| Malformed::new(format!("tpm.authenticationKey is not base64: {e}")))
        })
        .transpose()?;
    Ok(Reply::Done(Box::new(FinalState {
        status,
        assigned_hub,
        device_id,
        substatus: state.substatus,
        error_code: error_code(state.error_code),
        error_message: state.error_message,
        created_date_time_utc: state.created_date_time_utc,
        last_updated_date_time_utc: state.last_updated_date_time_utc,
        etag: state.etag,
        payload: state.payload,
        enrollment_group_id: state
            .symmetric_key
            .and_then(|g| g.enrollment_group_id)
            .or_else(|| state.x509.and_then(|g| g.enrollment_group_id)),
        issued_certificate_chain,
        tpm_authentication_key,
    })))
}

/// The hub name becomes a TLS server name and a SAS resource: it must be a DNS name, with an
/// optional port (Azure's mock DPS assigns `localhost:PORT`).
fn check_hub(hub: &str) -> Result<(), Malformed> {
    let (host, port) = match hub.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (hub, None),
    };
    let valid_host = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    let valid_port = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p != 0));
    if valid_host && valid_port {
        Ok(())
    } else {
        Err(Malformed::new(format!(
            "assignedHub {} is not a host name (with an optional port)",
            quote(hub)
        )))
    }
}

/// Parses `Retry-After`: delay seconds or an HTTP-date (RFC 9110 section 10.2.3).
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    // A date in the past means "now".
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// A DPS MQTT response topic: `$dps/registrations/res/{status}/?$rid={rid}[&retry-after={s}]`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ResponseTopic {
    pub(crate) status: u16,
    pub(crate) rid: String,
    pub(crate) retry_after: Option<Duration>,
}

pub(crate) const RESPONSE_PREFIX: &str = "$dps/registrations/res/";

pub(crate) fn parse_topic(topic: &str) -> Option<ResponseTopic> {
    let rest = topic.strip_prefix(RESPONSE_PREFIX)?;
    let (status, query) = rest.split_once("/?")?;
    let status: u16 = status.parse().ok()?;
    if !(100..=599).contains(&status) {
        return None;
    }
    let mut rid = None;
    let mut retry_after = None;
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "$rid" => rid = Some(value.to_owned()),
            "retry-after" => retry_after = value.parse::<u64>().ok().map(Duration::from_secs),
            _ => {}
        }
    }
    Some(ResponseTopic {
        status,
        rid: rid?,
        retry_after,
    })
}

/// Runs the response parsers on arbitrary input, for the fuzz target: an HTTP status and body,
/// and an MQTT topic. Never panics.
#[doc(hidden)]
pub fn fuzz_response(status: u16, body: &[u8], header_or_topic: &str) {
    let id = RegistrationId::new("fuzz-device").unwrap_or_else(|_| unreachable!("a valid id"));
    let response = RawResponse {
        status,
        retry_after: parse_retry_after(header_or_topic),
        date: httpdate::parse_http_date(header_or_topic).ok(),
        body: bytes::Bytes::copy_from_slice(body),
    };
    let _ = parse_reply(&response, None, &id);
    let _ = parse_reply(&response, Some("op"), &id);
    let _ = parse_topic(header_or_topic);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn id() -> RegistrationId {
        RegistrationId::new("dev-1").unwrap()
    }

    fn reply(status: u16, body: &str, op: Option<&str>) -> Result<Reply, Malformed> {
        parse_reply(
            &RawResponse {
                status,
                retry_after: None,
                date: None,
                body: bytes::Bytes::copy_from_slice(body.as_bytes()),
            },
            op,
            &id(),
        )
    }

    #[test]
    fn pending_and_assigned() {
        match reply(202, r#"{"operationId":"5.x","status":"assigning"}"#, None).unwrap() {
            Reply::Pending { operation_id, .. } => assert_eq!(operation_id, "5.x"),
            other => panic!("{other:?}"),
        }
        let done = reply(
            200,
            r#"{"operationId":"5.x","status":"assigned","registrationState":{
                "registrationId":"DEV-1","assignedHub":"hub.example.net","deviceId":"dev-1",
                "status":"assigned","substatus":"initialAssignment","payload":{"a":1},
                "symmetricKey":{"enrollmentGroupId":"g"},"issuedCertificateChain":["AQID"],
                "tpm":{"authenticationKey":"BAU="},"errorCode":"0"}}"#,
            Some("5.x"),
        )
        .unwrap();
        let Reply::Done(state) = done else {
            panic!("{done:?}")
        };
        assert_eq!(state.status, RegistrationStatus::Assigned);
        assert_eq!(state.assigned_hub.as_deref(), Some("hub.example.net"));
        assert_eq!(state.enrollment_group_id.as_deref(), Some("g"));
        assert_eq!(state.issued_certificate_chain[0].as_ref(), &[1, 2, 3]);
        assert_eq!(state.tpm_authentication_key.as_deref(), Some(&[4, 5][..]));
        assert_eq!(state.error_code, Some(0));
        assert_eq!(state.payload, Some(serde_json::json!({"a": 1})));
    }

    #[test]
    fn what_other_dps_implementations_send() {
        // The spec's minimal 202 (Azure's mock DPS): no status, still assigning.
        match reply(202, r#"{"operationId":"mock-1"}"#, None).unwrap() {
            Reply::Pending { operation_id, .. } => assert_eq!(operation_id, "mock-1"),
            other => panic!("{other:?}"),
        }
        // A hub with a port.
        let done = reply(
            200,
            r#"{"operationId":"o","status":"assigned","registrationState":{"assignedHub":"localhost:40123","deviceId":"d"}}"#,
            Some("o"),
        )
        .unwrap();
        let Reply::Done(state) = done else {
            panic!("{done:?}")
        };
        assert_eq!(state.assigned_hub.as_deref(), Some("localhost:40123"));
        for hub in [
            "localhost:",
            "localhost:0",
            "localhost:70000",
            ":443",
            "a:b:c",
        ] {
            let body = format!(
                r#"{{"status":"assigned","registrationState":{{"assignedHub":"{hub}","deviceId":"d"}}}}"#
            );
            assert!(reply(200, &body, None).is_err(), "{hub}");
        }
    }

    #[test]
    fn hostile_bodies_are_malformed() {
        for (status, body, op) in [
            (202, "not json", None),
            (202, r#"{"status":"assigning"}"#, None),
            (
                202,
                r#"{"operationId":"other","status":"assigning"}"#,
                Some("mine"),
            ),
            (200, r#"{"operationId":"a","status":"assigned"}"#, None),
            (200, r#"{"operationId":"a","status":"weird"}"#, None),
            (
                200,
                r#"{"status":"assigned","registrationState":{"deviceId":"d"}}"#,
                None,
            ),
            (
                200,
                r#"{"status":"assigned","registrationState":{"assignedHub":"h","registrationId":"someone-else","deviceId":"d"}}"#,
                None,
            ),
            (
                200,
                r#"{"status":"assigned","registrationState":{"assignedHub":"bad host/x","deviceId":"d"}}"#,
                None,
            ),
            (
                200,
                r#"{"status":"assigned","registrationState":{"assignedHub":"h","deviceId":"d","issuedCertificateChain":["!!"]}}"#,
                None,
            ),
            (
                200,
                r#"{"status":"assigned","registrationState":{"status":"failed","assignedHub":"h","deviceId":"d"}}"#,
                None,
            ),
            (401, r#"{"authenticationKey":"%%%"}"#, None),
        ] {
            assert!(reply(status, body, op).is_err(), "{status} {body}");
        }
    }

    #[test]
    fn errors_and_challenges() {
        match reply(
            401,
            r#"{"errorCode":401002,"trackingId":"t","message":"no","timestampUtc":"x"}"#,
            None,
        )
        .unwrap()
        {
            Reply::Status(e, _) => {
                assert_eq!((e.status, e.error_code), (401, Some(401002)));
                assert_eq!(e.message.as_deref(), Some("no"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            reply(401, r#"{"authenticationKey":"AAEC","keyName":"registration"}"#, None).unwrap(),
            Reply::Challenge { authentication_key } if authentication_key == [0, 1, 2]
        ));
        // An unparseable error body still yields the status.
        assert!(matches!(
            reply(503, "<html>", None).unwrap(),
            Reply::Status(
                ServiceError {
                    status: 503,
                    error_code: None,
                    ..
                },
                _
            )
        ));
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after(" 3 "), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("0"), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        let future = std::time::SystemTime::now() + Duration::from_secs(30);
        let parsed = parse_retry_after(&httpdate::fmt_http_date(future)).unwrap();
        assert!((Duration::from_secs(28)..=Duration::from_secs(30)).contains(&parsed));
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }

    #[test]
    fn topics() {
        assert_eq!(
            parse_topic("$dps/registrations/res/202/?$rid=7&retry-after=3"),
            Some(ResponseTopic {
                status: 202,
                rid: "7".into(),
                retry_after: Some(Duration::from_secs(3))
            })
        );
        assert_eq!(
            parse_topic("$dps/registrations/res/200/?$rid=8").map(|t| t.retry_after),
            Some(None)
        );
        for bad in [
            "",
            "$dps/registrations/res/",
            "$dps/registrations/res/abc/?$rid=1",
            "$dps/registrations/res/200/?retry-after=1",
            "$dps/registrations/res/99999/?$rid=1",
            "devices/x/messages",
        ] {
            assert_eq!(parse_topic(bad), None, "{bad}");
        }
    }
}
