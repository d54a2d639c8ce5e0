//! Window counters in the RocksDB store, so a restart within a window does
//! not refill a limit: one `meta` entry per key, `rate/` ‖ key →
//! window_start i64 BE ‖ used u64 BE ‖ ends_at i64 BE. A charge reads,
//! decides and writes under one lock (only this process opens the
//! directory). Entries of windows that are over are dropped by the `meta`
//! family's compaction filter ([`expired`]).

use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use rocksdb::WriteBatch;

use super::{engine, Inner, RocksStore, CF_META};
use crate::store::counters::{decide, Charge, Charged, WindowCounters};
use crate::store::StoreError;

const PREFIX: &[u8] = b"rate/";

/// The store's counters; make one per store ([`RocksStore::counters`]).
pub struct RocksCounters {
    inner: Arc<Inner>,
    lock: Mutex<()>,
}

impl RocksStore {
    /// The window counters kept in this store.
    pub fn counters(&self) -> RocksCounters {
        RocksCounters {
            inner: Arc::clone(&self.inner),
            lock: Mutex::new(()),
        }
    }
}

fn entry_key(key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(PREFIX.len() + key.len());
    out.extend_from_slice(PREFIX);
    out.extend_from_slice(key.as_bytes());
    out
}

fn decode(value: &[u8]) -> Option<(i64, u64, i64)> {
    let start = i64::from_be_bytes(value.get(0..8)?.try_into().ok()?);
    let used = u64::from_be_bytes(value.get(8..16)?.try_into().ok()?);
    let ends = i64::from_be_bytes(value.get(16..24)?.try_into().ok()?);
    Some((start, used, ends))
}

/// Whether a `meta` entry is a counter whose window is over at `now`.
pub(super) fn expired(key: &[u8], value: &[u8], now: i64) -> bool {
    key.starts_with(PREFIX) && decode(value).is_some_and(|(_, _, ends)| ends <= now)
}

#[async_trait]
impl WindowCounters for RocksCounters {
    async fn charge(&self, charges: &[Charge], _now: i64) -> Result<Charged, StoreError> {
        let _held = self.lock.lock();
        let cf = self.inner.cf(CF_META)?;
        let keys: Vec<Vec<u8>> = charges.iter().map(|c| entry_key(&c.key)).collect();
        let used = self
            .inner
            .get_many(CF_META, &keys, |bytes| Ok(decode(bytes)))?
            .into_iter()
            .zip(charges)
            .map(|(stored, charge)| match stored.flatten() {
                Some((start, used, _)) if start == charge.window_start => used,
                _ => 0,
            })
            .collect::<Vec<u64>>();
        let decided = decide(charges, &used);
        if let Charged::Admitted(after) = &decided {
            let mut batch = WriteBatch::default();
            for ((key, charge), after) in keys.iter().zip(charges).zip(after) {
                let mut value = Vec::with_capacity(24);
                value.extend_from_slice(&charge.window_start.to_be_bytes());
                value.extend_from_slice(&after.to_be_bytes());
                value.extend_from_slice(
                    &charge
                        .window_start
                        .saturating_add(charge.window_seconds)
                        .to_be_bytes(),
                );
                batch.put_cf(cf, key, value);
            }
            self.inner
                .db
                .write_opt(batch, &self.inner.write_options)
                .map_err(engine)?;
        }
        Ok(decided)
    }
}

#[cfg(test)]
mod tests {
    use super::super::RocksOptions;
    use super::*;

    #[tokio::test]
    async fn a_charge_over_any_limit_charges_none_and_a_reopen_keeps_the_counts() {
        let root = tempfile::tempdir().expect("tempdir");
        let options = RocksOptions {
            sync_writes: false,
            sync_audit: true,
            block_cache_bytes: 1 << 20,
        };
        {
            let store = RocksStore::open(root.path(), &options).expect("open");
            crate::store::counters::a_charge_over_any_limit_charges_none_in(&store.counters())
                .await;
        }
        let store = RocksStore::open(root.path(), &options).expect("reopen");
        let full = Charge {
            key: "a".into(),
            window_start: 60,
            window_seconds: 60,
            amount: 1,
            limit: 100,
        };
        assert_eq!(
            store.counters().charge(&[full], 62).await.expect("charge"),
            Charged::Refused {
                index: 0,
                used: 100
            },
            "the window's use survives a reopen"
        );
    }
}
