//! The embedded RocksDB store.
//!
//! Column families:
//!
//! | cf         | key                                 | value               |
//! |------------|-------------------------------------|---------------------|
//! | `meta`     | `system_key`, `kek_rotation`, `last_purge` | wrapped key, u32 BE, i64 BE |
//! | `meta`     | `ledger_applied/` ‖ seq (u64 BE)    | erasure-ledger entry's MAC (32) |
//! | `subjects` | subject hash (32)                   | wrapped subject DEK |
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
//! Erasure: forgetting a subject deletes its key, records and index
//! entries in one batch (a barrier in the writer's group, so no token of
//! the subject is staged around it) and leaves a tombstone per token.
//! [`Store::purge`] then makes the deletion physical: flush every
//! memtable (so the WAL that held the values becomes obsolete), compact
//! the families that held them down to the last level, and wait until
//! RocksDB has deleted every file that is no longer live. Expired records
//! go the same way: a compaction filter drops them.
//!
//! Reads run on the caller's thread: point lookups served from memtables
//! and the block cache take microseconds, cheaper than a hand-off to a
//! blocking pool; on a cache miss they read one block from local disk.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use rocksdb::backup::{BackupEngine, BackupEngineOptions, RestoreOptions};
use rocksdb::compaction_filter::Decision;
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, Env,
    FlushOptions, Options, ReadOptions, WriteBatch, WriteOptions, DB,
};
use tokio::sync::oneshot;

use super::disk::DiskGuard;
use super::records::{index_entry_expired, token_record_expired};
use super::{
    BackupInfo, Conflict, IndexEntry, InsertOutcome, NewToken, PendingPurges, Store, StoreError,
    TokenPage, TokenRecord, TombstoneHasher,
};
use crate::crypto::{IndexKey, SubjectHash};
use crate::kek::WrappedKey;

mod counters;
mod purge;
pub use counters::RocksCounters;
use purge::{PurgeRequest, PurgeScope};

const CF_META: &str = "meta";
const CF_SUBJECTS: &str = "subjects";
const CF_TOKENS: &str = "tokens";
const CF_INDEX: &str = "index";
const CF_TOMBSTONES: &str = "tombstones";
/// Audit records by big-endian sequence number, so key order is
/// sequence order (see `crate::audit`).
const CF_AUDIT: &str = "audit";
const COLUMN_FAMILIES: [&str; 6] = [
    CF_META,
    CF_SUBJECTS,
    CF_TOKENS,
    CF_INDEX,
    CF_TOMBSTONES,
    CF_AUDIT,
];
/// The families that hold data a purge must remove physically.
const PURGED_FAMILIES: [&str; 3] = [CF_SUBJECTS, CF_TOKENS, CF_INDEX];
/// A family of an earlier development layout (three entries per token).
const OLD_LAYOUT_FAMILY: &str = "subject_tokens";

/// `index` key tags after the subject hash.
const TAG_DETERMINISTIC: u8 = 0x01;
const TAG_TOKEN_LIST: u8 = 0x02;

/// The `index` key of a deterministic-index entry: subject ‖ 0x01 ‖ MAC.
fn deterministic_key(key: &IndexKey) -> [u8; 65] {
    let mut out = [0u8; 65];
    out[..32].copy_from_slice(&key.0[..32]);
    out[32] = TAG_DETERMINISTIC;
    out[33..].copy_from_slice(&key.0[32..]);
    out
}

/// The `index` key that lists a random-mode token under its subject.
fn token_list_key(subject: &SubjectHash, token: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(33 + token.len());
    out.extend_from_slice(subject.as_bytes());
    out.push(TAG_TOKEN_LIST);
    out.extend_from_slice(token.as_bytes());
    out
}

const SYSTEM_KEY: &[u8] = b"system_key";
/// The KEK version a rotation in progress moves keys to (u32 BE).
const KEK_ROTATION: &[u8] = b"kek_rotation";
/// When the last purge started (i64 BE unix seconds).
const LAST_PURGE: &[u8] = b"last_purge";
/// Applied erasure-ledger entries: this, then the sequence number (u64
/// BE), to the entry's MAC; up to (not including) the end key.
const LEDGER_APPLIED: &[u8] = b"ledger_applied/";
const LEDGER_APPLIED_END: &[u8] = b"ledger_applied0";

fn ledger_mark_key(seq: u64) -> Vec<u8> {
    let mut key = LEDGER_APPLIED.to_vec();
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// Memtable size per column family (RocksDB's default is 64 MiB).
const WRITE_BUFFER_BYTES: usize = 16 << 20;

/// Data block size of the `tokens` family (RocksDB's default is 4 KiB).
/// Tokens are random, so each token of a Detokenize batch is found in a
/// block of its own, and most of a lookup's CPU is spent searching that
/// one block through cache misses: its restart points, then the entries
/// after the nearest one. A 1 KiB block holds about 8 records of ~120
/// bytes, so that search is short. Measured with `tokenvault bench`,
/// batch 100, c=16: server CPU per Detokenize 0.46 → 0.40 ms (4 KiB →
/// 1 KiB), new-value Tokenize unchanged. 512 bytes saved a little more
/// but cost new-value Tokenize ~9% at flush time. The price is an index
/// four times larger: ~2.9 bytes per token instead of ~0.7 (table
/// properties of flushed files), held in the block cache with the
/// filters (1.25 bytes per key), so 10 million tokens keep ~29 MiB of
/// it there.
const TOKENS_BLOCK_BYTES: usize = 1 << 10;

/// Table file size of the `subjects` family (RocksDB's default is 64 MiB).
const SUBJECTS_FILE_BYTES: u64 = 2 << 20;

/// Most requests committed in one write group.
const MAX_GROUP: usize = 256;

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
    purger: Option<mpsc::Sender<PurgeRequest>>,
    purger_thread: Option<JoinHandle<()>>,
}

