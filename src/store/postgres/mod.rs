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
//! Group commit: concurrent token batches share one transaction per
//! replica, each still all-or-nothing on its own (see [`group`]), and
//! concurrent lookups share one query (see [`reads`]).
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
mod forget;
mod group;
mod listen;
mod options;
mod reads;
mod schema;
mod store_impl;
mod tokens;

pub use group::GroupBounds;
use listen::{run_listener, CHANNEL, RECONNECT_DELAY};
pub(crate) use options::connect_pool;
use options::pool_and_parts;
pub use options::{PostgresConfig, PostgresOptions};
pub use schema::MIGRATIONS;
use schema::{migrate, MIGRATION_LOCK};
use tokens::{index_range, read_index, SealingKeys};

/// `tv_meta` names of applied erasure-ledger entries: this, then the
/// sequence number in 20 digits.
const LEDGER_APPLIED: &str = "ledger_applied/";

/// How often a transaction that PostgreSQL aborted as a deadlock or
/// serialization failure is retried before the error goes to the caller.
const MAX_RETRIES: usize = 5;

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
    /// Groups concurrent token batches into shared transactions (None:
    /// grouping is off, each batch is its own transaction).
    group_writer: Option<group::GroupWriter>,
    /// Serves concurrent lookups with shared queries (None: off).
    read_groups: Option<reads::ReadGroups>,
    /// Runs concurrent counter charges in shared transactions (None:
    /// grouping is off, each charge is its own transaction).
    charge_groups: Option<counters::ChargeGroups>,
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
        let group_writer = options
            .group
            .grouping()
            .then(|| group::GroupWriter::start(pool.clone(), options.group));
        let read_groups = (options.group.grouping() && options.group.reads)
            .then(|| reads::ReadGroups::start(pool.clone(), options.group));
        let charge_groups = options
            .group
            .grouping()
            .then(|| counters::ChargeGroups::new(options.group.max_calls));
        Ok(PostgresStore {
            pool,
            charge_groups,
            group_writer,
            read_groups,
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

    /// The lookup groups, for a lookup of `keys` keys small enough to
    /// share a query (see `reads`).
    fn read_groups_for(&self, keys: usize) -> Option<&reads::ReadGroups> {
        self.read_groups
            .as_ref()
            .filter(|_| keys <= reads::MAX_GROUPED_KEYS)
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

fn wrapped(bytes: &[u8], what: &'static str) -> Result<WrappedKey, StoreError> {
    WrappedKey::decode(bytes).map_err(|_| StoreError::Corrupt(what))
}

#[cfg(test)]
pub(crate) mod tests;

#[cfg(test)]
mod group_tests;

mod counters;
