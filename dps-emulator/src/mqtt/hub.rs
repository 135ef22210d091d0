//! IoT Hub over MQTT: the CONNECT checked as the hub checks it ([`crate::hub`]), then what a
//! device does there: telemetry (QoS 1, acknowledged), twin GET and reported-properties PATCH
//! (answered on `$iothub/twin/res/...` to subscribed devices), certificate requests
//! (answered on `$iothub/credentials/res/...`), subscriptions, pings. The hub
//! ends the session when its SAS token expires, when a newer connection for the device
//! arrives, when an admin call disables or moves the device, and, as IoT Hub does, when the
//! device publishes to a topic that is not its own.

use std::time::Duration;

use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Packet, PubAck, Publish, SubAck, SubscribeReasonCode,
    UnsubAck,
};
use rustls_pki_types::CertificateDer;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Connection, SessionError, idle_limit, password};
use crate::clock::{now_rfc3339, random_hex};
use crate::https::query_param;
use crate::hub::{Admitted, Login, Outbound, RefusalReason, SessionHandle, TelemetryMessage};
use crate::service::Service;

/// The largest telemetry message IoT Hub takes.
const MAX_MESSAGE: usize = 256 * 1024;

/// The subscription twin responses go to.
const TWIN_RESPONSES: &str = "$iothub/twin/res/#";

/// The subscription certificate-request answers go to.
const CREDENTIAL_RESPONSES: &str = "$iothub/credentials/res/#";

