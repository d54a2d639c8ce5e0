//! The HTTP/JSON API on `[http] listen`: the `google.api.http` rules of
//! `proto/tokenvault/v1/tokenvault.proto`, in proto3 canonical JSON
//! (`json`), with `GET /healthz` and `GET /readyz` (`api::ready`), and
//! the OpenAPI 3 document generated from the same proto at build time
//! (`openapi_build.rs`, run by build.rs) at `GET /v1/openapi.json`.
//!
//! One code path with gRPC: a handler reads the body, passes the caller's
//! headers (`authorization`, `x-tokenvault-actor`) through the same gate
//! as the gRPC interceptor (`api::gate`), and calls the `TokenVault`
//! trait method of the very service object the gRPC server serves, so
//! policies, audit records, rate limits (one limiter for both protocols)
//! and actor tokens are the same. Its errors are `google.rpc.Status` JSON
//! with the HTTP status of `api::status::http_status`.
//!
//! It translates only: it must never check a policy, touch the vault or
//! write an audit record itself, and never logs a body.

pub mod decode;
pub mod json;
pub mod listener;
mod routes;

/// The OpenAPI 3 document of this API, as build.rs wrote it from the proto.
pub const OPENAPI_JSON: &str = include_str!(concat!(env!("OUT_DIR"), "/openapi.json"));

use std::sync::Arc;

use super::gate::Gate;
use super::ready::Readiness;
use super::service::TokenVaultService;

/// What the handlers share: the gRPC server's service object and gate.
pub struct HttpApi {
    service: Arc<TokenVaultService>,
    gate: Gate,
    ready: Readiness,
    /// `limits.max_message_bytes`, the gRPC decoder's limit, for bodies.
    max_body_bytes: usize,
}

impl HttpApi {
    pub fn new(
        service: Arc<TokenVaultService>,
        gate: Gate,
        ready: Readiness,
        max_body_bytes: usize,
    ) -> Self {
        HttpApi {
            service,
            gate,
            ready,
            max_body_bytes,
        }
    }
}

/// Serves the API on `listener` until `stopping` turns true, then lets
/// the calls in flight finish.
pub async fn serve(
    listener: listener::HttpListener,
    api: Arc<HttpApi>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let app = routes::router(api).into_make_service_with_connect_info::<listener::HttpPeer>();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stopping.wait_for(|stopping| *stopping).await;
        })
        .await;
    if let Err(error) = served {
        tracing::error!(%error, "http api stopped");
    }
}
