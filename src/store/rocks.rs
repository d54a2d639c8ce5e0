//! The embedded RocksDB store.
//!
//! Column families:
//!
//! | cf         | key                                 | value               |
//! |------------|-------------------------------------|---------------------|
//! | `meta`     | `system_key`, `kek_rotation`, `last_purge` | wrapped key, u32 BE, i64 BE |
//! | `meta`     | `ledger_applied/` ‖ seq (u64 BE)    | erasure-ledger entry's MAC (32) |
//! | `subjects` (key instance, `keys/`) | subject hash (32) | wrapped subject DEK |
//! | `tokens`   | token (UTF-8)                       | [`TokenRecord`]     |
//! | `index`    | subject hash (32) ‖ 0x01 ‖ MAC (32) | [`IndexEntry`]      |
//! | `index`    | subject hash (32) ‖ 0x02 ‖ token    | [`IndexEntry`]      |
//! | `tombstones` | keyed hash of an erased token (32) | erased_at i64 BE  |
//! | `audit`    | sequence number (u64 BE)            | audit record (JSON) |
//! | `meta`     | `rate/` ‖ counter key               | window counter (see `counters`) |
//!
//! A token costs two entries: its record, and one `index` entry under its
//! subject: the deterministic-index entry (tag 0x01) for a deterministic
//! token, a token-list entry (tag 0x02) for a random one. So every token of
//! a subject is listed in one key range, `index` from `subject ‖ 0x00`
//! (erasure and export scan it), without a third entry per token: memtable
//! inserts are most of the cost of storing a token.
//!
//! Writes go through one writer thread (group commit). RocksDB has no
//! conditional put; a single writer makes "check, then write" atomic without
//! locks, because only one process opens a RocksDB directory. The thread
//! takes every request waiting in its queue, checks each against the
//! database and the requests before it in the group, and writes all that
//! pass in one batch with one WAL sync, so concurrent callers share syncs
//! and each call costs two thread hand-offs however many wait. A token
//! batch passes only if each of its subjects' key in force (stored, or
//! staged earlier in the group) is the one its tokens were sealed under
//! (`sealed_under`), so no token is stored under a key a forget deleted.
//!
//! The wrapped subject keys live in a second RocksDB instance of their
//! own, under `keys/` (see `keys` for why and for the write order across
//! the two); everything else is in the vault instance.
//!
//! Erasure: forgetting a subject deletes its key, then its records and
//! index entries in one batch (a barrier in the writer's group, so no
//! token of the subject is staged around it) and leaves a tombstone per
//! token. The purgers (`purge`) then make the deletion physical: the key
//! at once, the rest by a full purge. Expired records go the same way: a
//! compaction filter drops them.
//!
//! Reads run on the caller's thread: point lookups served from memtables
//! and the block cache take microseconds, cheaper than a hand-off to a
//! blocking pool; on a cache miss they read one block from local disk.
//!
//! [`Store::purge`]: super::Store::purge

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rocksdb::{
    Cache, ColumnFamily, ColumnFamilyDescriptor, Options, ReadOptions, WriteOptions, DB,
};
use tokio::sync::oneshot;

use super::disk::DiskGuard;
use super::StoreError;
use crate::crypto::SubjectHash;
use crate::kek::WrappedKey;

mod audit;
mod backup;
mod counters;
mod keys;
mod purge;
mod schema;
mod store_impl;
#[cfg(test)]
mod tests;
mod writer;
pub use audit::{open_for_inspection, AuditReader};
pub use counters::RocksCounters;
use purge::{PurgeRequest, PurgeScope};
use schema::{
    family_options, subject_range, CF_INDEX, CF_SUBJECTS, CF_TOKENS, COLUMN_FAMILIES, KEYS_DIR,
    OLD_LAYOUT_FAMILY, TAG_DETERMINISTIC,
};
use writer::WriteRequest;