/// Serves a hub connection from its CONNECT on.
pub(super) async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    connect: &Connect,
    login: Login,
    chain: &[CertificateDer<'static>],
    service: &Service,
) -> Result<(), SessionError> {
    let admitted = match service.admit(&login, &connect.client_id, password(connect), chain) {
        Ok(admitted) => admitted,
        Err(reason) => {
            let code = match reason {
                RefusalReason::ApiVersion { .. } | RefusalReason::UserName => {
                    ConnectReturnCode::BadUserNamePassword
                }
                _ => ConnectReturnCode::NotAuthorized,
            };
            service.hub.refuse(&login.hub, &login.device_id, reason);
            conn.write(Packet::ConnAck(ConnAck::new(code, false)))
                .await?;
            return Err(SessionError::Refused(code));
        }
    };
    let hub = &service.hub;
    let mut handle = hub
        .sessions
        .open(&admitted.device_id, connect.clean_session);
    hub.count_connection();
    tracing::info!(
        hub = %admitted.hub,
        device_id = %admitted.device_id,
        model_id = login.model_id.as_deref().map(hsm_core::untrusted::quoted),
        credential = if admitted.expires.is_some() { "SAS token" } else { "certificate" },
        "hub connection accepted"
    );
    conn.max_packet = MAX_MESSAGE + 16 * 1024;
    let served = serve(conn, connect, &admitted, &mut handle, service).await;
    hub.sessions.close(&admitted.device_id, handle.id);
    served
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    connect: &Connect,
    device: &Admitted,
    handle: &mut SessionHandle,
    service: &Service,
) -> Result<(), SessionError> {
    conn.write(Packet::ConnAck(ConnAck::new(
        ConnectReturnCode::Success,
        handle.session_present,
    )))
    .await?;
    let idle = idle_limit(connect.keep_alive);
    // IoT Hub ends a connection when its SAS token expires.
    let expiry = device.expires.map(|se| {
        tokio::time::Instant::now() + Duration::from_secs(se.saturating_sub(service.now()))
    });
    let expired = async move {
        match expiry {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(expired);
    loop {
        // Biased, the hub's side first: a session an admin call ended (a disabled or moved
        // device) handles nothing the device sends after that call.
        let packet = tokio::select! {
            biased;
            outbound = handle.outbox.recv() => match outbound {
                Some(Outbound::Publish { topic, payload }) => {
                    conn.write(Packet::Publish(Publish::new(topic, QoS::AtMostOnce, payload))).await?;
                    continue;
                }
                Some(Outbound::Close(reason)) => return Err(closed(device, reason)),
                None => return Err(closed(device, "the hub ended the session")),
            },
            () = &mut expired => return Err(closed(device, "its SAS token expired")),
            packet = conn.read(idle) => packet?,
        };
        let Some(packet) = packet else {
            return Ok(());
        };
        match packet {
            Packet::Subscribe(subscribe) => {
                let codes = subscribe
                    .filters
                    .iter()
                    .map(|f| {
                        if !allowed(&device.device_id, &f.path) {
                            tracing::info!(device_id = %device.device_id, filter = %hsm_core::untrusted::printable(&f.path), "subscription refused");
                            return SubscribeReasonCode::Failure;
                        }
                        // IoT Hub grants QoS 0 and 1.
                        let (qos, level) = match f.qos {
                            QoS::AtMostOnce => (QoS::AtMostOnce, 0),
                            _ => (QoS::AtLeastOnce, 1),
                        };
                        service
                            .hub
                            .sessions
                            .subscribe(&device.device_id, &f.path, level);
                        SubscribeReasonCode::Success(qos)
                    })
                    .collect();
                conn.write(Packet::SubAck(SubAck::new(subscribe.pkid, codes)))
                    .await?;
            }
            Packet::Unsubscribe(unsubscribe) => {
                for filter in &unsubscribe.topics {
                    service.hub.sessions.unsubscribe(&device.device_id, filter);
                }
                conn.write(Packet::UnsubAck(UnsubAck::new(unsubscribe.pkid)))
                    .await?;
            }
            Packet::Publish(publish) => {
                if publish.qos == QoS::ExactlyOnce {
                    return Err(closed(device, "IoT Hub has no QoS 2"));
                }
                let responses = published(device, &publish, service)?;
                if publish.qos == QoS::AtLeastOnce {
                    conn.write(Packet::PubAck(PubAck::new(publish.pkid)))
                        .await?;
                }
                for (topic, payload) in responses {
                    conn.write(Packet::Publish(Publish::new(
                        topic,
                        QoS::AtMostOnce,
                        payload,
                    )))
                    .await?;
                }
            }
            Packet::PingReq => conn.write(Packet::PingResp).await?,
            Packet::Disconnect => return Ok(()),
            Packet::PubAck(_) => {}
            _ => return Err(closed(device, "a packet a client does not send")),
        }
    }
}

/// Logs why the hub ends a session.
fn closed(device: &Admitted, reason: &'static str) -> SessionError {
    tracing::info!(hub = %device.hub, device_id = %device.device_id, reason, "hub connection closed");
    SessionError::Closed(reason)
}

/// Whether a device may subscribe to this filter: its cloud-to-device messages, direct
/// methods, twin responses and desired-property notifications.
fn allowed(device_id: &str, filter: &str) -> bool {
    matches!(
        filter,
        "$iothub/methods/POST/#"
            | TWIN_RESPONSES
            | CREDENTIAL_RESPONSES
            | "$iothub/twin/PATCH/properties/desired/#"
    ) || filter
        .strip_prefix("devices/")
        .and_then(|rest| rest.strip_suffix("/messages/devicebound/#"))
        .is_some_and(|id| id == device_id)
}

/// A topic a device publishes to.
#[derive(Debug, PartialEq, Eq)]
enum Topic<'a> {
    /// `devices/{deviceId}/messages/events/{property bag}`.
    Telemetry { bag: &'a str },
    /// The same for another device id.
    OtherDevice,
    /// `$iothub/twin/GET/?$rid={rid}`.
    TwinGet { rid: Option<String> },
    /// `$iothub/twin/PATCH/properties/reported/?$rid={rid}`.
    TwinPatch { rid: Option<String> },
    /// `$iothub/credentials/POST/issueCertificate/?$rid={rid}`.
    IssueCertificate { rid: Option<String> },
    /// `$iothub/methods/res/{status}/?$rid={rid}`: an answer to a direct method.
    MethodResponse,
    /// Anything else.
    Unknown,
}

impl<'a> Topic<'a> {
    fn parse(topic: &'a str, device_id: &str) -> Self {
        if let Some(rest) = topic.strip_prefix("devices/") {
            let Some((id, tail)) = rest.split_once('/') else {
                return Self::Unknown;
            };
            let Some(bag) = tail
                .strip_prefix("messages/events")
                .and_then(|b| b.strip_prefix('/').or(b.is_empty().then_some("")))
            else {
                return Self::Unknown;
            };
            return match hsm_core::percent::decode_utf8(id) {
                Some(id) if id == device_id => Self::Telemetry { bag },
                _ => Self::OtherDevice,
            };
        }
        let (path, query) = topic.split_once('?').unwrap_or((topic, ""));
        let rid = || query_param(query, "$rid");
        match path {
            "$iothub/twin/GET/" => Self::TwinGet { rid: rid() },
            "$iothub/twin/PATCH/properties/reported/" => Self::TwinPatch { rid: rid() },
            "$iothub/credentials/POST/issueCertificate/" => Self::IssueCertificate { rid: rid() },
            p if p.starts_with("$iothub/methods/res/") => Self::MethodResponse,
            _ => Self::Unknown,
        }
    }
}

/// Handles a device's PUBLISH; returns what to publish back.
fn published(
    device: &Admitted,
    publish: &Publish,
    service: &Service,
) -> Result<Vec<(String, Vec<u8>)>, SessionError> {
    let hub = &service.hub;
    match Topic::parse(&publish.topic, &device.device_id) {
        Topic::Telemetry { bag } => {
            if publish.payload.len() > MAX_MESSAGE {
                return Err(closed(device, "a message larger than 256 KiB"));
            }
            let Some(properties) = crate::hub::properties(bag) else {
                return Err(closed(
                    device,
                    "a property bag that is not percent-encoded UTF-8",
                ));
            };
            tracing::info!(
                hub = %device.hub,
                device_id = %device.device_id,
                bytes = publish.payload.len(),
                properties = properties.len(),
                payload = %preview(&publish.payload),
                "telemetry"
            );
            hub.record_telemetry(TelemetryMessage {
                hub: device.hub.clone(),
                device_id: device.device_id.clone(),
                properties,
                payload: publish.payload.to_vec(),
                received: std::time::SystemTime::now(),
            });
            Ok(Vec::new())
        }
        Topic::OtherDevice => Err(closed(device, "a message for another device")),
        Topic::TwinGet { rid } => Ok(twin_response(device, service, rid, || {
            (
                200,
                serde_json::to_vec(&hub.twin(&device.device_id)).unwrap_or_default(),
                None,
            )
        })),
        Topic::TwinPatch { rid } => Ok(twin_response(device, service, rid, || {
            match hub.patch_reported(&device.device_id, &publish.payload) {
                Ok(version) => (204, Vec::new(), Some(version)),
                Err(e) => (400, error_body(400004, &e.to_string()), None),
            }
        })),
        Topic::IssueCertificate { rid } => {
            let Some(rid) = rid.filter(|_| {
                hub.sessions
                    .subscribed(&device.device_id, CREDENTIAL_RESPONSES)
            }) else {
                // IoT Hub answers nothing without a $rid or the subscription.
                tracing::info!(device_id = %device.device_id, "certificate request without a $rid or before subscribing to {CREDENTIAL_RESPONSES}: not answered");
                return Ok(Vec::new());
            };
            let rid = hsm_core::percent::encode(rid.as_bytes());
            Ok(service
                .issue_hub_certificate(device, &publish.payload)
                .into_iter()
                .map(|(status, body)| {
                    (
                        format!("$iothub/credentials/res/{status}/?$rid={rid}"),
                        body,
                    )
                })
                .collect())
        }
        Topic::MethodResponse => Ok(Vec::new()),
        Topic::Unknown => Err(closed(device, "a topic IoT Hub does not have")),
    }
}

/// The answer to a twin request, if the device can receive it: it gave a `$rid` and has
/// subscribed to `$iothub/twin/res/#` (IoT Hub answers nothing otherwise). `answer` runs
/// either way: a patch is applied even when its answer cannot be delivered.
fn twin_response(
    device: &Admitted,
    service: &Service,
    rid: Option<String>,
    answer: impl FnOnce() -> (u16, Vec<u8>, Option<u64>),
) -> Vec<(String, Vec<u8>)> {
    let (status, body, version) = answer();
    let subscribed = service
        .hub
        .sessions
        .subscribed(&device.device_id, TWIN_RESPONSES);
    match (rid, subscribed) {
        (Some(rid), true) => {
            let mut topic = format!(
                "$iothub/twin/res/{status}/?$rid={}",
                hsm_core::percent::encode(rid.as_bytes())
            );
            if let Some(version) = version {
                topic.push_str(&format!("&$version={version}"));
            }
            vec![(topic, body)]
        }
        (None, _) => {
            tracing::info!(device_id = %device.device_id, "twin request without a $rid: not answered");
            Vec::new()
        }
        (Some(_), false) => {
            tracing::info!(device_id = %device.device_id, "twin request before subscribing to {TWIN_RESPONSES}: not answered");
            Vec::new()
        }
    }
}

/// IoT Hub's error body.
fn error_body(error_code: u32, message: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "errorCode": error_code,
        "trackingId": random_hex(16),
        "message": message,
        "timestampUtc": now_rfc3339(),
        "info": {},
    }))
    .unwrap_or_default()
}

