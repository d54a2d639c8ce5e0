//! The gRPC server: `TokenVault` behind mTLS / API-key authentication, plus
//! `grpc.health.v1.Health` and server reflection, with graceful shutdown
//! on SIGTERM or SIGINT and a reload of the principals' policies on SIGHUP.
//!
//! TLS (`[tls]`) is rustls on the ring provider; with `client_ca` a client
//! certificate chaining to it is required at the handshake (an expired or
//! foreign one never reaches a handler), so with mTLS on, health checks
//! need a client certificate too.
//!
//! With `[grpc_web]` the same port also speaks gRPC-Web (tonic-web, over
//! HTTP/1.1 or HTTP/2) with the CORS rules of its origins, in front of the
//! same services and gate.
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
//! `<data_dir>/admin.sock`, with `[http] listen` the HTTP/JSON API
//! (`api::http`, the same service object and gate) and with `[metrics]
//! listen` the Prometheus endpoint (`crate::metrics`) on its own address. Every call passes
//! `crate::metrics::ObserveLayer` (count, latency, one log line).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic::{Request, Status};

use super::admin::{self, AdminService};
use super::auth::{Access, Authenticator};
use super::denials::{self, DeniedCredentials};
use super::gate::{CalledRpc, Gate};
use super::http::listener::HttpListener;
use super::http::HttpApi;
use super::ready::Readiness;
use super::service::TokenVaultService;
use crate::audit::{AuditError, AuditLog, Checkpointing, Durability};
use crate::config::{Config, GrpcWebConfig, TlsConfig};
use crate::pb;
use crate::pb::admin::admin_server::AdminServer;
use crate::pb::token_vault_server::TokenVaultServer;
use crate::rpc::Rpc;
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
    #[error("tls: {0}")]
    Tls(String),
    #[error("server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("{0}")]
    Audit(#[from] AuditError),
}

/// How the principals are re-read on SIGHUP: the config file, and the
/// principals added outside it (none but the dev key, which has no file).
#[derive(Debug, Clone)]
pub struct Reload {
    pub config_path: std::path::PathBuf,
}

