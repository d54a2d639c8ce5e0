//! The JSON-lines copy of the audit log: append-only, one record per line,
//! fsynced per batch, or written per batch and synced by the log's sync
//! thread through [`FileSink::shared`].
//!
//! Before each batch the sink checks that its path still names the file it
//! holds open. If the file was moved away or replaced, the path is opened
//! again (a new file for a rotation by move-and-create); if that fails (the
//! path is now a directory, the disk is gone) the batch fails, and with it
//! every reveal waiting on it. Writing on into an unlinked file would
//! "succeed" while the SIEM sees nothing.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The file the sink currently writes, for the sync thread: replaced
/// when the path is reopened.
pub(crate) type SharedFile = Arc<parking_lot::Mutex<Arc<File>>>;

/// Bytes read per step when looking for the last line from the end.
const TAIL_CHUNK: u64 = 64 * 1024;

pub(crate) struct FileSink {
    path: PathBuf,
    file: Arc<File>,
    shared: SharedFile,
    /// `fsync` each batch before it counts as written.
    sync_each: bool,
    /// (device, inode) of `file`, to notice a replaced path.
    identity: (u64, u64),
    /// Length up to the last fully written batch.
    good_len: u64,
    /// A write failed part-way: cut back to `good_len` before the next.
    dirty: bool,
}

/// The file as found at start-up.
pub(crate) struct Opened {
    pub sink: FileSink,
    /// The last complete line, without its newline.
    pub last_line: Option<Vec<u8>>,
    /// Bytes of an unfinished last line that were cut off (a crash in the
    /// middle of a write: never acknowledged).
    pub torn_bytes: u64,
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
}

fn identity(metadata: &std::fs::Metadata) -> (u64, u64) {
    (metadata.dev(), metadata.ino())
}

impl FileSink {
    /// Opens (or creates) the file and cuts off a torn last line.
    pub fn open(path: &Path, sync_each: bool) -> io::Result<Opened> {
        let file = open_append(path)?;
        let metadata = file.metadata()?;
        if !metadata.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        let len = metadata.len();
        let complete = complete_len(&file, len)?;
        if complete < len {
            file.set_len(complete)?;
            file.sync_all()?;
        }
        let last_line = last_line(&file, complete)?;
        let file = Arc::new(file);
        Ok(Opened {
            sink: FileSink {
                path: path.to_path_buf(),
                identity: identity(&metadata),
                shared: Arc::new(parking_lot::Mutex::new(Arc::clone(&file))),
                file,
                sync_each,
                good_len: complete,
                dirty: false,
            },
            last_line,
            torn_bytes: len - complete,
        })
    }

    /// The handle the sync thread syncs.
    pub fn shared(&self) -> SharedFile {
        Arc::clone(&self.shared)
    }

    /// Appends whole lines, synced to disk if the sink syncs each batch.
    pub fn append(&mut self, lines: &[u8]) -> io::Result<()> {
        self.follow_path()?;
        if self.dirty {
            self.file.set_len(self.good_len)?;
            self.dirty = false;
        }
        let mut file = &*self.file;
        let written = file.write_all(lines).and_then(|()| {
            if self.sync_each {
                file.sync_data()
            } else {
                Ok(())
            }
        });
        match written {
            Ok(()) => {
                self.good_len += lines.len() as u64;
                Ok(())
            }
            Err(error) => {
                self.dirty = true;
                Err(error)
            }
        }
    }

    /// Reopens the path if it no longer names the open file.
    fn follow_path(&mut self) -> io::Result<()> {
        let current = match std::fs::symlink_metadata(&self.path) {
            Ok(metadata) if metadata.is_file() => Some(identity(&metadata)),
            Ok(_) => return Err(io::Error::other("audit file path is not a regular file")),
            Err(error) if error.kind() == io::ErrorKind::NotFound => None,
            Err(error) => return Err(error),
        };
        if current == Some(self.identity) {
            return Ok(());
        }
        let file = open_append(&self.path)?;
        let metadata = file.metadata()?;
        if !metadata.is_file() {
            return Err(io::Error::other("audit file path is not a regular file"));
        }
        tracing::warn!(path = %self.path.display(), "audit file was moved or replaced; writing to a new file at its path");
        // What went to the old file is synced before the sync thread
        // loses sight of it.
        self.file.sync_data()?;
        self.identity = identity(&metadata);
        self.good_len = metadata.len();
        self.dirty = false;
        self.file = Arc::new(file);
        *self.shared.lock() = Arc::clone(&self.file);
        Ok(())
    }
}

/// The length of the file up to and including its last newline.
fn complete_len(file: &File, len: u64) -> io::Result<u64> {
    let mut end = len;
    while end > 0 {
        let start = end.saturating_sub(TAIL_CHUNK);
        let mut chunk = vec![0u8; (end - start) as usize];
        file.read_exact_at(&mut chunk, start)?;
        if let Some(at) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(start + at as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// The last line of a file whose first `len` bytes end with a newline.
fn last_line(file: &File, len: u64) -> io::Result<Option<Vec<u8>>> {
    if len == 0 {
        return Ok(None);
    }
    let body_end = len - 1;
    let line_start = complete_len(file, body_end)?;
    let mut line = vec![0u8; (body_end - line_start) as usize];
    file.read_exact_at(&mut line, line_start)?;
    Ok(Some(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_finds_the_last_line_and_cuts_a_torn_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        std::fs::write(&path, b"one\ntwo\nthr").expect("write");
        let opened = FileSink::open(&path, true).expect("open");
        assert_eq!(opened.last_line.as_deref(), Some(&b"two"[..]));
        assert_eq!(opened.torn_bytes, 3);
        assert_eq!(std::fs::read(&path).expect("read"), b"one\ntwo\n");
    }

    #[test]
    fn a_long_last_line_is_found_across_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let long = "x".repeat(200_000);
        std::fs::write(&path, format!("first\n{long}\n")).expect("write");
        let opened = FileSink::open(&path, true).expect("open");
        assert_eq!(opened.last_line.map(|l| l.len()), Some(long.len()));
    }

    #[test]
    fn a_path_replaced_by_a_directory_fails_the_next_append() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let mut sink = FileSink::open(&path, true).expect("open").sink;
        sink.append(b"a\n").expect("append");
        std::fs::remove_file(&path).expect("remove");
        std::fs::create_dir(&path).expect("mkdir");
        assert!(sink.append(b"b\n").is_err());
        std::fs::remove_dir(&path).expect("rmdir");
        sink.append(b"c\n").expect("a new file at the path");
        assert_eq!(std::fs::read(&path).expect("read"), b"c\n");
    }
}
