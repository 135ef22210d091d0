//! The MQTT transports: MQTT 3.1.1 over TLS on DPS's MQTT port, or over a WebSocket on its
//! HTTPS port (`/$iothub/websocket`, subprotocol `mqtt`), either through an HTTP proxy's
//! tunnel; DPS's topics, `$rid` correlation. The connection is [`crate::mqtt::Link`] on a
//! [`crate::net`] stream, the same as the hub client's.

use std::time::Duration;

use bytes::Bytes;
use rumqttc::mqttbytes::v4::{
    ConnectReturnCode, Packet, PubAck, Publish, Subscribe, SubscribeReasonCode,
};
use rumqttc::mqttbytes::{Error as CodecError, QoS};
use zeroize::Zeroizing;

use super::{BoxFuture, Connection, Failure, Request, RequestKind, Session};
use crate::client::USER_AGENT_VALUE;
use crate::endpoint::Endpoint;
use crate::mqtt::{HandshakeError, Link, ReadError};
use crate::net::{self, Service};
use crate::proxy::Proxy;
use crate::wire::{MAX_RESPONSE, RESPONSE_PREFIX, RawResponse, parse_topic};
use crate::{Error, ServiceError};

const REGISTER_TOPIC: &str = "$dps/registrations/PUT/iotdps-register/";
const STATUS_TOPIC: &str = "$dps/registrations/GET/iotdps-get-operationstatus/";
/// The keep-alive announced at CONNECT.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// How long connecting (TCP, tunnel, TLS, WebSocket) and CONNACK may take, each.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) struct MqttConnection {
    endpoint: Endpoint,
    tls: std::sync::Arc<rustls::ClientConfig>,
    proxy: Option<Proxy>,
    websocket: bool,
    client_id: String,
    username: String,
    open: Option<Open>,
    next_rid: u64,
    next_pkid: u16,
}

struct Open {
    link: Link,
    /// The CONNECT password (the SAS token) this connection was opened with.
    password: Zeroizing<String>,
}

impl Connection for MqttConnection {
    fn send<'a>(
        &'a mut self,
        request: &'a Request<'a>,
    ) -> BoxFuture<'a, Result<RawResponse, Failure>> {
        Box::pin(async move {
            let result = self.exchange(request).await;
            if result.is_err() {
                self.open = None;
            }
            result
        })
    }

    fn reset(&mut self) {
        self.open = None;
    }
}

impl MqttConnection {
    /// MQTT over TLS on the MQTT port (`websocket` false), or over a WebSocket on the
    /// endpoint's HTTPS port.
    pub(crate) fn new(session: Session, websocket: bool) -> Self {
        let Session {
            endpoint,
            mqtt_port,
            tls,
            proxy,
            id_scope,
            registration_id,
            api_version,
            ..
        } = session;
        Self {
            endpoint: if websocket {
                endpoint
            } else {
                endpoint.with_port(mqtt_port)
            },
            tls,
            proxy,
            websocket,
            username: format!(
                "{id_scope}/registrations/{registration_id}/api-version={api_version}&ClientVersion={}",
                hsm_core::percent::encode(USER_AGENT_VALUE.as_bytes())
            ),
            client_id: registration_id.as_str().to_owned(),
            open: None,
            next_rid: 1,
            next_pkid: 0,
        }
    }

    fn pkid(&mut self) -> u16 {
        self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
        self.next_pkid
    }

