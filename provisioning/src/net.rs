//! The network under every transport, one way for all of them: TCP to the service, or to an
//! HTTP proxy and through its `CONNECT` tunnel (the answer parsed by httparse); then TLS with the
//! service's name (tokio-rustls: the TLS session ends at DPS or the hub, never at the proxy);
//! then, for the WebSocket transports, a WebSocket (the upgrade written and parsed here; the
//! framing async-tungstenite's; subprotocol `mqtt`) whose binary messages carry the bytes
//! (ws_stream_tungstenite). What comes out is a byte
//! stream; HTTP/1.1 and MQTT run on it unchanged.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

#[cfg(feature = "websocket")]
use async_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
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
/// The largest answer head (a proxy's to `CONNECT`, a server's to the WebSocket upgrade) read.
const MAX_ANSWER_HEAD: usize = 16 * 1024;
/// The GUID RFC 6455 appends to `Sec-WebSocket-Key` for `Sec-WebSocket-Accept`.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

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

    #[cfg_attr(not(feature = "websocket"), allow(dead_code))]
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
    // Below TLS, writes wait for the next read (see `Coalesced`): a TLS `Finished` and the
    // request after it leave in one segment.
    let tcp: Stream = Box::new(Coalesced::new(tcp));
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
        #[cfg(not(feature = "websocket"))]
        Some(_) => Err(Error::config(
            "this build has no WebSocket support (the provisioning crate's `websocket` feature is off)",
        )),
        #[cfg(feature = "websocket")]
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

/// `CONNECT host:port` through the proxy; the tunnel once it answers `2xx`. The request is
/// written and the answer's head parsed here (httparse), not by an HTTP client, so that the
/// socket stays ours: see [`QuickAck`].
async fn tunnel(route: &Route<'_>, proxy: &Proxy) -> Result<Stream, Error> {
    use tokio::io::AsyncWriteExt as _;

    let failed = |status: Option<u16>, reason: String, source: Option<BoxError>| Error::Proxy {
        proxy: proxy.to_string(),
        status,
        reason,
        source,
    };
    let mut tcp = TcpStream::connect((proxy.host(), proxy.port()))
        .await
        .map_err(|e| failed(None, "cannot be reached".into(), Some(Box::new(e))))?;
    let _ = tcp.set_nodelay(true);
    let target = crate::endpoint::Endpoint {
        host: route.host.to_owned(),
        port: route.port,
    }
    .authority_with_port();
    let mut request = zeroize::Zeroizing::new(format!(
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: {}\r\n",
        crate::client::USER_AGENT_VALUE
    ));
    if let Some(authorization) = proxy.authorization() {
        request.push_str("Proxy-Authorization: ");
        request.push_str(&authorization);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    let lost = |e: std::io::Error| {
        failed(
            None,
            "closed the connection or did not answer as an HTTP proxy".into(),
            Some(Box::new(e)),
        )
    };
    tcp.write_all(request.as_bytes()).await.map_err(lost)?;
    drop(request);
    let (status, more) = match read_head(&mut tcp).await {
        Ok(head) => (head.status, head.more),
        Err(HeadError::Io(e)) => return Err(lost(e)),
        Err(HeadError::Closed) => {
            return Err(failed(
                None,
                "closed the connection without answering CONNECT".into(),
                None,
            ));
        }
        Err(HeadError::TooLarge) => {
            return Err(failed(None, "sent an answer head too large".into(), None));
        }
        Err(HeadError::Malformed(e)) => {
            return Err(failed(
                None,
                "did not answer as an HTTP proxy".into(),
                Some(Box::new(e)),
            ));
        }
    };
    if !(200..300).contains(&status) {
        let text = http::StatusCode::from_u16(status)
            .map_or_else(|_| status.to_string(), |s| s.to_string());
        let reason = match status {
            // 407 is HTTP's answer; some proxies (tinyproxy) answer CONNECT with 401.
            401 | 407 if proxy.has_credentials() => format!(
                "refused the credentials in the proxy URL ({text}): check the user and password"
            ),
            401 | 407 => {
                format!("needs credentials ({text}): give them as http://user:password@host:port")
            }
            403 => format!("refused a tunnel to {target} ({text})"),
            502..=504 => format!("could not reach {target} ({text})"),
            _ => format!("refused the tunnel to {target} ({text})"),
        };
        return Err(failed(Some(status), reason, None));
    }
    // The tunnel is silent until the client speaks (TLS begins with our hello).
    if more {
        return Err(failed(
            Some(status),
            "sent data in the tunnel before it was used".into(),
            None,
        ));
    }
    Ok(Box::new(QuickAck::new(tcp)))
}

/// An HTTP/1.1 answer's head, as [`read_head`] reads it.
struct Head {
    status: u16,
    /// Its headers, names lowercased.
    headers: Vec<(String, Vec<u8>)>,
    /// Bytes followed the head in what was read.
    more: bool,
}

/// Why [`read_head`] found no answer head.
enum HeadError {
    Io(std::io::Error),
    Closed,
    TooLarge,
    Malformed(httparse::Error),
}

/// Reads an HTTP/1.1 answer's head (at most [`MAX_ANSWER_HEAD`] bytes) from `io`.
async fn read_head(io: &mut (impl AsyncRead + Unpin)) -> Result<Head, HeadError> {
    use tokio::io::AsyncReadExt as _;
    let mut head = Vec::with_capacity(512);
    loop {
        let mut chunk = [0u8; 1024];
        let n = io.read(&mut chunk).await.map_err(HeadError::Io)?;
        if n == 0 {
            return Err(HeadError::Closed);
        }
        head.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&head) {
            Ok(httparse::Status::Complete(length)) => {
                return Ok(Head {
                    status: response.code.unwrap_or_default(),
                    headers: response
                        .headers
                        .iter()
                        .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
                        .collect(),
                    more: length < head.len(),
                });
            }
            Ok(httparse::Status::Partial) if head.len() < MAX_ANSWER_HEAD => {}
            Ok(httparse::Status::Partial) => return Err(HeadError::TooLarge),
            Err(e) => return Err(HeadError::Malformed(e)),
        }
    }
}

