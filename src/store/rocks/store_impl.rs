//! `impl Store for RocksStore`: reads on the caller's thread, writes queued
//! for the writer, purges for the purger; and the RocksDB properties
//! [`Store::stats`] reports. It adds no logic of its own: checks belong to
//! the writer.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use rocksdb::{ColumnFamily, FlushOptions, WriteBatch};

use super::purge::PurgeScope;
use super::schema::{
    deterministic_key, CF_AUDIT, CF_INDEX, CF_META, CF_SUBJECTS, CF_TOKENS, CF_TOMBSTONES,
    COLUMN_FAMILIES, KEK_ROTATION, KEY_FAMILIES, LEDGER_APPLIED, SYSTEM_KEY,
};
use super::writer::WriteRequest;
use super::{engine, RocksStore};
use crate::crypto::{IndexKey, SubjectHash};
use crate::kek::WrappedKey;
use crate::store::{
    BackupInfo, IndexEntry, InsertOutcome, NewToken, PendingPurges, Store, StoreError, TokenPage,
    TokenRecord, TombstoneHasher,
};

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
                let sum_over = |db: &rocksdb::DB, families: &[&str]| {
                    families
                        .iter()
                        .filter_map(|family| db.cf_handle(family))
                        .filter_map(|cf| db.property_int_value_cf(&cf, property).ok())
                        .flatten()
                        .fold(0u64, u64::saturating_add)
                };
                let sum = sum_over(&self.inner.db, &COLUMN_FAMILIES)
                    .saturating_add(sum_over(&self.inner.keys, &KEY_FAMILIES));
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

    async fn purge_owed(&self, subject: SubjectHash) -> Result<Option<i64>, StoreError> {
        self.inner.purge_owed(&subject)
    }

    async fn pending_purges(&self) -> Result<PendingPurges, StoreError> {
        self.inner.pending_purges()
    }

    fn erased_keys_leave_no_file(&self) -> bool {
        true
    }

    fn stop_background_work(&self) {
        let instances: [(&rocksdb::DB, &[&str]); 2] = [
            (&self.inner.keys, &KEY_FAMILIES),
            (&self.inner.db, &COLUMN_FAMILIES),
        ];
        for (db, names) in instances {
            if let Err(error) = db.flush_wal(true) {
                tracing::error!(error = %error.into_string(), "WAL sync at shutdown failed");
            }
            // Memtables to table files: the next start replays no WAL. The
            // synced WAL above already made every acknowledged write
            // durable, so a failure here (a full disk) costs only a longer
            // restart.
            let mut flush = FlushOptions::default();
            flush.set_wait(true);
            let families: Vec<&ColumnFamily> =
                names.iter().filter_map(|name| db.cf_handle(name)).collect();
            match db.flush_cfs_opt(&families, &flush) {
                Ok(()) => tracing::info!("store flushed at shutdown"),
                Err(error) => {
                    tracing::warn!(error = %error.into_string(), "memtable flush at shutdown failed; the WAL is replayed at the next start")
                }
            }
        }
        self.inner.keys.cancel_all_background_work(true);
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
        // Keys first, as the writer orders them.
        self.inner.keys.flush_wal(true).map_err(engine)?;
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
