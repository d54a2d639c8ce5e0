//! The audit chains' side of the PostgreSQL store: one writer per chain.
//!
//! Each replica writes its own chain in `tv_audit`, keyed by its
//! `[storage.postgres] replica` name. Two processes with one name would
//! number the same records, so a replica holds a lease on its name for as
//! long as it runs ([`ReplicaLease`]): a session advisory lock, taken on a
//! connection of its own when the audit log opens, and released by
//! PostgreSQL when that session ends (the process stops or dies, or the
//! connection is lost). A second server with the name in use refuses to
//! start, naming it. While the lease is not held (its connection was lost
//! and is not back, or another process took the name meanwhile) no audit
//! record is stored, so no reveal is served.
//!
//! The lease is the first guard; the insert is the second: a record whose
//! number is already stored with other bytes is an error
//! ([`StoreError::AuditConflict`]) and the batch is stored not at all. The
//! same bytes again are a retry and pass.
//!
//! Nothing here sees audited data beyond the records' bytes, and errors
//! name sequence numbers and the replica name only.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{engine, Tls, RECONNECT_DELAY};
use crate::store::StoreError;

/// How often the lease's connection is checked with a query: a connection
/// that died without a word (a network partition) is noticed within
/// about this long.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// The advisory-lock key of a replica name: the first 64 bits of a
/// SHA-256 of it, so two names share a key only by a 2^-64 chance.
fn lease_key(replica: &str) -> i64 {
    let digest = Sha256::new()
        .chain_update(b"tokenvault/v1/replica-lease\0")
        .chain_update(replica.as_bytes())
        .finalize();
    let mut key = [0u8; 8];
    key.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(key)
}

fn in_use(replica: &str) -> StoreError {
    StoreError::ChainInUse(format!(
        "storage.postgres.replica name \"{replica}\" is in use by another running server: each replica needs its own name"
    ))
}

/// This process's lease on its replica name.
pub(super) struct ReplicaLease {
    replica: String,
    config: tokio_postgres::Config,
    tls: Option<Tls>,
    /// True while the lock is held on a live connection.
    held: Arc<AtomicBool>,
    /// The task that holds the lock's connection (and takes the lock
    /// again after it is lost), once claimed.
    holder: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// One claim at a time.
    claiming: tokio::sync::Mutex<()>,
}

impl Drop for ReplicaLease {
    fn drop(&mut self) {
        // Ends the session, and with it the lock.
        if let Some(holder) = self.holder.lock().take() {
            holder.abort();
        }
    }
}

impl ReplicaLease {
    pub fn new(replica: &str, config: tokio_postgres::Config, tls: Option<Tls>) -> Self {
        ReplicaLease {
            replica: replica.to_string(),
            config,
            tls,
            held: Arc::new(AtomicBool::new(false)),
            holder: parking_lot::Mutex::new(None),
            claiming: tokio::sync::Mutex::new(()),
        }
    }

    /// Takes the lease, or fails naming the replica if another process
    /// holds it. Once taken it is held until the store is dropped, and
    /// taken again (in the background) if its connection is lost.
    pub async fn claim(&self) -> Result<(), StoreError> {
        let _one = self.claiming.lock().await;
        if self.holder.lock().is_some() {
            return self.check();
        }
        let (first, taken) = tokio::sync::oneshot::channel();
        let holder = tokio::spawn(hold(
            self.config.clone(),
            self.tls.clone(),
            self.replica.clone(),
            Arc::clone(&self.held),
            first,
        ));
        match taken.await {
            Ok(Ok(())) => {
                *self.holder.lock() = Some(holder);
                tracing::info!(replica = %self.replica, "replica name leased: this process writes its audit chain");
                Ok(())
            }
            Ok(Err(error)) => Err(error),
            Err(_) => Err(StoreError::Engine("the replica lease task stopped".into())),
        }
    }

    /// Ok while the lease is held; an audit record may be stored.
    pub fn check(&self) -> Result<(), StoreError> {
        if self.held.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(StoreError::Engine(format!(
                "this process does not hold the lease on replica name \"{}\" (not claimed, or its connection was lost): no audit record is stored",
                self.replica
            )))
        }
    }
}