/// A tunnel's socket that acknowledges at once what it receives (Linux `TCP_QUICKACK`, set
/// again after every read and write, as the kernel drops it). Proxies often relay without
/// `TCP_NODELAY`: when a server sends two small segments in a row (TLS 1.3 session tickets,
/// then the answer), the proxy holds the second until the first is acknowledged, and a
/// delayed ACK makes that ~40 ms per connection. Elsewhere it is the plain socket.
struct QuickAck {
    tcp: TcpStream,
}

impl QuickAck {
    fn new(tcp: TcpStream) -> Self {
        let quick = Self { tcp };
        quick.arm();
        quick
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn arm(&self) {
        let _ = socket2::SockRef::from(&self.tcp).set_tcp_quickack(true);
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn arm(&self) {}
}

impl AsyncRead for QuickAck {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let read = Pin::new(&mut this.tcp).poll_read(cx, buf);
        if read.is_ready() {
            this.arm();
        }
        read
    }
}

impl AsyncWrite for QuickAck {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.tcp).poll_write(cx, buf);
        if written.is_ready() {
            this.arm();
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// A WebSocket over `stream`, its binary messages as a byte stream. The upgrade (RFC 6455,
/// section 4) is written and its answer parsed here, as for the proxy's `CONNECT`; the framing
/// after it is async-tungstenite's.
#[cfg(feature = "websocket")]
async fn websocket(
    route: &Route<'_>,
    protocol: &'static str,
    mut stream: Stream,
) -> Result<Stream, Error> {
    use base64::Engine as _;
    use sha1::Digest as _;
    use tokio::io::AsyncWriteExt as _;
    use tokio_util::compat::TokioAsyncReadCompatExt as _;

    let refused = |reason: String, source: Option<BoxError>| Error::WebSocket { reason, source };
    let host = crate::endpoint::Endpoint {
        host: route.server_name.to_owned(),
        port: route.port,
    }
    .authority();
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce).map_err(|e| {
        refused(
            "no randomness for the WebSocket key".into(),
            Some(Box::new(std::io::Error::other(e.to_string()))),
        )
    })?;
    let key = base64::engine::general_purpose::STANDARD.encode(nonce);
    let request = format!(
        "GET {WEBSOCKET_PATH} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: {protocol}\r\nUser-Agent: {}\r\n\r\n",
        crate::client::USER_AGENT_VALUE
    );
    let lost = |e: std::io::Error| {
        refused(
            format!("the connection failed during the WebSocket upgrade at {WEBSOCKET_PATH}"),
            Some(Box::new(e)),
        )
    };
    stream.write_all(request.as_bytes()).await.map_err(lost)?;
    stream.flush().await.map_err(lost)?;
    let head = match read_head(&mut stream).await {
        Ok(head) => head,
        Err(HeadError::Io(e)) => return Err(lost(e)),
        Err(HeadError::Closed) => {
            return Err(refused(
                format!("the server closed the connection instead of upgrading {WEBSOCKET_PATH}"),
                None,
            ));
        }
        Err(HeadError::TooLarge) => {
            return Err(refused(
                "the upgrade answer's head is too large".into(),
                None,
            ));
        }
        Err(HeadError::Malformed(e)) => {
            return Err(refused(
                "the server did not answer the upgrade in HTTP".into(),
                Some(Box::new(e)),
            ));
        }
    };
    if head.status != 101 {
        return Err(refused(
            format!(
                "the server refused the WebSocket upgrade at {WEBSOCKET_PATH} (HTTP {})",
                head.status
            ),
            None,
        ));
    }
    let header = |name: &str| {
        head.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).trim().to_owned())
    };
    let has_token = |name: &str, token: &str| {
        header(name).is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    let expected = base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(
        format!("{key}{WEBSOCKET_GUID}").as_bytes(),
    ));
    if !has_token("upgrade", "websocket")
        || !has_token("connection", "upgrade")
        || header("sec-websocket-accept").as_deref() != Some(expected.as_str())
    {
        return Err(refused(
            "the server's upgrade answer is not a WebSocket handshake (Upgrade, Connection or Sec-WebSocket-Accept wrong)".into(),
            None,
        ));
    }
    if header("sec-websocket-protocol").as_deref() != Some(protocol) {
        return Err(refused(
            format!("the server did not accept the WebSocket subprotocol {protocol}"),
            None,
        ));
    }
    // MQTT's client speaks first: anything the server sent already is not a WebSocket peer.
    if head.more {
        return Err(refused(
            "the server sent data before the WebSocket session began".into(),
            None,
        ));
    }
    let mut config = WebSocketConfig::default();
    config.max_message_size = Some(MAX_WEBSOCKET_MESSAGE);
    config.max_frame_size = Some(MAX_WEBSOCKET_MESSAGE);
    let socket = async_tungstenite::WebSocketStream::from_raw_socket(
        stream.compat(),
        Role::Client,
        Some(config),
    )
    .await;
    Ok(Box::new(ws_stream_tungstenite::WsStream::new(socket)))
}

