//! `[erasure]` and `[retention]`: where forgetting is recorded so that it
//! outlives a restore (a ledger file, or a PostgreSQL database of its own
//! in `[erasure.postgres]`), how soon a forgotten subject's data leaves
//! the disk, and how often expired tokens are purged; with the checks of
//! the ledger's place. It never connects to the ledger, and its `Debug`
//! never shows the ledger's URL (which may carry a password).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Config, ConfigError};

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
}

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
