//! IoT Hub's MQTT names: the CONNECT user name, the telemetry topic and its property bag, the
//! twin and certificate-management topics, and the response topics and bodies (untrusted
//! input: parsing never panics).

use der::Decode as _;
use hsm_core::CertificateDer;
use serde_json::{Map, Value};

use crate::ServiceError;
use crate::client::USER_AGENT_VALUE;

/// The kinds of request answered on a response topic, each with its subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Channel {
    /// `$iothub/twin/res/{status}/?$rid=...`
    Twin,
    /// `$iothub/credentials/res/{status}/?$rid=...` (certificate management, preview)
    Credentials,
}

impl Channel {
    /// The topic filter its answers arrive on.
    pub(super) fn filter(self) -> &'static str {
        match self {
            Self::Twin => "$iothub/twin/res/#",
            Self::Credentials => "$iothub/credentials/res/#",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Self::Twin => "$iothub/twin/res/",
            Self::Credentials => "$iothub/credentials/res/",
        }
    }
}

/// The IoT Hub API version with certificate management (preview).
pub const CERTIFICATE_API_VERSION: &str = "2025-08-01-preview";

/// `{hub}/{deviceId}/?api-version={v}[&model-id={m}]&DeviceClientType={agent}`.
pub(super) fn username(
    hub: &str,
    device_id: &str,
    api_version: &str,
    model_id: Option<&str>,
) -> String {
    let mut name = format!("{hub}/{device_id}/?api-version={api_version}");
    if let Some(model) = model_id {
        name.push_str("&model-id=");
        name.push_str(&hsm_core::percent::encode(model.as_bytes()));
    }
    name.push_str("&DeviceClientType=");
    name.push_str(&hsm_core::percent::encode(USER_AGENT_VALUE.as_bytes()));
    name
}

/// `devices/{deviceId}/messages/events/{property bag}`, every name and value percent-encoded.
pub(super) fn telemetry_topic(device_id: &str, properties: &[(String, String)]) -> String {
    let mut topic = format!("devices/{device_id}/messages/events/");
    for (i, (name, value)) in properties.iter().enumerate() {
        if i > 0 {
            topic.push('&');
        }
        topic.push_str(&hsm_core::percent::encode(name.as_bytes()));
        topic.push('=');
        topic.push_str(&hsm_core::percent::encode(value.as_bytes()));
    }
    topic
}

pub(super) fn twin_get_topic(rid: &str) -> String {
    format!("$iothub/twin/GET/?$rid={rid}")
}

pub(super) fn twin_patch_topic(rid: &str) -> String {
    format!("$iothub/twin/PATCH/properties/reported/?$rid={rid}")
}

pub(super) fn issue_certificate_topic(rid: &str) -> String {
    format!("$iothub/credentials/POST/issueCertificate/?$rid={rid}")
}

/// `$iothub/{twin|credentials}/res/{status}/?$rid={rid}[&$version={v}][&...]`, parsed.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct ResponseTopic {
    pub(super) channel: Channel,
    pub(super) status: u16,
    pub(super) rid: String,
    pub(super) version: Option<u64>,
}

/// Parses a response topic; `None` for any other topic or a malformed one.
pub(super) fn response_topic(topic: &str) -> Option<ResponseTopic> {
    let (channel, rest) = [Channel::Twin, Channel::Credentials]
        .into_iter()
        .find_map(|c| Some((c, topic.strip_prefix(c.prefix())?)))?;
    let (status, query) = rest.split_once('/')?;
    let query = query.strip_prefix('?')?;
    let mut rid = None;
    let mut version = None;
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "$rid" => rid = Some(hsm_core::percent::decode_utf8(value)?),
            "$version" => version = value.parse().ok(),
            _ => {}
        }
    }
    Some(ResponseTopic {
        channel,
        status: status.parse().ok()?,
        rid: rid?,
        version,
    })
}

/// A device twin's properties, as the device reads them.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Twin {
    /// The desired properties (what the solution asks of the device), without `$version`.
    pub desired: Map<String, Value>,
    /// The desired properties' version.
    pub desired_version: u64,
    /// The reported properties (what the device said about itself), without `$version`.
    pub reported: Map<String, Value>,
    /// The reported properties' version.
    pub reported_version: u64,
}

