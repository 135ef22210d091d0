//! How requests reach DPS. The registration run ([`crate::run`]) speaks to a [`Connection`]
//! only; each transport is one module that implements it, and [`open`] picks one. A new
//! transport (MQTT over WebSockets, AMQP, a proxy under any of them) is a new module and a new
//! arm in [`open`], nothing else.

#[cfg(feature = "amqp")]
pub(crate) mod amqp;
#[cfg(feature = "https")]
pub(crate) mod https;
#[cfg(feature = "mqtt")]
pub(crate) mod mqtt;
mod tls;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use hsm_core::RegistrationId;

use crate::Error;
use crate::endpoint::Endpoint;
use crate::wire::RawResponse;

/// How the client talks to DPS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// HTTPS (REST API), port 443 or the endpoint's port. Supports every attestation. The
    /// default.
    #[default]
    Https,
    /// MQTT 3.1.1 over TLS, port 8883 (see
    /// [`ProvisioningClientBuilder::mqtt_port`](crate::ProvisioningClientBuilder::mqtt_port)).
    /// X.509 and symmetric key only: DPS has no TPM attestation over MQTT.
    Mqtt,
    /// MQTT 3.1.1 over a WebSocket (`wss://{host}:443/$iothub/websocket`, subprotocol
    /// `mqtt`) on the endpoint's HTTPS port: for networks that allow nothing but 443. The same
    /// TLS configuration (an X.509 client certificate still signs in the HSM). X.509 and
    /// symmetric key only.
    MqttWs,
    /// AMQP 1.0 over TLS, port 5671 (see
    /// [`ProvisioningClientBuilder::amqp_port`](crate::ProvisioningClientBuilder::amqp_port)).
    /// Every attestation: X.509 (the TLS client certificate), symmetric key (SASL `PLAIN`
    /// with the SAS token) and TPM (SASL `TPM`: the challenge arrives during the handshake).
    Amqp,
    /// AMQP 1.0 over a WebSocket (`wss://{host}:443/$iothub/websocket`, subprotocol
    /// `AMQPWSB10`) on the endpoint's HTTPS port. Every attestation, as [`Amqp`](Self::Amqp).
    AmqpWs,
}

impl Transport {
    /// The name for messages and logs: `"HTTPS"`, `"MQTT"`, `"MQTT over WebSockets"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Https => "HTTPS",
            Self::Mqtt => "MQTT",
            Self::MqttWs => "MQTT over WebSockets",
            Self::Amqp => "AMQP",
            Self::AmqpWs => "AMQP over WebSockets",
        }
    }

    /// Whether it is MQTT (over TCP or a WebSocket), on which DPS has no TPM attestation.
    pub fn is_mqtt(self) -> bool {
        matches!(self, Self::Mqtt | Self::MqttWs)
    }

    /// Whether it is AMQP (over TCP or a WebSocket).
    pub fn is_amqp(self) -> bool {
        matches!(self, Self::Amqp | Self::AmqpWs)
    }

    /// Whether it runs over a WebSocket on the HTTPS port.
    pub fn is_websocket(self) -> bool {
        matches!(self, Self::MqttWs | Self::AmqpWs)
    }

    /// The cargo feature that builds it in: `"https"`, `"mqtt"`, `"websocket"` or `"amqp"`
    /// (AMQP over WebSockets needs `"amqp"` and `"websocket"`: this names the one missing).
    pub fn feature(self) -> &'static str {
        match self {
            Self::Https => "https",
            Self::Mqtt => "mqtt",
            Self::MqttWs => "websocket",
            Self::Amqp => "amqp",
            Self::AmqpWs if cfg!(feature = "amqp") => "websocket",
            Self::AmqpWs => "amqp",
        }
    }

    /// Whether this build has it (its [`feature`](Self::feature) is on; all are by default).
    pub fn is_built(self) -> bool {
        match self {
            Self::Https => cfg!(feature = "https"),
            Self::Mqtt => cfg!(feature = "mqtt"),
            Self::MqttWs => cfg!(feature = "websocket"),
            Self::Amqp => cfg!(feature = "amqp"),
            Self::AmqpWs => cfg!(all(feature = "amqp", feature = "websocket")),
        }
    }

    /// `Ok` if this build has it.
    ///
    /// # Errors
    /// [`Error::Config`] naming the cargo feature that builds it in.
    pub fn check_built(self) -> Result<(), Error> {
        if self.is_built() {
            Ok(())
        } else {
            Err(Error::config(format!(
                "this build has no {} transport (the provisioning crate's `{}` feature is off)",
                self.name(),
                self.feature()
            )))
        }
    }

    /// The ALPN protocol its TLS connections offer, if any.
    pub(crate) fn alpn(self) -> Option<&'static [u8]> {
        match self {
            Self::Https | Self::MqttWs | Self::AmqpWs => Some(b"http/1.1"),
            Self::Mqtt | Self::Amqp => None,
        }
    }
}

/// A boxed future, so that [`Connection`] is dyn-compatible.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One device's conversation with DPS over one transport: connects when first asked, keeps the
/// connection for the following requests, reconnects after [`reset`](Self::reset) or when the
/// server closed it.
pub(crate) trait Connection: Send {
    /// Sends one request and waits for its answer.
    fn send<'a>(
        &'a mut self,
        request: &'a Request<'a>,
    ) -> BoxFuture<'a, Result<RawResponse, Failure>>;

    /// Forgets the connection; the next request opens a new one.
    fn reset(&mut self);
}

