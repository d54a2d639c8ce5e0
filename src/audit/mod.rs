//! The tamper-evident audit log: one record for every reveal, erasure,
//! export and denied call, chained under a key derived from the system
//! key, written to the store (`audit` column family) and to a JSON-lines
//! file a SIEM ships, its head anchored by MACed checkpoints in a file of
//! their own ([`checkpoint`]), so that a tail cut from both copies shows.
//!
//! It owns the record format ([`record`]), the chain checks ([`verify`]),
//! the checkpoints and the writer that numbers, chains and stores records.
//! Sequence numbers are never given twice: at start-up the next is above
//! both copies' last record and the newest checkpoint's. A call
//! that reveals data waits for [`AuditLog::append`] and reveals nothing
//! when it fails: the log is fail-closed, never best-effort.
//!
//! It must never see a value or a subject id. Subjects arrive as
//! [`SubjectHash`]es and tokens as tokens; both are stored only as
//! HMAC-SHA256 under the system's audit-hash key, so the shipped file
//! cannot be joined with the store's keys or a token list without that key.
//!
//! Group commit without a writer thread: an append queues its record, and
//! whichever caller finds the writer free becomes the group's leader. It
//! takes every record queued, seals them in sequence order, writes the
//! group to both sinks and answers each caller; if records were queued
//! meanwhile it wakes one of their callers to lead the next group (a
//! leader that kept writing for others would hold its own reply and its
//! runtime thread). The others only wait for their answer. An uncontended
//! reveal writes its own record on its own thread, without the queue.
//! A group that fails in one sink stays queued for it and is written
//! again before the next group, so the two copies never diverge for long
//! and the chain never has a hole; its callers get
//! [`AuditError::Unavailable`] meanwhile.
//!
//! Durability ([`Durability`]): by default a record is *written* to the
//! file before its reveal (the kernel has it, so it survives the process
//! being killed); the store's copy follows, written by a sync thread in
//! batches of [`STORE_BATCH`] (a full batch wakes it) and at every tick,
//! after which it makes both durable; no reveal waits for the store's
//! write unless the thread falls [`BATCHES_BEHIND`] behind. A failed store
//! write or sync refuses reveals until one succeeds. The store takes every record of a moved file
//! before the new file takes any, and a start after a crash copies what
//! the store lacks from the file's tail. With [`Durability::Synced`] each
//! group is synced to disk in both before any of its reveals.

pub mod checkpoint;
mod file;
pub mod record;
pub mod verify;

mod recovery;
mod sync;
mod writer;

use std::collections::VecDeque;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::config::{default_checkpoint_path, PurposeMode};
use crate::crypto::{KeyedMac, SecretKey, SubjectHash};
use crate::store::{Store, StoreError};
use checkpoint::{Checkpoint, CheckpointKey};
use file::FileSink;
use record::ListedHash;
pub use record::{AuditRecord, ChainKey, RecordOutcome, GENESIS_PREV};
use recovery::{file_catch_up, head_of, store_catch_up};
use sync::{SyncHealth, SyncThread};
pub use verify::{ChainError, ChainVerifier};
use writer::{store_catch_up_task, Writer};

/// How long a caller waits for its group's leader before it checks that
/// the group still has one (a leader's call can be cancelled mid-write).
const LEADER_CHECK: Duration = Duration::from_millis(50);
/// Records sealed but not yet in both sinks (one sink down) before new
/// appends are refused outright.
const MAX_UNWRITTEN: usize = 100_000;
/// Records the file may hold ahead of the store with written durability
/// before the sync thread is woken to store them (it stores the rest
/// every interval).
const STORE_BATCH: u64 = 256;
/// The same in bytes (records of large batches).
const STORE_BATCH_BYTES: usize = 64 * 1024;
/// Full batches the sync thread may fall behind before a leader stores
/// them itself (holding up the reveals behind it), so that the records
/// held in memory stay bounded.
const BATCHES_BEHIND: u64 = 4;
/// Records per store read when the file catches up at start-up.
const CATCH_UP_PAGE: usize = 1024;
/// Longest purpose kept in a record: a purpose is a short reason, and
/// the log must not grow by what a caller chooses to send.
const MAX_PURPOSE_BYTES: usize = 256;

