//! Configuration: one TOML file, every key documented in docs/configuration.md,
//! unknown keys rejected with the key named. `Config::dev` is the embedded
//! default of `tokenvault serve --dev`.
//!
//! This module only parses and checks shapes; it opens no file but the
//! config itself and holds no secret (API keys are kept as SHA-256 only).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub mod anomaly;
mod kek;
pub mod sinks;
mod storage;
pub use anomaly::{AnomalyConfig, AnomalyOverride, AnomalyResponse, AnomalyThresholds};
pub use kek::{AppRoleConfig, KekConfig};
pub use sinks::AlertSinkConfig;
pub use storage::{CacheConfig, StorageConfig};

use crate::rpc::Rpc;

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

/// `[erasure]`: where forgetting is recorded so that it outlives a restore
/// (see `erasure::ledger`), and when a forgotten subject's data leaves
/// the disk (see `vault::erasure`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErasureConfig {
    /// Seconds within which a forgotten subject's ciphertexts and index
    /// entries are physically removed (a full purge runs by then). Its
    /// wrapped key is gone before ForgetSubject returns whatever this says.
    #[serde(default = "default_purge_within")]
    pub purge_within_seconds: u64,
    /// Every byte of a forgotten subject gone before ForgetSubject returns:
    /// a full purge per forget, whose cost grows with the store (for small
    /// vaults).
    #[serde(default)]
    pub full_purge_at_return: bool,
    /// The erasure ledger file (the RocksDB store). Outside `--dev` it must
    /// be set, and not under `data_dir`: on storage that outlives the data
    /// directory. `--dev` defaults to `<data_dir>/erasure-ledger.jsonl`.
    pub ledger: Option<PathBuf>,
    /// `[erasure.postgres]`: the ledger in a PostgreSQL database of its own,
    /// shared by every replica; required with `storage.backend =
    /// "postgres"`, and never the data database.
    pub postgres: Option<LedgerPostgresConfig>,
}

impl Default for ErasureConfig {
    fn default() -> Self {
        ErasureConfig {
            purge_within_seconds: default_purge_within(),
            full_purge_at_return: false,
            ledger: None,
            postgres: None,
        }
    }
}

/// The bound on physical removal after a forget, and its limits.
fn default_purge_within() -> u64 {
    86_400
}
pub const MAX_PURGE_WITHIN_SECONDS: u64 = 30 * 86_400;

/// `[erasure.postgres]`: the ledger's database.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerPostgresConfig {
    /// Connection URL or key=value string of the ledger's database.
    pub url: Option<String>,
    /// The environment variable that holds the URL instead.
    pub url_env: Option<String>,
    /// TLS to PostgreSQL, verified against `ca_file` (PEM) or the public
    /// web roots.
    #[serde(default)]
    pub tls: bool,
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for LedgerPostgresConfig {
    // The URL may carry a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerPostgresConfig")
            .field("url_env", &self.url_env)
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

/// The ledger file's name in the data directory under `--dev`.
pub const DEV_LEDGER_FILE: &str = "erasure-ledger.jsonl";

/// `[retention]`: how expired tokens leave the disk.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Seconds between purges (a compaction that drops expired records);
    /// 0 turns the periodic purge off (compactions still drop them, and
    /// `tokenvault retention purge` runs one now).
    #[serde(default = "default_purge_interval")]
    pub purge_interval_seconds: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            purge_interval_seconds: default_purge_interval(),
        }
    }
}

fn default_purge_interval() -> u64 {
    3600
}

