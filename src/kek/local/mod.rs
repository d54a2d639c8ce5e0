//! The local KEK: a 32-byte key file, for development and the embedded
//! default only. The KEK sits in this process's memory, so the provider
//! reports itself insecure and the server warns at start-up.
//!
//! A wrapped key is `nonce (12) | AES-256-GCM-SIV(wrap key, DEK)` where the
//! wrap key is derived from the file's key, and the associated data names
//! this provider and the layout version.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use async_trait::async_trait;
use zeroize::Zeroizing;

use super::{check_kind, KekError, KekKind, KekProvider, KekStatus, WrappedKey};
use crate::crypto::{envelope, Sealed, SecretKey, KEY_LEN, NONCE_LEN};

const WRAP_LABEL: &[u8] = b"tokenvault/v1/kek/local/wrap";
const WRAP_AAD: &[u8] = b"tokenvault/v1/kek/local";
/// The local KEK has no versions; rotation is a Vault feature.
const LOCAL_KEK_VERSION: u32 = 1;

pub struct LocalKek {
    wrap_key: SecretKey,
}

impl LocalKek {
    /// Reads the key file; with `create`, makes a new random one (mode 0600)
    /// when none exists.
    pub fn open(path: &Path, create: bool) -> Result<Self, KekError> {
        if create && !path.exists() {
            write_new_key_file(path)?;
        }
        let bytes = Zeroizing::new(fs::read(path).map_err(|e| {
            KekError::Setup(format!(
                "cannot read local KEK file {}: {e}",
                path.display()
            ))
        })?);
        let kek = SecretKey::from_slice(&bytes).ok_or_else(|| {
            KekError::Setup(format!(
                "local KEK file {} must hold exactly {KEY_LEN} bytes",
                path.display()
            ))
        })?;
        warn_if_readable_by_others(path);
        Ok(Self::from_key(&kek))
    }

    pub fn from_key(kek: &SecretKey) -> Self {
        LocalKek {
            wrap_key: kek.derive(WRAP_LABEL),
        }
    }

    fn wrap_one(&self, key: &SecretKey) -> Result<WrappedKey, KekError> {
        let sealed = envelope::seal(&self.wrap_key, WRAP_AAD, key.expose())
            .map_err(|e| KekError::Setup(e.to_string()))?;
        let mut ciphertext = Vec::with_capacity(NONCE_LEN + sealed.ciphertext.len());
        ciphertext.extend_from_slice(&sealed.nonce);
        ciphertext.extend_from_slice(&sealed.ciphertext);
        Ok(WrappedKey {
            kind: KekKind::Local,
            kek_version: LOCAL_KEK_VERSION,
            ciphertext,
        })
    }

    fn unwrap_one(&self, wrapped: &WrappedKey) -> Result<SecretKey, KekError> {
        check_kind(wrapped, KekKind::Local)?;
        if wrapped.ciphertext.len() < NONCE_LEN {
            return Err(KekError::Malformed);
        }
        let (nonce, ciphertext) = wrapped.ciphertext.split_at(NONCE_LEN);
        let sealed = Sealed {
            nonce: nonce.try_into().map_err(|_| KekError::Malformed)?,
            ciphertext: ciphertext.to_vec(),
        };
        let plain = envelope::open(&self.wrap_key, WRAP_AAD, sealed)
            .map_err(|_| KekError::UnwrapFailed("local"))?;
        SecretKey::from_slice(&plain).ok_or(KekError::Malformed)
    }
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
        keys.iter().map(|key| self.wrap_one(key)).collect()
    }

    async fn unwrap(&self, keys: &[&WrappedKey]) -> Result<Vec<SecretKey>, KekError> {
        keys.iter().map(|key| self.unwrap_one(key)).collect()
    }

    async fn status(&self) -> Result<KekStatus, KekError> {
        Ok(KekStatus {
            latest_version: LOCAL_KEK_VERSION,
            min_decryption_version: LOCAL_KEK_VERSION,
        })
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