/// Errors of the audit log. Messages carry no audited data.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// A record could not be made durable in both sinks (I/O, disk full,
    /// the file replaced, the store failing, the writer stopped).
    #[error("audit log unavailable: {0}")]
    Unavailable(String),
    /// At start-up: the stored log is broken or its two copies disagree.
    #[error("audit log at start-up: {0}")]
    Inconsistent(String),
}

impl From<StoreError> for AuditError {
    fn from(error: StoreError) -> Self {
        AuditError::Unavailable(error.to_string())
    }
}

/// What an audited call did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Outcome {
    /// Served (values revealed, data erased or exported).
    #[default]
    Ok,
    /// Refused: `code` is the gRPC code in snake_case
    /// (`permission_denied`, `unauthenticated`, `resource_exhausted`).
    Denied { code: &'static str, reason: String },
    /// Served or refused, and worth a human's attention (a rate limit hit,
    /// a mass export).
    Alert { kind: String, detail: String },
}

/// One audited call, as the service describes it. Subjects and tokens are
/// hashed by the log before anything is written.
#[derive(Debug, Clone, Default)]
pub struct AuditEvent<'a> {
    pub principal: String,
    /// The human behind the principal (actor token), if one was named.
    pub actor: Option<String>,
    /// The RPC in snake_case (`detokenize`, `forget_subject`, ...).
    pub rpc: &'static str,
    pub purpose: String,
    pub subjects: Vec<SubjectHash>,
    /// Raw tokens, borrowed from the call (a Detokenize answers with
    /// them); the log stores their keyed hashes only.
    pub tokens: Vec<&'a str>,
    /// Values revealed, tokens erased or exported.
    pub count: u64,
    pub outcome: Outcome,
}

/// When a reveal may proceed relative to its record reaching the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Written to the file before the reveal (survives the process being
    /// killed), stored in the database after; both synced at least every
    /// `sync_every`.
    Written { sync_every: Duration },
    /// Synced to disk in both sinks before the reveal.
    Synced,
}

impl Durability {
    pub fn from_config(config: &crate::config::AuditConfig) -> Self {
        match config.durability {
            crate::config::AuditDurability::Sync => Durability::Synced,
            crate::config::AuditDurability::Write => Durability::Written {
                sync_every: Duration::from_millis(config.sync_interval_ms),
            },
        }
    }
}

/// Where checkpoints go and how often (`[audit] checkpoint_file`,
/// `checkpoint_interval_ms`).
#[derive(Debug, Clone)]
pub struct Checkpointing {
    pub path: std::path::PathBuf,
    pub every: Duration,
}

impl Checkpointing {
    /// Beside the audit file, every second.
    pub fn beside(file: &Path) -> Self {
        Checkpointing {
            path: default_checkpoint_path(file),
            every: Duration::from_secs(1),
        }
    }

    pub fn from_config(config: &crate::config::Config) -> Self {
        Checkpointing {
            path: config.audit_checkpoint_file(),
            every: Duration::from_millis(config.audit.checkpoint_interval_ms),
        }
    }
}

/// Writes checkpoints of heads both sinks hold durably, at most once an
/// interval (and always when asked to, at start-up and shutdown).
pub(crate) struct Checkpointer {
    path: std::path::PathBuf,
    key: CheckpointKey,
    chain: String,
    every: Duration,
    /// The newest checkpoint written: when, and its record.
    last: parking_lot::Mutex<(std::time::Instant, u64)>,
    /// A write failed and was logged; logged again only after a success.
    failing: AtomicBool,
}

impl Checkpointer {
    /// Whether a checkpoint of `seq` is due.
    fn due(&self, seq: u64) -> bool {
        let last = self.last.lock();
        seq > last.1 && last.0.elapsed() >= self.every
    }

