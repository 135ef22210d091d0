//! The HTTPS endpoint: DPS's REST API over hyper and tokio-rustls.

use std::sync::Arc;
use std::time::Duration;

use crate::listener::Accepted;
use crate::service::{Reply, Request, RequestKind, Service, Transport};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls_pki_types::CertificateDer;

/// Request bodies larger than this are refused with 413.
pub const MAX_BODY: usize = 64 * 1024;

/// What the emulator allows its clients, so that no client can hold it or fill its memory.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once (per endpoint); more are closed at accept. Default 1024.
    pub max_connections: usize,
    /// Time allowed for the TLS handshake, for each HTTPS request's headers and then for its
    /// body, and for each MQTT packet as a whole, the CONNECT first. Default 10 s.
    pub read_timeout: Duration,
    /// Operations (registrations in progress or done, answered to polls) kept at most; the
    /// oldest go first. A device's new registration replaces its earlier operations. Default
    /// 10,000.
    pub max_operations: usize,
    /// How long an operation can be polled after its registration. Default 10 minutes.
    pub operation_ttl: Duration,
    /// Telemetry messages kept for [`crate::Emulator::telemetry`], the oldest dropped first.
    /// Default 10,000.
    pub max_telemetry_messages: usize,
    /// Telemetry payload bytes kept at most. Default 64 MiB.
    pub max_telemetry_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            read_timeout: Duration::from_secs(10),
            max_operations: 10_000,
            operation_ttl: Duration::from_secs(600),
            max_telemetry_messages: 10_000,
            max_telemetry_bytes: 64 * 1024 * 1024,
        }
    }
}

/// The connection is to be dropped without an answer.
#[derive(Debug)]
struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped on purpose")
    }
}

impl std::error::Error for DropConnection {}

/// Serves one HTTPS connection: HTTP/1.1, each request's headers within the read timeout.
pub(crate) async fn session(accepted: Accepted, service: Arc<Service>, limits: Limits) {
    let Accepted {
        stream,
        peer,
        chain,
    } = accepted;
    let svc = service_fn(move |mut req| {
        let service = service.clone();
        let chain = chain.clone();
        async move {
            let mut response = if req.uri().path() == crate::websocket::PATH {
                crate::websocket::upgrade(&mut req, service.clone(), chain.clone(), peer, limits)
            } else {
                handle(&service, &chain, peer, limits, req).await?
            };
            // The service's time, its clock offset included: a device learns it from here.
            let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(service.now());
            if let Ok(date) = hyper::header::HeaderValue::from_str(&httpdate::fmt_http_date(now)) {
                response.headers_mut().insert(hyper::header::DATE, date);
            }
            Ok::<_, DropConnection>(response)
        }
    });
    let served = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.read_timeout)
        .serve_connection(TokioIo::new(stream), svc)
        .with_upgrades()
        .await;
    if let Err(e) = served {
        tracing::debug!(%peer, error = %e, "connection ended");
    }
}

async fn handle(
    service: &Service,
    chain: &[CertificateDer<'static>],
    peer: std::net::SocketAddr,
    limits: Limits,
    req: hyper::Request<Incoming>,
) -> Result<Response<Full<Bytes>>, DropConnection> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    if let Some(admin_path) = path.strip_prefix("/admin/") {
        let body = match read_body(req, limits).await? {
            Ok(body) => body,
            Err(response) => return Ok(response),
        };
        let reply = crate::admin::handle(service, peer, &method, admin_path, &query, &body);
        return Ok(respond(reply));
    }
    let api_version = query_param(&query, "api-version");
    let authorization = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let Some(route) = Route::parse(&path) else {
        return Ok(respond(Reply::error(404, 404001, "No such resource.")));
    };
    let kind = match (&method, &route.operation) {
        (&Method::PUT, Some(Tail::Register)) => match read_body(req, limits).await? {
            Ok(body) => RequestKind::Register(body.to_vec()),
            Err(response) => return Ok(response),
        },
        (&Method::GET, Some(Tail::Operation(id))) => RequestKind::Operation(id.clone()),
        (&Method::POST, None) => RequestKind::Status,
        _ => {
            return Ok(respond(Reply::error(
                405,
                405000,
                "The method is not allowed on this resource.",
            )));
        }
    };
    let reply = service
        .handle(Request {
            id_scope: &route.id_scope,
            registration_id: route.registration_id,
            api_version,
            kind,
            authorization,
            client_chain: chain,
            transport: Transport::Https,
        })
        .await;
    if reply.drop {
        return Err(DropConnection);
    }
    Ok(respond(reply))
}

