//! The AMQP endpoint: DPS over AMQP 1.0 on TLS (its own port) and over WebSockets on the
//! HTTPS port (subprotocol `AMQPWSB10`). fe2o3-amqp's acceptor runs the connection, session
//! and links; this module plays DPS on top:
//!
//! - the first 8 bytes choose the layering: the SASL header for a symmetric key (`PLAIN`) or
//!   a TPM (`TPM`, [`sasl`]), the AMQP header for X.509 (the TLS client certificate);
//! - the links must name `{idScope}/registrations/{registrationId}` (optionally as
//!   `amqps://{host}/...`), the one SASL authenticated, and carry `com.microsoft:api-version`;
//! - each message on the device's sending link is a request (`iotdps-operation-type`
//!   `iotdps-register` with the JSON body, or `iotdps-get-operationstatus` with
//!   `iotdps-operation-id`), handled by the same [`Service`] as HTTPS and MQTT, faults
//!   included; success is accepted and answered on the device's receiving link (the JSON in a
//!   data section, the request's message id as correlation id, `retry-after`); an error
//!   rejects the request with a condition, the JSON error as description and `retry-after`
//!   in its info.

mod sasl;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use fe2o3_amqp::Sendable;
use fe2o3_amqp::acceptor::{
    ConnectionAcceptor, LinkAcceptor, LinkEndpoint, ListenerConnectionHandle,
    ListenerSessionHandle, SessionAcceptor,
};
use fe2o3_amqp::types::definitions::{self, AmqpError, ErrorCondition, Fields};
use fe2o3_amqp::types::messaging::{
    ApplicationProperties, Body, Message, Properties, TargetArchetype,
};
use fe2o3_amqp::types::performatives::Attach;
use fe2o3_amqp::types::primitives::{Binary, Symbol, Value};
use futures_util::task::AtomicWaker;
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};

use crate::https::{Limits, MAX_BODY};
use crate::listener::Accepted;
use crate::service::{Reply, Request, RequestKind, Service, Transport};

/// The largest frame either side sends.
const MAX_FRAME: u32 = 64 * 1024;
/// How long a connection may stay silent (AMQP's idle timeout, announced at open).
const IDLE_TIMEOUT: Duration = Duration::from_secs(240);
/// The SASL protocol header: `AMQP`, id 3, version 1.0.0.
const SASL_HEADER: [u8; 8] = *b"AMQP\x03\x01\x00\x00";
/// The AMQP protocol header: `AMQP`, id 0, version 1.0.0.
const AMQP_HEADER: [u8; 8] = *b"AMQP\x00\x01\x00\x00";

/// Serves one AMQP connection of the AMQP port.
pub(crate) async fn serve_session(accepted: Accepted, service: Arc<Service>, limits: Limits) {
    let Accepted {
        stream,
        peer,
        chain,
    } = accepted;
    serve_stream(stream, peer, chain, service, limits).await;
}

