//! The gRPC server: `TokenVault` behind API-key authentication, plus
//! `grpc.health.v1.Health` and server reflection, with graceful shutdown
//! on SIGTERM or SIGINT.
//!
//! Health answers without credentials (load balancers and Kubernetes
//! probes send none, and it reveals nothing); reflection and `TokenVault`
//! require an API key, so nothing that touches data is ever served
//! anonymously. Health has two names: `tokenvault.v1.TokenVault` (the
//! service) and `tokenvault.kek` (the key provider, probed every
//! [`KEK_PROBE_INTERVAL`]; NOT_SERVING while it cannot be reached, when
//! only subjects with cached keys can be served).
//!
//! The operator API (`api::admin`) is served beside it on the Unix socket
//! `<data_dir>/admin.sock`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic::{Request, Status};

use super::admin::{self, AdminService};
use super::auth::Authenticator;
use super::service::TokenVaultService;
use crate::audit::{AuditError, AuditEvent, AuditLog, Outcome};
use crate::config::Config;
use crate::pb;
use crate::pb::admin::admin_server::AdminServer;
use crate::pb::token_vault_server::TokenVaultServer;
use crate::policy::Rpc;
use crate::vault::Vault;

/// The health name of the key provider dependency.
pub const KEK_HEALTH_SERVICE: &str = "tokenvault.kek";
/// How often the key provider is probed for health.
pub const KEK_PROBE_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("reflection setup: {0}")]
    Reflection(String),
    #[error("cannot serve the admin socket {path}: {source}")]
    AdminSocket {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("{0}")]
    Audit(#[from] AuditError),
}

/// Serves until SIGTERM or SIGINT, then stops accepting, lets calls in
/// flight finish and zeroizes cached keys.
pub async fn serve(
    config: &Config,
    vault: Arc<Vault>,
    auth: Authenticator,
) -> Result<(), ServeError> {
    // Before listening: no call is served without a working audit log.
    let audit = Arc::new(
        AuditLog::open(
            vault.store(),
            vault.audit_hash_key().clone(),
            &config.audit_file(),
        )
        .await?,
    );
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    let local = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: config.listen,
        source,
    })?;

    let auth = Arc::new(auth);
    let denial_audit = Arc::clone(&audit);
    let interceptor = move |mut request: Request<()>| -> Result<Request<()>, Status> {
        let principal = auth
            .authenticate(request.metadata())
            .inspect_err(|denied| audit_unauthenticated(&denial_audit, &request, denied))?;
        request.extensions_mut().insert(principal);
        Ok(request)
    };

    let max_message = config.limits.max_message_bytes;
    let token_vault = TokenVaultServer::new(TokenVaultService::new(Arc::clone(&vault), audit))
        .max_decoding_message_size(max_message);
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<TokenVaultServer<TokenVaultService>>()
        .await;
    let kek_probe = tokio::spawn(probe_kek(Arc::clone(&vault), health_reporter.clone()));
    let admin_socket = serve_admin_socket(&config.data_dir, Arc::clone(&vault))?;

    // A line on stdout that scripts and tests wait for; the port is the
    // real one when the config asked for port 0.
    println!("tokenvault listening on {local}");
    tracing::info!(addr = %local, "serving");

    // Without TCP_NODELAY, a multi-segment response waits on the client's
    // delayed ACK (about 40 ms) under Nagle's algorithm.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let serving = Server::builder()
        .layer(tower::util::MapResponseLayer::new(
            oversized_is_invalid_argument,
        ))
        .layer(tower::util::MapRequestLayer::new(tag_rpc))
        .add_service(health)
        .add_service(InterceptedService::new(reflection, interceptor.clone()))
        .add_service(InterceptedService::new(
            reflection_alpha,
            interceptor.clone(),
        ))
        .add_service(InterceptedService::new(token_vault, interceptor))
        .serve_with_incoming_shutdown(incoming, async move {
            shutdown_signal().await;
            let _ = stopping_tx.send(true);
        });
    // Graceful shutdown waits for every connection to close; a client that
    // keeps an idle connection open must not hold the process forever.
    let grace = Duration::from_secs(config.shutdown_grace_seconds);
    tokio::select! {
        result = serving => result?,
        () = grace_expired(stopping, grace) => {
            tracing::warn!(grace_seconds = grace.as_secs(), "calls or connections still open after the shutdown grace period; stopping anyway");
        }
    }

    health_reporter
        .set_not_serving::<TokenVaultServer<TokenVaultService>>()
        .await;
    kek_probe.abort();
    admin_socket.abort();
    let _ = std::fs::remove_file(admin::socket_path(&config.data_dir));
    vault.shutdown();
    log_key_use(&vault);
    tracing::info!("stopped; cached keys zeroized");
    Ok(())
}

