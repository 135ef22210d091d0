//! The MQTT transport: MQTT 3.1.1 over TLS with rumqttc, DPS's topics, `$rid` correlation.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Packet, QoS,
    StateError, TlsConfiguration, Transport,
};
use zeroize::Zeroizing;

use super::{
    BoxFuture, Connection, Failure, Request, RequestKind, Session, is_tls_failure, tls_failure,
};
use crate::client::USER_AGENT_VALUE;
use crate::endpoint::Endpoint;
use crate::wire::{MAX_RESPONSE, RESPONSE_PREFIX, RawResponse, parse_topic};
use crate::{Error, ServiceError};

const REGISTER_TOPIC: &str = "$dps/registrations/PUT/iotdps-register/";
const STATUS_TOPIC: &str = "$dps/registrations/GET/iotdps-get-operationstatus/";

pub(crate) struct MqttConnection {
    endpoint: Endpoint,
    tls: Arc<rustls::ClientConfig>,
    client_id: String,
    username: String,
    open: Option<Open>,
    next_rid: u64,
}

struct Open {
    client: AsyncClient,
    events: EventLoop,
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
    pub(crate) fn new(session: Session) -> Self {
        let Session {
            endpoint,
            mqtt_port,
            tls,
            id_scope,
            registration_id,
            api_version,
        } = session;
        Self {
            endpoint: endpoint.with_port(mqtt_port),
            tls,
            username: format!(
                "{id_scope}/registrations/{registration_id}/api-version={api_version}&ClientVersion={}",
                hsm_core::percent::encode(USER_AGENT_VALUE.as_bytes())
            ),
            client_id: registration_id.as_str().to_owned(),
            open: None,
            next_rid: 1,
        }
    }

    /// Connects with `password` unless a connection made with it is open.
    async fn connect(&mut self, password: &str) -> Result<(), Failure> {
        if let Some(open) = &self.open {
            if open.password.as_str() == password {
                return Ok(());
            }
            // A new token (after a TPM challenge): DPS reads credentials at CONNECT only.
            self.open = None;
        }
        tracing::debug!(host = %self.endpoint.host, port = self.endpoint.port, "connect (MQTT)");
        let mut options = MqttOptions::new(
            self.client_id.clone(),
            self.endpoint.host.clone(),
            self.endpoint.port,
        );
        options
            .set_credentials(self.username.clone(), password)
            .set_clean_session(true)
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(MAX_RESPONSE + 1024, MAX_RESPONSE + 1024)
            .set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                self.tls.clone(),
            )));
        let (client, mut events) = AsyncClient::new(options, 10);
        client
            .subscribe(format!("{RESPONSE_PREFIX}#"), QoS::AtLeastOnce)
            .await
            .map_err(|e| mqtt_failure("subscribe", e))?;
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    if ack
                        .return_codes
                        .iter()
                        .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
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
                Ok(_) => {}
                Err(e) => return Err(connection_failure(e, &self.username, true)),
            }
        }
        tracing::debug!("connected (MQTT)");
        self.open = Some(Open {
            client,
            events,
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
        let Some(open) = self.open.as_mut() else {
            return Err(Failure::Fatal(Error::config("MQTT connection state lost")));
        };
        open.client
            .publish_bytes(topic, QoS::AtLeastOnce, false, payload)
            .await
            .map_err(|e| mqtt_failure("publish", e))?;
        let operation = request.name();
        loop {
            match open.events.poll().await {
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let Some(response) = parse_topic(&publish.topic) else {
                        tracing::debug!(topic = %publish.topic, "ignoring a message on an unexpected topic");
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
                Ok(_) => {}
                Err(ConnectionError::MqttState(StateError::Deserialization(
                    rumqttc::Error::PayloadSizeLimitExceeded(_),
                ))) => {
                    return Err(Failure::Fatal(Error::ResponseTooLarge {
                        operation,
                        limit: MAX_RESPONSE,
                    }));
                }
                Err(e) => return Err(connection_failure(e, &self.username, false)),
            }
        }
    }
}

fn mqtt_failure(
    operation: &'static str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> Failure {
    Failure::Retry(Error::Mqtt {
        operation,
        source: Box::new(e),
    })
}

/// A failure of the connection (CONNECT, CONNACK, SUBSCRIBE, or later), for the user: what DPS
/// refused and why, or that the server is not an MQTT server at all.
fn connection_failure(e: ConnectionError, username: &str, connecting: bool) -> Failure {
    let refused = |status: u16, message: String| ServiceError {
        status,
        message: Some(message),
        ..ServiceError::default()
    };
    match e {
        ConnectionError::ConnectionRefused(code) => match code {
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
        },
        ConnectionError::NotConnAck(packet) => Failure::Fatal(Error::NotMqtt {
            reason: format!(
                "it answered CONNECT with a {} packet, not a CONNACK",
                packet_name(&packet)
            ),
        }),
        ConnectionError::MqttState(StateError::Deserialization(e)) if connecting => {
            Failure::Fatal(Error::NotMqtt {
                reason: format!("its first answer is not an MQTT packet ({e})"),
            })
        }
        e if is_tls_failure(&e) => Failure::Fatal(tls_failure("TLS handshake with DPS (MQTT)", &e)),
        ConnectionError::Io(e) => Failure::Retry(Error::Io {
            operation: "MQTT connection to DPS",
            source: Box::new(e),
        }),
        e => mqtt_failure("MQTT connection to DPS", e),
    }
}

/// An MQTT 3.1.1 packet type's name, for messages.
pub(crate) fn packet_name(packet: &Packet) -> &'static str {
    match packet {
        Packet::Connect(..) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect => "DISCONNECT",
    }
}