/// Serves AMQP on any byte stream: the AMQP port's TLS connections, and the WebSockets of the
/// HTTPS port.
pub(crate) async fn serve_stream<S>(
    mut stream: S,
    peer: SocketAddr,
    chain: Arc<[CertificateDer<'static>]>,
    service: Arc<Service>,
    limits: Limits,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let mut header = [0u8; 8];
    match tokio::time::timeout(limits.read_timeout, stream.read_exact(&mut header)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "AMQP connection closed before its header");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "AMQP connection sent no header in time");
            return;
        }
    }
    let killed = Arc::new(Kill::default());
    let io = Io {
        header,
        sent: 0,
        inner: stream,
        killed: killed.clone(),
        frames: FrameGuard::default(),
    };
    let identity = Arc::new(std::sync::Mutex::new(None));
    let opened = if header == SASL_HEADER {
        let acceptor = ConnectionAcceptor::builder()
            .container_id("dps-emulator")
            .max_frame_size(MAX_FRAME)
            .idle_time_out(u32::try_from(IDLE_TIMEOUT.as_millis()).unwrap_or(u32::MAX))
            .sasl_acceptor(sasl::DpsSasl::new(service.clone(), identity.clone()))
            .build();
        tokio::time::timeout(limits.read_timeout, acceptor.accept(io)).await
    } else if header == AMQP_HEADER {
        let acceptor = ConnectionAcceptor::builder()
            .container_id("dps-emulator")
            .max_frame_size(MAX_FRAME)
            .idle_time_out(u32::try_from(IDLE_TIMEOUT.as_millis()).unwrap_or(u32::MAX))
            .build();
        tokio::time::timeout(limits.read_timeout, acceptor.accept(io)).await
    } else {
        // AMQP's answer to a header it does not serve: its own, then close (2.2).
        let mut io = io;
        let _ = tokio::io::AsyncWriteExt::write_all(&mut io.inner, &SASL_HEADER).await;
        tracing::debug!(%peer, header = ?header, "not an AMQP 1.0 protocol header");
        return;
    };
    let mut connection = match opened {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "AMQP connection refused");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "AMQP open timed out");
            return;
        }
    };
    let identity = identity.lock().unwrap_or_else(|e| e.into_inner()).take();
    let ended = serve_connection(&mut connection, identity, &chain, &service, limits).await;
    match ended {
        Ok(()) => {
            // The device closes the connection once its session ended; else we do.
            if tokio::time::timeout(CLOSING, connection.on_close())
                .await
                .is_err()
            {
                let _ = tokio::time::timeout(CLOSING, connection.close()).await;
            }
        }
        Err(Ended::Dropped) => {
            killed.kill();
            tracing::info!(%peer, "AMQP connection dropped on purpose");
        }
        Err(Ended::Refused(reason)) => {
            tracing::debug!(%peer, reason, "AMQP session refused");
            let _ = tokio::time::timeout(CLOSING, connection.close()).await;
        }
    }
}

/// Who SASL authenticated, if anyone.
#[derive(Debug)]
pub(crate) struct Identity {
    pub(crate) id_scope: String,
    pub(crate) registration_id: String,
    /// The SAS token it authenticated with (`PLAIN`, or `TPM`'s last step).
    pub(crate) token: zeroize::Zeroizing<String>,
}

/// Why a connection ended early.
enum Ended {
    /// A fault said to drop it.
    Dropped,
    /// Something was refused; the reason is for the log.
    Refused(String),
}

/// The device's links, once both are attached.
struct Links {
    /// Where requests arrive (the device's sender).
    requests: fe2o3_amqp::Receiver,
    /// Where answers go (the device's receiver).
    answers: fe2o3_amqp::Sender,
    id_scope: String,
    registration_id: String,
    api_version: Option<String>,
}

