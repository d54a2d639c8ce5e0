//! The shared PostgreSQL store: several tokenvault replicas serve one vault.
//!
//! Tables (created by the versioned migrations in [`MIGRATIONS`] at start):
//!
//! | table           | key                          | columns                          |
//! |-----------------|------------------------------|----------------------------------|
//! | `tv_meta`       | name (`system_key`, `kek_rotation`, `ledger_applied/<seq>`) | value bytea |
//! | `tv_subjects`   | subject hash (32)            | wrapped subject DEK              |
//! | `tv_tokens`     | token                        | subject, [`TokenRecord`], expires_at |
//! | `tv_index`      | subject hash ‖ MAC (64)      | token, expires_at                |
//! | `tv_tombstones` | keyed hash of an erased token | erased_at                       |
//! | `tv_audit`      | replica name, sequence number | audit record                    |
//! | `tv_rate_windows` | counter key, window start  | used, ends_at (see `counters`)   |
//!
//! Correctness across replicas rests on PostgreSQL, not on in-process
//! locks: a token is unique by primary key; a deterministic value gets one
//! token because the index row is an upsert that only replaces an expired
//! entry (a racing writer waits on the row, then sees the winner's token);
//! a subject's key is created once (insert-if-absent, then read). A token
//! batch takes a `FOR KEY SHARE` lock on its subject's key row, and a forget a
//! `FOR UPDATE` lock: a batch either commits before the forget (which then
//! erases it) or finds the key row gone and fails with
//! [`StoreError::SubjectErased`], so no token is ever stored under a
//! destroyed key, whichever replicas the two calls reach.
//!
//! Audit chains: each replica writes its own, under a lease on its name,
//! and a record stored twice must be the same bytes (see [`audit`]).
//!
//! Cache invalidation: a forget sends `NOTIFY tokenvault_keys` in its own
//! transaction (delivered at commit); every replica LISTENs on a dedicated
//! connection and drops the subject's cached DEK. While that connection is
//! down a replica caches no DEK at all (see [`Invalidation`]). Reveals never
//! depend on that: Detokenize always reads the token row here, and a
//! forgotten subject's rows are gone at commit, so any replica answers
//! ERASED as soon as the forget returns.
//!
//! This module never sees plaintext values or subject ids, and its errors
//! carry no stored data (PostgreSQL's messages name tables and constraints,
//! never the values: no row data is interpolated into the SQL).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;
use tokio_postgres::AsyncMessage;

use super::{
    BackupInfo, Conflict, IndexEntry, InsertOutcome, Invalidation, InvalidationSink, NewToken,
    PendingPurges, Store, StoreError, TokenPage, TokenRecord, TombstoneHasher,
};
use crate::crypto::{IndexKey, SubjectHash};
use crate::kek::WrappedKey;

mod audit;

/// `tv_meta` names of applied erasure-ledger entries: this, then the
/// sequence number in 20 digits.
const LEDGER_APPLIED: &str = "ledger_applied/";

/// The NOTIFY channel of key invalidations.
const CHANNEL: &str = "tokenvault_keys";

/// Versioned schema migrations, applied in order once each (recorded in
/// `tv_migrations`) under an advisory lock, so replicas starting together
/// do not race. Never edit a released entry: append a new one.
pub const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "CREATE TABLE tv_meta (name text PRIMARY KEY, value bytea NOT NULL);
     CREATE TABLE tv_subjects (subject bytea PRIMARY KEY, wrapped bytea NOT NULL);
     CREATE TABLE tv_tokens (
         token text PRIMARY KEY,
         subject bytea NOT NULL,
         record bytea NOT NULL,
         expires_at bigint);
     CREATE INDEX tv_tokens_by_subject ON tv_tokens (subject, token);
     CREATE TABLE tv_index (
         index_key bytea PRIMARY KEY,
         token text NOT NULL,
         expires_at bigint);
     CREATE TABLE tv_tombstones (hash bytea PRIMARY KEY, erased_at bigint NOT NULL);
     CREATE TABLE tv_audit (
         replica text NOT NULL,
         seq bigint NOT NULL,
         record bytea NOT NULL,
         PRIMARY KEY (replica, seq));",
    ),
    (
        2,
        "CREATE TABLE tv_purge_pending (
             erased_at bigint NOT NULL,
             subject bytea NOT NULL,
             PRIMARY KEY (erased_at, subject));",
    ),
];

/// An arbitrary constant: the advisory lock that serialises migrations.
const MIGRATION_LOCK: i64 = 0x746f_6b65_6e76;

/// How often a transaction that PostgreSQL aborted as a deadlock or
/// serialization failure is retried before the error goes to the caller.
const MAX_RETRIES: usize = 5;

/// Pause before the listener reconnects.
const RECONNECT_DELAY: Duration = Duration::from_millis(500);

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
}

fn default_pool_size() -> usize {
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
        })
    }
}

fn host_name() -> String {
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
            .finish_non_exhaustive()
    }
}

