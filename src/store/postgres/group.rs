//! Group commit of token batches: concurrent `insert_tokens` calls queue
//! here, and one writer task per replica commits whatever queued while its
//! previous transaction was in flight as one transaction (one round trip of
//! statements, one WAL flush), so single-value Tokenize calls share the cost
//! that batches already share.
//!
//! Each call keeps its own atomicity and the rules of `tokens`:
//!
//! - The group's transaction checks every (subject, wrapped key) pair its
//!   calls were sealed under, `FOR KEY SHARE`, and inserts all their token
//!   and index rows in one multi-row statement each (`ON CONFLICT`, rows in
//!   key order). A call whose key row is gone or replaced
//!   ([`StoreError::SubjectErased`]), or whose token or deterministic value
//!   is taken ([`InsertOutcome::Conflicts`], the existing entry read in the
//!   same transaction), fails alone: the transaction is rolled back, that
//!   call is answered, and the others go again in a new transaction.
//! - Two calls of one group never share a token or an index key: the later
//!   one waits for the next group, where `ON CONFLICT` gives it the
//!   earlier one's token as a conflict (never a token not yet committed).
//! - A group that PostgreSQL refuses for a reason other than a deadlock or
//!   a serialization failure (retried, as a whole) is split: each call runs
//!   alone, so a row only one call carries fails only that call.
//! - A caller that went away while queued (its deadline passed, its client
//!   cancelled) is dropped before its group is formed: nothing of it is
//!   stored. A caller that goes away once its group is in flight gets no
//!   answer; its tokens may be stored (as when a call is cancelled between
//!   commit and reply), never the other way round.
//!
//! Bounds ([`GroupBounds`], `[storage.postgres]` `group_*`): a group takes
//! at most `max_calls` calls and `max_items` rows (a larger call goes
//! alone), so one transaction holds row locks briefly; the writer waits at
//! most `wait` for a group to fill (default 0: a group is what queued while
//! the transaction before it ran); at most `in_flight` groups run at once.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::tokens::{index_bytes, read_index, SealingKeys};
use super::{engine, pool_error, retryable, MAX_RETRIES};
use crate::store::{Conflict, InsertOutcome, NewToken, StoreError};

/// How token batches are grouped into transactions (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupBounds {
    /// Most calls in one transaction; 1 turns grouping off (each call its
    /// own transaction, over the pool, as before group commit).
    pub max_calls: usize,
    /// Most token rows in one transaction (a call with more goes alone).
    pub max_items: usize,
    /// How long the writer waits for more calls once one is queued.
    pub wait: Duration,
    /// Most group transactions in flight at once, per replica (and as
    /// many lookup groups, see `reads`).
    pub in_flight: usize,
    /// Whether concurrent lookups share queries too (`reads`).
    pub reads: bool,
}

impl Default for GroupBounds {
    fn default() -> Self {
        GroupBounds {
            max_calls: 64,
            max_items: 4096,
            wait: Duration::ZERO,
            in_flight: 2,
            reads: true,
        }
    }
}

impl GroupBounds {
    /// Whether calls are grouped at all.
    pub(super) fn grouping(&self) -> bool {
        self.max_calls > 1
    }
}

type Reply = oneshot::Sender<Result<InsertOutcome, StoreError>>;

/// One queued call: its batch, encoded, and where its answer goes.
struct Call {
    batch: Vec<NewToken>,
    records: Vec<Vec<u8>>,
    keys: SealingKeys,
    now: i64,
    reply: Reply,
}

/// What the group writer has committed: for the metrics endpoint
/// (`tokenvault_store_group_*`) and the tests.
#[derive(Debug, Default)]
pub(super) struct GroupStats {
    /// Group transactions committed.
    pub(super) transactions: AtomicU64,
    /// Calls they stored.
    pub(super) calls: AtomicU64,
}

/// The queue of one replica's group writer.
pub(super) struct GroupWriter {
    queue: mpsc::UnboundedSender<Call>,
    task: tokio::task::JoinHandle<()>,
    pub(super) stats: Arc<GroupStats>,
}

impl Drop for GroupWriter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GroupWriter {
    /// Starts the writer task on `pool`.
    pub(super) fn start(pool: Pool, bounds: GroupBounds) -> GroupWriter {
        let (queue, calls) = mpsc::unbounded_channel();
        let stats = Arc::new(GroupStats::default());
        let task = tokio::spawn(run(pool, bounds, calls, Arc::clone(&stats)));
        GroupWriter { queue, task, stats }
    }