/// How long a purge waits for RocksDB to delete the files its compaction
/// made obsolete before it reports a failure.
const OBSOLETE_FILES_DEADLINE: Duration = Duration::from_secs(30);

/// Settings of the RocksDB store.
#[derive(Debug, Clone)]
pub struct RocksOptions {
    pub sync_writes: bool,
    pub block_cache_bytes: usize,
    /// Audit records are synced before `append_audit` returns (the audit
    /// log's `sync` durability). Off, they are written to the WAL without
    /// a sync and the audit log syncs on its own schedule through
    /// [`Store::sync_wal`].
    ///
    /// [`Store::sync_wal`]: super::Store::sync_wal
    pub sync_audit: bool,
}

#[cfg(test)]
impl RocksOptions {
    /// Unit tests: unsynced data writes, synced audit, a 1 MiB cache.
    pub(crate) fn for_tests() -> Self {
        RocksOptions {
            sync_writes: false,
            sync_audit: true,
            block_cache_bytes: 1 << 20,
        }
    }
}

/// Key counts per family, for operators and tests (a full scan: not for
/// the request path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreCounts {
    pub subjects: u64,
    pub tokens: u64,
    /// Deterministic-index entries (not the token-list entries).
    pub index_entries: u64,
}

pub struct RocksStore {
    inner: Arc<Inner>,
    /// Counters hold a weak reference (see `counters`), so dropping this
    /// closes the queue whoever else is alive.
    writer: Option<Arc<mpsc::Sender<WriteRequest>>>,
    writer_thread: Option<JoinHandle<()>>,
    /// Key purges; full purges have a thread of their own, so a forget
    /// never waits behind a full purge.
    key_purger: Option<mpsc::Sender<PurgeRequest>>,
    full_purger: Option<mpsc::Sender<PurgeRequest>>,
    purger_threads: Vec<JoinHandle<()>>,
}

struct Inner {
    /// The vault instance: tokens, index, tombstones, audit, meta.
    db: DB,
    path: PathBuf,
    /// The key instance: the wrapped subject keys (see `keys`).
    keys: DB,
    keys_path: PathBuf,
    write_options: WriteOptions,
    /// For groups that carry audit records when `sync_audit` is on: those
    /// are synced even when `sync_writes` is off.
    synced_write_options: WriteOptions,
    /// For audit records when `sync_audit` is off: written from the
    /// caller's thread, no sync, no hand-off to the writer thread.
    unsynced_write_options: WriteOptions,
    sync_audit: bool,
    /// Refuses writes that add tokens or subjects while the disk is full
    /// (see `store::disk`); None: every write goes to RocksDB.
    disk: Option<Arc<DiskGuard>>,
}

type KeyValue = (Box<[u8]>, Box<[u8]>);

impl RocksStore {
    pub fn open(path: &Path, options: &RocksOptions) -> Result<Self, StoreError> {
        Self::open_guarded(path, options, None)
    }

