//! An in-memory [`Store`], for the service's unit tests and for tests of
//! code above the store that need no engine (`testing` feature): the same
//! contract as RocksDB and PostgreSQL, shown by the same conformance suite.
//!
//! It keeps everything in one map set under one lock, so each call is
//! atomic, and keeps nothing when dropped. It is never a production store:
//! nothing is durable, and `create_backup` is refused.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use async_trait::async_trait;
use parking_lot::Mutex;

use super::{
    sealing_key_of, BackupInfo, Conflict, IndexEntry, InsertOutcome, NewToken, PendingPurges,
    Store, StoreError, TokenPage, TokenRecord, TombstoneHasher,
};
use crate::crypto::{IndexKey, SubjectHash};
use crate::kek::WrappedKey;

#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    system_key: Option<WrappedKey>,
    subject_keys: BTreeMap<SubjectHash, WrappedKey>,
    /// In token order, so a subject's pages come in a stable order.
    tokens: BTreeMap<String, TokenRecord>,
    index: HashMap<IndexKey, IndexEntry>,
    tombstones: HashSet<[u8; 32]>,
    kek_rotation: Option<u32>,
    ledger_applied: BTreeMap<u64, [u8; 32]>,
    /// Forgets a purge still owes: (subject, erased at).
    pending_purges: Vec<(SubjectHash, i64)>,
    audit: BTreeMap<u64, Vec<u8>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}