async fn serve_connection(
    connection: &mut ListenerConnectionHandle,
    identity: Option<Identity>,
    chain: &[CertificateDer<'static>],
    service: &Service,
    limits: Limits,
) -> Result<(), Ended> {
    let mut session = tokio::time::timeout(
        limits.read_timeout,
        SessionAcceptor::new().accept(connection),
    )
    .await
    .map_err(|_| Ended::Refused("no session in time".into()))?
    .map_err(|e| Ended::Refused(format!("session: {e}")))?;
    let mut links = attach(&mut session, identity.as_ref(), chain, limits).await?;
    let served = serve_links(&mut links, identity.as_ref(), chain, service).await;
    if served.is_ok() {
        // The device detached (it is done): close our end of its links and the session, as
        // it waits for them before it closes the connection.
        let _ = tokio::time::timeout(CLOSING, async {
            let _ = links.answers.close().await;
            let _ = links.requests.close().await;
            let _ = session.end().await;
        })
        .await;
    }
    served
}

/// How long the polite end of a connection (links, session, then the device's close) may take.
const CLOSING: Duration = Duration::from_secs(2);

/// Answers the requests on `links` until the device detaches them.
async fn serve_links(
    links: &mut Links,
    identity: Option<&Identity>,
    chain: &[CertificateDer<'static>],
    service: &Service,
) -> Result<(), Ended> {
    let authorization = identity.map(|i| i.token.to_string());
    loop {
        let delivery = match links.requests.recv::<Body<Value>>().await {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(error = %e, "AMQP link ended");
                return Ok(());
            }
        };
        let message = delivery.message();
        let property = |name: &str| {
            message
                .application_properties
                .as_ref()
                .and_then(|p| p.0.get(name))
                .and_then(|v| match Value::from(v.clone()) {
                    Value::String(s) => Some(s),
                    Value::Symbol(s) => Some(s.0),
                    _ => None,
                })
        };
        let correlation = message
            .properties
            .as_ref()
            .and_then(|p| p.message_id.clone().or_else(|| p.correlation_id.clone()));
        let kind = match property("iotdps-operation-type").as_deref() {
            Some("iotdps-register") => RequestKind::Register(body_bytes(&message.body)),
            Some("iotdps-get-operationstatus") => {
                RequestKind::Operation(property("iotdps-operation-id").unwrap_or_default())
            }
            other => {
                let reply = Reply::error(
                    400,
                    400_004,
                    &format!(
                        "Unknown iotdps-operation-type {:?}.",
                        other.unwrap_or_default()
                    ),
                );
                let _ = links.requests.reject(&delivery, rejection(&reply)).await;
                continue;
            }
        };
        let reply = service
            .handle(Request {
                id_scope: &links.id_scope,
                registration_id: links.registration_id.clone(),
                api_version: links.api_version.clone(),
                kind,
                authorization: authorization.clone(),
                client_chain: chain,
                transport: Transport::Amqp,
            })
            .await;
        if reply.drop {
            return Err(Ended::Dropped);
        }
        if !(200..300).contains(&reply.status) {
            // DPS challenges a TPM during SASL over AMQP, never with a 401 body.
            let reply = if reply.status == 401 {
                Reply::error(401, 401_002, "The device is unauthorized.")
            } else {
                reply
            };
            let _ = links.requests.reject(&delivery, rejection(&reply)).await;
            continue;
        }
        if links.requests.accept(&delivery).await.is_err() {
            return Ok(());
        }
        let mut properties = ApplicationProperties::builder();
        if let Some(seconds) = reply.retry_after {
            properties = properties.insert("retry-after", seconds.to_string());
        }
        let answer = Message::builder()
            .properties(Properties {
                correlation_id: correlation,
                content_type: Some(Symbol::from("application/json")),
                ..Properties::default()
            })
            .application_properties(properties.build())
            .data(Binary::from(reply.body))
            .build();
        let sendable = Sendable::builder().message(answer).settled(true).build();
        if links.answers.send(sendable).await.is_err() {
            return Ok(());
        }
    }
}

/// Accepts the device's two links (in either order), checking their address against who
/// authenticated.
async fn attach(
    session: &mut ListenerSessionHandle,
    identity: Option<&Identity>,
    chain: &[CertificateDer<'static>],
    limits: Limits,
) -> Result<Links, Ended> {
    let mut requests = None;
    let mut answers = None;
    let mut named: Option<(String, String)> = None;
    let mut api_version = None;
    while requests.is_none() || answers.is_none() {
        let attach = tokio::time::timeout(limits.read_timeout, session.next_incoming_attach())
            .await
            .map_err(|_| Ended::Refused("no link attached in time".into()))?
            .ok_or_else(|| Ended::Refused("the session ended before its links".into()))?;
        let address = link_address(&attach);
        let version = link_api_version(&attach);
        let endpoint = LinkAcceptor::new()
            .accept_incoming_attach(attach, session)
            .await
            .map_err(|e| Ended::Refused(format!("link: {e}")))?;
        let parsed = address.as_deref().and_then(parse_address);
        let refusal = match (&parsed, identity) {
            (None, _) => Some(format!(
                "the link address {address:?} names no registration"
            )),
            (Some((scope, id)), Some(who))
                if !scope.eq_ignore_ascii_case(&who.id_scope) || *id != who.registration_id =>
            {
                Some(format!(
                    "the link names {scope}/{id}, SASL authenticated {}/{}",
                    who.id_scope, who.registration_id
                ))
            }
            (Some(_), None) if chain.is_empty() => {
                Some("no credential: neither SASL nor a client certificate".into())
            }
            (Some(pair), _) => match &named {
                Some(first) if first != pair => {
                    Some("the two links name different registrations".into())
                }
                _ => None,
            },
        };
        if let Some(reason) = refusal {
            let error =
                definitions::Error::new(AmqpError::UnauthorizedAccess, Some(reason.clone()), None);
            match endpoint {
                LinkEndpoint::Sender(s) => {
                    let _ = s.close_with_error(error).await;
                }
                LinkEndpoint::Receiver(r) => {
                    let _ = r.close_with_error(error).await;
                }
            }
            return Err(Ended::Refused(reason));
        }
        named = parsed;
        if version.is_some() {
            api_version = version;
        }
        match endpoint {
            LinkEndpoint::Receiver(r) => requests = Some(r),
            LinkEndpoint::Sender(s) => answers = Some(s),
        }
    }
    let (Some(requests), Some(answers), Some((id_scope, registration_id))) =
        (requests, answers, named)
    else {
        return Err(Ended::Refused("links missing".into()));
    };
    Ok(Links {
        requests,
        answers,
        id_scope,
        registration_id,
        api_version,
    })
}

/// The registration address of a link: the target of the device's sender, the source of its
/// receiver.
fn link_address(attach: &Attach) -> Option<String> {
    match attach.role {
        definitions::Role::Sender => match attach.target.as_deref() {
            Some(TargetArchetype::Target(target)) => target.address.as_ref().map(|a| a.to_string()),
            _ => None,
        },
        definitions::Role::Receiver => attach
            .source
            .as_ref()
            .and_then(|s| s.address.as_ref().map(|a| a.to_string())),
    }
}

/// `com.microsoft:api-version` from the link's properties.
fn link_api_version(attach: &Attach) -> Option<String> {
    attach
        .properties
        .as_ref()
        .and_then(|p| p.get(&Symbol::from("com.microsoft:api-version")))
        .and_then(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Symbol(s) => Some(s.0.clone()),
            _ => None,
        })
}

/// `{idScope}/registrations/{registrationId}`, optionally after `amqps://{host}/`.
pub(crate) fn parse_address(address: &str) -> Option<(String, String)> {
    let path = match address.strip_prefix("amqps://") {
        Some(rest) => rest.split_once('/')?.1,
        None => address.trim_start_matches('/'),
    };
    let mut parts = path.split('/');
    let scope = parts.next()?;
    if parts.next()? != "registrations" {
        return None;
    }
    let id = parts.next()?;
    if scope.is_empty() || id.is_empty() || parts.next().is_some() {
        return None;
    }
    Some((scope.to_owned(), id.to_owned()))
}

/// The request body: its data sections joined (at most [`MAX_BODY`] bytes; more is cut, and
/// the JSON then fails to parse), or a string value.
fn body_bytes(body: &Body<Value>) -> Vec<u8> {
    let mut bytes = Vec::new();
    match body {
        Body::Data(batch) => {
            for data in batch.iter() {
                let room = MAX_BODY.saturating_sub(bytes.len());
                bytes.extend_from_slice(&data.0[..data.0.len().min(room)]);
            }
        }
        Body::Value(value) => {
            if let Value::String(text) = &value.0 {
                bytes.extend_from_slice(text.as_bytes());
            }
        }
        Body::Sequence(_) | Body::Empty => {}
    }
    bytes
}

/// DPS's rejection for an error reply: a condition for its status, the JSON error as the
/// description, `retry-after` in the info.
fn rejection(reply: &Reply) -> definitions::Error {
    let condition = match reply.status {
        401 | 403 => ErrorCondition::AmqpError(AmqpError::UnauthorizedAccess),
        404 => ErrorCondition::AmqpError(AmqpError::NotFound),
        429 => ErrorCondition::Custom(Symbol::from("com.microsoft:device-container-throttled")),
        500..=599 => ErrorCondition::AmqpError(AmqpError::InternalError),
        _ => ErrorCondition::Custom(Symbol::from("com.microsoft:argument-error")),
    };
    let info = reply.retry_after.map(|seconds| {
        let mut info = Fields::new();
        info.insert(Symbol::from("retry-after"), Value::Uint(seconds));
        Box::new(info)
    });
    definitions::Error {
        condition,
        description: Some(String::from_utf8_lossy(&reply.body).into_owned()),
        info,
    }
}

/// The switch a fault turns to drop a connection: its stream fails from then on, and the
/// connection's engine, waiting to read, is woken to find out.
#[derive(Default)]
struct Kill {
    killed: AtomicBool,
    reader: AtomicWaker,
}

impl Kill {
    fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.reader.wake();
    }

    fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }
}