    /// Connects with `password` unless a connection made with it is open: CONNECT, then
    /// SUBSCRIBE to the responses.
    async fn connect(&mut self, password: &str) -> Result<(), Failure> {
        if let Some(open) = &self.open {
            if open.password.as_str() == password {
                return Ok(());
            }
            // A new token (after a TPM challenge): DPS reads credentials at CONNECT only.
            self.open = None;
        }
        tracing::debug!(host = %self.endpoint.host, port = self.endpoint.port, websocket = self.websocket, "connect (MQTT)");
        let route = net::Route {
            service: Service::Dps,
            server_name: &self.endpoint.host,
            host: &self.endpoint.host,
            port: self.endpoint.port,
            tls: &self.tls,
            proxy: self.proxy.as_ref(),
            websocket: self.websocket.then_some("mqtt"),
            timeout: Some(STEP_TIMEOUT),
        };
        let stream = net::open(&route, &|operation| Error::Io {
            operation,
            source: format!("no answer within {STEP_TIMEOUT:?}").into(),
        })
        .await
        .map_err(classify)?;
        let mut link = Link::new(stream, MAX_RESPONSE + 1024);
        let mut connect = rumqttc::mqttbytes::v4::Connect::new(self.client_id.clone());
        connect.keep_alive = u16::try_from(KEEP_ALIVE.as_secs()).unwrap_or(u16::MAX);
        connect.clean_session = true;
        connect.set_login(self.username.clone(), password);
        let ack = link
            .handshake(connect, STEP_TIMEOUT)
            .await
            .map_err(handshake_failure)?;
        if ack.code != ConnectReturnCode::Success {
            return Err(refused(ack.code, &self.username));
        }
        let pkid = self.pkid();
        let mut subscribe = Subscribe::new(format!("{RESPONSE_PREFIX}#"), QoS::AtLeastOnce);
        subscribe.pkid = pkid;
        link.write(Packet::Subscribe(subscribe))
            .await
            .map_err(|e| io("subscribe", e))?;
        loop {
            match link
                .read()
                .await
                .map_err(|e| read_failure(e, "subscribe"))?
            {
                Some(Packet::SubAck(ack)) if ack.pkid == pkid => {
                    if ack
                        .return_codes
                        .iter()
                        .any(|c| matches!(c, SubscribeReasonCode::Failure))
                    {
                        return Err(Failure::Fatal(Error::Rejected {
                            error: ServiceError {
                                status: 400,
                                message: Some("DPS refused the response subscription".into()),
                                ..ServiceError::default()
                            },
                        }));
                    }
                    break;
                }
                Some(_) => {}
                None => return Err(closed("subscribe")),
            }
        }
        tracing::debug!("connected (MQTT)");
        self.open = Some(Open {
            link,
            password: Zeroizing::new(password.to_owned()),
        });
        Ok(())
    }

    async fn exchange(&mut self, request: &Request<'_>) -> Result<RawResponse, Failure> {
        self.connect(request.authorization.unwrap_or_default())
            .await?;
        let rid = self.next_rid.to_string();
        self.next_rid += 1;
        let (topic, payload) = match request.kind {
            RequestKind::Register { body } => {
                (format!("{REGISTER_TOPIC}?$rid={rid}"), body.clone())
            }
            RequestKind::Time => {
                return Err(Failure::Fatal(Error::config(
                    "the service's time is read over HTTPS",
                )));
            }
            RequestKind::Poll { operation_id } => (
                format!(
                    "{STATUS_TOPIC}?$rid={rid}&operationId={}",
                    hsm_core::percent::encode(operation_id.as_bytes())
                ),
                Bytes::new(),
            ),
        };
        let pkid = self.pkid();
        let Some(open) = self.open.as_mut() else {
            return Err(Failure::Fatal(Error::config("MQTT connection state lost")));
        };
        let mut publish = Publish::new(topic, QoS::AtLeastOnce, payload.to_vec());
        publish.pkid = pkid;
        open.link
            .write(Packet::Publish(publish))
            .await
            .map_err(|e| io("publish", e))?;
        let operation = request.name();
        loop {
            let packet = match open.link.read().await {
                Ok(Some(packet)) => packet,
                Ok(None) => return Err(closed("wait for DPS's answer")),
                Err(ReadError::Codec(CodecError::PayloadSizeLimitExceeded(_))) => {
                    return Err(Failure::Fatal(Error::ResponseTooLarge {
                        operation,
                        limit: MAX_RESPONSE,
                    }));
                }
                Err(e) => return Err(read_failure(e, operation)),
            };
            let Packet::Publish(publish) = packet else {
                continue;
            };
            if publish.qos == QoS::AtLeastOnce {
                open.link
                    .write(Packet::PubAck(PubAck::new(publish.pkid)))
                    .await
                    .map_err(|e| io("acknowledge DPS's answer", e))?;
            }
            let Some(response) = parse_topic(&publish.topic) else {
                tracing::debug!(topic = %hsm_core::untrusted::printable(&publish.topic), "ignoring a message on an unexpected topic");
                continue;
            };
            if response.rid != rid {
                tracing::debug!(rid = %response.rid, expected = %rid, "ignoring a response to another request");
                continue;
            }
            return Ok(RawResponse {
                status: response.status,
                retry_after: response.retry_after,
                date: None,
                body: publish.payload,
            });
        }
    }
}

