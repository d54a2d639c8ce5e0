//! The group-commit writer: the requests callers queue, the writer thread
//! that takes them a group at a time, checks each against the database and
//! the group so far, and commits the group in one batch. Tokens, keys,
//! forgets and ledger marks are written here and only here (the purger
//! writes only its own meta keys, unsynced audit records go in from
//! `append_audit`): a write of those around this thread would make "check,
//! then write" no longer atomic.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc;

use rocksdb::WriteBatch;
use tokio::sync::oneshot;

use super::schema::{
    deterministic_key, ledger_mark_key, token_list_key, CF_AUDIT, CF_INDEX, CF_META, CF_SUBJECTS,
    CF_TOKENS, CF_TOMBSTONES, LEDGER_APPLIED, LEDGER_APPLIED_END,
};
use super::{engine, purge, Inner, RocksStore};
use crate::crypto::{IndexKey, SubjectHash};
use crate::kek::WrappedKey;
use crate::store::{Conflict, IndexEntry, InsertOutcome, NewToken, StoreError, TombstoneHasher};

/// Most requests committed in one write group.
const MAX_GROUP: usize = 256;

/// A write for the writer thread, with where to send its outcome.
pub(super) enum WriteRequest {
    Tokens {
        batch: Vec<NewToken>,
        /// The wrapped key each subject's tokens were sealed under.
        sealed_under: Vec<(SubjectHash, WrappedKey)>,
        now: i64,
        reply: oneshot::Sender<Result<InsertOutcome, StoreError>>,
    },
    KeyIfAbsent {
        family: &'static str,
        key: Vec<u8>,
        wrapped: WrappedKey,
        reply: oneshot::Sender<Result<WrappedKey, StoreError>>,
    },
    ReplaceKey {
        family: &'static str,
        key: Vec<u8>,
        expected: WrappedKey,
        new: WrappedKey,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    PutMeta {
        key: &'static [u8],
        value: Option<Vec<u8>>,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Forget {
        subject: SubjectHash,
        hasher: TombstoneHasher,
        now: i64,
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
    Audit {
        records: Vec<(u64, Vec<u8>)>,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    LedgerMarks {
        entries: Vec<(u64, [u8; 32])>,
        replace: bool,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Window-counter merges (`counters`): nobody waits for them; they are
    /// written with the group, so with the token batch sent after them.
    Counters { merges: Vec<(Vec<u8>, Vec<u8>)> },
}

impl RocksStore {
    /// Queues a write and waits for the writer thread's answer.
    pub(super) async fn write<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> WriteRequest,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Engine("the writer thread has stopped".into());
        let writer = self.writer.as_ref().ok_or_else(stopped)?;
        writer.send(make(reply)).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

impl Inner {
    /// The writer loop: takes every queued request, commits them as one
    /// group, answers each. Ends when the store is dropped.
    pub(super) fn run_writer(&self, queue: mpsc::Receiver<WriteRequest>) {
        while let Ok(first) = queue.recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match queue.try_recv() {
                    Ok(next) => group.push(next),
                    Err(_) => break,
                }
            }
            self.commit_group(group);
        }
    }

    fn commit_group(&self, group: Vec<WriteRequest>) {
        // Checked once per group, and only for groups that add data.
        let adds_data = group.iter().any(|request| {
            matches!(
                request,
                WriteRequest::Tokens { .. } | WriteRequest::KeyIfAbsent { .. }
            )
        });
        let disk_full = match (&self.disk, adds_data) {
            (Some(disk), true) => disk.admit().err(),
            _ => None,
        };
        let mut state = GroupState::default();
        let mut waiting = Vec::with_capacity(group.len());
        // The group's forgets share one write per instance (and so one sync
        // each) until a request that writes tokens or keys, which must land
        // after them. The others (audit, ledger marks, counters, meta) touch
        // nothing a forget does, and none refers to a forget not yet
        // answered, so they may land before it.
        let mut forgets: Vec<ForgetRequest> = Vec::new();
        for request in group {
            let after_forgets = matches!(
                request,
                WriteRequest::Tokens { .. }
                    | WriteRequest::KeyIfAbsent { .. }
                    | WriteRequest::ReplaceKey { .. }
            );
            if after_forgets && !forgets.is_empty() {
                self.forget_all(std::mem::take(&mut forgets));
            }
            let request = match (&disk_full, request) {
                (Some(full), WriteRequest::Tokens { reply, .. }) => {
                    let _ = reply.send(Err(full.clone()));
                    continue;
                }
                (Some(full), WriteRequest::KeyIfAbsent { reply, .. }) => {
                    let _ = reply.send(Err(full.clone()));
                    continue;
                }
                (_, request) => request,
            };
            match request {
                WriteRequest::Forget {
                    subject,
                    hasher,
                    now,
                    reply,
                } => {
                    // A barrier: tokens and keys the group staged before
                    // land first, so the forget sees (and erases) them.
                    if state.stages_subject_data() {
                        self.commit(std::mem::take(&mut state), std::mem::take(&mut waiting));
                    }
                    forgets.push(ForgetRequest {
                        subject,
                        hasher,
                        now,
                        reply,
                    });
                }
                WriteRequest::Tokens {
                    batch,
                    sealed_under,
                    now,
                    reply,
                } => match self.stage_tokens(&mut state, batch, &sealed_under, now) {
                    Ok(None) => waiting.push(Answer::Committed(reply)),
                    other => {
                        let _ = reply
                            .send(other.map(|c| InsertOutcome::Conflicts(c.unwrap_or_default())));
                    }
                },
                WriteRequest::KeyIfAbsent {
                    family,
                    key,
                    wrapped,
                    reply,
                } => match self.stage_key(&mut state, family, key, wrapped) {
                    Ok(KeyStaged::Existing(existing)) => {
                        let _ = reply.send(Ok(existing));
                    }
                    Ok(KeyStaged::InThisGroup(in_force)) => {
                        waiting.push(Answer::Key(reply, in_force))
                    }
                    Err(error) => {
                        let _ = reply.send(Err(error));
                    }
                },
                WriteRequest::ReplaceKey {
                    family,
                    key,
                    expected,
                    new,
                    reply,
                } => match self.stage_replace(&mut state, family, key, &expected, new) {
                    Ok(true) => waiting.push(Answer::Replaced(reply)),
                    other => {
                        let _ = reply.send(other);
                    }
                },
                WriteRequest::PutMeta { key, value, reply } => match self.cf(CF_META) {
                    Ok(cf) => {
                        match value {
                            Some(value) => state.batch.put_cf(cf, key, value),
                            None => state.batch.delete_cf(cf, key),
                        }
                        waiting.push(Answer::Done(reply));
                    }
                    Err(error) => {
                        let _ = reply.send(Err(error));
                    }
                },
                WriteRequest::LedgerMarks {
                    entries,
                    replace,
                    reply,
                } => match self.cf(CF_META) {
                    Ok(cf) => {
                        if replace {
                            state
                                .batch
                                .delete_range_cf(cf, LEDGER_APPLIED, LEDGER_APPLIED_END);
                        }
                        for (seq, mac) in entries {
                            state.batch.put_cf(cf, ledger_mark_key(seq), mac);
                        }
                        waiting.push(Answer::Done(reply));
                    }
                    Err(error) => {
                        let _ = reply.send(Err(error));
                    }
                },
                WriteRequest::Counters { merges } => match self.cf(CF_META) {
                    Ok(cf) => {
                        for (key, value) in merges {
                            state.batch.merge_cf(cf, key, value);
                        }
                        state.unanswered_writes = true;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "window counters not stored; a restart may refill them")
                    }
                },
                WriteRequest::Audit { records, reply } => match self.cf(CF_AUDIT) {
                    Ok(cf) => {
                        for (seq, record) in records {
                            state.batch.put_cf(cf, seq.to_be_bytes(), record);
                        }
                        state.carries_audit = true;
                        waiting.push(Answer::Done(reply));
                    }
                    Err(error) => {
                        let _ = reply.send(Err(error));
                    }
                },
            }
        }
        if !forgets.is_empty() {
            self.forget_all(forgets);
        }
        self.commit(state, waiting);
    }

    /// Writes what a group staged and answers its waiting requests.
    fn commit(&self, mut state: GroupState, waiting: Vec<Answer>) {
        if waiting.is_empty() && !state.unanswered_writes {
            return;
        }
        let write_options = if state.carries_audit {
            &self.synced_write_options
        } else {
            &self.write_options
        };
        let written = self.token_puts_in_key_order(&mut state).and_then(|()| {
            // Keys first, with the same sync: no token lands without the
            // key it was sealed under (see `keys`).
            if !state.keys_batch.is_empty() {
                self.keys
                    .write_opt(state.keys_batch, write_options)
                    .map_err(engine)?;
            }
            self.db
                .write_opt(state.batch, write_options)
                .map_err(engine)
        });
        for answer in waiting {
            answer.send(written.clone());
        }
    }

    /// Forgets subjects: deletes their keys in one batch of the key
    /// instance, then their tokens and index entries in one batch of the
    /// vault instance, and leaves a tombstone per token; answers each with
    /// the tokens it erased (a subject named twice erases once). Runs on
    /// the writer thread, so no insert interleaves with it.
    fn forget_all(&self, forgets: Vec<ForgetRequest>) {
        let mut erased = Vec::with_capacity(forgets.len());
        let mut key_batch = WriteBatch::default();
        let mut batch = WriteBatch::default();
        let mut seen = HashSet::new();
        let staged = forgets.iter().try_for_each(|forget| {
            let count = if seen.insert(forget.subject) {
                self.stage_forget(forget, &mut key_batch, &mut batch)?
            } else {
                0
            };
            erased.push(count);
            Ok(())
        });
        // The keys first (see `keys` for the order across the instances).
        let written = staged.and_then(|()| {
            if !key_batch.is_empty() {
                self.keys
                    .write_opt(key_batch, &self.write_options)
                    .map_err(engine)?;
            }
            if !batch.is_empty() {
                self.db
                    .write_opt(batch, &self.write_options)
                    .map_err(engine)?;
            }
            Ok(())
        });
        for (forget, count) in forgets
            .into_iter()
            .zip(erased.into_iter().chain(std::iter::repeat(0)))
        {
            let _ = forget.reply.send(written.clone().map(|()| count));
        }
    }

    /// Stages one forget into the two batches; returns the tokens it erases
    /// (0, staging nothing, for a subject with neither key nor token).
    fn stage_forget(
        &self,
        forget: &ForgetRequest,
        key_batch: &mut WriteBatch,
        batch: &mut WriteBatch,
    ) -> Result<u64, StoreError> {
        let (index, tokens, subject_keys, tombstones) = (
            self.cf(CF_INDEX)?,
            self.cf(CF_TOKENS)?,
            self.cf(CF_SUBJECTS)?,
            self.cf(CF_TOMBSTONES)?,
        );
        let subject = &forget.subject;
        // A failure of any forget fails the group's before anything is
        // written, so staging straight into the shared batch is safe.
        let mut erased = 0u64;
        for (key, value) in self.subject_entries(subject, None, usize::MAX)? {
            let entry = IndexEntry::decode(&value)?;
            batch.delete_cf(index, &key);
            batch.delete_cf(tokens, entry.token.as_bytes());
            batch.put_cf(
                tombstones,
                (forget.hasher)(&entry.token),
                forget.now.to_be_bytes(),
            );
            erased += 1;
        }
        let had_key = self
            .keys
            .get_pinned_cf(subject_keys, subject.as_bytes())
            .map_err(engine)?
            .is_some();
        if erased == 0 && !had_key {
            return Ok(0);
        }
        key_batch.delete_cf(subject_keys, subject.as_bytes());
        batch.put_cf(
            self.cf(CF_META)?,
            purge::pending_key(forget.now, subject),
            [],
        );
        Ok(erased)
    }

    /// Adds a token batch to the group unless it conflicts with the
    /// database or an earlier request of the group; returns its conflicts.
    /// A batch whose sealing key is not its subject's key in force (stored
    /// or staged in this group) is `SubjectErased`, as on PostgreSQL.
    fn stage_tokens(
        &self,
        state: &mut GroupState,
        batch: Vec<NewToken>,
        sealed_under: &[(SubjectHash, WrappedKey)],
        now: i64,
    ) -> Result<Option<Vec<Conflict>>, StoreError> {
        self.check_sealing_keys(state, &batch, sealed_under)?;
        let conflicts = self.conflicts_of(state, &batch, now)?;
        if !conflicts.is_empty() {
            return Ok(Some(conflicts));
        }
        // Everything that can fail happens before the first put: a request
        // that errors must leave nothing in the group's batch.
        let records = batch
            .iter()
            .map(|item| item.record.encode())
            .collect::<Result<Vec<_>, _>>()?;
        for (item, record) in batch.into_iter().zip(records) {
            state
                .token_puts
                .push((item.token.as_bytes().to_vec(), record));
            let entry = IndexEntry {
                token: item.token.clone(),
                expires_at: item.record.expires_at,
            };
            match item.index_key {
                Some(index_key) => {
                    state
                        .index_puts
                        .push((deterministic_key(&index_key).to_vec(), entry.encode()));
                    state.index.insert(index_key, entry);
                }
                None => state.index_puts.push((
                    token_list_key(&item.record.subject, &item.token),
                    entry.encode(),
                )),
            }
            state.tokens.insert(item.token);
        }
        Ok(None)
    }

    /// Every subject of the batch still has the key its tokens were sealed
    /// under. The writer thread runs forgets between groups' requests (a
    /// barrier), so a forget that committed before is seen here.
    fn check_sealing_keys(
        &self,
        state: &GroupState,
        batch: &[NewToken],
        sealed_under: &[(SubjectHash, WrappedKey)],
    ) -> Result<(), StoreError> {
        let subjects: HashSet<SubjectHash> = batch.iter().map(|item| item.record.subject).collect();
        for subject in subjects {
            let named = crate::store::sealing_key_of(sealed_under, subject)?;
            if self
                .current_key(state, CF_SUBJECTS, subject.as_bytes())?
                .as_ref()
                != Some(named)
            {
                return Err(StoreError::SubjectErased);
            }
        }
        Ok(())
    }

    /// Moves the group's token and index entries into its batch, sorted by
    /// key within each family. The memtable's skiplist inserts each entry
    /// starting from where the previous one went, so entries in key order
    /// cost a short walk instead of a search from the top: this is most of
    /// the cost of storing new tokens (measured with perf).
    fn token_puts_in_key_order(&self, state: &mut GroupState) -> Result<(), StoreError> {
        for (family, puts) in [
            (CF_TOKENS, &mut state.token_puts),
            (CF_INDEX, &mut state.index_puts),
        ] {
            if puts.is_empty() {
                continue;
            }
            let cf = self.cf(family)?;
            puts.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            for (key, value) in puts.drain(..) {
                state.batch.put_cf(cf, key, value);
            }
        }
        Ok(())
    }

    /// Existing tokens, and live index entries, that the batch would
    /// overwrite: in the database, in the group so far, or earlier in the
    /// batch itself.
    fn conflicts_of(
        &self,
        state: &GroupState,
        batch: &[NewToken],
        now: i64,
    ) -> Result<Vec<Conflict>, StoreError> {
        let tokens: Vec<&[u8]> = batch.iter().map(|item| item.token.as_bytes()).collect();
        let stored_tokens = self.get_many(CF_TOKENS, &tokens, |_| Ok(()))?;
        let mut seen = HashSet::with_capacity(batch.len());
        let mut conflicts = Vec::new();
        for (item, (new, stored)) in batch.iter().zip(stored_tokens).enumerate() {
            let taken = stored.is_some()
                || state.tokens.contains(&new.token)
                || !seen.insert(new.token.as_str());
            if taken {
                conflicts.push(Conflict::TokenTaken { item });
            }
        }

        let indexed: Vec<(usize, &IndexKey)> = batch
            .iter()
            .enumerate()
            .filter_map(|(i, item)| item.index_key.as_ref().map(|key| (i, key)))
            .collect();
        if indexed
            .iter()
            .map(|(_, key)| *key)
            .collect::<HashSet<_>>()
            .len()
            != indexed.len()
        {
            return Err(StoreError::Misuse("one index key twice in a batch"));
        }
        let keys: Vec<[u8; 65]> = indexed
            .iter()
            .map(|(_, key)| deterministic_key(key))
            .collect();
        let stored = self.get_many(CF_INDEX, &keys, IndexEntry::decode)?;
        for ((item, key), entry) in indexed.into_iter().zip(stored) {
            let in_group = state.index.get(key).cloned();
            if let Some(existing) = in_group.or(entry).filter(|entry| !entry.is_expired(now)) {
                conflicts.push(Conflict::IndexTaken { item, existing });
            }
        }
        Ok(conflicts)
    }

    /// Adds a key to the group unless one is stored or staged already.
    fn stage_key(
        &self,
        state: &mut GroupState,
        family: &'static str,
        key: Vec<u8>,
        wrapped: WrappedKey,
    ) -> Result<KeyStaged, StoreError> {
        let staged_key = (family, key);
        if let Some(in_group) = state.keys.get(&staged_key) {
            return Ok(KeyStaged::InThisGroup(in_group.clone()));
        }
        let cf = self.cf(family)?;
        let stored = self.db_of(family).get_pinned_cf(cf, &staged_key.1);
        if let Some(existing) = stored.map_err(engine)? {
            let existing =
                WrappedKey::decode(&existing).map_err(|_| StoreError::Corrupt("wrapped key"))?;
            return Ok(KeyStaged::Existing(existing));
        }
        state
            .batch_of(family)
            .put_cf(cf, &staged_key.1, wrapped.encode());
        state.keys.insert(staged_key, wrapped.clone());
        Ok(KeyStaged::InThisGroup(wrapped))
    }
}

impl Inner {
    /// The wrapped key in force for `key`: staged in this group, or stored.
    fn current_key(
        &self,
        state: &GroupState,
        family: &'static str,
        key: &[u8],
    ) -> Result<Option<WrappedKey>, StoreError> {
        if let Some(staged) = state.keys.get(&(family, key.to_vec())) {
            return Ok(Some(staged.clone()));
        }
        let cf = self.cf(family)?;
        match self.db_of(family).get_pinned_cf(cf, key).map_err(engine)? {
            Some(bytes) => WrappedKey::decode(&bytes)
                .map(Some)
                .map_err(|_| StoreError::Corrupt("wrapped key")),
            None => Ok(None),
        }
    }

    /// Stages `new` if the key in force is `expected`; false otherwise.
    fn stage_replace(
        &self,
        state: &mut GroupState,
        family: &'static str,
        key: Vec<u8>,
        expected: &WrappedKey,
        new: WrappedKey,
    ) -> Result<bool, StoreError> {
        if self.current_key(state, family, &key)?.as_ref() != Some(expected) {
            return Ok(false);
        }
        let cf = self.cf(family)?;
        state.batch_of(family).put_cf(cf, &key, new.encode());
        state.keys.insert((family, key), new);
        Ok(true)
    }
}

/// A forget waiting for its turn in the group.
struct ForgetRequest {
    subject: SubjectHash,
    hasher: TombstoneHasher,
    now: i64,
    reply: oneshot::Sender<Result<u64, StoreError>>,
}

/// What one write group has staged so far.
#[derive(Default)]
struct GroupState {
    /// For the vault instance.
    batch: WriteBatch,
    /// For the key instance: written before `batch`.
    keys_batch: WriteBatch,
    /// Token records and index entries, put into `batch` in key order at
    /// commit.
    token_puts: Vec<(Vec<u8>, Vec<u8>)>,
    index_puts: Vec<(Vec<u8>, Vec<u8>)>,
    tokens: HashSet<String>,
    index: HashMap<IndexKey, IndexEntry>,
    keys: HashMap<(&'static str, Vec<u8>), WrappedKey>,
    /// Audit records are synced whatever `sync_writes` says.
    carries_audit: bool,
    /// The batch holds writes nobody waits for (window counters).
    unanswered_writes: bool,
}

impl GroupState {
    /// Whether tokens, index entries or keys are staged (what a forget
    /// must see).
    fn stages_subject_data(&self) -> bool {
        !self.tokens.is_empty() || !self.keys.is_empty()
    }

    /// The batch for the instance that holds `family`.
    fn batch_of(&mut self, family: &str) -> &mut WriteBatch {
        if family == CF_SUBJECTS {
            &mut self.keys_batch
        } else {
            &mut self.batch
        }
    }
}

enum KeyStaged {
    /// Stored before this group: the caller's key was not written.
    Existing(WrappedKey),
    /// Written with this group: the key in force once the write lands.
    InThisGroup(WrappedKey),
}

/// A request waiting for the group's write.
enum Answer {
    Committed(oneshot::Sender<Result<InsertOutcome, StoreError>>),
    Key(oneshot::Sender<Result<WrappedKey, StoreError>>, WrappedKey),
    Replaced(oneshot::Sender<Result<bool, StoreError>>),
    Done(oneshot::Sender<Result<(), StoreError>>),
}

impl Answer {
    fn send(self, written: Result<(), StoreError>) {
        match self {
            Answer::Committed(reply) => {
                let _ = reply.send(written.map(|()| InsertOutcome::Committed));
            }
            Answer::Key(reply, key) => {
                let _ = reply.send(written.map(|()| key));
            }
            Answer::Replaced(reply) => {
                let _ = reply.send(written.map(|()| true));
            }
            Answer::Done(reply) => {
                let _ = reply.send(written);
            }
        }
    }
}
