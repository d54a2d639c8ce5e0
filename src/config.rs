//! Configuration: one TOML file, every key documented in the README,
//! unknown keys rejected with the key named. `Config::dev` is the embedded
//! default of `tokenvault serve --dev`.
//!
//! This module only parses and checks shapes; it opens no file but the
//! config itself and holds no secret (API keys are kept as SHA-256 only).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::policy::Rpc;

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
    #[serde(default)]
    pub log: LogConfig,
}

/// `[metrics]`: where `GET /metrics` is served (plain HTTP, apart from the
/// gRPC port; it shows counts only, never a value or a subject).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// e.g. `"127.0.0.1:9464"`; port 0 picks a free port.
    pub listen: SocketAddr,
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

/// `[erasure]`: where forgetting is recorded so that it outlives a restore.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErasureConfig {
    /// The erasure ledger (JSON lines of forgotten subjects' keyed hashes);
    /// default `<data_dir>/erasure-ledger.jsonl`, outside the backed-up
    /// `rocksdb` directory. Put it on storage that outlives the data
    /// directory, e.g. beside the backups.
    pub ledger: Option<PathBuf>,
}

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
            checkpoint_file: None,
            checkpoint_interval_ms: default_audit_checkpoint_interval(),
        }
    }
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// "rocksdb" (embedded, the default) or "postgres" (shared by replicas).
    #[serde(default = "default_backend")]
    pub backend: String,
    /// Sync the write-ahead log before a Tokenize is acknowledged. Turning
    /// it off trades the last acknowledged writes on a machine crash for
    /// speed; a process crash alone loses nothing either way.
    #[serde(default = "default_true")]
    pub sync_writes: bool,
    /// RocksDB block cache size in MiB.
    #[serde(default = "default_block_cache_mb")]
    pub block_cache_mb: usize,
    /// Bytes held in `<data_dir>/disk-reserve`: when free space falls
    /// below this, the file is deleted (room for audit records and
    /// erasures) and Tokenize is refused until free space is twice this
    /// again (see `store::disk`). 0 turns the guard off.
    #[serde(default = "default_disk_reserve_bytes")]
    pub disk_reserve_bytes: u64,
    /// The PostgreSQL store, for `backend = "postgres"`.
    pub postgres: Option<crate::store::postgres::PostgresConfig>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: default_backend(),
            sync_writes: true,
            block_cache_mb: default_block_cache_mb(),
            disk_reserve_bytes: default_disk_reserve_bytes(),
            postgres: None,
        }
    }
}

impl StorageConfig {
    /// The PostgreSQL store's settings when it is the backend.
    pub fn postgres_options(
        &self,
    ) -> Result<Option<crate::store::postgres::PostgresOptions>, ConfigError> {
        if self.backend != "postgres" {
            return Ok(None);
        }
        let postgres = self.postgres.as_ref().ok_or_else(|| {
            ConfigError::Invalid(
                "storage.backend = \"postgres\" needs a [storage.postgres] table".into(),
            )
        })?;
        postgres
            .options(self.sync_writes)
            .map(Some)
            .map_err(ConfigError::Invalid)
    }
}

/// The key-encryption key provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "provider", rename_all = "lowercase", deny_unknown_fields)]
pub enum KekConfig {
    /// A 32-byte key file; `path` defaults to `<data_dir>/kek.key`.
    Local { path: Option<PathBuf> },
    /// A Vault / OpenBao transit key. Exactly one of `token_env` and
    /// `approle` says how to log in. Holds no secret itself: the token
    /// stays in the environment, the secret id in its file.
    Vault {
        address: String,
        #[serde(default = "default_transit_mount")]
        mount: String,
        key_name: String,
        ca_cert: Option<PathBuf>,
        /// Deadline of one provider operation, retries included.
        #[serde(default = "default_kek_timeout_ms")]
        timeout_ms: u64,
        /// Name of the environment variable that holds a Vault token.
        token_env: Option<String>,
        approle: Option<AppRoleConfig>,
    },
}

