//! The PostgreSQL backend: a table `tv_erasure_ledger` in a database of
//! its own, appended under an advisory lock so every replica extends one
//! chain, and read on from a known entry for what other replicas added.

use super::*;

/// The advisory lock that serialises appends to a PostgreSQL ledger (and
/// creating its table), across replicas.
pub(super) const PG_LEDGER_LOCK: i64 = 0x746f_6b65_6e6c;

impl ErasureLedger {
    /// The entries after entry `seq` (whose MAC is `mac`), checked on the
    /// chain from it: what other writers appended since. A file ledger has
    /// one writer, this process, so nothing is new to it.
    pub async fn entries_after(&self, seq: u64, mac: [u8; 32]) -> Result<Vec<Entry>, LedgerError> {
        let Backend::Postgres(pool) = &self.backend else {
            return Ok(Vec::new());
        };
        let after = i64::try_from(seq).map_err(|_| LedgerError::Corrupt {
            name: self.name.clone(),
            line: 0,
            why: "out of sequence",
        })?;
        let client = pool.get().await.map_err(|e| pg_error(&self.name, e))?;
        let rows = client
            .query(
                "SELECT seq, line FROM tv_erasure_ledger WHERE seq > $1 ORDER BY seq",
                &[&after],
            )
            .await
            .map_err(|e| pg_error(&self.name, e))?;
        drop(client);
        let mut check = ChainCheck {
            key: &self.key,
            name: &self.name,
            legacy: 0,
            legacy_digest: Sha256::digest(b"").into(),
            prev: mac,
            next_seq: seq + 1,
        };
        rows.iter()
            .map(|row| {
                let line_seq: i64 = row.get(0);
                let line: String = row.get(1);
                let line_no = usize::try_from(line_seq).unwrap_or(0);
                let corrupt = |why| LedgerError::Corrupt {
                    name: self.name.clone(),
                    line: line_no,
                    why,
                };
                let entry = parse_line(&line).map_err(corrupt)?;
                if u64::try_from(line_seq).ok() != Some(entry.seq) {
                    return Err(corrupt("its row's seq is not the entry's"));
                }
                check.push(line_no, &entry)?;
                Ok(entry)
            })
            .collect()
    }

    pub(super) async fn append_postgres(
        &self,
        pool: &deadpool_postgres::Pool,
        record: Record,
    ) -> Result<Entry, PgFailure> {
        let mut client = pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PG_LEDGER_LOCK])
            .await?;
        let last = tx
            .query_opt(
                "SELECT seq, line FROM tv_erasure_ledger ORDER BY seq DESC LIMIT 1",
                &[],
            )
            .await?;
        let (last_seq, last_mac) = match last {
            Some(row) => {
                let seq: i64 = row.get(0);
                let line: String = row.get(1);
                let entry = parse_line(&line).map_err(PgFailure::Corrupt)?;
                if u64::try_from(seq).ok() != Some(entry.seq) {
                    return Err(PgFailure::Corrupt("out of sequence"));
                }
                (entry.seq, entry.mac)
            }
            None => (0, [0; 32]),
        };
        let entry = self.next_entry(last_seq, &last_mac, record);
        let seq = i64::try_from(entry.seq).map_err(|_| PgFailure::Corrupt("out of sequence"))?;
        tx.execute(
            "INSERT INTO tv_erasure_ledger (seq, line) VALUES ($1, $2)",
            &[&seq, &to_line(&entry)],
        )
        .await?;
        tx.commit().await?;
        Ok(entry)
    }
}

/// A PostgreSQL ledger's failure, before it is named.
pub(super) enum PgFailure {
    Pool(deadpool_postgres::PoolError),
    Sql(tokio_postgres::Error),
    Corrupt(&'static str),
}

impl From<deadpool_postgres::PoolError> for PgFailure {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        PgFailure::Pool(error)
    }
}

impl From<tokio_postgres::Error> for PgFailure {
    fn from(error: tokio_postgres::Error) -> Self {
        PgFailure::Sql(error)
    }
}

pub(super) fn pg_error(name: &str, failure: impl Into<PgFailure>) -> LedgerError {
    let error = match failure.into() {
        PgFailure::Pool(error) => format!("pool: {error}"),
        PgFailure::Sql(error) => match crate::store::postgres::engine(error) {
            crate::store::StoreError::Engine(message) => message,
            other => other.to_string(),
        },
        PgFailure::Corrupt(why) => {
            return LedgerError::Corrupt {
                name: name.to_string(),
                line: 0,
                why,
            }
        }
    };
    LedgerError::Postgres {
        name: name.to_string(),
        error,
    }
}

pub(super) fn pg_pool(
    options: &PostgresOptions,
    name: &str,
) -> Result<deadpool_postgres::Pool, LedgerError> {
    crate::store::postgres::connect_pool(options).map_err(|e| LedgerError::Postgres {
        name: name.to_string(),
        error: e.to_string(),
    })
}

pub(super) async fn table_exists(
    client: &deadpool_postgres::Object,
) -> Result<bool, tokio_postgres::Error> {
    let row = client
        .query_one("SELECT to_regclass('tv_erasure_ledger') IS NOT NULL", &[])
        .await?;
    Ok(row.get(0))
}

pub(super) async fn open_postgres(
    options: &PostgresOptions,
    name: String,
    key: SecretKey,
    if_missing: IfMissing,
) -> Result<(ErasureLedger, Contents), LedgerError> {
    let pool = pg_pool(options, &name)?;
    let mut client = pool.get().await.map_err(|e| pg_error(&name, e))?;
    if !table_exists(&client)
        .await
        .map_err(|e| pg_error(&name, e))?
    {
        if if_missing == IfMissing::Refuse {
            return Err(LedgerError::Missing { name });
        }
        let tx = client.transaction().await.map_err(|e| pg_error(&name, e))?;
        tx.batch_execute(&format!(
            "SELECT pg_advisory_xact_lock({PG_LEDGER_LOCK});
             CREATE TABLE IF NOT EXISTS tv_erasure_ledger (seq bigint PRIMARY KEY, line text NOT NULL);"
        ))
        .await
        .map_err(|e| pg_error(&name, e))?;
        tx.commit().await.map_err(|e| pg_error(&name, e))?;
    }
    let rows = client
        .query("SELECT seq, line FROM tv_erasure_ledger ORDER BY seq", &[])
        .await
        .map_err(|e| pg_error(&name, e))?;
    drop(client);
    let mut check = ChainCheck {
        key: &key,
        name: &name,
        legacy: 0,
        legacy_digest: Sha256::digest(b"").into(),
        prev: [0; 32],
        next_seq: 1,
    };
    let mut contents = Contents {
        legacy_digest: check.legacy_digest,
        ..Contents::default()
    };
    for (i, row) in rows.iter().enumerate() {
        let seq: i64 = row.get(0);
        let line: String = row.get(1);
        let corrupt = |why| LedgerError::Corrupt {
            name: name.clone(),
            line: i + 1,
            why,
        };
        let entry = parse_line(&line).map_err(corrupt)?;
        if u64::try_from(seq).ok() != Some(entry.seq) {
            return Err(corrupt("its row's seq is not the entry's"));
        }
        check.push(i + 1, &entry)?;
        contents.entries.push(entry);
    }
    Ok((
        ErasureLedger {
            name,
            key,
            backend: Backend::Postgres(pool),
        },
        contents,
    ))
}
