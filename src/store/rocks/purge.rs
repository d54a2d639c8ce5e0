//! The purger: makes erased and expired data physically gone from the
//! RocksDB files. It runs on a thread of its own, so a purge never holds up
//! the writer, and serves every request queued while it worked with one
//! purge (each was queued after its erasure committed).
//!
//! Two scopes, and why (docs/erasure.md has the measurements):
//! - [`PurgeScope::Keys`], at the end of every forget: no file holds the
//!   forgotten subjects' wrapped DEKs. Every memtable is flushed (bounded by
//!   the write buffers, not the store) so every WAL from before becomes
//!   obsolete, then only the `subjects` key of each subject is compacted to
//!   the last level: `compact_range` over one key rewrites the files that
//!   overlap it, one small file per level (`SUBJECTS_FILE_BYTES`). Without
//!   the wrapped DEK the subject's ciphertexts are noise and its index
//!   entries unlinkable, so they may stay on disk a while.
//! - [`PurgeScope::Everything`]: a full compaction of `subjects`, `tokens`
//!   and `index`, which removes every erased and expired record. Its cost
//!   is the store's size, so it runs on a schedule (the retention interval
//!   and the erasure bound, see `api::server`), not per forget, and one run
//!   serves every forget before it. The forgets it still owes are listed in
//!   `meta` (`purge_pending/` ‖ erased_at ‖ subject hash, written in the
//!   forget's batch); a full purge drops the entries it read before its
//!   flush once it is done.
//!
//! It must never report a purge done while a file it was meant to remove
//! is still in the directory.

use std::collections::HashSet;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rocksdb::{BottommostLevelCompaction, CompactOptions, FlushOptions, WriteBatch};

use super::schema::{CF_META, CF_SUBJECTS, COLUMN_FAMILIES, LAST_PURGE, PURGED_FAMILIES};
use super::{engine, Inner, OBSOLETE_FILES_DEADLINE};
use crate::crypto::SubjectHash;
use crate::store::{PendingPurges, StoreError};

/// Meta keys of the forgets a full purge still owes: this, erased_at (i64
/// BE), the subject hash; up to (not including) the end key.
const PENDING: &[u8] = b"purge_pending/";
const PENDING_END: &[u8] = b"purge_pending0";

/// Above this many subjects in one purge, compacting the whole `subjects`
/// family (one small file per 2 MiB of keys) is cheaper than one range per
/// subject, each of which rewrites a file per level.
const WHOLE_FAMILY_ABOVE: usize = 32;

/// What a purge request asks for.
pub(in crate::store) enum PurgeScope {
    /// These subjects' wrapped keys (erased before the request).
    Keys(Vec<SubjectHash>),
    /// Every erased and expired record.
    Everything,
}

pub(in crate::store) struct PurgeRequest {
    pub scope: PurgeScope,
    pub reply: tokio::sync::oneshot::Sender<Result<(), StoreError>>,
}

/// The `meta` key that lists a forget as owed to the next full purge.
pub(super) fn pending_key(erased_at: i64, subject: &SubjectHash) -> Vec<u8> {
    let mut key = PENDING.to_vec();
    key.extend_from_slice(&erased_at.to_be_bytes());
    key.extend_from_slice(subject.as_bytes());
    key
}

impl Inner {
    pub(super) fn run_purger(&self, queue: mpsc::Receiver<PurgeRequest>) {
        while let Ok(first) = queue.recv() {
            let mut waiting = vec![first];
            waiting.extend(queue.try_iter());
            let everything = waiting
                .iter()
                .any(|request| matches!(request.scope, PurgeScope::Everything));
            let outcome = if everything {
                self.purge_everything()
            } else {
                let mut subjects: Vec<SubjectHash> = waiting
                    .iter()
                    .flat_map(|request| match &request.scope {
                        PurgeScope::Keys(subjects) => subjects.clone(),
                        PurgeScope::Everything => Vec::new(),
                    })
                    .collect();
                subjects.sort_unstable_by_key(|subject| subject.0);
                subjects.dedup();
                self.purge_keys(&subjects)
            };
            if let Err(error) = &outcome {
                tracing::error!(%error, "purge failed: erased data may remain on disk until the next purge");
            }
            for request in waiting {
                let _ = request.reply.send(outcome.clone());
            }
        }
    }

    /// No file holds the wrapped key of these subjects at return.
    fn purge_keys(&self, subjects: &[SubjectHash]) -> Result<(), StoreError> {
        let (wals, _) = self.flush_everything()?;
        // Only `subjects` files hold keys. Live ones only: a file in the
        // directory that is not live is another family's compaction still
        // writing (which can take longer than the deadline below).
        let tables = self.live_tables_of(CF_SUBJECTS)?;
        let subjects_family = self.cf(CF_SUBJECTS)?;
        // Not exclusive: an exclusive manual compaction first waits for
        // every running compaction of every family, so after a bulk load
        // a forget would wait for `tokens` compactions it does not need.
        let compact = forced_compaction(false);
        if subjects.len() > WHOLE_FAMILY_ABOVE {
            self.db
                .compact_range_cf_opt(subjects_family, None::<&[u8]>, None::<&[u8]>, &compact);
        } else {
            for subject in subjects {
                let key = subject.as_bytes();
                self.db
                    .compact_range_cf_opt(subjects_family, Some(key), Some(key), &compact);
            }
        }
        // The files that held a key overlapped its range, so the compaction
        // replaced them: every `subjects` table from before that is no
        // longer live must be deleted; live ones never held a forgotten key.
        self.wait_until_gone(&wals, &tables, &[])
    }

