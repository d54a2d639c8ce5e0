//! A forget: the key row, every token and index entry of the subject and
//! its tombstones, in one transaction that also owes the purge and
//! notifies the other replicas.

use super::*;

impl PostgresStore {
    pub(super) async fn try_forget(
        &self,
        subject: &SubjectHash,
        hasher: &TombstoneHasher,
        now: i64,
    ) -> Result<Result<u64, StoreError>, tokio_postgres::Error> {
        let mut client = match self.client().await {
            Ok(client) => client,
            Err(error) => return Ok(Err(error)),
        };
        let key = subject.0.to_vec();
        let (low, high) = index_range(subject);
        let tx = client.transaction().await?;
        // The key row's lock orders this forget against every token batch
        // of the subject on any replica (they take it FOR KEY SHARE).
        let had_key = tx
            .query_opt(
                "SELECT 1 FROM tv_subjects WHERE subject = $1 FOR UPDATE",
                &[&key],
            )
            .await?
            .is_some();
        let tokens: Vec<String> = tx
            .query(
                "DELETE FROM tv_tokens WHERE subject = $1 RETURNING token",
                &[&key],
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        tx.execute(
            "DELETE FROM tv_index WHERE index_key >= $1 AND index_key <= $2",
            &[&low, &high],
        )
        .await?;
        if tokens.is_empty() && !had_key {
            return Ok(Ok(0));
        }
        let hashes: Vec<Vec<u8>> = tokens.iter().map(|t| hasher(t).to_vec()).collect();
        tx.execute(
            "INSERT INTO tv_tombstones (hash, erased_at)
             SELECT h, $2 FROM unnest($1::bytea[]) AS h ON CONFLICT (hash) DO NOTHING",
            &[&hashes, &now],
        )
        .await?;
        tx.execute("DELETE FROM tv_subjects WHERE subject = $1", &[&key])
            .await?;
        // Owed to the next full purge (see `Store::pending_purges`).
        tx.execute(
            "INSERT INTO tv_purge_pending (erased_at, subject) VALUES ($1, $2)
             ON CONFLICT DO NOTHING",
            &[&now, &key],
        )
        .await?;
        // Delivered to every listener at commit, before this call returns.
        tx.execute(
            "SELECT pg_notify($1, $2)",
            &[&CHANNEL, &format!("forget:{}", hex::encode(subject.0))],
        )
        .await?;
        tx.commit().await?;
        Ok(Ok(tokens.len() as u64))
    }
}
