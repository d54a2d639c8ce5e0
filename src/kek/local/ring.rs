//! The local KEK's key file: the versions of the key and the floor below
//! which a version opens nothing. This module owns the file's two layouts
//! and writing it so that a crash never leaves it half-written; it never
//! logs, prints or returns a key byte in an error.
//!
//! - legacy: exactly 32 raw bytes, version 1 (what `serve --dev` creates and
//!   what every key file was before versions);
//! - versioned (written by the first `keys rotate`): text lines
//!   `tokenvault-local-kek 1`, `floor N`, then `vK <64 hex digits>` for each
//!   version kept, oldest first.
//!
//! Retiring raises the floor (reversible: the versions stay in the file);
//! trimming removes the versions below it from the file, and the file that
//! held them is overwritten before it is unlinked. That is as far as a
//! process can destroy a file's bytes: a filesystem snapshot, a copy of the
//! file or a flash cell the drive remapped is the operator's to keep away.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::crypto::{SecretKey, KEY_LEN};

const HEADER: &str = "tokenvault-local-kek 1";

/// A key file's contents. `Debug` shows versions, never keys.
#[derive(Clone)]
pub struct KeyRing {
    floor: u32,
    versions: BTreeMap<u32, SecretKey>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let versions: Vec<&u32> = self.versions.keys().collect();
        write!(f, "KeyRing(floor v{}, versions {versions:?})", self.floor)
    }
}

impl KeyRing {
    /// A ring of one key, version 1 (a legacy file, or a test's key).
    pub fn single(key: SecretKey) -> Self {
        KeyRing {
            floor: 1,
            versions: BTreeMap::from([(1, key)]),
        }
    }

    /// Reads a key file in either layout.
    pub fn read(path: &Path) -> Result<Self, String> {
        let bytes = Zeroizing::new(
            fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        );
        Self::parse(&bytes).map_err(|problem| format!("{}: {problem}", path.display()))
    }

    fn parse(bytes: &[u8]) -> Result<Self, String> {
        if !bytes.starts_with(HEADER.as_bytes()) {
            return SecretKey::from_slice(bytes).map(Self::single).ok_or_else(|| {
                format!("must hold exactly {KEY_LEN} bytes, or be a versioned key file written by keys rotate")
            });
        }
        let text = std::str::from_utf8(bytes).map_err(|_| "is not valid UTF-8".to_string())?;
        let mut lines = text.lines().skip(1).filter(|line| !line.trim().is_empty());
        let floor = lines
            .next()
            .and_then(|line| line.strip_prefix("floor "))
            .and_then(|n| n.trim().parse::<u32>().ok())
            .ok_or("the line after the header must be `floor N`")?;
        let mut versions = BTreeMap::new();
        for (number, line) in lines.enumerate() {
            let (version, key) = parse_version_line(line).ok_or_else(|| {
                format!("version line {} is not `vN <64 hex digits>`", number + 1)
            })?;
            if versions.insert(version, key).is_some() {
                return Err(format!("version v{version} appears twice"));
            }
        }
        let ring = KeyRing { floor, versions };
        ring.check()?;
        Ok(ring)
    }

    fn check(&self) -> Result<(), String> {
        let latest = self.latest_version();
        if self.versions.is_empty() || self.floor == 0 || self.floor > latest {
            return Err(format!(
                "the floor v{} must be between v1 and the latest version, v{latest}",
                self.floor
            ));
        }
        if !self.versions.contains_key(&self.floor) {
            return Err(format!("the floor version v{} is missing", self.floor));
        }
        Ok(())
    }

    /// The versioned layout. The text holds the keys: wiped on drop.
    fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut text = Zeroizing::new(format!("{HEADER}\nfloor {}\n", self.floor));
        for (version, key) in &self.versions {
            let hex = Zeroizing::new(hex::encode(key.expose()));
            text.push_str(&format!("v{version} "));
            text.push_str(&hex);
            text.push('\n');
        }
        Zeroizing::new(text.as_bytes().to_vec())
    }

    pub fn latest_version(&self) -> u32 {
        self.versions.keys().next_back().copied().unwrap_or(0)
    }

    pub fn floor(&self) -> u32 {
        self.floor
    }

    /// The versions that still open keys (the floor and above), with their
    /// keys.
    pub fn usable(&self) -> impl Iterator<Item = (u32, &SecretKey)> {
        self.versions
            .range(self.floor..)
            .map(|(version, key)| (*version, key))
    }

    /// This ring with a new random version on top; new wraps use it.
    pub fn with_new_version(&self) -> Result<Self, String> {
        let key = SecretKey::generate().map_err(|e| e.to_string())?;
        let mut ring = self.clone();
        ring.versions.insert(self.latest_version() + 1, key);
        Ok(ring)
    }

    /// This ring with its floor at `floor` (raised or lowered back; never
    /// below a version that was trimmed).
    pub fn with_floor(&self, floor: u32) -> Result<Self, String> {
        let ring = KeyRing {
            floor,
            versions: self.versions.clone(),
        };
        ring.check()?;
        Ok(ring)
    }

    /// This ring without the versions below `below`, which must be at or
    /// under the floor: only retired versions are trimmed, and only those
    /// the operator named.
    pub fn trimmed_below(&self, below: u32) -> Result<Self, String> {
        if below > self.floor {
            return Err(format!(
                "cannot trim below v{below}: the floor is v{}, so v{}..v{} still open keys",
                self.floor,
                self.floor,
                below - 1
            ));
        }
        Ok(KeyRing {
            floor: self.floor,
            versions: self
                .versions
                .range(below..)
                .map(|(version, key)| (*version, key.clone()))
                .collect(),
        })
    }

    /// Replaces the file at `path` with this ring (mode 0600): written
    /// beside it and synced, renamed over it, the directory synced; then
    /// the old file's bytes are overwritten and it is unlinked.
    pub fn write(&self, path: &Path) -> Result<(), String> {
        let parent = path.parent().unwrap_or(Path::new("."));
        let fresh = sibling(path, "new");
        let old = sibling(path, "old");
        scrub(&fresh)?;
        scrub(&old)?;
        write_synced(&fresh, &self.encode())?;
        fs::hard_link(path, &old)
            .map_err(|e| format!("cannot link {} to {}: {e}", path.display(), old.display()))?;
        fs::rename(&fresh, path).map_err(|e| format!("cannot replace {}: {e}", path.display()))?;
        sync_dir(parent)?;
        scrub(&old)?;
        sync_dir(parent)
    }
}