pub struct PostgresStore {
    pool: Pool,
    replica: String,
    /// Where invalidations go (the vault's DEK cache), once registered.
    sink: Arc<parking_lot::Mutex<Option<InvalidationSink>>>,
    /// True while the LISTEN connection is up.
    listening: Arc<AtomicBool>,
    listener: tokio::task::JoinHandle<()>,
    /// One purge (VACUUM) at a time; concurrent calls wait for it.
    purging: tokio::sync::Mutex<()>,
    /// The lease on `replica`, taken when the audit log opens.
    lease: audit::ReplicaLease,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

pub(crate) fn engine(error: tokio_postgres::Error) -> StoreError {
    // A server error displays as just "db error": its code and message are
    // added. The message names constraints and tables, never row data
    // (that is in the detail, left out).
    match error.as_db_error() {
        Some(db) => {
            StoreError::Engine(format!("postgres: {} ({})", db.message(), db.code().code()))
        }
        None => StoreError::Engine(format!("postgres: {error}")),
    }
}

fn pool_error(error: deadpool_postgres::PoolError) -> StoreError {
    StoreError::Engine(format!("postgres pool: {error}"))
}

/// Whether PostgreSQL aborted the transaction for a retryable reason.
fn retryable(error: &tokio_postgres::Error) -> bool {
    matches!(
        error.code(),
        Some(code) if *code == SqlState::T_R_DEADLOCK_DETECTED
            || *code == SqlState::T_R_SERIALIZATION_FAILURE
    )
}

type Tls = tokio_postgres_rustls::MakeRustlsConnect;

fn tls_connector(options: &PostgresOptions) -> Result<Tls, StoreError> {
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

fn parse_config(options: &PostgresOptions) -> Result<tokio_postgres::Config, StoreError> {
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

fn pool_and_parts(
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

impl PostgresStore {
    /// Connects, applies pending migrations and starts the listener.
    pub async fn open(options: &PostgresOptions) -> Result<Self, StoreError> {
        let (pool, config, tls) = pool_and_parts(options)?;
        migrate(&pool).await?;
        Self::ensure_counter_table(&pool).await?;

        let sink: Arc<parking_lot::Mutex<Option<InvalidationSink>>> = Arc::default();
        let listening = Arc::new(AtomicBool::new(false));
        let (ready, first_listen) = tokio::sync::oneshot::channel();
        let lease = audit::ReplicaLease::new(&options.replica, config.clone(), tls.clone());
        let listener = tokio::spawn(run_listener(
            config,
            tls,
            Arc::clone(&sink),
            Arc::clone(&listening),
            ready,
        ));
        // Serve only once invalidations can arrive.
        first_listen
            .await
            .map_err(|_| StoreError::Engine("the postgres listener stopped".into()))??;
        Ok(PostgresStore {
            pool,
            replica: options.replica.clone(),
            sink,
            listening,
            listener,
            purging: tokio::sync::Mutex::new(()),
            lease,
        })
    }

    /// Stops passing invalidations on, as if this replica's notices were
    /// late: for tests of what a stale DEK cache must not do.
    #[cfg(test)]
    pub(crate) fn drop_invalidations(&self) {
        *self.sink.lock() = None;
    }

    /// Whether the LISTEN connection is up (for health and tests).
    pub fn listening(&self) -> bool {
        self.listening.load(Ordering::SeqCst)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(pool_error)
    }

    async fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT value FROM tv_meta WHERE name = $1")
            .await
            .map_err(engine)?;
        let row = client.query_opt(&stmt, &[&name]).await.map_err(engine)?;
        Ok(row.map(|row| row.get(0)))
    }

    /// The (key, bytes) rows of a two-column `... WHERE key = ANY($1)`
    /// query, by key.
    async fn rows_by_key<K>(
        &self,
        sql: &str,
        keys: &(dyn tokio_postgres::types::ToSql + Sync),
    ) -> Result<HashMap<K, Vec<u8>>, StoreError>
    where
        K: for<'a> tokio_postgres::types::FromSql<'a> + std::hash::Hash + Eq,
    {
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql).await.map_err(engine)?;
        Ok(client
            .query(&stmt, &[keys])
            .await
            .map_err(engine)?
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect())
    }

    /// One attempt at a token batch; Err(retryable) is retried by the caller.
    async fn try_insert_tokens(
        &self,
        batch: &[NewToken],
        keys: &SealingKeys,
        now: i64,
    ) -> Result<Result<InsertOutcome, StoreError>, tokio_postgres::Error> {
        let mut client = match self.client().await {
            Ok(client) => client,
            Err(error) => return Ok(Err(error)),
        };
        let records = match batch
            .iter()
            .map(|item| item.record.encode())
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(records) => records,
            Err(error) => return Ok(Err(error)),
        };
        // Rows in key order (stable, so a repeated token keeps its first
        // item): concurrent batches then lock rows in one order.
        let mut order: Vec<usize> = (0..batch.len()).collect();
        order.sort_by(|&a, &b| batch[a].token.cmp(&batch[b].token));
        let tokens: Vec<&str> = order.iter().map(|&i| batch[i].token.as_str()).collect();
        let token_subjects: Vec<&[u8]> = order
            .iter()
            .map(|&i| batch[i].record.subject.0.as_slice())
            .collect();
        let token_records: Vec<&[u8]> = order.iter().map(|&i| records[i].as_slice()).collect();
        let expiries: Vec<Option<i64>> =
            order.iter().map(|&i| batch[i].record.expires_at).collect();

        let mut indexed: Vec<usize> = (0..batch.len())
            .filter(|&i| batch[i].index_key.is_some())
            .collect();
        indexed.sort_by(|&a, &b| index_bytes(&batch[a]).cmp(index_bytes(&batch[b])));
        let index_keys: Vec<&[u8]> = indexed.iter().map(|&i| index_bytes(&batch[i])).collect();
        let index_tokens: Vec<&str> = indexed.iter().map(|&i| batch[i].token.as_str()).collect();
        let index_expiries: Vec<Option<i64>> = indexed
            .iter()
            .map(|&i| batch[i].record.expires_at)
            .collect();

        let tx = client.transaction().await?;
        let (check, insert_tokens, upsert_index) = tokio::try_join!(
            // The key share holds off a forget until the commit; a rewrap
            // meanwhile (an update of `wrapped` only) keeps the same key.
            tx.prepare_cached(
                "SELECT count(*) FROM (SELECT 1 FROM tv_subjects AS s
                     JOIN unnest($1::bytea[], $2::bytea[]) AS k(subject, wrapped)
                       ON s.subject = k.subject AND s.wrapped = k.wrapped
                     FOR KEY SHARE OF s) AS live",
            ),
            tx.prepare_cached(
                "INSERT INTO tv_tokens (token, subject, record, expires_at)
                 SELECT * FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::bigint[])
                 ON CONFLICT (token) DO NOTHING RETURNING token",
            ),
            tx.prepare_cached(
                "INSERT INTO tv_index (index_key, token, expires_at)
                 SELECT * FROM unnest($1::bytea[], $2::text[], $3::bigint[])
                 ON CONFLICT (index_key) DO UPDATE
                     SET token = EXCLUDED.token, expires_at = EXCLUDED.expires_at
                     WHERE tv_index.expires_at IS NOT NULL AND tv_index.expires_at <= $4
                 RETURNING index_key",
            ),
        )?;
        // One pipelined round trip: PostgreSQL runs them in order.
        let check_params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] =
            [&keys.subjects, &keys.wrapped];
        let token_params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
            [&tokens, &token_subjects, &token_records, &expiries];
        let (live, inserted, upserted) = tokio::try_join!(
            tx.query_one(&check, &check_params),
            tx.query(&insert_tokens, &token_params),
            async {
                if index_keys.is_empty() {
                    Ok(Vec::new())
                } else {
                    tx.query(
                        &upsert_index,
                        &[&index_keys, &index_tokens, &index_expiries, &now],
                    )
                    .await
                }
            },
        )?;
        let live: i64 = live.get(0);
        if live != keys.subjects.len() as i64 {
            // The transaction rolls back as it drops.
            return Ok(Err(StoreError::SubjectErased));
        }

        let mut inserted: HashSet<String> = inserted.iter().map(|row| row.get(0)).collect();
        let mut conflicts = Vec::new();
        for (item, new) in batch.iter().enumerate() {
            if !inserted.remove(&new.token) {
                conflicts.push(Conflict::TokenTaken { item });
            }
        }
        let upserted: HashSet<Vec<u8>> = upserted.iter().map(|row| row.get(0)).collect();
        let taken: Vec<usize> = indexed
            .iter()
            .copied()
            .filter(|&i| !upserted.contains(index_bytes(&batch[i])))
            .collect();
        if !taken.is_empty() {
            let keys: Vec<&[u8]> = taken.iter().map(|&i| index_bytes(&batch[i])).collect();
            let existing = read_index(&tx, &keys).await?;
            for item in taken {
                // Gone meanwhile only if the subject was forgotten: then
                // the check above has failed already.
                let Some(entry) = existing.get(index_bytes(&batch[item])).cloned() else {
                    return Ok(Err(StoreError::SubjectErased));
                };
                conflicts.push(Conflict::IndexTaken {
                    item,
                    existing: entry,
                });
            }
        }
        if !conflicts.is_empty() {
            conflicts.sort_by_key(|conflict| match conflict {
                Conflict::TokenTaken { item } | Conflict::IndexTaken { item, .. } => *item,
            });
            return Ok(Ok(InsertOutcome::Conflicts(conflicts)));
        }
        tx.commit().await?;
        Ok(Ok(InsertOutcome::Committed))
    }

    async fn try_forget(
        &self,
        subject: &SubjectHash,
        hasher: &TombstoneHasher,
        now: i64,
    ) -> Result<Result<u64, StoreError>, tokio_postgres::Error> {
        let mut client = match self.client().await {
            Ok(client) => client,
            Err(error) => return Ok(Err(error)),
        };
        let key = subject.0.to_vec();
        let (low, high) = index_range(subject);
        let tx = client.transaction().await?;
        // The key row's lock orders this forget against every token batch
        // of the subject on any replica (they take it FOR KEY SHARE).
        let had_key = tx
            .query_opt(
                "SELECT 1 FROM tv_subjects WHERE subject = $1 FOR UPDATE",
                &[&key],
            )
            .await?
            .is_some();
        let tokens: Vec<String> = tx
            .query(
                "DELETE FROM tv_tokens WHERE subject = $1 RETURNING token",
                &[&key],
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        tx.execute(
            "DELETE FROM tv_index WHERE index_key >= $1 AND index_key <= $2",
            &[&low, &high],
        )
        .await?;
        if tokens.is_empty() && !had_key {
            return Ok(Ok(0));
        }
        let hashes: Vec<Vec<u8>> = tokens.iter().map(|t| hasher(t).to_vec()).collect();
        tx.execute(
            "INSERT INTO tv_tombstones (hash, erased_at)
             SELECT h, $2 FROM unnest($1::bytea[]) AS h ON CONFLICT (hash) DO NOTHING",
            &[&hashes, &now],
        )
        .await?;
        tx.execute("DELETE FROM tv_subjects WHERE subject = $1", &[&key])
            .await?;
        // Owed to the next full purge (see `Store::pending_purges`).
        tx.execute(
            "INSERT INTO tv_purge_pending (erased_at, subject) VALUES ($1, $2)
             ON CONFLICT DO NOTHING",
            &[&now, &key],
        )
        .await?;
        // Delivered to every listener at commit, before this call returns.
        tx.execute(
            "SELECT pg_notify($1, $2)",
            &[&CHANNEL, &format!("forget:{}", hex::encode(subject.0))],
        )
        .await?;
        tx.commit().await?;
        Ok(Ok(tokens.len() as u64))
    }

    /// Runs `attempt` again while PostgreSQL aborts it as a deadlock or a
    /// serialization failure.
    async fn retrying<T, F, Fut>(&self, mut attempt: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Result<T, StoreError>, tokio_postgres::Error>>,
    {
        let mut tries = 0;
        loop {
            match attempt().await {
                Ok(outcome) => return outcome,
                Err(error) if retryable(&error) && tries < MAX_RETRIES => tries += 1,
                Err(error) => return Err(engine(error)),
            }
        }
    }
}

/// The subjects of a token batch and, in the same order, the encoded
/// wrapped keys its tokens were sealed under.
struct SealingKeys {
    subjects: Vec<Vec<u8>>,
    wrapped: Vec<Vec<u8>>,
}

impl SealingKeys {
    fn of_batch(
        batch: &[NewToken],
        sealed_under: &[(SubjectHash, &WrappedKey)],
    ) -> Result<SealingKeys, StoreError> {
        let subjects: HashSet<SubjectHash> = batch.iter().map(|item| item.record.subject).collect();
        let mut keys = SealingKeys {
            subjects: Vec::with_capacity(subjects.len()),
            wrapped: Vec::with_capacity(subjects.len()),
        };
        for subject in subjects {
            let key = crate::store::sealing_key_of(sealed_under, subject)?;
            keys.subjects.push(subject.0.to_vec());
            keys.wrapped.push(key.encode());
        }
        Ok(keys)
    }
}

fn index_bytes(item: &NewToken) -> &[u8] {
    item.index_key
        .as_ref()
        .map(|key| key.0.as_slice())
        .unwrap_or_default()
}

/// The `tv_index` key range of a subject (keys start with its hash).
fn index_range(subject: &SubjectHash) -> (Vec<u8>, Vec<u8>) {
    let mut low = subject.0.to_vec();
    let mut high = low.clone();
    low.extend_from_slice(&[0x00; 32]);
    high.extend_from_slice(&[0xFF; 32]);
    (low, high)
}

async fn read_index(
    client: &impl deadpool_postgres::GenericClient,
    keys: &[&[u8]],
) -> Result<HashMap<Vec<u8>, IndexEntry>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT index_key, token, expires_at FROM tv_index WHERE index_key = ANY($1)",
            &[&keys],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            (
                row.get::<_, Vec<u8>>(0),
                IndexEntry {
                    token: row.get(1),
                    expires_at: row.get(2),
                },
            )
        })
        .collect())
}

