//! The erasure ledger: an append-only, MAC-chained record of every
//! forgotten subject (by its keyed hash), kept where a restore of the
//! data does not roll it back. A restore replays it, so a backup taken
//! before a subject was forgotten cannot bring the subject back.
//!
//! Where it lives ([`LedgerLocation`]): a JSON-lines file (the RocksDB
//! store; outside `--dev` never under the data directory), or a table
//! `tv_erasure_ledger` in a PostgreSQL database of its own (the PostgreSQL
//! store: every replica appends to it, and it is not in the data
//! database's dumps or base backups).
//!
//! Integrity: entry `n` carries `seq = n` and
//! `mac = HMAC(key, label, n, kind, fields, mac of entry n-1)` (all zero
//! before entry 1), under a key derived from the system key, as erasure
//! receipts are. An edited, reordered, re-numbered or foreign line breaks
//! the chain and the ledger is refused; a line cut part-way (no line end)
//! is refused. A cut of whole lines at the tail keeps the chain intact:
//! that is found by comparing with what the store applied (see
//! `vault::ledger`).
//!
//! Lines of earlier versions (`{"subject_hash":..,"erased_at_unix":..}`,
//! no chain) are read as a legacy prefix; the first open for appending
//! seals them with a `legacy_prefix` entry (their count and SHA-256), so
//! from then on an edit of them is found too.
//!
//! An entry is written and synced before the store erases the subject: if
//! the process dies between the two, the replay erases what the caller
//! asked to erase. The ledger never holds a subject id, a value or a key.
//! Its API appends records of a kind ([`Record`]); more kinds can be added
//! without changing the chain.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::crypto::{SecretKey, SubjectHash};
use crate::store::postgres::PostgresOptions;

mod file;
mod line;
mod postgres;

use file::{append_line, open_file, FileState};
use line::{entry_mac, hex32, parse_line, to_line, ChainCheck, LegacyLine};
use postgres::{open_postgres, pg_error, pg_pool, table_exists};

/// Domain separation of the chain's MACs.
const MAC_LABEL: &[u8] = b"tokenvault/v1/erasure-ledger";

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("erasure ledger {name}: {error}")]
    Io {
        name: String,
        #[source]
        error: std::io::Error,
    },
    #[error("erasure ledger {name}: {error}")]
    Postgres { name: String, error: String },
    #[error("erasure ledger {name} is missing")]
    Missing { name: String },
    #[error("erasure ledger {name}, entry {line}: {why}")]
    Corrupt {
        name: String,
        line: usize,
        why: &'static str,
    },
}

/// Where the ledger is kept.
#[derive(Clone)]
pub enum LedgerLocation {
    File(PathBuf),
    /// A database of its own (never the data database).
    Postgres(PostgresOptions),
}

impl LedgerLocation {
    /// How errors and logs name the ledger: the file's path, or the
    /// database and server (never the URL: it may hold a password).
    pub fn name(&self) -> String {
        match self {
            LedgerLocation::File(path) => path.display().to_string(),
            LedgerLocation::Postgres(options) => postgres_name(&options.url),
        }
    }
}

impl std::fmt::Debug for LedgerLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// `postgres database DB on HOST:PORT`, from a connection string.
pub fn postgres_name(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(config) => {
            let host = match config.get_hosts().first() {
                Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
                Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
                None => "localhost".into(),
            };
            let port = config.get_ports().first().copied().unwrap_or(5432);
            let db = config
                .get_dbname()
                .or(config.get_user())
                .unwrap_or("postgres");
            format!("postgres database {db} on {host}:{port}")
        }
        Err(_) => "postgres (a connection string that does not parse)".into(),
    }
}

/// What an entry records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A subject was forgotten. `destroyed_key` is the keyed fingerprint
    /// of the DEK the forget destroyed (None in entries of earlier
    /// versions, and for a subject that had no key): a copy of that key
    /// row written back later is known by it and refused.
    Forget {
        subject: SubjectHash,
        erased_at_unix: i64,
        destroyed_key: Option<[u8; 32]>,
    },
    /// Seals the unchained lines of an earlier version before it: their
    /// count and the SHA-256 of their bytes.
    LegacyPrefix { lines: u64, digest: [u8; 32] },
}

/// One chained entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub mac: [u8; 32],
    pub record: Record,
}

/// A verified ledger.
#[derive(Debug, Clone, Default)]
pub struct Contents {
    /// The subjects of the unchained (legacy) lines, in order.
    pub legacy: Vec<SubjectHash>,
    /// The SHA-256 of the legacy lines' bytes (what a seal records).
    pub legacy_digest: [u8; 32],
    /// The chained entries, `seq` 1, 2, ...
    pub entries: Vec<Entry>,
}