fn parse_version_line(line: &str) -> Option<(u32, SecretKey)> {
    let (version, hex) = line.trim().strip_prefix('v')?.split_once(' ')?;
    let version: u32 = version.parse().ok().filter(|v| *v > 0)?;
    let bytes = Zeroizing::new(hex::decode(hex.trim()).ok()?);
    Some((version, SecretKey::from_slice(&bytes)?))
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{suffix}"));
    path.with_file_name(name)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Overwrites a leftover file with zeros, syncs and unlinks it; nothing to
/// do when it does not exist.
fn scrub(path: &Path) -> Result<(), String> {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return Ok(());
    };
    let overwrite = || -> std::io::Result<()> {
        let mut file = fs::OpenOptions::new().write(true).open(path)?;
        file.write_all(&vec![0; meta.len() as usize])?;
        file.sync_all()?;
        fs::remove_file(path)
    };
    overwrite().map_err(|e| format!("cannot destroy the old key file {}: {e}", path.display()))
}

fn sync_dir(dir: &Path) -> Result<(), String> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("cannot sync {}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SecretKey {
        SecretKey::from_slice(&[byte; KEY_LEN]).expect("32 bytes")
    }

    #[test]
    fn a_legacy_file_is_version_one_and_anything_else_unknown_is_refused() {
        let ring = KeyRing::parse(&[7; KEY_LEN]).expect("legacy");
        assert_eq!((ring.floor(), ring.latest_version()), (1, 1));
        let short = KeyRing::parse(b"short").expect_err("refused");
        assert!(short.contains("exactly 32 bytes"), "{short}");
        let bad_line =
            KeyRing::parse(b"tokenvault-local-kek 1\nfloor 1\nv1 abcd\n").expect_err("refused");
        assert!(bad_line.contains("version line 1"), "{bad_line}");
    }

    #[test]
    fn versions_floor_and_trim_survive_the_file_and_no_key_is_debug_printed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kek.key");
        fs::write(&path, [1; KEY_LEN]).expect("legacy file");
        let ring = KeyRing::read(&path)
            .expect("read")
            .with_new_version()
            .expect("v2")
            .with_new_version()
            .expect("v3")
            .with_floor(2)
            .expect("floor");
        ring.write(&path).expect("write");
        let back = KeyRing::read(&path).expect("read back");
        assert_eq!((back.floor(), back.latest_version()), (2, 3));
        let usable: Vec<u32> = back.usable().map(|(v, _)| v).collect();
        assert_eq!(usable, [2, 3]);
        // Below the floor but above the trim: stays in the file.
        let kept = back
            .with_floor(3)
            .expect("floor 3")
            .trimmed_below(2)
            .expect("trim below 2");
        assert_eq!(kept.with_floor(2).expect("v2 still there").floor(), 2);
        assert!(back.usable().all(|(_, k)| k.expose() != key(1).expose()));
        assert!(!format!("{back:?}").contains(&hex::encode([1; KEY_LEN])));

        // Lowering the floor back works until the old version is trimmed.
        assert_eq!(back.with_floor(1).expect("lowered").floor(), 1);
        assert!(
            back.trimmed_below(3).is_err(),
            "v2 is the floor: not trimmed"
        );
        back.trimmed_below(2)
            .expect("trim")
            .write(&path)
            .expect("trim");
        let trimmed = KeyRing::read(&path).expect("read trimmed");
        assert!(trimmed.with_floor(1).is_err());
        let text = fs::read_to_string(&path).expect("text");
        assert!(!text.contains(&hex::encode([1; KEY_LEN])), "v1 gone");
        assert!(!text.contains("\nv1 "));
        let leftovers: Vec<_> = fs::read_dir(dir.path()).expect("dir").collect();
        assert_eq!(leftovers.len(), 1, "no .new or .old file is left");
    }
}