/// Applies the migrations not yet recorded, one transaction each.
async fn migrate(pool: &Pool) -> Result<(), StoreError> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let tx = client.transaction().await.map_err(engine)?;
    // The lock first, the migrations table under it: replicas starting
    // together then never race on creating it (outside the lock, the loser
    // of that race failed now and then with a catalog error).
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(engine)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS tv_migrations (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .map_err(engine)?;
    let applied: HashSet<i32> = tx
        .query("SELECT version FROM tv_migrations", &[])
        .await
        .map_err(engine)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    for (version, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tx.batch_execute(sql).await.map_err(engine)?;
        tx.execute(
            "INSERT INTO tv_migrations (version) VALUES ($1)",
            &[version],
        )
        .await
        .map_err(engine)?;
        tracing::info!(version, "postgres schema migration applied");
    }
    tx.commit().await.map_err(engine)
}

/// Keeps a LISTEN connection up and forwards what arrives to the sink.
/// While it is down the sink is told to cache nothing ([`Invalidation::Suspend`]);
/// once it is back, to drop everything cached and cache again
/// ([`Invalidation::Resume`]): notifications sent meanwhile are lost.
async fn run_listener(
    config: tokio_postgres::Config,
    tls: Option<Tls>,
    sink: Arc<parking_lot::Mutex<Option<InvalidationSink>>>,
    listening: Arc<AtomicBool>,
    ready: tokio::sync::oneshot::Sender<Result<(), StoreError>>,
) {
    let mut ready = Some(ready);
    let send = |invalidation: Invalidation| {
        if let Some(sink) = sink.lock().as_ref() {
            sink(invalidation);
        }
    };
    loop {
        let outcome = match &tls {
            Some(tls) => listen_once(&config, tls.clone(), &listening, &send, &mut ready).await,
            None => {
                listen_once(
                    &config,
                    tokio_postgres::NoTls,
                    &listening,
                    &send,
                    &mut ready,
                )
                .await
            }
        };
        let was_listening = listening.swap(false, Ordering::SeqCst);
        send(Invalidation::Suspend);
        if let Err(error) = outcome {
            if let Some(ready) = ready.take() {
                let _ = ready.send(Err(error));
                return;
            }
            if was_listening {
                tracing::warn!(%error, "postgres LISTEN connection lost: DEK cache off until it is back");
            }
        }
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}

async fn listen_once<T>(
    config: &tokio_postgres::Config,
    tls: T,
    listening: &AtomicBool,
    send: &impl Fn(Invalidation),
    ready: &mut Option<tokio::sync::oneshot::Sender<Result<(), StoreError>>>,
) -> Result<(), StoreError>
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + 'static,
{
    let (client, mut connection) = config.connect(tls).await.map_err(engine)?;
    let (tx, mut messages) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        use futures_util::StreamExt;
        while let Some(message) = stream.next().await {
            match message {
                Ok(message) => {
                    if tx.send(Ok(message)).is_err() {
                        return;
                    }
                }
                Err(error) => {
                    let _ = tx.send(Err(error));
                    return;
                }
            }
        }
    });
    let listen = client.batch_execute(&format!("LISTEN {CHANNEL}")).await;
    if let Err(error) = listen {
        driver.abort();
        return Err(engine(error));
    }
    listening.store(true, Ordering::SeqCst);
    // Anything cached before this point may have missed a notification.
    send(Invalidation::Resume);
    if let Some(ready) = ready.take() {
        let _ = ready.send(Ok(()));
    }
    let outcome = loop {
        match messages.recv().await {
            Some(Ok(AsyncMessage::Notification(note))) => {
                if let Some(invalidation) = parse_notification(note.payload()) {
                    send(invalidation);
                }
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => break Err(engine(error)),
            None => {
                break Err(StoreError::Engine(
                    "postgres LISTEN connection closed".into(),
                ))
            }
        }
    };
    drop(client);
    driver.abort();
    outcome
}

