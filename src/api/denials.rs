//! Calls refused for their credentials (UNAUTHENTICATED: no, a malformed
//! or an unknown API key, a refused actor token), counted rather than
//! audited one by one: a flood of bad keys must not become a flood of
//! audit records (filling the disk, after which every audit write and so
//! every reveal fails) nor of log lines.
//!
//! Refusals are counted per (source address, RPC, reason) over a window of
//! [`WINDOW`]; at its end each count becomes one audit record (`count` =
//! the calls, the reason naming the source) and one log line. At most
//! [`MAX_KEYS`] distinct keys are kept per window; refusals past that are
//! counted together in one record for "other sources". A window with
//! [`FLOOD_ALERT_AT`] refusals or more raises an `auth_flood` alert
//! (logged on the alert target, counted in `tokenvault_alerts_total`,
//! audited), at most once per [`ALERT_EVERY`] while the flood lasts.
//!
//! So a flood adds at most `MAX_KEYS + 2` records a second, however fast
//! it comes, and a reveal's record never queues behind thousands of
//! denials. It never sees a key or a token: only the refusal's message.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::audit::{AuditEvent, AuditLog, Outcome};
use crate::policy::ALERT_TARGET;

/// How long refusals are counted before they are written.
pub const WINDOW: Duration = Duration::from_secs(1);
/// Distinct (source, RPC, reason) counts kept per window.
pub const MAX_KEYS: usize = 32;
/// Refusals in one window that make a flood.
pub const FLOOD_ALERT_AT: u64 = 100;
/// While a flood lasts, its alert is raised again at most this often.
pub const ALERT_EVERY: Duration = Duration::from_secs(60);
/// The alert's kind, in the audit record, the log and the metrics.
pub const FLOOD_ALERT: &str = "auth_flood";

/// `auth_flood` alerts raised since start (`tokenvault_alerts_total`).
pub static FLOOD_ALERTS: AtomicU64 = AtomicU64::new(0);

/// What one count is of.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    source: Option<IpAddr>,
    /// The principal, when the credentials named one and its actor token
    /// was refused; empty otherwise.
    principal: String,
    rpc: &'static str,
    reason: String,
}

#[derive(Debug, Default)]
struct Window {
    counts: HashMap<Key, u64>,
    /// Refusals past [`MAX_KEYS`], by RPC only.
    others: HashMap<&'static str, u64>,
    total: u64,
}

/// The refusals of the current window, and the last flood alert.
#[derive(Debug, Default)]
pub struct DeniedCredentials {
    window: parking_lot::Mutex<Window>,
    alerted: parking_lot::Mutex<Option<Instant>>,
}

impl DeniedCredentials {
    /// Counts one refusal (called by the auth interceptor; never blocks
    /// on I/O).
    pub fn record(
        &self,
        source: Option<IpAddr>,
        principal: Option<&str>,
        rpc: &'static str,
        reason: &str,
    ) {
        let mut window = self.window.lock();
        window.total += 1;
        let key = Key {
            source,
            principal: principal.unwrap_or_default().to_string(),
            rpc,
            reason: reason.to_string(),
        };
        if let Some(count) = window.counts.get_mut(&key) {
            *count += 1;
        } else if window.counts.len() < MAX_KEYS {
            window.counts.insert(key, 1);
        } else {
            *window.others.entry(rpc).or_default() += 1;
        }
    }

