//! The embedded RocksDB store.
//!
//! Column families:
//!
//! | cf               | key                          | value                   |
//! |------------------|------------------------------|-------------------------|
//! | `meta`           | `system_key`                 | wrapped system key      |
//! | `subjects`       | subject hash (32)            | wrapped subject DEK     |
//! | `tokens`         | token (UTF-8)                | [`TokenRecord`]         |
//! | `index`          | subject hash (32) + MAC (32) | [`IndexEntry`]          |
//! | `subject_tokens` | subject hash (32) + token    | empty                   |
//!
//! Everything keyed by subject starts with the subject hash, so one
//! subject's data is one key range per family (erasure and export scan it).
//!
//! Uniqueness: RocksDB has no conditional put, so writers first *claim* the
//! keys they are about to create in an in-process set, then check the
//! database, then write. Only one process opens a RocksDB directory, so the
//! claim set sees every writer. Claims are held across the synced write;
//! writers with disjoint keys write concurrently and RocksDB's write group
//! lets them share one WAL sync.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, Options,
    WriteBatch, WriteOptions, DB,
};

use super::{Conflict, IndexEntry, InsertOutcome, NewToken, Store, StoreError, TokenRecord};
use crate::crypto::{IndexKey, SubjectHash};
use crate::kek::WrappedKey;

const CF_META: &str = "meta";
const CF_SUBJECTS: &str = "subjects";
const CF_TOKENS: &str = "tokens";
const CF_INDEX: &str = "index";
const CF_SUBJECT_TOKENS: &str = "subject_tokens";
const COLUMN_FAMILIES: [&str; 5] = [CF_META, CF_SUBJECTS, CF_TOKENS, CF_INDEX, CF_SUBJECT_TOKENS];

const SYSTEM_KEY: &[u8] = b"system_key";

/// How long a writer waits for another writer's claim on the same keys.
const CLAIM_WAIT: Duration = Duration::from_secs(5);
const CLAIM_POLL: Duration = Duration::from_micros(200);

/// Settings of the RocksDB store.
#[derive(Debug, Clone)]
pub struct RocksOptions {
    pub sync_writes: bool,
    pub block_cache_bytes: usize,
}

/// Key counts per family, for operators and tests (a full scan: not for
/// the request path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreCounts {
    pub subjects: u64,
    pub tokens: u64,
    pub index_entries: u64,
}

pub struct RocksStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: DB,
    write_options: WriteOptions,
    claims: Mutex<HashSet<Vec<u8>>>,
}

impl RocksStore {
    pub fn open(path: &Path, options: &RocksOptions) -> Result<Self, StoreError> {
        let mut db_options = Options::default();
        db_options.create_if_missing(true);
        db_options.create_missing_column_families(true);
        db_options.increase_parallelism(2);
        db_options.set_max_background_jobs(2);
        // Concurrent writers queue into write groups; pipelining lets the
        // next group's WAL write start while the previous one applies.
        db_options.set_enable_pipelined_write(true);

        let cache = Cache::new_lru_cache(options.block_cache_bytes);
        let families =
            COLUMN_FAMILIES.map(|name| ColumnFamilyDescriptor::new(name, family_options(&cache)));
        let db = DB::open_cf_descriptors(&db_options, path, families).map_err(engine)?;

        let mut write_options = WriteOptions::default();
        write_options.set_sync(options.sync_writes);
        Ok(RocksStore {
            inner: Arc::new(Inner {
                db,
                write_options,
                claims: Mutex::new(HashSet::new()),
            }),
        })
    }

    /// Counts the keys of each family by scanning them.
    pub fn counts(&self) -> Result<StoreCounts, StoreError> {
        let count = |family| -> Result<u64, StoreError> {
            let cf = self.inner.cf(family)?;
            let mut n = 0;
            for entry in self.inner.db.iterator_cf(cf, rocksdb::IteratorMode::Start) {
                entry.map_err(engine)?;
                n += 1;
            }
            Ok(n)
        };
        Ok(StoreCounts {
            subjects: count(CF_SUBJECTS)?,
            tokens: count(CF_TOKENS)?,
            index_entries: count(CF_INDEX)?,
        })
    }

    /// Runs blocking RocksDB work off the async runtime.
    async fn blocking<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || work(&inner))
            .await
            .map_err(|e| StoreError::Engine(format!("storage task failed: {e}")))?
    }
}

