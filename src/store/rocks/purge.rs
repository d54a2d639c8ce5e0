//! The purger: makes erased and expired data physically gone from the
//! RocksDB files (see the store's module doc). It runs on a thread of its
//! own, so a purge never holds up the writer.

use std::collections::HashSet;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rocksdb::{BottommostLevelCompaction, CompactOptions, FlushOptions};

use super::{
    engine, Inner, PurgeReply, CF_META, COLUMN_FAMILIES, LAST_PURGE, OBSOLETE_FILES_DEADLINE,
    PURGED_FAMILIES,
};
use crate::store::StoreError;

impl Inner {
    /// The purger loop: takes every queued purge request and serves them
    /// with one purge (each was queued after its erasure committed).
    pub(super) fn run_purger(&self, queue: mpsc::Receiver<PurgeReply>) {
        while let Ok(first) = queue.recv() {
            let mut waiting = vec![first];
            waiting.extend(queue.try_iter());
            let outcome = self.purge_now();
            if let Err(error) = &outcome {
                tracing::error!(%error, "purge failed: erased data may remain on disk until the next purge");
            }
            for reply in waiting {
                let _ = reply.send(outcome.clone());
            }
        }
    }

    fn purge_now(&self) -> Result<(), StoreError> {
        // A write to every purge, so that the flush below always switches to
        // a new WAL and every earlier WAL becomes obsolete.
        self.db
            .put_cf_opt(
                self.cf(CF_META)?,
                LAST_PURGE,
                crate::vault::unix_now().to_be_bytes(),
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
        // Every family, so that no live WAL file still holds the values.
        self.db.flush_cfs_opt(&families, &flush).map_err(engine)?;
        let flushed = self.database_files()?;
        let mut compact = CompactOptions::default();
        compact.set_exclusive_manual_compaction(true);
        compact.set_bottommost_level_compaction(BottommostLevelCompaction::Force);
        for name in PURGED_FAMILIES {
            self.db
                .compact_range_cf_opt(self.cf(name)?, None::<&[u8]>, None::<&[u8]>, &compact);
        }
        let wals: HashSet<String> = before.into_iter().filter(|f| f.ends_with(".log")).collect();
        let tables: HashSet<String> = flushed
            .into_iter()
            .filter(|f| f.ends_with(".sst"))
            .collect();
        self.wait_until_gone(&wals, &tables)
    }

    /// Waits until RocksDB has deleted the files that may hold purged data:
    /// the WAL files from before the flush, and the table files of the
    /// purged families from before the compaction (files written since
    /// hold only later data). Deletion follows a flush or compaction, but
    /// an open iterator can delay it a little.
    fn wait_until_gone(
        &self,
        wals: &HashSet<String>,
        tables: &HashSet<String>,
    ) -> Result<(), StoreError> {
        let deadline = Instant::now() + OBSOLETE_FILES_DEADLINE;
        loop {
            let kept_live: HashSet<String> = self
                .db
                .live_files()
                .map_err(engine)?
                .into_iter()
                .filter(|file| !PURGED_FAMILIES.contains(&file.column_family_name.as_str()))
                .map(|file| file.name.trim_start_matches('/').to_string())
                .collect();
            let lingering = self
                .database_files()?
                .into_iter()
                .filter(|name| {
                    wals.contains(name) || (tables.contains(name) && !kept_live.contains(name))
                })
                .count();
            if lingering == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(StoreError::Engine(format!(
                    "{lingering} files that held purged data were not deleted within {}s",
                    OBSOLETE_FILES_DEADLINE.as_secs()
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
