//! The disk-space guard of the data directory: a reserve file of
//! `storage.disk_reserve_bytes`, released when the file system runs out of
//! room, so that a full disk stops new tokens before the storage engine
//! itself hits ENOSPC, while reveals (whose audit records must be written,
//! fail-closed) and erasures still have room.
//!
//! States: *normal* (the reserve file exists; every write is admitted) and
//! *full* (free space fell below the reserve size: the reserve file is
//! deleted and new tokens are refused with a "disk full" storage error,
//! which callers see as UNAVAILABLE). Full ends once free space is at
//! least twice the reserve: the reserve file is written again and tokens
//! are admitted. The state is re-checked by every write that would add
//! tokens and by a watcher thread every [`WATCH_INTERVAL`], so a reveal
//! arriving on a disk filled by something else finds the reserve already
//! released.
//!
//! It owns only the reserve file; it never deletes or touches anything
//! else in the data directory.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;

use super::StoreError;

/// The reserve file's name inside the data directory.
pub const RESERVE_FILE: &str = "disk-reserve";
/// How often the watcher thread re-checks free space.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(200);
/// The start of the storage error a refused write gets (tests and
/// operators search the log for it).
pub const DISK_FULL: &str = "disk full";

pub struct DiskGuard {
    dir: PathBuf,
    reserve_bytes: u64,
    full: AtomicBool,
    /// Serializes state changes (the watcher and the store's writer).
    transition: Mutex<()>,
}

impl std::fmt::Debug for DiskGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskGuard")
            .field("dir", &self.dir)
            .field("reserve_bytes", &self.reserve_bytes)
            .field("full", &self.full.load(Ordering::Relaxed))
            .finish()
    }
}

impl DiskGuard {
    /// Takes the reserve in `dir` (or starts full when there is no room
    /// for it) and starts the watcher thread, which ends when the guard is
    /// dropped.
    pub fn start(dir: &Path, reserve_bytes: u64) -> Result<Arc<Self>, StoreError> {
        let guard = Arc::new(DiskGuard {
            dir: dir.to_path_buf(),
            reserve_bytes,
            // Full until the first check has taken the reserve.
            full: AtomicBool::new(true),
            transition: Mutex::new(()),
        });
        // A reserve left by an earlier run counts as free space to reuse.
        guard.release_reserve();
        guard.take_initial_reserve();
        let watched = Arc::downgrade(&guard);
        std::thread::Builder::new()
            .name("tokenvault-disk".into())
            .spawn(move || watch(watched))
            .map_err(|e| StoreError::Engine(format!("cannot start the disk watcher: {e}")))?;
        Ok(guard)
    }

    /// Takes the reserve at start, or starts full (logged) without room.
    fn take_initial_reserve(&self) {
        let free = free_bytes(&self.dir).unwrap_or(0);
        if free >= self.reserve_bytes.saturating_mul(2) && self.take_reserve().is_ok() {
            self.full.store(false, Ordering::Release);
            return;
        }
        self.release_reserve();
        tracing::error!(
            free_bytes = free,
            reserve_bytes = self.reserve_bytes,
            dir = %self.dir.display(),
            "{DISK_FULL} at start: free space of the data directory is below twice storage.disk_reserve_bytes; Tokenize and RedactText answer UNAVAILABLE until space returns"
        );
    }

    /// Whether the data directory is out of space (re-checked now).
    pub fn check(&self) -> bool {
        let _transition = self.transition.lock();
        let full = self.full.load(Ordering::Acquire);
        let free = match free_bytes(&self.dir) {
            Ok(free) => free,
            Err(error) => {
                tracing::warn!(%error, dir = %self.dir.display(), "cannot read the free space of the data directory");
                return full;
            }
        };
        if !full && free < self.reserve_bytes {
            self.release_reserve();
            self.full.store(true, Ordering::Release);
            tracing::error!(
                free_bytes = free,
                reserve_bytes = self.reserve_bytes,
                dir = %self.dir.display(),
                "{DISK_FULL}: free space of the data directory is below storage.disk_reserve_bytes; the reserve is released for audit records and erasures; Tokenize and RedactText answer UNAVAILABLE until space returns"
            );
            return true;
        }
        if full && free >= self.reserve_bytes.saturating_mul(2) {
            match self.take_reserve() {
                Ok(()) => {
                    self.full.store(false, Ordering::Release);
                    tracing::info!(
                        free_bytes = free,
                        dir = %self.dir.display(),
                        "disk space back: the reserve is taken again and Tokenize resumes"
                    );
                    return false;
                }
                Err(error) => {
                    self.release_reserve();
                    tracing::warn!(%error, "cannot write the disk reserve; tokens stay refused");
                }
            }
        }
        full
    }

    /// Refuses a write that adds data while the disk is full.
    pub fn admit(&self) -> Result<(), StoreError> {
        if self.check() {
            return Err(StoreError::DiskFull);
        }
        Ok(())
    }

    fn reserve_path(&self) -> PathBuf {
        self.dir.join(RESERVE_FILE)
    }

    /// Allocates the reserve file's blocks for real (`posix_fallocate`: no
    /// data is written, but a sparse file would hold no space).
    fn take_reserve(&self) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let file = File::create(self.reserve_path())?;
        let len = libc::off_t::try_from(self.reserve_bytes)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "reserve too large"))?;
        // SAFETY: a valid open file descriptor, offset 0 and a positive
        // length; the call only allocates blocks of that file.
        let failed = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
        if failed != 0 {
            return Err(io::Error::from_raw_os_error(failed));
        }
        file.sync_all()
    }

    fn release_reserve(&self) {
        match fs::remove_file(self.reserve_path()) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => tracing::error!(%error, "cannot delete the disk reserve"),
        }
    }
}

fn watch(guard: Weak<DiskGuard>) {
    loop {
        std::thread::sleep(WATCH_INTERVAL);
        match guard.upgrade() {
            Some(guard) => {
                guard.check();
            }
            None => return,
        }
    }
}

/// Bytes an unprivileged writer may still use on the file system of `dir`.
pub fn free_bytes(dir: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in the data dir path"))?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a valid C string and `stat` a writable statvfs;
    // it is read only after the call reported success.
    let stat = unsafe {
        if libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) != 0 {
            return Err(io::Error::last_os_error());
        }
        stat.assume_init()
    };
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_taken_at_start_and_holds_real_space() {
        let dir = tempfile::tempdir().expect("tempdir");
        let guard = DiskGuard::start(dir.path(), 1 << 20).expect("guard");
        assert!(!guard.check(), "a roomy disk is not full");
        assert!(guard.admit().is_ok());
        let meta = fs::metadata(dir.path().join(RESERVE_FILE)).expect("reserve file");
        assert_eq!(meta.len(), 1 << 20);
        use std::os::unix::fs::MetadataExt;
        assert!(meta.blocks() * 512 >= 1 << 20, "the reserve is not sparse");
    }

    #[test]
    fn without_room_for_the_reserve_new_tokens_are_refused_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        // More than any test machine has free: full from the start.
        let guard = DiskGuard::start(dir.path(), 1 << 60).expect("guard");
        let refused = guard.admit().expect_err("refused");
        assert!(refused.to_string().contains(DISK_FULL), "{refused}");
        assert!(!dir.path().join(RESERVE_FILE).exists());
    }

    #[test]
    fn free_space_is_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(free_bytes(dir.path()).expect("statvfs") > 0);
    }
}
