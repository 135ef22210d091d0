//! The MQTT endpoint: MQTT 3.1.1 over TLS with DPS's topics. Packets are framed by rumqttc's
//! codec; this module only maps DPS topics to requests.

use std::sync::Arc;
use std::time::Duration;

use crate::https::{Limits, MAX_BODY, query_param};
use crate::listener::Accepted;
use crate::service::{Request, RequestKind, Service, Transport};
use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Packet, PubAck, Publish, SubAck, SubscribeReasonCode, UnsubAck,
};
use rumqttc::mqttbytes::{Error as MqttError, QoS};
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

const REGISTER_TOPIC: &str = "$dps/registrations/PUT/iotdps-register/";
const STATUS_TOPIC: &str = "$dps/registrations/GET/iotdps-get-operationstatus/";

/// Serves one MQTT connection (a DPS session).
pub(crate) async fn serve_session(accepted: Accepted, service: Arc<Service>, limits: Limits) {
    let Accepted {
        stream,
        peer,
        chain,
    } = accepted;
    if let Err(e) = session(stream, &service, &chain, limits).await {
        tracing::debug!(%peer, error = %e, "MQTT session ended");
    }
}

/// Why a session ended early.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("MQTT: {0}")]
    Mqtt(#[from] MqttError),
    #[error("the client sent nothing in time")]
    Timeout,
    #[error("the first packet was not CONNECT")]
    NotConnect,
    #[error("connection refused: {0:?}")]
    Refused(ConnectReturnCode),
    #[error("dropped on purpose")]
    Dropped,
}

struct Connection<S> {
    stream: S,
    buffer: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// The next packet, whole within `timeout` (a deadline for the packet, not for each read:
    /// a byte every few seconds does not keep a connection alive).
    async fn read(&mut self, timeout: Duration) -> Result<Option<Packet>, SessionError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match Packet::read(&mut self.buffer, MAX_BODY + 1024) {
                Ok(packet) => return Ok(Some(packet)),
                Err(MqttError::InsufficientBytes(_)) => {}
                Err(e) => return Err(e.into()),
            }
            let n = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buffer))
                .await
                .map_err(|_| SessionError::Timeout)??;
            if n == 0 {
                return Ok(None);
            }
        }
    }

    async fn write(&mut self, packet: Packet) -> Result<(), SessionError> {
        let mut out = BytesMut::new();
        packet.write(&mut out, usize::MAX)?;
        self.stream.write_all(&out).await?;
        self.stream.flush().await?;
        Ok(())
    }
}

/// The DPS username: `{idScope}/registrations/{registrationId}/api-version={v}[&...]`.
#[derive(Debug, PartialEq, Eq)]
struct Username {
    id_scope: String,
    registration_id: String,
    api_version: Option<String>,
}

impl Username {
    fn parse(text: &str) -> Option<Self> {
        let mut parts = text.splitn(4, '/');
        let id_scope = parts.next()?.to_owned();
        if parts.next()? != "registrations" {
            return None;
        }
        let registration_id = parts.next()?.to_owned();
        let api_version = parts.next().and_then(|q| query_param(q, "api-version"));
        Some(Self {
            id_scope,
            registration_id,
            api_version,
        })
    }
}

async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    service: &Service,
    chain: &[CertificateDer<'static>],
    limits: Limits,
) -> Result<(), SessionError> {
    let mut conn = Connection {
        stream,
        buffer: BytesMut::with_capacity(4096),
    };
    let Some(Packet::Connect(connect)) = conn.read(limits.read_timeout).await? else {
        return Err(SessionError::NotConnect);
    };
    let login = connect.login.as_ref();
    let username = login.and_then(|l| Username::parse(&l.username));
    let password = login.map(|l| l.password.clone()).filter(|p| !p.is_empty());
    let code = match &username {
        None => ConnectReturnCode::BadUserNamePassword,
        Some(u) if u.registration_id != connect.client_id => ConnectReturnCode::BadClientId,
        Some(u) => {
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
    let Some(username) = username.filter(|_| code == ConnectReturnCode::Success) else {
        return Err(SessionError::Refused(code));
    };
    // MQTT's keep-alive: the client must send something within 1.5 times its interval.
    let idle = match connect.keep_alive {
        0 => Duration::from_secs(300),
        k => Duration::from_millis(u64::from(k) * 1500),
    };
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

/// Parses a DPS MQTT username and topic as the MQTT endpoint would: for the fuzz target.
#[doc(hidden)]
pub fn fuzz_topic(username: &str, topic: &str) -> bool {
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
