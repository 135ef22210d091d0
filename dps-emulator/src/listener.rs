//! Accepting TLS connections, the same way for every endpoint: a connection limit, a deadline
//! for the handshake, the client's certificate chain taken from the handshake, one task per
//! connection, and an end to all of them at shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::https::Limits;
use crate::service::Service;

/// One accepted TLS connection.
pub(crate) struct Accepted {
    pub(crate) stream: TlsStream<TcpStream>,
    pub(crate) peer: SocketAddr,
    /// The client's certificate chain (leaf first), empty without a client certificate.
    pub(crate) chain: Arc<[CertificateDer<'static>]>,
}

/// Accepts connections on `listener` until `shutdown` says so; each is served by
/// `session(connection, service, limits)` on its own task, which ends at shutdown too.
pub(crate) async fn serve<Fut>(
    endpoint: &'static str,
    listener: TcpListener,
    acceptor: TlsAcceptor,
    service: Arc<Service>,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
    session: fn(Accepted, Arc<Service>, Limits) -> Fut,
) where
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(endpoint, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // Replies go out in more than one write; don't let Nagle hold the second back.
        let _ = stream.set_nodelay(true);
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(endpoint, %peer, "connection limit reached, closing");
            continue;
        };
        let acceptor = acceptor.clone();
        let service = service.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let stream =
                match tokio::time::timeout(limits.read_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(endpoint, %peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(endpoint, %peer, "TLS handshake timed out");
                        return;
                    }
                };
            let chain = stream
                .get_ref()
                .1
                .peer_certificates()
                .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                .unwrap_or_default();
            tokio::select! {
                () = session(Accepted { stream, peer, chain }, service, limits) => {}
                _ = shutdown.changed() => {}
            }
        });
    }
}
