//! Behavioural anomaly detection over the reveal events (Detokenize,
//! RestoreText, ExportSubject): per-actor and per-principal baselines
//! (`baseline`, `hist`), the detectors that compare each event with them
//! (`detectors`), the live monitor that keeps alerts and step-downs
//! (`monitor`), and the offline replay of an event file (`replay`).
//!
//! It owns the baselines, the findings and the step-down state. It never
//! sees a value, a token, a subject id or a purpose string: subjects come
//! in as keyed hashes (of the vault's subject hashes), purposes as hashes,
//! and a finding's reason holds names and counts only. It reads no wall
//! clock of its own: times come with the events, from the caller's
//! [`Clock`].

pub mod baseline;
pub mod detectors;
pub mod hist;
pub mod monitor;
pub mod replay;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use sha2::{Digest, Sha256};

pub use detectors::Engine;
pub use monitor::{AnomalyAlert, Monitor, StepDown};

use crate::config::AnomalyResponse;

/// The detectors, by their names in alerts and the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Detector {
    /// A window's values far above the actor's usual high.
    Volume,
    /// A window's distinct subjects far above the actor's usual high.
    Breadth,
    /// Activity at an hour the actor has never worked.
    OffHours,
    /// A purpose new to the actor and its principal.
    NewPurpose,
    /// A format new to the actor and its principal.
    NewFormat,
    /// The trailing hour (or the day) far above the actor's usual, each
    /// window staying within its range.
    Drip,
}

impl Detector {
    pub const ALL: [Detector; 6] = [
        Detector::Volume,
        Detector::Breadth,
        Detector::OffHours,
        Detector::NewPurpose,
        Detector::NewFormat,
        Detector::Drip,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Detector::Volume => "volume",
            Detector::Breadth => "breadth",
            Detector::OffHours => "off_hours",
            Detector::NewPurpose => "new_purpose",
            Detector::NewFormat => "new_format",
            Detector::Drip => "drip",
        }
    }
}

/// One reveal, as the detectors see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Unix seconds.
    pub ts: i64,
    pub principal: Arc<str>,
    pub actor: Option<Arc<str>>,
    /// [`purpose_key`] of the purpose; None when none was given.
    pub purpose: Option<u64>,
    /// Format names of the values revealed.
    pub formats: Vec<String>,
    /// Keyed hashes of the subjects whose values were revealed.
    pub subjects: Vec<u64>,
    /// Values revealed.
    pub values: u64,
    /// Of them, revealed in full.
    pub full: u64,
}

/// What a detector found: names, counts, a score and a one-line reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub detector: Detector,
    pub principal: Arc<str>,
    pub actor: Option<Arc<str>>,
    /// When (Unix seconds).
    pub at: i64,
    pub window_start: i64,
    pub window_seconds: u64,
    /// How far over its line (the usual times the factor is at `factor`).
    pub score: f64,
    pub reason: String,
    /// Values and distinct subjects in the window so far.
    pub values: u64,
    pub subjects: u64,
    /// What the principal's config says the finding does.
    pub response: AnomalyResponse,
}

/// The hash a purpose is known by: the string is never kept.
pub fn purpose_key(purpose: &str) -> Option<u64> {
    if purpose.trim().is_empty() {
        return None;
    }
    Some(digest_u64(&[
        b"tokenvault anomaly purpose v1",
        purpose.as_bytes(),
    ]))
}

/// The first 8 bytes of SHA-256 over `parts`, each length-prefixed.
pub fn digest_u64(parts: &[&[u8]]) -> u64 {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    let out = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&out[..8]);
    u64::from_le_bytes(first)
}

/// Where the monitor reads the time: the wall clock in production, a
/// settable one in tests.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> i64;
}

/// [`crate::clock::unix_now`].
#[derive(Debug, Default)]
pub struct WallClock;

impl Clock for WallClock {
    fn now(&self) -> i64 {
        crate::clock::unix_now()
    }
}

/// A clock that says what it was last set to.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(now: i64) -> Self {
        ManualClock(AtomicI64::new(now))
    }

    pub fn set(&self, now: i64) {
        self.0.store(now, Ordering::Relaxed);
    }

    pub fn advance(&self, seconds: i64) {
        self.0.fetch_add(seconds, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}
