//! The HTTPS transport: one TLS connection (HTTP/1.1 over tokio-rustls) kept for the register
//! request and every poll, re-opened when the server closes it.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Full, Limited, combinators::BoxBody};
use hyper::Method;
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper::header::{
    ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST, RETRY_AFTER, USER_AGENT,
};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::Error;
use crate::client::{Endpoint, Failure, Request, USER_AGENT_VALUE, classify_io, percent_encode};
use crate::wire::{MAX_RESPONSE, RawResponse, parse_retry_after};

type Body = BoxBody<Bytes, std::convert::Infallible>;

pub(crate) struct HttpsConnection {
    endpoint: Endpoint,
    tls: Arc<rustls::ClientConfig>,
    scope: String,
    api_version: String,
    open: Option<Open>,
}

type Driver = Pin<Box<Connection<TokioIo<TlsStream<TcpStream>>, Body>>>;

struct Open {
    sender: SendRequest<Body>,
    /// hyper's HTTP/1 state machine for this connection, polled by [`drive`] while a request is
    /// under way; `None` once the connection has ended.
    driver: Option<Driver>,
}

/// Runs `future` (readiness, a request, a response body) while polling the connection in this
/// task. hyper's usual spawned connection task costs cross-thread wake-ups on every exchange on
/// a multi-threaded runtime (the caller on one thread, the connection on another): ~0.13 ms
/// (8%) of a ~1.6 ms registration on loopback.
async fn drive<T>(driver: &mut Option<Driver>, future: impl Future<Output = T>) -> T {
    let mut future = pin!(future);
    poll_fn(|cx| {
        // The connection first: it takes in what arrived while the client waited between
        // requests (the server may have closed it), so `ready()` sees a closed connection
        // before a request is sent on it.
        if let Some(connection) = driver
            && let Poll::Ready(ended) = connection.as_mut().poll(cx)
        {
            if let Err(e) = ended {
                tracing::debug!(error = %e, "DPS connection ended");
            }
            // Dropping it ends the request or body too (an error, or its last bytes).
            *driver = None;
        }
        future.as_mut().poll(cx)
    })
    .await
}

impl HttpsConnection {
    pub(crate) fn new(
        endpoint: Endpoint,
        tls: Arc<rustls::ClientConfig>,
        scope: String,
        api_version: String,
    ) -> Self {
        Self {
            endpoint,
            tls,
            scope,
            api_version,
            open: None,
        }
    }

    /// Forgets the connection; the next request opens a new one.
    pub(crate) fn reset(&mut self) {
        self.open = None;
    }

    async fn connect(&mut self) -> Result<&mut Open, Failure> {
        if let Some(open) = &self.open
            && (open.driver.is_none() || open.sender.is_closed())
        {
            tracing::debug!("DPS closed the connection; reconnecting");
            self.open = None;
        }
        if self.open.is_none() {
            let host = self.endpoint.host.clone();
            tracing::debug!(host = %host, port = self.endpoint.port, "connect");
            let tcp = TcpStream::connect((host.as_str(), self.endpoint.port))
                .await
                .map_err(|e| classify_io("connect to DPS", e))?;
            // Small request/response exchanges: do not wait for Nagle.
            let _ = tcp.set_nodelay(true);
            let name = ServerName::try_from(host)
                .map_err(|e| Failure::Fatal(Error::config(format!("invalid host name: {e}"))))?;
            let tls = TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| classify_io("TLS handshake with DPS", e))?;
            let (sender, connection) =
                hyper::client::conn::http1::handshake::<_, Body>(TokioIo::new(tls))
                    .await
                    .map_err(|e| {
                        classify_io("HTTP handshake with DPS", std::io::Error::other(e))
                    })?;
            tracing::debug!("connected");
            self.open = Some(Open {
                sender,
                driver: Some(Box::pin(connection)),
            });
        }
        // Set just above.
        self.open
            .as_mut()
            .ok_or_else(|| Failure::Fatal(Error::config("connection state lost")))
    }

    pub(crate) async fn send(
        &mut self,
        request: &Request<'_>,
        registration_id: &str,
        authorization: Option<&str>,
    ) -> Result<RawResponse, Failure> {
        let (method, path, body, operation) = match request {
            Request::Register { body } => (
                Method::PUT,
                format!(
                    "/{}/registrations/{}/register?api-version={}",
                    self.scope, registration_id, self.api_version
                ),
                Some((*body).clone()),
                "register",
            ),
            Request::Poll { operation_id } => (
                Method::GET,
                format!(
                    "/{}/registrations/{}/operations/{}?api-version={}",
                    self.scope,
                    registration_id,
                    percent_encode(operation_id),
                    self.api_version
                ),
                None,
                "poll",
            ),
        };
        let host = self.endpoint.authority();
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, host)
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, USER_AGENT_VALUE);
        if let Some(auth) = authorization {
            builder = builder.header(AUTHORIZATION, auth);
        }
        let body: Body = match body {
            Some(bytes) => {
                builder = builder
                    .header(CONTENT_TYPE, "application/json; charset=utf-8")
                    .header(CONTENT_LENGTH, bytes.len());
                Full::new(bytes).boxed()
            }
            None => Empty::new().boxed(),
        };
        let request = builder
            .body(body)
            .map_err(|e| Failure::Fatal(Error::config(format!("cannot build the request: {e}"))))?;
        // A kept connection the server has closed meanwhile: open a new one before sending.
        let open = self.connect().await?;
        if drive(&mut open.driver, open.sender.ready()).await.is_err() {
            tracing::debug!("DPS closed the connection; reconnecting");
            self.reset();
        }
        let open = self.connect().await?;
        if let Err(e) = drive(&mut open.driver, open.sender.ready()).await {
            self.reset();
            return Err(classify_io("send to DPS", std::io::Error::other(e)));
        }
        let response = match drive(&mut open.driver, open.sender.send_request(request)).await {
            Ok(r) => r,
            Err(e) => {
                self.reset();
                return Err(classify_io("exchange with DPS", std::io::Error::other(e)));
            }
        };
        let status = response.status();
        // The server will close this connection after the response: do not send on it again.
        let closing = response
            .headers()
            .get(hyper::header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
            || response.version() < hyper::Version::HTTP_11;
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let too_large = || {
            Failure::Retry(Error::ResponseTooLarge {
                operation,
                limit: MAX_RESPONSE,
            })
        };
        if response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > MAX_RESPONSE as u64)
        {
            // The body stays unread: this connection cannot be reused.
            self.reset();
            return Err(too_large());
        }
        let body = match drive(
            &mut open.driver,
            Limited::new(response.into_body(), MAX_RESPONSE).collect(),
        )
        .await
        {
            Ok(body) => body.to_bytes(),
            Err(e) => {
                self.reset();
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    return Err(too_large());
                }
                return Err(classify_io(
                    "read the DPS response",
                    std::io::Error::other(e),
                ));
            }
        };
        if closing {
            self.reset();
        }
        Ok(RawResponse {
            status: status.as_u16(),
            retry_after,
            body,
        })
    }
}
