//! The purgers: make erased and expired data physically gone from the
//! RocksDB files. Each runs on a thread of its own, so a purge never holds
//! up the writer, and serves every request queued while it worked with one
//! purge (each was queued after its erasure committed).
//!
//! Two scopes, each with its own thread, and why (docs/erasure.md has the
//! measurements):
//! - [`PurgeScope::Keys`], at the end of every forget: no file holds the
//!   forgotten subjects' wrapped DEKs. They live in the key instance (see
//!   `keys`), whose memtable is flushed (so every WAL from before is
//!   obsolete), then only the `subjects` key of each subject is compacted
//!   to the last level: `compact_range` over one key rewrites the files
//!   that overlap it, one small file per level (`SUBJECTS_FILE_BYTES`).
//!   Nothing of the vault instance is touched or waited for, so neither
//!   its compactions nor a full purge running on the other thread delay a
//!   forget. Without the wrapped DEK the subject's ciphertexts are noise
//!   and its index entries unlinkable, so they may stay on disk a while.
//! - [`PurgeScope::Everything`]: a full compaction of `tokens` and `index`
//!   and of the key instance, which removes every erased and expired
//!   record. Its cost is the store's size, so it runs on a schedule (the
//!   retention interval and the erasure bound, see `api::server`), not per
//!   forget, and one run serves every forget before it. The forgets it
//!   still owes are listed in `meta` (`purge_pending/` ‖ erased_at ‖
//!   subject hash, written in the forget's batch); a full purge drops the
//!   entries it read before its flush once it is done.
//!
//! It must never report a purge done while a file it was meant to remove
//! is still in the directory.

use std::collections::HashSet;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rocksdb::{BottommostLevelCompaction, CompactOptions, FlushOptions, WriteBatch, DB};

use super::schema::{
    CF_META, CF_SUBJECTS, COLUMN_FAMILIES, KEY_FAMILIES, LAST_PURGE, PURGED_FAMILIES,
};
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

/// One of the store's two RocksDB instances, as a purge sees it: its
/// database, its directory and its families.
pub(super) struct Instance<'a> {
    pub db: &'a DB,
    pub dir: &'a Path,
    pub families: &'a [&'static str],
    /// Where the purge marker goes (see [`Instance::flush_everything`]).
    pub marker_family: &'static str,
}

impl Inner {
    pub(super) fn vault_instance(&self) -> Instance<'_> {
        Instance {
            db: &self.db,
            dir: &self.path,
            families: &COLUMN_FAMILIES,
            marker_family: CF_META,
        }
    }

    pub(super) fn key_instance(&self) -> Instance<'_> {
        Instance {
            db: &self.keys,
            dir: &self.keys_path,
            families: &KEY_FAMILIES,
            marker_family: rocksdb::DEFAULT_COLUMN_FAMILY_NAME,
        }
    }

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
        let keys = self.key_instance();
        let (wals, _) = keys.flush_everything()?;
        // Only `subjects` files hold keys; a file in the directory that is
        // not live is a compaction's output still being written.
        let tables = keys.live_tables_of(CF_SUBJECTS)?;
        let subjects_family = keys.cf(CF_SUBJECTS)?;
        let compact = forced_compaction();
        if subjects.len() > WHOLE_FAMILY_ABOVE {
            keys.db
                .compact_range_cf_opt(subjects_family, None::<&[u8]>, None::<&[u8]>, &compact);
        } else {
            for subject in subjects {
                let key = subject.as_bytes();
                keys.db
                    .compact_range_cf_opt(subjects_family, Some(key), Some(key), &compact);
            }
        }
        // The files that held a key overlapped its range, so the compaction
        // replaced them: every `subjects` table from before that is no
        // longer live must be deleted; live ones never held a forgotten key.
        keys.wait_until_gone(&wals, &tables, &[])
    }

    /// Nothing erased or expired before the call remains in any file.
    fn purge_everything(&self) -> Result<(), StoreError> {
        let owed = self.pending_keys()?;
        let compact = forced_compaction();
        let vault = self.vault_instance();
        let (wals, tables) = vault.flush_everything()?;
        for name in PURGED_FAMILIES {
            vault
                .db
                .compact_range_cf_opt(vault.cf(name)?, None::<&[u8]>, None::<&[u8]>, &compact);
        }
        // Every table of these families from before was rewritten.
        vault.wait_until_gone(&wals, &tables, &PURGED_FAMILIES)?;
        let keys = self.key_instance();
        let (wals, tables) = keys.flush_everything()?;
        keys.db.compact_range_cf_opt(
            keys.cf(CF_SUBJECTS)?,
            None::<&[u8]>,
            None::<&[u8]>,
            &compact,
        );
        keys.wait_until_gone(&wals, &tables, &[CF_SUBJECTS])?;
        let meta = self.cf(CF_META)?;
        let mut batch = WriteBatch::default();
        for key in owed {
            batch.delete_cf(meta, key);
        }
        self.db
            .write_opt(batch, &self.synced_write_options)
            .map_err(engine)
    }

    /// The forgets a full purge still owes.
    pub(super) fn pending_purges(&self) -> Result<PendingPurges, StoreError> {
        let mut pending = PendingPurges::default();
        for key in self.pending_keys()? {
            let erased_at = pending_erased_at(&key)?;
            pending.count += 1;
            pending.oldest_erased_at = Some(
                pending
                    .oldest_erased_at
                    .map_or(erased_at, |oldest| oldest.min(erased_at)),
            );
        }
        Ok(pending)
    }

    /// The earliest erased_at of the forgets of `subject` still owed.
    pub(super) fn purge_owed(&self, subject: &SubjectHash) -> Result<Option<i64>, StoreError> {
        // Keys are ordered by time, so the first match is the earliest.
        for key in self.pending_keys()? {
            if key.ends_with(subject.as_bytes()) {
                return Ok(Some(pending_erased_at(&key)?));
            }
        }
        Ok(None)
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
}