    /// [`RocksStore::open`] with a disk-space guard: while it reports the
    /// disk full, new tokens and subject keys are refused before RocksDB
    /// sees them (audit records, erasures and key rotation still go in).
    pub fn open_guarded(
        path: &Path,
        options: &RocksOptions,
        disk: Option<Arc<DiskGuard>>,
    ) -> Result<Self, StoreError> {
        let mut db_options = Options::default();
        db_options.create_if_missing(true);
        db_options.create_missing_column_families(true);
        db_options.increase_parallelism(2);
        db_options.set_max_background_jobs(2);

        if DB::list_cf(&db_options, path)
            .map(|families| families.iter().any(|f| f == OLD_LAYOUT_FAMILY))
            .unwrap_or(false)
        {
            return Err(StoreError::Engine(format!(
                "{} holds an earlier development layout of the store; it cannot be opened by this version",
                path.display()
            )));
        }
        // HyperClockCache: lookups take no shard mutex. A Detokenize of 100
        // random tokens looks up ~100 blocks; with the LRU cache those
        // lookups were ~7% of its CPU (perf). 0 = entry size estimated.
        let cache = Cache::new_hyper_clock_cache(options.block_cache_bytes, 0);
        // A store from before the key instance keeps `subjects` here until
        // `keys::move_keys_out` has moved them.
        let legacy_keys = DB::list_cf(&db_options, path)
            .map(|families| families.iter().any(|f| f == CF_SUBJECTS))
            .unwrap_or(false);
        let families = COLUMN_FAMILIES
            .iter()
            .chain(legacy_keys.then_some(&CF_SUBJECTS))
            .map(|name| ColumnFamilyDescriptor::new(*name, family_options(&cache, name)));
        let mut db = DB::open_cf_descriptors(&db_options, path, families).map_err(engine)?;
        let keys_path = path.join(KEYS_DIR);
        let keys = keys::open(&db_options, &keys_path, &cache)?;
        if legacy_keys {
            keys::move_keys_out(&mut db, path, &keys)?;
        }

        let mut write_options = WriteOptions::default();
        write_options.set_sync(options.sync_writes);
        let mut synced_write_options = WriteOptions::default();
        synced_write_options.set_sync(true);
        let mut unsynced_write_options = WriteOptions::default();
        unsynced_write_options.set_sync(false);
        let inner = Arc::new(Inner {
            db,
            path: path.to_path_buf(),
            keys,
            keys_path,
            write_options,
            synced_write_options,
            unsynced_write_options,
            sync_audit: options.sync_audit,
            disk,
        });
        let (writer, queue) = mpsc::channel();
        let writer_inner = Arc::clone(&inner);
        let writer_thread = spawn("tokenvault-writer", move || writer_inner.run_writer(queue))?;
        let (key_purger, key_purges) = mpsc::channel();
        let key_inner = Arc::clone(&inner);
        let key_thread = spawn("tokenvault-key-purger", move || {
            key_inner.run_purger(key_purges)
        })?;
        let (full_purger, full_purges) = mpsc::channel();
        let full_inner = Arc::clone(&inner);
        let full_thread = spawn("tokenvault-full-purger", move || {
            full_inner.run_purger(full_purges)
        })?;
        Ok(RocksStore {
            inner,
            writer: Some(Arc::new(writer)),
            writer_thread: Some(writer_thread),
            key_purger: Some(key_purger),
            full_purger: Some(full_purger),
            purger_threads: vec![key_thread, full_thread],
        })
    }

    /// Queues a purge for the purger thread and waits for it.
    async fn purge_scope(&self, scope: PurgeScope) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Engine("the purger thread has stopped".into());
        let purger = match &scope {
            PurgeScope::Keys(_) => self.key_purger.as_ref(),
            PurgeScope::Everything => self.full_purger.as_ref(),
        };
        let purger = purger.ok_or_else(stopped)?;
        purger
            .send(PurgeRequest { scope, reply })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// The live table files of a family (file names), for tests that
    /// check which files a purge rewrote.
    pub fn live_table_files(&self, family: &str) -> Result<HashSet<String>, StoreError> {
        if family == CF_SUBJECTS {
            self.inner.key_instance().live_tables_of(family)
        } else {
            self.inner.vault_instance().live_tables_of(family)
        }
    }

    /// Counts the keys of each family by scanning them.
    pub fn counts(&self) -> Result<StoreCounts, StoreError> {
        let count = |family, keep: fn(&[u8]) -> bool| -> Result<u64, StoreError> {
            let cf = self.inner.cf(family)?;
            let mut n = 0;
            let db = self.inner.db_of(family);
            for entry in db.iterator_cf(cf, rocksdb::IteratorMode::Start) {
                let (key, _) = entry.map_err(engine)?;
                n += u64::from(keep(&key));
            }
            Ok(n)
        };
        Ok(StoreCounts {
            subjects: count(CF_SUBJECTS, |_| true)?,
            tokens: count(CF_TOKENS, |_| true)?,
            index_entries: count(CF_INDEX, |key| key.get(32) == Some(&TAG_DETERMINISTIC))?,
        })
    }
}

