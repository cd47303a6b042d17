//! Accepting TCP connections: optional TLS, the handshake deadline, and
//! HTTP/1.1 with upgrades handed to the router.
//!
//! Every accepted socket must finish its TLS handshake (when TLS is on) and
//! send its request headers within `handshake_timeout`, or it is dropped: a
//! peer that connects and goes quiet holds nothing for long. On shutdown the
//! loop stops accepting and in-progress HTTP exchanges finish within the
//! grace period; upgraded WebSockets are closed by their own tasks.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;
use tower::ServiceExt;
use tracing::{debug, warn};

use super::Hub;

/// Loads a PEM certificate chain and private key into a TLS acceptor.
/// Errors name the file and what was wrong with it.
pub fn tls_acceptor(cert: &Path, key: &Path) -> io::Result<TlsAcceptor> {
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidInput, what);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| {
            bad(format!(
                "cannot read TLS certificate {}: {e}",
                cert.display()
            ))
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| {
            bad(format!(
                "bad PEM in TLS certificate {}: {e}",
                cert.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(bad(format!(
            "no certificate found in {} (expected PEM `BEGIN CERTIFICATE` blocks)",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        bad(format!(
            "cannot read a private key from {}: {e}",
            key.display()
        ))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(format!("TLS setup failed: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            bad(format!(
                "the TLS certificate and key do not fit together: {e}"
            ))
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepts connections until shutdown. Each connection's task is tracked by
/// the hub, which waits for them (at most the grace period) after this
/// returns; on shutdown an HTTP connection finishes its exchange and closes.
pub async fn serve(listener: TcpListener, app: Router, hub: Arc<Hub>, tls: Option<TlsAcceptor>) {
    let make = app.into_make_service_with_connect_info::<SocketAddr>();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = hub.shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let Ok(svc) = make.clone().oneshot(peer).await;
        let deadline = hub.config.handshake_timeout;
        let tls = tls.clone();
        let hub = hub.clone();
        tokio::spawn(hub.tracker.clone().track_future(async move {
            let io = match tls {
                None => Either::Left(tcp),
                Some(acceptor) => {
                    match tokio::time::timeout(deadline, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => Either::Right(stream),
                        Ok(Err(e)) => {
                            debug!(%peer, "TLS handshake failed: {e}");
                            return;
                        }
                        Err(_) => {
                            debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            // HTTP/1.1 only (WebSockets upgrade from it), so the header
            // deadline runs from the first byte on: no protocol sniffing
            // read happens before it.
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(deadline)
                .serve_connection(TokioIo::new(io), TowerToHyperService::new(svc))
                .with_upgrades();
            let mut conn = std::pin::pin!(conn);
            let ended = tokio::select! {
                ended = conn.as_mut() => ended,
                _ = hub.shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                debug!(%peer, "HTTP connection ended: {e}");
            }
        }));
    }
}