/// `[audit]`: where the JSON-lines copy of the audit log goes (the copy a
/// SIEM ships; the other copy is in the store), and when its records
/// reach the disk.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Default: `<data_dir>/audit.jsonl`.
    pub file: Option<PathBuf>,
    #[serde(default)]
    pub durability: AuditDurability,
    /// With `durability = "write"`: the longest time between a record's
    /// write and its sync.
    #[serde(default = "default_audit_sync_interval")]
    pub sync_interval_ms: u64,
    /// How a call's `purpose` (and a forget's `reason`) is recorded.
    #[serde(default)]
    pub purpose_mode: PurposeMode,
    /// Where the chain's MACed checkpoints go (default: beside `file`,
    /// as `audit.checkpoint`). Best on other storage than the database
    /// and the audit file: a tail cut must then reach it too.
    pub checkpoint_file: Option<PathBuf>,
    /// The longest time between two checkpoints while records are
    /// written: a cut of the records after the last one does not show.
    #[serde(default = "default_audit_checkpoint_interval")]
    pub checkpoint_interval_ms: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            file: None,
            durability: AuditDurability::default(),
            sync_interval_ms: default_audit_sync_interval(),
            purpose_mode: PurposeMode::default(),
            checkpoint_file: None,
            checkpoint_interval_ms: default_audit_checkpoint_interval(),
        }
    }
}

/// `[audit] purpose_mode` values. A purpose is free text that the log
/// keeps for good; it must not carry personal data either way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PurposeMode {
    /// As given, cut at 256 bytes.
    #[default]
    Plain,
    /// Its keyed hash (HMAC-SHA256 under the audit-hash key, derived from
    /// the system key; first 128 bits, hex, after `hmac:`): equal purposes
    /// give equal hashes, and nobody without the vault's key can read
    /// them or test a guess.
    KeyedHash,
}

fn default_audit_sync_interval() -> u64 {
    100
}

fn default_audit_checkpoint_interval() -> u64 {
    1000
}

/// When a reveal may proceed relative to its audit record reaching disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditDurability {
    /// The record is written to the database's WAL and the file (the
    /// kernel has it: it survives the process being killed) before the
    /// reveal; both are synced every `sync_interval_ms`.
    #[default]
    Write,
    /// The record is synced to disk in both copies before the reveal.
    Sync,
}

/// The audit file's name in the data directory when `[audit] file` is not set.
pub const DEFAULT_AUDIT_FILE: &str = "audit.jsonl";

/// `[[detectors]]`: a regex, an optional check, context words and the
/// format its matches are tokenized with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorConfig {
    pub name: String,
    pub pattern: String,
    /// `"luhn"`, `"mod97"` or `"none"`.
    #[serde(default = "default_validator")]
    pub validator: String,
    /// Words of which one must stand shortly before a match (none: no
    /// context needed).
    #[serde(default)]
    pub context: Vec<String>,
    /// A format name (`card`, `text`, ...); each match must be valid in it.
    pub format: String,
}

/// `[[formats]]`: an operator-defined token format, a regex whose capture
/// groups are replaced character by character from their alphabets
/// (`token::template`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormatConfig {
    pub name: String,
    pub pattern: String,
    /// One alphabet name for every group, or one per group.
    pub alphabets: Vec<String>,
    /// 1-based numbers of the groups the token copies unchanged.
    #[serde(default)]
    pub keep: Vec<usize>,
}

impl DetectorConfig {
    /// The detector for the scanner, or the reason it is not one. Its
    /// format is a built-in one or one of `templates`.
    pub fn to_custom(
        &self,
        templates: &crate::token::template::Templates,
    ) -> Result<crate::scan::CustomDetector, String> {
        use crate::scan::Validator;
        let validator = match self.validator.as_str() {
            "luhn" => Validator::Luhn,
            "mod97" => Validator::Mod97,
            "none" => Validator::None,
            other => {
                return Err(format!(
                    "detector {:?}: validator {other:?} is not luhn, mod97 or none",
                    self.name
                ))
            }
        };
        let format = templates
            .format(&self.format)
            .ok_or_else(|| format!("detector {:?}: unknown format {:?}", self.name, self.format))?;
        Ok(crate::scan::CustomDetector {
            name: self.name.clone(),
            pattern: self.pattern.clone(),
            validator,
            context: self.context.clone(),
            format,
        })
    }
}

fn default_validator() -> String {
    "none".to_string()
}

