//! Connection settings (`[storage.postgres]`), TLS and the pool. The URL
//! may hold a password: no `Debug` or error here prints it.

use super::*;

/// Settings of the PostgreSQL store.
#[derive(Clone)]
pub struct PostgresOptions {
    /// A libpq-style URL or key=value string (host, port, user, dbname,
    /// password, sslmode, connect_timeout, ...).
    pub url: String,
    pub pool_size: usize,
    /// TLS to the server (verified against `ca_file` or the webpki roots).
    pub tls: bool,
    pub ca_file: Option<std::path::PathBuf>,
    /// Names this process's audit chain (each replica keeps its own).
    pub replica: String,
    /// `synchronous_commit` on: a commit returns once its WAL is flushed.
    pub sync_writes: bool,
    /// How concurrent token batches share transactions (see `group`).
    pub group: GroupBounds,
}

/// `[storage.postgres]` in the config file. `Debug` leaves the URL out.
#[derive(Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// Connection URL (`postgres://user@host:5432/db?connect_timeout=5`)
    /// or key=value string. Put a password in `url_env` instead.
    pub url: Option<String>,
    /// The environment variable that holds the URL (keeps a password out
    /// of the config file).
    pub url_env: Option<String>,
    /// Connections per replica.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// TLS to PostgreSQL, verified against `ca_file` (PEM) or, without
    /// one, the public web roots.
    #[serde(default)]
    pub tls: bool,
    pub ca_file: Option<std::path::PathBuf>,
    /// This replica's name for its audit chain; defaults to the host name
    /// (a pod's name in Kubernetes). Each replica needs its own.
    pub replica: Option<String>,
    /// Group commit (see `group`): most Tokenize calls sharing one
    /// transaction; 1 turns grouping off.
    #[serde(default = "default_group_max_calls")]
    pub group_max_calls: usize,
    /// Most token rows in one group transaction (a larger call goes alone).
    #[serde(default = "default_group_max_items")]
    pub group_max_items: usize,
    /// Microseconds the group writer waits for more calls once one is
    /// queued (0: a group is what queued while the one before it ran).
    #[serde(default)]
    pub group_wait_us: u64,
    /// Most group transactions in flight at once per replica.
    #[serde(default = "default_group_in_flight")]
    pub group_in_flight: usize,
    /// Concurrent token and index lookups share one query (with grouping
    /// on).
    #[serde(default = "default_true")]
    pub group_reads: bool,
}

fn default_true() -> bool {
    true
}

fn default_group_max_calls() -> usize {
    GroupBounds::default().max_calls
}

fn default_group_max_items() -> usize {
    GroupBounds::default().max_items
}

fn default_group_in_flight() -> usize {
    GroupBounds::default().in_flight
}

/// Above this the group writer would hold a group's row locks, and its
/// callers, for longer than a transaction should.
const MAX_GROUP_WAIT_US: u64 = 100_000;

pub(super) fn default_pool_size() -> usize {
    16
}

impl PostgresConfig {
    pub fn options(&self, sync_writes: bool) -> Result<PostgresOptions, String> {
        let url = match (&self.url, &self.url_env) {
            (Some(url), None) => url.clone(),
            (None, Some(var)) => std::env::var(var)
                .map_err(|_| format!("storage.postgres.url_env: ${var} is not set"))?,
            _ => {
                return Err("storage.postgres: set exactly one of url and url_env".into());
            }
        };
        if self.pool_size == 0 {
            return Err("storage.postgres.pool_size must be above 0".into());
        }
        if self.group_max_calls == 0 || self.group_max_items == 0 || self.group_in_flight == 0 {
            return Err(
                "storage.postgres: group_max_calls, group_max_items and group_in_flight must be above 0"
                    .into(),
            );
        }
        if self.group_wait_us > MAX_GROUP_WAIT_US {
            return Err(format!(
                "storage.postgres.group_wait_us must be at most {MAX_GROUP_WAIT_US}"
            ));
        }
        let replica = match &self.replica {
            Some(name) if !name.is_empty() => name.clone(),
            Some(_) => return Err("storage.postgres.replica must not be empty".into()),
            None => host_name(),
        };
        Ok(PostgresOptions {
            url,
            pool_size: self.pool_size,
            tls: self.tls,
            ca_file: self.ca_file.clone(),
            replica,
            sync_writes,
            group: GroupBounds {
                max_calls: self.group_max_calls,
                max_items: self.group_max_items,
                wait: std::time::Duration::from_micros(self.group_wait_us),
                in_flight: self.group_in_flight,
                reads: self.group_reads,
            },
        })
    }
}

pub(super) fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "tokenvault".into())
}

impl std::fmt::Debug for PostgresConfig {
    // The URL may carry a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url_env", &self.url_env)
            .field("pool_size", &self.pool_size)
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .field("replica", &self.replica)
            .field("group_max_calls", &self.group_max_calls)
            .field("group_max_items", &self.group_max_items)
            .field("group_wait_us", &self.group_wait_us)
            .field("group_in_flight", &self.group_in_flight)
            .field("group_reads", &self.group_reads)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for PostgresOptions {
    // The URL may carry a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("pool_size", &self.pool_size)
            .field("tls", &self.tls)
            .field("replica", &self.replica)
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

pub(super) fn tls_connector(options: &PostgresOptions) -> Result<Tls, StoreError> {
    let mut roots = rustls::RootCertStore::empty();
    match &options.ca_file {
        Some(path) => {
            use rustls_pki_types::pem::PemObject;
            let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| StoreError::Engine(format!("cannot read {}: {e}", path.display())))?;
            for cert in certs {
                let cert = cert.map_err(|e| {
                    StoreError::Engine(format!("bad certificate in {}: {e}", path.display()))
                })?;
                roots
                    .add(cert)
                    .map_err(|e| StoreError::Engine(format!("bad CA certificate: {e}")))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Engine(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

pub(super) fn parse_config(
    options: &PostgresOptions,
) -> Result<tokio_postgres::Config, StoreError> {
    let mut config: tokio_postgres::Config = options
        .url
        .parse()
        .map_err(|_| StoreError::Engine("the postgres connection string does not parse".into()))?;
    config.application_name("tokenvault");
    if options.tls {
        config.ssl_mode(tokio_postgres::config::SslMode::Require);
    } else {
        config.ssl_mode(tokio_postgres::config::SslMode::Disable);
    }
    if !options.sync_writes {
        config.options("-c synchronous_commit=off");
    }
    Ok(config)
}

/// A connection pool as `options` say (TLS, `synchronous_commit`); no
/// connection is made yet. The erasure ledger's database uses it too.
pub(crate) fn connect_pool(options: &PostgresOptions) -> Result<Pool, StoreError> {
    Ok(pool_and_parts(options)?.0)
}

pub(super) fn pool_and_parts(
    options: &PostgresOptions,
) -> Result<(Pool, tokio_postgres::Config, Option<Tls>), StoreError> {
    let config = parse_config(options)?;
    let tls = if options.tls {
        Some(tls_connector(options)?)
    } else {
        None
    };
    let manager_config = ManagerConfig {
        // Fast: a connection is reused without a query. A call dropped
        // mid-transaction cannot leak it: tokio-postgres rolls back a
        // Transaction on drop.
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match tls.clone() {
        Some(tls) => Manager::from_config(config.clone(), tls, manager_config),
        None => Manager::from_config(config.clone(), tokio_postgres::NoTls, manager_config),
    };
    let pool = Pool::builder(manager)
        .max_size(options.pool_size.max(1))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| StoreError::Engine(format!("postgres pool: {e}")))?;
    Ok((pool, config, tls))
}
