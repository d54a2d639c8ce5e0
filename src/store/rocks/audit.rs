//! Reading the `audit` family: the store's scans of its own records, and
//! the read-only openings for tools and tests ([`open_for_inspection`],
//! [`AuditReader`]). Reads only: audit records are written by the writer
//! (or `append_audit`), never from here.

use std::path::Path;

use rocksdb::{Cache, ColumnFamily, ColumnFamilyDescriptor, Options, DB};

use super::schema::{family_options, CF_AUDIT, CF_META, SYSTEM_KEY};
use super::{engine, Inner};
use crate::kek::WrappedKey;
use crate::store::StoreError;

impl Inner {
    pub(super) fn audit_records(
        &self,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        audit_scan(&self.db, self.cf(CF_AUDIT)?, from_seq, limit)
    }

    pub(super) fn last_audit_record(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let cf = self.cf(CF_AUDIT)?;
        match self.db.iterator_cf(cf, rocksdb::IteratorMode::End).next() {
            Some(entry) => {
                let (key, value) = entry.map_err(engine)?;
                Ok(Some((audit_seq(&key)?, value.to_vec())))
            }
            None => Ok(None),
        }
    }
}

/// Up to `limit` audit records from `from_seq` on.
fn audit_scan(
    db: &DB,
    cf: &ColumnFamily,
    from_seq: u64,
    limit: usize,
) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
    let start = from_seq.to_be_bytes();
    let mode = rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward);
    let mut page = Vec::with_capacity(limit.min(1024));
    for entry in db.iterator_cf(cf, mode).take(limit) {
        let (key, value) = entry.map_err(engine)?;
        page.push((audit_seq(&key)?, value.to_vec()));
    }
    Ok(page)
}

fn audit_seq(key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| StoreError::Corrupt("audit key"))?;
    Ok(u64::from_be_bytes(bytes))
}

/// Opens a stopped (or, read-only, a running) store's database with every
/// column family it has and the options this store gives them, for tools
/// and tests that read the files directly. The options matter: `meta`
/// holds merge records (the window counters), and a WAL with merges does
/// not replay without the family's merge operator.
pub fn open_for_inspection(path: &Path, read_only: bool) -> Result<DB, StoreError> {
    let db_options = Options::default();
    let names = DB::list_cf(&db_options, path).map_err(engine)?;
    let cache = Cache::new_lru_cache(1 << 20);
    let families = names
        .iter()
        .map(|name| ColumnFamilyDescriptor::new(name, family_options(&cache, name)));
    if read_only {
        DB::open_cf_descriptors_read_only(&db_options, path, families, false).map_err(engine)
    } else {
        DB::open_cf_descriptors(&db_options, path, families).map_err(engine)
    }
}

/// The `audit` family of a store opened read-only, for `tokenvault audit
/// verify`: RocksDB's read-only mode takes no lock, so it also works
/// beside a running server (it then sees the records as of opening).
pub struct AuditReader {
    db: DB,
}

impl AuditReader {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let options = Options::default();
        let families = DB::list_cf(&options, path).map_err(engine)?;
        if !families.iter().any(|f| f == CF_AUDIT) {
            return Err(StoreError::Engine(format!(
                "{} has no audit records (no `{CF_AUDIT}` column family)",
                path.display()
            )));
        }
        Ok(AuditReader {
            db: open_for_inspection(path, true)?,
        })
    }

    /// The wrapped system key (the audit chain's keys derive from it).
    pub fn system_key(&self) -> Result<Option<WrappedKey>, StoreError> {
        let Some(cf) = self.db.cf_handle(CF_META) else {
            return Ok(None);
        };
        match self.db.get_pinned_cf(cf, SYSTEM_KEY).map_err(engine)? {
            Some(bytes) => WrappedKey::decode(&bytes)
                .map(Some)
                .map_err(|_| StoreError::Corrupt("system key")),
            None => Ok(None),
        }
    }

    /// Up to `limit` records from `from_seq` on, in sequence order.
    pub fn records(&self, from_seq: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let cf = self
            .db
            .cf_handle(CF_AUDIT)
            .ok_or(StoreError::Engine(format!(
                "column family {CF_AUDIT} missing"
            )))?;
        audit_scan(&self.db, cf, from_seq, limit)
    }
}