/// The connection's byte stream: the header already read, then the rest; dead once a fault
/// dropped the connection.
struct Io<S> {
    header: [u8; 8],
    /// How much of the header was handed on.
    sent: usize,
    inner: S,
    killed: Arc<Kill>,
    frames: FrameGuard,
}

/// Follows the frame sizes in what the client sends and refuses a frame shorter than its own
/// 8-byte header (fe2o3-amqp 0.18's decoders panic on one), as a framing error.
#[derive(Debug, Default)]
struct FrameGuard {
    size: [u8; 4],
    have: usize,
    /// Bytes of the current frame (or protocol header) still to pass.
    skip: usize,
}

impl FrameGuard {
    fn check(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            self.size[self.have] = bytes[0];
            self.have += 1;
            bytes = &bytes[1..];
            if self.have == 4 {
                self.have = 0;
                if &self.size == b"AMQP" {
                    // A protocol header (AMQP's after SASL's): 8 bytes.
                    self.skip = 4;
                    continue;
                }
                let size = u32::from_be_bytes(self.size) as usize;
                if size < 8 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("a frame of {size} bytes is shorter than its header"),
                    ));
                }
                self.skip = size - 4;
            }
        }
        Ok(())
    }
}

impl<S> std::fmt::Debug for Io<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Io")
    }
}