/// The request body, whole within the read timeout like the headers (hyper times those): a
/// client that announces a body and sends it slowly, or not at all, is cut off. `Ok(Err)` is
/// the response to send instead (413, or 408 closing the connection).
async fn read_body(
    req: hyper::Request<Incoming>,
    limits: Limits,
) -> Result<Result<Bytes, Response<Full<Bytes>>>, DropConnection> {
    let body = Limited::new(req.into_body(), MAX_BODY).collect();
    match tokio::time::timeout(limits.read_timeout, body).await {
        Ok(Ok(body)) => Ok(Ok(body.to_bytes())),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Ok(Err(respond(Reply::error(
                413,
                413000,
                "The request body is too large.",
            ))))
        }
        Ok(Err(_)) => Err(DropConnection),
        Err(_) => {
            tracing::debug!("request body not received within the read timeout");
            let mut response = respond(Reply::error(
                408,
                408000,
                "The request body did not arrive in time.",
            ));
            response.headers_mut().insert(
                hyper::header::CONNECTION,
                hyper::header::HeaderValue::from_static("close"),
            );
            Ok(Err(response))
        }
    }
}

pub(crate) fn respond(reply: Reply) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(reply.body)));
    *response.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    if let Some(seconds) = reply.retry_after {
        headers.insert(hyper::header::RETRY_AFTER, seconds.into());
    }
    response
}

/// `/{idScope}/registrations/{registrationId}[/register | /operations/{operationId}]`
#[derive(Debug, PartialEq, Eq)]
struct Route {
    id_scope: String,
    registration_id: String,
    operation: Option<Tail>,
}

#[derive(Debug, PartialEq, Eq)]
enum Tail {
    Register,
    Operation(String),
}

impl Route {
    fn parse(path: &str) -> Option<Self> {
        let mut parts = path.strip_prefix('/')?.split('/');
        let id_scope = hsm_core::percent::decode_utf8(parts.next()?)?;
        if parts.next()? != "registrations" {
            return None;
        }
        let registration_id = hsm_core::percent::decode_utf8(parts.next()?)?;
        let operation = match (parts.next(), parts.next()) {
            (None, None) => None,
            (Some("register"), None) => Some(Tail::Register),
            (Some("operations"), Some(id)) => {
                Some(Tail::Operation(hsm_core::percent::decode_utf8(id)?))
            }
            _ => return None,
        };
        if parts.next().is_some() || id_scope.is_empty() {
            return None;
        }
        Some(Self {
            id_scope,
            registration_id,
            operation,
        })
    }
}

pub(crate) fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name)
            .then(|| hsm_core::percent::decode_utf8(v))
            .flatten()
    })
}

/// Parses a request target as the HTTPS endpoint would: for the fuzz target.
#[doc(hidden)]
pub fn fuzz_route(target: &str) -> bool {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let _ = query_param(query, "api-version");
    Route::parse(path).is_some()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            Route::parse("/0ne1/registrations/dev%2D1/register"),
            Some(Route {
                id_scope: "0ne1".into(),
                registration_id: "dev-1".into(),
                operation: Some(Tail::Register),
            })
        );
        assert_eq!(
            Route::parse("/s/registrations/d/operations/5.abc")
                .unwrap()
                .operation,
            Some(Tail::Operation("5.abc".into()))
        );
        assert_eq!(Route::parse("/s/registrations/d").unwrap().operation, None);
        for bad in [
            "",
            "/",
            "/s",
            "/s/x/d",
            "/s/registrations/d/x",
            "/s/registrations/d/register/x",
            "/s/registrations/%zz",
        ] {
            assert_eq!(Route::parse(bad), None, "{bad}");
        }
        assert_eq!(
            query_param("a=1&api-version=2021-06-01", "api-version").as_deref(),
            Some("2021-06-01")
        );
    }
}