    /// Writes a checkpoint of record `seq` with `hash`, if due (or
    /// `always`, and newer than the last). Blocking. A failure is logged
    /// (the log goes on: its records are whole, only the anchor is older).
    fn write(&self, seq: u64, hash: &str, always: bool) {
        if !(self.due(seq) || (always && seq > self.last.lock().1)) {
            return;
        }
        let checkpoint = Checkpoint {
            chain: self.chain.clone(),
            seq,
            hash: hash.to_string(),
            time_unix_ms: unix_millis(),
        };
        match checkpoint::write(&self.path, &checkpoint, &self.key) {
            Ok(()) => {
                *self.last.lock() = (std::time::Instant::now(), seq);
                if self.failing.swap(false, Ordering::SeqCst) {
                    tracing::warn!(path = %self.path.display(), "audit checkpoint written again");
                }
            }
            Err(error) => {
                if !self.failing.swap(true, Ordering::SeqCst) {
                    tracing::error!(path = %self.path.display(), %error, "audit checkpoint not written: a cut of the records since the last one would not show");
                }
            }
        }
    }
}

/// The audit log of one vault: Arc-shared by everything that audits.
pub struct AuditLog {
    /// The audit-hash key, ready to MAC tokens and subjects.
    hasher: KeyedMac,
    /// Records waiting for a leader, and the turn to lead.
    queue: Arc<Queue>,
    /// Held by the group's leader while it writes (and briefly by the sync
    /// thread, to claim records for the store and to mark them stored).
    writer: Arc<tokio::sync::Mutex<Writer>>,
    closed: AtomicBool,
    /// Whether the last periodic sync failed (written durability).
    health: Arc<SyncHealth>,
    sync_thread: parking_lot::Mutex<Option<SyncThread>>,
    /// How purposes are recorded (`[audit] purpose_mode`).
    purpose_mode: PurposeMode,
    checkpoints: Arc<Checkpointer>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditLog(..)")
    }
}

/// Appends waiting for a leader. Whoever lets go of the writer must pass
/// the turn on if records wait ([`Queue::pass_turn`]): a caller that found
/// the writer held sleeps until then (or the 50 ms re-check).
#[derive(Default)]
struct Queue {
    records: parking_lot::Mutex<Vec<Append>>,
    /// Wakes a waiting caller to lead the next group.
    turn: tokio::sync::Notify,
}

impl Queue {
    fn is_empty(&self) -> bool {
        self.records.lock().is_empty()
    }

    fn take(&self) -> Vec<Append> {
        std::mem::take(&mut *self.records.lock())
    }

    /// Wakes one waiting caller to lead, if records wait.
    fn pass_turn(&self) {
        if !self.is_empty() {
            self.turn.notify_one();
        }
    }
}

/// An append waiting for the writer.
struct Append {
    record: AuditRecord<ListedHash>,
    reply: oneshot::Sender<Result<u64, AuditError>>,
}

impl AuditLog {
    /// Opens the log: reads the chain's head from both sinks, brings the
    /// one that is behind (a crash between the two writes) up to the other,
    /// and readies the writer (and, for written durability, the sync
    /// thread). Fails if either copy's last record is not valid or the two
    /// disagree: the server must not start on a log it cannot extend
    /// honestly.
    pub async fn open(
        store: Arc<dyn Store>,
        hash_key: SecretKey,
        file: &Path,
        durability: Durability,
    ) -> Result<AuditLog, AuditError> {
        let checkpointing = Checkpointing::beside(file);
        Self::open_checkpointed(store, hash_key, file, &checkpointing, durability).await
    }

