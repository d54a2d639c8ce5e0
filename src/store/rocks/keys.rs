//! The key instance: the wrapped subject keys in a RocksDB instance of
//! their own, in `keys/` under the store's directory. It owns opening that
//! instance and moving the keys of a store from before it out of the vault
//! instance; it must never hold anything but wrapped keys and purge
//! markers.
//!
//! Why a second instance: a forget returns once no file holds the
//! subject's wrapped key, and RocksDB deletes no obsolete file numbered
//! above the outputs of a job still running (facebook/rocksdb#10533).
//! File numbers are shared by the column families of an instance, so with
//! the keys beside the tokens a forget's key purge waited for whatever
//! `tokens` compaction was running: after a bulk load, or while a full
//! purge rewrote a large store, longer than `OBSOLETE_FILES_DEADLINE`,
//! and the forget failed. Alone, the keys' compactions are of small files.
//!
//! No write batch spans the two instances, so the writer orders them:
//! - a new key is written before the tokens sealed under it, with the same
//!   sync, so no stored token lacks its key after a crash;
//! - a forget deletes the key before the tokens: a crash between leaves
//!   ciphertexts without a key (noise), which the erasure ledger's replay
//!   erases at the next start, since the entry was not marked applied;
//! - a backup copies the vault instance, then the key instance: a key
//!   added between is harmless, a key forgotten between leaves its tokens
//!   unreadable, and the ledger erases them at the restore.

use std::path::Path;

use rocksdb::{Cache, ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};

use super::engine;
use super::purge::Instance;
use super::schema::{family_options, CF_META, CF_SUBJECTS, COLUMN_FAMILIES, KEY_FAMILIES};
use crate::store::StoreError;

/// Opens (or creates) the key instance at `path`.
pub(super) fn open(db_options: &Options, path: &Path, cache: &Cache) -> Result<DB, StoreError> {
    let families =
        KEY_FAMILIES.map(|name| ColumnFamilyDescriptor::new(name, family_options(cache, name)));
    DB::open_cf_descriptors(db_options, path, families).map_err(engine)
}

/// Moves the keys of a store from before the key instance out of the
/// vault instance's `subjects` family into `keys`, then drops that family
/// and waits until no vault file holds a key. Runs at open, before the
/// store serves. Safe to repeat: a crash before the drop copies the same
/// keys again at the next start.
pub(super) fn move_keys_out(vault: &mut DB, vault_dir: &Path, keys: &DB) -> Result<(), StoreError> {
    let missing = || StoreError::Engine(format!("column family {CF_SUBJECTS} missing"));
    let mut batch = WriteBatch::default();
    let mut moved = 0u64;
    {
        let old = vault.cf_handle(CF_SUBJECTS).ok_or_else(missing)?;
        let new = keys.cf_handle(CF_SUBJECTS).ok_or_else(missing)?;
        for entry in vault.iterator_cf(old, rocksdb::IteratorMode::Start) {
            let (subject, wrapped) = entry.map_err(engine)?;
            batch.put_cf(new, subject, wrapped);
            moved += 1;
        }
    }
    let mut synced = WriteOptions::default();
    synced.set_sync(true);
    keys.write_opt(batch, &synced).map_err(engine)?;
    let families: Vec<&'static str> = COLUMN_FAMILIES
        .iter()
        .copied()
        .chain([CF_SUBJECTS])
        .collect();
    let (old_tables, wals) = {
        let instance = Instance {
            db: vault,
            dir: vault_dir,
            families: &families,
            marker_family: CF_META,
        };
        let old_tables = instance.live_tables_of(CF_SUBJECTS)?;
        let (wals, _) = instance.flush_everything()?;
        (old_tables, wals)
    };
    vault.drop_cf(CF_SUBJECTS).map_err(engine)?;
    // The dropped family's files and every WAL from before held keys.
    Instance {
        db: vault,
        dir: vault_dir,
        families: &COLUMN_FAMILIES,
        marker_family: CF_META,
    }
    .wait_until_gone(&wals, &old_tables, &[CF_SUBJECTS])?;
    tracing::info!(moved, "subject keys moved to the key instance");
    Ok(())
}