fn family_options(cache: &Cache) -> Options {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    // Nearly every read is a point lookup of a key that may not exist.
    table.set_bloom_filter(10.0, false);
    table.set_cache_index_and_filter_blocks(true);
    let mut options = Options::default();
    options.set_block_based_table_factory(&table);
    options.set_compression_type(DBCompressionType::Lz4);
    options
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

    /// Claims keys for the duration of the returned guard, waiting while
    /// another writer holds any of them.
    fn claim(&self, keys: Vec<Vec<u8>>) -> Result<ClaimGuard<'_>, StoreError> {
        let deadline = Instant::now() + CLAIM_WAIT;
        loop {
            {
                let mut claims = self.claims.lock();
                if keys.iter().all(|key| !claims.contains(key)) {
                    claims.extend(keys.iter().cloned());
                    return Ok(ClaimGuard { inner: self, keys });
                }
            }
            if Instant::now() > deadline {
                return Err(StoreError::Busy);
            }
            std::thread::sleep(CLAIM_POLL);
        }
    }

    /// Stores a key unless one exists; returns the one in force.
    fn insert_key_if_absent(
        &self,
        family: &'static str,
        key: Vec<u8>,
        wrapped: WrappedKey,
    ) -> Result<WrappedKey, StoreError> {
        let claim_key = [family.as_bytes(), b"/", &key].concat();
        let _claim = self.claim(vec![claim_key])?;
        let cf = self.cf(family)?;
        if let Some(existing) = self.db.get_pinned_cf(cf, &key).map_err(engine)? {
            return WrappedKey::decode(&existing).map_err(|_| StoreError::Corrupt("wrapped key"));
        }
        let mut batch = WriteBatch::default();
        batch.put_cf(cf, &key, wrapped.encode());
        self.db
            .write_opt(batch, &self.write_options)
            .map_err(engine)?;
        Ok(wrapped)
    }

    fn insert_tokens(&self, batch: Vec<NewToken>, now: i64) -> Result<InsertOutcome, StoreError> {
        let (claim_keys, duplicates) = claim_keys_of(&batch)?;
        if !duplicates.is_empty() {
            return Ok(InsertOutcome::Conflicts(duplicates));
        }
        let _claim = self.claim(claim_keys)?;

        let conflicts = self.conflicts_of(&batch, now)?;
        if !conflicts.is_empty() {
            return Ok(InsertOutcome::Conflicts(conflicts));
        }

        let tokens_cf = self.cf(CF_TOKENS)?;
        let index_cf = self.cf(CF_INDEX)?;
        let subject_tokens_cf = self.cf(CF_SUBJECT_TOKENS)?;
        let mut write = WriteBatch::default();
        for item in &batch {
            write.put_cf(tokens_cf, item.token.as_bytes(), item.record.encode()?);
            write.put_cf(
                subject_tokens_cf,
                [item.record.subject.as_bytes(), item.token.as_bytes()].concat(),
                [],
            );
            if let Some(index_key) = &item.index_key {
                let entry = IndexEntry {
                    token: item.token.clone(),
                    expires_at: item.record.expires_at,
                };
                write.put_cf(index_cf, index_key.as_bytes(), entry.encode());
            }
        }
        self.db
            .write_opt(write, &self.write_options)
            .map_err(engine)?;
        Ok(InsertOutcome::Committed)
    }

    /// Existing tokens and live index entries that the batch would overwrite.
    fn conflicts_of(&self, batch: &[NewToken], now: i64) -> Result<Vec<Conflict>, StoreError> {
        let tokens: Vec<&[u8]> = batch.iter().map(|item| item.token.as_bytes()).collect();
        let existing_tokens = self.get_many(CF_TOKENS, &tokens, |_| Ok(()))?;
        let mut conflicts: Vec<Conflict> = existing_tokens
            .iter()
            .enumerate()
            .filter(|(_, found)| found.is_some())
            .map(|(item, _)| Conflict::TokenTaken { item })
            .collect();

        let indexed: Vec<(usize, &IndexKey)> = batch
            .iter()
            .enumerate()
            .filter_map(|(i, item)| item.index_key.as_ref().map(|key| (i, key)))
            .collect();
        let keys: Vec<&[u8]> = indexed.iter().map(|(_, key)| key.as_bytes()).collect();
        let entries = self.get_many(CF_INDEX, &keys, IndexEntry::decode)?;
        for ((item, _), entry) in indexed.into_iter().zip(entries) {
            if let Some(existing) = entry.filter(|entry| !entry.is_expired(now)) {
                conflicts.push(Conflict::IndexTaken { item, existing });
            }
        }
        Ok(conflicts)
    }
}

