//! The erasure ledger: an append-only JSON-lines file naming every
//! forgotten subject by its keyed hash, kept outside the backed-up
//! database (`erasure.ledger`, by default beside the `rocksdb` directory,
//! best on storage that outlives the data directory, e.g. beside the
//! backups). A restore replays it, so a backup taken before a subject was
//! forgotten cannot bring the subject back.
//!
//! A line is written and synced before the store erases the subject: if
//! the process dies between the two, the replay erases what the caller
//! asked to erase. It never holds a subject id, a value or a key.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::crypto::SubjectHash;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("erasure ledger {path}: {error}")]
    Io {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("erasure ledger {path}, line {line}: not a ledger entry")]
    Corrupt { path: PathBuf, line: usize },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    subject_hash: String,
    erased_at_unix: i64,
}

pub struct ErasureLedger {
    path: PathBuf,
    file: Mutex<File>,
}

impl ErasureLedger {
    /// Opens (creating) the ledger for appending.
    pub fn open(path: &Path) -> Result<Self, LedgerError> {
        let io = |error| LedgerError::Io {
            path: path.to_path_buf(),
            error,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        Ok(ErasureLedger {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends a subject and syncs the file before returning.
    pub fn record(&self, subject: &SubjectHash, erased_at_unix: i64) -> Result<(), LedgerError> {
        let mut line = serde_json::to_string(&Entry {
            subject_hash: hex::encode(subject.as_bytes()),
            erased_at_unix,
        })
        .unwrap_or_default();
        line.push('\n');
        let mut file = self.file.lock();
        file.write_all(line.as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(|error| LedgerError::Io {
                path: self.path.clone(),
                error,
            })
    }

    /// Every subject in the ledger at `path`, in order (a subject forgotten
    /// twice appears twice). A missing file is an empty ledger.
    pub fn read(path: &Path) -> Result<Vec<SubjectHash>, LedgerError> {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => {
                return Err(LedgerError::Io {
                    path: path.to_path_buf(),
                    error,
                })
            }
        };
        let mut subjects = Vec::new();
        for (i, line) in BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|error| LedgerError::Io {
                path: path.to_path_buf(),
                error,
            })?;
            if line.is_empty() {
                continue;
            }
            let corrupt = || LedgerError::Corrupt {
                path: path.to_path_buf(),
                line: i + 1,
            };
            let entry: Entry = serde_json::from_str(&line).map_err(|_| corrupt())?;
            let hash: [u8; 32] = hex::decode(&entry.subject_hash)
                .ok()
                .and_then(|bytes| bytes.try_into().ok())
                .ok_or_else(corrupt)?;
            subjects.push(SubjectHash(hash));
        }
        Ok(subjects)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_subjects_read_back_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ledger.jsonl");
        assert!(ErasureLedger::read(&path)
            .expect("missing is empty")
            .is_empty());
        let ledger = ErasureLedger::open(&path).expect("open");
        ledger.record(&SubjectHash([1; 32]), 10).expect("record");
        ledger.record(&SubjectHash([2; 32]), 11).expect("record");
        drop(ledger);
        // Reopening appends after what is there.
        ErasureLedger::open(&path)
            .expect("reopen")
            .record(&SubjectHash([3; 32]), 12)
            .expect("record");
        let read = ErasureLedger::read(&path).expect("read");
        assert_eq!(
            read,
            vec![
                SubjectHash([1; 32]),
                SubjectHash([2; 32]),
                SubjectHash([3; 32])
            ]
        );
    }

    #[test]
    fn a_corrupt_line_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ledger.jsonl");
        ErasureLedger::open(&path)
            .expect("open")
            .record(&SubjectHash([1; 32]), 10)
            .expect("record");
        let mut text = std::fs::read_to_string(&path).expect("read");
        text.push_str("{\"subject_hash\":\"zz\",\"erased_at_unix\":1}\n");
        std::fs::write(&path, text).expect("write");
        match ErasureLedger::read(&path) {
            Err(LedgerError::Corrupt { line, .. }) => assert_eq!(line, 2),
            other => panic!("expected a corrupt line 2, got {other:?}"),
        }
    }
}
