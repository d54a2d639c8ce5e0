//! The [`Store`] implementation over the parts of this module.

use super::*;

#[async_trait]
impl Store for PostgresStore {
    fn stats(&self) -> Vec<(&'static str, u64)> {
        match &self.group_writer {
            Some(writer) => vec![
                (
                    "group_transactions",
                    writer.stats.transactions.load(Ordering::Relaxed),
                ),
                ("group_calls", writer.stats.calls.load(Ordering::Relaxed)),
            ],
            None => Vec::new(),
        }
    }

    async fn system_key(&self) -> Result<Option<WrappedKey>, StoreError> {
        self.meta("system_key")
            .await?
            .map(|bytes| wrapped(&bytes, "system key"))
            .transpose()
    }

    async fn init_system_key(&self, key: WrappedKey) -> Result<WrappedKey, StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO tv_meta (name, value) VALUES ('system_key', $1)
                 ON CONFLICT (name) DO NOTHING",
                &[&key.encode()],
            )
            .await
            .map_err(engine)?;
        drop(client);
        self.system_key()
            .await?
            .ok_or(StoreError::Engine("the system key vanished".into()))
    }

    async fn subject_keys(
        &self,
        subjects: &[SubjectHash],
    ) -> Result<Vec<Option<WrappedKey>>, StoreError> {
        let keys: Vec<&[u8]> = subjects.iter().map(|s| s.0.as_slice()).collect();
        let mut found: HashMap<Vec<u8>, Vec<u8>> = self
            .rows_by_key(
                "SELECT subject, wrapped FROM tv_subjects WHERE subject = ANY($1)",
                &keys,
            )
            .await?;
        subjects
            .iter()
            .map(|s| {
                found
                    .remove(s.0.as_slice())
                    .map(|bytes| wrapped(&bytes, "subject key"))
                    .transpose()
            })
            .collect()
    }

    async fn insert_subject_key(
        &self,
        subject: SubjectHash,
        key: WrappedKey,
    ) -> Result<WrappedKey, StoreError> {
        let client = self.client().await?;
        let (insert, select) = tokio::try_join!(
            client.prepare_cached(
                "INSERT INTO tv_subjects (subject, wrapped) VALUES ($1, $2)
                 ON CONFLICT (subject) DO NOTHING RETURNING wrapped",
            ),
            client.prepare_cached("SELECT wrapped FROM tv_subjects WHERE subject = $1"),
        )
        .map_err(engine)?;
        let subject = subject.0.to_vec();
        let encoded = key.encode();
        // The insert waits for a racing replica's insert of the same
        // subject; the select (a new snapshot) then sees the winner. A
        // forget in between deletes it: then insert again.
        for _ in 0..MAX_RETRIES {
            if client
                .query_opt(&insert, &[&subject, &encoded])
                .await
                .map_err(engine)?
                .is_some()
            {
                return Ok(key);
            }
            if let Some(row) = client
                .query_opt(&select, &[&subject])
                .await
                .map_err(engine)?
            {
                return wrapped(row.get(0), "subject key");
            }
        }
        Err(StoreError::Engine(
            "a subject key kept being created and erased".into(),
        ))
    }

    async fn index_entries(
        &self,
        keys: &[IndexKey],
    ) -> Result<Vec<Option<IndexEntry>>, StoreError> {
        if let Some(reads) = self.read_groups_for(keys.len()) {
            return reads
                .index_entries(keys.iter().map(|k| k.0.to_vec()).collect())
                .await;
        }
        let client = self.client().await?;
        let raw: Vec<&[u8]> = keys.iter().map(|k| k.0.as_slice()).collect();
        let mut found = read_index(&client, &raw).await.map_err(engine)?;
        Ok(keys
            .iter()
            .map(|key| found.remove(key.0.as_slice()))
            .collect())
    }

    async fn token_records(
        &self,
        tokens: &[String],
    ) -> Result<Vec<Option<TokenRecord>>, StoreError> {
        if let Some(reads) = self.read_groups_for(tokens.len()) {
            return reads
                .token_records(tokens)
                .await?
                .iter()
                .map(|bytes| bytes.as_deref().map(TokenRecord::decode).transpose())
                .collect();
        }
        let found: HashMap<String, Vec<u8>> = self
            .rows_by_key(
                "SELECT token, record FROM tv_tokens WHERE token = ANY($1)",
                &tokens,
            )
            .await?;
        tokens
            .iter()
            .map(|token| {
                // A token asked twice in one batch is answered twice.
                found
                    .get(token)
                    .map(|bytes| TokenRecord::decode(bytes))
                    .transpose()
            })
            .collect()
    }

    async fn subject_keys_after(
        &self,
        after: Option<SubjectHash>,
        limit: usize,
    ) -> Result<Vec<(SubjectHash, WrappedKey)>, StoreError> {
        let client = self.client().await?;
        let after = after.map(|s| s.0.to_vec()).unwrap_or_default();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        client
            .query(
                "SELECT subject, wrapped FROM tv_subjects WHERE subject > $1
                 ORDER BY subject LIMIT $2",
                &[&after, &limit],
            )
            .await
            .map_err(engine)?
            .iter()
            .map(|row| {
                let subject: Vec<u8> = row.get(0);
                let subject = SubjectHash(
                    subject
                        .try_into()
                        .map_err(|_| StoreError::Corrupt("subject key"))?,
                );
                Ok((subject, wrapped(row.get(1), "subject key")?))
            })
            .collect()
    }

    async fn replace_subject_key(
        &self,
        subject: SubjectHash,
        expected: &WrappedKey,
        new: WrappedKey,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let updated = client
            .execute(
                "UPDATE tv_subjects SET wrapped = $3 WHERE subject = $1 AND wrapped = $2",
                &[&subject.0.as_slice(), &expected.encode(), &new.encode()],
            )
            .await
            .map_err(engine)?;
        Ok(updated == 1)
    }

    async fn replace_system_key(
        &self,
        expected: &WrappedKey,
        new: WrappedKey,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let updated = client
            .execute(
                "UPDATE tv_meta SET value = $2 WHERE name = 'system_key' AND value = $1",
                &[&expected.encode(), &new.encode()],
            )
            .await
            .map_err(engine)?;
        Ok(updated == 1)
    }

    async fn kek_rotation(&self) -> Result<Option<u32>, StoreError> {
        self.meta("kek_rotation")
            .await?
            .map(|bytes| {
                let bytes: [u8; 4] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("rotation"))?;
                Ok(u32::from_be_bytes(bytes))
            })
            .transpose()
    }

    async fn set_kek_rotation(&self, target: Option<u32>) -> Result<(), StoreError> {
        let client = self.client().await?;
        match target {
            Some(version) => client
                .execute(
                    "INSERT INTO tv_meta (name, value) VALUES ('kek_rotation', $1)
                     ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                    &[&version.to_be_bytes().as_slice()],
                )
                .await
                .map_err(engine)?,
            None => client
                .execute("DELETE FROM tv_meta WHERE name = 'kek_rotation'", &[])
                .await
                .map_err(engine)?,
        };
        Ok(())
    }

    async fn ledger_applied(&self) -> Result<Vec<(u64, [u8; 32])>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT name, value FROM tv_meta WHERE name LIKE 'ledger_applied/%' ORDER BY name",
                &[],
            )
            .await
            .map_err(engine)?;
        rows.iter()
            .map(|row| {
                let name: String = row.get(0);
                let value: Vec<u8> = row.get(1);
                let seq = name
                    .strip_prefix(LEDGER_APPLIED)
                    .and_then(|seq| seq.parse().ok())
                    .ok_or(StoreError::Corrupt("ledger mark"))?;
                let mac = value
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("ledger mark"))?;
                Ok((seq, mac))
            })
            .collect()
    }

    async fn mark_ledger_applied(
        &self,
        entries: Vec<(u64, [u8; 32])>,
        replace: bool,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(engine)?;
        if replace {
            tx.execute(
                "DELETE FROM tv_meta WHERE name LIKE 'ledger_applied/%'",
                &[],
            )
            .await
            .map_err(engine)?;
        }
        // Zero-padded, so names sort in sequence order.
        let names: Vec<String> = entries
            .iter()
            .map(|(seq, _)| format!("{LEDGER_APPLIED}{seq:020}"))
            .collect();
        let macs: Vec<&[u8]> = entries.iter().map(|(_, mac)| mac.as_slice()).collect();
        tx.execute(
            "INSERT INTO tv_meta (name, value) SELECT * FROM unnest($1::text[], $2::bytea[])
             ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
            &[&names, &macs],
        )
        .await
        .map_err(engine)?;
        tx.commit().await.map_err(engine)
    }

    async fn insert_tokens(
        &self,
        batch: Vec<NewToken>,
        sealed_under: &[(SubjectHash, &WrappedKey)],
        now: i64,
    ) -> Result<InsertOutcome, StoreError> {
        let keys: HashSet<&[u8]> = batch
            .iter()
            .filter_map(|item| item.index_key.as_ref().map(|k| k.0.as_slice()))
            .collect();
        if keys.len() != batch.iter().filter(|item| item.index_key.is_some()).count() {
            return Err(StoreError::Misuse("one index key twice in a batch"));
        }
        if batch.is_empty() {
            return Ok(InsertOutcome::Committed);
        }
        let keys = SealingKeys::of_batch(&batch, sealed_under)?;
        match &self.group_writer {
            Some(writer) => writer.insert(batch, keys, now).await,
            None => {
                self.retrying(|| self.try_insert_tokens(&batch, &keys, now))
                    .await
            }
        }
    }

    async fn subject_tokens(
        &self,
        subject: SubjectHash,
        cursor: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<TokenPage, StoreError> {
        let limit = limit.max(1);
        let client = self.client().await?;
        let from = match cursor {
            Some(bytes) => String::from_utf8(bytes)
                .map_err(|_| StoreError::Misuse("a cursor of another store"))?,
            None => String::new(),
        };
        let fetch = i64::try_from(limit + 1).unwrap_or(i64::MAX);
        let rows = client
            .query(
                "SELECT token, record FROM tv_tokens WHERE subject = $1 AND token >= $2
                 ORDER BY token LIMIT $3",
                &[&subject.0.as_slice(), &from, &fetch],
            )
            .await
            .map_err(engine)?;
        let mut tokens = rows
            .iter()
            .map(|row| Ok((row.get::<_, String>(0), TokenRecord::decode(row.get(1))?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let next = (tokens.len() > limit)
            .then(|| tokens.pop().map(|(token, _)| token.into_bytes()))
            .flatten();
        Ok(TokenPage { tokens, next })
    }

    async fn forget_subject(
        &self,
        subject: SubjectHash,
        hasher: TombstoneHasher,
        now: i64,
    ) -> Result<u64, StoreError> {
        self.retrying(|| self.try_forget(&subject, &hasher, now))
            .await
    }

    async fn tombstones(&self, hashes: &[[u8; 32]]) -> Result<Vec<bool>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT hash FROM tv_tombstones WHERE hash = ANY($1)")
            .await
            .map_err(engine)?;
        let raw: Vec<&[u8]> = hashes.iter().map(|h| h.as_slice()).collect();
        let found: HashSet<Vec<u8>> = client
            .query(&stmt, &[&raw])
            .await
            .map_err(engine)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        Ok(hashes
            .iter()
            .map(|h| found.contains(h.as_slice()))
            .collect())
    }

    /// Deletes expired rows and VACUUMs the tables that held erased data,
    /// so their dead tuples' space is marked free. It cannot promise what
    /// [`Store::purge`] asks of RocksDB: PostgreSQL does not zero freed
    /// space, and WAL segments (and any WAL archive or base backup) keep
    /// the old rows until recycled. keys/README.md states the bound.
    async fn purge(&self) -> Result<(), StoreError> {
        let _one_at_a_time = self.purging.lock().await;
        let client = self.client().await?;
        let now = crate::clock::unix_now();
        let owed = client
            .query("SELECT erased_at, subject FROM tv_purge_pending", &[])
            .await
            .map_err(engine)?;
        let owed_at: Vec<i64> = owed.iter().map(|row| row.get(0)).collect();
        let owed_subjects: Vec<Vec<u8>> = owed.iter().map(|row| row.get(1)).collect();
        client
            .execute(
                "DELETE FROM tv_tokens WHERE expires_at IS NOT NULL AND expires_at <= $1",
                &[&now],
            )
            .await
            .map_err(engine)?;
        client
            .execute(
                "DELETE FROM tv_index WHERE expires_at IS NOT NULL AND expires_at <= $1",
                &[&now],
            )
            .await
            .map_err(engine)?;
        client
            .batch_execute("VACUUM tv_subjects, tv_tokens, tv_index")
            .await
            .map_err(engine)?;
        client
            .execute(
                "DELETE FROM tv_purge_pending p USING unnest($1::bigint[], $2::bytea[]) AS o(at, s)
                 WHERE p.erased_at = o.at AND p.subject = o.s",
                &[&owed_at, &owed_subjects],
            )
            .await
            .map_err(engine)?;
        Ok(())
    }

    /// VACUUMs `tv_subjects` (small: a row per subject), so the deleted key
    /// row's space is marked free. PostgreSQL does not zero it, and WAL
    /// segments, a WAL archive or a base backup keep the row: docs/erasure.md
    /// says what that means and what an operator must do.
    async fn purge_erased_keys(&self, _subject: SubjectHash) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .batch_execute("VACUUM tv_subjects")
            .await
            .map_err(engine)
    }

    async fn purge_owed(&self, subject: SubjectHash) -> Result<Option<i64>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT min(erased_at) FROM tv_purge_pending WHERE subject = $1",
                &[&subject.as_bytes().as_slice()],
            )
            .await
            .map_err(engine)?;
        Ok(row.get(0))
    }

    async fn pending_purges(&self) -> Result<PendingPurges, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one("SELECT count(*), min(erased_at) FROM tv_purge_pending", &[])
            .await
            .map_err(engine)?;
        let count: i64 = row.get(0);
        Ok(PendingPurges {
            count: count.max(0) as u64,
            oldest_erased_at: row.get(1),
        })
    }

    async fn create_backup(&self, _dir: &Path) -> Result<BackupInfo, StoreError> {
        Err(StoreError::Unsupported(
            "the postgres store is backed up with PostgreSQL's own tools (pg_dump, or base backups with WAL archiving for point-in-time recovery)",
        ))
    }

    fn watch_invalidations(&self, sink: InvalidationSink) {
        if !self.listening() {
            sink(Invalidation::Suspend);
        }
        *self.sink.lock() = Some(sink);
    }

    async fn claim_audit_chain(&self) -> Result<(), StoreError> {
        self.lease.claim().await
    }

    fn audit_chain_name(&self) -> String {
        self.replica.clone()
    }

    async fn append_audit(&self, records: Vec<(u64, Vec<u8>)>) -> Result<(), StoreError> {
        self.lease.check()?;
        let seqs = records
            .iter()
            .map(|(seq, _)| i64::try_from(*seq).map_err(|_| StoreError::Misuse("audit seq")))
            .collect::<Result<Vec<_>, _>>()?;
        let bodies: Vec<&[u8]> = records.iter().map(|(_, r)| r.as_slice()).collect();
        let client = self.client().await?;
        // Always synced: an audit record must be durable before the reveal
        // it records is answered, whatever sync_writes says.
        let mut client = client;
        let tx = client.transaction().await.map_err(engine)?;
        tx.batch_execute("SET LOCAL synchronous_commit = on")
            .await
            .map_err(engine)?;
        let inserted: HashSet<i64> = tx
            .query(
                "INSERT INTO tv_audit (replica, seq, record)
                 SELECT $1, s, r FROM unnest($2::bigint[], $3::bytea[]) AS a(s, r)
                 ON CONFLICT (replica, seq) DO NOTHING
                 RETURNING seq",
                &[&self.replica, &seqs, &bodies],
            )
            .await
            .map_err(engine)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        if inserted.len() < records.len() {
            // Dropped uncommitted on an error: nothing of the batch stays.
            audit::check_skipped(&tx, &self.replica, &records, &inserted).await?;
        }
        tx.commit().await.map_err(engine)
    }

    async fn audit_records(
        &self,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let client = self.client().await?;
        let from = i64::try_from(from_seq).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(
                "SELECT seq, record FROM tv_audit WHERE replica = $1 AND seq >= $2
                 ORDER BY seq LIMIT $3",
                &[&self.replica, &from, &limit],
            )
            .await
            .map_err(engine)?;
        Ok(rows
            .iter()
            .map(|row| (row.get::<_, i64>(0) as u64, row.get(1)))
            .collect())
    }

    async fn last_audit_record(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT seq, record FROM tv_audit WHERE replica = $1 ORDER BY seq DESC LIMIT 1",
                &[&self.replica],
            )
            .await
            .map_err(engine)?;
        Ok(row.map(|row| (row.get::<_, i64>(0) as u64, row.get(1))))
    }
}