/// Serves the operator API on `<data_dir>/admin.sock`, mode 0600. A stale
/// socket file is removed first: this process holds the store's lock, so no
/// other server of this data directory can be using it.
fn serve_admin_socket(
    data_dir: &std::path::Path,
    vault: Arc<Vault>,
) -> Result<tokio::task::JoinHandle<()>, ServeError> {
    use std::os::unix::fs::PermissionsExt;
    let path = admin::socket_path(data_dir);
    let failed = |source| ServeError::AdminSocket {
        path: path.clone(),
        source,
    };
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(failed(error)),
    }
    let listener = tokio::net::UnixListener::bind(&path).map_err(failed)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(failed)?;
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    Ok(tokio::spawn(async move {
        let served = Server::builder()
            .add_service(AdminServer::new(AdminService::new(vault)))
            .serve_with_incoming(incoming)
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "admin socket stopped");
        }
    }))
}

/// Reports the key provider's reachability as the `tokenvault.kek` health
/// service, logging each change.
async fn probe_kek(vault: Arc<Vault>, health: tonic_health::server::HealthReporter) {
    use tonic_health::ServingStatus;
    let mut was_up = None;
    loop {
        let up = match vault.kek().status().await {
            Ok(_) => true,
            Err(error) => {
                if was_up != Some(false) {
                    tracing::warn!(%error, "key provider unreachable: only subjects with cached keys are served");
                }
                false
            }
        };
        if was_up == Some(false) && up {
            tracing::info!("key provider reachable again");
        }
        let status = if up {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        health.set_service_status(KEK_HEALTH_SERVICE, status).await;
        was_up = Some(up);
        tokio::time::sleep(KEK_PROBE_INTERVAL).await;
    }
}

/// How much the KEK provider and the DEK cache were used in this run (the
/// load tool reads this line to show known subjects cost no provider call).
fn log_key_use(vault: &Vault) {
    use std::sync::atomic::Ordering::Relaxed;
    let (kek, cache) = (vault.kek_stats(), vault.cache().stats());
    tracing::info!(
        wrap = kek.wrap_calls.load(Relaxed),
        unwrap = kek.unwrap_calls.load(Relaxed),
        dek_cache_hits = cache.hits.load(Relaxed),
        dek_cache_misses = cache.misses.load(Relaxed),
        dek_cache_evictions = cache.evictions.load(Relaxed),
        "key provider calls since start"
    );
}

/// The RPC a request is for, by its snake_case name, put on the request
/// by [`tag_rpc`] for the auth interceptor (which does not see the path).
#[derive(Debug, Clone, Copy)]
struct CalledRpc(&'static str);

fn tag_rpc<B>(mut request: http::Request<B>) -> http::Request<B> {
    let method = request.uri().path().rsplit('/').next().unwrap_or_default();
    let rpc = match method {
        "Tokenize" => Rpc::Tokenize.name(),
        "Detokenize" => Rpc::Detokenize.name(),
        "RedactText" => Rpc::RedactText.name(),
        "RestoreText" => Rpc::RestoreText.name(),
        "ForgetSubject" => Rpc::ForgetSubject.name(),
        "ExportSubject" => Rpc::ExportSubject.name(),
        "ServerReflectionInfo" => "server_reflection_info",
        _ => "other",
    };
    request.extensions_mut().insert(CalledRpc(rpc));
    request
}

/// Audits a call refused for its credentials. The interceptor cannot wait,
/// so the record is appended in the background: the call reveals nothing
/// either way, and a failure is logged.
fn audit_unauthenticated(audit: &Arc<AuditLog>, request: &Request<()>, denied: &Status) {
    let rpc = request
        .extensions()
        .get::<CalledRpc>()
        .map_or("other", |called| called.0);
    let event = AuditEvent {
        principal: String::new(),
        rpc,
        outcome: Outcome::Denied {
            code: "unauthenticated",
            reason: denied.message().to_string(),
        },
        ..AuditEvent::default()
    };
    let audit = Arc::clone(audit);
    tokio::spawn(async move {
        if let Err(error) = audit.append(event).await {
            tracing::error!(%error, rpc, "unauthenticated call not audited");
        }
    });
}

/// The gRPC decoder refuses a message over `limits.max_message_bytes` with
/// OUT_OF_RANGE before reading it; callers get INVALID_ARGUMENT for every
/// input over a limit, so that one status is rewritten here.
fn oversized_is_invalid_argument<B>(mut response: http::Response<B>) -> http::Response<B> {
    const OUT_OF_RANGE: &str = "11";
    const TOO_LARGE: &str = "Error,%20decoded%20message%20length%20too%20large";
    let headers = response.headers_mut();
    let oversized = headers
        .get("grpc-status")
        .is_some_and(|v| v == OUT_OF_RANGE)
        && headers
            .get("grpc-message")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|m| m.starts_with(TOO_LARGE));
    if oversized {
        headers.insert("grpc-status", http::HeaderValue::from_static("3"));
        headers.insert(
            "grpc-message",
            http::HeaderValue::from_static(
                "request%20message%20is%20over%20limits.max_message_bytes",
            ),
        );
    }
    response
}

/// Completes `grace` after shutdown began.
async fn grace_expired(mut stopping: tokio::sync::watch::Receiver<bool>, grace: Duration) {
    if stopping.wait_for(|stopping| *stopping).await.is_err() {
        // The sender is gone only when the server future finished first.
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(grace).await;
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(stream) => stream,
        Err(error) => {
            tracing::error!(%error, "cannot watch SIGTERM; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
    }
}