struct Inner {
    db: DB,
    path: PathBuf,
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

/// A write for the writer thread, with where to send its outcome.
enum WriteRequest {
    Tokens {
        batch: Vec<NewToken>,
        /// The wrapped key each subject's tokens were sealed under.
        sealed_under: Vec<(SubjectHash, WrappedKey)>,
        now: i64,
        reply: oneshot::Sender<Result<InsertOutcome, StoreError>>,
    },
    KeyIfAbsent {
        family: &'static str,
        key: Vec<u8>,
        wrapped: WrappedKey,
        reply: oneshot::Sender<Result<WrappedKey, StoreError>>,
    },
    ReplaceKey {
        family: &'static str,
        key: Vec<u8>,
        expected: WrappedKey,
        new: WrappedKey,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    PutMeta {
        key: &'static [u8],
        value: Option<Vec<u8>>,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Forget {
        subject: SubjectHash,
        hasher: TombstoneHasher,
        now: i64,
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
    Audit {
        records: Vec<(u64, Vec<u8>)>,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    LedgerMarks {
        entries: Vec<(u64, [u8; 32])>,
        replace: bool,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Window-counter merges (`counters`): nobody waits for them; they are
    /// written with the group, so with the token batch sent after them.
    Counters { merges: Vec<(Vec<u8>, Vec<u8>)> },
}

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
        let families = COLUMN_FAMILIES
            .map(|name| ColumnFamilyDescriptor::new(name, family_options(&cache, name)));
        let db = DB::open_cf_descriptors(&db_options, path, families).map_err(engine)?;

        let mut write_options = WriteOptions::default();
        write_options.set_sync(options.sync_writes);
        let mut synced_write_options = WriteOptions::default();
        synced_write_options.set_sync(true);
        let mut unsynced_write_options = WriteOptions::default();
        unsynced_write_options.set_sync(false);
        let inner = Arc::new(Inner {
            db,
            path: path.to_path_buf(),
            write_options,
            synced_write_options,
            unsynced_write_options,
            sync_audit: options.sync_audit,
            disk,
        });
        let (writer, queue) = mpsc::channel();
        let writer_inner = Arc::clone(&inner);
        let writer_thread = spawn("tokenvault-writer", move || writer_inner.run_writer(queue))?;
        let (purger, purges) = mpsc::channel();
        let purger_inner = Arc::clone(&inner);
        let purger_thread = spawn("tokenvault-purger", move || purger_inner.run_purger(purges))?;
        Ok(RocksStore {
            inner,
            writer: Some(Arc::new(writer)),
            writer_thread: Some(writer_thread),
            purger: Some(purger),
            purger_thread: Some(purger_thread),
        })
    }

    /// Replaces the database in `db_dir` with the latest backup in
    /// `backup_dir`. The database must not be open (the caller checks that
    /// no server holds it): RocksDB's restore overwrites its files.
    pub fn restore_latest_backup(
        backup_dir: &Path,
        db_dir: &Path,
    ) -> Result<BackupInfo, StoreError> {
        let mut backups = open_backup_engine(backup_dir)?;
        let info = latest_backup(&backups)?;
        backups
            .restore_from_latest_backup(db_dir, db_dir, &RestoreOptions::default())
            .map_err(engine)?;
        Ok(info)
    }

    /// Queues a purge for the purger thread and waits for it.
    async fn purge_scope(&self, scope: PurgeScope) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Engine("the purger thread has stopped".into());
        let purger = self.purger.as_ref().ok_or_else(stopped)?;
        purger
            .send(PurgeRequest { scope, reply })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// The live table files of a family (file names), for tests that
    /// check which files a purge rewrote.
    pub fn live_table_files(&self, family: &str) -> Result<HashSet<String>, StoreError> {
        self.inner.live_tables_of(family)
    }

    /// Counts the keys of each family by scanning them.
    pub fn counts(&self) -> Result<StoreCounts, StoreError> {
        let count = |family, keep: fn(&[u8]) -> bool| -> Result<u64, StoreError> {
            let cf = self.inner.cf(family)?;
            let mut n = 0;
            for entry in self.inner.db.iterator_cf(cf, rocksdb::IteratorMode::Start) {
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

    /// Queues a write and waits for the writer thread's answer.
    async fn write<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> WriteRequest,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Engine("the writer thread has stopped".into());
        let writer = self.writer.as_ref().ok_or_else(stopped)?;
        writer.send(make(reply)).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

impl Drop for RocksStore {
    fn drop(&mut self) {
        // Closing a queue ends its thread's loop once it has drained.
        self.writer.take();
        self.purger.take();
        for thread in [self.writer_thread.take(), self.purger_thread.take()]
            .into_iter()
            .flatten()
        {
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

fn open_backup_engine(dir: &Path) -> Result<BackupEngine, StoreError> {
    let options = BackupEngineOptions::new(dir).map_err(engine)?;
    let env = Env::new().map_err(engine)?;
    BackupEngine::open(&options, &env).map_err(engine)
}

fn latest_backup(engine: &BackupEngine) -> Result<BackupInfo, StoreError> {
    engine
        .get_backup_info()
        .into_iter()
        .max_by_key(|info| info.backup_id)
        .map(|info| BackupInfo {
            id: info.backup_id,
            timestamp_unix: info.timestamp,
            size_bytes: info.size,
        })
        .ok_or_else(|| StoreError::Engine("the backup directory holds no backup".into()))
}

fn family_options(cache: &Cache, family: &str) -> Options {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    // Nearly every read is a point lookup of a key that may not exist.
    table.set_bloom_filter(10.0, false);
    table.set_cache_index_and_filter_blocks(true);
    if family == CF_TOKENS {
        table.set_block_size(TOKENS_BLOCK_BYTES);
    }
    let mut options = Options::default();
    if family == CF_SUBJECTS {
        // A forget compacts one key of this family (see `purge`), which
        // rewrites the file that holds it on each level: small files keep
        // that cheap. The family is small (a wrapped key per subject).
        options.set_target_file_size_base(SUBJECTS_FILE_BYTES);
    }
    options.set_block_based_table_factory(&table);
    // New tokens are checked for existence before they are written, so most
    // lookups miss; a memtable bloom filter answers those without walking
    // the skiplist.
    options.set_memtable_whole_key_filtering(true);
    options.set_memtable_prefix_bloom_ratio(0.1);
    // Keys are random, so each memtable insert walks the skiplist through
    // cache misses; a smaller memtable is a shallower walk. Flushing more
    // often costs less than it saves (measured with benches/e2e.sh).
    options.set_write_buffer_size(WRITE_BUFFER_BYTES);
    // Room for full memtables to wait for their flush without stalling
    // writes when the two cores are busy.
    options.set_max_write_buffer_number(4);
    options.set_compression_type(match family {
        // Records are mostly hex hashes, which LZ4 barely shrinks (it finds
        // repeats, and random hex has few: 2.6% on records of 100 tokens,
        // `lz4` on a sample) but still spends CPU on at every flush and
        // compaction.
        CF_AUDIT => DBCompressionType::None,
        _ => DBCompressionType::Lz4,
    });
    // Retention: every compaction drops records whose ttl has passed, so
    // expired values leave the disk without a scan on the request path.
    match family {
        CF_TOKENS => options.set_compaction_filter("tokenvault-expired-tokens", |_, _, value| {
            drop_if(token_record_expired(value, crate::clock::unix_now()))
        }),
        CF_INDEX => options.set_compaction_filter("tokenvault-expired-index", |_, _, value| {
            drop_if(index_entry_expired(value, crate::clock::unix_now()))
        }),
        CF_META => {
            options.set_compaction_filter("tokenvault-expired-counters", |_, key, value| {
                drop_if(counters::expired(key, value, crate::clock::unix_now()))
            });
            options.set_merge_operator_associative("tokenvault-counter-max", counters::merge_max);
        }
        _ => {}
    }
    options
}

fn drop_if(expired: bool) -> Decision {
    if expired {
        Decision::Remove
    } else {
        Decision::Keep
    }
}

/// The `index` key range that holds every entry of a subject.
fn subject_range(subject: &SubjectHash) -> (Vec<u8>, Vec<u8>) {
    let mut start = subject.as_bytes().to_vec();
    let mut end = start.clone();
    start.push(0x00);
    end.push(0xFF);
    (start, end)
}

fn engine(error: rocksdb::Error) -> StoreError {
    StoreError::Engine(error.into_string())
}

impl Inner {
    fn cf(&self, name: &'static str) -> Result<&ColumnFamily, StoreError> {
        self.db
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
        self.db
            .batched_multi_get_cf(cf, keys.iter().map(|k| k.as_ref()), false)
            .into_iter()
            .map(|slot| match slot.map_err(engine)? {
                Some(bytes) => decode(&bytes).map(Some),
                None => Ok(None),
            })
            .collect()
    }

    /// The writer loop: takes every queued request, commits them as one
    /// group, answers each. Ends when the store is dropped.
    fn run_writer(&self, queue: mpsc::Receiver<WriteRequest>) {
        while let Ok(first) = queue.recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match queue.try_recv() {
                    Ok(next) => group.push(next),
                    Err(_) => break,
                }
            }
            self.commit_group(group);
        }
    }

    fn commit_group(&self, group: Vec<WriteRequest>) {
        // Checked once per group, and only for groups that add data.
        let adds_data = group.iter().any(|request| {
            matches!(
                request,
                WriteRequest::Tokens { .. } | WriteRequest::KeyIfAbsent { .. }
            )
        });
        let disk_full = match (&self.disk, adds_data) {
            (Some(disk), true) => disk.admit().err(),
            _ => None,
        };
        let mut state = GroupState::default();
        let mut waiting = Vec::with_capacity(group.len());
        for request in group {
            let request = match (&disk_full, request) {
                (Some(full), WriteRequest::Tokens { reply, .. }) => {
                    let _ = reply.send(Err(full.clone()));
                    continue;
                }
                (Some(full), WriteRequest::KeyIfAbsent { reply, .. }) => {
                    let _ = reply.send(Err(full.clone()));
                    continue;
                }
                (_, request) => request,
            };
            match request {
                WriteRequest::Forget {
                    subject,
                    hasher,
                    now,
                    reply,
                } => {
                    // A barrier: what the group staged before lands first,
                    // so the forget sees (and erases) it.
                    self.commit(std::mem::take(&mut state), std::mem::take(&mut waiting));
                    let _ = reply.send(self.forget(&subject, &hasher, now));
                }
                WriteRequest::Tokens {
                    batch,
                    sealed_under,
                    now,
                    reply,
                } => match self.stage_tokens(&mut state, batch, &sealed_under, now) {
                    Ok(None) => waiting.push(Answer::Committed(reply)),
                    other => {
                        let _ = reply
                            .send(other.map(|c| InsertOutcome::Conflicts(c.unwrap_or_default())));
                    }
                },
                WriteRequest::KeyIfAbsent {
                    family,
                    key,
                    wrapped,
                    reply,
                } => match self.stage_key(&mut state, family, key, wrapped) {
                    Ok(KeyStaged::Existing(existing)) => {
                        let _ = reply.send(Ok(existing));
                    }
                    Ok(KeyStaged::InThisGroup(in_force)) => {
                        waiting.push(Answer::Key(reply, in_force))
                    }
                    Err(error) => {
                        let _ = reply.send(Err(error));
                    }
                },
                WriteRequest::ReplaceKey {
                    family,
                    key,
                    expected,
                    new,
                    reply,
                } => match self.stage_replace(&mut state, family, key, &expected, new) {
                    Ok(true) => waiting.push(Answer::Replaced(reply)),
                    other => {
                        let _ = reply.send(other);
                    }
                },
                WriteRequest::PutMeta { key, value, reply } => match self.cf(CF_META) {
                    Ok(cf) => {
                        match value {
                            Some(value) => state.batch.put_cf(cf, key, value),
                            None => state.batch.delete_cf(cf, key),
                        }
                        waiting.push(Answer::Done(reply));
                    }
                    Err(error) => {
                        let _ = reply.send(Err(error));
                    }
                },
                WriteRequest::LedgerMarks {
                    entries,
                    replace,
                    reply,
                } => match self.cf(CF_META) {
                    Ok(cf) => {
                        if replace {
                            state
                                .batch
                                .delete_range_cf(cf, LEDGER_APPLIED, LEDGER_APPLIED_END);
                        }
                        for (seq, mac) in entries {
                            state.batch.put_cf(cf, ledger_mark_key(seq), mac);
                        }
                        waiting.push(Answer::Done(reply));
                    }
                    Err(error) => {
                        let _ = reply.send(Err(error));
                    }
                },
                WriteRequest::Counters { merges } => match self.cf(CF_META) {
                    Ok(cf) => {
                        for (key, value) in merges {
                            state.batch.merge_cf(cf, key, value);
                        }
                        state.unanswered_writes = true;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "window counters not stored; a restart may refill them")
                    }
                },
                WriteRequest::Audit { records, reply } => match self.cf(CF_AUDIT) {
                    Ok(cf) => {
                        for (seq, record) in records {
                            state.batch.put_cf(cf, seq.to_be_bytes(), record);
                        }
                        state.carries_audit = true;
                        waiting.push(Answer::Done(reply));
                    }
                    Err(error) => {
                        let _ = reply.send(Err(error));
                    }
                },
            }
        }
        self.commit(state, waiting);
    }

    /// Writes what a group staged and answers its waiting requests.
    fn commit(&self, mut state: GroupState, waiting: Vec<Answer>) {
        if waiting.is_empty() && !state.unanswered_writes {
            return;
        }
        let write_options = if state.carries_audit {
            &self.synced_write_options
        } else {
            &self.write_options
        };
        let written = self.token_puts_in_key_order(&mut state).and_then(|()| {
            self.db
                .write_opt(state.batch, write_options)
                .map_err(engine)
        });
        for answer in waiting {
            answer.send(written.clone());
        }
    }

    /// Deletes a subject's key, tokens and index entries in one batch and
    /// leaves a tombstone per token. Runs on the writer thread, so no
    /// insert interleaves with it.
    fn forget(
        &self,
        subject: &SubjectHash,
        hasher: &TombstoneHasher,
        now: i64,
    ) -> Result<u64, StoreError> {
        let (index, tokens, subjects, tombstones) = (
            self.cf(CF_INDEX)?,
            self.cf(CF_TOKENS)?,
            self.cf(CF_SUBJECTS)?,
            self.cf(CF_TOMBSTONES)?,
        );
        let mut batch = WriteBatch::default();
        let mut erased = 0u64;
        for (key, value) in self.subject_entries(subject, None, usize::MAX)? {
            let entry = IndexEntry::decode(&value)?;
            batch.delete_cf(index, &key);
            batch.delete_cf(tokens, entry.token.as_bytes());
            batch.put_cf(tombstones, hasher(&entry.token), now.to_be_bytes());
            erased += 1;
        }
        let had_key = self
            .db
            .get_pinned_cf(subjects, subject.as_bytes())
            .map_err(engine)?
            .is_some();
        if erased == 0 && !had_key {
            return Ok(0);
        }
        batch.delete_cf(subjects, subject.as_bytes());
        batch.put_cf(self.cf(CF_META)?, purge::pending_key(now, subject), []);
        self.db
            .write_opt(batch, &self.write_options)
            .map_err(engine)?;
        Ok(erased)
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

    fn create_backup(&self, dir: &Path) -> Result<BackupInfo, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Engine(format!("cannot create the backup directory: {e}")))?;
        let mut backups = open_backup_engine(dir)?;
        backups
            .create_new_backup_flush(&self.db, true)
            .map_err(engine)?;
        latest_backup(&backups)
    }

    /// Adds a token batch to the group unless it conflicts with the
    /// database or an earlier request of the group; returns its conflicts.
    /// A batch whose sealing key is not its subject's key in force (stored
    /// or staged in this group) is `SubjectErased`, as on PostgreSQL.
    fn stage_tokens(
        &self,
        state: &mut GroupState,
        batch: Vec<NewToken>,
        sealed_under: &[(SubjectHash, WrappedKey)],
        now: i64,
    ) -> Result<Option<Vec<Conflict>>, StoreError> {
        self.check_sealing_keys(state, &batch, sealed_under)?;
        let conflicts = self.conflicts_of(state, &batch, now)?;
        if !conflicts.is_empty() {
            return Ok(Some(conflicts));
        }
        // Everything that can fail happens before the first put: a request
        // that errors must leave nothing in the group's batch.
        let records = batch
            .iter()
            .map(|item| item.record.encode())
            .collect::<Result<Vec<_>, _>>()?;
        for (item, record) in batch.into_iter().zip(records) {
            state
                .token_puts
                .push((item.token.as_bytes().to_vec(), record));
            let entry = IndexEntry {
                token: item.token.clone(),
                expires_at: item.record.expires_at,
            };
            match item.index_key {
                Some(index_key) => {
                    state
                        .index_puts
                        .push((deterministic_key(&index_key).to_vec(), entry.encode()));
                    state.index.insert(index_key, entry);
                }
                None => state.index_puts.push((
                    token_list_key(&item.record.subject, &item.token),
                    entry.encode(),
                )),
            }
            state.tokens.insert(item.token);
        }
        Ok(None)
    }

    /// Every subject of the batch still has the key its tokens were sealed
    /// under. The writer thread runs forgets between groups' requests (a
    /// barrier), so a forget that committed before is seen here.
    fn check_sealing_keys(
        &self,
        state: &GroupState,
        batch: &[NewToken],
        sealed_under: &[(SubjectHash, WrappedKey)],
    ) -> Result<(), StoreError> {
        let subjects: HashSet<SubjectHash> = batch.iter().map(|item| item.record.subject).collect();
        for subject in subjects {
            let (_, named) = sealed_under
                .iter()
                .find(|(named, _)| *named == subject)
                .ok_or(StoreError::Misuse(
                    "a token batch names no sealing key for one of its subjects",
                ))?;
            if self
                .current_key(state, CF_SUBJECTS, subject.as_bytes())?
                .as_ref()
                != Some(named)
            {
                return Err(StoreError::SubjectErased);
            }
        }
        Ok(())
    }

    /// Moves the group's token and index entries into its batch, sorted by
    /// key within each family. The memtable's skiplist inserts each entry
    /// starting from where the previous one went, so entries in key order
    /// cost a short walk instead of a search from the top: this is most of
    /// the cost of storing new tokens (measured with perf).
    fn token_puts_in_key_order(&self, state: &mut GroupState) -> Result<(), StoreError> {
        for (family, puts) in [
            (CF_TOKENS, &mut state.token_puts),
            (CF_INDEX, &mut state.index_puts),
        ] {
            if puts.is_empty() {
                continue;
            }
            let cf = self.cf(family)?;
            puts.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            for (key, value) in puts.drain(..) {
                state.batch.put_cf(cf, key, value);
            }
        }
        Ok(())
    }

    /// Existing tokens, and live index entries, that the batch would
    /// overwrite: in the database, in the group so far, or earlier in the
    /// batch itself.
    fn conflicts_of(
        &self,
        state: &GroupState,
        batch: &[NewToken],
        now: i64,
    ) -> Result<Vec<Conflict>, StoreError> {
        let tokens: Vec<&[u8]> = batch.iter().map(|item| item.token.as_bytes()).collect();
        let stored_tokens = self.get_many(CF_TOKENS, &tokens, |_| Ok(()))?;
        let mut seen = HashSet::with_capacity(batch.len());
        let mut conflicts = Vec::new();
        for (item, (new, stored)) in batch.iter().zip(stored_tokens).enumerate() {
            let taken = stored.is_some()
                || state.tokens.contains(&new.token)
                || !seen.insert(new.token.as_str());
            if taken {
                conflicts.push(Conflict::TokenTaken { item });
            }
        }

        let indexed: Vec<(usize, &IndexKey)> = batch
            .iter()
            .enumerate()
            .filter_map(|(i, item)| item.index_key.as_ref().map(|key| (i, key)))
            .collect();
        if indexed
            .iter()
            .map(|(_, key)| *key)
            .collect::<HashSet<_>>()
            .len()
            != indexed.len()
        {
            return Err(StoreError::Misuse("one index key twice in a batch"));
        }
        let keys: Vec<[u8; 65]> = indexed
            .iter()
            .map(|(_, key)| deterministic_key(key))
            .collect();
        let stored = self.get_many(CF_INDEX, &keys, IndexEntry::decode)?;
        for ((item, key), entry) in indexed.into_iter().zip(stored) {
            let in_group = state.index.get(key).cloned();
            if let Some(existing) = in_group.or(entry).filter(|entry| !entry.is_expired(now)) {
                conflicts.push(Conflict::IndexTaken { item, existing });
            }
        }
        Ok(conflicts)
    }

    /// Adds a key to the group unless one is stored or staged already.
    fn stage_key(
        &self,
        state: &mut GroupState,
        family: &'static str,
        key: Vec<u8>,
        wrapped: WrappedKey,
    ) -> Result<KeyStaged, StoreError> {
        let staged_key = (family, key);
        if let Some(in_group) = state.keys.get(&staged_key) {
            return Ok(KeyStaged::InThisGroup(in_group.clone()));
        }
        let cf = self.cf(family)?;
        if let Some(existing) = self.db.get_pinned_cf(cf, &staged_key.1).map_err(engine)? {
            let existing =
                WrappedKey::decode(&existing).map_err(|_| StoreError::Corrupt("wrapped key"))?;
            return Ok(KeyStaged::Existing(existing));
        }
        state.batch.put_cf(cf, &staged_key.1, wrapped.encode());
        state.keys.insert(staged_key, wrapped.clone());
        Ok(KeyStaged::InThisGroup(wrapped))
    }
}

impl Inner {
    /// The wrapped key in force for `key`: staged in this group, or stored.
    fn current_key(
        &self,
        state: &GroupState,
        family: &'static str,
        key: &[u8],
    ) -> Result<Option<WrappedKey>, StoreError> {
        if let Some(staged) = state.keys.get(&(family, key.to_vec())) {
            return Ok(Some(staged.clone()));
        }
        let cf = self.cf(family)?;
        match self.db.get_pinned_cf(cf, key).map_err(engine)? {
            Some(bytes) => WrappedKey::decode(&bytes)
                .map(Some)
                .map_err(|_| StoreError::Corrupt("wrapped key")),
            None => Ok(None),
        }
    }

    /// Stages `new` if the key in force is `expected`; false otherwise.
    fn stage_replace(
        &self,
        state: &mut GroupState,
        family: &'static str,
        key: Vec<u8>,
        expected: &WrappedKey,
        new: WrappedKey,
    ) -> Result<bool, StoreError> {
        if self.current_key(state, family, &key)?.as_ref() != Some(expected) {
            return Ok(false);
        }
        let cf = self.cf(family)?;
        state.batch.put_cf(cf, &key, new.encode());
        state.keys.insert((family, key), new);
        Ok(true)
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
        for entry in self.db.iterator_cf(cf, mode) {
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

impl Inner {
    fn audit_records(
        &self,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        audit_scan(&self.db, self.cf(CF_AUDIT)?, from_seq, limit)
    }

    fn last_audit_record(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let cf = self.cf(CF_AUDIT)?;
        match self.db.iterator_cf(cf, rocksdb::IteratorMode::End).next() {
            Some(entry) => {
                let (key, value) = entry.map_err(engine)?;
                Ok(Some((audit_seq(&key)?, value.to_vec())))
            }
            None => Ok(None),
        }
    }
}

/// Up to `limit` audit records from `from_seq` on.
fn audit_scan(
    db: &DB,
    cf: &ColumnFamily,
    from_seq: u64,
    limit: usize,
) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
    let start = from_seq.to_be_bytes();
    let mode = rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward);
    let mut page = Vec::with_capacity(limit.min(1024));
    for entry in db.iterator_cf(cf, mode).take(limit) {
        let (key, value) = entry.map_err(engine)?;
        page.push((audit_seq(&key)?, value.to_vec()));
    }
    Ok(page)
}

fn audit_seq(key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| StoreError::Corrupt("audit key"))?;
    Ok(u64::from_be_bytes(bytes))
}

/// Opens a stopped (or, read-only, a running) store's database with every
/// column family it has and the options this store gives them, for tools
/// and tests that read the files directly. The options matter: `meta`
/// holds merge records (the window counters), and a WAL with merges does
/// not replay without the family's merge operator.
pub fn open_for_inspection(path: &Path, read_only: bool) -> Result<DB, StoreError> {
    let db_options = Options::default();
    let names = DB::list_cf(&db_options, path).map_err(engine)?;
    let cache = Cache::new_lru_cache(1 << 20);
    let families = names
        .iter()
        .map(|name| ColumnFamilyDescriptor::new(name, family_options(&cache, name)));
    if read_only {
        DB::open_cf_descriptors_read_only(&db_options, path, families, false).map_err(engine)
    } else {
        DB::open_cf_descriptors(&db_options, path, families).map_err(engine)
    }
}

/// The `audit` family of a store opened read-only, for `tokenvault audit
/// verify`: RocksDB's read-only mode takes no lock, so it also works
/// beside a running server (it then sees the records as of opening).
pub struct AuditReader {
    db: DB,
}

impl AuditReader {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let options = Options::default();
        let families = DB::list_cf(&options, path).map_err(engine)?;
        if !families.iter().any(|f| f == CF_AUDIT) {
            return Err(StoreError::Engine(format!(
                "{} has no audit records (no `{CF_AUDIT}` column family)",
                path.display()
            )));
        }
        Ok(AuditReader {
            db: open_for_inspection(path, true)?,
        })
    }

    /// The wrapped system key (the audit chain's keys derive from it).
    pub fn system_key(&self) -> Result<Option<WrappedKey>, StoreError> {
        let Some(cf) = self.db.cf_handle(CF_META) else {
            return Ok(None);
        };
        match self.db.get_pinned_cf(cf, SYSTEM_KEY).map_err(engine)? {
            Some(bytes) => WrappedKey::decode(&bytes)
                .map(Some)
                .map_err(|_| StoreError::Corrupt("system key")),
            None => Ok(None),
        }
    }

    /// Up to `limit` records from `from_seq` on, in sequence order.
    pub fn records(&self, from_seq: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let cf = self
            .db
            .cf_handle(CF_AUDIT)
            .ok_or(StoreError::Engine(format!(
                "column family {CF_AUDIT} missing"
            )))?;
        audit_scan(&self.db, cf, from_seq, limit)
    }
}

/// What one write group has staged so far.
#[derive(Default)]
struct GroupState {
    batch: WriteBatch,
    /// Token records and index entries, put into `batch` in key order at
    /// commit.
    token_puts: Vec<(Vec<u8>, Vec<u8>)>,
    index_puts: Vec<(Vec<u8>, Vec<u8>)>,
    tokens: HashSet<String>,
    index: HashMap<IndexKey, IndexEntry>,
    keys: HashMap<(&'static str, Vec<u8>), WrappedKey>,
    /// Audit records are synced whatever `sync_writes` says.
    carries_audit: bool,
    /// The batch holds writes nobody waits for (window counters).
    unanswered_writes: bool,
}

enum KeyStaged {
    /// Stored before this group: the caller's key was not written.
    Existing(WrappedKey),
    /// Written with this group: the key in force once the write lands.
    InThisGroup(WrappedKey),
}

/// A request waiting for the group's write.
enum Answer {
    Committed(oneshot::Sender<Result<InsertOutcome, StoreError>>),
    Key(oneshot::Sender<Result<WrappedKey, StoreError>>, WrappedKey),
    Replaced(oneshot::Sender<Result<bool, StoreError>>),
    Done(oneshot::Sender<Result<(), StoreError>>),
}

impl Answer {
    fn send(self, written: Result<(), StoreError>) {
        match self {
            Answer::Committed(reply) => {
                let _ = reply.send(written.map(|()| InsertOutcome::Committed));
            }
            Answer::Key(reply, key) => {
                let _ = reply.send(written.map(|()| key));
            }
            Answer::Replaced(reply) => {
                let _ = reply.send(written.map(|()| true));
            }
            Answer::Done(reply) => {
                let _ = reply.send(written);
            }
        }
    }
}

/// RocksDB properties the metrics endpoint shows, summed over the column
/// families: (name in [`Store::stats`], property).
const STAT_PROPERTIES: [(&str, &str); 4] = [
    ("estimated_keys", "rocksdb.estimate-num-keys"),
    ("sst_files_bytes", "rocksdb.total-sst-files-size"),
    (
        "pending_compaction_bytes",
        "rocksdb.estimate-pending-compaction-bytes",
    ),
    ("compactions_pending", "rocksdb.compaction-pending"),
];

impl RocksStore {
    /// [`STAT_PROPERTIES`] summed over the column families; a property a
    /// family cannot report counts 0.
    fn property_sums(&self) -> Vec<(&'static str, u64)> {
        STAT_PROPERTIES
            .iter()
            .map(|&(name, property)| {
                let sum = COLUMN_FAMILIES
                    .iter()
                    .filter_map(|family| self.inner.db.cf_handle(family))
                    .filter_map(|cf| self.inner.db.property_int_value_cf(&cf, property).ok())
                    .flatten()
                    .fold(0u64, u64::saturating_add);
                (name, sum)
            })
            .collect()
    }
}

#[async_trait]
impl Store for RocksStore {
    fn stats(&self) -> Vec<(&'static str, u64)> {
        self.property_sums()
    }

    async fn system_key(&self) -> Result<Option<WrappedKey>, StoreError> {
        let cf = self.inner.cf(CF_META)?;
        match self
            .inner
            .db
            .get_pinned_cf(cf, SYSTEM_KEY)
            .map_err(engine)?
        {
            Some(bytes) => WrappedKey::decode(&bytes)
                .map(Some)
                .map_err(|_| StoreError::Corrupt("system key")),
            None => Ok(None),
        }
    }

    async fn init_system_key(&self, key: WrappedKey) -> Result<WrappedKey, StoreError> {
        self.write(|reply| WriteRequest::KeyIfAbsent {
            family: CF_META,
            key: SYSTEM_KEY.to_vec(),
            wrapped: key,
            reply,
        })
        .await
    }

    async fn subject_keys(
        &self,
        subjects: &[SubjectHash],
    ) -> Result<Vec<Option<WrappedKey>>, StoreError> {
        let keys: Vec<&[u8]> = subjects.iter().map(|s| s.as_bytes().as_slice()).collect();
        self.inner.get_many(CF_SUBJECTS, &keys, |bytes| {
            WrappedKey::decode(bytes).map_err(|_| StoreError::Corrupt("subject key"))
        })
    }

    async fn insert_subject_key(
        &self,
        subject: SubjectHash,
        key: WrappedKey,
    ) -> Result<WrappedKey, StoreError> {
        self.write(|reply| WriteRequest::KeyIfAbsent {
            family: CF_SUBJECTS,
            key: subject.as_bytes().to_vec(),
            wrapped: key,
            reply,
        })
        .await
    }

    async fn index_entries(
        &self,
        keys: &[IndexKey],
    ) -> Result<Vec<Option<IndexEntry>>, StoreError> {
        let keys: Vec<[u8; 65]> = keys.iter().map(deterministic_key).collect();
        self.inner.get_many(CF_INDEX, &keys, IndexEntry::decode)
    }

    async fn token_records(
        &self,
        tokens: &[String],
    ) -> Result<Vec<Option<TokenRecord>>, StoreError> {
        self.inner.get_many(CF_TOKENS, tokens, TokenRecord::decode)
    }

    async fn subject_keys_after(
        &self,
        after: Option<SubjectHash>,
        limit: usize,
    ) -> Result<Vec<(SubjectHash, WrappedKey)>, StoreError> {
        self.inner.subject_keys_after(after, limit)
    }

    async fn replace_subject_key(
        &self,
        subject: SubjectHash,
        expected: &WrappedKey,
        new: WrappedKey,
    ) -> Result<bool, StoreError> {
        self.write(|reply| WriteRequest::ReplaceKey {
            family: CF_SUBJECTS,
            key: subject.as_bytes().to_vec(),
            expected: expected.clone(),
            new,
            reply,
        })
        .await
    }

    async fn replace_system_key(
        &self,
        expected: &WrappedKey,
        new: WrappedKey,
    ) -> Result<bool, StoreError> {
        self.write(|reply| WriteRequest::ReplaceKey {
            family: CF_META,
            key: SYSTEM_KEY.to_vec(),
            expected: expected.clone(),
            new,
            reply,
        })
        .await
    }

    async fn kek_rotation(&self) -> Result<Option<u32>, StoreError> {
        let cf = self.inner.cf(CF_META)?;
        match self
            .inner
            .db
            .get_pinned_cf(cf, KEK_ROTATION)
            .map_err(engine)?
        {
            Some(bytes) => {
                let bytes: [u8; 4] = bytes
                    .as_ref()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("rotation"))?;
                Ok(Some(u32::from_be_bytes(bytes)))
            }
            None => Ok(None),
        }
    }

    async fn set_kek_rotation(&self, target: Option<u32>) -> Result<(), StoreError> {
        self.write(|reply| WriteRequest::PutMeta {
            key: KEK_ROTATION,
            value: target.map(|version| version.to_be_bytes().to_vec()),
            reply,
        })
        .await
    }

    async fn ledger_applied(&self) -> Result<Vec<(u64, [u8; 32])>, StoreError> {
        let cf = self.inner.cf(CF_META)?;
        let mode = rocksdb::IteratorMode::From(LEDGER_APPLIED, rocksdb::Direction::Forward);
        let mut marks = Vec::new();
        for item in self.inner.db.iterator_cf(cf, mode) {
            let (key, value) = item.map_err(engine)?;
            let Some(seq) = key.strip_prefix(LEDGER_APPLIED) else {
                break;
            };
            let seq: [u8; 8] = seq
                .try_into()
                .map_err(|_| StoreError::Corrupt("ledger mark"))?;
            let mac: [u8; 32] = value
                .as_ref()
                .try_into()
                .map_err(|_| StoreError::Corrupt("ledger mark"))?;
            marks.push((u64::from_be_bytes(seq), mac));
        }
        Ok(marks)
    }

    async fn mark_ledger_applied(
        &self,
        entries: Vec<(u64, [u8; 32])>,
        replace: bool,
    ) -> Result<(), StoreError> {
        self.write(|reply| WriteRequest::LedgerMarks {
            entries,
            replace,
            reply,
        })
        .await
    }

    async fn insert_tokens(
        &self,
        batch: Vec<NewToken>,
        sealed_under: &[(SubjectHash, &WrappedKey)],
        now: i64,
    ) -> Result<InsertOutcome, StoreError> {
        let sealed_under = sealed_under
            .iter()
            .map(|(subject, key)| (*subject, (*key).clone()))
            .collect();
        self.write(|reply| WriteRequest::Tokens {
            batch,
            sealed_under,
            now,
            reply,
        })
        .await
    }

    async fn subject_tokens(
        &self,
        subject: SubjectHash,
        cursor: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<TokenPage, StoreError> {
        let limit = limit.max(1);
        // One entry more than the page tells where the next page starts.
        let mut entries = self
            .inner
            .subject_entries(&subject, cursor.as_deref(), limit + 1)?;
        let next = (entries.len() > limit)
            .then(|| entries.pop().map(|(key, _)| key.into_vec()))
            .flatten();
        let tokens = entries
            .iter()
            .map(|(_, value)| IndexEntry::decode(value).map(|entry| entry.token))
            .collect::<Result<Vec<_>, _>>()?;
        let records = self
            .inner
            .get_many(CF_TOKENS, &tokens, TokenRecord::decode)?;
        Ok(TokenPage {
            tokens: tokens
                .into_iter()
                .zip(records)
                .filter_map(|(token, record)| record.map(|record| (token, record)))
                .collect(),
            next,
        })
    }

    async fn forget_subject(
        &self,
        subject: SubjectHash,
        hasher: TombstoneHasher,
        now: i64,
    ) -> Result<u64, StoreError> {
        self.write(|reply| WriteRequest::Forget {
            subject,
            hasher,
            now,
            reply,
        })
        .await
    }

    async fn tombstones(&self, hashes: &[[u8; 32]]) -> Result<Vec<bool>, StoreError> {
        Ok(self
            .inner
            .get_many(CF_TOMBSTONES, hashes, |_| Ok(()))?
            .into_iter()
            .map(|found| found.is_some())
            .collect())
    }

    async fn purge(&self) -> Result<(), StoreError> {
        self.purge_scope(PurgeScope::Everything).await
    }

    async fn purge_erased_keys(&self, subject: SubjectHash) -> Result<(), StoreError> {
        self.purge_scope(PurgeScope::Keys(vec![subject])).await
    }

    async fn pending_purges(&self) -> Result<PendingPurges, StoreError> {
        self.inner.pending_purges()
    }

    fn erased_keys_leave_no_file(&self) -> bool {
        true
    }

    fn stop_background_work(&self) {
        if let Err(error) = self.inner.db.flush_wal(true) {
            tracing::error!(error = %error.into_string(), "WAL sync at shutdown failed");
        }
        // Memtables to table files: the next start replays no WAL. The
        // synced WAL above already made every acknowledged write durable,
        // so a failure here (a full disk) costs only a longer restart.
        let mut flush = FlushOptions::default();
        flush.set_wait(true);
        let families: Vec<&ColumnFamily> = COLUMN_FAMILIES
            .iter()
            .filter_map(|name| self.inner.db.cf_handle(name))
            .collect();
        match self.inner.db.flush_cfs_opt(&families, &flush) {
            Ok(()) => tracing::info!("store flushed at shutdown"),
            Err(error) => {
                tracing::warn!(error = %error.into_string(), "memtable flush at shutdown failed; the WAL is replayed at the next start")
            }
        }
        self.inner.db.cancel_all_background_work(true);
    }

    async fn create_backup(&self, dir: &Path) -> Result<BackupInfo, StoreError> {
        let inner = Arc::clone(&self.inner);
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || inner.create_backup(&dir))
            .await
            .map_err(|_| StoreError::Engine("the backup task failed".into()))?
    }

    async fn append_audit(&self, records: Vec<(u64, Vec<u8>)>) -> Result<(), StoreError> {
        if self.inner.sync_audit {
            return self
                .write(|reply| WriteRequest::Audit { records, reply })
                .await;
        }
        // Unsynced: a WAL append and a memtable insert, done here rather
        // than queued, since every reveal waits for it (the audit log has
        // one writer at a time, so records still land in sequence order).
        let cf = self.inner.cf(CF_AUDIT)?;
        let mut batch = WriteBatch::default();
        for (seq, record) in records {
            batch.put_cf(cf, seq.to_be_bytes(), record);
        }
        self.inner
            .db
            .write_opt(batch, &self.inner.unsynced_write_options)
            .map_err(engine)
    }

    fn sync_wal(&self) -> Result<(), StoreError> {
        self.inner.db.flush_wal(true).map_err(engine)
    }

    async fn audit_records(
        &self,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.inner.audit_records(from_seq, limit)
    }

    async fn last_audit_record(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        self.inner.last_audit_record()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rocksdb_passes_the_store_conformance_suite() {
        let root = tempfile::tempdir().expect("tempdir");
        let counter = std::sync::atomic::AtomicUsize::new(0);
        let options = RocksOptions {
            sync_writes: true,
            sync_audit: true,
            block_cache_bytes: 1 << 20,
        };
        super::super::conformance::run_all(|| {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let store = RocksStore::open(&root.path().join(n.to_string()), &options).expect("open");
            std::future::ready(Arc::new(store) as Arc<dyn Store>)
        })
        .await;
    }

    #[tokio::test]
    async fn every_token_is_listed_once_under_its_subject() {
        let root = tempfile::tempdir().expect("tempdir");
        let options = RocksOptions::for_tests();
        let store = RocksStore::open(root.path(), &options).expect("open");
        let subject = SubjectHash([3; 32]);
        let record = |tag: u8| TokenRecord {
            subject,
            format: "text".into(),
            created_at: 1,
            expires_at: None,
            sealed: crate::crypto::Sealed {
                nonce: [tag; crate::crypto::NONCE_LEN],
                ciphertext: vec![tag; 20],
            },
        };
        let batch = vec![
            NewToken {
                token: "det".into(),
                record: record(1),
                index_key: Some(IndexKey([3; 64])),
            },
            NewToken {
                token: "rnd".into(),
                record: record(2),
                index_key: None,
            },
        ];
        let key = WrappedKey {
            kind: crate::kek::KekKind::Local,
            kek_version: 1,
            ciphertext: vec![3; 40],
        };
        store
            .insert_subject_key(subject, key.clone())
            .await
            .expect("key");
        assert_eq!(
            store
                .insert_tokens(batch, &[(subject, &key)], 1)
                .await
                .expect("insert"),
            InsertOutcome::Committed
        );
        let cf = store.inner.cf(CF_INDEX).expect("cf");
        let listed: Vec<String> = store
            .inner
            .db
            .prefix_iterator_cf(cf, subject.as_bytes())
            .map(|entry| entry.expect("entry"))
            .take_while(|(key, _)| key.starts_with(subject.as_bytes()))
            .map(|(_, value)| IndexEntry::decode(&value).expect("entry").token)
            .collect();
        assert_eq!(listed, ["det", "rnd"], "two entries per token, all listed");
        let counts = store.counts().expect("counts");
        assert_eq!((counts.tokens, counts.index_entries), (2, 1));
    }

    #[tokio::test]
    async fn data_survives_reopening() {
        let root = tempfile::tempdir().expect("tempdir");
        let options = RocksOptions {
            sync_writes: true,
            sync_audit: true,
            block_cache_bytes: 1 << 20,
        };
        {
            let store = RocksStore::open(root.path(), &options).expect("open");
            let subject = SubjectHash([1; 32]);
            let key = WrappedKey {
                kind: crate::kek::KekKind::Local,
                kek_version: 1,
                ciphertext: vec![1; 40],
            };
            store
                .insert_subject_key(subject, key)
                .await
                .expect("insert");
        }
        let store = RocksStore::open(root.path(), &options).expect("reopen");
        assert!(store
            .subject_keys(&[SubjectHash([1; 32])])
            .await
            .expect("read")[0]
            .is_some());
    }
}
