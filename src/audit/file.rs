//! The JSON-lines copy of the audit log: append-only, one record per line,
//! fsynced per batch, or written per batch and synced by the log's sync
//! thread through [`FileSink::shared`].
//!
//! Before each batch the sink checks that its path still names the file it
//! holds open. If the file was moved away or replaced, the path is opened
//! again (a new file for a rotation by move-and-create); if that fails (the
//! path is now a directory, the disk is gone) the batch fails, and with it
//! every reveal waiting on it. Writing on into an unlinked file would
//! "succeed" while the SIEM sees nothing. The same look notices a file cut
//! short in place (shorter than what this sink wrote to it): every batch
//! then fails until a restart, which copies what the file lacks from the
//! store; the log never goes on silently after a cut.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The file the sink currently writes, for the sync thread: replaced
/// when the path is reopened.
pub(crate) type SharedFile = Arc<parking_lot::Mutex<Arc<File>>>;

/// Bytes read per step when looking for the last line from the end.
const TAIL_CHUNK: u64 = 64 * 1024;
/// How often, at most, the path is looked up to see whether the file was
/// moved, replaced or deleted. Records written in between go to the old
/// file; a deleted one loses them from the file copy only (the store's
/// copy takes them before the new file takes any).
pub(crate) const PATH_CHECK_EVERY: Duration = Duration::from_millis(1);

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
    /// When `path_moved` last looked at the path.
    path_checked: Option<Instant>,
    /// A cut file was found (and logged once).
    cut_reported: bool,
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
                path_checked: None,
                cut_reported: false,
            },
            last_line,
            torn_bytes: len - complete,
        })
    }

    /// Syncs what was written (at start-up, before a checkpoint).
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// The handle the sync thread syncs.
    pub fn shared(&self) -> SharedFile {
        Arc::clone(&self.shared)
    }

    /// Whether the path no longer names the open file (moved away,
    /// replaced or deleted): the next append opens the path again. An
    /// error if it names something other than a regular file. While the
    /// path names the open file it is looked up at most every
    /// [`PATH_CHECK_EVERY`] (a `stat` per batch cost more than the write
    /// itself); after a failed or moved look, at every batch, so that a
    /// broken path refuses every batch until it is repaired.
    pub fn path_moved(&mut self) -> io::Result<bool> {
        let now = Instant::now();
        if self
            .path_checked
            .is_some_and(|checked| now.duration_since(checked) < PATH_CHECK_EVERY)
        {
            return Ok(false);
        }
        let moved = match std::fs::symlink_metadata(&self.path) {
            Ok(metadata) if metadata.is_file() && identity(&metadata) == self.identity => {
                if metadata.len() < self.good_len && !self.dirty {
                    if !self.cut_reported {
                        self.cut_reported = true;
                        tracing::error!(
                            target: crate::policy::ALERT_TARGET,
                            alert = "audit_file_cut",
                            path = %self.path.display(),
                            bytes = metadata.len(),
                            written = self.good_len,
                            "the audit file is shorter than what was written to it (cut while in use): reveals are refused; restart the server to copy the missing records from the database"
                        );
                    }
                    Err(io::Error::other(
                        "the audit file is shorter than what was written to it (cut while in use)",
                    ))
                } else {
                    Ok(false)
                }
            }
            Ok(metadata) if metadata.is_file() => Ok(true),
            Ok(_) => Err(io::Error::other("audit file path is not a regular file")),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(true),
            Err(error) => Err(error),
        };
        self.path_checked = matches!(moved, Ok(false)).then_some(now);
        moved
    }

    /// Appends whole lines, synced to disk if the sink syncs each batch.
    pub fn append(&mut self, lines: &[u8]) -> io::Result<()> {
        let moved = self.path_moved()?;
        self.append_checked(lines, moved)
    }

    /// [`FileSink::append`] with the path just checked by
    /// [`FileSink::path_moved`] (one `stat` per batch, not two).
    pub fn append_checked(&mut self, lines: &[u8], moved: bool) -> io::Result<()> {
        if moved {
            self.reopen()?;
        }
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

    /// Opens the path again (it no longer names the open file).
    fn reopen(&mut self) -> io::Result<()> {
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

/// The complete lines at the end of the file at `path` that come after the
/// last line whose record number (`seq_of`) is `after` or less, oldest
/// first. Read backwards from the end, so that catching the store up after
/// a crash reads only the records it lacks, not the whole file. A line
/// whose number cannot be read ends the search as if it were older.
pub(crate) fn lines_after(
    path: &Path,
    after: u64,
    seq_of: impl Fn(&[u8]) -> Option<u64>,
) -> io::Result<Vec<Vec<u8>>> {
    let file = File::open(path)?;
    let mut end = complete_len(&file, file.metadata()?.len())?;
    let mut newer = Vec::new();
    // The start of a line whose beginning lies in a chunk not read yet.
    let mut carry = Vec::new();
    while end > 0 {
        let start = end.saturating_sub(TAIL_CHUNK);
        let mut chunk = vec![0u8; (end - start) as usize];
        file.read_exact_at(&mut chunk, start)?;
        chunk.extend_from_slice(&carry);
        let mut lines: Vec<&[u8]> = chunk.split(|&b| b == b'\n').collect();
        carry = if start > 0 {
            lines.remove(0).to_vec()
        } else {
            Vec::new()
        };
        for line in lines.into_iter().rev().filter(|line| !line.is_empty()) {
            match seq_of(line) {
                Some(seq) if seq > after => newer.push(line.to_vec()),
                _ => {
                    newer.reverse();
                    return Ok(newer);
                }
            }
        }
        end = start;
    }
    newer.reverse();
    Ok(newer)
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
    fn lines_after_a_number_are_read_from_the_end_across_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        // Lines of about 1 KiB, so that a 64 KiB chunk ends mid-line.
        let lines: Vec<String> = (1..=300)
            .map(|n| format!("{n} {}", "x".repeat(1000 + n % 7)))
            .collect();
        std::fs::write(&path, format!("{}\ntorn", lines.join("\n"))).expect("write");
        let seq_of = |line: &[u8]| {
            std::str::from_utf8(line)
                .ok()?
                .split(' ')
                .next()?
                .parse()
                .ok()
        };
        for after in [0, 1, 100, 236, 299, 300] {
            let found = lines_after(&path, after, seq_of).expect("read");
            let expected: Vec<Vec<u8>> = lines[after as usize..]
                .iter()
                .map(|l| l.clone().into_bytes())
                .collect();
            assert_eq!(found, expected, "after {after}");
        }
    }

    #[test]
    fn a_file_cut_short_in_place_fails_every_append() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let mut sink = FileSink::open(&path, true).expect("open").sink;
        sink.append(b"one\ntwo\n").expect("append");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|file| file.set_len(4))
            .expect("cut");
        std::thread::sleep(PATH_CHECK_EVERY);
        let error = sink.append(b"three\n").expect_err("a cut file");
        assert!(error.to_string().contains("shorter than"), "{error}");
        assert!(sink.append(b"three\n").is_err(), "and every batch after");
        assert_eq!(std::fs::read(&path).expect("read"), b"one\n");
    }

    #[test]
    fn a_path_replaced_by_a_directory_fails_the_next_append() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let mut sink = FileSink::open(&path, true).expect("open").sink;
        sink.append(b"a\n").expect("append");
        std::fs::remove_file(&path).expect("remove");
        std::fs::create_dir(&path).expect("mkdir");
        std::thread::sleep(PATH_CHECK_EVERY);
        assert!(sink.append(b"b\n").is_err());
        assert!(
            sink.append(b"b\n").is_err(),
            "a broken path is looked up again at once"
        );
        std::fs::remove_dir(&path).expect("rmdir");
        std::thread::sleep(PATH_CHECK_EVERY);
        sink.append(b"c\n").expect("a new file at the path");
        assert_eq!(std::fs::read(&path).expect("read"), b"c\n");
    }
}
