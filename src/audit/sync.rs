//! The sync thread of written durability: every interval in which records
//! were written, it writes the records the store's copy lacks (the writer
//! defers them), then syncs the audit file and the store's WAL, so a
//! power loss or kernel crash loses at most one interval of records (a
//! killed process loses none: the file in the kernel has them, and the
//! next start copies them to the store). Between syncs, the writer wakes
//! it to store each full batch, so that no reveal waits for the store.
//!
//! It must never let a failed sync pass silently: [`SyncHealth`] then
//! refuses every append, so nothing is revealed, until a sync succeeds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::file::SharedFile;
use super::{AuditError, Checkpointer};
use crate::store::Store;

/// What the writer and the sync thread share.
#[derive(Debug, Default)]
pub(crate) struct SyncHealth {
    /// Records were written since the last sync began.
    dirty: AtomicBool,
    /// Why the last sync failed, while it has not succeeded since.
    failed: parking_lot::Mutex<Option<String>>,
}

impl SyncHealth {
    /// The writer wrote records: the next tick syncs.
    pub fn wrote(&self) {
        self.dirty.store(true, Ordering::Release);
    }

    /// Whether the next tick syncs.
    #[cfg(test)]
    pub fn sync_due(&self) -> bool {
        self.dirty.load(Ordering::Acquire)
    }

    /// Refuses while the last sync failed.
    pub fn check(&self) -> Result<(), AuditError> {
        match &*self.failed.lock() {
            Some(problem) => Err(AuditError::Unavailable(format!(
                "audit records could not be synced to disk: {problem}"
            ))),
            None => Ok(()),
        }
    }

    fn record(&self, outcome: Result<(), String>) {
        let mut failed = self.failed.lock();
        match outcome {
            Ok(()) => {
                if failed.take().is_some() {
                    tracing::warn!("audit records synced again; reveals resume");
                }
            }
            Err(problem) => {
                // Synced again at the next tick.
                self.dirty.store(true, Ordering::Release);
                if failed.is_none() {
                    tracing::error!(%problem, "audit records could not be synced to disk; reveals are refused until a sync succeeds");
                }
                *failed = Some(problem);
            }
        }
    }
}

/// Brings the store's copy of the log up to the file (written durability
/// defers it); run for each full batch and before each sync. Returns the
/// head (sequence number, hash) both sinks then hold, written.
pub(crate) type StoreCatchUp = Box<dyn Fn() -> Result<(u64, String), String> + Send>;

/// What wakes the sync thread before its next sync is due.
enum Wake {
    /// A full batch of deferred records waits for the store.
    Store,
    /// Sync once more and end.
    Stop,
}

/// The writer's way to wake the sync thread to store a full batch.
#[derive(Clone)]
pub(crate) struct StoreRequests(mpsc::Sender<Wake>);

impl StoreRequests {
    pub fn request(&self) {
        // A stopped thread stores nothing more; the writer stores the rest
        // itself at close.
        let _ = self.0.send(Wake::Store);
    }
}

/// The running sync thread; [`SyncThread::stop`] syncs once more and joins.
pub(crate) struct SyncThread {
    wake: mpsc::Sender<Wake>,
    thread: JoinHandle<bool>,
}

/// The sync thread's channel, made before the writer that sends on it.
pub(crate) struct Wakes {
    sender: mpsc::Sender<Wake>,
    receiver: mpsc::Receiver<Wake>,
}

impl Wakes {
    pub fn new() -> Wakes {
        let (sender, receiver) = mpsc::channel();
        Wakes { sender, receiver }
    }

    pub fn store_requests(&self) -> StoreRequests {
        StoreRequests(self.sender.clone())
    }
}

impl SyncThread {
    pub fn start(
        every: Duration,
        wakes: Wakes,
        file: SharedFile,
        store: Arc<dyn Store>,
        store_catch_up: StoreCatchUp,
        health: Arc<SyncHealth>,
        checkpoints: Arc<Checkpointer>,
    ) -> std::io::Result<SyncThread> {
        let Wakes { sender, receiver } = wakes;
        let thread = std::thread::Builder::new()
            .name("tokenvault-audit-sync".into())
            .spawn(move || {
                // A deadline, not a timeout per wait: batch requests come
                // more often than syncs and must not put them off.
                let mut sync_at = Instant::now() + every;
                // The last head synced in both, for a checkpoint that was
                // not due yet when it was synced.
                let mut synced_head: Option<(u64, String)> = None;
                loop {
                    // A due sync goes first, even with a request queued.
                    let wake = match sync_at.checked_duration_since(Instant::now()) {
                        Some(wait) if !wait.is_zero() => receiver.recv_timeout(wait),
                        _ => Err(RecvTimeoutError::Timeout),
                    };
                    let last = match wake {
                        Ok(Wake::Store) => {
                            // Stored without a sync; a failure refuses
                            // reveals until the next sync succeeds.
                            if let Err(problem) = store_catch_up() {
                                health.record(Err(format!("database: {problem}")));
                            }
                            continue;
                        }
                        Err(RecvTimeoutError::Timeout) => false,
                        Ok(Wake::Stop) | Err(RecvTimeoutError::Disconnected) => true,
                    };
                    sync_at = Instant::now() + every;
                    if health.dirty.swap(false, Ordering::AcqRel) || last {
                        let synced = store_catch_up()
                            .map_err(|problem| format!("database: {problem}"))
                            .and_then(|head| sync_both(&file, store.as_ref()).map(|()| head));
                        let outcome = match synced {
                            Ok((seq, hash)) => {
                                // Durable in both: a checkpoint may name it.
                                checkpoints.write(seq, &hash, false);
                                synced_head = Some((seq, hash));
                                Ok(())
                            }
                            Err(problem) => Err(problem),
                        };
                        health.record(outcome);
                    } else if let Some((seq, hash)) = &synced_head {
                        // Idle: the last records synced are checkpointed
                        // once the interval has passed.
                        checkpoints.write(*seq, hash, false);
                    }
                    if last {
                        return health.check().is_ok();
                    }
                }
            })?;
        Ok(SyncThread {
            wake: sender,
            thread,
        })
    }

    /// Syncs what was written and ends the thread; whether that last
    /// sync succeeded.
    pub fn stop(self) -> bool {
        let _ = self.wake.send(Wake::Stop);
        self.thread.join().unwrap_or(false)
    }
}

fn sync_both(file: &SharedFile, store: &dyn Store) -> Result<(), String> {
    // The handle is cloned out so that a slow sync does not hold up the
    // writer reopening a rotated file.
    let current = Arc::clone(&*file.lock());
    current
        .sync_data()
        .map_err(|e| format!("audit file: {e}"))?;
    store.sync_wal().map_err(|e| format!("database: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_sync_refuses_until_one_succeeds() {
        let health = SyncHealth::default();
        assert!(health.check().is_ok());
        health.record(Err("No space left on device".into()));
        let refused = health.check().expect_err("refused after a failed sync");
        assert!(refused.to_string().contains("synced"), "{refused}");
        assert!(
            health.dirty.load(Ordering::Acquire),
            "a failed sync is tried again at the next tick"
        );
        health.record(Ok(()));
        assert!(health.check().is_ok());
    }
}
