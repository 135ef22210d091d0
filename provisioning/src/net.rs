//! The network under every transport, one way for all of them: TCP to the service, or to an
//! HTTP proxy and through its `CONNECT` tunnel (hyper speaks the HTTP); then TLS with the
//! service's name (tokio-rustls: the TLS session ends at DPS or the hub, never at the proxy);
//! then, for the WebSocket transports, a WebSocket (async-tungstenite, subprotocol `mqtt`)
//! whose binary messages carry the bytes (ws_stream_tungstenite). What comes out is a byte
//! stream; HTTP/1.1 and MQTT run on it unchanged.

use std::sync::Arc;
use std::time::Duration;

use async_tungstenite::tungstenite::client::IntoClientRequest as _;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use http_body_util::Empty;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::proxy::Proxy;
use crate::transport::{is_tls_failure, tls_failure};
use crate::{BoxError, Error};

/// A byte stream: TLS over TCP, over a proxy's tunnel, or a WebSocket over either.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A connection's byte stream.
pub(crate) type Stream = Box<dyn Io>;

/// The path of IoT Hub's and DPS's WebSocket endpoint.
pub(crate) const WEBSOCKET_PATH: &str = "/$iothub/websocket";
/// The largest WebSocket message accepted (an MQTT packet is at most a few hundred KiB).
const MAX_WEBSOCKET_MESSAGE: usize = 1024 * 1024;
/// The largest proxy answer to `CONNECT` (its headers) read.
const MAX_PROXY_HEADERS: usize = 16 * 1024;

/// Which service a connection goes to, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Service {
    Dps,
    Hub,
}

impl Service {
    fn connect(self) -> &'static str {
        match self {
            Self::Dps => "connect to DPS",
            Self::Hub => "connect to the hub",
        }
    }

    fn tls(self) -> &'static str {
        match self {
            Self::Dps => "TLS handshake with DPS",
            Self::Hub => "TLS handshake with the hub",
        }
    }

    fn websocket(self) -> &'static str {
        match self {
            Self::Dps => "WebSocket handshake with DPS",
            Self::Hub => "WebSocket handshake with the hub",
        }
    }
}

/// Where and how one connection goes.
#[derive(Debug)]
pub(crate) struct Route<'a> {
    pub(crate) service: Service,
    /// The TLS server name (and the WebSocket `Host`).
    pub(crate) server_name: &'a str,
    /// The service's address: the TCP target, or the proxy's `CONNECT` target.
    pub(crate) host: &'a str,
    pub(crate) port: u16,
    pub(crate) tls: &'a Arc<rustls::ClientConfig>,
    pub(crate) proxy: Option<&'a Proxy>,
    /// A WebSocket at [`WEBSOCKET_PATH`] with this subprotocol.
    pub(crate) websocket: Option<&'static str>,
    /// How long each step may take (TCP, tunnel, TLS, WebSocket), if limited.
    pub(crate) timeout: Option<Duration>,
}

