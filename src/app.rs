//! The composition root: builds a vault from a configuration. It owns the
//! choice of backends (the key provider, RocksDB or PostgreSQL, the disk
//! guard) and the order they are opened in; it must hold no service logic,
//! which is `vault`'s, and nothing below it may reach up to it.

use std::path::Path;
use std::sync::Arc;

use crate::config::{AuditDurability, Config};
use crate::kek;
use crate::store::counters::WindowCounters;
use crate::store::disk::DiskGuard;
use crate::store::postgres::PostgresStore;
use crate::store::rocks::{RocksOptions, RocksStore};
use crate::store::Store;
use crate::vault::erasure::PhysicalPurge;
use crate::vault::{Vault, VaultError, DEV_ADMIN_PRINCIPAL};

/// Opens the configured store and key provider, loads (or, on first start,
/// creates) the system key and replays the erasure ledger: the vault that
/// `serve` and the offline commands run.
pub async fn open_vault(config: &Config, dev: bool) -> Result<Vault, VaultError> {
    // Built first: a bad [[formats]] or [[detectors]] entry fails before
    // any key work.
    let templates = Arc::new(
        config
            .templates()
            .map_err(|e| VaultError::InvalidArgument(e.to_string()))?,
    );
    let scanner = config
        .scanner_with(&templates)
        .map_err(|e| VaultError::InvalidArgument(e.to_string()))?;
    crate::store::create_private_dir(&config.data_dir).map_err(|e| {
        VaultError::Internal(format!(
            "cannot create data dir {}: {e}",
            config.data_dir.display()
        ))
    })?;
    let kek = kek::open_provider(&config.kek, &config.data_dir, dev).await?;
    if !kek.is_secure() {
        tracing::warn!(
            provider = kek.kind().name(),
            "the KEK is held in this process (local key file): for development only; use kek.provider = \"vault\" in production"
        );
    }
    let (store, counters) = open_store(&config.data_dir, config).await?;
    let mut vault =
        Vault::with_parts(store, kek, config.cache.max_subjects, config.limits.clone()).await?;
    vault.set_counters(counters);
    let mut new_value_limits = config.new_value_limits.clone();
    if dev {
        // `serve --dev`'s admin key loads test data in bulk.
        new_value_limits
            .principals
            .entry(DEV_ADMIN_PRINCIPAL.to_string())
            .or_insert_with(crate::config::NewValueOverride::bulk);
    }
    vault.set_new_value_limits(new_value_limits);
    vault.set_physical_purge(PhysicalPurge {
        within_seconds: i64::try_from(config.erasure.purge_within_seconds).unwrap_or(i64::MAX),
        full_at_return: config.erasure.full_purge_at_return,
    });
    vault.set_text_rules(templates, scanner);
    if config.anomaly.enabled {
        vault.set_anomaly(Arc::new(crate::anomaly::Monitor::new(
            config.anomaly.clone(),
            Arc::new(crate::anomaly::WallClock),
        )));
    }
    // Replayed before anything is served.
    vault.open_ledger(config).await?;
    Ok(vault)
}

/// The configured store, and the window counters kept in it (shared by
/// the replicas on PostgreSQL, persisted on RocksDB).
async fn open_store(
    data_dir: &Path,
    config: &Config,
) -> Result<(Arc<dyn Store>, Arc<dyn WindowCounters>), VaultError> {
    let postgres = config
        .storage
        .postgres_options()
        .map_err(|e| VaultError::InvalidArgument(e.to_string()))?;
    if let Some(postgres) = postgres {
        let store = Arc::new(PostgresStore::open(&postgres).await?);
        return Ok((Arc::clone(&store) as Arc<dyn Store>, store));
    }
    let options = RocksOptions {
        sync_writes: config.storage.sync_writes,
        block_cache_bytes: config.storage.block_cache_mb * 1024 * 1024,
        sync_audit: config.audit.durability == AuditDurability::Sync,
    };
    let disk = match config.storage.disk_reserve_bytes {
        0 => None,
        reserve => Some(DiskGuard::start(data_dir, reserve)?),
    };
    let store = RocksStore::open_guarded(&data_dir.join("rocksdb"), &options, disk)?;
    let counters = Arc::new(store.counters());
    Ok((Arc::new(store), counters))
}
