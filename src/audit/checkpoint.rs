//! Checkpoints: the chain's head, MACed, written out of band, so that a
//! tail cut from both copies of the log shows.
//!
//! Each copy of the log (store and file) is a sound chain after records
//! are cut off its end; only something kept elsewhere can tell it was
//! longer. A checkpoint states "chain C had record N with hash H at time
//! T", under a MAC with a key derived from the system key (so it cannot be
//! forged to a smaller N), in a file of its own (`[audit]
//! checkpoint_file`, by default beside the audit file; put it on other
//! storage than the database and the file to make a cut need one more
//! place). It is replaced atomically (a temporary file, synced, renamed
//! over it) once both copies hold its records durably, at start-up,
//! at most every `checkpoint_interval_ms` while records are written, and
//! at shutdown.
//!
//! `audit verify` compares the chain with the newest checkpoint: a chain
//! that ends before it, or has another hash at its number, fails, naming
//! the missing numbers. At start-up the log numbers on after the
//! checkpoint's record, so a number is never given to two records.
//! What a cut can still hide: the records after the newest checkpoint (at
//! most about one checkpoint interval of them, or those since start-up's
//! checkpoint), and everything if the checkpoint file is deleted or an
//! older one put back as well (then `verify` finds no or an older
//! checkpoint: it reports which one it compared with).
//!
//! The file is one line of JSON in this canonical form:
//!
//! ```text
//! {"v":1,"chain":"<replica name, or empty>","seq":N,"hash":"<64 hex>","time_unix_ms":N,"mac":"<64 hex>"}
//! ```

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::crypto::{KeyedMac, SecretKey};

const VERSION: u32 = 1;

/// The key of the checkpoints' MACs.
#[derive(Clone, Debug)]
pub struct CheckpointKey(KeyedMac);

impl CheckpointKey {
    pub fn from_audit_hash_key(key: &SecretKey) -> Self {
        CheckpointKey(key.derive(b"tokenvault/v1/audit/checkpoint").keyed_mac())
    }
}

/// What a checkpoint states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The chain: the replica name on a shared store, empty otherwise.
    pub chain: String,
    pub seq: u64,
    /// The hash of record `seq` (64 hex digits).
    pub hash: String,
    pub time_unix_ms: i64,
}

/// Why a checkpoint file is not accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    #[error("cannot read the audit checkpoint {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the audit checkpoint {0} is not a checkpoint (edited or damaged)")]
    Malformed(PathBuf),
    #[error("the audit checkpoint {0} does not verify: altered, or written by another vault")]
    BadMac(PathBuf),
    #[error("the audit checkpoint {path} is of chain \"{found}\", not \"{expected}\"")]
    OtherChain {
        path: PathBuf,
        found: String,
        expected: String,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointLine {
    v: u32,
    chain: String,
    seq: u64,
    hash: String,
    time_unix_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mac: Option<String>,
}

impl Checkpoint {
    fn line(&self) -> CheckpointLine {
        CheckpointLine {
            v: VERSION,
            chain: self.chain.clone(),
            seq: self.seq,
            hash: self.hash.clone(),
            time_unix_ms: self.time_unix_ms,
            mac: None,
        }
    }

    fn mac(&self, key: &CheckpointKey) -> [u8; 32] {
        // Cannot fail: strings and numbers only.
        let bytes = serde_json::to_vec(&self.line()).unwrap_or_default();
        key.0.mac(&[&bytes])
    }

    /// The file's bytes (one line with its newline).
    pub fn seal(&self, key: &CheckpointKey) -> Vec<u8> {
        let mut line = self.line();
        line.mac = Some(hex::encode(self.mac(key)));
        let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// Parses and checks a checkpoint file's bytes.
    pub fn open(bytes: &[u8], key: &CheckpointKey, path: &Path) -> Result<Self, CheckpointError> {
        let malformed = || CheckpointError::Malformed(path.to_path_buf());
        let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        let line: CheckpointLine = serde_json::from_slice(body).map_err(|_| malformed())?;
        if line.v != VERSION || serde_json::to_vec(&line).ok().as_deref() != Some(body) {
            return Err(malformed());
        }
        let stated: [u8; 32] = line
            .mac
            .as_deref()
            .and_then(|mac| hex::decode(mac).ok())
            .and_then(|mac| mac.try_into().ok())
            .ok_or_else(malformed)?;
        let checkpoint = Checkpoint {
            chain: line.chain,
            seq: line.seq,
            hash: line.hash,
            time_unix_ms: line.time_unix_ms,
        };
        if !bool::from(checkpoint.mac(key).ct_eq(&stated)) {
            return Err(CheckpointError::BadMac(path.to_path_buf()));
        }
        Ok(checkpoint)
    }
}

/// The checkpoint at `path` of chain `chain`; None if there is no file.
pub fn read(
    path: &Path,
    key: &CheckpointKey,
    chain: &str,
) -> Result<Option<Checkpoint>, CheckpointError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CheckpointError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let checkpoint = Checkpoint::open(&bytes, key, path)?;
    if checkpoint.chain != chain {
        return Err(CheckpointError::OtherChain {
            path: path.to_path_buf(),
            found: checkpoint.chain,
            expected: chain.to_string(),
        });
    }
    Ok(Some(checkpoint))
}

/// Replaces the checkpoint at `path` atomically and durably: a temporary
/// file beside it (mode 0600), synced, renamed over it, the directory
/// synced. Blocking.
pub fn write(path: &Path, checkpoint: &Checkpoint, key: &CheckpointKey) -> std::io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(&checkpoint.seal(key))?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, path)?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> CheckpointKey {
        CheckpointKey::from_audit_hash_key(&SecretKey::from_slice(&[byte; 32]).expect("key"))
    }

    fn sample() -> Checkpoint {
        Checkpoint {
            chain: "r1".into(),
            seq: 20,
            hash: "ab".repeat(32),
            time_unix_ms: 1_764_090_000_000,
        }
    }

    #[test]
    fn a_checkpoint_reads_back_and_any_change_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.checkpoint");
        assert!(read(&path, &key(1), "r1").expect("no file").is_none());
        write(&path, &sample(), &key(1)).expect("write");
        assert_eq!(read(&path, &key(1), "r1").expect("read"), Some(sample()));
        assert!(matches!(
            read(&path, &key(2), "r1"),
            Err(CheckpointError::BadMac(_))
        ));
        assert!(matches!(
            read(&path, &key(1), "r2"),
            Err(CheckpointError::OtherChain { .. })
        ));
        let bytes = std::fs::read(&path).expect("read");
        let text = String::from_utf8(bytes.clone()).expect("utf-8");
        assert!(
            text.starts_with("{\"v\":1,\"chain\":\"r1\",\"seq\":20,"),
            "{text}"
        );
        // A smaller number, as a cut would want it.
        let lowered = text.replace("\"seq\":20", "\"seq\":17");
        std::fs::write(&path, lowered).expect("write");
        assert!(matches!(
            read(&path, &key(1), "r1"),
            Err(CheckpointError::BadMac(_))
        ));
        for at in 0..bytes.len() - 1 {
            let mut changed = bytes.clone();
            changed[at] ^= 0x01;
            assert!(
                Checkpoint::open(&changed, &key(1), &path).is_err(),
                "byte {at} changed went unnoticed"
            );
        }
    }
}
