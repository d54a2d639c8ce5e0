//! Configuration: one TOML file, every key documented in docs/configuration.md,
//! unknown keys rejected with the key named. `Config::dev` is the embedded
//! default of `tokenvault serve --dev`.
//!
//! This module only parses and checks shapes; it opens no file but the
//! config itself and holds no secret (API keys are kept as SHA-256 only).
//!
//! This file keeps `Config`, `ConfigError`, loading and parsing; each
//! section lives in the submodule named for it (`storage`, `kek`,
//! `principals`, ...) and is re-exported here, the cross-section checks in
//! `check`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub mod anomaly;
mod audit;
mod check;
mod detectors;
mod erasure;
mod kek;
mod limits;
mod principals;
mod server;
pub mod sinks;
mod storage;
pub use anomaly::{AnomalyConfig, AnomalyOverride, AnomalyResponse, AnomalyThresholds};
pub use audit::{
    default_checkpoint_path, AuditConfig, AuditDurability, PurposeMode, DEFAULT_AUDIT_FILE,
};
pub use detectors::{DetectorConfig, FormatConfig};
pub use erasure::{
    ErasureConfig, LedgerPostgresConfig, RetentionConfig, DEV_LEDGER_FILE, MAX_PURGE_WITHIN_SECONDS,
};
pub use kek::{AppRoleConfig, KekConfig};
pub use limits::{Limits, NewValueLimits, NewValueOverride};
pub use principals::{
    ActorKeyConfig, ActorTokensConfig, PrincipalConfig, RevealConfig, SecondFactorFallback,
    MAX_ACTOR_LEEWAY_SECONDS, MAX_ACTOR_MAX_AGE_SECONDS,
};
pub use server::{GrpcWebConfig, HttpConfig, LogConfig, LogFormat, MetricsConfig, TlsConfig};
pub use sinks::AlertSinkConfig;
pub use storage::{CacheConfig, StorageConfig};

/// The default gRPC address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
pub const DEFAULT_DATA_DIR: &str = "./data";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// gRPC listen address.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Directory of the RocksDB store and local files.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Seconds that calls in flight get to finish after SIGTERM/SIGINT.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace_seconds: u64,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub kek: KekConfig,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub limits: Limits,
    /// Server TLS, and mTLS when `client_ca` is set.
    pub tls: Option<TlsConfig>,
    /// Lets a plaintext gRPC port, Vault or PostgreSQL connection off
    /// loopback through (a mesh that terminates mTLS), with a warning at
    /// start; see `crate::exposure`.
    #[serde(default)]
    pub allow_plaintext_on_non_loopback: bool,
    /// Verifying keys of the actor tokens privileged services send.
    pub actor_tokens: Option<ActorTokensConfig>,
    #[serde(default)]
    pub principals: Vec<PrincipalConfig>,
    /// Operator-defined PII detectors for RedactText, beside the built-in
    /// ones.
    #[serde(default)]
    pub detectors: Vec<DetectorConfig>,
    /// Operator-defined token formats (templates), beside the built-in
    /// ones: usable by Tokenize and by `[[detectors]]`.
    #[serde(default)]
    pub formats: Vec<FormatConfig>,
    /// Named alphabets for `[[formats]]`, beside the built-in ones.
    #[serde(default)]
    pub alphabets: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub erasure: ErasureConfig,
    #[serde(default)]
    pub retention: RetentionConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    /// `[metrics]`: the Prometheus endpoint; off when absent.
    pub metrics: Option<MetricsConfig>,
    /// `[http]`: the HTTP/JSON API; off when absent (on in `serve --dev`).
    pub http: Option<HttpConfig>,
    /// `[grpc_web]`: gRPC-Web on the gRPC port; off when absent.
    pub grpc_web: Option<GrpcWebConfig>,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub new_value_limits: NewValueLimits,
    /// `[anomaly]`: behavioural anomaly detection; off unless enabled.
    #[serde(default)]
    pub anomaly: AnomalyConfig,
    /// `[[alert_sinks]]`: webhooks every alert is sent to.
    #[serde(default)]
    pub alert_sinks: Vec<AlertSinkConfig>,
}

fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN.parse().expect("constant address parses")
}
fn default_data_dir() -> PathBuf {
    PathBuf::from(DEFAULT_DATA_DIR)
}
fn default_shutdown_grace() -> u64 {
    10
}

impl Config {
    /// The embedded default of `serve --dev`.
    pub fn dev() -> Self {
        toml::from_str("").expect("an empty config takes every default")
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config = Self::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })?;
        config.check()?;
        Ok(config)
    }

    /// Parses a config. An error names the line and column and never
    /// shows the line itself, and a URL password or `password=` in the
    /// parser's message is redacted ([`redact_secrets`]).
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| {
            let message = redact_secrets(e.message().trim()).replace('\n', " ");
            match e.span() {
                Some(span) => {
                    let before = text.get(..span.start).unwrap_or(text);
                    let line = before.matches('\n').count() + 1;
                    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                    format!("line {line}, column {column}: {message}")
                }
                None => message,
            }
        })
    }

    /// The RocksDB directory inside the data directory: what a backup
    /// holds.
    pub fn rocksdb_dir(&self) -> PathBuf {
        self.data_dir.join("rocksdb")
    }
}

/// `text` with the password of every `scheme://user:password@` URL and
/// every libpq `password=` value replaced by `***`: for parse errors,
/// which quote the values they reject.
pub fn redact_secrets(text: &str) -> String {
    static SECRETS: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r#"(?i)(?P<url>[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]*@|(?P<kv>password\s*=\s*)('[^']*'|[^\s'"]+)"#)
            .expect("constant pattern")
    });
    SECRETS
        .replace_all(text, |c: &regex::Captures<'_>| {
            match (c.name("url"), c.name("kv")) {
                (Some(url), _) => format!("{}***@", url.as_str()),
                (None, Some(kv)) => format!("{}***", kv.as_str()),
                (None, None) => String::new(),
            }
        })
        .into_owned()
}

#[cfg(test)]
mod tests;
