//! Storage of the vault, in the vault's own terms: wrapped subject keys,
//! token records, deterministic-index entries and atomic token batches.
//!
//! The [`Store`] trait is all the service logic sees; RocksDB (`rocks`) is
//! the embedded default, and a shared PostgreSQL store for several replicas
//! slots in behind the same trait. This module owns the byte layout of
//! stored records (versioned, documented below) and never sees a plaintext
//! value or a subject id: values arrive sealed, subjects as keyed hashes.

pub mod counters;
pub mod disk;
/// The in-memory store: for tests, never for production.
#[cfg(any(test, feature = "testing"))]
pub mod memory;
pub mod postgres;
pub mod records;
pub mod rocks;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

use crate::crypto::{IndexKey, SubjectHash};
use crate::kek::WrappedKey;

/// Creates `dir` and its missing parents, mode 0700 (owner only): the data
/// directory holds the store, the audit file and, in dev, the key files.
/// An existing directory keeps its mode.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

pub use records::{IndexEntry, TokenRecord};

/// Errors of a store. Messages carry no stored data.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The storage engine failed (I/O, disk full, closed database).
    #[error("storage engine: {0}")]
    Engine(String),
    /// The data directory's free space is below `storage.disk_reserve_bytes`
    /// (`store::disk`): a write that adds data is refused before the engine
    /// sees it; reveals and erasures are still served.
    #[error("storage engine: {}: the data directory has less free space than storage.disk_reserve_bytes; new tokens are refused until space returns (reveals and erasures are still served)", disk::DISK_FULL)]
    DiskFull,
    /// A stored record does not decode: corruption or an unknown version.
    #[error("stored {0} record is corrupt or of an unknown version")]
    Corrupt(&'static str),
    /// The caller broke an interface rule (a bug, not bad user input).
    #[error("store misuse: {0}")]
    Misuse(&'static str),
    /// A token batch's subject has no key any more, or not the one its
    /// tokens were sealed under: a forget (and maybe a new key) on another
    /// replica, or a rewrap by a KEK rotation. Nothing was stored; a retry
    /// with the subject's key read again stores the batch.
    #[error("the subject was erased while its tokens were being stored")]
    SubjectErased,
    /// Another running process writes the audit chain this one would: two
    /// servers configured with one replica name.
    #[error("{0}")]
    ChainInUse(String),
    /// An audit record is already stored under this sequence number with
    /// other bytes: another writer of the same chain. Nothing was stored.
    #[error("audit record {0} is already stored with other contents (another server writes this audit chain)")]
    AuditConflict(u64),
    /// This store cannot do that; the message says what to use instead.
    #[error("not supported by this store: {0}")]
    Unsupported(&'static str),
}

/// The key a token batch says `subject`'s tokens were sealed under (the
/// `sealed_under` of `Store::insert_tokens`); a batch that names none for
/// one of its subjects is a caller's bug.
pub(crate) fn sealing_key_of<K: std::borrow::Borrow<WrappedKey>>(
    sealed_under: &[(SubjectHash, K)],
    subject: SubjectHash,
) -> Result<&WrappedKey, StoreError> {
    sealed_under
        .iter()
        .find(|(named, _)| *named == subject)
        .map(|(_, key)| key.borrow())
        .ok_or(StoreError::Misuse(
            "a token batch names no sealing key for one of its subjects",
        ))
}

/// What another process sharing the store asks of this one's DEK cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalidation {
    /// Drop this subject's cached key (it was forgotten).
    Subject(SubjectHash),
    /// Invalidations may be missed from now on: drop every cached key and
    /// cache none until [`Invalidation::Resume`].
    Suspend,
    /// Invalidations arrive again: drop every cached key (some may have
    /// been missed) and cache again.
    Resume,
}

/// Receives [`Invalidation`]s; called from the store's listener task.
pub type InvalidationSink = Arc<dyn Fn(Invalidation) + Send + Sync>;

/// A token to insert, with the deterministic-index entry that points to it
/// (None for random-mode tokens).
#[derive(Debug, Clone)]
pub struct NewToken {
    pub token: String,
    pub record: TokenRecord,
    pub index_key: Option<IndexKey>,
}

/// Why an insert was not committed, per batch item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conflict {
    /// The token already exists (a random collision): make another.
    TokenTaken { item: usize },
    /// Another call already stored a token for this deterministic value:
    /// use that one.
    IndexTaken { item: usize, existing: IndexEntry },
}

/// Hashes a token of a forgotten subject into the tombstone the store keeps
/// so the token answers ERASED (a keyed hash: the tombstone does not say
/// which tokens existed to someone without the vault's keys).
pub type TombstoneHasher = Arc<dyn Fn(&str) -> [u8; 32] + Send + Sync>;