/// Input limits; going over one is `INVALID_ARGUMENT`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Items in one Tokenize or tokens in one Detokenize.
    #[serde(default = "default_max_batch")]
    pub max_batch_items: usize,
    /// Bytes of one value to tokenize.
    #[serde(default = "default_max_value_bytes")]
    pub max_value_bytes: usize,
    /// Bytes of a subject id.
    #[serde(default = "default_max_subject_bytes")]
    pub max_subject_bytes: usize,
    /// Bytes of one gRPC request message.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Bytes of the text of one RedactText or RestoreText call.
    #[serde(default = "default_max_text_bytes")]
    pub max_text_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_batch_items: default_max_batch(),
            max_value_bytes: default_max_value_bytes(),
            max_subject_bytes: default_max_subject_bytes(),
            max_message_bytes: default_max_message_bytes(),
            max_text_bytes: default_max_text_bytes(),
        }
    }
}

/// A caller and its policy. Only the SHA-256 of its API key is kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalConfig {
    pub name: String,
    /// Hex SHA-256 of the API key the principal sends as
    /// `authorization: Bearer <key>`.
    #[serde(default)]
    pub api_key_sha256: Option<String>,
    /// The name in its client certificate: a URI or DNS SAN, or `CN=...`
    /// for the subject's common name, matched only in a certificate with
    /// no URI or DNS SAN (needs `[tls] client_ca`).
    #[serde(default)]
    pub mtls_subject: Option<String>,
    /// RPCs it may call, in snake_case (`tokenize`, `detokenize`, ...).
    pub allow: Vec<String>,
    /// Format name (or `default`) → how Detokenize / RestoreText /
    /// ExportSubject show its values. The default's default is masked.
    #[serde(default)]
    pub reveal: std::collections::BTreeMap<String, RevealConfig>,
    /// Reveal calls must give a non-empty purpose.
    #[serde(default)]
    pub require_purpose: bool,
    /// Revealed values a minute (token bucket), over all its actors.
    #[serde(default)]
    pub max_detokenize_per_minute: Option<u32>,
    /// Revealed values a minute for each actor (`x-tokenvault-actor`).
    #[serde(default)]
    pub max_detokenize_per_minute_per_actor: Option<u32>,
    /// Share of a limit (1-100) at which a warning alert is raised.
    #[serde(default = "default_alert_at_percent")]
    pub alert_at_percent: u8,
    /// Reveal calls must carry an actor token.
    #[serde(default)]
    pub require_actor: bool,
    /// A full reveal needs an actor token whose `amr` shows a second
    /// factor.
    #[serde(default)]
    pub full_reveal_needs_second_factor: bool,
    /// The `amr` values that count as a second factor.
    #[serde(default)]
    pub second_factor_amr: Option<Vec<String>>,
    /// What happens to a full reveal without one.
    #[serde(default)]
    pub without_second_factor: SecondFactorFallback,
    /// The identity provider's client id of this principal: an actor token
    /// it presents must carry it as `azp` (or `client_id`), so a token
    /// issued to another service is refused.
    #[serde(default)]
    pub actor_client_id: Option<String>,
}

/// `reveal` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RevealConfig {
    Full,
    Masked,
}

/// `without_second_factor` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecondFactorFallback {
    /// Values the policy reveals in full are masked instead.
    #[default]
    Masked,
    /// The call is refused (PERMISSION_DENIED).
    Deny,
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

/// `[actor_tokens]`: how actor JWTs are verified.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActorTokensConfig {
    /// The `aud` a token must carry.
    pub audience: String,
    /// The `iss` a token must carry, if set.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Clock skew allowed on `exp` / `nbf` / `iat`, in seconds; at most
    /// [`MAX_ACTOR_LEEWAY_SECONDS`].
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    /// Oldest token accepted, by its `iat` (required), in seconds: a token
    /// with a far `exp` is still refused this long after it was issued.
    #[serde(default = "default_actor_max_age")]
    pub max_age_seconds: u64,
    pub keys: Vec<ActorKeyConfig>,
}

