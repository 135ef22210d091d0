//! DPS over MQTT: `$dps/registrations/...` topics mapped to service requests.

use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Packet, PubAck, Publish, SubAck, SubscribeReasonCode,
    UnsubAck,
};
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Connection, SessionError, idle_limit, password};
use crate::https::query_param;
use crate::service::{Request, RequestKind, Service, Transport};

const REGISTER_TOPIC: &str = "$dps/registrations/PUT/iotdps-register/";
const STATUS_TOPIC: &str = "$dps/registrations/GET/iotdps-get-operationstatus/";

/// The DPS username: `{idScope}/registrations/{registrationId}/api-version={v}[&...]`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Username {
    id_scope: String,
    registration_id: String,
    api_version: Option<String>,
}

impl Username {
    pub(super) fn parse(text: &str) -> Option<Self> {
        let mut parts = text.splitn(4, '/');
        let id_scope = parts.next()?.to_owned();
        if parts.next()? != "registrations" {
            return None;
        }
        let registration_id = parts.next()?.to_owned();
        // `{hub}/registrations/?api-version=...` is a hub device named "registrations".
        if registration_id.is_empty() || registration_id.starts_with('?') {
            return None;
        }
        let api_version = parts.next().and_then(|q| query_param(q, "api-version"));
        Some(Self {
            id_scope,
            registration_id,
            api_version,
        })
    }
}

pub(super) async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    connect: &Connect,
    username: Username,
    chain: &[CertificateDer<'static>],
    service: &Service,
) -> Result<(), SessionError> {
    let password = password(connect).map(str::to_owned);
    let code = match &username {
        u if u.registration_id != connect.client_id => ConnectReturnCode::BadClientId,
        u => {
            let reply = service
                .handle(Request {
                    id_scope: &u.id_scope,
                    registration_id: u.registration_id.clone(),
                    api_version: u.api_version.clone(),
                    kind: RequestKind::Connect,
                    authorization: password.clone(),
                    client_chain: chain,
                    transport: Transport::Mqtt,
                })
                .await;
            match reply.status {
                200 => ConnectReturnCode::Success,
                401 => ConnectReturnCode::NotAuthorized,
                404 | 400 => ConnectReturnCode::BadUserNamePassword,
                _ => ConnectReturnCode::ServiceUnavailable,
            }
        }
    };
    conn.write(Packet::ConnAck(ConnAck::new(code, false)))
        .await?;
    if code != ConnectReturnCode::Success {
        return Err(SessionError::Refused(code));
    }
    let idle = idle_limit(connect.keep_alive);
    loop {
        let Some(packet) = conn.read(idle).await? else {
            return Ok(());
        };
        match packet {
            Packet::Subscribe(sub) => {
                let codes = sub
                    .filters
                    .iter()
                    .map(|f| {
                        if f.path.starts_with("$dps/registrations/res/") {
                            SubscribeReasonCode::Success(match f.qos {
                                QoS::AtMostOnce => QoS::AtMostOnce,
                                _ => QoS::AtLeastOnce,
                            })
                        } else {
                            SubscribeReasonCode::Failure
                        }
                    })
                    .collect();
                conn.write(Packet::SubAck(SubAck::new(sub.pkid, codes)))
                    .await?;
            }
            Packet::Publish(publish) => {
                if publish.qos != QoS::AtMostOnce {
                    conn.write(Packet::PubAck(PubAck::new(publish.pkid)))
                        .await?;
                }
                let (topic, query) = publish
                    .topic
                    .split_once('?')
                    .unwrap_or((publish.topic.as_str(), ""));
                let rid = query_param(query, "$rid").unwrap_or_default();
                let kind = match topic {
                    REGISTER_TOPIC => RequestKind::Register(publish.payload.to_vec()),
                    STATUS_TOPIC => RequestKind::Operation(
                        query_param(query, "operationId").unwrap_or_default(),
                    ),
                    _ => {
                        tracing::debug!(topic = %publish.topic, "publish to an unknown topic");
                        continue;
                    }
                };
                let reply = service
                    .handle(Request {
                        id_scope: &username.id_scope,
                        registration_id: username.registration_id.clone(),
                        api_version: username.api_version.clone(),
                        kind,
                        authorization: password.clone(),
                        client_chain: chain,
                        transport: Transport::Mqtt,
                    })
                    .await;
                if reply.drop {
                    return Err(SessionError::Dropped);
                }
                let mut topic = format!("$dps/registrations/res/{}/?$rid={rid}", reply.status);
                if let Some(seconds) = reply.retry_after {
                    topic.push_str(&format!("&retry-after={seconds}"));
                }
                conn.write(Packet::Publish(Publish::new(
                    topic,
                    QoS::AtMostOnce,
                    reply.body,
                )))
                .await?;
            }
            // The Node SDK unsubscribes before it disconnects and waits for the UNSUBACK.
            Packet::Unsubscribe(unsub) => {
                conn.write(Packet::UnsubAck(UnsubAck::new(unsub.pkid)))
                    .await?;
            }
            Packet::PingReq => conn.write(Packet::PingResp).await?,
            Packet::Disconnect => return Ok(()),
            Packet::PubAck(_) => {}
            _ => return Err(SessionError::NotConnect),
        }
    }
}

/// Parses a user name and topic as a DPS session would.
pub(super) fn fuzz(username: &str, topic: &str) -> bool {
    let (t, q) = topic.split_once('?').unwrap_or((topic, ""));
    let _ = (query_param(q, "$rid"), query_param(q, "operationId"), t);
    Username::parse(username).is_some()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn usernames() {
        assert_eq!(
            Username::parse("0ne1/registrations/dev-1/api-version=2019-03-31&ClientVersion=x"),
            Some(Username {
                id_scope: "0ne1".into(),
                registration_id: "dev-1".into(),
                api_version: Some("2019-03-31".into()),
            })
        );
        assert_eq!(Username::parse("0ne1/devices/dev-1"), None);
        assert_eq!(Username::parse(""), None);
    }
}