/// What a connection is opened for: the same for every request of one registration.
#[derive(Clone, Debug)]
pub(crate) struct Session {
    /// The global endpoint (its port is HTTPS's).
    pub(crate) endpoint: Endpoint,
    /// DPS's MQTT port on the endpoint's host.
    pub(crate) mqtt_port: u16,
    /// DPS's AMQP port on the endpoint's host.
    pub(crate) amqp_port: u16,
    /// The TLS configuration (with the client certificate for X.509).
    pub(crate) tls: Arc<rustls::ClientConfig>,
    /// The HTTP proxy to tunnel through, if any.
    pub(crate) proxy: Option<crate::proxy::Proxy>,
    pub(crate) id_scope: String,
    pub(crate) registration_id: RegistrationId,
    pub(crate) api_version: String,
}

/// Opens (lazily: nothing is sent until the first request) a connection over `transport`.
pub(crate) fn open(transport: Transport, session: Session) -> Box<dyn Connection> {
    match transport {
        #[cfg(feature = "https")]
        Transport::Https => Box::new(https::HttpsConnection::new(session)),
        #[cfg(feature = "mqtt")]
        Transport::Mqtt => Box::new(mqtt::MqttConnection::new(session, false)),
        #[cfg(feature = "websocket")]
        Transport::MqttWs => Box::new(mqtt::MqttConnection::new(session, true)),
        #[cfg(feature = "amqp")]
        Transport::Amqp => Box::new(amqp::AmqpConnection::new(session, false)),
        #[cfg(all(feature = "amqp", feature = "websocket"))]
        Transport::AmqpWs => Box::new(amqp::AmqpConnection::new(session, true)),
        #[allow(unreachable_patterns)]
        _ => {
            let _ = session;
            Box::new(NotBuilt(transport))
        }
    }
}

/// A transport this build leaves out (its cargo feature is off): every request fails with
/// [`Transport::check_built`]'s error. The builder refuses such a transport first; this only
/// keeps [`open`] total.
struct NotBuilt(Transport);

impl Connection for NotBuilt {
    fn send<'a>(
        &'a mut self,
        _request: &'a Request<'a>,
    ) -> BoxFuture<'a, Result<RawResponse, Failure>> {
        let error = self
            .0
            .check_built()
            .err()
            .unwrap_or_else(|| Error::config(format!("{} is not available", self.0.name())));
        Box::pin(std::future::ready(Err(Failure::Fatal(error))))
    }

    fn reset(&mut self) {}
}

/// One request to DPS.
#[derive(Debug)]
pub(crate) struct Request<'a> {
    pub(crate) kind: RequestKind<'a>,
    /// The `Authorization` (HTTPS), CONNECT password (MQTT) or SASL `PLAIN` password (AMQP): a
    /// SAS token, or none for X.509 and a TPM's first request.
    pub(crate) authorization: Option<&'a str>,
    /// A TPM that authenticates while the connection is made (AMQP's SASL `TPM`), for a
    /// transport that can; the others answer with a 401 challenge instead.
    pub(crate) tpm: Option<&'a dyn TpmHandshake>,
}

/// What a TPM brings to a connection that authenticates during its handshake (AMQP's SASL
/// `TPM` mechanism) rather than with a 401 challenge: its keys, and the answer to the
/// challenge.
pub(crate) trait TpmHandshake: Send + Sync {
    /// The endorsement key (marshaled `TPM2B_PUBLIC`).
    fn endorsement_key(&self) -> &[u8];
    /// The storage root key (marshaled `TPM2B_PUBLIC`).
    fn storage_root_key(&self) -> &[u8];
    /// Imports the identity key `blob` carries into the TPM and returns a SAS token signed
    /// with it.
    fn answer(&self, blob: Vec<u8>) -> BoxFuture<'_, Result<hsm_core::SasToken, Error>>;
}

impl std::fmt::Debug for dyn TpmHandshake + '_ {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TpmHandshake").finish_non_exhaustive()
    }
}

/// What is asked.
#[derive(Debug)]
pub(crate) enum RequestKind<'a> {
    /// The registration, with its JSON body.
    Register { body: &'a Bytes },
    /// The status of an operation.
    Poll { operation_id: &'a str },
    /// Any answer, for its `Date` (HTTPS only): the service's time.
    Time,
}

impl Request<'_> {
    /// `"register"` or `"poll"`, for messages.
    pub(crate) fn name(&self) -> &'static str {
        match self.kind {
            RequestKind::Register { .. } => "register",
            RequestKind::Poll { .. } => "poll",
            RequestKind::Time => "read the service's time",
        }
    }
}

/// How a transport-level failure is handled.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Retried on a new connection, then returned.
    Retry(Error),
    /// Returned at once.
    Fatal(Error),
}

/// Whether `error` or any of its causes is a rustls error (certificate not trusted, alert from
/// the peer): retrying cannot help.
pub(crate) fn is_tls_failure(error: &(dyn std::error::Error + 'static)) -> bool {
    tls::find_rustls(error).is_some()
}

/// [`Error::Tls`] for a failed handshake, described in words.
pub(crate) fn tls_failure(
    operation: &'static str,
    error: &(dyn std::error::Error + 'static),
) -> Error {
    tls::failure(operation, error)
}

/// An I/O failure: fatal if TLS refused, else retried.
pub(crate) fn classify_io(operation: &'static str, error: std::io::Error) -> Failure {
    if is_tls_failure(&error) {
        Failure::Fatal(tls_failure(operation, &error))
    } else {
        Failure::Retry(Error::Io {
            operation,
            source: Box::new(error),
        })
    }
}
