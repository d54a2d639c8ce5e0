//! A small tmpfs mounted for a test (a data directory that can be filled
//! to the brim), unmounted when the guard drops, also when the test fails.
//! Needs root and `mount -t tmpfs` (CI runs as root on the same machine);
//! without them the test fails with the reason, never skips.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size_mb` MiB on `path` (created if missing).
    pub fn mount(path: &Path, size_mb: u64) -> Tmpfs {
        fs::create_dir_all(path).expect("mount point");
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mb}m"), "tmpfs"])
            .arg(path)
            .output()
            .expect("run mount");
        assert!(
            output.status.success(),
            "cannot mount a tmpfs on {} (the disk-full tests need root and tmpfs): {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        Tmpfs {
            path: path.to_path_buf(),
        }
    }

    fn filler_path(&self) -> PathBuf {
        self.path.join("filler")
    }

    /// Writes a filler file until the file system answers ENOSPC, down to
    /// the last 4 KiB block. Returns the bytes written.
    pub fn fill(&self) -> u64 {
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.filler_path())
            .expect("filler");
        let mut written = 0;
        for chunk in [1 << 20, 64 << 10, 4 << 10, 512] {
            let block = vec![0xA5u8; chunk];
            loop {
                match file.write_all(&block) {
                    Ok(()) => written += chunk as u64,
                    Err(error) if is_enospc(&error) => break,
                    Err(error) => panic!("filler write: {error}"),
                }
            }
        }
        let _ = file.sync_all();
        written
    }

    /// Deletes the filler: the space comes back.
    pub fn drain(&self) {
        match fs::remove_file(self.filler_path()) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => panic!("remove filler: {error}"),
        }
    }

    /// Gives back the last `bytes` of the filler.
    pub fn shrink_filler(&self, bytes: u64) {
        let file = fs::OpenOptions::new()
            .write(true)
            .open(self.filler_path())
            .expect("filler");
        let len = file.metadata().expect("filler size").len();
        file.set_len(len.saturating_sub(bytes))
            .expect("shrink filler");
    }

    /// Whether a 4 KiB file can be written now.
    pub fn has_room(&self) -> bool {
        let probe = self.path.join("probe");
        let ok = File::create(&probe)
            .and_then(|mut f| f.write_all(&[0u8; 4096]).and_then(|()| f.sync_all()))
            .is_ok();
        let _ = fs::remove_file(&probe);
        ok
    }
}

fn is_enospc(error: &io::Error) -> bool {
    error.raw_os_error() == Some(28) || error.kind() == io::ErrorKind::StorageFull
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a server still holding files must not keep it mounted.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
