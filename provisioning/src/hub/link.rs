//! One connection to a hub: TCP (to the hub's address, or the one given with
//! `connect_to`), TLS with the hub's name (the client certificate, if any, signing in the
//! HSM), then MQTT 3.1.1 CONNECT and CONNACK, framed by rumqttc's codec. Failures are mapped
//! to what they mean: the hub refused the credential, the hub is unavailable, the network, TLS,
//! or a server that does not speak MQTT.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::Error as CodecError;
use rumqttc::mqttbytes::v4::{ConnectReturnCode, Packet};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::Error;
use crate::transport::{is_tls_failure, tls_failure};

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
    /// Time allowed for each step: TCP connect, TLS handshake, CONNACK.
    pub(super) timeout: Duration,
}

/// A connected MQTT session.
pub(super) struct Link {
    stream: TlsStream<TcpStream>,
    buffer: BytesMut,
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
        let tcp = tokio::time::timeout(
            target.timeout,
            TcpStream::connect((target.address.0.as_str(), target.address.1)),
        )
        .await
        .map_err(|_| step("TCP connection"))?
        .map_err(|e| Error::Io {
            operation: "connect to the hub",
            source: Box::new(e),
        })?;
        let _ = tcp.set_nodelay(true);
        let name = rustls::pki_types::ServerName::try_from(target.host.clone()).map_err(|_| {
            Error::config(format!("the hub name {} is not a host name", target.host))
        })?;
        let stream = tokio::time::timeout(
            target.timeout,
            TlsConnector::from(target.tls.clone()).connect(name, tcp),
        )
        .await
        .map_err(|_| step("TLS handshake"))?
        .map_err(|e| match is_tls_failure(&e) {
            true => tls_failure("TLS handshake with the hub", &e),
            false => Error::Io {
                operation: "TLS handshake with the hub",
                source: Box::new(e),
            },
        })?;
        let mut link = Self {
            stream,
            buffer: BytesMut::with_capacity(4096),
            session_present: false,
        };
        let mut connect = rumqttc::mqttbytes::v4::Connect::new(target.client_id.clone());
        connect.keep_alive = u16::try_from(target.keep_alive.as_secs()).unwrap_or(u16::MAX);
        // As IoT Hub's SDKs do: the hub keeps subscriptions across connections.
        connect.clean_session = false;
        connect.set_login(target.username.clone(), password.unwrap_or_default());
        link.write(Packet::Connect(connect))
            .await
            .map_err(|e| lost("send CONNECT", e))?;
        let answer = tokio::time::timeout(target.timeout, link.read())
            .await
            .map_err(|_| step("CONNECT"))?;
        match answer {
            Ok(Some(Packet::ConnAck(ack))) => match ack.code {
                ConnectReturnCode::Success => {
                    link.session_present = ack.session_present;
                    Ok(link)
                }
                code => Err(refused(&target.hub, code)),
            },
            Ok(Some(other)) => Err(Error::NotMqtt {
                reason: format!(
                    "it answered CONNECT with a {} packet, not a CONNACK",
                    crate::transport::mqtt::packet_name(&other)
                ),
            }),
            Ok(None) => Err(Error::Io {
                operation: "wait for the hub's CONNACK",
                source: "the hub closed the connection".into(),
            }),
            Err(ReadError::Codec(e)) => Err(Error::NotMqtt {
                reason: format!("its first answer is not an MQTT packet ({e})"),
            }),
            Err(ReadError::Io(e)) => Err(lost("wait for the hub's CONNACK", e)),
        }
    }

    /// The next packet; `None` when the hub closed the connection. Cancel-safe: bytes read
    /// stay in the buffer.
    pub(super) async fn read(&mut self) -> Result<Option<Packet>, ReadError> {
        loop {
            match Packet::read(&mut self.buffer, MAX_INCOMING) {
                Ok(packet) => return Ok(Some(packet)),
                Err(CodecError::InsufficientBytes(_)) => {}
                Err(e) => return Err(ReadError::Codec(e)),
            }
            if self.stream.read_buf(&mut self.buffer).await? == 0 {
                return Ok(None);
            }
        }
    }

    pub(super) async fn write(&mut self, packet: Packet) -> std::io::Result<()> {
        let mut out = BytesMut::new();
        packet
            .write(&mut out, usize::MAX)
            .map_err(std::io::Error::other)?;
        self.stream.write_all(&out).await?;
        self.stream.flush().await
    }

    /// Sends DISCONNECT and closes the TLS session.
    pub(super) async fn close(mut self) {
        let _ = self.write(Packet::Disconnect).await;
        let _ = self.stream.shutdown().await;
    }
}

/// A failed read.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReadError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the hub sent something that is not MQTT: {0}")]
    Codec(CodecError),
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
