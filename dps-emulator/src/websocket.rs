//! MQTT and AMQP over WebSockets on the HTTPS port, as DPS and IoT Hub serve them: `GET
//! /$iothub/websocket` with `Upgrade: websocket` and the subprotocol `mqtt` (or `AMQPWSB10`)
//! becomes a WebSocket (async-tungstenite) whose binary messages carry an MQTT session (or an
//! AMQP connection; ws_stream_tungstenite turns them back into bytes), served by the MQTT
//! endpoint's code (DPS or a hub, by the CONNECT) or the AMQP endpoint's (DPS).

use std::net::SocketAddr;
use std::sync::Arc;

use async_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONNECTION, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls_pki_types::CertificateDer;
use tokio_util::compat::TokioAsyncReadCompatExt as _;

use crate::https::Limits;
use crate::service::{Reply, Service};

/// The WebSocket endpoint's path.
pub(crate) const PATH: &str = "/$iothub/websocket";
/// The MQTT subprotocol.
const MQTT: &str = "mqtt";
/// The AMQP subprotocol.
const AMQP: &str = "AMQPWSB10";
/// The largest WebSocket message accepted (an MQTT packet is at most 64 KiB to DPS, 256 KiB to
/// a hub).
const MAX_MESSAGE: usize = 1024 * 1024;

/// Answers a request to [`PATH`]: `101 Switching Protocols` and the MQTT session on the
/// upgraded connection, or an error reply for anything else.
pub(crate) fn upgrade(
    request: &mut hyper::Request<Incoming>,
    service: Arc<Service>,
    chain: Arc<[CertificateDer<'static>]>,
    peer: SocketAddr,
    limits: Limits,
) -> Response<Full<Bytes>> {
    let headers = request.headers();
    let has = |name: hyper::header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    let protocol = if has(hyper::header::SEC_WEBSOCKET_PROTOCOL, MQTT) {
        Some(MQTT)
    } else if has(hyper::header::SEC_WEBSOCKET_PROTOCOL, AMQP) {
        Some(AMQP)
    } else {
        None
    };
    let key = headers.get(SEC_WEBSOCKET_KEY).cloned();
    let upgrade = request.method() == hyper::Method::GET
        && has(UPGRADE, "websocket")
        && has(CONNECTION, "upgrade");
    let (Some(key), true) = (key, upgrade) else {
        return reply(Reply::error(
            400,
            400_000,
            "A WebSocket upgrade (GET with Upgrade: websocket) is expected here.",
        ));
    };
    let Some(protocol) = protocol else {
        return reply(Reply::error(
            400,
            400_000,
            "The WebSocket subprotocol must be mqtt or AMQPWSB10.",
        ));
    };
    let upgraded = hyper::upgrade::on(request);
    tokio::spawn(async move {
        let io = match upgraded.await {
            Ok(io) => io,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "WebSocket upgrade failed");
                return;
            }
        };
        let mut config = WebSocketConfig::default();
        config.max_message_size = Some(MAX_MESSAGE);
        config.max_frame_size = Some(MAX_MESSAGE);
        let socket = async_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(io).compat(),
            Role::Server,
            Some(config),
        )
        .await;
        let stream = ws_stream_tungstenite::WsStream::new(socket);
        if protocol == AMQP {
            tracing::debug!(%peer, "AMQP over WebSockets");
            crate::amqp::serve_stream(stream, peer, chain, service, limits).await;
        } else {
            tracing::debug!(%peer, "MQTT over WebSockets");
            crate::mqtt::serve_stream(stream, peer, chain, service, limits).await;
        }
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&accept_key(key.as_bytes())) {
        headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    }
    headers.insert(
        hyper::header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(protocol),
    );
    response
}

fn reply(reply: Reply) -> Response<Full<Bytes>> {
    crate::https::respond(reply)
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455, section 4.2.2): base64 of the
/// SHA-1 of the key and the protocol's GUID.
fn accept_key(key: &[u8]) -> String {
    use base64::Engine as _;
    use sha1::Digest as _;
    let mut hash = sha1::Sha1::new();
    hash.update(key);
    hash.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(hash.finalize())
}

#[cfg(test)]
mod tests {
    #[test]
    fn accept_key_is_rfc_6455s_example() {
        // RFC 6455, section 1.3.
        assert_eq!(
            super::accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