/// The most clock skew `[actor_tokens] leeway_seconds` may allow: more
/// would keep an expired token usable.
pub const MAX_ACTOR_LEEWAY_SECONDS: u64 = 300;
/// The longest `[actor_tokens] max_age_seconds` (a day).
pub const MAX_ACTOR_MAX_AGE_SECONDS: u64 = 24 * 3600;

/// One verifying key of `[actor_tokens]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActorKeyConfig {
    /// The JWT header's `kid` that selects this key.
    pub kid: String,
    /// `ES256`, `ES384`, `EdDSA` or `RS256`.
    pub alg: String,
    /// Path of the PEM public key (SPKI `PUBLIC KEY`; `RSA PUBLIC KEY` too
    /// for RS256).
    pub public_key_pem: PathBuf,
}

fn default_alert_at_percent() -> u8 {
    80
}
fn default_leeway() -> u64 {
    30
}
fn default_actor_max_age() -> u64 {
    3600
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
fn default_max_batch() -> usize {
    1_000
}
fn default_max_value_bytes() -> usize {
    4_096
}
fn default_max_subject_bytes() -> usize {
    256
}
/// `scheme://host[:port]` (http or https), as a browser sends it in
/// `Origin`.
fn is_origin(origin: &str) -> bool {
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

fn default_max_message_bytes() -> usize {
    4 * 1024 * 1024
}
fn default_max_text_bytes() -> usize {
    64 * 1024
}

impl Config {
    /// The JSON-lines audit file: `[audit] file`, or `<data_dir>/audit.jsonl`
    /// (after a `--data-dir` override).
    pub fn audit_file(&self) -> PathBuf {
        self.audit
            .file
            .clone()
            .unwrap_or_else(|| self.data_dir.join(DEFAULT_AUDIT_FILE))
    }

    /// `[audit] checkpoint_file`, or `audit.checkpoint` beside the audit
    /// file.
    pub fn audit_checkpoint_file(&self) -> PathBuf {
        self.audit
            .checkpoint_file
            .clone()
            .unwrap_or_else(|| default_checkpoint_path(&self.audit_file()))
    }

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

    /// Checks what serde cannot: values in range, names known.
    pub fn check(&self) -> Result<(), ConfigError> {
        if !["rocksdb", "postgres"].contains(&self.storage.backend.as_str()) {
            return Err(ConfigError::Invalid(format!(
                "storage.backend {:?} is not supported (\"rocksdb\" or \"postgres\")",
                self.storage.backend
            )));
        }
        self.storage.postgres_options()?;
        if self.limits.max_batch_items == 0 || self.limits.max_value_bytes == 0 {
            return Err(ConfigError::Invalid("limits must be above 0".into()));
        }
        if let Some(web) = &self.grpc_web {
            for origin in &web.cors_allowed_origins {
                if !is_origin(origin) {
                    return Err(ConfigError::Invalid(format!(
                        "grpc_web.cors_allowed_origins: {origin:?} is not an origin (scheme://host[:port], no path)"
                    )));
                }
            }
        }
        if let Some(http) = &self.http {
            if http.listen == self.listen && http.listen.port() != 0 {
                return Err(ConfigError::Invalid(format!(
                    "http.listen {}: the HTTP/JSON API needs a port of its own, not the gRPC listen",
                    http.listen
                )));
            }
        }
        if let KekConfig::Vault {
            token_env,
            approle,
            timeout_ms,
            ..
        } = &self.kek
        {
            if token_env.is_some() == approle.is_some() {
                return Err(ConfigError::Invalid(
                    "kek: give exactly one of token_env or [kek.approle] for provider \"vault\""
                        .into(),
                ));
            }
            if !(50..=60_000).contains(timeout_ms) {
                return Err(ConfigError::Invalid(
                    "kek.timeout_ms must be 50 to 60000".into(),
                ));
            }
        }
        if !(1..=MAX_PURGE_WITHIN_SECONDS).contains(&self.erasure.purge_within_seconds) {
            return Err(ConfigError::Invalid(format!(
                "erasure.purge_within_seconds must be 1 to {MAX_PURGE_WITHIN_SECONDS} (30 days)"
            )));
        }
        if self.cache.max_subjects == 0 {
            return Err(ConfigError::Invalid(
                "cache.max_subjects must be above 0".into(),
            ));
        }
        if !(1..=60_000).contains(&self.audit.sync_interval_ms) {
            return Err(ConfigError::Invalid(
                "audit.sync_interval_ms must be 1 to 60000".into(),
            ));
        }
        if !(1..=3_600_000).contains(&self.audit.checkpoint_interval_ms) {
            return Err(ConfigError::Invalid(
                "audit.checkpoint_interval_ms must be 1 to 3600000".into(),
            ));
        }
        let mtls = self.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        let templates = self.templates()?;
        let mut names = std::collections::HashSet::new();
        for (i, principal) in self.principals.iter().enumerate() {
            check_principal(i, principal, mtls)?;
            check_reveal_formats(i, principal, &templates)?;
            if !names.insert(principal.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "principals[{i}] ({}): the name is used twice",
                    principal.name
                )));
            }
        }
        if let Some(actor_tokens) = &self.actor_tokens {
            if actor_tokens.audience.is_empty() || actor_tokens.keys.is_empty() {
                return Err(ConfigError::Invalid(
                    "actor_tokens: give an audience and at least one key".into(),
                ));
            }
            if actor_tokens.leeway_seconds > MAX_ACTOR_LEEWAY_SECONDS {
                return Err(ConfigError::Invalid(format!(
                    "actor_tokens: leeway_seconds is at most {MAX_ACTOR_LEEWAY_SECONDS} (more keeps expired tokens usable)"
                )));
            }
            if !(1..=MAX_ACTOR_MAX_AGE_SECONDS).contains(&actor_tokens.max_age_seconds) {
                return Err(ConfigError::Invalid(format!(
                    "actor_tokens: max_age_seconds is 1 to {MAX_ACTOR_MAX_AGE_SECONDS}"
                )));
            }
        }
        self.scanner_with(&templates)?;
        self.new_value_limits.check(&self.principals)?;
        self.anomaly.check(Some(&self.principals))?;
        for (index, sink) in self.alert_sinks.iter().enumerate() {
            sink.check(index)?;
        }
        self.ledger_location()?;
        Ok(())
    }
}