/// Writes held until the stream is read (or shut down, or holds 64 KiB): every protocol here
/// writes a request and then reads its answer, so what a request is made of (the TLS client
/// `Finished` and the first HTTP request or MQTT CONNECT after it; a WebSocket frame and its
/// TLS record) leaves in one `write`. Through a proxy that relays without `TCP_NODELAY`
/// (tinyproxy), two back-to-back segments cost the second one the server's delayed ACK, ~40 ms
/// per TLS connection; and fewer segments are fewer packets on any network.
///
/// `poll_flush` returns at once with the bytes still held: the next `poll_read` (which the
/// writer of a request always does next, to get the answer) or `poll_shutdown` sends them.
struct Coalesced<S> {
    inner: S,
    pending: Vec<u8>,
    sent: usize,
}

/// Held bytes past which a write is sent without waiting for a read.
const COALESCE_LIMIT: usize = 64 * 1024;

impl<S: AsyncRead + AsyncWrite + Unpin> Coalesced<S> {
    fn new(inner: S) -> Self {
        Self {
            inner,
            pending: Vec::with_capacity(4096),
            sent: 0,
        }
    }

    /// Sends what is held; `Ready` once all is sent (and flushed).
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.sent < self.pending.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.pending.clear();
        self.sent = 0;
        Pin::new(&mut self.inner).poll_flush(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Coalesced<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        // The request goes out before its answer is awaited. A send that cannot finish yet
        // (a full socket buffer) is resumed when the socket is writable: this task is woken.
        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Coalesced<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.pending.len() >= COALESCE_LIMIT {
            ready!(this.poll_send(cx))?;
        }
        this.pending.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
