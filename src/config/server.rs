//! `[metrics]`, `[http]`, `[grpc_web]`, `[tls]` and `[log]`: the server's
//! ports beside gRPC and what they serve, its TLS certificates and how it
//! logs. The TLS files are only named here; the server reads them at
//! start-up.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// `[metrics]`: where `GET /metrics` is served (plain HTTP, apart from the
/// gRPC port; it shows counts only, never a value or a subject).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// e.g. `"127.0.0.1:9464"`; port 0 picks a free port.
    pub listen: SocketAddr,
}

/// `[http]`: where the HTTP/JSON API (the same service as gRPC, by the
/// proto's `google.api.http` rules) is served, on a port of its own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// e.g. `"127.0.0.1:8080"`; port 0 picks a free port. Plain HTTP: off
    /// loopback it is refused like a plaintext gRPC port (see
    /// `crate::exposure`).
    pub listen: SocketAddr,
}

/// `[grpc_web]`: gRPC-Web (tonic-web) on the gRPC port, which then also
/// takes HTTP/1.1, so a browser-side console can call `TokenVault` through
/// the same port, gate and policies.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcWebConfig {
    /// Origins (`https://console.example.com`) whose pages may call it
    /// across origins (CORS). Empty: no CORS headers, so a browser lets
    /// only pages of the server's own origin call.
    #[serde(default)]
    pub cors_allowed_origins: Vec<String>,
}

/// `[log]`: how the server log on stderr is written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub format: LogFormat,
}

/// `[log] format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Human,
    /// One JSON object per line, the event's fields at the top level.
    Json,
}

/// `[tls]`: PEM files. Read at start-up only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Server certificate chain.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// CA bundle client certificates must chain to; turns on mTLS (a
    /// client certificate is then required).
    pub client_ca: Option<PathBuf>,
}

/// `scheme://host[:port]` (http or https), as a browser sends it in
/// `Origin`.
pub(super) fn is_origin(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
    else {
        return false;
    };
    !rest.is_empty()
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
}
