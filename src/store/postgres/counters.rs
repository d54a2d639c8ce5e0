//! Window counters in PostgreSQL, shared by every replica: one row per key
//! and window in `tv_rate_windows`, upserted in one transaction per charge
//! (rows locked in key order), rolled back when any counter would pass its
//! limit. A restart of a replica keeps them; rows of windows that are over
//! are deleted now and then.
//!
//! With group commit on (`group_max_calls` > 1), the charges that arrive
//! while one transaction runs share the next one ([`ChargeGroups`]): every
//! call of a principal charges its `nv/p/...` row, so a transaction per
//! call serialises them all on that row's lock and a WAL flush each. The
//! group's transaction locks the union of their rows, decides the charges
//! one after another on the running totals (a refused one adds nothing),
//! and writes the sums: the same outcome as the charges run one by one in
//! that order.
//!
//! The table is created here (`CREATE TABLE IF NOT EXISTS` under the
//! migration lock) rather than as a numbered migration.

use std::collections::HashMap;

use async_trait::async_trait;
use tokio::sync::oneshot;

use super::{engine, pool_error, retryable, PostgresStore, MAX_RETRIES, MIGRATION_LOCK};
use crate::store::counters::{decide, Charge, Charged, WindowCounters};
use crate::store::StoreError;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS tv_rate_windows (
        key text NOT NULL,
        window_start bigint NOT NULL,
        used bigint NOT NULL,
        ends_at bigint NOT NULL,
        PRIMARY KEY (key, window_start));
     CREATE INDEX IF NOT EXISTS tv_rate_windows_by_end ON tv_rate_windows (ends_at)";

impl PostgresStore {
    /// Creates the counters' table if it is missing.
    pub(super) async fn ensure_counter_table(
        pool: &deadpool_postgres::Pool,
    ) -> Result<(), StoreError> {
        let mut client = pool.get().await.map_err(pool_error)?;
        let tx = client.transaction().await.map_err(engine)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(engine)?;
        tx.batch_execute(SCHEMA).await.map_err(engine)?;
        tx.commit().await.map_err(engine)
    }

    async fn charge_once(
        &self,
        charges: &[Charge],
        now: i64,
    ) -> Result<Result<Charged, StoreError>, tokio_postgres::Error> {
        let mut client = match self.client().await {
            Ok(client) => client,
            Err(error) => return Ok(Err(error)),
        };
        // Key order: two charges that share keys lock them in one order.
        let mut order: Vec<usize> = (0..charges.len()).collect();
        order.sort_by(|&a, &b| {
            (&charges[a].key, charges[a].window_start)
                .cmp(&(&charges[b].key, charges[b].window_start))
        });
        let keys: Vec<&str> = order.iter().map(|&i| charges[i].key.as_str()).collect();
        let starts: Vec<i64> = order.iter().map(|&i| charges[i].window_start).collect();
        let amounts: Vec<i64> = order
            .iter()
            .map(|&i| i64::try_from(charges[i].amount).unwrap_or(i64::MAX))
            .collect();
        let ends: Vec<i64> = order
            .iter()
            .map(|&i| {
                charges[i]
                    .window_start
                    .saturating_add(charges[i].window_seconds)
            })
            .collect();
        let tx = client.transaction().await?;
        let rows = tx
            .query(
                "INSERT INTO tv_rate_windows AS w (key, window_start, used, ends_at)
                 SELECT c.key, c.window_start, c.used, c.ends_at FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[])
                     WITH ORDINALITY AS c(key, window_start, used, ends_at, n)
                     ORDER BY n
                 ON CONFLICT (key, window_start) DO UPDATE SET used = w.used + EXCLUDED.used
                 RETURNING key, window_start, used",
                &[&keys, &starts, &amounts, &ends],
            )
            .await?;
        let mut after: std::collections::HashMap<(String, i64), i64> = rows
            .iter()
            .map(|row| ((row.get(0), row.get(1)), row.get(2)))
            .collect();
        // Use before this charge, in the caller's order.
        let used: Vec<u64> = charges
            .iter()
            .map(|c| {
                let total = after
                    .remove(&(c.key.clone(), c.window_start))
                    .unwrap_or_default();
                u64::try_from(total).unwrap_or(0).saturating_sub(c.amount)
            })
            .collect();
        let decided = decide(charges, &used);
        match decided {
            Charged::Admitted(_) => {
                if rand::random::<u8>() == 0 {
                    tx.execute("DELETE FROM tv_rate_windows WHERE ends_at <= $1", &[&now])
                        .await?;
                }
                tx.commit().await?;
            }
            Charged::Refused { .. } => tx.rollback().await?,
        }
        Ok(Ok(decided))
    }
}

