//! `[audit]`: where the JSON-lines copy of the audit log and its MACed
//! checkpoints go, when records reach the disk, and how a call's purpose
//! is recorded. Schema, defaults and paths only: the log is written by
//! `crate::audit`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::Config;

/// `[audit]`: where the JSON-lines copy of the audit log goes (the copy a
/// SIEM ships; the other copy is in the store), and when its records
/// reach the disk.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Default: `<data_dir>/audit.jsonl`.
    pub file: Option<PathBuf>,
    #[serde(default)]
    pub durability: AuditDurability,
    /// With `durability = "write"`: the longest time between a record's
    /// write and its sync.
    #[serde(default = "default_audit_sync_interval")]
    pub sync_interval_ms: u64,
    /// How a call's `purpose` (and a forget's `reason`) is recorded.
    #[serde(default)]
    pub purpose_mode: PurposeMode,
    /// Where the chain's MACed checkpoints go (default: beside `file`,
    /// as `audit.checkpoint`). Best on other storage than the database
    /// and the audit file: a tail cut must then reach it too.
    pub checkpoint_file: Option<PathBuf>,
    /// The longest time between two checkpoints while records are
    /// written: a cut of the records after the last one does not show.
    #[serde(default = "default_audit_checkpoint_interval")]
    pub checkpoint_interval_ms: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            file: None,
            durability: AuditDurability::default(),
            sync_interval_ms: default_audit_sync_interval(),
            purpose_mode: PurposeMode::default(),
            checkpoint_file: None,
            checkpoint_interval_ms: default_audit_checkpoint_interval(),
        }
    }
}

/// `[audit] purpose_mode` values. A purpose is free text that the log
/// keeps for good; it must not carry personal data either way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PurposeMode {
    /// As given, cut at 256 bytes.
    #[default]
    Plain,
    /// Its keyed hash (HMAC-SHA256 under the audit-hash key, derived from
    /// the system key; first 128 bits, hex, after `hmac:`): equal purposes
    /// give equal hashes, and nobody without the vault's key can read
    /// them or test a guess.
    KeyedHash,
}

fn default_audit_sync_interval() -> u64 {
    100
}

fn default_audit_checkpoint_interval() -> u64 {
    1000
}

/// When a reveal may proceed relative to its audit record reaching disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditDurability {
    /// The record is written to the database's WAL and the file (the
    /// kernel has it: it survives the process being killed) before the
    /// reveal; both are synced every `sync_interval_ms`.
    #[default]
    Write,
    /// The record is synced to disk in both copies before the reveal.
    Sync,
}

/// The audit file's name in the data directory when `[audit] file` is not set.
pub const DEFAULT_AUDIT_FILE: &str = "audit.jsonl";

/// `audit.jsonl` → `audit.checkpoint`, in the same directory: where the
/// audit checkpoints go when `[audit] checkpoint_file` is not set.
pub fn default_checkpoint_path(file: &Path) -> PathBuf {
    file.with_extension("checkpoint")
}

impl Config {
    /// The JSON-lines audit file: `[audit] file`, or `<data_dir>/audit.jsonl`
    /// (after a `--data-dir` override).
    pub fn audit_file(&self) -> PathBuf {
        self.audit
            .file
            .clone()
            .unwrap_or_else(|| self.data_dir.join(DEFAULT_AUDIT_FILE))
    }

    /// `[audit] checkpoint_file`, or `audit.checkpoint` beside the audit
    /// file.
    pub fn audit_checkpoint_file(&self) -> PathBuf {
        self.audit
            .checkpoint_file
            .clone()
            .unwrap_or_else(|| default_checkpoint_path(&self.audit_file()))
    }
}