    /// [`AuditLog::open`] with checkpoints where and as often as given.
    /// The newest checkpoint must verify (a bad one refuses the start),
    /// and must name a record of the chain with its hash, or a number
    /// above its end: then the records up to it were cut off, the start
    /// says so, and numbering goes on after it.
    pub async fn open_checkpointed(
        store: Arc<dyn Store>,
        hash_key: SecretKey,
        file: &Path,
        checkpointing: &Checkpointing,
        durability: Durability,
    ) -> Result<AuditLog, AuditError> {
        let chain_key = ChainKey::from_audit_hash_key(&hash_key);
        let checkpoint_key = CheckpointKey::from_audit_hash_key(&hash_key);
        // The only writer of this chain from here on (a shared store
        // refuses a second server with the same replica name).
        store.claim_audit_chain().await?;
        let unavailable =
            |e: std::io::Error| AuditError::Unavailable(format!("{}: {e}", file.display()));
        let opened = FileSink::open(file, durability == Durability::Synced).map_err(unavailable)?;
        if opened.torn_bytes > 0 {
            tracing::warn!(path = %file.display(), bytes = opened.torn_bytes, "audit file ended in an unfinished line (a crash during a write); cut it off");
        }
        let mut sink = opened.sink;
        let file_head = head_of(&chain_key, "file", opened.last_line.as_deref())?;
        let store_head = head_of(
            &chain_key,
            "database",
            store.last_audit_record().await?.map(|(_, r)| r).as_deref(),
        )?;
        let head = if file_head.0 < store_head.0 {
            file_catch_up(
                &chain_key,
                store.as_ref(),
                &mut sink,
                &file_head,
                store_head.0,
            )
            .await?;
            store_head
        } else if store_head.0 < file_head.0 {
            store_catch_up(&chain_key, store.as_ref(), file, &store_head).await?;
            file_head
        } else if file_head.1 != store_head.1 {
            return Err(AuditError::Inconsistent(format!(
                "record {}: database and file differ (run tokenvault audit verify)",
                file_head.0
            )));
        } else {
            file_head
        };
        tracing::info!(path = %file.display(), records = head.0, "audit log open");
        let chain = store.audit_chain_name();
        let newest = checkpoint::read(&checkpointing.path, &checkpoint_key, &chain)
            .map_err(|e| AuditError::Inconsistent(format!("{e} (run tokenvault audit verify)")))?;
        let checkpoints = Arc::new(Checkpointer {
            path: checkpointing.path.clone(),
            key: checkpoint_key,
            chain,
            every: checkpointing.every,
            // The first records synced are checkpointed at once.
            last: parking_lot::Mutex::new((
                std::time::Instant::now()
                    .checked_sub(checkpointing.every)
                    .unwrap_or_else(std::time::Instant::now),
                newest.as_ref().map_or(0, |c| c.seq),
            )),
            failing: AtomicBool::new(false),
        });
        let head = match &newest {
            Some(newest) if newest.seq > head.0 => {
                tracing::error!(
                    target: crate::policy::ALERT_TARGET,
                    alert = "audit_log_cut",
                    path = %checkpointing.path.display(),
                    "the audit log ends at record {} but its newest checkpoint names record {}: records {}-{} are missing (cut from the tail); numbering goes on after {}",
                    head.0, newest.seq, head.0 + 1, newest.seq, newest.seq
                );
                (newest.seq, newest.hash.clone())
            }
            Some(newest) if newest.seq > 0 => {
                let at = if newest.seq == head.0 {
                    Some(head.1.clone())
                } else {
                    store
                        .audit_records(newest.seq, 1)
                        .await?
                        .into_iter()
                        .find(|(seq, _)| *seq == newest.seq)
                        .and_then(|(_, line)| AuditRecord::open(&line, &chain_key).ok())
                        .map(|record| record.hash().to_string())
                };
                if at.as_deref() != Some(newest.hash.as_str()) {
                    return Err(AuditError::Inconsistent(format!(
                        "record {} is not the one the audit checkpoint {} names: the chain was rewritten (run tokenvault audit verify)",
                        newest.seq,
                        checkpointing.path.display()
                    )));
                }
                head
            }
            _ => head,
        };
        if head.0 > newest.as_ref().map_or(0, |c| c.seq) {
            // What start-up copied between the sinks is made durable
            // before a checkpoint vouches for it.
            let synced = sink
                .sync()
                .map_err(|e| AuditError::Unavailable(format!("audit file: {e}")))
                .and_then(|()| store.sync_wal().map_err(AuditError::from));
            match synced {
                Ok(()) => checkpoints.write(head.0, &head.1, true),
                Err(error) => {
                    tracing::error!(%error, "audit log not synced at start-up; no checkpoint written")
                }
            }
        }

        let health = Arc::new(SyncHealth::default());
        let queue = Arc::new(Queue::default());
        let wakes = sync::Wakes::new();
        let file = sink.shared();
        let writer = Arc::new(tokio::sync::Mutex::new(Writer {
            key: chain_key,
            checkpoints: match durability {
                Durability::Synced => Some(Arc::clone(&checkpoints)),
                Durability::Written { .. } => None,
            },
            store: Arc::clone(&store),
            file: sink,
            synced: durability == Durability::Synced,
            defer_store: durability != Durability::Synced,
            next_seq: head.0 + 1,
            prev: head.1,
            unwritten: VecDeque::new(),
            in_store: head.0,
            store_claimed: head.0,
            unclaimed_bytes: 0,
            store_requests: match durability {
                Durability::Synced => None,
                Durability::Written { .. } => Some(wakes.store_requests()),
            },
            store_requested: false,
            in_file: head.0,
            waiting: Vec::new(),
            health: Arc::clone(&health),
        }));
        let sync_thread = match durability {
            Durability::Synced => None,
            Durability::Written { sync_every } => Some(
                SyncThread::start(
                    sync_every,
                    wakes,
                    file,
                    Arc::clone(&store),
                    store_catch_up_task(&writer, &queue, store),
                    Arc::clone(&health),
                    Arc::clone(&checkpoints),
                )
                .map_err(|e| {
                    AuditError::Unavailable(format!("cannot start the audit sync thread: {e}"))
                })?,
            ),
        };
        Ok(AuditLog {
            hasher: hash_key.keyed_mac(),
            queue,
            writer,
            closed: AtomicBool::new(false),
            health,
            sync_thread: parking_lot::Mutex::new(sync_thread),
            purpose_mode: PurposeMode::Plain,
            checkpoints,
        })
    }