impl Drop for RocksStore {
    fn drop(&mut self) {
        // Closing a queue ends its thread's loop once it has drained.
        self.writer.take();
        self.key_purger.take();
        self.full_purger.take();
        let threads = self.writer_thread.take().into_iter();
        for thread in threads.chain(self.purger_threads.drain(..)) {
            let _ = thread.join();
        }
    }
}

fn spawn(name: &str, run: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, StoreError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(run)
        .map_err(|e| StoreError::Engine(format!("cannot start the {name} thread: {e}")))
}

fn engine(error: rocksdb::Error) -> StoreError {
    StoreError::Engine(error.into_string())
}

impl Inner {
    /// The instance that holds `family`: only `subjects` is in the key
    /// instance.
    fn db_of(&self, family: &str) -> &DB {
        if family == CF_SUBJECTS {
            &self.keys
        } else {
            &self.db
        }
    }

    /// A family's handle, in the instance [`Inner::db_of`] names: use it
    /// with that instance only.
    fn cf(&self, name: &'static str) -> Result<&ColumnFamily, StoreError> {
        self.db_of(name)
            .cf_handle(name)
            .ok_or(StoreError::Engine(format!("column family {name} missing")))
    }

    fn get_many<K: AsRef<[u8]>, T>(
        &self,
        family: &'static str,
        keys: &[K],
        decode: impl Fn(&[u8]) -> Result<T, StoreError>,
    ) -> Result<Vec<Option<T>>, StoreError> {
        let cf = self.cf(family)?;
        self.db_of(family)
            .batched_multi_get_cf(cf, keys.iter().map(|k| k.as_ref()), false)
            .into_iter()
            .map(|slot| match slot.map_err(engine)? {
                Some(bytes) => decode(&bytes).map(Some),
                None => Ok(None),
            })
            .collect()
    }

    /// Up to `limit` `index` entries of a subject (key, value), from
    /// `from` (inclusive) or the start of its range.
    fn subject_entries(
        &self,
        subject: &SubjectHash,
        from: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        let (start, end) = subject_range(subject);
        let from = from
            .filter(|from| from.starts_with(subject.as_bytes()))
            .unwrap_or(&start);
        let mut options = ReadOptions::default();
        options.set_iterate_upper_bound(end);
        let mode = rocksdb::IteratorMode::From(from, rocksdb::Direction::Forward);
        self.db
            .iterator_cf_opt(self.cf(CF_INDEX)?, options, mode)
            .take(limit)
            .map(|entry| entry.map_err(engine))
            .collect()
    }

    fn subject_keys_after(
        &self,
        after: Option<SubjectHash>,
        limit: usize,
    ) -> Result<Vec<(SubjectHash, WrappedKey)>, StoreError> {
        let cf = self.cf(CF_SUBJECTS)?;
        let start = after.map(|subject| subject.0);
        let mode = match &start {
            Some(subject) => rocksdb::IteratorMode::From(subject, rocksdb::Direction::Forward),
            None => rocksdb::IteratorMode::Start,
        };
        let mut page = Vec::with_capacity(limit.min(1024));
        for entry in self.keys.iterator_cf(cf, mode) {
            let (key, value) = entry.map_err(engine)?;
            let subject = SubjectHash(
                key.as_ref()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("subject key"))?,
            );
            if Some(subject.0) == start {
                continue;
            }
            let wrapped =
                WrappedKey::decode(&value).map_err(|_| StoreError::Corrupt("subject key"))?;
            page.push((subject, wrapped));
            if page.len() >= limit {
                break;
            }
        }
        Ok(page)
    }
}