    /// Nothing erased or expired before the call remains in any file.
    fn purge_everything(&self) -> Result<(), StoreError> {
        let owed = self.pending_keys()?;
        let (wals, tables) = self.flush_everything()?;
        let compact = forced_compaction(true);
        for name in PURGED_FAMILIES {
            self.db
                .compact_range_cf_opt(self.cf(name)?, None::<&[u8]>, None::<&[u8]>, &compact);
        }
        // Every table of these families from before was rewritten.
        self.wait_until_gone(&wals, &tables, &PURGED_FAMILIES)?;
        let meta = self.cf(CF_META)?;
        let mut batch = WriteBatch::default();
        for key in owed {
            batch.delete_cf(meta, key);
        }
        self.db
            .write_opt(batch, &self.synced_write_options)
            .map_err(engine)
    }

    /// Flushes every memtable so that every WAL from before is obsolete;
    /// returns the WAL files from before and the table files after.
    fn flush_everything(&self) -> Result<(HashSet<String>, HashSet<String>), StoreError> {
        // A write to every purge, so that the flush below always switches to
        // a new WAL and every earlier WAL becomes obsolete.
        self.db
            .put_cf_opt(
                self.cf(CF_META)?,
                LAST_PURGE,
                crate::clock::unix_now().to_be_bytes(),
                &self.write_options,
            )
            .map_err(engine)?;
        let before = self.database_files()?;
        let families = COLUMN_FAMILIES
            .iter()
            .map(|name| self.cf(name))
            .collect::<Result<Vec<_>, _>>()?;
        let mut flush = FlushOptions::default();
        flush.set_wait(true);
        self.db.flush_cfs_opt(&families, &flush).map_err(engine)?;
        let wals = before.into_iter().filter(|f| f.ends_with(".log")).collect();
        let tables = self
            .database_files()?
            .into_iter()
            .filter(|f| f.ends_with(".sst"))
            .collect();
        Ok((wals, tables))
    }

    pub(super) fn live_tables_of(&self, family: &str) -> Result<HashSet<String>, StoreError> {
        Ok(self
            .db
            .live_files()
            .map_err(engine)?
            .into_iter()
            .filter(|file| file.column_family_name == family)
            .map(|file| file.name.trim_start_matches('/').to_string())
            .collect())
    }

    /// The forgets a full purge still owes.
    pub(super) fn pending_purges(&self) -> Result<PendingPurges, StoreError> {
        let mut pending = PendingPurges::default();
        for key in self.pending_keys()? {
            let erased_at = key
                .get(PENDING.len()..PENDING.len() + 8)
                .and_then(|bytes| bytes.try_into().ok())
                .map(i64::from_be_bytes)
                .ok_or(StoreError::Corrupt("a pending-purge key is cut short"))?;
            pending.count += 1;
            pending.oldest_erased_at = Some(
                pending
                    .oldest_erased_at
                    .map_or(erased_at, |oldest| oldest.min(erased_at)),
            );
        }
        Ok(pending)
    }

    fn pending_keys(&self) -> Result<Vec<Box<[u8]>>, StoreError> {
        let mut options = rocksdb::ReadOptions::default();
        options.set_iterate_upper_bound(PENDING_END);
        let mode = rocksdb::IteratorMode::From(PENDING, rocksdb::Direction::Forward);
        self.db
            .iterator_cf_opt(self.cf(CF_META)?, options, mode)
            .map(|entry| entry.map(|(key, _)| key).map_err(engine))
            .collect()
    }

    /// Waits until RocksDB has deleted the files that may hold purged data:
    /// the WAL files from before the flush, and the table files from before
    /// the compaction that are no longer live or belong to `rewritten`
    /// (families compacted whole, whose every earlier file must go). Files
    /// written since hold only later data. Deletion follows a compaction,
    /// but an open iterator can delay it a little.
    fn wait_until_gone(
        &self,
        wals: &HashSet<String>,
        tables: &HashSet<String>,
        rewritten: &[&str],
    ) -> Result<(), StoreError> {
        let deadline = Instant::now() + OBSOLETE_FILES_DEADLINE;
        loop {
            let kept_live: HashSet<String> = self
                .db
                .live_files()
                .map_err(engine)?
                .into_iter()
                .filter(|file| !rewritten.contains(&file.column_family_name.as_str()))
                .map(|file| file.name.trim_start_matches('/').to_string())
                .collect();
            let lingering: Vec<String> = self
                .database_files()?
                .into_iter()
                .filter(|name| {
                    wals.contains(name) || (tables.contains(name) && !kept_live.contains(name))
                })
                .collect();
            if lingering.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                // File names hold no data. A table that is no longer live
                // but still on disk is most often held by a compaction still
                // running in another family: RocksDB keeps every file
                // numbered above the outputs of a running job.
                return Err(StoreError::Engine(format!(
                    "{} files that held purged data were not deleted within {}s ({}); a long compaction may still be running",
                    lingering.len(),
                    OBSOLETE_FILES_DEADLINE.as_secs(),
                    lingering.join(", ")
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Names of the table (.sst) and WAL (.log) files in the directory.
    fn database_files(&self) -> Result<HashSet<String>, StoreError> {
        let list_error = |e: std::io::Error| {
            StoreError::Engine(format!("cannot list the database directory: {e}"))
        };
        let mut names = HashSet::new();
        for entry in std::fs::read_dir(&self.path).map_err(list_error)? {
            let name = entry
                .map_err(list_error)?
                .file_name()
                .to_string_lossy()
                .into_owned();
            if name.ends_with(".sst") || name.ends_with(".log") {
                names.insert(name);
            }
        }
        Ok(names)
    }
}

fn forced_compaction(exclusive: bool) -> CompactOptions {
    let mut compact = CompactOptions::default();
    compact.set_exclusive_manual_compaction(exclusive);
    compact.set_bottommost_level_compaction(BottommostLevelCompaction::Force);
    compact
}
