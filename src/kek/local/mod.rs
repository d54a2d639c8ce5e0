//! The local KEK: a key file, for development and the embedded default
//! only. The KEK sits in this process's memory, so the provider reports
//! itself insecure and the server warns at start-up.
//!
//! The file holds one or more versions (`ring`): `keys rotate` adds one and
//! rewraps every stored key to it, `keys retire` raises the floor below
//! which no version opens anything and with `--trim-irreversibly` removes
//! those versions from the file. The provider re-reads the file whenever
//! it changed on disk, so a retire by the operator's command (or a rotation
//! by another replica sharing the file) holds at this process's next call.
//!
//! A wrapped key is `nonce (12) | AES-256-GCM-SIV(wrap key, DEK)` where the
//! wrap key is derived from the version's key, and the associated data
//! names this provider and the layout version.

mod ring;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};

use super::{check_kind, KekError, KekKind, KekProvider, KekStatus, WrappedKey};
use crate::crypto::{envelope, Sealed, SecretKey, NONCE_LEN};
pub use ring::KeyRing;

const WRAP_LABEL: &[u8] = b"tokenvault/v1/kek/local/wrap";
const WRAP_AAD: &[u8] = b"tokenvault/v1/kek/local";

pub struct LocalKek {
    /// None for a key given in memory (tests): it cannot rotate.
    path: Option<PathBuf>,
    loaded: RwLock<Loaded>,
    /// Serializes this process's changes of the file.
    changing: Mutex<()>,
}

/// The ring as last read, the wrap keys of its usable versions, and the
/// file's identity then (a replaced or rewritten file differs).
struct Loaded {
    latest: u32,
    floor: u32,
    wrap_keys: BTreeMap<u32, SecretKey>,
    stamp: Option<FileStamp>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    inode: u64,
    len: u64,
    modified_ns: i64,
}

impl LocalKek {
    /// Reads the key file; with `create`, makes a new random one (mode 0600)
    /// when none exists.
    pub fn open(path: &Path, create: bool) -> Result<Self, KekError> {
        if create && !path.exists() {
            write_new_key_file(path)?;
        }
        let (ring, stamp) = read_ring(path)?;
        warn_if_readable_by_others(path);
        Ok(LocalKek {
            path: Some(path.to_path_buf()),
            loaded: RwLock::new(Loaded::new(&ring, Some(stamp))),
            changing: Mutex::new(()),
        })
    }

    pub fn from_key(kek: &SecretKey) -> Self {
        LocalKek {
            path: None,
            loaded: RwLock::new(Loaded::new(&KeyRing::single(kek.clone()), None)),
            changing: Mutex::new(()),
        }
    }

    /// Re-reads the file when it changed since it was last read. Fails
    /// closed: a key file that cannot be read stops every wrap and unwrap.
    fn refresh(&self) -> Result<(), KekError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let now = stamp(path).map_err(unreadable)?;
        if self.loaded.read().stamp == Some(now) && !now.recent() {
            return Ok(());
        }
        let (ring, stamp) = read_ring(path).map_err(|e| unreadable(e.to_string()))?;
        *self.loaded.write() = Loaded::new(&ring, Some(stamp));
        Ok(())
    }

    /// Changes the key file under this process's lock: reads it fresh,
    /// applies `change`, writes the result and uses it from now on.
    fn change(
        &self,
        change: impl FnOnce(&KeyRing) -> Result<KeyRing, String>,
    ) -> Result<KeyRing, KekError> {
        let path = self.path.as_ref().ok_or(KekError::Unsupported(
            "a local KEK given in memory has no key file to change",
        ))?;
        let _changing = self.changing.lock();
        let (current, _) = read_ring(path)?;
        let next = change(&current).map_err(KekError::Setup)?;
        next.write(path).map_err(KekError::Setup)?;
        let stamp = stamp(path).map_err(unreadable)?;
        *self.loaded.write() = Loaded::new(&next, Some(stamp));
        Ok(next)
    }

    /// Makes `floor` the oldest version that opens keys (raised, or lowered
    /// back while the versions below are still in the file).
    pub fn set_floor(&self, floor: u32) -> Result<(), KekError> {
        self.change(|ring| ring.with_floor(floor)).map(|_| ())
    }

    /// Removes the versions below `below` (at or under the floor) from the
    /// file, for good.
    pub fn trim_below(&self, below: u32) -> Result<(), KekError> {
        self.change(|ring| ring.trimmed_below(below)).map(|_| ())
    }

    fn wrap_one(&self, key: &SecretKey) -> Result<WrappedKey, KekError> {
        let loaded = self.loaded.read();
        let wrap_key = loaded
            .wrap_keys
            .get(&loaded.latest)
            .ok_or_else(|| KekError::Setup("the local KEK file has no usable version".into()))?;
        let sealed = envelope::seal(wrap_key, WRAP_AAD, key.expose())
            .map_err(|e| KekError::Setup(e.to_string()))?;
        let mut ciphertext = Vec::with_capacity(NONCE_LEN + sealed.ciphertext.len());
        ciphertext.extend_from_slice(&sealed.nonce);
        ciphertext.extend_from_slice(&sealed.ciphertext);
        Ok(WrappedKey {
            kind: KekKind::Local,
            kek_version: loaded.latest,
            ciphertext,
        })
    }

    /// Opens a key wrapped under a usable version; a version below the
    /// floor or trimmed from the file opens nothing.
    fn unwrap_one(&self, wrapped: &WrappedKey) -> Result<SecretKey, KekError> {
        check_kind(wrapped, KekKind::Local)?;
        if wrapped.ciphertext.len() < NONCE_LEN {
            return Err(KekError::Malformed);
        }
        let loaded = self.loaded.read();
        let wrap_key = loaded
            .wrap_keys
            .get(&wrapped.kek_version)
            .ok_or(KekError::UnwrapFailed("local"))?;
        let (nonce, ciphertext) = wrapped.ciphertext.split_at(NONCE_LEN);
        let sealed = Sealed {
            nonce: nonce.try_into().map_err(|_| KekError::Malformed)?,
            ciphertext: ciphertext.to_vec(),
        };
        let plain = envelope::open(wrap_key, WRAP_AAD, sealed)
            .map_err(|_| KekError::UnwrapFailed("local"))?;
        SecretKey::from_slice(&plain).ok_or(KekError::Malformed)
    }
}

