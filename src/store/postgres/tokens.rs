//! Token batches: one transaction that checks each subject's key row is
//! still the one its tokens were sealed under, inserts the tokens and
//! index entries, and resolves deterministic races by `ON CONFLICT`.

use super::*;

impl PostgresStore {
    /// One attempt at a token batch; Err(retryable) is retried by the caller.
    pub(super) async fn try_insert_tokens(
        &self,
        batch: &[NewToken],
        keys: &SealingKeys,
        now: i64,
    ) -> Result<Result<InsertOutcome, StoreError>, tokio_postgres::Error> {
        let mut client = match self.client().await {
            Ok(client) => client,
            Err(error) => return Ok(Err(error)),
        };
        let records = match batch
            .iter()
            .map(|item| item.record.encode())
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(records) => records,
            Err(error) => return Ok(Err(error)),
        };
        // Rows in key order (stable, so a repeated token keeps its first
        // item): concurrent batches then lock rows in one order.
        let mut order: Vec<usize> = (0..batch.len()).collect();
        order.sort_by(|&a, &b| batch[a].token.cmp(&batch[b].token));
        let tokens: Vec<&str> = order.iter().map(|&i| batch[i].token.as_str()).collect();
        let token_subjects: Vec<&[u8]> = order
            .iter()
            .map(|&i| batch[i].record.subject.0.as_slice())
            .collect();
        let token_records: Vec<&[u8]> = order.iter().map(|&i| records[i].as_slice()).collect();
        let expiries: Vec<Option<i64>> =
            order.iter().map(|&i| batch[i].record.expires_at).collect();

        let mut indexed: Vec<usize> = (0..batch.len())
            .filter(|&i| batch[i].index_key.is_some())
            .collect();
        indexed.sort_by(|&a, &b| index_bytes(&batch[a]).cmp(index_bytes(&batch[b])));
        let index_keys: Vec<&[u8]> = indexed.iter().map(|&i| index_bytes(&batch[i])).collect();
        let index_tokens: Vec<&str> = indexed.iter().map(|&i| batch[i].token.as_str()).collect();
        let index_expiries: Vec<Option<i64>> = indexed
            .iter()
            .map(|&i| batch[i].record.expires_at)
            .collect();

        let tx = client.transaction().await?;
        let (check, insert_tokens, upsert_index) = tokio::try_join!(
            // The key share holds off a forget until the commit; a rewrap
            // meanwhile (an update of `wrapped` only) keeps the same key.
            tx.prepare_cached(
                "SELECT count(*) FROM (SELECT 1 FROM tv_subjects AS s
                     JOIN unnest($1::bytea[], $2::bytea[]) AS k(subject, wrapped)
                       ON s.subject = k.subject AND s.wrapped = k.wrapped
                     FOR KEY SHARE OF s) AS live",
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
            [&keys.subjects, &keys.wrapped];
        let token_params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
            [&tokens, &token_subjects, &token_records, &expiries];
        let (live, inserted, upserted) = tokio::try_join!(
            tx.query_one(&check, &check_params),
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
        let live: i64 = live.get(0);
        if live != keys.subjects.len() as i64 {
            // The transaction rolls back as it drops.
            return Ok(Err(StoreError::SubjectErased));
        }

        let mut inserted: HashSet<String> = inserted.iter().map(|row| row.get(0)).collect();
        let mut conflicts = Vec::new();
        for (item, new) in batch.iter().enumerate() {
            if !inserted.remove(&new.token) {
                conflicts.push(Conflict::TokenTaken { item });
            }
        }
        let upserted: HashSet<Vec<u8>> = upserted.iter().map(|row| row.get(0)).collect();
        let taken: Vec<usize> = indexed
            .iter()
            .copied()
            .filter(|&i| !upserted.contains(index_bytes(&batch[i])))
            .collect();
        if !taken.is_empty() {
            let keys: Vec<&[u8]> = taken.iter().map(|&i| index_bytes(&batch[i])).collect();
            let existing = read_index(&tx, &keys).await?;
            for item in taken {
                // Gone meanwhile only if the subject was forgotten: then
                // the check above has failed already.
                let Some(entry) = existing.get(index_bytes(&batch[item])).cloned() else {
                    return Ok(Err(StoreError::SubjectErased));
                };
                conflicts.push(Conflict::IndexTaken {
                    item,
                    existing: entry,
                });
            }
        }
        if !conflicts.is_empty() {
            conflicts.sort_by_key(|conflict| match conflict {
                Conflict::TokenTaken { item } | Conflict::IndexTaken { item, .. } => *item,
            });
            return Ok(Ok(InsertOutcome::Conflicts(conflicts)));
        }
        tx.commit().await?;
        Ok(Ok(InsertOutcome::Committed))
    }
}

/// The subjects of a token batch and, in the same order, the encoded
/// wrapped keys its tokens were sealed under.
pub(super) struct SealingKeys {
    subjects: Vec<Vec<u8>>,
    wrapped: Vec<Vec<u8>>,
}

impl SealingKeys {
    pub(super) fn of_batch(
        batch: &[NewToken],
        sealed_under: &[(SubjectHash, &WrappedKey)],
    ) -> Result<SealingKeys, StoreError> {
        let subjects: HashSet<SubjectHash> = batch.iter().map(|item| item.record.subject).collect();
        let mut keys = SealingKeys {
            subjects: Vec::with_capacity(subjects.len()),
            wrapped: Vec::with_capacity(subjects.len()),
        };
        for subject in subjects {
            let key = crate::store::sealing_key_of(sealed_under, subject)?;
            keys.subjects.push(subject.0.to_vec());
            keys.wrapped.push(key.encode());
        }
        Ok(keys)
    }
}

impl SealingKeys {
    /// The (subject, encoded wrapped key) pairs.
    pub(super) fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.subjects
            .iter()
            .zip(&self.wrapped)
            .map(|(subject, wrapped)| (subject.as_slice(), wrapped.as_slice()))
    }
}

pub(super) fn index_bytes(item: &NewToken) -> &[u8] {
    item.index_key
        .as_ref()
        .map(|key| key.0.as_slice())
        .unwrap_or_default()
}

/// The `tv_index` key range of a subject (keys start with its hash).
pub(super) fn index_range(subject: &SubjectHash) -> (Vec<u8>, Vec<u8>) {
    let mut low = subject.0.to_vec();
    let mut high = low.clone();
    low.extend_from_slice(&[0x00; 32]);
    high.extend_from_slice(&[0xFF; 32]);
    (low, high)
}

pub(super) async fn read_index(
    client: &impl deadpool_postgres::GenericClient,
    keys: &[&[u8]],
) -> Result<HashMap<Vec<u8>, IndexEntry>, tokio_postgres::Error> {
    // Prepared once per connection: a lookup is then one round trip.
    let stmt = client
        .prepare_cached(
            "SELECT index_key, token, expires_at FROM tv_index WHERE index_key = ANY($1)",
        )
        .await?;
    let rows = client.query(&stmt, &[&keys]).await?;
    Ok(rows
        .iter()
        .map(|row| {
            (
                row.get::<_, Vec<u8>>(0),
                IndexEntry {
                    token: row.get(1),
                    expires_at: row.get(2),
                },
            )
        })
        .collect())
}
