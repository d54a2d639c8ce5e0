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

/// Domain separation of the chain's MACs.
const MAC_LABEL: &[u8] = b"tokenvault/v1/erasure-ledger";
/// The advisory lock that serialises appends to a PostgreSQL ledger (and
/// creating its table), across replicas.
const PG_LEDGER_LOCK: i64 = 0x746f_6b65_6e6c;

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

/// The file form of an entry; `kind` says which optional fields it has.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    seq: u64,
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subject_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    erased_at_unix: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    destroyed_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lines: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
    mac: String,
}

/// A line of an earlier version (no chain).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacyLine {
    subject_hash: String,
    #[allow(dead_code)]
    erased_at_unix: i64,
}

const KIND_FORGET: &str = "forget";
/// Domain separation of a forget's destroyed-key fingerprint in its MAC
/// (an entry without one is MACed as before, so old entries verify).
const DESTROYED_KEY_LABEL: &[u8] = b"destroyed-key";
const KIND_LEGACY: &str = "legacy_prefix";

fn entry_mac(key: &SecretKey, seq: u64, record: &Record, prev: &[u8; 32]) -> [u8; 32] {
    let seq = seq.to_be_bytes();
    match record {
        Record::Forget {
            subject,
            erased_at_unix,
            destroyed_key: None,
        } => key.mac(&[
            MAC_LABEL,
            &seq,
            KIND_FORGET.as_bytes(),
            subject.as_bytes(),
            &erased_at_unix.to_be_bytes(),
            prev,
        ]),
        Record::Forget {
            subject,
            erased_at_unix,
            destroyed_key: Some(fingerprint),
        } => key.mac(&[
            MAC_LABEL,
            &seq,
            KIND_FORGET.as_bytes(),
            subject.as_bytes(),
            &erased_at_unix.to_be_bytes(),
            DESTROYED_KEY_LABEL,
            fingerprint,
            prev,
        ]),
        Record::LegacyPrefix { lines, digest } => key.mac(&[
            MAC_LABEL,
            &seq,
            KIND_LEGACY.as_bytes(),
            &lines.to_be_bytes(),
            digest,
            prev,
        ]),
    }
}

fn to_line(entry: &Entry) -> String {
    let mut line = Line {
        seq: entry.seq,
        kind: String::new(),
        subject_hash: None,
        erased_at_unix: None,
        destroyed_key: None,
        lines: None,
        digest: None,
        mac: hex::encode(entry.mac),
    };
    match &entry.record {
        Record::Forget {
            subject,
            erased_at_unix,
            destroyed_key,
        } => {
            line.kind = KIND_FORGET.into();
            line.subject_hash = Some(hex::encode(subject.as_bytes()));
            line.erased_at_unix = Some(*erased_at_unix);
            line.destroyed_key = destroyed_key.map(hex::encode);
        }
        Record::LegacyPrefix { lines, digest } => {
            line.kind = KIND_LEGACY.into();
            line.lines = Some(*lines);
            line.digest = Some(hex::encode(digest));
        }
    }
    // A struct of strings and integers always serialises.
    serde_json::to_string(&line).unwrap_or_default()
}

fn hex32(text: &str) -> Option<[u8; 32]> {
    hex::decode(text).ok()?.try_into().ok()
}

/// Parses a chained line (not yet checked against the chain).
fn parse_line(text: &str) -> Result<Entry, &'static str> {
    let line: Line = serde_json::from_str(text).map_err(|_| "not a ledger entry")?;
    let mac = hex32(&line.mac).ok_or("not a ledger entry")?;
    let destroyed_key = match (line.kind.as_str(), &line.destroyed_key) {
        (_, None) => None,
        (KIND_FORGET, Some(hex)) => Some(hex32(hex).ok_or("not a ledger entry")?),
        _ => return Err("not a ledger entry"),
    };
    let record = match (
        line.kind.as_str(),
        line.subject_hash,
        line.erased_at_unix,
        line.lines,
        line.digest,
    ) {
        (KIND_FORGET, Some(subject), Some(erased_at_unix), None, None) => Record::Forget {
            subject: SubjectHash(hex32(&subject).ok_or("not a ledger entry")?),
            erased_at_unix,
            destroyed_key,
        },
        (KIND_LEGACY, None, None, Some(lines), Some(digest)) => Record::LegacyPrefix {
            lines,
            digest: hex32(&digest).ok_or("not a ledger entry")?,
        },
        _ => return Err("not a ledger entry"),
    };
    Ok(Entry {
        seq: line.seq,
        mac,
        record,
    })
}

