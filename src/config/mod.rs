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
mod audit;
mod erasure;
mod kek;
pub mod sinks;
mod storage;
pub use anomaly::{AnomalyConfig, AnomalyOverride, AnomalyResponse, AnomalyThresholds};
pub use audit::{
    default_checkpoint_path, AuditConfig, AuditDurability, PurposeMode, DEFAULT_AUDIT_FILE,
};
pub use erasure::{
    ErasureConfig, LedgerPostgresConfig, RetentionConfig, DEV_LEDGER_FILE, MAX_PURGE_WITHIN_SECONDS,
};
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
