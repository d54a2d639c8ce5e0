//! Backups through RocksDB's backup engine: taking one of the open store,
//! and restoring the latest into a database directory that is not open.

use std::path::Path;

use rocksdb::backup::{BackupEngine, BackupEngineOptions, RestoreOptions};
use rocksdb::Env;

use super::{engine, Inner, RocksStore};
use crate::store::{BackupInfo, StoreError};

impl RocksStore {
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

impl Inner {
    pub(super) fn create_backup(&self, dir: &Path) -> Result<BackupInfo, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Engine(format!("cannot create the backup directory: {e}")))?;
        let mut backups = open_backup_engine(dir)?;
        backups
            .create_new_backup_flush(&self.db, true)
            .map_err(engine)?;
        latest_backup(&backups)
    }
}