/// `[kek.approle]`: AppRole login; the secret id is read from a file at
/// every login, so it can be rotated without a restart.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppRoleConfig {
    pub role_id: String,
    pub secret_id_file: PathBuf,
    #[serde(default = "default_approle_mount")]
    pub mount: String,
}

impl Default for KekConfig {
    fn default() -> Self {
        KekConfig::Local { path: None }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// How many subjects' unwrapped data keys stay in memory.
    #[serde(default = "default_cache_subjects")]
    pub max_subjects: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_subjects: default_cache_subjects(),
        }
    }
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
    /// for the subject's common name (needs `[tls] client_ca`).
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
    /// Clock skew allowed on `exp` / `nbf`, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    pub keys: Vec<ActorKeyConfig>,
}

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
fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN.parse().expect("constant address parses")
}
fn default_data_dir() -> PathBuf {
    PathBuf::from(DEFAULT_DATA_DIR)
}
fn default_transit_mount() -> String {
    "transit".to_string()
}
fn default_approle_mount() -> String {
    "approle".to_string()
}
fn default_kek_timeout_ms() -> u64 {
    2_000
}
fn default_backend() -> String {
    "rocksdb".to_string()
}
fn default_shutdown_grace() -> u64 {
    10
}
fn default_true() -> bool {
    true
}
fn default_disk_reserve_bytes() -> u64 {
    64 << 20
}
fn default_block_cache_mb() -> usize {
    128
}
fn default_cache_subjects() -> usize {
    100_000
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
            .unwrap_or_else(|| crate::audit::default_checkpoint_path(&self.audit_file()))
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

    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim().replace('\n', " "))
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
        }
        self.scanner_with(&templates)?;
        Ok(())
    }
}

impl Config {
    /// The erasure ledger's path (`erasure.ledger` or its default).
    pub fn ledger_path(&self) -> PathBuf {
        self.erasure
            .ledger
            .clone()
            .unwrap_or_else(|| self.data_dir.join("erasure-ledger.jsonl"))
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
        crate::scan::Scanner::with_custom(&crate::token::formats::Format::ALL, &custom)
            .map_err(|e| ConfigError::Invalid(e.to_string()))
    }

