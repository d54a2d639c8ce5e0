//! Backups through RocksDB's backup engine: taking one of the open store,
//! and restoring the latest into a database directory that is not open.
//! The key instance has a backup engine of its own, in `keys/` under the
//! backup directory, taken after the vault instance's (see `keys`).

use std::path::Path;

use rocksdb::backup::{BackupEngine, BackupEngineOptions, RestoreOptions};
use rocksdb::Env;

use super::schema::KEYS_DIR;
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
        let key_backups = backup_dir.join(KEYS_DIR);
        let mut key_backups = if key_backups.exists() {
            let key_backups = open_backup_engine(&key_backups)?;
            // Taken after the vault's: an older one means the last backup
            // stopped between the two, and tokens stored since would lack
            // their keys. Checked before anything is overwritten.
            if latest_backup(&key_backups)?.timestamp_unix < info.timestamp_unix {
                return Err(StoreError::Engine(
                    "the latest backup is incomplete (its keys were not backed up); take a new backup".into(),
                ));
            }
            Some(key_backups)
        } else {
            None
        };
        backups
            .restore_from_latest_backup(db_dir, db_dir, &RestoreOptions::default())
            .map_err(engine)?;
        let keys_dir = db_dir.join(KEYS_DIR);
        if let Some(key_backups) = key_backups.as_mut() {
            key_backups
                .restore_from_latest_backup(&keys_dir, &keys_dir, &RestoreOptions::default())
                .map_err(engine)?;
        } else if keys_dir.exists() {
            // A backup from before the key instance holds the keys in the
            // vault instance; the keys now in the directory are not its.
            std::fs::remove_dir_all(&keys_dir).map_err(|e| {
                StoreError::Engine(format!("cannot remove {}: {e}", keys_dir.display()))
            })?;
        }
        Ok(info)
    }
}

pub(super) fn open_backup_engine(dir: &Path) -> Result<BackupEngine, StoreError> {
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
        let mut key_backups = open_backup_engine(&dir.join(KEYS_DIR))?;
        key_backups
            .create_new_backup_flush(&self.keys, true)
            .map_err(engine)?;
        latest_backup(&backups)
    }
}