impl State {
    /// The conflicts of a batch against what is stored and against its own
    /// earlier items.
    fn conflicts(&self, batch: &[NewToken], now: i64) -> Vec<Conflict> {
        let mut tokens = HashSet::new();
        let mut index_keys = HashSet::new();
        let mut conflicts = Vec::new();
        for (item, new) in batch.iter().enumerate() {
            if self.tokens.contains_key(&new.token) || !tokens.insert(new.token.as_str()) {
                conflicts.push(Conflict::TokenTaken { item });
                continue;
            }
            let Some(key) = &new.index_key else {
                continue;
            };
            match self.index.get(key) {
                Some(existing) if !existing.is_expired(now) => {
                    conflicts.push(Conflict::IndexTaken {
                        item,
                        existing: existing.clone(),
                    });
                }
                _ if !index_keys.insert(key) => conflicts.push(Conflict::TokenTaken { item }),
                _ => {}
            }
        }
        conflicts
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn system_key(&self) -> Result<Option<WrappedKey>, StoreError> {
        Ok(self.state.lock().system_key.clone())
    }

    async fn init_system_key(&self, key: WrappedKey) -> Result<WrappedKey, StoreError> {
        Ok(self.state.lock().system_key.get_or_insert(key).clone())
    }

    async fn subject_keys(
        &self,
        subjects: &[SubjectHash],
    ) -> Result<Vec<Option<WrappedKey>>, StoreError> {
        let state = self.state.lock();
        Ok(subjects
            .iter()
            .map(|subject| state.subject_keys.get(subject).cloned())
            .collect())
    }

    async fn insert_subject_key(
        &self,
        subject: SubjectHash,
        key: WrappedKey,
    ) -> Result<WrappedKey, StoreError> {
        Ok(self
            .state
            .lock()
            .subject_keys
            .entry(subject)
            .or_insert(key)
            .clone())
    }

    async fn index_entries(
        &self,
        keys: &[IndexKey],
    ) -> Result<Vec<Option<IndexEntry>>, StoreError> {
        let state = self.state.lock();
        Ok(keys
            .iter()
            .map(|key| state.index.get(key).cloned())
            .collect())
    }

    async fn token_records(
        &self,
        tokens: &[String],
    ) -> Result<Vec<Option<TokenRecord>>, StoreError> {
        let state = self.state.lock();
        Ok(tokens
            .iter()
            .map(|token| state.tokens.get(token).cloned())
            .collect())
    }

    async fn subject_keys_after(
        &self,
        after: Option<SubjectHash>,
        limit: usize,
    ) -> Result<Vec<(SubjectHash, WrappedKey)>, StoreError> {
        let state = self.state.lock();
        let range = match after {
            Some(after) => state
                .subject_keys
                .range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
            None => state.subject_keys.range(..),
        };
        Ok(range
            .take(limit)
            .map(|(subject, key)| (*subject, key.clone()))
            .collect())
    }

    async fn replace_subject_key(
        &self,
        subject: SubjectHash,
        expected: &WrappedKey,
        new: WrappedKey,
    ) -> Result<bool, StoreError> {
        let mut state = self.state.lock();
        match state.subject_keys.get_mut(&subject) {
            Some(stored) if stored == expected => {
                *stored = new;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn replace_system_key(
        &self,
        expected: &WrappedKey,
        new: WrappedKey,
    ) -> Result<bool, StoreError> {
        let mut state = self.state.lock();
        match &mut state.system_key {
            Some(stored) if stored == expected => {
                *stored = new;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn kek_rotation(&self) -> Result<Option<u32>, StoreError> {
        Ok(self.state.lock().kek_rotation)
    }

    async fn set_kek_rotation(&self, target: Option<u32>) -> Result<(), StoreError> {
        self.state.lock().kek_rotation = target;
        Ok(())
    }

    async fn ledger_applied(&self) -> Result<Vec<(u64, [u8; 32])>, StoreError> {
        Ok(self
            .state
            .lock()
            .ledger_applied
            .iter()
            .map(|(seq, mac)| (*seq, *mac))
            .collect())
    }

    async fn mark_ledger_applied(
        &self,
        entries: Vec<(u64, [u8; 32])>,
        replace: bool,
    ) -> Result<(), StoreError> {
        let mut state = self.state.lock();
        if replace {
            state.ledger_applied.clear();
        }
        state.ledger_applied.extend(entries);
        Ok(())
    }

    async fn insert_tokens(
        &self,
        batch: Vec<NewToken>,
        sealed_under: &[(SubjectHash, &WrappedKey)],
        now: i64,
    ) -> Result<InsertOutcome, StoreError> {
        let mut state = self.state.lock();
        for new in &batch {
            let subject = new.record.subject;
            let sealed = sealing_key_of(sealed_under, subject)?;
            if state.subject_keys.get(&subject) != Some(sealed) {
                return Err(StoreError::SubjectErased);
            }
        }
        let conflicts = state.conflicts(&batch, now);
        if !conflicts.is_empty() {
            return Ok(InsertOutcome::Conflicts(conflicts));
        }
        for new in batch {
            if let Some(key) = new.index_key {
                let entry = IndexEntry {
                    token: new.token.clone(),
                    expires_at: new.record.expires_at,
                };
                state.index.insert(key, entry);
            }
            state.tokens.insert(new.token, new.record);
        }
        Ok(InsertOutcome::Committed)
    }

    async fn subject_tokens(
        &self,
        subject: SubjectHash,
        cursor: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<TokenPage, StoreError> {
        let limit = limit.max(1);
        let after = match cursor {
            Some(bytes) => {
                Some(String::from_utf8(bytes).map_err(|_| StoreError::Corrupt("export cursor"))?)
            }
            None => None,
        };
        let state = self.state.lock();
        let mut tokens: Vec<(String, TokenRecord)> = state
            .tokens
            .iter()
            .filter(|(token, record)| {
                record.subject == subject && after.as_ref().is_none_or(|after| *token > after)
            })
            .take(limit + 1)
            .map(|(token, record)| (token.clone(), record.clone()))
            .collect();
        let next = if tokens.len() > limit {
            tokens.truncate(limit);
            tokens.last().map(|(token, _)| token.clone().into_bytes())
        } else {
            None
        };
        Ok(TokenPage { tokens, next })
    }

    async fn forget_subject(
        &self,
        subject: SubjectHash,
        hasher: TombstoneHasher,
        now: i64,
    ) -> Result<u64, StoreError> {
        let mut state = self.state.lock();
        let had_key = state.subject_keys.remove(&subject).is_some();
        let erased: Vec<String> = state
            .tokens
            .iter()
            .filter(|(_, record)| record.subject == subject)
            .map(|(token, _)| token.clone())
            .collect();
        for token in &erased {
            state.tokens.remove(token);
            state.tombstones.insert(hasher(token));
        }
        let erased_set: HashSet<&String> = erased.iter().collect();
        state
            .index
            .retain(|_, entry| !erased_set.contains(&entry.token));
        if had_key || !erased.is_empty() {
            state.pending_purges.push((subject, now));
        }
        Ok(erased.len() as u64)
    }

    async fn tombstones(&self, hashes: &[[u8; 32]]) -> Result<Vec<bool>, StoreError> {
        let state = self.state.lock();
        Ok(hashes
            .iter()
            .map(|hash| state.tombstones.contains(hash))
            .collect())
    }

    /// Nothing erased is kept anywhere but in the maps, which forget it at
    /// once: a purge only settles what it owed.
    async fn purge(&self) -> Result<(), StoreError> {
        self.state.lock().pending_purges.clear();
        Ok(())
    }

    async fn purge_erased_keys(&self, _subject: SubjectHash) -> Result<(), StoreError> {
        Ok(())
    }

    fn erased_keys_leave_no_file(&self) -> bool {
        true
    }

    async fn pending_purges(&self) -> Result<PendingPurges, StoreError> {
        let state = self.state.lock();
        Ok(PendingPurges {
            count: state.pending_purges.len() as u64,
            oldest_erased_at: state.pending_purges.iter().map(|(_, at)| *at).min(),
        })
    }

    async fn purge_owed(&self, subject: SubjectHash) -> Result<Option<i64>, StoreError> {
        Ok(self
            .state
            .lock()
            .pending_purges
            .iter()
            .filter(|(owed, _)| *owed == subject)
            .map(|(_, at)| *at)
            .min())
    }

    async fn create_backup(&self, _dir: &Path) -> Result<BackupInfo, StoreError> {
        Err(StoreError::Unsupported(
            "the in-memory store keeps nothing to back up; use RocksDB or PostgreSQL",
        ))
    }

    async fn append_audit(&self, records: Vec<(u64, Vec<u8>)>) -> Result<(), StoreError> {
        let mut state = self.state.lock();
        if let Some((seq, _)) = records
            .iter()
            .find(|(seq, bytes)| state.audit.get(seq).is_some_and(|stored| stored != bytes))
        {
            return Err(StoreError::AuditConflict(*seq));
        }
        state.audit.extend(records);
        Ok(())
    }

    async fn audit_records(
        &self,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        Ok(self
            .state
            .lock()
            .audit
            .range(from_seq..)
            .take(limit)
            .map(|(seq, bytes)| (*seq, bytes.clone()))
            .collect())
    }

    async fn last_audit_record(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        Ok(self
            .state
            .lock()
            .audit
            .last_key_value()
            .map(|(seq, bytes)| (*seq, bytes.clone())))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn the_memory_store_passes_the_store_conformance_suite() {
        super::super::conformance::run_all(|| {
            std::future::ready(Arc::new(MemoryStore::new()) as Arc<dyn Store>)
        })
        .await;
    }
}