/// Serves until SIGTERM or SIGINT, then stops accepting, lets calls in
/// flight finish and zeroizes cached keys. With `reload`, SIGHUP re-reads
/// the principals from the config file.
pub async fn serve(
    config: &Config,
    vault: Arc<Vault>,
    access: Arc<Access>,
    reload: Option<Reload>,
) -> Result<(), ServeError> {
    let tls = config.tls.as_ref().map(tls_config).transpose()?;
    // Before listening: no call is served without a working audit log.
    let audit = Arc::new(
        AuditLog::open_checkpointed(
            vault.store(),
            vault.audit_hash_key().clone(),
            &config.audit_file(),
            &Checkpointing::from_config(config),
            Durability::from_config(&config.audit),
        )
        .await?
        .with_purpose_mode(config.audit.purpose_mode),
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

    let denied_credentials = Arc::new(DeniedCredentials::default());
    let gate = Gate::new(Arc::clone(&access), Arc::clone(&denied_credentials));
    let grpc_gate = gate.clone();
    let interceptor = move |mut request: Request<()>| -> Result<Request<()>, Status> {
        grpc_gate.admit(&mut request)?;
        Ok(request)
    };
    let reloader = tokio::spawn(reload_on_sighup(access, reload));
    let denial_flusher = tokio::spawn(denials::flush_every_window(
        Arc::clone(&denied_credentials),
        Arc::clone(&audit),
    ));

    let max_message = config.limits.max_message_bytes;
    // One service object for gRPC and HTTP/JSON: one rate limiter, one
    // audit log, one set of policies.
    let service = Arc::new(TokenVaultService::new(
        Arc::clone(&vault),
        Arc::clone(&audit),
    ));
    let token_vault =
        TokenVaultServer::from_arc(Arc::clone(&service)).max_decoding_message_size(max_message);
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
    let kek_up = Arc::new(AtomicBool::new(false));
    let kek_probe = tokio::spawn(probe_kek(
        Arc::clone(&vault),
        health_reporter.clone(),
        Arc::clone(&kek_up),
    ));
    let readiness = Readiness::new(Arc::clone(&vault), Arc::clone(&audit), kek_up);
    let admin_socket = serve_admin_socket(&config.data_dir, Arc::clone(&vault))?;
    let metrics = serve_metrics(config, &vault, &readiness).await?;
    let http_listener = bind_http(config).await?;
    let retention = (config.retention.purge_interval_seconds > 0)
        .then(|| Duration::from_secs(config.retention.purge_interval_seconds));
    let purges = Some(tokio::spawn(crate::vault::purge_schedule::run(
        Arc::clone(&vault),
        retention,
    )));

    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let http_api = http_listener.map(|listener| {
        let api = HttpApi::new(Arc::clone(&service), gate, readiness, max_message);
        tokio::spawn(super::http::serve(
            listener,
            Arc::new(api),
            stopping.clone(),
        ))
    });

    // A line on stdout that scripts and tests wait for; the port is the
    // real one when the config asked for port 0. The HTTP line comes
    // first, so whoever has read this one can read both.
    println!("tokenvault listening on {local}");
    tracing::info!(addr = %local, "serving");

    // Without TCP_NODELAY, a multi-segment response waits on the client's
    // delayed ACK (about 40 ms) under Nagle's algorithm.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    // gRPC-Web comes over HTTP/1.1 too; without [grpc_web] the port
    // speaks HTTP/2 only, as before.
    let grpc_web = config.grpc_web.as_ref();
    let mut builder = Server::builder().accept_http1(grpc_web.is_some());
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    let serving = builder
        // Outermost: CORS preflights are answered before anything counts
        // them as calls.
        .layer(tower::util::option_layer(grpc_web.and_then(cors_layer)))
        // Counts, times and logs every call as the caller sees it.
        .layer(crate::metrics::ObserveLayer)
        .layer(tower::util::MapResponseLayer::new(
            oversized_is_invalid_argument,
        ))
        .layer(tower::util::MapRequestLayer::new(tag_rpc))
        // Innermost: a gRPC-Web call becomes a gRPC call for the services.
        .layer(tower::util::option_layer(
            grpc_web.map(|_| tonic_web::GrpcWebLayer::new()),
        ))
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

    if let Some(mut http_api) = http_api {
        // Its calls began to drain when the gRPC port's did.
        if tokio::time::timeout(grace, &mut http_api).await.is_err() {
            tracing::warn!(
                "http calls still open after the shutdown grace period; stopping anyway"
            );
            http_api.abort();
        }
    }
    health_reporter
        .set_not_serving::<TokenVaultServer<TokenVaultService>>()
        .await;
    kek_probe.abort();
    admin_socket.abort();
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    if let Some(purges) = purges {
        purges.abort();
    }
    reloader.abort();
    denial_flusher.abort();
    denied_credentials.flush(&audit).await;
    let _ = std::fs::remove_file(admin::socket_path(&config.data_dir));
    // Calls still holding the audit log or the store (a connection task
    // not yet dropped) must not write while the process exits.
    audit.close().await;
    vault.shutdown();
    log_key_use(&vault);
    tracing::info!("stopped; cached keys zeroized");
    Ok(())
}

/// The rustls server config of `[tls]`: the certificate chain and key, and
/// with `client_ca` a required client certificate chaining to it.
fn tls_config(config: &TlsConfig) -> Result<tonic::transport::ServerTlsConfig, ServeError> {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    let read = |what: &str, path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| ServeError::Tls(format!("cannot read {what} {}: {e}", path.display())))
    };
    let identity = Identity::from_pem(read("cert", &config.cert)?, read("key", &config.key)?);
    let mut tls = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &config.client_ca {
        tls = tls
            .client_ca_root(Certificate::from_pem(read("client_ca", ca)?))
            .client_auth_optional(false);
        tracing::info!("mTLS on: client certificates must chain to tls.client_ca");
    }
    Ok(tls)
}

/// The CORS rules of `[grpc_web]`: its origins may call with the headers a
/// gRPC-Web client sends and read the status it gets back. None without
/// origins (no CORS headers: same-origin pages only).
fn cors_layer(config: &GrpcWebConfig) -> Option<tower_http::cors::CorsLayer> {
    use http::header::{HeaderName, AUTHORIZATION, CONTENT_TYPE};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    // Checked as origins by `Config::check`; one that is no header value
    // is left out rather than failing here.
    let origins: Vec<http::HeaderValue> = config
        .cors_allowed_origins
        .iter()
        .filter_map(|origin| http::HeaderValue::from_str(origin).ok())
        .collect();
    if origins.is_empty() {
        return None;
    }
    let name = HeaderName::from_static;
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([http::Method::POST])
            .allow_headers([
                AUTHORIZATION,
                CONTENT_TYPE,
                name(crate::policy::ACTOR_HEADER),
                name("x-grpc-web"),
                name("x-user-agent"),
                name("grpc-timeout"),
            ])
            .expose_headers([
                name("grpc-status"),
                name("grpc-message"),
                name("grpc-status-details-bin"),
            ])
            .max_age(Duration::from_secs(600)),
    )
}