/// What a step that timed out becomes (the hub reports its own error).
pub(crate) type OnTimeout<'a> = &'a (dyn Fn(&'static str) -> Error + Sync);

/// Opens the stream `route` describes.
///
/// # Errors
/// [`Error::Proxy`] when the proxy cannot be reached or refuses the tunnel (naming the proxy,
/// never its credentials); [`Error::Io`] for the network; [`Error::Tls`] for a refused
/// handshake; [`Error::WebSocket`] when the WebSocket upgrade is refused; `on_timeout(step)`
/// for a step past the route's timeout.
pub(crate) async fn open(route: &Route<'_>, on_timeout: OnTimeout<'_>) -> Result<Stream, Error> {
    let io = |operation: &'static str| {
        move |e: std::io::Error| Error::Io {
            operation,
            source: Box::new(e),
        }
    };
    let tcp: Stream = match route.proxy {
        None => {
            let tcp = within(
                route.timeout,
                route.service.connect(),
                on_timeout,
                Box::pin(async {
                    TcpStream::connect((route.host, route.port))
                        .await
                        .map_err(io(route.service.connect()))
                }),
            )
            .await?;
            let _ = tcp.set_nodelay(true);
            Box::new(tcp)
        }
        Some(proxy) => {
            within(
                route.timeout,
                "tunnel through the proxy",
                on_timeout,
                Box::pin(tunnel(route, proxy)),
            )
            .await?
        }
    };
    let name = ServerName::try_from(route.server_name.to_owned()).map_err(|_| {
        Error::config(format!(
            "{} is not a host name",
            hsm_core::untrusted::quoted(route.server_name)
        ))
    })?;
    let tls_step = route.service.tls();
    let tls = within(
        route.timeout,
        tls_step,
        on_timeout,
        Box::pin(async {
            TlsConnector::from(route.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| {
                    if is_tls_failure(&e) {
                        tls_failure(tls_step, &e)
                    } else {
                        Error::Io {
                            operation: tls_step,
                            source: Box::new(e),
                        }
                    }
                })
        }),
    )
    .await?;
    match route.websocket {
        None => Ok(Box::new(tls)),
        Some(protocol) => {
            within(
                route.timeout,
                route.service.websocket(),
                on_timeout,
                Box::pin(websocket(route, protocol, Box::new(tls))),
            )
            .await
        }
    }
}

type StepFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

async fn within<T>(
    timeout: Option<Duration>,
    name: &'static str,
    on_timeout: OnTimeout<'_>,
    future: StepFuture<'_, T>,
) -> Result<T, Error> {
    match timeout {
        None => future.await,
        Some(limit) => tokio::time::timeout(limit, future)
            .await
            .map_err(|_| on_timeout(name))?,
    }
}

/// `CONNECT host:port` through the proxy; the tunnel once it answers `2xx`.
async fn tunnel(route: &Route<'_>, proxy: &Proxy) -> Result<Stream, Error> {
    let failed = |status: Option<u16>, reason: String, source: Option<BoxError>| Error::Proxy {
        proxy: proxy.to_string(),
        status,
        reason,
        source,
    };
    let tcp = TcpStream::connect((proxy.host(), proxy.port()))
        .await
        .map_err(|e| failed(None, "cannot be reached".into(), Some(Box::new(e))))?;
    let _ = tcp.set_nodelay(true);
    let target = crate::endpoint::Endpoint {
        host: route.host.to_owned(),
        port: route.port,
    }
    .authority_with_port();
    let (mut sender, connection) = http1::Builder::new()
        .max_buf_size(MAX_PROXY_HEADERS.max(8192))
        .handshake::<_, Empty<bytes::Bytes>>(TokioIo::new(tcp))
        .await
        .map_err(|e| {
            failed(
                None,
                "did not take the HTTP connection".into(),
                Some(Box::new(e)),
            )
        })?;
    let driver = tokio::spawn(async move { connection.with_upgrades().await });
    let mut request = hyper::Request::builder()
        .method(hyper::Method::CONNECT)
        .uri(target.as_str())
        .header(hyper::header::HOST, target.as_str())
        .header(hyper::header::USER_AGENT, crate::client::USER_AGENT_VALUE);
    if let Some(authorization) = proxy.authorization() {
        let mut value = hyper::header::HeaderValue::from_str(&authorization)
            .map_err(|_| failed(None, "has credentials that cannot be sent".into(), None))?;
        value.set_sensitive(true);
        request = request.header(hyper::header::PROXY_AUTHORIZATION, value);
    }
    let request = request
        .body(Empty::new())
        .map_err(|e| failed(None, format!("cannot be asked for {target}: {e}"), None))?;
    let response = sender.send_request(request).await.map_err(|e| {
        failed(
            None,
            "closed the connection or did not answer as an HTTP proxy".into(),
            Some(Box::new(e)),
        )
    })?;
    let status = response.status();
    if !status.is_success() {
        driver.abort();
        let reason = match status.as_u16() {
            407 if proxy.has_credentials() => format!(
                "refused the credentials in the proxy URL ({status}): check the user and password"
            ),
            407 => {
                format!("needs credentials ({status}): give them as http://user:password@host:port")
            }
            403 => format!("refused a tunnel to {target} ({status})"),
            502..=504 => format!("could not reach {target} ({status})"),
            _ => format!("refused the tunnel to {target} ({status})"),
        };
        return Err(failed(Some(status.as_u16()), reason, None));
    }
    let upgraded = hyper::upgrade::on(response).await.map_err(|e| {
        failed(
            Some(status.as_u16()),
            "answered CONNECT but gave no tunnel".into(),
            Some(Box::new(e)),
        )
    })?;
    Ok(Box::new(TokioIo::new(upgraded)))
}

/// A WebSocket over `stream`, its binary messages as a byte stream.
async fn websocket(
    route: &Route<'_>,
    protocol: &'static str,
    stream: Stream,
) -> Result<Stream, Error> {
    let refused = |reason: String, source: Option<BoxError>| Error::WebSocket { reason, source };
    let host = crate::endpoint::Endpoint {
        host: route.server_name.to_owned(),
        port: route.port,
    }
    .authority();
    let mut request = format!("wss://{host}{WEBSOCKET_PATH}")
        .into_client_request()
        .map_err(|e| refused("cannot build the upgrade request".into(), Some(Box::new(e))))?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        hyper::header::HeaderValue::from_static(protocol),
    );
    let mut config = WebSocketConfig::default();
    config.max_message_size = Some(MAX_WEBSOCKET_MESSAGE);
    config.max_frame_size = Some(MAX_WEBSOCKET_MESSAGE);
    let (socket, response) =
        async_tungstenite::tokio::client_async_with_config(request, stream, Some(config))
            .await
            .map_err(|e| {
                refused(
                    format!("the server refused the WebSocket upgrade at {WEBSOCKET_PATH}"),
                    Some(Box::new(e)),
                )
            })?;
    let accepted = response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok());
    if accepted != Some(protocol) {
        return Err(refused(
            format!("the server did not accept the WebSocket subprotocol {protocol}"),
            None,
        ));
    }
    Ok(Box::new(ws_stream_tungstenite::WsStream::new(socket)))
}