    /// The RedactText scanner, with this config's `[[formats]]`.
    pub fn scanner(&self) -> Result<crate::scan::Scanner, ConfigError> {
        self.scanner_with(&self.templates()?)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_the_dev_default() {
        let config = Config::dev();
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert!(config.storage.sync_writes, "synced writes are the default");
        assert!(matches!(config.kek, KekConfig::Local { path: None }));
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        for (text, key) in [
            ("lisen = \"127.0.0.1:1\"", "lisen"),
            ("[storage]\nsync_write = false", "sync_write"),
            ("[kek]\nprovider = \"local\"\npth = \"k\"", "pth"),
            ("[limits]\nmax_items = 3", "max_items"),
            ("[audit]\npath = \"a.jsonl\"", "path"),
        ] {
            let err = Config::parse(text).expect_err(text);
            assert!(err.contains(key), "{err} should name {key}");
        }
    }

    #[test]
    fn full_config_parses() {
        let config = Config::parse(
            r#"
            listen = "0.0.0.0:6000"
            data_dir = "/var/lib/tokenvault"
            [storage]
            backend = "rocksdb"
            sync_writes = false
            [kek]
            provider = "local"
            path = "/etc/tokenvault/kek.key"
            [limits]
            max_batch_items = 10
            [[principals]]
            name = "chat"
            api_key_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
            allow = ["tokenize", "redact_text"]
            "#,
        )
        .expect("parses");
        config.check().expect("valid");
        assert!(!config.storage.sync_writes);
        assert_eq!(config.limits.max_batch_items, 10);
        assert_eq!(config.principals[0].allow, ["tokenize", "redact_text"]);
        assert_eq!(config.principals[0].alert_at_percent, 80);
        assert!(config.principals[0].reveal.is_empty());
    }

    #[test]
    fn audit_file_defaults_to_the_data_dir() {
        let mut config = Config::dev();
        config.data_dir = PathBuf::from("/var/lib/tv");
        assert_eq!(
            config.audit_file(),
            PathBuf::from("/var/lib/tv/audit.jsonl")
        );
        let config = Config::parse("[audit]\nfile = \"/var/log/tv/audit.jsonl\"").expect("parses");
        assert_eq!(
            config.audit_file(),
            PathBuf::from("/var/log/tv/audit.jsonl")
        );
    }

    #[test]
    fn vault_kek_parses_with_defaults_and_needs_exactly_one_auth() {
        let config = Config::parse(
            r#"
            [kek]
            provider = "vault"
            address = "https://vault:8200"
            key_name = "tokenvault"
            [kek.approle]
            role_id = "r"
            secret_id_file = "/run/secret-id"
            "#,
        )
        .expect("parses");
        config.check().expect("valid");
        let KekConfig::Vault {
            mount,
            timeout_ms,
            approle,
            ..
        } = &config.kek
        else {
            panic!("vault provider expected");
        };
        assert_eq!((mount.as_str(), *timeout_ms), ("transit", 2000));
        assert_eq!(approle.as_ref().map(|a| a.mount.as_str()), Some("approle"));

        let neither =
            Config::parse("[kek]\nprovider = \"vault\"\naddress = \"http://v\"\nkey_name = \"k\"")
                .expect("parses");
        assert!(neither
            .check()
            .unwrap_err()
            .to_string()
            .contains("exactly one of token_env"));
        let err = Config::parse(
            "[kek]\nprovider = \"vault\"\naddress = \"http://v\"\nkey_name = \"k\"\ntoken = \"s\"",
        )
        .expect_err("unknown key");
        assert!(err.contains("token"), "{err}");
        let err = Config::parse("[kek]\nprovider = \"hsm\"").expect_err("unknown provider");
        assert!(err.contains("hsm"), "{err}");
    }

    #[test]
    fn detectors_parse_and_bad_ones_are_named() {
        let config = Config::parse(
            r#"
            [[detectors]]
            name = "employee-id"
            pattern = '\bEMP-\d{6}\b'
            format = "text"
            "#,
        )
        .expect("parses");
        config.check().expect("valid");
        let scanner = config.scanner().expect("scanner");
        let found = scanner.scan("ask EMP-123456 please");
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].start, found[0].end), (4, 14));

        for (detector, named) in [
            ("pattern = '(' \nformat = \"text\"", "invalid pattern"),
            ("pattern = 'x'\nformat = \"cardd\"", "unknown format"),
            (
                "pattern = 'x'\nformat = \"text\"\nvalidator = \"crc\"",
                "validator",
            ),
        ] {
            let text = format!("[[detectors]]\nname = \"d\"\n{detector}");
            let config = Config::parse(&text).expect(&text);
            let error = config.check().expect_err(&text).to_string();
            assert!(error.contains(named) && error.contains("\"d\""), "{error}");
        }
    }

    #[test]
    fn formats_parse_feed_detectors_and_bad_ones_are_named() {
        let config = Config::parse(
            r#"
            [alphabets]
            base32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"

            [[formats]]
            name = "loyalty_card"
            pattern = 'LC-(\d{4})-(\d{4})-([A-Z2-7]{2})'
            alphabets = ["numeric", "numeric", "base32"]
            keep = [1]

            [[detectors]]
            name = "loyalty"
            pattern = '\bLC-\d{4}-\d{4}-[A-Z2-7]{2}\b'
            format = "loyalty_card"

            [[principals]]
            name = "support"
            api_key_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
            allow = ["detokenize"]
            reveal = { loyalty_card = "masked" }
            "#,
        )
        .expect("parses");
        config.check().expect("valid");
        let found = config
            .scanner()
            .expect("scanner")
            .scan("card LC-1234-5678-AB!");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].kind.name(), "loyalty_card");
        assert_eq!((found[0].start, found[0].end), (5, 20));

        for (entry, expected) in [
            (
                "name = \"card\"\npattern = '(\\d{4})'\nalphabets = [\"numeric\"]",
                "built-in format",
            ),
            (
                "name = \"f\"\npattern = '(\\d{4})'\nalphabets = [\"digits\"]",
                "unknown alphabet",
            ),
            (
                "name = \"f\"\npattern = '(\\d{4}'\nalphabets = [\"numeric\"]",
                "invalid pattern",
            ),
        ] {
            let text = format!("[[formats]]\n{entry}");
            let config = Config::parse(&text).expect(&text);
            let error = config.check().expect_err(&text).to_string();
            assert!(
                error.contains(expected) && error.contains("format \""),
                "{error}"
            );
        }
        let principal = format!(
            "[[principals]]\nname = \"p\"\napi_key_sha256 = \"{}\"\nallow = []\nreveal = {{ loyalty = \"masked\" }}",
            "0".repeat(64)
        );
        let unknown = Config::parse(&principal).expect("parses");
        assert!(unknown
            .check()
            .unwrap_err()
            .to_string()
            .contains("unknown format \"loyalty\""));
    }

    #[test]
    fn bad_principals_are_named() {
        let mut config = Config::dev();
        config.principals =
            Config::parse("[[principals]]\nname = \"x\"\napi_key_sha256 = \"abc\"\nallow = []")
                .expect("parses")
                .principals;
        assert!(config
            .check()
            .unwrap_err()
            .to_string()
            .contains("principals[0]"));
        config.principals[0].api_key_sha256 = Some("a".repeat(64));
        config.principals[0].allow = vec!["detokenise".into()];
        assert!(config
            .check()
            .unwrap_err()
            .to_string()
            .contains("detokenise"));
    }

    #[test]
    fn policies_tls_and_actor_tokens_parse_and_bad_ones_are_named() {
        let config = Config::parse(
            r#"
            [tls]
            cert = "server.pem"
            key = "server.key"
            client_ca = "ca.pem"
            [actor_tokens]
            audience = "tokenvault"
            issuer = "https://idp"
            keys = [{ kid = "k1", alg = "ES256", public_key_pem = "k1.pem" }]
            [[principals]]
            name = "billing"
            mtls_subject = "urn:tokenvault:principal:billing"
            allow = ["detokenize", "restore_text"]
            reveal = { default = "masked", email = "full" }
            require_purpose = true
            max_detokenize_per_minute = 100
            max_detokenize_per_minute_per_actor = 10
            full_reveal_needs_second_factor = true
            without_second_factor = "deny"
            "#,
        )
        .expect("parses");
        config.check().expect("valid");
        let billing = &config.principals[0];
        assert_eq!(billing.reveal.get("email"), Some(&RevealConfig::Full));
        assert_eq!(billing.without_second_factor, SecondFactorFallback::Deny);

        let key = format!("api_key_sha256 = \"{}\"", "a".repeat(64));
        for (principal, named) in [
            (format!("{key}\nreveal = {{ cardd = \"full\" }}"), "cardd"),
            (format!("{key}\nalert_at_percent = 0"), "alert_at_percent"),
            (format!("{key}\nmax_detokenize_per_minute = 0"), "above 0"),
            ("mtls_subject = \"CN=x\"".to_string(), "client_ca"),
            ("".to_string(), "exactly one of"),
        ] {
            let text = format!("[[principals]]\nname = \"p\"\nallow = []\n{principal}");
            let config = Config::parse(&text).expect(&text);
            let error = config.check().expect_err(&text).to_string();
            assert!(error.contains(named) && error.contains("(p)"), "{error}");
        }
        let err = Config::parse(
            "[[principals]]\nname = \"p\"\nallow = []\nreveal = { card = \"partial\" }",
        )
        .expect_err("bad reveal");
        assert!(err.contains("partial"), "{err}");
    }
}