/// Why a twin body could not be read.
pub(super) type Malformed = String;

impl Twin {
    /// Parses a twin GET answer: `{"desired": {..., "$version": N}, "reported": {...}}`.
    pub(super) fn parse(body: &[u8]) -> Result<Self, Malformed> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| format!("the twin is not JSON ({e})"))?;
        let section = |name: &str| -> Result<(Map<String, Value>, u64), Malformed> {
            let mut section = value
                .get(name)
                .and_then(Value::as_object)
                .cloned()
                .ok_or_else(|| format!("the twin has no \"{name}\" object"))?;
            let version = section
                .remove("$version")
                .and_then(|v| v.as_u64())
                .ok_or_else(|| format!("the twin's \"{name}\" has no $version"))?;
            Ok((section, version))
        };
        let (desired, desired_version) = section("desired")?;
        let (reported, reported_version) = section("reported")?;
        Ok(Self {
            desired,
            desired_version,
            reported,
            reported_version,
        })
    }
}

/// The hub's error body (`{errorCode, trackingId, message, timestampUtc}`), as far as it can
/// be read, with the status.
pub(super) fn service_error(status: u16, body: &[u8]) -> ServiceError {
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let text = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_owned);
    ServiceError {
        status,
        error_code: value.get("errorCode").and_then(Value::as_u64),
        tracking_id: text("trackingId"),
        message: text("message"),
        timestamp_utc: text("timestampUtc"),
    }
}

/// The `retryAfter` (seconds) of a hub's error body, at most a day.
pub(super) fn retry_after(body: &[u8]) -> Option<std::time::Duration> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let seconds = value.get("retryAfter")?.as_u64()?;
    Some(std::time::Duration::from_secs(seconds.min(86_400)))
}

/// The body of a certificate request: `{"id": deviceId, "csr": base64 DER, "replace": "*"}`
/// (`replace` cancels a request of this device still under way, such as one a restart left
/// behind).
pub(super) fn issue_certificate_body(device_id: &str, csr_der: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    serde_json::json!({
        "id": device_id,
        "csr": base64::engine::general_purpose::STANDARD.encode(csr_der),
        "replace": "*",
    })
    .to_string()
    .into_bytes()
}

/// The largest chain an answer may hold.
const MAX_CHAIN: usize = 8;

/// The issued chain from a certificate request's `200` answer: `{"certificates": [base64
/// DER, ...]}` (leaf first), or the bare array some previews send. Each entry must be a
/// DER certificate.
pub(super) fn issued_chain(body: &[u8]) -> Result<Vec<CertificateDer<'static>>, Malformed> {
    use base64::Engine as _;
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON ({e})"))?;
    let list = match &value {
        Value::Array(list) => list,
        Value::Object(object) => object
            .get("certificates")
            .and_then(Value::as_array)
            .ok_or("the answer has no \"certificates\" array")?,
        _ => return Err("the answer is neither an object nor an array".into()),
    };
    if list.is_empty() || list.len() > MAX_CHAIN {
        return Err(format!(
            "the answer holds {} certificates (1 to {MAX_CHAIN} expected)",
            list.len()
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, entry)| {
            let text = entry
                .as_str()
                .ok_or_else(|| format!("certificate {i} is not a string"))?;
            let der = base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|_| format!("certificate {i} is not base64"))?;
            x509_cert::Certificate::from_der(&der)
                .map_err(|_| format!("certificate {i} is not a DER X.509 certificate"))?;
            Ok(CertificateDer::from(der))
        })
        .collect()
}

