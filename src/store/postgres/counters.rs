//! Window counters in PostgreSQL, shared by every replica: one row per key
//! and window in `tv_rate_windows`, upserted in one transaction per charge
//! (rows locked in key order), rolled back when any counter would pass its
//! limit. A restart of a replica keeps them; rows of windows that are over
//! are deleted now and then.
//!
//! The table is created here (`CREATE TABLE IF NOT EXISTS` under the
//! migration lock) rather than as a numbered migration.

use async_trait::async_trait;

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

#[async_trait]
impl WindowCounters for PostgresStore {
    async fn charge(&self, charges: &[Charge], now: i64) -> Result<Charged, StoreError> {
        if charges.is_empty() {
            return Ok(Charged::Admitted(Vec::new()));
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