    /// Writes every record appended so far, syncs both sinks and stops the
    /// sync thread: at shutdown, so that the store is not written to while
    /// the process exits. Appends after this fail (UNAVAILABLE).
    pub async fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        // Waits for a leader at work, then writes what is still queued.
        let mut writer = self.writer.lock().await;
        let queued = self.queue.take();
        if !queued.is_empty() || writer.has_waiting() {
            writer.commit(queued).await;
        }
        let flushed = writer.flush(true).await;
        if let Err(error) = &flushed {
            tracing::error!(%error, "audit records not stored at shutdown; the next start copies them from the file");
        }
        let head = (writer.next_seq - 1, writer.prev.clone());
        drop(writer);
        let thread = self.sync_thread.lock().take();
        let synced = match thread {
            Some(thread) => tokio::task::spawn_blocking(move || thread.stop())
                .await
                .unwrap_or(false),
            None => true,
        };
        // A clean stop leaves its last record checkpointed: a cut after it
        // always shows.
        if flushed.is_ok() && synced {
            let checkpoints = Arc::clone(&self.checkpoints);
            let _ =
                tokio::task::spawn_blocking(move || checkpoints.write(head.0, &head.1, true)).await;
        }
    }

    /// Whether an append would be tried now: the log is open and its last
    /// sync to disk did not fail. For readiness probes; an append checks
    /// the same itself.
    pub fn check_writable(&self) -> Result<(), AuditError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(AuditError::Unavailable("the audit log is closed".into()));
        }
        self.health.check()
    }

    /// Appends a record; returns its sequence number once it is durable in
    /// the store and the file. On error the caller must reveal nothing.
    pub async fn append(&self, event: AuditEvent<'_>) -> Result<u64, AuditError> {
        let appended = self.append_uncounted(event).await;
        crate::metrics::METRICS.audit_append(appended.is_ok());
        appended
    }

    async fn append_uncounted(&self, event: AuditEvent<'_>) -> Result<u64, AuditError> {
        let stopped = || AuditError::Unavailable("the audit log is closed".into());
        if self.closed.load(Ordering::SeqCst) {
            return Err(stopped());
        }
        self.health.check()?;
        let record = self.draft(event);
        // Uncontended (the writer free, no one queued): this caller writes
        // its own record, with no queue, reply channel or hand-over.
        if let Ok(mut writer) = self.writer.try_lock() {
            if self.queue.is_empty()
                && !writer.has_waiting()
                && writer.unwritten.len() < MAX_UNWRITTEN
            {
                let written = writer.write_one(record).await;
                drop(writer);
                self.queue.pass_turn();
                return written;
            }
        }
        let (reply, mut answer) = oneshot::channel();
        self.queue.records.lock().push(Append { record, reply });
        loop {
            // Listening before leading, so a hand-over made while this
            // caller leads or looks is not missed.
            let turn = self.queue.turn.notified();
            tokio::pin!(turn);
            turn.as_mut().enable();
            self.lead_one_group().await;
            tokio::select! {
                biased;
                result = &mut answer => {
                    // A turn handed to this caller just as its answer came
                    // would be lost with it: pass it on while records wait.
                    self.queue.pass_turn();
                    return result.map_err(|_| stopped())?;
                }
                // Handed the lead: the queue holds records, maybe this one.
                () = &mut turn => {}
                // A leader's call can be cancelled mid-write; look again.
                () = tokio::time::sleep(LEADER_CHECK) => {}
            }
        }
    }

    /// Writes one group (every record queued now) if no other caller is
    /// writing; returns at once if one is (that one or a later leader
    /// takes this caller's record). One group only, so that a caller's
    /// own reveal is not held up writing for others while records keep
    /// arriving: if more are queued when it lets go, it hands the lead to
    /// a waiting caller.
    async fn lead_one_group(&self) {
        let Ok(mut writer) = self.writer.try_lock() else {
            return;
        };
        let group = self.queue.take();
        if !group.is_empty() || writer.has_waiting() {
            writer.commit(group).await;
        }
        drop(writer);
        // A record queued while the writer was held found it busy: its
        // caller waits for a turn.
        self.queue.pass_turn();
    }

    /// How a call's purpose (a forget's reason) enters its record: as
    /// given up to [`MAX_PURPOSE_BYTES`], or as its keyed hash
    /// (`[audit] purpose_mode`). Empty stays empty.
    fn recorded_purpose(&self, purpose: String) -> String {
        match self.purpose_mode {
            PurposeMode::Plain => truncated(purpose, MAX_PURPOSE_BYTES),
            PurposeMode::KeyedHash if purpose.is_empty() => purpose,
            PurposeMode::KeyedHash => {
                let mac = self.hasher.mac(&[b"purpose", purpose.as_bytes()]);
                format!("hmac:{}", ListedHash::of(&mac).as_str())
            }
        }
    }

    /// Records purposes as `mode` says from now on.
    pub fn with_purpose_mode(mut self, mode: PurposeMode) -> Self {
        self.purpose_mode = mode;
        self
    }

    /// The record of an event before the writer numbers and chains it.
    fn draft(&self, event: AuditEvent<'_>) -> AuditRecord<ListedHash> {
        let hash = |label: &[u8], bytes: &[u8]| ListedHash::of(&self.hasher.mac(&[label, bytes]));
        AuditRecord {
            v: record::RECORD_VERSION,
            seq: 0,
            time_unix_ms: 0,
            principal: event.principal,
            actor: event.actor,
            rpc: event.rpc.to_string(),
            purpose: self.recorded_purpose(event.purpose),
            subject_hashes: event
                .subjects
                .iter()
                .map(|s| hash(b"subject", s.as_bytes()))
                .collect(),
            token_hashes: event
                .tokens
                .iter()
                .map(|t| hash(b"token", t.as_bytes()))
                .collect(),
            count: event.count,
            outcome: match event.outcome {
                Outcome::Ok => RecordOutcome::Ok,
                Outcome::Denied { code, reason } => RecordOutcome::Denied {
                    code: code.to_string(),
                    reason,
                },
                Outcome::Alert { kind, detail } => RecordOutcome::Alert { kind, detail },
            },
            prev: String::new(),
            hash: None,
        }
    }
}

fn truncated(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}
fn unix_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests;