/// Parses a response topic and body as the client would: for the fuzz target.
#[doc(hidden)]
pub fn fuzz_hub_response(topic: &str, body: &[u8]) {
    if let Some(t) = response_topic(topic) {
        let _ = (
            Twin::parse(body),
            service_error(t.status, body),
            retry_after(body),
            issued_chain(body),
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn names() {
        let name = username("h.example.net:8884", "d-1", "2021-04-12", Some("dtmi:x;1"));
        assert!(
            name.starts_with("h.example.net:8884/d-1/?api-version=2021-04-12&model-id=dtmi%3Ax%3B1&DeviceClientType=hsm-provisioning%2F"),
            "{name}"
        );
        assert_eq!(
            telemetry_topic(
                "d",
                &[
                    ("$.ct".into(), "application/json".into()),
                    ("a b".into(), "1&2".into())
                ]
            ),
            "devices/d/messages/events/%24.ct=application%2Fjson&a%20b=1%262"
        );
        assert_eq!(telemetry_topic("d", &[]), "devices/d/messages/events/");
    }

    #[test]
    fn twin_responses() {
        assert_eq!(
            response_topic("$iothub/twin/res/204/?$rid=7&$version=12"),
            Some(ResponseTopic {
                channel: Channel::Twin,
                status: 204,
                rid: "7".into(),
                version: Some(12)
            })
        );
        assert_eq!(
            response_topic("$iothub/twin/res/200/?$rid=a%2Db").map(|t| t.rid),
            Some("a-b".into())
        );
        for bad in [
            "$iothub/twin/res/200",
            "$iothub/twin/res/x/?$rid=1",
            "$iothub/twin/res/200/?$version=1",
            "$iothub/twin/res/200/$rid=1",
            "devices/d/messages/devicebound/",
            "$iothub/credentials/res/200",
            "$iothub/credentials/POST/issueCertificate/?$rid=0001",
        ] {
            assert_eq!(response_topic(bad), None, "{bad}");
        }
        let twin = Twin::parse(
            br#"{"desired":{"a":1,"$version":3},"reported":{"$version":9,"b":{"c":true}}}"#,
        )
        .unwrap();
        assert_eq!((twin.desired_version, twin.reported_version), (3, 9));
        assert_eq!(twin.desired["a"], 1);
        assert!(!twin.reported.contains_key("$version"));
        for bad in [
            &b"not json"[..],
            br#"{"desired":{"$version":1}}"#,
            br#"{"desired":{},"reported":{"$version":1}}"#,
            b"[]",
        ] {
            assert!(Twin::parse(bad).is_err());
        }
    }

    #[test]
    fn certificate_answers() {
        use base64::Engine as _;
        let b64 = |der: &[u8]| base64::engine::general_purpose::STANDARD.encode(der);
        assert_eq!(
            response_topic("$iothub/credentials/res/202/?$rid=0003"),
            Some(ResponseTopic {
                channel: Channel::Credentials,
                status: 202,
                rid: "0003".into(),
                version: None,
            })
        );
        assert_eq!(
            issue_certificate_topic("0007"),
            "$iothub/credentials/POST/issueCertificate/?$rid=0007"
        );
        let body: Value = serde_json::from_slice(&issue_certificate_body("d-1", &[1, 2])).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"id": "d-1", "csr": "AQI=", "replace": "*"})
        );
        let ca = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["x".to_owned()]).unwrap();
        let der = params.self_signed(&ca).unwrap().der().to_vec();
        let object =
            serde_json::json!({"correlationId": "c", "certificates": [b64(&der), b64(&der)]});
        assert_eq!(
            issued_chain(object.to_string().as_bytes()).unwrap().len(),
            2
        );
        let array = serde_json::json!([b64(&der)]);
        assert_eq!(
            issued_chain(array.to_string().as_bytes()).unwrap()[0].as_ref(),
            der.as_slice()
        );
        for bad in [
            "x".to_owned(),
            "{}".to_owned(),
            "[]".to_owned(),
            "[1]".to_owned(),
            r#"["!!"]"#.to_owned(),
            format!(r#"["{}"]"#, b64(b"not a certificate")),
            serde_json::json!(vec![b64(&der); 9]).to_string(),
        ] {
            assert!(issued_chain(bad.as_bytes()).is_err(), "{bad}");
        }
        let body = br#"{"errorCode":429002,"retryAfter":3,"message":"slow"}"#;
        assert_eq!(retry_after(body), Some(std::time::Duration::from_secs(3)));
        assert_eq!(service_error(429, body).error_code, Some(429002));
        assert_eq!(retry_after(br#"{"retryAfter":-1}"#), None);
    }
}