impl Config {
    /// Where the erasure ledger is: `[erasure.postgres]`, `erasure.ledger`,
    /// or (a `--dev` default, see [`Config::ledger_problem`])
    /// `<data_dir>/erasure-ledger.jsonl`.
    pub fn ledger_location(&self) -> Result<crate::erasure::LedgerLocation, ConfigError> {
        use crate::erasure::LedgerLocation;
        let invalid = |m: &str| ConfigError::Invalid(m.to_string());
        match (&self.erasure.ledger, &self.erasure.postgres) {
            (Some(_), Some(_)) => Err(invalid(
                "erasure: set one of ledger (a file) and [erasure.postgres], not both",
            )),
            (None, Some(pg)) => {
                let url = match (&pg.url, &pg.url_env) {
                    (Some(url), None) => url.clone(),
                    (None, Some(var)) => std::env::var(var).map_err(|_| {
                        ConfigError::Invalid(format!("erasure.postgres.url_env: ${var} is not set"))
                    })?,
                    _ => {
                        return Err(invalid(
                            "erasure.postgres: set exactly one of url and url_env",
                        ))
                    }
                };
                if url.parse::<tokio_postgres::Config>().is_err() {
                    return Err(invalid("erasure.postgres.url does not parse"));
                }
                if let Some(store) = self.storage.postgres_options()? {
                    if same_database(&store.url, &url) {
                        return Err(invalid(
                            "erasure.postgres names the data database (storage.postgres): a restore of it would roll the ledger back with the data; give the ledger a database of its own, left out of the data database's dumps and base backups",
                        ));
                    }
                }
                Ok(LedgerLocation::Postgres(
                    crate::store::postgres::PostgresOptions {
                        url,
                        pool_size: 2,
                        tls: pg.tls,
                        ca_file: pg.ca_file.clone(),
                        replica: String::new(),
                        sync_writes: true,
                        group: crate::store::postgres::GroupBounds::default(),
                    },
                ))
            }
            (ledger, None) => {
                if self.storage.backend == "postgres" {
                    return Err(invalid(
                        "storage.backend = \"postgres\" needs [erasure.postgres]: one ledger every replica appends to, in a database of its own",
                    ));
                }
                Ok(LedgerLocation::File(
                    ledger
                        .clone()
                        .unwrap_or_else(|| self.data_dir.join(DEV_LEDGER_FILE)),
                ))
            }
        }
    }