fn dropped() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "dropped on purpose")
}

impl<S: AsyncRead + Unpin> AsyncRead for Io<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.killed.reader.register(cx.waker());
        if self.killed.is_killed() {
            return Poll::Ready(Err(dropped()));
        }
        if self.sent < self.header.len() {
            let n = (self.header.len() - self.sent).min(buf.remaining());
            let start = self.sent;
            buf.put_slice(&self.header[start..start + n]);
            self.sent += n;
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &read {
            let this = &mut *self;
            this.frames.check(&buf.filled()[before..])?;
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Io<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.killed.is_killed() {
            return Poll::Ready(Err(dropped()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            parse_address("0ne1/registrations/dev-1"),
            Some(("0ne1".into(), "dev-1".into()))
        );
        assert_eq!(
            parse_address("amqps://dps.example/0ne1/registrations/dev-1"),
            Some(("0ne1".into(), "dev-1".into()))
        );
        assert_eq!(parse_address("0ne1/devices/dev-1"), None);
        assert_eq!(parse_address("0ne1/registrations/"), None);
        assert_eq!(parse_address("0ne1/registrations/a/b"), None);
        assert_eq!(parse_address(""), None);
    }

    #[test]
    fn frames_shorter_than_their_header_are_refused() {
        let mut guard = FrameGuard::default();
        // A SASL frame of 12 bytes, the AMQP header, a frame of 8, fed a byte at a time.
        let stream = [
            &[0, 0, 0, 12, 2, 1, 0, 0, 1, 2, 3, 4][..],
            b"AMQP\x00\x01\x00\x00",
            &[0, 0, 0, 8, 2, 0, 0, 0],
        ]
        .concat();
        for byte in &stream {
            guard.check(std::slice::from_ref(byte)).unwrap();
        }
        assert!(guard.check(&[0, 0, 0, 7]).is_err());
        assert!(FrameGuard::default().check(&[0, 0, 0, 0]).is_err());
    }

    #[test]
    fn rejections_carry_status_and_retry_after() {
        let reply = Reply::error(429, 429_001, "throttled");
        let mut reply = reply;
        reply.retry_after = Some(3);
        let error = rejection(&reply);
        assert!(
            matches!(error.condition, ErrorCondition::Custom(ref s) if s.0.contains("throttled"))
        );
        let info = error.info.unwrap();
        assert_eq!(
            info.get(&Symbol::from("retry-after")),
            Some(&Value::Uint(3))
        );
        assert!(error.description.unwrap().contains("429001"));
    }
}