/// What opening does when the ledger does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfMissing {
    Create,
    Refuse,
}

enum Backend {
    File(Mutex<FileState>),
    Postgres(deadpool_postgres::Pool),
}

pub struct ErasureLedger {
    name: String,
    key: SecretKey,
    backend: Backend,
}

impl ErasureLedger {
    /// Whether the ledger exists (the file, or the table in its database).
    pub async fn exists(location: &LedgerLocation) -> Result<bool, LedgerError> {
        match location {
            LedgerLocation::File(path) => Ok(path.exists()),
            LedgerLocation::Postgres(options) => {
                let name = location.name();
                let pool = pg_pool(options, &name)?;
                let client = pool.get().await.map_err(|e| pg_error(&name, e))?;
                table_exists(&client).await.map_err(|e| pg_error(&name, e))
            }
        }
    }

    /// Opens the ledger for appending and returns it with its verified
    /// contents. Unchained lines of an earlier version are sealed first
    /// (the returned contents then end with that entry).
    pub async fn open(
        location: &LedgerLocation,
        key: SecretKey,
        if_missing: IfMissing,
    ) -> Result<(Self, Contents), LedgerError> {
        let name = location.name();
        match location {
            LedgerLocation::File(path) => open_file(path, name, key, if_missing),
            LedgerLocation::Postgres(options) => {
                open_postgres(options, name, key, if_missing).await
            }
        }
    }

    /// How errors and logs name this ledger.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Appends a record, durably, and returns its entry.
    pub async fn append(&self, record: Record) -> Result<Entry, LedgerError> {
        match &self.backend {
            Backend::File(state) => {
                let mut state = state.lock();
                let entry = self.next_entry(state.last_seq, &state.last_mac, record);
                append_line(&mut state, &entry).map_err(|error| LedgerError::Io {
                    name: self.name.clone(),
                    error,
                })?;
                Ok(entry)
            }
            Backend::Postgres(pool) => self
                .append_postgres(pool, record)
                .await
                .map_err(|e| pg_error(&self.name, e)),
        }
    }

    fn next_entry(&self, last_seq: u64, last_mac: &[u8; 32], record: Record) -> Entry {
        let seq = last_seq + 1;
        Entry {
            seq,
            mac: entry_mac(&self.key, seq, &record, last_mac),
            record,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SecretKey {
        SecretKey::from_slice(&[byte; 32]).expect("32 bytes")
    }

    fn forget(n: u8) -> Record {
        Record::Forget {
            subject: SubjectHash([n; 32]),
            erased_at_unix: 1_764_000_000 + i64::from(n),
            destroyed_key: n.is_multiple_of(2).then_some([n ^ 0x5a; 32]),
        }
    }

    async fn open(path: &Path, byte: u8) -> Result<(ErasureLedger, Contents), LedgerError> {
        ErasureLedger::open(
            &LedgerLocation::File(path.to_path_buf()),
            key(byte),
            IfMissing::Create,
        )
        .await
    }

    fn records(contents: &Contents) -> Vec<Record> {
        contents.entries.iter().map(|e| e.record.clone()).collect()
    }

    /// A ledger of three forgets at `path`; returns its text.
    async fn three(path: &Path) -> String {
        let (ledger, contents) = open(path, 1).await.expect("open");
        assert!(contents.entries.is_empty());
        ledger.append(forget(1)).await.expect("append");
        ledger.append(forget(2)).await.expect("append");
        drop(ledger);
        // Reopening appends after what is there, on the same chain.
        let (ledger, _) = open(path, 1).await.expect("reopen");
        let third = ledger.append(forget(3)).await.expect("append");
        assert_eq!(third.seq, 3);
        std::fs::read_to_string(path).expect("read")
    }

    #[tokio::test]
    async fn entries_read_back_in_order_on_one_chain() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ledger.jsonl");
        three(&path).await;
        let (_, contents) = open(&path, 1).await.expect("open");
        assert_eq!(records(&contents), vec![forget(1), forget(2), forget(3)]);
        assert_eq!(
            contents.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[tokio::test]
    async fn a_last_line_cut_part_way_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ledger.jsonl");
        let text = three(&path).await;
        for cut in [1, 10, 40] {
            std::fs::write(&path, &text[..text.len() - cut]).expect("cut");
            match open(&path, 1).await {
                Err(LedgerError::Corrupt { line: 3, name, .. }) => {
                    assert_eq!(name, path.display().to_string())
                }
                Err(other) => panic!("cut by {cut}: expected entry 3 corrupt, got {other}"),
                Ok(_) => panic!("cut by {cut}: opened"),
            }
        }
    }

    /// A whole last line cut leaves a valid chain one entry short: what
    /// finds it is the store's mark of entry 3 (see `vault::ledger`); here
    /// the ledger reads as exactly the first two entries, never as more.
    #[tokio::test]
    async fn a_whole_last_line_cut_reads_as_the_entries_before_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ledger.jsonl");
        let text = three(&path).await;
        let lines: Vec<&str> = text.lines().collect();
        std::fs::write(&path, format!("{}\n{}\n", lines[0], lines[1])).expect("cut");
        let (_, contents) = open(&path, 1).await.expect("open");
        assert_eq!(records(&contents), vec![forget(1), forget(2)]);
    }

    #[tokio::test]
    async fn an_edited_reordered_dropped_or_foreign_entry_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ledger.jsonl");
        let text = three(&path).await;
        let lines: Vec<&str> = text.lines().collect();
        let edited = text.replacen("1764000002", "1764000009", 1);
        let cases = [
            ("edited", edited, 2),
            (
                "reordered",
                format!("{}\n{}\n{}\n", lines[1], lines[0], lines[2]),
                1,
            ),
            ("dropped", format!("{}\n{}\n", lines[0], lines[2]), 2),
        ];
        for (what, bad, line) in cases {
            std::fs::write(&path, bad).expect("write");
            match open(&path, 1).await {
                Err(LedgerError::Corrupt { line: at, .. }) => assert_eq!(at, line, "{what}"),
                Err(other) => panic!("{what}: {other}"),
                Ok(_) => panic!("{what}: opened"),
            }
        }
        std::fs::write(&path, &text).expect("write");
        assert!(
            matches!(
                open(&path, 2).await,
                Err(LedgerError::Corrupt { line: 1, .. })
            ),
            "another vault's key"
        );
        assert!(open(&path, 1).await.is_ok());
    }