    /// Why the ledger's place is refused outside `--dev` (after any
    /// `--data-dir` override): a file ledger must be named, and not under
    /// `data_dir`, since a restore onto a new data directory would lose it
    /// with the directory and bring every forgotten subject back.
    pub fn ledger_problem(&self, dev: bool) -> Option<String> {
        if dev || self.erasure.postgres.is_some() || self.storage.backend == "postgres" {
            return None;
        }
        let Some(ledger) = &self.erasure.ledger else {
            return Some(format!(
                "erasure.ledger is not set: outside --dev name the ledger file, outside data_dir on storage that outlives it (the --dev default {} is lost with the data directory, and a restore would then bring forgotten subjects back)",
                self.data_dir.join(DEV_LEDGER_FILE).display()
            ));
        };
        is_under(ledger, &self.data_dir).then(|| {
            format!(
                "erasure.ledger: {} is inside data_dir {}: a restore onto a new data directory would lose it and bring forgotten subjects back; put it on storage that outlives the data directory",
                ledger.display(),
                self.data_dir.display()
            )
        })
    }

    /// The RocksDB directory inside the data directory: what a backup
    /// holds.
    pub fn rocksdb_dir(&self) -> PathBuf {
        self.data_dir.join("rocksdb")
    }

    /// The operator-defined formats of `[[formats]]` and `[alphabets]`.
    pub fn templates(&self) -> Result<crate::token::template::Templates, ConfigError> {
        let specs: Vec<crate::token::template::TemplateSpec> = self
            .formats
            .iter()
            .map(|f| crate::token::template::TemplateSpec {
                name: f.name.clone(),
                pattern: f.pattern.clone(),
                alphabets: f.alphabets.clone(),
                keep: f.keep.clone(),
            })
            .collect();
        crate::token::template::Templates::new(&specs, &self.alphabets)
            .map_err(|e| ConfigError::Invalid(e.to_string()))
    }

    /// The RedactText scanner: every built-in detector plus `[[detectors]]`,
    /// whose formats may be `templates`.
    pub fn scanner_with(
        &self,
        templates: &crate::token::template::Templates,
    ) -> Result<crate::scan::Scanner, ConfigError> {
        let custom = self
            .detectors
            .iter()
            .map(|d| d.to_custom(templates))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ConfigError::Invalid)?;
        crate::scan::Scanner::with_custom(&crate::token::format::Format::ALL, &custom)
            .map_err(|e| ConfigError::Invalid(e.to_string()))
    }

    /// The RedactText scanner, with this config's `[[formats]]`.
    pub fn scanner(&self) -> Result<crate::scan::Scanner, ConfigError> {
        self.scanner_with(&self.templates()?)
    }
}

