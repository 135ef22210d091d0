//! MQTT 3.1.1 on a byte stream ([`crate::net`]), framed by rumqttc's codec: the one MQTT
//! connection both DPS's transport and the hub client use. It sends CONNECT and reads the
//! CONNACK; what a refusal means is the caller's to say (DPS and the hub mean different
//! things by the same codes).

use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::Error as CodecError;
use rumqttc::mqttbytes::v4::{ConnAck, Connect, Packet};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::net::Stream;

/// One MQTT connection.
pub(crate) struct Link {
    stream: Stream,
    buffer: BytesMut,
    max_incoming: usize,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").finish_non_exhaustive()
    }
}

/// Why CONNECT did not get a CONNACK.
#[derive(Debug)]
pub(crate) enum HandshakeError {
    /// No CONNACK within the timeout.
    Timeout,
    /// The network failed while sending CONNECT or waiting.
    Io(&'static str, std::io::Error),
    /// The server closed the connection.
    Closed,
    /// The server answered with another packet.
    NotConnAck(&'static str),
    /// The server's first answer is not MQTT.
    NotMqtt(CodecError),
}

/// A failed read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the server sent something that is not MQTT: {0}")]
    Codec(CodecError),
}

impl Link {
    /// MQTT on `stream`, accepting packets of at most `max_incoming` bytes.
    pub(crate) fn new(stream: Stream, max_incoming: usize) -> Self {
        Self {
            stream,
            buffer: BytesMut::with_capacity(4096),
            max_incoming,
        }
    }

    /// Sends CONNECT and waits (at most `timeout`) for the CONNACK, which it returns whatever
    /// its code.
    pub(crate) async fn handshake(
        &mut self,
        connect: Connect,
        timeout: Duration,
    ) -> Result<ConnAck, HandshakeError> {
        self.write(Packet::Connect(connect))
            .await
            .map_err(|e| HandshakeError::Io("send CONNECT", e))?;
        let answer = tokio::time::timeout(timeout, self.read())
            .await
            .map_err(|_| HandshakeError::Timeout)?;
        match answer {
            Ok(Some(Packet::ConnAck(ack))) => Ok(ack),
            Ok(Some(other)) => Err(HandshakeError::NotConnAck(packet_name(&other))),
            Ok(None) => Err(HandshakeError::Closed),
            Err(ReadError::Codec(e)) => Err(HandshakeError::NotMqtt(e)),
            Err(ReadError::Io(e)) => Err(HandshakeError::Io("wait for the CONNACK", e)),
        }
    }

    /// The next packet; `None` when the server closed the connection. Cancel-safe: bytes read
    /// stay in the buffer.
    pub(crate) async fn read(&mut self) -> Result<Option<Packet>, ReadError> {
        loop {
            match Packet::read(&mut self.buffer, self.max_incoming) {
                Ok(packet) => return Ok(Some(packet)),
                Err(CodecError::InsufficientBytes(_)) => {}
                Err(e) => return Err(ReadError::Codec(e)),
            }
            if self.stream.read_buf(&mut self.buffer).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// Writes one packet and flushes it.
    pub(crate) async fn write(&mut self, packet: Packet) -> std::io::Result<()> {
        let mut out = BytesMut::new();
        packet
            .write(&mut out, usize::MAX)
            .map_err(std::io::Error::other)?;
        self.stream.write_all(&out).await?;
        self.stream.flush().await
    }

    /// Sends DISCONNECT and closes the stream.
    pub(crate) async fn close(mut self) {
        let _ = self.write(Packet::Disconnect).await;
        let _ = self.stream.shutdown().await;
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