/// The claim keys of a batch, and the items whose token repeats an
/// earlier item's (reported as taken, so the caller makes another).
fn claim_keys_of(batch: &[NewToken]) -> Result<(Vec<Vec<u8>>, Vec<Conflict>), StoreError> {
    let mut seen = HashSet::with_capacity(batch.len() * 2);
    let mut keys = Vec::with_capacity(batch.len() * 2);
    let mut duplicates = Vec::new();
    for (item, new) in batch.iter().enumerate() {
        let token_key = [b"t/".as_slice(), new.token.as_bytes()].concat();
        if !seen.insert(token_key.clone()) {
            duplicates.push(Conflict::TokenTaken { item });
            continue;
        }
        keys.push(token_key);
        if let Some(index_key) = &new.index_key {
            let key = [b"i/".as_slice(), index_key.as_bytes()].concat();
            if !seen.insert(key.clone()) {
                return Err(StoreError::Misuse("one index key twice in a batch"));
            }
            keys.push(key);
        }
    }
    Ok((keys, duplicates))
}

struct ClaimGuard<'a> {
    inner: &'a Inner,
    keys: Vec<Vec<u8>>,
}

impl Drop for ClaimGuard<'_> {
    fn drop(&mut self) {
        let mut claims = self.inner.claims.lock();
        for key in &self.keys {
            claims.remove(key);
        }
    }
}

#[async_trait]
impl Store for RocksStore {
    async fn system_key(&self) -> Result<Option<WrappedKey>, StoreError> {
        self.blocking(|inner| {
            let cf = inner.cf(CF_META)?;
            match inner.db.get_pinned_cf(cf, SYSTEM_KEY).map_err(engine)? {
                Some(bytes) => WrappedKey::decode(&bytes)
                    .map(Some)
                    .map_err(|_| StoreError::Corrupt("system key")),
                None => Ok(None),
            }
        })
        .await
    }

    async fn init_system_key(&self, key: WrappedKey) -> Result<WrappedKey, StoreError> {
        self.blocking(move |inner| inner.insert_key_if_absent(CF_META, SYSTEM_KEY.to_vec(), key))
            .await
    }

    async fn subject_keys(
        &self,
        subjects: &[SubjectHash],
    ) -> Result<Vec<Option<WrappedKey>>, StoreError> {
        let subjects = subjects.to_vec();
        self.blocking(move |inner| {
            let keys: Vec<&[u8]> = subjects.iter().map(|s| s.as_bytes().as_slice()).collect();
            inner.get_many(CF_SUBJECTS, &keys, |bytes| {
                WrappedKey::decode(bytes).map_err(|_| StoreError::Corrupt("subject key"))
            })
        })
        .await
    }

    async fn insert_subject_key(
        &self,
        subject: SubjectHash,
        key: WrappedKey,
    ) -> Result<WrappedKey, StoreError> {
        self.blocking(move |inner| {
            inner.insert_key_if_absent(CF_SUBJECTS, subject.as_bytes().to_vec(), key)
        })
        .await
    }

    async fn index_entries(
        &self,
        keys: &[IndexKey],
    ) -> Result<Vec<Option<IndexEntry>>, StoreError> {
        let keys = keys.to_vec();
        self.blocking(move |inner| {
            inner.get_many(
                CF_INDEX,
                &keys.iter().map(|k| k.as_bytes()).collect::<Vec<_>>(),
                IndexEntry::decode,
            )
        })
        .await
    }

    async fn token_records(
        &self,
        tokens: &[String],
    ) -> Result<Vec<Option<TokenRecord>>, StoreError> {
        let tokens = tokens.to_vec();
        self.blocking(move |inner| inner.get_many(CF_TOKENS, &tokens, TokenRecord::decode))
            .await
    }

    async fn insert_tokens(
        &self,
        batch: Vec<NewToken>,
        now: i64,
    ) -> Result<InsertOutcome, StoreError> {
        self.blocking(move |inner| inner.insert_tokens(batch, now))
            .await
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
            block_cache_bytes: 1 << 20,
        };
        super::super::conformance::run_all(|| {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let store = RocksStore::open(&root.path().join(n.to_string()), &options).expect("open");
            Arc::new(store) as Arc<dyn Store>
        })
        .await;
    }

    #[tokio::test]
    async fn data_survives_reopening() {
        let root = tempfile::tempdir().expect("tempdir");
        let options = RocksOptions {
            sync_writes: true,
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