/// `audit.jsonl` → `audit.checkpoint`, in the same directory: where the
/// audit checkpoints go when `[audit] checkpoint_file` is not set.
pub fn default_checkpoint_path(file: &Path) -> PathBuf {
    file.with_extension("checkpoint")
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

/// A principal's `reveal` keys name formats (built-in or `[[formats]]`) or
/// `default`.
/// Whether two PostgreSQL connection strings name one database (the same
/// hosts, ports and database name; the name defaults to the user's).
fn same_database(a: &str, b: &str) -> bool {
    let key = |url: &str| {
        url.parse::<tokio_postgres::Config>().ok().map(|c| {
            (
                format!("{:?}", c.get_hosts()),
                match c.get_ports() {
                    [] => vec![5432],
                    ports => ports.to_vec(),
                },
                c.get_dbname().or(c.get_user()).map(str::to_string),
            )
        })
    };
    matches!((key(a), key(b)), (Some(a), Some(b)) if a == b)
}

/// Whether `path` is `dir` or under it: compared as absolute paths with
/// `.` and `..` resolved, and again through symbolic links where both
/// exist.
fn is_under(path: &Path, dir: &Path) -> bool {
    fn lexical(path: &Path) -> PathBuf {
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let mut out = PathBuf::new();
        for part in absolute.components() {
            match part {
                std::path::Component::CurDir => {}
                std::path::Component::ParentDir => {
                    out.pop();
                }
                other => out.push(other),
            }
        }
        out
    }
    let (path, dir) = (lexical(path), lexical(dir));
    if path.starts_with(&dir) {
        return true;
    }
    // The nearest existing ancestor of the ledger, through its links.
    let mut existing = path.as_path();
    while !existing.exists() {
        match existing.parent() {
            Some(parent) => existing = parent,
            None => return false,
        }
    }
    match (existing.canonicalize(), dir.canonicalize()) {
        (Ok(real), Ok(dir)) => real.starts_with(dir),
        _ => false,
    }
}

fn check_reveal_formats(
    i: usize,
    principal: &PrincipalConfig,
    templates: &crate::token::template::Templates,
) -> Result<(), ConfigError> {
    match principal
        .reveal
        .keys()
        .find(|format| *format != "default" && templates.format(format).is_none())
    {
        Some(unknown) => Err(ConfigError::Invalid(format!(
            "principals[{i}] ({}): reveal: unknown format {unknown:?} (a format name or \"default\")",
            principal.name
        ))),
        None => Ok(()),
    }
}

fn check_principal(i: usize, principal: &PrincipalConfig, mtls: bool) -> Result<(), ConfigError> {
    let invalid = |what: String| {
        ConfigError::Invalid(format!("principals[{i}] ({}): {what}", principal.name))
    };
    match (&principal.api_key_sha256, &principal.mtls_subject) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(invalid(
                "give exactly one of api_key_sha256 or mtls_subject".into(),
            ))
        }
        (Some(digest), None) => {
            if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid("api_key_sha256 must be 64 hex digits".into()));
            }
        }
        (None, Some(subject)) => {
            if subject.is_empty() {
                return Err(invalid("mtls_subject must not be empty".into()));
            }
            if !mtls {
                return Err(invalid(
                    "mtls_subject needs [tls] client_ca (mTLS is off)".into(),
                ));
            }
        }
    }
    if let Some(unknown) = principal
        .allow
        .iter()
        .find(|rpc| Rpc::from_name(rpc).is_none())
    {
        return Err(invalid(format!(
            "unknown rpc {unknown:?} in allow (known: {})",
            Rpc::ALL.map(Rpc::name).join(", ")
        )));
    }
    if !(1..=100).contains(&principal.alert_at_percent) {
        return Err(invalid("alert_at_percent must be 1 to 100".into()));
    }
    if principal.max_detokenize_per_minute == Some(0)
        || principal.max_detokenize_per_minute_per_actor == Some(0)
    {
        return Err(invalid(
            "a max_detokenize_per_minute limit must be above 0 (leave it out for none)".into(),
        ));
    }
    if principal
        .second_factor_amr
        .as_ref()
        .is_some_and(|amr| amr.is_empty())
    {
        return Err(invalid("second_factor_amr must not be empty".into()));
    }
    Ok(())
}