/// A network error of [`net::open`]: retried unless it is TLS, a WebSocket refusal, a
/// proxy's refusal, or the configuration.
fn classify(error: Error) -> Failure {
    if error.is_transient() {
        Failure::Retry(error)
    } else {
        Failure::Fatal(error)
    }
}

fn io(operation: &'static str, e: std::io::Error) -> Failure {
    Failure::Retry(Error::Io {
        operation,
        source: Box::new(e),
    })
}

fn closed(operation: &'static str) -> Failure {
    Failure::Retry(Error::Io {
        operation,
        source: "DPS closed the connection".into(),
    })
}

fn read_failure(error: ReadError, operation: &'static str) -> Failure {
    match error {
        ReadError::Io(e) => io(operation, e),
        ReadError::Codec(e) => Failure::Fatal(Error::NotMqtt {
            reason: format!("it sent something that is not MQTT ({e})"),
        }),
    }
}

/// CONNECT without a CONNACK, for the user.
fn handshake_failure(error: HandshakeError) -> Failure {
    match error {
        HandshakeError::Timeout => Failure::Retry(Error::Io {
            operation: "wait for DPS's CONNACK",
            source: format!("no answer within {STEP_TIMEOUT:?}").into(),
        }),
        HandshakeError::Io(operation, e) => io(operation, e),
        HandshakeError::Closed => closed("wait for DPS's CONNACK"),
        HandshakeError::NotConnAck(packet) => Failure::Fatal(Error::NotMqtt {
            reason: format!("it answered CONNECT with a {packet} packet, not a CONNACK"),
        }),
        HandshakeError::NotMqtt(e) => Failure::Fatal(Error::NotMqtt {
            reason: format!("its first answer is not an MQTT packet ({e})"),
        }),
    }
}

/// What DPS's refusing CONNACK means.
fn refused(code: ConnectReturnCode, username: &str) -> Failure {
    let refused = |status: u16, message: String| ServiceError {
        status,
        message: Some(message),
        ..ServiceError::default()
    };
    match code {
        ConnectReturnCode::NotAuthorized => Failure::Fatal(Error::Unauthorized {
            error: refused(401, "MQTT CONNACK 5: not authorized".into()),
        }),
        ConnectReturnCode::BadUserNamePassword => Failure::Fatal(Error::Rejected {
            error: refused(
                400,
                format!(
                    "MQTT CONNACK 4: DPS refused the user name \"{username}\" (it names the \
                     ID scope, the registration id and the API version; check them) or the \
                     password"
                ),
            ),
        }),
        ConnectReturnCode::ServiceUnavailable => Failure::Retry(Error::Transient {
            attempts: 1,
            error: refused(503, "MQTT CONNACK 3: server unavailable".into()),
        }),
        ConnectReturnCode::BadClientId => Failure::Fatal(Error::Rejected {
            error: refused(
                400,
                "MQTT CONNACK 2: the client id (the registration id) was refused".into(),
            ),
        }),
        ConnectReturnCode::RefusedProtocolVersion => Failure::Fatal(Error::Rejected {
            error: refused(400, "MQTT CONNACK 1: MQTT 3.1.1 was refused".into()),
        }),
        ConnectReturnCode::Success => Failure::Fatal(Error::NotMqtt {
            reason: "it refused the connection with a success code".into(),
        }),
    }
}
