//! The MQTT endpoint: MQTT 3.1.1 over TLS for DPS and for the hubs it assigns, told apart by
//! the CONNECT user name (DPS: `{idScope}/registrations/{registrationId}/...`; a hub:
//! `{hub}/{deviceId}/?api-version=...`). Packets are framed by rumqttc's codec; [`dps`] maps
//! DPS's topics to service requests, [`hub`] serves IoT Hub's.

mod dps;
mod hub;

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::Error as MqttError;
use rumqttc::mqttbytes::v4::{ConnAck, Connect, ConnectReturnCode, Packet};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use crate::https::{Limits, MAX_BODY};
use crate::listener::Accepted;
use crate::service::Service;

/// Serves one MQTT connection: a DPS session or a hub session, by its CONNECT.
pub(crate) async fn serve_session(accepted: Accepted, service: Arc<Service>, limits: Limits) {
    let Accepted {
        stream,
        peer,
        chain,
    } = accepted;
    serve_stream(stream, peer, chain, service, limits).await;
}

/// Serves MQTT on any byte stream: the MQTT port's TLS connections, and the WebSockets of the
/// HTTPS port (`/$iothub/websocket`).
pub(crate) async fn serve_stream<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    peer: std::net::SocketAddr,
    chain: Arc<[rustls_pki_types::CertificateDer<'static>]>,
    service: Arc<Service>,
    limits: Limits,
) {
    let mut conn = Connection {
        stream,
        buffer: BytesMut::with_capacity(4096),
        max_packet: MAX_BODY + 1024,
    };
    let ended = async {
        let Some(Packet::Connect(connect)) = conn.read(limits.read_timeout).await? else {
            return Err(SessionError::NotConnect);
        };
        let username = connect.login.as_ref().map(|l| l.username.as_str());
        match username.map(|u| (dps::Username::parse(u), crate::hub::Login::parse(u))) {
            Some((None, Some(login))) => {
                hub::session(&mut conn, &connect, login, &chain, &service).await
            }
            Some((Some(username), _)) => {
                dps::session(&mut conn, &connect, username, &chain, &service).await
            }
            _ => {
                conn.write(Packet::ConnAck(ConnAck::new(
                    ConnectReturnCode::BadUserNamePassword,
                    false,
                )))
                .await?;
                Err(SessionError::Refused(
                    ConnectReturnCode::BadUserNamePassword,
                ))
            }
        }
    }
    .await;
    if let Err(e) = ended {
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
    #[error("closed by the hub: {0}")]
    Closed(&'static str),
}

/// Packets over a stream.
struct Connection<S> {
    stream: S,
    buffer: BytesMut,
    /// The largest packet accepted.
    max_packet: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// The next packet, whole within `timeout` (a deadline for the packet, not for each read:
    /// a byte every few seconds does not keep a connection alive). Cancel-safe: bytes read
    /// stay in the buffer.
    async fn read(&mut self, timeout: Duration) -> Result<Option<Packet>, SessionError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match Packet::read(&mut self.buffer, self.max_packet) {
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

/// The CONNECT password, if one was given (an empty one is none: X.509 devices send none).
fn password(connect: &Connect) -> Option<&str> {
    connect
        .login
        .as_ref()
        .map(|l| l.password.as_str())
        .filter(|p| !p.is_empty())
}

/// How long a client may stay silent: 1.5 times its keep-alive (MQTT's rule), 5 minutes
/// without one.
fn idle_limit(keep_alive: u16) -> Duration {
    match keep_alive {
        0 => Duration::from_secs(300),
        k => Duration::from_millis(u64::from(k) * 1500),
    }
}

/// Parses an MQTT user name and topic as the MQTT endpoint would (DPS's and the hubs'): for
/// the fuzz target.
#[doc(hidden)]
pub fn fuzz_topic(username: &str, topic: &str) -> bool {
    let dps = dps::fuzz(username, topic);
    let hub = hub::fuzz(username, topic);
    dps || hub
}
