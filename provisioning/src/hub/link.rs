//! One connection to a hub: the network ([`crate::net`]: TCP to the hub's address or the one
//! given with `connect_to`, or through an HTTP proxy's tunnel; TLS with the hub's name, the
//! client certificate, if any, signing in the HSM; a WebSocket for MQTT over WebSockets), then
//! MQTT 3.1.1 CONNECT and CONNACK ([`crate::mqtt`]). Failures are mapped to what they mean:
//! the hub refused the credential, the hub is unavailable, the network, the proxy, TLS, or a
//! server that does not speak MQTT.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::mqttbytes::v4::{ConnectReturnCode, Packet};

use crate::Error;
pub(super) use crate::mqtt::ReadError;
use crate::mqtt::{self, HandshakeError};
use crate::net::{self, Service};
use crate::proxy::Proxy;

/// The largest packet accepted from a hub (twin documents are at most a few tens of KiB; a
/// cloud-to-device message at most 64 KiB).
const MAX_INCOMING: usize = 256 * 1024;

/// Where and how to connect.
#[derive(Clone, Debug)]
pub(super) struct Target {
    /// The hub's name as assigned (`host` or `host:port`): the user name and SAS resource use
    /// it as it is.
    pub(super) hub: String,
    /// The TLS server name.
    pub(super) host: String,
    /// The TCP address: the hub's host and port, or the `connect_to` override.
    pub(super) address: (String, u16),
    pub(super) tls: Arc<rustls::ClientConfig>,
    pub(super) client_id: String,
    pub(super) username: String,
    pub(super) keep_alive: Duration,
    /// Time allowed for each step: TCP connect, tunnel, TLS handshake, WebSocket, CONNACK.
    pub(super) timeout: Duration,
    /// The HTTP proxy to tunnel through, if any.
    pub(super) proxy: Option<Proxy>,
    /// MQTT over a WebSocket (`/$iothub/websocket`, subprotocol `mqtt`).
    pub(super) websocket: bool,
}

/// A connected MQTT session.
pub(super) struct Link {
    link: mqtt::Link,
    /// CONNACK's session-present flag: the hub kept the subscriptions of an earlier
    /// connection.
    pub(super) session_present: bool,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("session_present", &self.session_present)
            .finish_non_exhaustive()
    }
}

impl Link {
    /// Connects and logs in with `password` (a SAS token; none with a client certificate).
    pub(super) async fn open(target: &Target, password: Option<&str>) -> Result<Self, Error> {
        let step = |operation: &'static str| Error::HubTimeout {
            operation,
            after: target.timeout,
        };
        let route = net::Route {
            service: Service::Hub,
            server_name: &target.host,
            host: &target.address.0,
            port: target.address.1,
            tls: &target.tls,
            proxy: target.proxy.as_ref(),
            websocket: target.websocket.then_some("mqtt"),
            timeout: Some(target.timeout),
        };
        let stream = net::open(&route, &|operation| step(operation)).await?;
        let mut link = mqtt::Link::new(stream, MAX_INCOMING);
        let mut connect = rumqttc::mqttbytes::v4::Connect::new(target.client_id.clone());
        connect.keep_alive = u16::try_from(target.keep_alive.as_secs()).unwrap_or(u16::MAX);
        // As IoT Hub's SDKs do: the hub keeps subscriptions across connections.
        connect.clean_session = false;
        connect.set_login(target.username.clone(), password.unwrap_or_default());
        match link.handshake(connect, target.timeout).await {
            Ok(ack) => match ack.code {
                ConnectReturnCode::Success => Ok(Self {
                    link,
                    session_present: ack.session_present,
                }),
                code => Err(refused(&target.hub, code)),
            },
            Err(HandshakeError::Timeout) => Err(step("CONNECT")),
            Err(HandshakeError::NotConnAck(packet)) => Err(Error::NotMqtt {
                reason: format!("it answered CONNECT with a {packet} packet, not a CONNACK"),
            }),
            Err(HandshakeError::Closed) => Err(Error::Io {
                operation: "wait for the hub's CONNACK",
                source: "the hub closed the connection".into(),
            }),
            Err(HandshakeError::NotMqtt(e)) => Err(Error::NotMqtt {
                reason: format!("its first answer is not an MQTT packet ({e})"),
            }),
            Err(HandshakeError::Io(operation, e)) => Err(lost(operation, e)),
        }
    }

    /// The next packet; `None` when the hub closed the connection. Cancel-safe.
    pub(super) async fn read(&mut self) -> Result<Option<Packet>, ReadError> {
        self.link.read().await
    }

    pub(super) async fn write(&mut self, packet: Packet) -> std::io::Result<()> {
        self.link.write(packet).await
    }

    /// Sends DISCONNECT and closes the connection.
    pub(super) async fn close(self) {
        self.link.close().await;
    }
}

/// A network failure during `operation`.
pub(super) fn lost(
    operation: &'static str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> Error {
    Error::Io {
        operation,
        source: Box::new(e),
    }
}

/// What a refusing CONNACK means.
fn refused(hub: &str, code: ConnectReturnCode) -> Error {
    let (code, meaning) = match code {
        ConnectReturnCode::NotAuthorized => (5, "not authorized"),
        ConnectReturnCode::BadUserNamePassword => (
            4,
            "bad user name or password: the API version, the device id or the token",
        ),
        ConnectReturnCode::BadClientId => (2, "the client id (the device id) was rejected"),
        ConnectReturnCode::RefusedProtocolVersion => (1, "MQTT 3.1.1 was refused"),
        ConnectReturnCode::ServiceUnavailable => {
            return Error::HubUnavailable {
                hub: hub.to_owned(),
            };
        }
        ConnectReturnCode::Success => {
            return Error::NotMqtt {
                reason: "it refused the connection with a success code".into(),
            };
        }
    };
    Error::HubRefused {
        hub: hub.to_owned(),
        code,
        meaning,
    }
}
