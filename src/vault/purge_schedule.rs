//! When the full purge runs: the one job whose cost is the store's size,
//! so it runs on a schedule rather than per forget, and one run serves
//! every forget before it. It runs once the oldest forget still owed has
//! used half of `[erasure] purge_within_seconds` (so the purge has the
//! other half), and every `[retention] purge_interval_seconds` for
//! expired records. A deadline passed with a forget still owed (the purge
//! failed, or took longer than half the bound) is an alert.
//!
//! It owns the erasure gauges of the metrics endpoint; it never names a
//! subject, in logs or metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::erasure::PurgeStatus;
use super::Vault;
use crate::clock::unix_now;
use crate::policy::ALERT_TARGET;

/// The alert's kind in `tokenvault_alerts_total` and the alert log.
pub const DEADLINE_MISSED_ALERT: &str = "purge_deadline_missed";

/// What the metrics endpoint reads.
#[derive(Default)]
pub struct PurgeGauges {
    /// Forgets whose ciphertexts await the full purge (at the last check).
    pub pending: AtomicU64,
    /// `purge_deadline_missed` alerts raised since start.
    pub deadline_missed_alerts: AtomicU64,
    /// Full purges done since start.
    pub full_purges: AtomicU64,
}

pub static PURGE_GAUGES: PurgeGauges = PurgeGauges {
    pending: AtomicU64::new(0),
    deadline_missed_alerts: AtomicU64::new(0),
    full_purges: AtomicU64::new(0),
};

/// Longest pause between two checks of the pending forgets.
const MAX_CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// Runs the schedule until the task is dropped. `retention`: the periodic
/// purge for expired records (None: off).
pub async fn run(vault: Arc<Vault>, retention: Option<Duration>) {
    let bound = Duration::from_secs(vault.physical_purge().within_seconds.max(1) as u64);
    let tick = (bound / 10)
        .clamp(Duration::from_secs(1), MAX_CHECK_INTERVAL)
        .min(retention.unwrap_or(MAX_CHECK_INTERVAL));
    let mut last_full = Instant::now();
    let mut alerted_deadline = None;
    loop {
        tokio::time::sleep(tick).await;
        let now = unix_now();
        let status = match vault.purge_status().await {
            Ok(status) => status,
            Err(error) => {
                tracing::warn!(%error, "cannot read the pending purges; retrying");
                continue;
            }
        };
        PURGE_GAUGES
            .pending
            .store(status.pending.count, Ordering::Relaxed);
        if status.missed(now) && alerted_deadline != status.deadline_unix {
            alerted_deadline = status.deadline_unix;
            raise_deadline_missed(&status, now);
        }
        let retention_due = retention.is_some_and(|every| last_full.elapsed() >= every);
        if !(vault.purge_due(&status, now) || retention_due) {
            continue;
        }
        match vault.purge().await {
            Ok(()) => {
                last_full = Instant::now();
                PURGE_GAUGES.full_purges.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    forgets = status.pending.count,
                    "full purge done: erased and expired data is gone from the files"
                );
            }
            Err(error) => {
                tracing::warn!(%error, "full purge failed; retrying at the next check")
            }
        }
    }
}

fn raise_deadline_missed(status: &PurgeStatus, now: i64) {
    PURGE_GAUGES
        .deadline_missed_alerts
        .fetch_add(1, Ordering::Relaxed);
    tracing::warn!(
        target: ALERT_TARGET,
        alert = DEADLINE_MISSED_ALERT,
        pending = status.pending.count,
        deadline_unix = status.deadline_unix.unwrap_or(0),
        late_seconds = now - status.deadline_unix.unwrap_or(now),
        "forgotten data is still in the store's files past its purge deadline"
    );
}