/// Binds `[http] listen` when it is set, and prints the address on stdout
/// (the real port when the config asked for port 0).
async fn bind_http(config: &Config) -> Result<Option<HttpListener>, ServeError> {
    let Some(http) = &config.http else {
        return Ok(None);
    };
    let bind_failed = |source| ServeError::Bind {
        addr: http.listen,
        source,
    };
    // The HTTP port takes the gRPC port's TLS and client CA, or none.
    let tls = config
        .tls
        .as_ref()
        .map(super::http::listener::server_config)
        .transpose()
        .map_err(|e| ServeError::Tls(e.to_string()))?;
    let listener = TcpListener::bind(http.listen).await.map_err(bind_failed)?;
    let local = listener.local_addr().map_err(bind_failed)?;
    println!("tokenvault http listening on {local}");
    tracing::info!(addr = %local, tls = tls.is_some(), "HTTP/JSON API");
    Ok(Some(HttpListener::start(listener, tls)))
}

/// Starts the `/metrics` endpoint when `[metrics] listen` is set, and
/// prints its address on stdout (the real port when the config asked for
/// port 0), like the gRPC address.
async fn serve_metrics(
    config: &Config,
    vault: &Arc<Vault>,
    readiness: &Readiness,
) -> Result<Option<tokio::task::JoinHandle<()>>, ServeError> {
    let Some(metrics) = &config.metrics else {
        return Ok(None);
    };
    let bind_failed = |source| ServeError::Bind {
        addr: metrics.listen,
        source,
    };
    let listener = TcpListener::bind(metrics.listen)
        .await
        .map_err(bind_failed)?;
    let local = listener.local_addr().map_err(bind_failed)?;
    println!("tokenvault metrics on {local}");
    tracing::info!(addr = %local, "metrics endpoint: GET /metrics");
    let readiness = readiness.clone();
    let ready: crate::metrics::ReadyCheck = Arc::new(move || {
        let readiness = readiness.clone();
        Box::pin(async move { readiness.check().await.map_err(|down| down.to_string()) })
    });
    Ok(Some(tokio::spawn(crate::metrics::serve_endpoint(
        listener,
        Arc::clone(vault),
        ready,
    ))))
}

/// Re-reads the principals on every SIGHUP. A file that does not load or
/// check is refused with its reason and the policies in force stay.
/// Without a file (`--dev`) SIGHUP is logged and ignored, never the
/// default action (which would end the process).
async fn reload_on_sighup(access: Arc<Access>, reload: Option<Reload>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(stream) => stream,
        Err(error) => {
            tracing::error!(%error, "cannot watch SIGHUP; policies reload only on restart");
            return;
        }
    };
    while hangup.recv().await.is_some() {
        let Some(reload) = &reload else {
            tracing::warn!("SIGHUP ignored: no config file to reload (--dev)");
            continue;
        };
        match load_principals(&reload.config_path) {
            Ok((principals, count)) => {
                access.replace(principals);
                tracing::info!(principals = count, path = %reload.config_path.display(), "SIGHUP: policies reloaded");
            }
            Err(error) => {
                tracing::error!(%error, path = %reload.config_path.display(), "SIGHUP: config rejected, the policies in force stay");
            }
        }
    }
}

/// The principals of the config file, checked as at start-up. Only
/// `[[principals]]` take effect on a reload; TLS, actor keys and the rest
/// need a restart.
fn load_principals(path: &std::path::Path) -> Result<(Authenticator, usize), String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
    if config.principals.is_empty() {
        return Err("no [[principals]] in the file".into());
    }
    let principals = Authenticator::from_config(&config.principals)?;
    Ok((principals, config.principals.len()))
}

/// Serves the operator API on `<data_dir>/admin.sock`, owner only: it is
/// created so by the process's umask 077 (`cli::run`) inside the 0700 data
/// directory, never chmodded after, so no moment exists where another user
/// could connect. A stale socket file is removed first: this process holds
/// the store's lock, so no other server of this data directory can be
/// using it.
fn serve_admin_socket(
    data_dir: &std::path::Path,
    vault: Arc<Vault>,
) -> Result<tokio::task::JoinHandle<()>, ServeError> {
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
/// service and to readiness (`up_now`), logging each change.
async fn probe_kek(
    vault: Arc<Vault>,
    health: tonic_health::server::HealthReporter,
    up_now: Arc<AtomicBool>,
) {
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
        up_now.store(up, Ordering::Release);
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
