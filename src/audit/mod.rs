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

mod sync;

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
use sync::{SyncHealth, SyncThread};
pub use verify::{ChainError, ChainVerifier};

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

/// What the sync thread runs for each full batch and before each sync:
/// the store takes every record the writer has sealed (blocking: the
/// thread is not the runtime's). The writer is held only to claim the
/// records and to mark them stored, not during the store's write, which
/// no reveal waits for. Each time it lets go it passes the turn on, as a
/// leader does: callers that found the writer held by this thread would
/// otherwise sleep until their 50 ms re-check.
fn store_catch_up_task(
    writer: &Arc<tokio::sync::Mutex<Writer>>,
    queue: &Arc<Queue>,
    store: Arc<dyn Store>,
) -> sync::StoreCatchUp {
    let writer = Arc::clone(writer);
    let queue = Arc::clone(queue);
    let runtime = tokio::runtime::Handle::current();
    Box::new(move || {
        runtime.block_on(async {
            let (filed, claimed, head) = {
                let mut writer = writer.lock().await;
                // Retries a file write that failed, with no leader to.
                let filed = writer.flush(false).await;
                // Everything sealed is in the file now, and claimed for
                // the store unless it is there already.
                let head = (writer.next_seq - 1, writer.prev.clone());
                (filed, writer.claim_for_store(), head)
            };
            queue.pass_turn();
            let stored = match claimed.last().map(|(seq, _)| *seq) {
                None => Ok(()),
                Some(last) => {
                    let stored = store.append_audit(claimed).await;
                    writer.lock().await.claim_stored(last, stored.is_ok());
                    queue.pass_turn();
                    stored
                }
            };
            if let Err(error) = &stored {
                tracing::error!(%error, "audit records not stored; reveals are refused until the store takes them");
            }
            filed.map_err(|error| error.to_string())?;
            stored.map_err(|error| error.to_string())?;
            Ok(head)
        })
    })
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

/// (sequence number, hash) of a sink's last record; (0, genesis) if empty.
fn head_of(key: &ChainKey, sink: &str, last: Option<&[u8]>) -> Result<(u64, String), AuditError> {
    match last {
        None => Ok((0, GENESIS_PREV.to_string())),
        Some(line) => {
            let record = AuditRecord::open(line, key).map_err(|problem| {
                AuditError::Inconsistent(format!(
                    "the last record of the {sink} is not valid ({problem:?}); run tokenvault audit verify"
                ))
            })?;
            let hash = record.hash().to_string();
            Ok((record.seq, hash))
        }
    }
}

/// Appends the store's records after the file's last one to the file.
async fn file_catch_up(
    key: &ChainKey,
    store: &dyn Store,
    sink: &mut FileSink,
    file_head: &(u64, String),
    until: u64,
) -> Result<(), AuditError> {
    let mut next = file_head.0 + 1;
    let mut prev = file_head.1.clone();
    while next <= until {
        let page = store.audit_records(next, CATCH_UP_PAGE).await?;
        if page.is_empty() {
            return Err(AuditError::Inconsistent(format!(
                "missing record {next} in the database"
            )));
        }
        let mut lines = Vec::new();
        for (seq, line) in page.into_iter().take_while(|(seq, _)| *seq <= until) {
            let record = AuditRecord::open(&line, key)
                .ok()
                .filter(|r| r.seq == seq && seq == next && r.prev == prev)
                .ok_or_else(|| {
                    AuditError::Inconsistent(format!(
                        "record {next}: the database's copy does not continue the file (run tokenvault audit verify)"
                    ))
                })?;
            prev = record.hash().to_string();
            lines.extend_from_slice(&line);
            lines.push(b'\n');
            next += 1;
        }
        sink.append(&lines)
            .map_err(|e| AuditError::Unavailable(format!("audit file: {e}")))?;
    }
    tracing::warn!(
        from = file_head.0 + 1,
        to = until,
        "audit file was behind the database (a crash between the two writes); copied the missing records"
    );
    Ok(())
}

/// Stores the file's records after the store's last one: after a crash,
/// those the store's deferred copy (or a write cut short) did not get.
async fn store_catch_up(
    key: &ChainKey,
    store: &dyn Store,
    path: &Path,
    store_head: &(u64, String),
) -> Result<(), AuditError> {
    let seq_of = |line: &[u8]| AuditRecord::open(line, key).ok().map(|record| record.seq);
    let lines = file::lines_after(path, store_head.0, seq_of)
        .map_err(|e| AuditError::Unavailable(format!("{}: {e}", path.display())))?;
    let mut prev = store_head.1.clone();
    let mut missing = Vec::new();
    for line in lines {
        let record = AuditRecord::open(&line, key)
            .ok()
            .filter(|r| r.seq == store_head.0 + 1 + missing.len() as u64 && r.prev == prev)
            .ok_or_else(|| {
                AuditError::Inconsistent(format!(
                    "record {}: the file's copy does not continue the database (run tokenvault audit verify)",
                    store_head.0 + 1 + missing.len() as u64
                ))
            })?;
        prev = record.hash().to_string();
        missing.push((record.seq, line));
    }
    tracing::warn!(
        records = missing.len(),
        "audit database was behind the file (the process stopped before it stored them); stored the missing records"
    );
    for page in missing.chunks(CATCH_UP_PAGE) {
        store.append_audit(page.to_vec()).await?;
    }
    Ok(())
}

/// The writer's state, held by one leader at a time: the chain's head
/// and what is not yet in both sinks.
struct Writer {
    /// The chain's MAC key.
    key: ChainKey,
    /// Synced durability: the leader writes the checkpoints (both sinks
    /// are synced at every flush). Written: the sync thread does.
    checkpoints: Option<Arc<Checkpointer>>,
    store: Arc<dyn Store>,
    file: FileSink,
    /// Each group synced before it counts (`Durability::Synced`).
    synced: bool,
    /// Written durability: a reveal waits for the file only, and the
    /// store's copy follows in batches (of [`STORE_BATCH`], and every sync
    /// interval). A killed process leaves the store behind the file, and
    /// the next start copies the rest from the file.
    defer_store: bool,
    next_seq: u64,
    prev: String,
    /// Sealed records not yet durable in both sinks, in sequence order.
    unwritten: VecDeque<(u64, Vec<u8>)>,
    /// Highest sequence number durable in each sink.
    in_store: u64,
    /// Highest sequence number the store has or the sync thread is
    /// storing; above `in_store` while it writes.
    store_claimed: u64,
    /// Bytes of the records sealed since the store's copy was last claimed.
    unclaimed_bytes: usize,
    /// Wakes the sync thread to store a full batch (written durability).
    store_requests: Option<sync::StoreRequests>,
    /// A batch was requested and not yet claimed.
    store_requested: bool,
    in_file: u64,
    /// Callers of sealed records, answered once the flush ends.
    waiting: Vec<(u64, oneshot::Sender<Result<u64, AuditError>>)>,
    /// Told of every write, for the sync thread.
    health: Arc<SyncHealth>,
}

impl Writer {
    async fn commit(&mut self, group: Vec<Append>) {
        if self.unwritten.len() + group.len() > MAX_UNWRITTEN {
            // A sink has been failing for a while: retry the backlog, and
            // refuse rather than hold ever more records in memory.
            if let Err(error) = self.flush(true).await {
                for append in group {
                    let _ = append.reply.send(Err(error.clone()));
                }
                return;
            }
        }
        for append in group {
            match self.seal(append.record) {
                Ok(seq) => self.waiting.push((seq, append.reply)),
                Err(error) => {
                    let _ = append.reply.send(Err(error));
                }
            }
        }
        // If the leader's call is cancelled during the flush, the sealed
        // records and their callers stay here for the next leader.
        let flushed = self.flush(false).await;
        let durable = self.revealable();
        for (seq, reply) in self.waiting.drain(..) {
            let answer = match &flushed {
                Ok(()) if seq <= durable => Ok(seq),
                Ok(()) => Err(AuditError::Unavailable("record not written".into())),
                Err(error) => Err(error.clone()),
            };
            let _ = reply.send(answer);
        }
    }

    /// Seals and writes one record with no one else waiting; its sequence
    /// number once it may be revealed ([`Writer::revealable`]). Cancelled
    /// mid-write, the record stays unwritten for the next leader, as a
    /// group's would.
    async fn write_one(&mut self, record: AuditRecord<ListedHash>) -> Result<u64, AuditError> {
        let seq = self.seal(record)?;
        self.flush(false).await?;
        if seq <= self.revealable() {
            Ok(seq)
        } else {
            Err(AuditError::Unavailable("record not written".into()))
        }
    }

    /// Whether a cancelled leader left sealed records unanswered.
    fn has_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Numbers, timestamps and chains a record; queues it for both sinks.
    fn seal(&mut self, mut record: AuditRecord<ListedHash>) -> Result<u64, AuditError> {
        let seq = self.next_seq;
        record.seq = seq;
        record.time_unix_ms = unix_millis();
        record.prev = self.prev.clone();
        let (line, hash) = record
            .seal(&self.key)
            .map_err(|e| AuditError::Unavailable(format!("record encoding: {e}")))?;
        self.next_seq += 1;
        self.prev = hash;
        self.unclaimed_bytes += line.len();
        self.unwritten.push_back((seq, line));
        Ok(seq)
    }

    /// Writes what each sink lacks: the file always, the store too unless
    /// its copy is deferred and nothing calls for it now (`store_now`, a
    /// moved file, the sync thread far behind). A full batch wakes the
    /// sync thread to store it. Each sink's mark moves as soon as its
    /// write ends, so a leader cancelled while it awaits the store leaves
    /// nothing for the next one to write twice.
    async fn flush(&mut self, store_now: bool) -> Result<(), AuditError> {
        let path_moved = self.file.path_moved();
        let moved = matches!(path_moved, Ok(true));
        let last = self.unwritten.back().map_or(0, |(seq, _)| *seq);
        let unclaimed = last.saturating_sub(self.store_claimed);
        let batches =
            (unclaimed / STORE_BATCH).max((self.unclaimed_bytes / STORE_BATCH_BYTES) as u64);
        // Everything above `in_store` (records the sync thread is storing
        // too: a second put of the same bytes changes nothing), so that
        // `in_store` can move to `last`.
        let store_due = store_now
            || !self.defer_store
            || moved
            || batches >= BATCHES_BEHIND
            || (batches > 0 && self.store_requests.is_none());
        if batches > 0 && !store_due {
            self.request_store();
        }
        let for_store: Vec<(u64, Vec<u8>)> = if store_due {
            self.unwritten
                .iter()
                .filter(|(seq, _)| *seq > self.in_store)
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        let for_file_len = self
            .unwritten
            .iter()
            .filter(|(seq, _)| *seq > self.in_file)
            .map(|(_, line)| line.len() + 1)
            .sum();
        // Only a write gives the sync thread work: its own flush writes
        // nothing when nothing waits, and must not keep it syncing.
        let writes_any = for_file_len > 0 || !for_store.is_empty();
        let mut for_file = Vec::with_capacity(for_file_len);
        for (_, line) in self.unwritten.iter().filter(|(seq, _)| *seq > self.in_file) {
            for_file.extend_from_slice(line);
            for_file.push(b'\n');
        }
        let store = Arc::clone(&self.store);
        let store_write = async move {
            if for_store.is_empty() {
                Ok(())
            } else {
                store.append_audit(for_store).await
            }
        };
        let mut store_write = std::pin::pin!(store_write);
        let first_poll = if moved {
            // The store takes every record the old file holds before the
            // new file takes any: after a crash in between, the store would
            // otherwise lack records that only the moved file has.
            std::task::Poll::Ready(store_write.as_mut().await)
        } else {
            // Synced, the store's write is queued to its writer thread by
            // its first poll, then the file is written and synced here
            // while the store syncs: the two syncs overlap.
            std::future::poll_fn(|cx| std::task::Poll::Ready(store_write.as_mut().poll(cx))).await
        };
        let unstored_move = moved && matches!(first_poll, std::task::Poll::Ready(Err(_)));
        let mut filed_result = Ok(());
        if !for_file.is_empty() && !unstored_move {
            let filed = self.write_file(&for_file, path_moved);
            if filed.is_ok() {
                self.in_file = last.max(self.in_file);
            }
            if let Err(error) = &filed {
                tracing::error!(%error, "audit records not written to the file; reveals are refused until it takes them");
            }
            filed_result = filed;
        }
        let stored = match first_poll {
            std::task::Poll::Ready(stored) => stored,
            std::task::Poll::Pending => store_write.await,
        };
        if stored.is_ok() && store_due {
            self.in_store = last.max(self.in_store);
            self.store_claimed = last.max(self.store_claimed);
            self.unclaimed_bytes = 0;
        }
        if !self.synced && writes_any {
            self.health.wrote();
        }
        self.forget_durable();
        if let Err(error) = &stored {
            tracing::error!(%error, "audit records not stored; reveals are refused until the store takes them");
        }
        stored.map_err(AuditError::from)?;
        filed_result?;
        self.checkpoint_if_due();
        Ok(())
    }

    /// Synced durability: after a flush that wrote everything sealed to
    /// both sinks, synced, a checkpoint of the head if one is due.
    fn checkpoint_if_due(&self) {
        let Some(checkpoints) = &self.checkpoints else {
            return;
        };
        let head = self.next_seq - 1;
        if !self.unwritten.is_empty() || !checkpoints.due(head) {
            return;
        }
        let write = || checkpoints.write(head, &self.prev, false);
        if may_block_in_place() {
            tokio::task::block_in_place(write);
        } else {
            write();
        }
    }

    /// Drops the records both sinks have.
    fn forget_durable(&mut self) {
        let durable = self.in_store.min(self.in_file);
        while self
            .unwritten
            .front()
            .is_some_and(|(seq, _)| *seq <= durable)
        {
            self.unwritten.pop_front();
        }
    }

    /// Wakes the sync thread to store a full batch, once per batch.
    fn request_store(&mut self) {
        if let Some(requests) = &self.store_requests {
            if !self.store_requested {
                requests.request();
                self.store_requested = true;
            }
        }
    }

    /// The records the store lacks, for the sync thread to store without
    /// holding the writer. Everything above `in_store`: the thread stores
    /// one claim at a time, so none is in flight when it claims.
    fn claim_for_store(&mut self) -> Vec<(u64, Vec<u8>)> {
        self.store_requested = false;
        let claimed: Vec<(u64, Vec<u8>)> = self
            .unwritten
            .iter()
            .filter(|(seq, _)| *seq > self.in_store)
            .cloned()
            .collect();
        if let Some((last, _)) = claimed.last() {
            self.store_claimed = *last;
            self.unclaimed_bytes = 0;
        }
        claimed
    }

    /// The end of a claimed write: stored up to `last`, or to be claimed
    /// again.
    fn claim_stored(&mut self, last: u64, stored: bool) {
        if stored {
            self.in_store = last.max(self.in_store);
            self.forget_durable();
        } else {
            self.store_claimed = self.in_store;
        }
    }

    /// The highest sequence number a reveal may proceed on: in both sinks,
    /// or, with the store's copy deferred, in the file.
    fn revealable(&self) -> u64 {
        if self.defer_store {
            self.in_file
        } else {
            self.in_store.min(self.in_file)
        }
    }

    /// Appends lines to the file. Synced, its `fsync` blocks, so the
    /// runtime is told to move its other tasks off this thread.
    fn write_file(
        &mut self,
        lines: &[u8],
        path_moved: std::io::Result<bool>,
    ) -> Result<(), AuditError> {
        let file = &mut self.file;
        let append = || {
            path_moved
                .and_then(|moved| file.append_checked(lines, moved))
                .map_err(|e| AuditError::Unavailable(format!("audit file: {e}")))
        };
        if self.synced && may_block_in_place() {
            tokio::task::block_in_place(append)
        } else {
            append()
        }
    }
}

/// `block_in_place` is for the multi-threaded runtime only (it panics in
/// a current-thread one, as in unit tests).
fn may_block_in_place() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|handle| handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

fn unix_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests;