    #[tokio::test]
    async fn a_missing_ledger_is_refused_when_asked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub").join("ledger.jsonl");
        let location = LedgerLocation::File(path.clone());
        assert!(!ErasureLedger::exists(&location).await.expect("exists"));
        match ErasureLedger::open(&location, key(1), IfMissing::Refuse).await {
            Err(LedgerError::Missing { name }) => assert_eq!(name, path.display().to_string()),
            other => panic!("expected missing, got {:?}", other.err()),
        }
        assert!(!path.exists(), "refusing creates nothing");
        open(&path, 1).await.expect("create");
        assert!(ErasureLedger::exists(&location).await.expect("exists"));
    }

    #[tokio::test]
    async fn lines_of_an_earlier_version_are_read_and_sealed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ledger.jsonl");
        let legacy = format!(
            "{{\"subject_hash\":\"{}\",\"erased_at_unix\":10}}\n{{\"subject_hash\":\"{}\",\"erased_at_unix\":11}}\n",
            hex::encode([1u8; 32]),
            hex::encode([2u8; 32])
        );
        std::fs::write(&path, &legacy).expect("write");
        let (ledger, contents) = open(&path, 1).await.expect("open");
        assert_eq!(
            contents.legacy,
            vec![SubjectHash([1; 32]), SubjectHash([2; 32])]
        );
        assert!(matches!(
            contents.entries[..],
            [Entry {
                seq: 1,
                record: Record::LegacyPrefix { lines: 2, .. },
                ..
            }]
        ));
        ledger.append(forget(3)).await.expect("append");
        drop(ledger);
        let (_, contents) = open(&path, 1).await.expect("reopen");
        assert_eq!(contents.legacy.len(), 2);
        assert_eq!(contents.entries.len(), 2, "sealed once");
        // Once sealed, an edit of a legacy line is found.
        let text = std::fs::read_to_string(&path).expect("read");
        std::fs::write(
            &path,
            text.replacen("\"erased_at_unix\":10", "\"erased_at_unix\":12", 1),
        )
        .expect("write");
        assert!(matches!(
            open(&path, 1).await,
            Err(LedgerError::Corrupt { line: 3, .. })
        ));
        // An unchained line after chained ones is refused.
        std::fs::write(
            &path,
            format!("{text}{}", legacy.lines().next().unwrap_or_default()) + "\n",
        )
        .expect("write");
        assert!(matches!(
            open(&path, 1).await,
            Err(LedgerError::Corrupt { line: 5, .. })
        ));
    }
}