    /// Queues a checked, non-empty batch and waits for its group's outcome.
    pub(super) async fn insert(
        &self,
        batch: Vec<NewToken>,
        keys: SealingKeys,
        now: i64,
    ) -> Result<InsertOutcome, StoreError> {
        // Everything that can fail for this call alone fails here, before
        // it joins a group.
        let records = batch
            .iter()
            .map(|item| item.record.encode())
            .collect::<Result<Vec<_>, _>>()?;
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Engine("the postgres group writer has stopped".into());
        self.queue
            .send(Call {
                batch,
                records,
                keys,
                now,
                reply,
            })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// The writer loop: waits for a free slot, forms a group of what is
/// queued, runs it in a task of its own. Ends when the store is dropped.
async fn run(
    pool: Pool,
    bounds: GroupBounds,
    mut calls: mpsc::UnboundedReceiver<Call>,
    stats: Arc<GroupStats>,
) {
    let slots = Arc::new(Semaphore::new(bounds.in_flight.max(1)));
    // Calls that could not join the last group (a shared token or index
    // key, or over its bounds): first in the next.
    let mut held: Vec<Call> = Vec::new();
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        if held.is_empty() {
            match calls.recv().await {
                Some(call) => held.push(call),
                None => return,
            }
        }
        let mut former = GroupFormer::new(bounds);
        for call in std::mem::take(&mut held) {
            former.offer(call, &mut held);
        }
        let deadline = tokio::time::Instant::now() + bounds.wait;
        while !former.full() {
            match calls.try_recv() {
                Ok(call) => former.offer(call, &mut held),
                Err(mpsc::error::TryRecvError::Empty) if !bounds.wait.is_zero() => {
                    match tokio::time::timeout_at(deadline, calls.recv()).await {
                        Ok(Some(call)) => former.offer(call, &mut held),
                        Ok(None) | Err(_) => break,
                    }
                }
                Err(_) => break,
            }
        }
        let group = former.calls;
        if group.is_empty() {
            continue;
        }
        let (pool, stats) = (pool.clone(), Arc::clone(&stats));
        tokio::spawn(async move {
            commit_group(&pool, group, &stats).await;
            drop(slot);
        });
    }
}

/// A group being formed: its calls and the tokens and index keys they use.
struct GroupFormer {
    bounds: GroupBounds,
    calls: Vec<Call>,
    items: usize,
    tokens: HashSet<String>,
    index_keys: HashSet<Vec<u8>>,
}

impl GroupFormer {
    fn new(bounds: GroupBounds) -> Self {
        GroupFormer {
            bounds,
            calls: Vec::new(),
            items: 0,
            tokens: HashSet::new(),
            index_keys: HashSet::new(),
        }
    }

    fn full(&self) -> bool {
        self.calls.len() >= self.bounds.max_calls || self.items >= self.bounds.max_items
    }