/// The start of a payload for the log, control characters escaped.
fn preview(payload: &[u8]) -> String {
    const SHOWN: usize = 200;
    let text = String::from_utf8_lossy(&payload[..payload.len().min(SHOWN)]);
    let mut shown = hsm_core::untrusted::printable(&text).into_owned();
    if payload.len() > SHOWN {
        shown.push('…');
    }
    shown
}

/// Parses a user name and topic as a hub session would.
pub(super) fn fuzz(username: &str, topic: &str) -> bool {
    let device = Login::parse(username).map(|l| l.device_id);
    if let Topic::Telemetry { bag } = Topic::parse(topic, device.as_deref().unwrap_or("d")) {
        let _ = crate::hub::properties(bag);
    }
    device.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics() {
        assert_eq!(
            Topic::parse("devices/d-1/messages/events/a=1&%24.ct=x", "d-1"),
            Topic::Telemetry {
                bag: "a=1&%24.ct=x"
            }
        );
        assert_eq!(
            Topic::parse("devices/d-1/messages/events/", "d-1"),
            Topic::Telemetry { bag: "" }
        );
        assert_eq!(
            Topic::parse("devices/d-1/messages/events", "d-1"),
            Topic::Telemetry { bag: "" }
        );
        assert_eq!(
            Topic::parse("devices/d-2/messages/events/", "d-1"),
            Topic::OtherDevice
        );
        assert_eq!(
            Topic::parse("devices/d-1/messages/eventsX", "d-1"),
            Topic::Unknown
        );
        assert_eq!(
            Topic::parse("$iothub/twin/GET/?$rid=7", "d"),
            Topic::TwinGet {
                rid: Some("7".into())
            }
        );
        assert_eq!(
            Topic::parse("$iothub/twin/PATCH/properties/reported/?$rid=a-b", "d"),
            Topic::TwinPatch {
                rid: Some("a-b".into())
            }
        );
        assert_eq!(
            Topic::parse("$iothub/twin/GET/", "d"),
            Topic::TwinGet { rid: None }
        );
        assert_eq!(Topic::parse("$dps/registrations/x", "d"), Topic::Unknown);
    }

    #[test]
    fn subscriptions() {
        assert!(allowed("d", "$iothub/twin/res/#"));
        assert!(allowed("d", "devices/d/messages/devicebound/#"));
        assert!(!allowed("d", "devices/e/messages/devicebound/#"));
        assert!(!allowed("d", "#"));
        assert!(!allowed("d", "$iothub/twin/#"));
    }
}