impl Loaded {
    fn new(ring: &KeyRing, stamp: Option<FileStamp>) -> Self {
        Loaded {
            latest: ring.latest_version(),
            floor: ring.floor(),
            wrap_keys: ring
                .usable()
                .map(|(version, key)| (version, key.derive(WRAP_LABEL)))
                .collect(),
            stamp,
        }
    }
}

fn read_ring(path: &Path) -> Result<(KeyRing, FileStamp), KekError> {
    let before = stamp(path).map_err(|e| KekError::Setup(format!("local KEK file: {e}")))?;
    let ring = KeyRing::read(path).map_err(|e| KekError::Setup(format!("local KEK file {e}")))?;
    Ok((ring, before))
}

impl FileStamp {
    /// A file changed in the last two seconds is read again even when its
    /// stamp matches: timestamps are coarser than a change, and an inode
    /// freed by one change may be reused by the next (the racy-git rule).
    fn recent(&self) -> bool {
        let now_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        now_ns - self.modified_ns < 2_000_000_000
    }
}

fn stamp(path: &Path) -> Result<FileStamp, String> {
    let meta = fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(FileStamp {
        inode: meta.ino(),
        len: meta.len(),
        modified_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
    })
}

fn unreadable(problem: String) -> KekError {
    KekError::Unavailable(format!("the local KEK file is unreadable: {problem}"))
}

#[async_trait]
impl KekProvider for LocalKek {
    fn kind(&self) -> KekKind {
        KekKind::Local
    }

    fn is_secure(&self) -> bool {
        false
    }

    async fn wrap(&self, keys: &[&SecretKey]) -> Result<Vec<WrappedKey>, KekError> {
        self.refresh()?;
        keys.iter().map(|key| self.wrap_one(key)).collect()
    }

    async fn unwrap(&self, keys: &[&WrappedKey]) -> Result<Vec<SecretKey>, KekError> {
        self.refresh()?;
        keys.iter().map(|key| self.unwrap_one(key)).collect()
    }

    async fn status(&self) -> Result<KekStatus, KekError> {
        self.refresh()?;
        let loaded = self.loaded.read();
        Ok(KekStatus {
            latest_version: loaded.latest,
            min_decryption_version: loaded.floor,
        })
    }

    async fn rotate(&self) -> Result<u32, KekError> {
        Ok(self.change(KeyRing::with_new_version)?.latest_version())
    }

    /// The local KEK is in this process anyway: rewrapping is an unwrap
    /// and a wrap under the newest version.
    async fn rewrap(&self, keys: &[&WrappedKey]) -> Result<Vec<WrappedKey>, KekError> {
        self.refresh()?;
        keys.iter()
            .map(|key| self.wrap_one(&self.unwrap_one(key)?))
            .collect()
    }
}

fn write_new_key_file(path: &Path) -> Result<(), KekError> {
    let key = SecretKey::generate().map_err(|e| KekError::Setup(e.to_string()))?;
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .map_err(|e| KekError::Setup(format!("cannot create {}: {e}", parent.display())))?;
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| KekError::Setup(format!("cannot create {}: {e}", path.display())))?;
    file.write_all(key.expose())
        .and_then(|()| file.sync_all())
        .map_err(|e| KekError::Setup(format!("cannot write {}: {e}", path.display())))
}