    /// Adds `call`, or holds it for the next group when it would share a
    /// token or index key with this one or break its bounds; drops it when
    /// its caller has gone.
    fn offer(&mut self, call: Call, held: &mut Vec<Call>) {
        if call.reply.is_closed() {
            return;
        }
        let fits = self.calls.is_empty()
            || (self.calls.len() < self.bounds.max_calls
                && self.items + call.batch.len() <= self.bounds.max_items);
        let shares = call.batch.iter().any(|item| {
            self.tokens.contains(&item.token)
                || item
                    .index_key
                    .as_ref()
                    .is_some_and(|key| self.index_keys.contains(key.0.as_slice()))
        });
        if !fits || shares {
            held.push(call);
            return;
        }
        for item in &call.batch {
            self.tokens.insert(item.token.clone());
            if let Some(key) = &item.index_key {
                self.index_keys.insert(key.0.to_vec());
            }
        }
        self.items += call.batch.len();
        self.calls.push(call);
    }
}

/// Commits a group, answering every call: in one transaction while calls
/// fail alone (each failure answered, the rest again), as a whole again
/// after a deadlock, call by call after any other refusal.
async fn commit_group(pool: &Pool, mut group: Vec<Call>, stats: &GroupStats) {
    let mut tries = 0;
    while !group.is_empty() {
        let attempt = match pool.get().await {
            Ok(mut client) => attempt(&mut client, &group).await,
            Err(error) => {
                answer_all(group, Err(pool_error(error)));
                return;
            }
        };
        match attempt {
            Ok(Attempt::Committed) => {
                stats.transactions.fetch_add(1, Ordering::Relaxed);
                stats.calls.fetch_add(group.len() as u64, Ordering::Relaxed);
                answer_all(group, Ok(InsertOutcome::Committed));
                return;
            }
            Ok(Attempt::Failed(failed)) => {
                let mut failed: HashMap<usize, Result<InsertOutcome, StoreError>> =
                    failed.into_iter().collect();
                let mut rest = Vec::with_capacity(group.len());
                for (position, call) in group.into_iter().enumerate() {
                    match failed.remove(&position) {
                        Some(outcome) => {
                            let _ = call.reply.send(outcome);
                        }
                        None => rest.push(call),
                    }
                }
                group = rest;
            }
            Err(error) if retryable(&error) && tries < MAX_RETRIES => tries += 1,
            Err(error) if group.len() > 1 && error.as_db_error().is_some() => {
                // Perhaps one call's row (PostgreSQL refused a value):
                // each alone, so only that call fails.
                let alone = group
                    .into_iter()
                    .map(|call| commit_alone(pool, call, stats));
                futures_util::future::join_all(alone).await;
                return;
            }
            Err(error) => {
                answer_all(group, Err(engine(error)));
                return;
            }
        }
    }
}

async fn commit_alone(pool: &Pool, call: Call, stats: &GroupStats) {
    let mut group = vec![call];
    let mut tries = 0;
    let outcome = loop {
        let attempt = match pool.get().await {
            Ok(mut client) => attempt(&mut client, &group).await,
            Err(error) => break Err(pool_error(error)),
        };
        match attempt {
            Ok(Attempt::Committed) => {
                stats.transactions.fetch_add(1, Ordering::Relaxed);
                stats.calls.fetch_add(1, Ordering::Relaxed);
                break Ok(InsertOutcome::Committed);
            }
            Ok(Attempt::Failed(mut failed)) => match failed.pop() {
                Some((_, outcome)) => break outcome,
                None => break Err(StoreError::Engine("a failed call went unnamed".into())),
            },
            Err(error) if retryable(&error) && tries < MAX_RETRIES => tries += 1,
            Err(error) => break Err(engine(error)),
        }
    };
    if let Some(call) = group.pop() {
        let _ = call.reply.send(outcome);
    }
}

fn answer_all(group: Vec<Call>, outcome: Result<InsertOutcome, StoreError>) {
    for call in group {
        let _ = call.reply.send(outcome.clone());
    }
}

/// How one transaction over a group ended.
enum Attempt {
    /// Committed: every call's rows are stored.
    Committed,
    /// Rolled back: these calls (by position) failed with these outcomes,
    /// and the others stored nothing.
    Failed(Vec<(usize, Result<InsertOutcome, StoreError>)>),
}

/// A row of the group: which call and which of its items.
#[derive(Clone, Copy)]
struct Owner {
    call: usize,
    item: usize,
}

/// One transaction over `group`, committed only if no call fails.
async fn attempt(
    client: &mut deadpool_postgres::Client,
    group: &[Call],
) -> Result<Attempt, tokio_postgres::Error> {
    // Rows in key order (concurrent groups then lock rows in one order).
    let mut token_rows: Vec<Owner> = Vec::new();
    let mut index_rows: Vec<Owner> = Vec::new();
    for (call, c) in group.iter().enumerate() {
        for (item, new) in c.batch.iter().enumerate() {
            token_rows.push(Owner { call, item });
            if new.index_key.is_some() {
                index_rows.push(Owner { call, item });
            }
        }
    }
    let item = |owner: &Owner| &group[owner.call].batch[owner.item];
    token_rows.sort_by(|a, b| item(a).token.cmp(&item(b).token));
    index_rows.sort_by(|a, b| index_bytes(item(a)).cmp(index_bytes(item(b))));
    let tokens: Vec<&str> = token_rows.iter().map(|o| item(o).token.as_str()).collect();
    let token_subjects: Vec<&[u8]> = token_rows
        .iter()
        .map(|o| item(o).record.subject.0.as_slice())
        .collect();
    let token_records: Vec<&[u8]> = token_rows
        .iter()
        .map(|o| group[o.call].records[o.item].as_slice())
        .collect();
    let expiries: Vec<Option<i64>> = token_rows
        .iter()
        .map(|o| item(o).record.expires_at)
        .collect();
    let index_keys: Vec<&[u8]> = index_rows.iter().map(|o| index_bytes(item(o))).collect();
    let index_tokens: Vec<&str> = index_rows.iter().map(|o| item(o).token.as_str()).collect();
    let index_expiries: Vec<Option<i64>> = index_rows
        .iter()
        .map(|o| item(o).record.expires_at)
        .collect();
    // The latest call's clock: an entry expired by then is expired for
    // every call of the group (they started within one group's time).
    let now = group.iter().map(|call| call.now).max().unwrap_or_default();

    // Every (subject, wrapped key) pair once, in order.
    let mut pairs: Vec<(&[u8], &[u8])> = group.iter().flat_map(|call| call.keys.pairs()).collect();
    pairs.sort_unstable();
    pairs.dedup();
    let pair_subjects: Vec<&[u8]> = pairs.iter().map(|(s, _)| *s).collect();
    let pair_wrapped: Vec<&[u8]> = pairs.iter().map(|(_, w)| *w).collect();

    let tx = client.transaction().await?;
    let (check, insert_tokens, upsert_index) = tokio::try_join!(
        // The key share holds off a forget until the commit; a rewrap
        // meanwhile (an update of `wrapped` only) keeps the same key.
        tx.prepare_cached(
            "SELECT s.subject, s.wrapped FROM tv_subjects AS s
                 JOIN unnest($1::bytea[], $2::bytea[]) AS k(subject, wrapped)
                   ON s.subject = k.subject AND s.wrapped = k.wrapped
                 FOR KEY SHARE OF s",
        ),
        tx.prepare_cached(
            "INSERT INTO tv_tokens (token, subject, record, expires_at)
             SELECT * FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::bigint[])
             ON CONFLICT (token) DO NOTHING RETURNING token",
        ),
        tx.prepare_cached(
            "INSERT INTO tv_index (index_key, token, expires_at)
             SELECT * FROM unnest($1::bytea[], $2::text[], $3::bigint[])
             ON CONFLICT (index_key) DO UPDATE
                 SET token = EXCLUDED.token, expires_at = EXCLUDED.expires_at
                 WHERE tv_index.expires_at IS NOT NULL AND tv_index.expires_at <= $4
             RETURNING index_key",
        ),
    )?;
    // One pipelined round trip: PostgreSQL runs them in order.
    let check_params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] =
        [&pair_subjects, &pair_wrapped];
    let token_params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
        [&tokens, &token_subjects, &token_records, &expiries];
    let (live, inserted, upserted) = tokio::try_join!(
        tx.query(&check, &check_params),
        tx.query(&insert_tokens, &token_params),
        async {
            if index_keys.is_empty() {
                Ok(Vec::new())
            } else {
                tx.query(
                    &upsert_index,
                    &[&index_keys, &index_tokens, &index_expiries, &now],
                )
                .await
            }
        },
    )?;
    let live: HashSet<(Vec<u8>, Vec<u8>)> = live
        .iter()
        .map(|row| (row.get::<_, Vec<u8>>(0), row.get::<_, Vec<u8>>(1)))
        .collect();
    let inserted: HashSet<String> = inserted.iter().map(|row| row.get(0)).collect();
    let upserted: HashSet<Vec<u8>> = upserted.iter().map(|row| row.get(0)).collect();

    // Per call: erased (a key pair not live), or its conflicts.
    let mut erased: Vec<bool> = group
        .iter()
        .map(|call| {
            call.keys
                .pairs()
                .any(|(s, w)| !live.contains(&(s.to_vec(), w.to_vec())))
        })
        .collect();
    let mut conflicts: Vec<Vec<Conflict>> = vec![Vec::new(); group.len()];
    let mut inserted = inserted;
    for (position, call) in group.iter().enumerate() {
        for (item, new) in call.batch.iter().enumerate() {
            // A token repeated in one batch is stored for its first item.
            if !inserted.remove(&new.token) {
                conflicts[position].push(Conflict::TokenTaken { item });
            }
        }
    }
    let taken: Vec<Owner> = index_rows
        .iter()
        .copied()
        .filter(|o| !erased[o.call] && !upserted.contains(index_bytes(item(o))))
        .collect();
    if !taken.is_empty() {
        let keys: Vec<&[u8]> = taken.iter().map(|o| index_bytes(item(o))).collect();
        let existing = read_index(&tx, &keys).await?;
        for owner in taken {
            match existing.get(index_bytes(item(&owner))) {
                Some(entry) => conflicts[owner.call].push(Conflict::IndexTaken {
                    item: owner.item,
                    existing: entry.clone(),
                }),
                // Gone meanwhile only if the subject was forgotten.
                None => erased[owner.call] = true,
            }
        }
    }
    let mut failed: Vec<(usize, Result<InsertOutcome, StoreError>)> = Vec::new();
    for (position, mut conflicts) in conflicts.into_iter().enumerate() {
        if erased[position] {
            failed.push((position, Err(StoreError::SubjectErased)));
        } else if !conflicts.is_empty() {
            conflicts.sort_by_key(|conflict| match conflict {
                Conflict::TokenTaken { item } | Conflict::IndexTaken { item, .. } => *item,
            });
            failed.push((position, Ok(InsertOutcome::Conflicts(conflicts))));
        }
    }
    if failed.is_empty() {
        tx.commit().await?;
        Ok(Attempt::Committed)
    } else {
        tx.rollback().await?;
        Ok(Attempt::Failed(failed))
    }
}
