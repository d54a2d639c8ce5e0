//! The HTTP/JSON port's connections: plain TCP, or TLS with `[tls]` (the
//! certificate, key and `client_ca` of the gRPC port, so the HTTP port is
//! never the weaker door). It owns accepting and the TLS handshake, and
//! hands each connection to axum with its peer: the address and, under
//! mTLS, the client's certificate chain, which the gate authenticates as
//! it does on gRPC (`api::auth::Access::check`).
//!
//! Handshakes run in tasks of their own, bounded in time, so a client that
//! opens a connection and sends nothing never holds up the others. It
//! never logs a certificate or anything a client sent.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};

use crate::config::TlsConfig;

/// How long a client may take over its TLS handshake.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);
/// Connections handshaken and not yet taken by axum.
const READY_QUEUE: usize = 256;

/// Why the HTTP port's TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read tls.{what} {path}: {reason}")]
    Read {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("tls.client_ca: {0}")]
    ClientCa(String),
}

/// The peer of one connection, as the handlers see it.
#[derive(Clone, Debug)]
pub struct HttpPeer {
    pub addr: SocketAddr,
    /// Under TLS: the session's connection info, with the client's
    /// certificates when it sent any (`Request::peer_certs` reads them).
    pub tls: Option<TlsConnectInfo<TcpConnectInfo>>,
}

/// A connection's byte stream, plain or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// The listener axum serves: connections come out of a queue that the
/// accepting task fills once each is ready (handshaken under TLS).
pub struct HttpListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(Box<dyn Stream>, HttpPeer)>,
}

impl HttpListener {
    /// Starts accepting on `listener`, with TLS when `tls` is given.
    pub fn start(listener: TcpListener, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let local = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (sender, ready) = mpsc::channel(READY_QUEUE);
        tokio::spawn(accept_forever(listener, tls.map(TlsAcceptor::from), sender));
        HttpListener { local, ready }
    }
}

impl axum::serve::Listener for HttpListener {
    type Io = Box<dyn Stream>;
    type Addr = HttpPeer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(ready) => ready,
            // The accepting task ended (its listener failed for good):
            // nothing more will come; serve waits for shutdown.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(HttpPeer {
            addr: self.local,
            tls: None,
        })
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, HttpListener>>
    for HttpPeer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, HttpListener>) -> Self {
        stream.remote_addr().clone()
    }
}

async fn accept_forever(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    ready: mpsc::Sender<(Box<dyn Stream>, HttpPeer)>,
) {
    loop {
        let (tcp, addr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: pass, as axum's
                // own TcpListener does.
                tracing::debug!(%error, "http: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Without TCP_NODELAY a response in several segments waits on the
        // client's delayed ACK, as on the gRPC port.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "http: TCP_NODELAY not set");
        }
        let ready = ready.clone();
        match &tls {
            None => {
                let peer = HttpPeer { addr, tls: None };
                if ready.send((Box::new(tcp), peer)).await.is_err() {
                    return;
                }
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Some(connection) = handshake(acceptor, tcp, addr).await {
                        let _ = ready.send(connection).await;
                    }
                });
            }
        }
    }
}

async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    addr: SocketAddr,
) -> Option<(Box<dyn Stream>, HttpPeer)> {
    match tokio::time::timeout(HANDSHAKE_DEADLINE, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => {
            let peer = HttpPeer {
                addr,
                tls: Some(stream.connect_info()),
            };
            Some((Box::new(stream), peer))
        }
        Ok(Err(error)) => {
            // A refused client certificate, plaintext on the TLS port, a
            // scanner: the client sees the alert; one debug line here.
            tracing::debug!(%error, "http: TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("http: TLS handshake took too long");
            None
        }
    }
}

/// The HTTP port's rustls config from `[tls]`: its certificate chain and
/// key, and with `client_ca` a required client certificate chaining to it
/// (as on the gRPC port); HTTP/2 and HTTP/1.1 by ALPN.
pub fn server_config(tls: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, TlsSetupError> {
    let certs = read_certificates("cert", &tls.cert)?;
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| TlsSetupError::Read {
        what: "key",
        path: tls.key.display().to_string(),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?;
    let builder = match &tls.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for certificate in read_certificates("client_ca", ca)? {
                roots.add(certificate)?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| TlsSetupError::ClientCa(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let unreadable = |reason: String| TlsSetupError::Read {
        what,
        path: path.display().to_string(),
        reason,
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| unreadable(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unreadable(e.to_string()))?;
    if certificates.is_empty() {
        return Err(unreadable("no PEM certificate in it".into()));
    }
    Ok(certificates)
}
