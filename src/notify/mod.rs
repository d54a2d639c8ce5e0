//! Alert notifications: every alert (rate limits and anomalies) becomes a
//! [`Notice`] that goes to every configured sink (`[[alert_sinks]]`)
//! besides the log line its raiser writes. A sink is a bounded queue and a
//! task that delivers from it (`webhook.rs`); [`Notifier::send`] never
//! waits: a full queue drops the notice and counts it.
//!
//! It owns the payload format and the delivery counters. A notice holds
//! names, counts and a reason line only: never a value, a token, a subject
//! id or a purpose, and no raiser may put one in (the fields are fixed).

pub mod webhook;

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::config::AlertSinkConfig;

/// One alert, as sinks receive it (the JSON body of a webhook).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Notice {
    /// `"anomaly"` or `"rate"`.
    pub kind: &'static str,
    /// The detector (`breadth`, `drip`, …) or the rate alert
    /// (`rate_warning`, `rate_exceeded`).
    pub alert: &'static str,
    /// The anomaly alert's id (0 for rate alerts).
    pub id: u64,
    pub principal: String,
    /// The actor, or `-`.
    pub actor: String,
    pub at_unix: i64,
    pub score: f64,
    pub reason: String,
    /// What the alert does: `alert`, `mask`, `deny` (anomaly), `served`
    /// or `refused` (rate).
    pub response: &'static str,
    pub window_start_unix: i64,
    pub window_seconds: u64,
    pub values: u64,
    pub subjects: u64,
    /// The rate limit in values a minute (rate alerts).
    pub limit: u64,
}

/// Delivery counters since start, for `/metrics`.
#[derive(Debug, Default)]
pub struct NotifyCounters {
    pub delivered: AtomicU64,
    /// Attempts that failed (each retry counts).
    pub failed_attempts: AtomicU64,
    /// Notices given up after their last attempt.
    pub given_up: AtomicU64,
    /// Notices dropped because a sink's queue was full.
    pub dropped: AtomicU64,
}

pub static NOTIFY: NotifyCounters = NotifyCounters {
    delivered: AtomicU64::new(0),
    failed_attempts: AtomicU64::new(0),
    given_up: AtomicU64::new(0),
    dropped: AtomicU64::new(0),
};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    #[error("alert_sinks[{index}]: environment variable {name} (secret_env) is not set")]
    MissingSecret { index: usize, name: String },
    #[error("alert_sinks[{index}]: {message}")]
    Client { index: usize, message: String },
}

/// The sinks of a running server.
#[derive(Debug, Default)]
pub struct Notifier {
    sinks: Vec<webhook::WebhookSink>,
}

impl Notifier {
    /// Starts a delivery task per sink (on the current tokio runtime).
    pub fn start(configs: &[AlertSinkConfig]) -> Result<Self, NotifyError> {
        let sinks = configs
            .iter()
            .enumerate()
            .map(|(index, config)| webhook::WebhookSink::start(index, config))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Notifier { sinks })
    }

    /// Queues `notice` on every sink; never waits.
    pub fn send(&self, notice: Notice) {
        for sink in &self.sinks {
            if !sink.offer(notice.clone()) {
                NOTIFY.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }
}