fn warn_if_readable_by_others(path: &Path) {
    if let Ok(meta) = fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "local KEK file is readable by group or others; chmod 600 it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kek(byte: u8) -> LocalKek {
        LocalKek::from_key(&SecretKey::from_slice(&[byte; 32]).expect("32 bytes"))
    }

    #[tokio::test]
    async fn wrap_unwrap_round_trip() {
        let dek = SecretKey::generate().expect("random");
        let wrapped = kek(1).wrap(&[&dek]).await.expect("wrap");
        assert_eq!(wrapped[0].kind, KekKind::Local);
        assert!(!wrapped[0].ciphertext.windows(32).any(|w| w == dek.expose()));
        let back = kek(1).unwrap(&[&wrapped[0]]).await.expect("unwrap");
        assert_eq!(back[0].expose(), dek.expose());
    }

    #[tokio::test]
    async fn other_kek_or_tampering_fails_closed() {
        let dek = SecretKey::generate().expect("random");
        let wrapped = kek(1).wrap(&[&dek]).await.expect("wrap").remove(0);
        assert!(matches!(
            kek(2).unwrap(&[&wrapped]).await,
            Err(KekError::UnwrapFailed(_))
        ));
        let mut tampered = wrapped.clone();
        let last = tampered.ciphertext.len() - 1;
        tampered.ciphertext[last] ^= 1;
        assert!(matches!(
            kek(1).unwrap(&[&tampered]).await,
            Err(KekError::UnwrapFailed(_))
        ));
        let foreign = WrappedKey {
            kind: KekKind::Vault,
            ..wrapped
        };
        assert!(matches!(
            kek(1).unwrap(&[&foreign]).await,
            Err(KekError::WrongProvider { .. })
        ));
    }

    /// What `keys rotate` and `keys retire` rely on: a rotation is seen by
    /// another process sharing the file; a key under a version below the
    /// floor opens for no one, lowering the floor back restores it until
    /// the version is trimmed, and the rewrapped key opens throughout.
    #[tokio::test]
    async fn rotate_rewrap_retire_and_trim_through_the_key_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kek.key");
        let server = LocalKek::open(&path, true).expect("create");
        let other_replica = LocalKek::open(&path, false).expect("open");
        let dek = SecretKey::generate().expect("random");
        let old = server.wrap(&[&dek]).await.expect("wrap").remove(0);
        assert_eq!(old.kek_version, 1);

        assert_eq!(server.rotate().await.expect("rotate"), 2);
        let new = server.rewrap(&[&old]).await.expect("rewrap").remove(0);
        assert_eq!(new.kek_version, 2);
        let seen = other_replica.unwrap(&[&new]).await.expect("seen");
        assert_eq!(seen[0].expose(), dek.expose());

        let operator = LocalKek::open(&path, false).expect("operator's copy");
        operator.set_floor(2).expect("raise the floor");
        for kek in [&server, &other_replica] {
            assert!(matches!(
                kek.unwrap(&[&old]).await,
                Err(KekError::UnwrapFailed(_))
            ));
            assert_eq!(
                kek.status().await.expect("status").min_decryption_version,
                2
            );
        }
        operator.set_floor(1).expect("lowered back");
        assert!(server.unwrap(&[&old]).await.is_ok());
        operator.set_floor(2).expect("raised again");
        operator.trim_below(2).expect("trim");
        assert!(operator.set_floor(1).is_err(), "v1 is gone from the file");
        let anyone = LocalKek::open(&path, false).expect("a copy of the file");
        assert!(anyone.unwrap(&[&old]).await.is_err());
        assert_eq!(
            anyone.unwrap(&[&new]).await.expect("v2")[0].expose(),
            dek.expose()
        );
    }

    #[tokio::test]
    async fn an_unreadable_key_file_stops_wraps_instead_of_serving_from_memory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kek.key");
        let kek = LocalKek::open(&path, true).expect("create");
        let dek = SecretKey::generate().expect("random");
        let wrapped = kek.wrap(&[&dek]).await.expect("wrap").remove(0);
        fs::remove_file(&path).expect("remove");
        assert!(matches!(
            kek.unwrap(&[&wrapped]).await,
            Err(KekError::Unavailable(_))
        ));
    }

    #[test]
    fn key_file_is_created_private_and_must_be_32_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kek.key");
        assert!(
            LocalKek::open(&path, false).is_err(),
            "missing file without create"
        );
        LocalKek::open(&path, true).expect("create");
        let mode = fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(fs::read(&path).expect("read").len(), 32);
        fs::write(&path, b"short").expect("write");
        let err = LocalKek::open(&path, true)
            .err()
            .expect("short key rejected");
        assert!(err.to_string().contains("exactly 32 bytes"));
    }
}