/// One page of a subject's tokens, for export.
#[derive(Debug, Clone, Default)]
pub struct TokenPage {
    /// Tokens with their records; tokens whose record was purged (expired)
    /// are left out.
    pub tokens: Vec<(String, TokenRecord)>,
    /// Where the next page starts; None after the last page.
    pub next: Option<Vec<u8>>,
}

/// Forgets whose ciphertexts and index entries await a full purge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PendingPurges {
    pub count: u64,
    /// When the oldest of them was erased (unix seconds).
    pub oldest_erased_at: Option<i64>,
}

/// A backup the store made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupInfo {
    pub id: u32,
    pub timestamp_unix: i64,
    pub size_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertOutcome {
    /// Every item is stored and durable (per the sync setting).
    Committed,
    /// Nothing was stored.
    Conflicts(Vec<Conflict>),
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The wrapped system key, if the vault was initialised.
    async fn system_key(&self) -> Result<Option<WrappedKey>, StoreError>;

    /// Stores the system key unless one exists; returns the one in force.
    async fn init_system_key(&self, key: WrappedKey) -> Result<WrappedKey, StoreError>;

    /// The subjects' wrapped data keys, in order.
    async fn subject_keys(
        &self,
        subjects: &[SubjectHash],
    ) -> Result<Vec<Option<WrappedKey>>, StoreError>;

    /// Stores a subject's wrapped data key unless one exists (another call
    /// may have created it first); returns the one in force.
    async fn insert_subject_key(
        &self,
        subject: SubjectHash,
        key: WrappedKey,
    ) -> Result<WrappedKey, StoreError>;

    /// Deterministic-index entries, in order.
    async fn index_entries(&self, keys: &[IndexKey])
        -> Result<Vec<Option<IndexEntry>>, StoreError>;

    /// Token records, in order.
    async fn token_records(
        &self,
        tokens: &[String],
    ) -> Result<Vec<Option<TokenRecord>>, StoreError>;

    /// Up to `limit` stored subject keys in subject-hash order, starting
    /// after `after` (from the first when None): a resumable scan for KEK
    /// rotation and status.
    async fn subject_keys_after(
        &self,
        after: Option<SubjectHash>,
        limit: usize,
    ) -> Result<Vec<(SubjectHash, WrappedKey)>, StoreError>;

    /// Replaces a subject's wrapped key only if the stored one is still
    /// `expected`; true if replaced. A rotation must neither bring back a
    /// key that was deleted meanwhile nor undo another change.
    async fn replace_subject_key(
        &self,
        subject: SubjectHash,
        expected: &WrappedKey,
        new: WrappedKey,
    ) -> Result<bool, StoreError>;

    /// The same compare-and-replace for the system key.
    async fn replace_system_key(
        &self,
        expected: &WrappedKey,
        new: WrappedKey,
    ) -> Result<bool, StoreError>;

    /// The KEK version a rotation in progress moves keys to, if one is.
    async fn kek_rotation(&self) -> Result<Option<u32>, StoreError>;

    /// Records (Some) or clears (None) the rotation in progress, durably.
    async fn set_kek_rotation(&self, target: Option<u32>) -> Result<(), StoreError>;

    /// The erasure-ledger entries whose forgets this store holds, as
    /// (sequence number, the entry's MAC), in sequence order. They travel
    /// with the data (in a backup, a dump), so after a restore they say
    /// which entries the restored data lacks (see `vault::ledger`).
    async fn ledger_applied(&self) -> Result<Vec<(u64, [u8; 32])>, StoreError>;

    /// Records erasure-ledger entries as applied, durably. With `replace`,
    /// every entry recorded before is dropped first (a restore accepted
    /// without its ledger starts the record again).
    async fn mark_ledger_applied(
        &self,
        entries: Vec<(u64, [u8; 32])>,
        replace: bool,
    ) -> Result<(), StoreError>;

    /// Inserts all tokens atomically, or none. Tokens must be new and index
    /// keys unused (an entry expired before `now` counts as unused);
    /// otherwise nothing is stored and the conflicts are returned.
    ///
    /// `sealed_under` names, for every subject of the batch, the wrapped
    /// key its tokens were sealed under (a subject without one is
    /// [`StoreError::Misuse`]). Every store fails the batch with
    /// [`StoreError::SubjectErased`] unless each is still the subject's
    /// stored key: gone (a forget, here or on another process) or another
    /// one (a forget and a new key since the caller cached it, or a KEK
    /// rotation's rewrap, after which the caller reads the key again).
    async fn insert_tokens(
        &self,
        batch: Vec<NewToken>,
        sealed_under: &[(SubjectHash, &WrappedKey)],
        now: i64,
    ) -> Result<InsertOutcome, StoreError>;

    /// A page of at most `limit` of the subject's tokens, starting at
    /// `cursor` (a page's `next`; None for the first page).
    async fn subject_tokens(
        &self,
        subject: SubjectHash,
        cursor: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<TokenPage, StoreError>;

    /// Erases a subject atomically: its wrapped key, every token record and
    /// index entry under it; each token leaves a tombstone (`hasher`).
    /// Returns how many tokens were erased (0 when there was nothing).
    /// The data is logically gone at return; [`Store::purge_erased_keys`]
    /// makes the key physically gone, [`Store::purge`] the rest. A forget
    /// that erased something is listed in [`Store::pending_purges`].
    async fn forget_subject(
        &self,
        subject: SubjectHash,
        hasher: TombstoneHasher,
        now: i64,
    ) -> Result<u64, StoreError>;

    /// Which of these tombstones exist, in order.
    async fn tombstones(&self, hashes: &[[u8; 32]]) -> Result<Vec<bool>, StoreError>;

    /// Returns once nothing erased or expired before the call remains in
    /// any file the store keeps (flushes, compacts, waits for obsolete
    /// files to be deleted), and drops the forgets it served from
    /// [`Store::pending_purges`]. Its cost is the store's size. Concurrent
    /// calls share the work.
    async fn purge(&self) -> Result<(), StoreError>;

    /// Returns once no copy of this forgotten subject's wrapped key that the
    /// store keeps can be read back (RocksDB: no file under the data
    /// directory holds it). Its cost is the subject's, not the store's; the
    /// subject's ciphertexts and index entries wait for [`Store::purge`].
    /// Concurrent calls share the work.
    async fn purge_erased_keys(&self, subject: SubjectHash) -> Result<(), StoreError>;

    /// Whether [`Store::purge_erased_keys`] leaves no copy of the key in any
    /// file the store keeps (RocksDB), rather than only deleting it where
    /// the engine may keep old versions beyond the process's reach.
    fn erased_keys_leave_no_file(&self) -> bool {
        false
    }

    /// The forgets whose ciphertexts and index entries a [`Store::purge`]
    /// still has to remove physically (recorded by `forget_subject`).
    async fn pending_purges(&self) -> Result<PendingPurges, StoreError>;

    /// When this subject was erased, if a [`Store::purge`] still owes the
    /// physical removal of what that forget erased (the earliest such
    /// forget): a repeated forget must not promise more than holds.
    async fn purge_owed(&self, subject: SubjectHash) -> Result<Option<i64>, StoreError>;

    /// A consistent backup into `dir` while serving.
    async fn create_backup(&self, dir: &Path) -> Result<BackupInfo, StoreError>;

    /// Stops background work (flushes, compactions) and syncs what was
    /// written, at shutdown: the process may then exit while the store is
    /// still referenced, without the engine's threads running into its
    /// teardown.
    fn stop_background_work(&self) {}

    /// Registers where invalidations from other processes sharing this
    /// store go. A store only one process opens (RocksDB) has none.
    fn watch_invalidations(&self, _sink: InvalidationSink) {}

    // --- audit log (src/audit): records are opaque bytes to the store ---

    /// Makes this process the only writer of its audit chain, for as long
    /// as it runs: the audit log calls it before it reads the chain's
    /// head. A store that one process opens at a time (RocksDB's lock)
    /// needs nothing more; a shared store refuses a second process with
    /// the same chain ([`StoreError::ChainInUse`]).
    async fn claim_audit_chain(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// The name of this process's audit chain, which its checkpoints name:
    /// the replica name on a shared store, empty otherwise.
    fn audit_chain_name(&self) -> String {
        String::new()
    }

    /// Stores audit records (sequence number, encoded record) atomically,
    /// synced or written as the store was opened to (`sync_audit` for
    /// RocksDB). The audit log is the only writer; it may store a record
    /// again with the same bytes (a retry). A shared store refuses a
    /// record whose number it holds with other bytes
    /// ([`StoreError::AuditConflict`]) and stores none of the batch.
    async fn append_audit(&self, records: Vec<(u64, Vec<u8>)>) -> Result<(), StoreError>;

    /// Makes every write acknowledged so far durable (the audit log's
    /// periodic sync when its records are written unsynced). Blocking: it
    /// is called from the audit log's sync thread. The default suits a
    /// store whose acknowledged writes are already durable.
    fn sync_wal(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Up to `limit` audit records from sequence number `from_seq` on, in
    /// sequence order.
    async fn audit_records(
        &self,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;

    /// The audit record with the highest sequence number, if any.
    async fn last_audit_record(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError>;

    /// Engine figures for the metrics endpoint, read when it is scraped:
    /// (name, value) pairs with names from a fixed set (they become metric
    /// names `tokenvault_store_<name>`). Cheap, never blocks on I/O; a
    /// store without such figures returns none.
    fn stats(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

#[cfg(test)]
pub(crate) mod conformance;