/// A charge waiting for the next group's transaction.
struct Waiting {
    charges: Vec<Charge>,
    answer: oneshot::Sender<Result<Charged, StoreError>>,
}

/// The charges queued for the next group, and the turn to run one. A
/// caller queues its charge, then waits for the turn; whoever holds it
/// runs every queued charge in one transaction, so while one group's
/// transaction runs, the next group gathers.
pub(super) struct ChargeGroups {
    queue: parking_lot::Mutex<Vec<Waiting>>,
    turn: tokio::sync::Mutex<()>,
    /// The most charges one transaction takes (`group_max_calls`).
    max_calls: usize,
}

impl ChargeGroups {
    pub(super) fn new(max_calls: usize) -> Self {
        ChargeGroups {
            queue: parking_lot::Mutex::default(),
            turn: tokio::sync::Mutex::new(()),
            max_calls: max_calls.max(1),
        }
    }

    /// The oldest queued charges, at most `max_calls`.
    fn take(&self) -> Vec<Waiting> {
        let mut queue = self.queue.lock();
        let taken = queue.len().min(self.max_calls);
        let rest = queue.split_off(taken);
        std::mem::replace(&mut *queue, rest)
    }
}

impl PostgresStore {
    /// `charges` as part of a group (see [`ChargeGroups`]).
    async fn charge_grouped(
        &self,
        groups: &ChargeGroups,
        charges: &[Charge],
        now: i64,
    ) -> Result<Charged, StoreError> {
        loop {
            let (answer, mut answered) = oneshot::channel();
            groups.queue.lock().push(Waiting {
                charges: charges.to_vec(),
                answer,
            });
            let _turn = groups.turn.lock().await;
            match answered.try_recv() {
                // A group ran it while this call waited for the turn.
                Ok(outcome) => return outcome,
                // Still queued (only the turn's holder takes charges).
                Err(oneshot::error::TryRecvError::Empty) => {}
                // Taken by a group whose caller was cancelled mid-way: its
                // transaction rolled back; queue it again.
                Err(oneshot::error::TryRecvError::Closed) => continue,
            }
            // Groups in arrival order until this call's own has run.
            loop {
                let group = groups.take();
                let unanswered = || StoreError::Engine("a grouped charge was not answered".into());
                if group.is_empty() {
                    // Not reached: this call's charge is queued until a
                    // group answers it. Refusing beats spinning.
                    return Err(unanswered());
                }
                self.run_charge_group(group, now).await;
                match answered.try_recv() {
                    Ok(outcome) => return outcome,
                    Err(oneshot::error::TryRecvError::Empty) => {}
                    Err(oneshot::error::TryRecvError::Closed) => return Err(unanswered()),
                }
            }
        }
    }

    /// One transaction for `group`, retried when PostgreSQL aborts it;
    /// answers every charge in it.
    async fn run_charge_group(&self, group: Vec<Waiting>, now: i64) {
        let charges: Vec<&[Charge]> = group.iter().map(|w| w.charges.as_slice()).collect();
        let mut tries = 0;
        let outcomes = loop {
            match self.charge_group_once(&charges, now).await {
                Ok(outcomes) => break outcomes,
                Err(error) if retryable(&error) && tries < MAX_RETRIES => tries += 1,
                Err(error) => break Err(engine(error)),
            }
        };
        match outcomes {
            Ok(outcomes) => {
                for (waiting, outcome) in group.into_iter().zip(outcomes) {
                    // A caller that stopped waiting was charged all the same:
                    // a limit errs towards refusing.
                    let _ = waiting.answer.send(Ok(outcome));
                }
            }
            Err(error) => {
                for waiting in group {
                    let _ = waiting.answer.send(Err(error.clone()));
                }
            }
        }
    }

