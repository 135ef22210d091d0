//! Admin calls: what a test or an operator changes while the emulator runs (disable or enable
//! a device, move it to another hub, patch its desired properties) and what they read
//! (devices, twins, telemetry, hub refusals). The same operations back the Rust API
//! ([`crate::Emulator`]) and a small HTTP API under `/admin/` on the HTTPS port, which answers
//! loopback clients only (any device that can reach the port could otherwise disable others).

use std::net::SocketAddr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::service::{DeviceStatus, RegistrationRecord, Reply, Service};
use crate::{Error, HubRefusal, TelemetryMessage};

impl Service {
    /// Enables or disables a device on its hub; disabling ends its connection.
    pub(crate) fn set_device_status(
        &self,
        device_id: &str,
        status: DeviceStatus,
    ) -> Result<RegistrationRecord, Error> {
        let record = self.update_device(device_id, Some(status), None)?;
        tracing::info!(device_id = %record.device_id, ?status, "device status changed");
        if status == DeviceStatus::Disabled {
            self.hub.sessions.kick(device_id, "the device was disabled");
        }
        Ok(record)
    }

    /// Moves a device to another hub; its connection to the old one ends.
    pub(crate) fn move_device(
        &self,
        device_id: &str,
        hub: &str,
    ) -> Result<RegistrationRecord, Error> {
        let record = self.update_device(device_id, None, Some(hub))?;
        tracing::info!(device_id = %record.device_id, hub = %record.assigned_hub, "device moved");
        self.hub
            .sessions
            .kick(device_id, "the device was moved to another hub");
        Ok(record)
    }

    /// A device's registration record, by device id.
    pub(crate) fn device(&self, device_id: &str) -> Option<RegistrationRecord> {
        self.hub_identity(device_id).map(|identity| identity.record)
    }

    /// Patches a device's desired properties (sent to it if it is connected and subscribed);
    /// returns the new desired `$version`.
    pub(crate) fn update_desired(&self, device_id: &str, patch: &Value) -> Result<u64, Error> {
        if self.device(device_id).is_none() {
            return Err(Error::UnknownDevice {
                device_id: hsm_core::untrusted::printable(device_id).into_owned(),
            });
        }
        self.hub
            .patch_desired(device_id, patch)
            .map_err(|e| Error::InvalidPatch {
                reason: e.to_string(),
            })
    }
}

/// A device change, as `PATCH /admin/devices/{deviceId}` takes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DeviceChange {
    #[serde(default)]
    status: Option<DeviceStatus>,
    #[serde(default)]
    assigned_hub: Option<String>,
}

/// Answers an admin request (`path` below `/admin/`).
pub(crate) fn handle(
    service: &Service,
    peer: SocketAddr,
    method: &hyper::Method,
    path: &str,
    query: &str,
    body: &[u8],
) -> Reply {
    use hyper::Method;

    if !peer.ip().is_loopback() {
        return Reply::error(403, 403000, "The admin API answers loopback clients only.");
    }
    let segments: Option<Vec<String>> = path
        .split('/')
        .map(hsm_core::percent::decode_utf8)
        .collect();
    let Some(segments) = segments else {
        return Reply::error(404, 404001, "No such resource.");
    };
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let known = |device_id: &str| match service.device(device_id) {
        Some(record) => Ok(record),
        None => Err(Reply::error(404, 404002, "No such device.")),
    };
    let result = match (method, segments.as_slice()) {
        (&Method::GET, ["devices"]) => Ok(json!(service.registrations())),
        (&Method::GET, ["devices", id]) => known(id).map(|record| {
            json!({
                "device": record,
                "twin": service.hub.twin(id),
                "connected": service.hub.sessions.is_connected(id),
                "lastCertificateSha256": service.hub.last_certificate(id),
            })
        }),
        (&Method::PATCH, ["devices", id]) => match serde_json::from_slice::<DeviceChange>(body) {
            Err(e) => Err(bad_request(&e)),
            Ok(change) => known(id).and_then(|_| {
                let mut record = None;
                if let Some(hub) = &change.assigned_hub {
                    record = Some(service.move_device(id, hub));
                }
                if let Some(status) = change.status {
                    record = Some(service.set_device_status(id, status));
                }
                match record {
                    None => Err(Reply::error(400, 400004, "Nothing to change.")),
                    Some(Ok(record)) => Ok(json!(record)),
                    Some(Err(e)) => Err(Reply::error(400, 400004, &e.to_string())),
                }
            }),
        },
        (&Method::PATCH, ["devices", id, "twin", "desired"]) => {
            match serde_json::from_slice::<Value>(body) {
                Err(e) => Err(bad_request(&e)),
                Ok(patch) => known(id).and_then(|_| {
                    service
                        .update_desired(id, &patch)
                        .map(|version| json!({ "$version": version }))
                        .map_err(|e| Reply::error(400, 400004, &e.to_string()))
                }),
            }
        }
        (&Method::GET, ["telemetry"]) => {
            let device = crate::https::query_param(query, "deviceId");
            Ok(Value::from(
                service
                    .hub
                    .telemetry()
                    .iter()
                    .filter(|m| device.as_deref().is_none_or(|d| d == m.device_id))
                    .map(telemetry_json)
                    .collect::<Vec<_>>(),
            ))
        }
        (&Method::GET, ["hub", "refusals"]) => Ok(Value::from(
            service
                .hub
                .refusals()
                .iter()
                .map(refusal_json)
                .collect::<Vec<_>>(),
        )),
        (_, ["devices" | "telemetry" | "hub", ..]) => Err(Reply::error(
            405,
            405000,
            "The method is not allowed on this resource.",
        )),
        _ => Err(Reply::error(404, 404001, "No such resource.")),
    };
    match result {
        Ok(body) => Reply::json(200, &body),
        Err(reply) => reply,
    }
}

fn bad_request(e: &serde_json::Error) -> Reply {
    Reply::error(400, 400004, &format!("The request body is not valid: {e}"))
}

fn rfc3339(at: std::time::SystemTime) -> String {
    time::OffsetDateTime::from(at)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn telemetry_json(message: &TelemetryMessage) -> Value {
    json!({
        "hub": message.hub,
        "deviceId": message.device_id,
        "properties": message.properties,
        "payload": std::str::from_utf8(&message.payload).ok(),
        "payloadBase64": BASE64.encode(&message.payload),
        "receivedUtc": rfc3339(message.received),
    })
}

fn refusal_json(refusal: &HubRefusal) -> Value {
    json!({
        "hub": refusal.hub,
        "deviceId": refusal.device_id,
        "reason": refusal.reason.to_string(),
        "atUtc": rfc3339(refusal.at),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn only_loopback_clients_are_answered() {
        let service = Service::for_tests();
        let lan: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        let reply = handle(&service, lan, &hyper::Method::GET, "devices", "", b"");
        assert_eq!(reply.status, 403);
        let local: SocketAddr = "[::1]:40000".parse().unwrap();
        let reply = handle(&service, local, &hyper::Method::GET, "devices", "", b"");
        assert_eq!(reply.status, 200);
    }
}
