//! `[storage]` and `[cache]`: the store's backend (embedded RocksDB or a
//! shared PostgreSQL) with its durability, block cache and disk reserve,
//! and how many subjects' unwrapped data keys stay in memory. Schema and
//! defaults only: the store itself is opened by `crate::store`.

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// "rocksdb" (embedded, the default) or "postgres" (shared by replicas).
    #[serde(default = "default_backend")]
    pub backend: String,
    /// Sync the write-ahead log before a Tokenize is acknowledged. Turning
    /// it off trades the last acknowledged writes on a machine crash for
    /// speed; a process crash alone loses nothing either way.
    #[serde(default = "default_true")]
    pub sync_writes: bool,
    /// RocksDB block cache size in MiB.
    #[serde(default = "default_block_cache_mb")]
    pub block_cache_mb: usize,
    /// Bytes held in `<data_dir>/disk-reserve`: when free space falls
    /// below this, the file is deleted (room for audit records and
    /// erasures) and Tokenize is refused until free space is twice this
    /// again (see `store::disk`). 0 turns the guard off.
    #[serde(default = "default_disk_reserve_bytes")]
    pub disk_reserve_bytes: u64,
    /// The PostgreSQL store, for `backend = "postgres"`.
    pub postgres: Option<crate::store::postgres::PostgresConfig>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: default_backend(),
            sync_writes: true,
            block_cache_mb: default_block_cache_mb(),
            disk_reserve_bytes: default_disk_reserve_bytes(),
            postgres: None,
        }
    }
}

impl StorageConfig {
    /// The PostgreSQL store's settings when it is the backend.
    pub fn postgres_options(
        &self,
    ) -> Result<Option<crate::store::postgres::PostgresOptions>, ConfigError> {
        if self.backend != "postgres" {
            return Ok(None);
        }
        let postgres = self.postgres.as_ref().ok_or_else(|| {
            ConfigError::Invalid(
                "storage.backend = \"postgres\" needs a [storage.postgres] table".into(),
            )
        })?;
        postgres
            .options(self.sync_writes)
            .map(Some)
            .map_err(ConfigError::Invalid)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// How many subjects' unwrapped data keys stay in memory.
    #[serde(default = "default_cache_subjects")]
    pub max_subjects: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_subjects: default_cache_subjects(),
        }
    }
}

fn default_backend() -> String {
    "rocksdb".to_string()
}

fn default_true() -> bool {
    true
}

fn default_block_cache_mb() -> usize {
    128
}

fn default_disk_reserve_bytes() -> u64 {
    64 << 20
}

fn default_cache_subjects() -> usize {
    100_000
}