/// Holds the lock; after a lost connection, takes it again. The first
/// attempt's outcome goes to `first` (a failure then ends the task).
async fn hold(
    config: tokio_postgres::Config,
    tls: Option<Tls>,
    replica: String,
    held: Arc<AtomicBool>,
    first: tokio::sync::oneshot::Sender<Result<(), StoreError>>,
) {
    let mut first = Some(first);
    let key = lease_key(&replica);
    // Failures after a loss are logged once, until the lease is back.
    let mut quiet = false;
    loop {
        let outcome = match &tls {
            Some(tls) => hold_once(&config, tls.clone(), key, &replica, &held, &mut first).await,
            None => {
                hold_once(
                    &config,
                    tokio_postgres::NoTls,
                    key,
                    &replica,
                    &held,
                    &mut first,
                )
                .await
            }
        };
        if held.swap(false, Ordering::SeqCst) {
            quiet = false;
        }
        if let Err(error) = outcome {
            if let Some(first) = first.take() {
                let _ = first.send(Err(error));
                return;
            }
            if !quiet {
                tracing::error!(%replica, %error, "replica lease lost: audit records are refused (and with them reveals) until it is taken again");
                quiet = true;
            }
        }
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}

/// One connection's life: takes the lock and keeps the session up,
/// checking it every [`HEARTBEAT`]. Returns why it ended.
async fn hold_once<T>(
    config: &tokio_postgres::Config,
    tls: T,
    key: i64,
    replica: &str,
    held: &AtomicBool,
    first: &mut Option<tokio::sync::oneshot::Sender<Result<(), StoreError>>>,
) -> Result<(), StoreError>
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + 'static,
{
    let mut config = config.clone();
    config.application_name("tokenvault replica lease");
    let (client, connection) = config.connect(tls).await.map_err(engine)?;
    tokio::pin!(connection);
    let ended = |done: Result<(), tokio_postgres::Error>| match done {
        Ok(()) => StoreError::Engine("the replica lease connection closed".into()),
        Err(error) => engine(error),
    };
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&key];
    let locked = tokio::select! {
        done = &mut connection => return Err(ended(done)),
        locked = client.query_one("SELECT pg_try_advisory_lock($1)", &params) => {
            locked.map_err(engine)?.get::<_, bool>(0)
        }
    };
    if !locked {
        return Err(in_use(replica));
    }
    held.store(true, Ordering::SeqCst);
    match first.take() {
        Some(first) => {
            let _ = first.send(Ok(()));
        }
        None => {
            tracing::warn!(%replica, "replica lease taken again; audit records are stored again")
        }
    }
    loop {
        tokio::select! {
            done = &mut connection => return Err(ended(done)),
            () = tokio::time::sleep(HEARTBEAT) => {}
        }
        let beat = tokio::time::timeout(HEARTBEAT, client.simple_query("SELECT 1"));
        tokio::select! {
            done = &mut connection => return Err(ended(done)),
            beat = beat => match beat {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => return Err(engine(error)),
                Err(_) => {
                    return Err(StoreError::Engine(
                        "the replica lease connection did not answer".into(),
                    ))
                }
            },
        }
    }
}

/// After an insert that skipped some records (`inserted` are the numbers
/// it stored): each skipped one must be stored with exactly its bytes (a
/// retry); otherwise another writer holds the number, and the caller's
/// transaction must not commit.
pub(super) async fn check_skipped(
    tx: &tokio_postgres::Transaction<'_>,
    replica: &str,
    records: &[(u64, Vec<u8>)],
    inserted: &HashSet<i64>,
) -> Result<(), StoreError> {
    let skipped: Vec<i64> = records
        .iter()
        .map(|(seq, _)| *seq as i64)
        .filter(|seq| !inserted.contains(seq))
        .collect();
    let stored: HashMap<i64, Vec<u8>> = tx
        .query(
            "SELECT seq, record FROM tv_audit WHERE replica = $1 AND seq = ANY($2)",
            &[&replica, &skipped],
        )
        .await
        .map_err(engine)?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    for (seq, bytes) in records {
        let at = *seq as i64;
        if !inserted.contains(&at) && stored.get(&at) != Some(bytes) {
            return Err(StoreError::AuditConflict(*seq));
        }
    }
    Ok(())
}

/// Reading every replica's chain, for `tokenvault audit verify`.
impl super::PostgresStore {
    /// This process's replica name.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// The names of the chains in `tv_audit`, in order.
    pub async fn audit_chains(&self) -> Result<Vec<String>, StoreError> {
        let client = self.client().await?;
        Ok(client
            .query(
                "SELECT DISTINCT replica FROM tv_audit ORDER BY replica",
                &[],
            )
            .await
            .map_err(engine)?
            .iter()
            .map(|row| row.get(0))
            .collect())
    }

    /// Up to `limit` records of chain `replica` from `from_seq` on.
    pub async fn chain_records(
        &self,
        replica: &str,
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
                &[&replica, &from, &limit],
            )
            .await
            .map_err(engine)?;
        Ok(rows
            .iter()
            .map(|row| (row.get::<_, i64>(0) as u64, row.get(1)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_keys_differ_by_name_and_stay_fixed() {
        assert_ne!(lease_key("r1"), lease_key("r2"));
        assert_eq!(lease_key("r1"), lease_key("r1"));
        assert_ne!(lease_key(""), lease_key("\0"));
    }
}