fn parse_notification(payload: &str) -> Option<Invalidation> {
    let hex_subject = payload.strip_prefix("forget:")?;
    let bytes = hex::decode(hex_subject).ok()?;
    Some(Invalidation::Subject(SubjectHash(bytes.try_into().ok()?)))
}

fn wrapped(bytes: &[u8], what: &'static str) -> Result<WrappedKey, StoreError> {
    WrappedKey::decode(bytes).map_err(|_| StoreError::Corrupt(what))
}

#[async_trait]
impl Store for PostgresStore {
    async fn system_key(&self) -> Result<Option<WrappedKey>, StoreError> {
        self.meta("system_key")
            .await?
            .map(|bytes| wrapped(&bytes, "system key"))
            .transpose()
    }

    async fn init_system_key(&self, key: WrappedKey) -> Result<WrappedKey, StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO tv_meta (name, value) VALUES ('system_key', $1)
                 ON CONFLICT (name) DO NOTHING",
                &[&key.encode()],
            )
            .await
            .map_err(engine)?;
        drop(client);
        self.system_key()
            .await?
            .ok_or(StoreError::Engine("the system key vanished".into()))
    }

    async fn subject_keys(
        &self,
        subjects: &[SubjectHash],
    ) -> Result<Vec<Option<WrappedKey>>, StoreError> {
        let keys: Vec<&[u8]> = subjects.iter().map(|s| s.0.as_slice()).collect();
        let mut found: HashMap<Vec<u8>, Vec<u8>> = self
            .rows_by_key(
                "SELECT subject, wrapped FROM tv_subjects WHERE subject = ANY($1)",
                &keys,
            )
            .await?;
        subjects
            .iter()
            .map(|s| {
                found
                    .remove(s.0.as_slice())
                    .map(|bytes| wrapped(&bytes, "subject key"))
                    .transpose()
            })
            .collect()
    }

    async fn insert_subject_key(
        &self,
        subject: SubjectHash,
        key: WrappedKey,
    ) -> Result<WrappedKey, StoreError> {
        let client = self.client().await?;
        let (insert, select) = tokio::try_join!(
            client.prepare_cached(
                "INSERT INTO tv_subjects (subject, wrapped) VALUES ($1, $2)
                 ON CONFLICT (subject) DO NOTHING RETURNING wrapped",
            ),
            client.prepare_cached("SELECT wrapped FROM tv_subjects WHERE subject = $1"),
        )
        .map_err(engine)?;
        let subject = subject.0.to_vec();
        let encoded = key.encode();
        // The insert waits for a racing replica's insert of the same
        // subject; the select (a new snapshot) then sees the winner. A
        // forget in between deletes it: then insert again.
        for _ in 0..MAX_RETRIES {
            if client
                .query_opt(&insert, &[&subject, &encoded])
                .await
                .map_err(engine)?
                .is_some()
            {
                return Ok(key);
            }
            if let Some(row) = client
                .query_opt(&select, &[&subject])
                .await
                .map_err(engine)?
            {
                return wrapped(row.get(0), "subject key");
            }
        }
        Err(StoreError::Engine(
            "a subject key kept being created and erased".into(),
        ))
    }

    async fn index_entries(
        &self,
        keys: &[IndexKey],
    ) -> Result<Vec<Option<IndexEntry>>, StoreError> {
        let client = self.client().await?;
        let raw: Vec<&[u8]> = keys.iter().map(|k| k.0.as_slice()).collect();
        let mut found = read_index(&client, &raw).await.map_err(engine)?;
        Ok(keys
            .iter()
            .map(|key| found.remove(key.0.as_slice()))
            .collect())
    }

    async fn token_records(
        &self,
        tokens: &[String],
    ) -> Result<Vec<Option<TokenRecord>>, StoreError> {
        let found: HashMap<String, Vec<u8>> = self
            .rows_by_key(
                "SELECT token, record FROM tv_tokens WHERE token = ANY($1)",
                &tokens,
            )
            .await?;
        tokens
            .iter()
            .map(|token| {
                // A token asked twice in one batch is answered twice.
                found
                    .get(token)
                    .map(|bytes| TokenRecord::decode(bytes))
                    .transpose()
            })
            .collect()
    }

    async fn subject_keys_after(
        &self,
        after: Option<SubjectHash>,
        limit: usize,
    ) -> Result<Vec<(SubjectHash, WrappedKey)>, StoreError> {
        let client = self.client().await?;
        let after = after.map(|s| s.0.to_vec()).unwrap_or_default();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        client
            .query(
                "SELECT subject, wrapped FROM tv_subjects WHERE subject > $1
                 ORDER BY subject LIMIT $2",
                &[&after, &limit],
            )
            .await
            .map_err(engine)?
            .iter()
            .map(|row| {
                let subject: Vec<u8> = row.get(0);
                let subject = SubjectHash(
                    subject
                        .try_into()
                        .map_err(|_| StoreError::Corrupt("subject key"))?,
                );
                Ok((subject, wrapped(row.get(1), "subject key")?))
            })
            .collect()
    }

    async fn replace_subject_key(
        &self,
        subject: SubjectHash,
        expected: &WrappedKey,
        new: WrappedKey,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let updated = client
            .execute(
                "UPDATE tv_subjects SET wrapped = $3 WHERE subject = $1 AND wrapped = $2",
                &[&subject.0.as_slice(), &expected.encode(), &new.encode()],
            )
            .await
            .map_err(engine)?;
        Ok(updated == 1)
    }

    async fn replace_system_key(
        &self,
        expected: &WrappedKey,
        new: WrappedKey,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let updated = client
            .execute(
                "UPDATE tv_meta SET value = $2 WHERE name = 'system_key' AND value = $1",
                &[&expected.encode(), &new.encode()],
            )
            .await
            .map_err(engine)?;
        Ok(updated == 1)
    }

    async fn kek_rotation(&self) -> Result<Option<u32>, StoreError> {
        self.meta("kek_rotation")
            .await?
            .map(|bytes| {
                let bytes: [u8; 4] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("rotation"))?;
                Ok(u32::from_be_bytes(bytes))
            })
            .transpose()
    }

    async fn set_kek_rotation(&self, target: Option<u32>) -> Result<(), StoreError> {
        let client = self.client().await?;
        match target {
            Some(version) => client
                .execute(
                    "INSERT INTO tv_meta (name, value) VALUES ('kek_rotation', $1)
                     ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                    &[&version.to_be_bytes().as_slice()],
                )
                .await
                .map_err(engine)?,
            None => client
                .execute("DELETE FROM tv_meta WHERE name = 'kek_rotation'", &[])
                .await
                .map_err(engine)?,
        };
        Ok(())
    }

    async fn ledger_applied(&self) -> Result<Vec<(u64, [u8; 32])>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT name, value FROM tv_meta WHERE name LIKE 'ledger_applied/%' ORDER BY name",
                &[],
            )
            .await
            .map_err(engine)?;
        rows.iter()
            .map(|row| {
                let name: String = row.get(0);
                let value: Vec<u8> = row.get(1);
                let seq = name
                    .strip_prefix(LEDGER_APPLIED)
                    .and_then(|seq| seq.parse().ok())
                    .ok_or(StoreError::Corrupt("ledger mark"))?;
                let mac = value
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("ledger mark"))?;
                Ok((seq, mac))
            })
            .collect()
    }

    async fn mark_ledger_applied(
        &self,
        entries: Vec<(u64, [u8; 32])>,
        replace: bool,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(engine)?;
        if replace {
            tx.execute(
                "DELETE FROM tv_meta WHERE name LIKE 'ledger_applied/%'",
                &[],
            )
            .await
            .map_err(engine)?;
        }
        // Zero-padded, so names sort in sequence order.
        let names: Vec<String> = entries
            .iter()
            .map(|(seq, _)| format!("{LEDGER_APPLIED}{seq:020}"))
            .collect();
        let macs: Vec<&[u8]> = entries.iter().map(|(_, mac)| mac.as_slice()).collect();
        tx.execute(
            "INSERT INTO tv_meta (name, value) SELECT * FROM unnest($1::text[], $2::bytea[])
             ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
            &[&names, &macs],
        )
        .await
        .map_err(engine)?;
        tx.commit().await.map_err(engine)
    }

    async fn insert_tokens(
        &self,
        batch: Vec<NewToken>,
        sealed_under: &[(SubjectHash, &WrappedKey)],
        now: i64,
    ) -> Result<InsertOutcome, StoreError> {
        let keys: HashSet<&[u8]> = batch
            .iter()
            .filter_map(|item| item.index_key.as_ref().map(|k| k.0.as_slice()))
            .collect();
        if keys.len() != batch.iter().filter(|item| item.index_key.is_some()).count() {
            return Err(StoreError::Misuse("one index key twice in a batch"));
        }
        if batch.is_empty() {
            return Ok(InsertOutcome::Committed);
        }
        let keys = SealingKeys::of_batch(&batch, sealed_under)?;
        self.retrying(|| self.try_insert_tokens(&batch, &keys, now))
            .await
    }

    async fn subject_tokens(
        &self,
        subject: SubjectHash,
        cursor: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<TokenPage, StoreError> {
        let limit = limit.max(1);
        let client = self.client().await?;
        let from = match cursor {
            Some(bytes) => String::from_utf8(bytes)
                .map_err(|_| StoreError::Misuse("a cursor of another store"))?,
            None => String::new(),
        };
        let fetch = i64::try_from(limit + 1).unwrap_or(i64::MAX);
        let rows = client
            .query(
                "SELECT token, record FROM tv_tokens WHERE subject = $1 AND token >= $2
                 ORDER BY token LIMIT $3",
                &[&subject.0.as_slice(), &from, &fetch],
            )
            .await
            .map_err(engine)?;
        let mut tokens = rows
            .iter()
            .map(|row| Ok((row.get::<_, String>(0), TokenRecord::decode(row.get(1))?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let next = (tokens.len() > limit)
            .then(|| tokens.pop().map(|(token, _)| token.into_bytes()))
            .flatten();
        Ok(TokenPage { tokens, next })
    }

    async fn forget_subject(
        &self,
        subject: SubjectHash,
        hasher: TombstoneHasher,
        now: i64,
    ) -> Result<u64, StoreError> {
        self.retrying(|| self.try_forget(&subject, &hasher, now))
            .await
    }

    async fn tombstones(&self, hashes: &[[u8; 32]]) -> Result<Vec<bool>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT hash FROM tv_tombstones WHERE hash = ANY($1)")
            .await
            .map_err(engine)?;
        let raw: Vec<&[u8]> = hashes.iter().map(|h| h.as_slice()).collect();
        let found: HashSet<Vec<u8>> = client
            .query(&stmt, &[&raw])
            .await
            .map_err(engine)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        Ok(hashes
            .iter()
            .map(|h| found.contains(h.as_slice()))
            .collect())
    }

    /// Deletes expired rows and VACUUMs the tables that held erased data,
    /// so their dead tuples' space is marked free. It cannot promise what
    /// [`Store::purge`] asks of RocksDB: PostgreSQL does not zero freed
    /// space, and WAL segments (and any WAL archive or base backup) keep
    /// the old rows until recycled. keys/README.md states the bound.
    async fn purge(&self) -> Result<(), StoreError> {
        let _one_at_a_time = self.purging.lock().await;
        let client = self.client().await?;
        let now = crate::clock::unix_now();
        let owed = client
            .query("SELECT erased_at, subject FROM tv_purge_pending", &[])
            .await
            .map_err(engine)?;
        let owed_at: Vec<i64> = owed.iter().map(|row| row.get(0)).collect();
        let owed_subjects: Vec<Vec<u8>> = owed.iter().map(|row| row.get(1)).collect();
        client
            .execute(
                "DELETE FROM tv_tokens WHERE expires_at IS NOT NULL AND expires_at <= $1",
                &[&now],
            )
            .await
            .map_err(engine)?;
        client
            .execute(
                "DELETE FROM tv_index WHERE expires_at IS NOT NULL AND expires_at <= $1",
                &[&now],
            )
            .await
            .map_err(engine)?;
        client
            .batch_execute("VACUUM tv_subjects, tv_tokens, tv_index")
            .await
            .map_err(engine)?;
        client
            .execute(
                "DELETE FROM tv_purge_pending p USING unnest($1::bigint[], $2::bytea[]) AS o(at, s)
                 WHERE p.erased_at = o.at AND p.subject = o.s",
                &[&owed_at, &owed_subjects],
            )
            .await
            .map_err(engine)?;
        Ok(())
    }

    /// VACUUMs `tv_subjects` (small: a row per subject), so the deleted key
    /// row's space is marked free. PostgreSQL does not zero it, and WAL
    /// segments, a WAL archive or a base backup keep the row: docs/erasure.md
    /// says what that means and what an operator must do.
    async fn purge_erased_keys(&self, _subject: SubjectHash) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .batch_execute("VACUUM tv_subjects")
            .await
            .map_err(engine)
    }

    async fn purge_owed(&self, subject: SubjectHash) -> Result<Option<i64>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT min(erased_at) FROM tv_purge_pending WHERE subject = $1",
                &[&subject.as_bytes().as_slice()],
            )
            .await
            .map_err(engine)?;
        Ok(row.get(0))
    }

    async fn pending_purges(&self) -> Result<PendingPurges, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one("SELECT count(*), min(erased_at) FROM tv_purge_pending", &[])
            .await
            .map_err(engine)?;
        let count: i64 = row.get(0);
        Ok(PendingPurges {
            count: count.max(0) as u64,
            oldest_erased_at: row.get(1),
        })
    }

    async fn create_backup(&self, _dir: &Path) -> Result<BackupInfo, StoreError> {
        Err(StoreError::Unsupported(
            "the postgres store is backed up with PostgreSQL's own tools (pg_dump, or base backups with WAL archiving for point-in-time recovery)",
        ))
    }

    fn watch_invalidations(&self, sink: InvalidationSink) {
        if !self.listening() {
            sink(Invalidation::Suspend);
        }
        *self.sink.lock() = Some(sink);
    }

    async fn claim_audit_chain(&self) -> Result<(), StoreError> {
        self.lease.claim().await
    }

    fn audit_chain_name(&self) -> String {
        self.replica.clone()
    }

    async fn append_audit(&self, records: Vec<(u64, Vec<u8>)>) -> Result<(), StoreError> {
        self.lease.check()?;
        let seqs = records
            .iter()
            .map(|(seq, _)| i64::try_from(*seq).map_err(|_| StoreError::Misuse("audit seq")))
            .collect::<Result<Vec<_>, _>>()?;
        let bodies: Vec<&[u8]> = records.iter().map(|(_, r)| r.as_slice()).collect();
        let client = self.client().await?;
        // Always synced: an audit record must be durable before the reveal
        // it records is answered, whatever sync_writes says.
        let mut client = client;
        let tx = client.transaction().await.map_err(engine)?;
        tx.batch_execute("SET LOCAL synchronous_commit = on")
            .await
            .map_err(engine)?;
        let inserted: HashSet<i64> = tx
            .query(
                "INSERT INTO tv_audit (replica, seq, record)
                 SELECT $1, s, r FROM unnest($2::bigint[], $3::bytea[]) AS a(s, r)
                 ON CONFLICT (replica, seq) DO NOTHING
                 RETURNING seq",
                &[&self.replica, &seqs, &bodies],
            )
            .await
            .map_err(engine)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        if inserted.len() < records.len() {
            // Dropped uncommitted on an error: nothing of the batch stays.
            audit::check_skipped(&tx, &self.replica, &records, &inserted).await?;
        }
        tx.commit().await.map_err(engine)
    }

    async fn audit_records(
        &self,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let client = self.client().await?;
        let from = i64::try_from(from_seq).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(
                "SELECT seq, record FROM tv_audit WHERE replica = $1 AND seq >= $2
                 ORDER BY seq LIMIT $3",
                &[&self.replica, &from, &limit],
            )
            .await
            .map_err(engine)?;
        Ok(rows
            .iter()
            .map(|row| (row.get::<_, i64>(0) as u64, row.get(1)))
            .collect())
    }

    async fn last_audit_record(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT seq, record FROM tv_audit WHERE replica = $1 ORDER BY seq DESC LIMIT 1",
                &[&self.replica],
            )
            .await
            .map_err(engine)?;
        Ok(row.map(|row| (row.get::<_, i64>(0) as u64, row.get(1))))
    }
}

#[cfg(test)]
pub(crate) mod tests;

mod counters;