/// Checks chained entries in order against the key, after `legacy`
/// unchained lines whose bytes hash to `legacy_digest`.
struct ChainCheck<'a> {
    key: &'a SecretKey,
    name: &'a str,
    legacy: u64,
    legacy_digest: [u8; 32],
    prev: [u8; 32],
    next_seq: u64,
}

impl ChainCheck<'_> {
    fn push(&mut self, line_no: usize, entry: &Entry) -> Result<(), LedgerError> {
        let corrupt = |why| LedgerError::Corrupt {
            name: self.name.to_string(),
            line: line_no,
            why,
        };
        if entry.seq != self.next_seq {
            return Err(corrupt(
                "out of sequence: entries were removed, reordered or inserted",
            ));
        }
        let expected = entry_mac(self.key, entry.seq, &entry.record, &self.prev);
        if !bool::from(expected.ct_eq(&entry.mac)) {
            return Err(corrupt(
                "its MAC does not match: the entry was edited or moved, or the ledger is another vault's",
            ));
        }
        if let Record::LegacyPrefix { lines, digest } = &entry.record {
            if entry.seq != 1 || *lines != self.legacy || *digest != self.legacy_digest {
                return Err(corrupt(
                    "the unchained lines before it are not the ones it sealed",
                ));
            }
        }
        if entry.seq == 1 && self.legacy > 0 && !matches!(entry.record, Record::LegacyPrefix { .. })
        {
            return Err(corrupt("unchained lines are not sealed"));
        }
        self.prev = entry.mac;
        self.next_seq += 1;
        Ok(())
    }
}

enum Backend {
    File(Mutex<FileState>),
    Postgres(deadpool_postgres::Pool),
}

struct FileState {
    file: File,
    /// The file's length after the last whole entry: a failed append is
    /// cut back to it, so a half-written line never stays.
    len: u64,
    last_seq: u64,
    last_mac: [u8; 32],
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

    fn next_entry(&self, last_seq: u64, last_mac: &[u8; 32], record: Record) -> Entry {
        let seq = last_seq + 1;
        Entry {
            seq,
            mac: entry_mac(&self.key, seq, &record, last_mac),
            record,
        }
    }