fn pending_erased_at(key: &[u8]) -> Result<i64, StoreError> {
    key.get(PENDING.len()..PENDING.len() + 8)
        .and_then(|bytes| bytes.try_into().ok())
        .map(i64::from_be_bytes)
        .ok_or(StoreError::Corrupt("a pending-purge key is cut short"))
}

/// Exclusive: RocksDB first lets the running compactions of the instance
/// finish and starts none beside it, so no file written from data before
/// the purge escapes it. That wait is short in the key instance; in the
/// vault instance only the scheduled full purge waits for it.
fn forced_compaction() -> CompactOptions {
    let mut compact = CompactOptions::default();
    compact.set_exclusive_manual_compaction(true);
    compact.set_bottommost_level_compaction(BottommostLevelCompaction::Force);
    compact
}

impl Instance<'_> {
    fn cf(&self, name: &'static str) -> Result<&rocksdb::ColumnFamily, StoreError> {
        self.db
            .cf_handle(name)
            .ok_or(StoreError::Engine(format!("column family {name} missing")))
    }

    /// Flushes every memtable so that every WAL from before is obsolete;
    /// returns the WAL files from before and the table files after.
    pub(super) fn flush_everything(
        &self,
    ) -> Result<(HashSet<String>, HashSet<String>), StoreError> {
        // A write to every purge, so that the flush below always switches to
        // a new WAL and every earlier WAL becomes obsolete.
        self.db
            .put_cf(
                self.cf(self.marker_family)?,
                LAST_PURGE,
                crate::clock::unix_now().to_be_bytes(),
            )
            .map_err(engine)?;
        let before = self.database_files()?;
        let families = self
            .families
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

    /// Waits until RocksDB has deleted the files that may hold purged data:
    /// the WAL files from before the flush, and the table files from before
    /// the compaction that are no longer live or belong to `rewritten`
    /// (families compacted whole, whose every earlier file must go). Files
    /// written since hold only later data. Deletion follows a compaction,
    /// but an open iterator can delay it a little.
    pub(super) fn wait_until_gone(
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
            // A file a reader's iterator pinned when its compaction ended is
            // queued for deletion, but deleted only at the instance's next
            // flush or compaction, which may not come: re-enabling file
            // deletions makes RocksDB scan for obsolete files and delete
            // them now (the pair is balanced, so a backup's hold stays).
            self.db.disable_file_deletions().map_err(engine)?;
            self.db.enable_file_deletions().map_err(engine)?;
            if Instant::now() > deadline {
                // File names hold no data. A table that is no longer live
                // but still on disk is most often held by a compaction still
                // running: RocksDB keeps every file numbered above the
                // outputs of a running job of the same instance.
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

    /// Names of the table (.sst) and WAL (.log) files in the directory
    /// (not below it: the key instance is a directory of its own).
    fn database_files(&self) -> Result<HashSet<String>, StoreError> {
        let list_error = |e: std::io::Error| {
            StoreError::Engine(format!("cannot list the database directory: {e}"))
        };
        let mut names = HashSet::new();
        for entry in std::fs::read_dir(self.dir).map_err(list_error)? {
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
