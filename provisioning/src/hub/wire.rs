//! IoT Hub's MQTT names: the CONNECT user name, the telemetry topic and its property bag, the
//! twin topics, and the twin response topic and body (untrusted input: parsing never panics).

use serde_json::{Map, Value};

use crate::ServiceError;
use crate::client::USER_AGENT_VALUE;

/// Twin responses arrive here.
pub(super) const TWIN_RESPONSES: &str = "$iothub/twin/res/#";

const TWIN_RESPONSE_PREFIX: &str = "$iothub/twin/res/";

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

/// `$iothub/twin/res/{status}/?$rid={rid}[&$version={v}]`, parsed.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct TwinResponseTopic {
    pub(super) status: u16,
    pub(super) rid: String,
    pub(super) version: Option<u64>,
}

/// Parses a twin response topic; `None` for any other topic or a malformed one.
pub(super) fn twin_response_topic(topic: &str) -> Option<TwinResponseTopic> {
    let rest = topic.strip_prefix(TWIN_RESPONSE_PREFIX)?;
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
    Some(TwinResponseTopic {
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

/// Parses a twin response topic and body as the client would: for the fuzz target.
#[doc(hidden)]
pub fn fuzz_hub_response(topic: &str, body: &[u8]) {
    if let Some(t) = twin_response_topic(topic) {
        let _ = (Twin::parse(body), service_error(t.status, body));
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
            twin_response_topic("$iothub/twin/res/204/?$rid=7&$version=12"),
            Some(TwinResponseTopic {
                status: 204,
                rid: "7".into(),
                version: Some(12)
            })
        );
        assert_eq!(
            twin_response_topic("$iothub/twin/res/200/?$rid=a%2Db").map(|t| t.rid),
            Some("a-b".into())
        );
        for bad in [
            "$iothub/twin/res/200",
            "$iothub/twin/res/x/?$rid=1",
            "$iothub/twin/res/200/?$version=1",
            "$iothub/twin/res/200/$rid=1",
            "devices/d/messages/devicebound/",
        ] {
            assert_eq!(twin_response_topic(bad), None, "{bad}");
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
}