    async fn append_postgres(
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

fn open_file(
    path: &Path,
    name: String,
    key: SecretKey,
    if_missing: IfMissing,
) -> Result<(ErasureLedger, Contents), LedgerError> {
    let io = |error| LedgerError::Io {
        name: name.clone(),
        error,
    };
    let existed = path.exists();
    if !existed {
        if if_missing == IfMissing::Refuse {
            return Err(LedgerError::Missing { name });
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(io)?;
        }
    }
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    if !existed {
        // The new file's name is durable before anything relies on it.
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(parent)
                .and_then(|dir| dir.sync_all())
                .map_err(io)?;
        }
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io)?;
    let mut contents = read_lines(&bytes, &name, &key)?;
    let (last_seq, last_mac) = contents
        .entries
        .last()
        .map(|e| (e.seq, e.mac))
        .unwrap_or((0, [0; 32]));
    let ledger = ErasureLedger {
        name,
        key,
        backend: Backend::File(Mutex::new(FileState {
            file,
            len: bytes.len() as u64,
            last_seq,
            last_mac,
        })),
    };
    if contents.entries.is_empty() && !contents.legacy.is_empty() {
        let seal = ledger.next_entry(
            0,
            &[0; 32],
            Record::LegacyPrefix {
                lines: contents.legacy.len() as u64,
                digest: contents.legacy_digest,
            },
        );
        if let Backend::File(state) = &ledger.backend {
            append_line(&mut state.lock(), &seal).map_err(|error| LedgerError::Io {
                name: ledger.name.clone(),
                error,
            })?;
        }
        contents.entries.push(seal);
    }
    Ok((ledger, contents))
}

/// Writes and syncs one entry's line; on failure the file is cut back to
/// its last whole entry.
fn append_line(state: &mut FileState, entry: &Entry) -> std::io::Result<()> {
    let mut line = to_line(entry);
    line.push('\n');
    let written = state
        .file
        .write_all(line.as_bytes())
        .and_then(|()| state.file.sync_data());
    if let Err(error) = written {
        let _ = state.file.set_len(state.len);
        return Err(error);
    }
    state.len += line.len() as u64;
    state.last_seq = entry.seq;
    state.last_mac = entry.mac;
    Ok(())
}

/// Parses and verifies a ledger file's bytes.
fn read_lines(bytes: &[u8], name: &str, key: &SecretKey) -> Result<Contents, LedgerError> {
    let corrupt = |line: usize, why| LedgerError::Corrupt {
        name: name.to_string(),
        line,
        why,
    };
    let text = std::str::from_utf8(bytes).map_err(|_| corrupt(0, "not UTF-8 text"))?;
    let mut contents = Contents {
        legacy_digest: Sha256::digest(b"").into(),
        ..Contents::default()
    };
    let mut legacy_end = 0;
    let mut check: Option<ChainCheck> = None;
    let mut offset = 0;
    for (i, raw) in text.split_inclusive('\n').enumerate() {
        let line_no = i + 1;
        let start = offset;
        offset += raw.len();
        let Some(line) = raw.strip_suffix('\n') else {
            return Err(corrupt(line_no, "cut short: the last line has no end"));
        };
        if line.is_empty() {
            continue;
        }
        if check.is_none() {
            if let Ok(legacy) = serde_json::from_str::<LegacyLine>(line) {
                let subject =
                    hex32(&legacy.subject_hash).ok_or(corrupt(line_no, "not a ledger entry"))?;
                contents.legacy.push(SubjectHash(subject));
                legacy_end = start + raw.len();
                continue;
            }
            contents.legacy_digest = Sha256::digest(&bytes[..legacy_end]).into();
            check = Some(ChainCheck {
                key,
                name,
                legacy: contents.legacy.len() as u64,
                legacy_digest: contents.legacy_digest,
                prev: [0; 32],
                next_seq: 1,
            });
        }
        let entry = parse_line(line).map_err(|why| {
            if serde_json::from_str::<LegacyLine>(line).is_ok() {
                corrupt(line_no, "an unchained line after chained ones")
            } else {
                corrupt(line_no, why)
            }
        })?;
        if let Some(check) = check.as_mut() {
            check.push(line_no, &entry)?;
        }
        contents.entries.push(entry);
    }
    if check.is_none() {
        contents.legacy_digest = Sha256::digest(&bytes[..legacy_end]).into();
    }
    Ok(contents)
}

/// A PostgreSQL ledger's failure, before it is named.
enum PgFailure {
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

fn pg_error(name: &str, failure: impl Into<PgFailure>) -> LedgerError {
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

fn pg_pool(options: &PostgresOptions, name: &str) -> Result<deadpool_postgres::Pool, LedgerError> {
    crate::store::postgres::connect_pool(options).map_err(|e| LedgerError::Postgres {
        name: name.to_string(),
        error: e.to_string(),
    })
}

async fn table_exists(client: &deadpool_postgres::Object) -> Result<bool, tokio_postgres::Error> {
    let row = client
        .query_one("SELECT to_regclass('tv_erasure_ledger') IS NOT NULL", &[])
        .await?;
    Ok(row.get(0))
}

async fn open_postgres(
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