    /// Ends the window: one record and one log line per count, and the
    /// flood's alert. Appends are awaited in turn; a failure is logged
    /// (the calls were refused either way).
    pub async fn flush(&self, audit: &AuditLog) {
        let window = std::mem::take(&mut *self.window.lock());
        if window.total == 0 {
            return;
        }
        let mut events = Vec::new();
        for (key, count) in window.counts {
            let source = key
                .source
                .map_or_else(|| "an unknown address".to_string(), |ip| ip.to_string());
            tracing::info!(source = %source, principal = %key.principal, rpc = key.rpc, reason = %key.reason, calls = count, "calls refused: not authenticated");
            events.push(denied_event(
                key.principal,
                key.rpc,
                format!("{}; from {source}", key.reason),
                count,
            ));
        }
        for (rpc, count) in window.others {
            tracing::info!(
                rpc,
                calls = count,
                "calls refused: not authenticated (other sources and reasons)"
            );
            events.push(denied_event(
                String::new(),
                rpc,
                format!("various reasons; from more than {MAX_KEYS} sources"),
                count,
            ));
        }
        if window.total >= FLOOD_ALERT_AT && self.alert_due() {
            events.push(self.raise_flood(window.total));
        }
        for event in events {
            if let Err(error) = audit.append(event).await {
                tracing::error!(%error, "refused credentials not audited");
            }
        }
    }

    fn alert_due(&self) -> bool {
        let mut alerted = self.alerted.lock();
        let now = Instant::now();
        let due = alerted.is_none_or(|at| now.duration_since(at) >= ALERT_EVERY);
        if due {
            *alerted = Some(now);
        }
        due
    }

    /// Logs and counts the alert; its audit record.
    fn raise_flood(&self, total: u64) -> AuditEvent<'static> {
        FLOOD_ALERTS.fetch_add(1, Ordering::Relaxed);
        let detail = format!(
            "{total} calls refused for their credentials in {} ms (alert at {FLOOD_ALERT_AT})",
            WINDOW.as_millis()
        );
        tracing::warn!(target: ALERT_TARGET, alert = FLOOD_ALERT, calls = total, window_ms = WINDOW.as_millis() as u64, "refused credentials alert");
        AuditEvent {
            principal: String::new(),
            rpc: "authenticate",
            count: total,
            outcome: Outcome::Alert {
                kind: FLOOD_ALERT.to_string(),
                detail,
            },
            ..AuditEvent::default()
        }
    }
}

fn denied_event(
    principal: String,
    rpc: &'static str,
    reason: String,
    count: u64,
) -> AuditEvent<'static> {
    AuditEvent {
        principal,
        rpc,
        count,
        outcome: Outcome::Denied {
            code: "unauthenticated",
            reason,
        },
        ..AuditEvent::default()
    }
}

/// Writes each window at its end until aborted (the server flushes the
/// last one itself at shutdown).
pub async fn flush_every_window(denied: Arc<DeniedCredentials>, audit: Arc<AuditLog>) {
    let mut ticks = tokio::time::interval(WINDOW);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        denied.flush(&audit).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn refusals_are_counted_per_source_rpc_and_reason_up_to_a_bound() {
        let denied = DeniedCredentials::default();
        for _ in 0..1000 {
            denied.record(ip(1), None, "detokenize", "unknown API key");
        }
        denied.record(ip(2), None, "detokenize", "unknown API key");
        denied.record(ip(1), None, "tokenize", "unknown API key");
        for n in 0..100u8 {
            denied.record(ip(n), None, "restore_text", "missing authorization");
        }
        let window = denied.window.lock();
        assert_eq!(window.total, 1102);
        assert_eq!(window.counts.len(), MAX_KEYS);
        let key = Key {
            source: ip(1),
            principal: String::new(),
            rpc: "detokenize",
            reason: "unknown API key".into(),
        };
        assert_eq!(window.counts.get(&key), Some(&1000));
        // 100 sources for one reason: the first ones kept, the rest
        // counted together.
        let kept: u64 = window.counts.values().sum();
        assert_eq!(kept + window.others.values().sum::<u64>(), 1102);
        assert_eq!(window.others.get("restore_text"), Some(&(100 - 29)));
    }

    #[test]
    fn a_continuing_flood_is_alerted_once_a_period() {
        let denied = DeniedCredentials::default();
        assert!(denied.alert_due());
        assert!(!denied.alert_due(), "not again within ALERT_EVERY");
        *denied.alerted.lock() = Some(Instant::now() - ALERT_EVERY);
        assert!(denied.alert_due());
    }
}