/// `[new_value_limits]`: how many values that get a NEW token a caller may
/// create per window (see `policy::quota`). Defaults no real customer
/// reaches; a bulk import of history raises them for its principal under
/// `[new_value_limits.principals.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewValueLimits {
    /// Length of a window, in seconds (fixed windows from the epoch).
    #[serde(default = "default_new_value_window")]
    pub window_seconds: u64,
    /// New values of one subject by one principal per window.
    #[serde(default = "default_new_per_subject_per_principal")]
    pub per_subject_per_principal: u64,
    /// New values of one subject by all principals per window.
    #[serde(default = "default_new_per_subject")]
    pub per_subject: u64,
    /// New values by one principal over all subjects per window.
    #[serde(default = "default_new_per_principal")]
    pub per_principal: u64,
    /// New tokens of one shape by one principal per window, in thousandths
    /// of the shape's token space.
    #[serde(default = "default_new_per_shape_permille")]
    pub per_shape_per_principal_permille: f64,
    /// The shape quota's floor, for small spaces.
    #[serde(default = "default_new_per_shape_min")]
    pub per_shape_per_principal_min: u64,
    /// A warning alert when a call takes a counter past this share.
    #[serde(default = "default_new_alert_at")]
    pub alert_at_percent: u8,
    /// Per-principal overrides, by principal name.
    #[serde(default)]
    pub principals: std::collections::HashMap<String, NewValueOverride>,
}

/// `[new_value_limits.principals.NAME]`: a principal's own limits (a bulk
/// importer's); unset keys keep the section's.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewValueOverride {
    pub per_subject_per_principal: Option<u64>,
    pub per_subject: Option<u64>,
    pub per_principal: Option<u64>,
    pub per_shape_per_principal_permille: Option<f64>,
    pub per_shape_per_principal_min: Option<u64>,
}

impl NewValueOverride {
    /// Limits no import reaches (the dev admin key's).
    pub fn bulk() -> Self {
        NewValueOverride {
            per_subject_per_principal: Some(u64::MAX),
            per_subject: Some(u64::MAX),
            per_principal: Some(u64::MAX),
            per_shape_per_principal_permille: Some(1000.0),
            per_shape_per_principal_min: Some(u64::MAX),
        }
    }
}

impl Default for NewValueLimits {
    fn default() -> Self {
        toml::from_str("").expect("an empty [new_value_limits] takes every default")
    }
}

fn default_new_value_window() -> u64 {
    86_400
}
fn default_new_per_subject_per_principal() -> u64 {
    100
}
fn default_new_per_subject() -> u64 {
    300
}
fn default_new_per_principal() -> u64 {
    1_000_000
}
fn default_new_per_shape_permille() -> f64 {
    2.0
}
fn default_new_per_shape_min() -> u64 {
    20
}
fn default_new_alert_at() -> u8 {
    80
}

impl NewValueLimits {
    /// Values in range, and overrides naming configured principals.
    pub fn check(&self, principals: &[PrincipalConfig]) -> Result<(), ConfigError> {
        let invalid = |what: String| Err(ConfigError::Invalid(format!("new_value_limits: {what}")));
        if self.window_seconds == 0 || self.window_seconds > 366 * 86_400 {
            return invalid("window_seconds must be 1 to 31622400".into());
        }
        if self.alert_at_percent > 100 {
            return invalid("alert_at_percent must be 0 to 100".into());
        }
        let limits = |name: &str, over: &NewValueOverride| {
            let counts = [
                self.per_subject_per_principal,
                self.per_subject,
                self.per_principal,
                self.per_shape_per_principal_min,
            ]
            .into_iter()
            .chain(over.per_subject_per_principal)
            .chain(over.per_subject)
            .chain(over.per_principal)
            .chain(over.per_shape_per_principal_min);
            let permille = over
                .per_shape_per_principal_permille
                .unwrap_or(self.per_shape_per_principal_permille);
            if counts.into_iter().any(|n| n == 0) {
                return Err(format!("{name}: a limit must be above 0"));
            }
            if !(permille > 0.0 && permille <= 1000.0) {
                return Err(format!(
                    "{name}: per_shape_per_principal_permille must be above 0 and at most 1000"
                ));
            }
            Ok(())
        };
        if let Err(what) = limits("defaults", &NewValueOverride::default()) {
            return invalid(what);
        }
        for (name, over) in &self.principals {
            if !principals.iter().any(|p| &p.name == name) {
                return invalid(format!("principals.{name}: no such principal"));
            }
            if let Err(what) = limits(&format!("principals.{name}"), over) {
                return invalid(what);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