    /// The group's transaction: locks (creating at 0) the rows of every
    /// key, decides each call's charges in turn on the running totals,
    /// adds what was admitted. `Err` outer: the transaction failed; inner:
    /// the pool had no connection.
    async fn charge_group_once(
        &self,
        group: &[&[Charge]],
        now: i64,
    ) -> Result<Result<Vec<Charged>, StoreError>, tokio_postgres::Error> {
        let mut client = match self.client().await {
            Ok(client) => client,
            Err(error) => return Ok(Err(error)),
        };
        // Every row once, in key order: groups that share rows lock them
        // in one order.
        let mut rows: Vec<(&str, i64, i64)> = group
            .iter()
            .flat_map(|charges| charges.iter())
            .map(|c| {
                let ends = c.window_start.saturating_add(c.window_seconds);
                (c.key.as_str(), c.window_start, ends)
            })
            .collect();
        rows.sort_unstable();
        rows.dedup_by(|a, b| (a.0, a.1) == (b.0, b.1));
        let keys: Vec<&str> = rows.iter().map(|r| r.0).collect();
        let starts: Vec<i64> = rows.iter().map(|r| r.1).collect();
        let ends: Vec<i64> = rows.iter().map(|r| r.2).collect();
        let tx = client.transaction().await?;
        let locked = tx
            .query(
                "INSERT INTO tv_rate_windows AS w (key, window_start, used, ends_at)
                 SELECT c.key, c.window_start, 0, c.ends_at FROM unnest($1::text[], $2::bigint[], $3::bigint[])
                     WITH ORDINALITY AS c(key, window_start, ends_at, n)
                     ORDER BY n
                 ON CONFLICT (key, window_start) DO UPDATE SET used = w.used
                 RETURNING key, window_start, used",
                &[&keys, &starts, &ends],
            )
            .await?;
        let mut used: HashMap<(String, i64), u64> = locked
            .iter()
            .map(|row| {
                let used: i64 = row.get(2);
                ((row.get(0), row.get(1)), u64::try_from(used).unwrap_or(0))
            })
            .collect();
        let before: HashMap<(String, i64), u64> = used.clone();
        let outcomes: Vec<Charged> = group
            .iter()
            .map(|charges| {
                let current: Vec<u64> = charges
                    .iter()
                    .map(|c| {
                        used.get(&(c.key.clone(), c.window_start))
                            .copied()
                            .unwrap_or(0)
                    })
                    .collect();
                let decided = decide(charges, &current);
                if let Charged::Admitted(after) = &decided {
                    for (c, &after) in charges.iter().zip(after) {
                        used.insert((c.key.clone(), c.window_start), after);
                    }
                }
                decided
            })
            .collect();
        let changed: Vec<(&(String, i64), i64)> = used
            .iter()
            .filter(|(row, total)| before.get(*row) != Some(total))
            .map(|(row, &total)| (row, i64::try_from(total).unwrap_or(i64::MAX)))
            .collect();
        if !changed.is_empty() {
            let keys: Vec<&str> = changed.iter().map(|(row, _)| row.0.as_str()).collect();
            let starts: Vec<i64> = changed.iter().map(|(row, _)| row.1).collect();
            let totals: Vec<i64> = changed.iter().map(|(_, total)| *total).collect();
            tx.execute(
                "UPDATE tv_rate_windows AS w SET used = c.used
                 FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS c(key, window_start, used)
                 WHERE w.key = c.key AND w.window_start = c.window_start",
                &[&keys, &starts, &totals],
            )
            .await?;
        }
        if rand::random::<u8>() == 0 {
            tx.execute("DELETE FROM tv_rate_windows WHERE ends_at <= $1", &[&now])
                .await?;
        }
        tx.commit().await?;
        Ok(Ok(outcomes))
    }
}

#[async_trait]
impl WindowCounters for PostgresStore {
    async fn charge(&self, charges: &[Charge], now: i64) -> Result<Charged, StoreError> {
        if charges.is_empty() {
            return Ok(Charged::Admitted(Vec::new()));
        }
        if let Some(groups) = &self.charge_groups {
            return self.charge_grouped(groups, charges, now).await;
        }
        let mut tries = 0;
        loop {
            match self.charge_once(charges, now).await {
                Ok(outcome) => return outcome,
                Err(error) if retryable(&error) && tries < MAX_RETRIES => tries += 1,
                Err(error) => return Err(engine(error)),
            }
        }
    }
}
