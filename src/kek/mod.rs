//! Key-encryption keys (KEKs): the root of the key hierarchy. A provider
//! wraps and unwraps subject data keys (DEKs) and the system key.
//!
//! Two providers: `local` (a 32-byte key file, for development and the
//! embedded default; it says so through [`KekProvider::is_secure`]) and
//! `vault` (HashiCorp Vault / OpenBao transit, where the KEK never leaves
//! Vault). The rest of the crate sees only the trait; `open_provider` is the
//! one place that turns configuration into a provider.
//!
//! A provider never logs or returns key bytes in an error.

pub mod local;
mod metered;
pub mod transit;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::config::KekConfig;
use crate::crypto::SecretKey;

/// Which provider wrapped a key. Stored with every wrapped key so that a
/// store can be read after the provider changes, and so that the wrong
/// provider is named instead of failing as "corrupt".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KekKind {
    Local = 1,
    Vault = 2,
}

impl KekKind {
    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(KekKind::Local),
            2 => Some(KekKind::Vault),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KekKind::Local => "local",
            KekKind::Vault => "vault",
        }
    }
}

/// A key wrapped by a KEK, self-describing:
///
/// ```text
/// byte 0     1          2..6                 6..
///      +-----+----------+--------------------+----------------------+
///      | v=1 | provider | KEK version (u32BE)| provider ciphertext  |
///      +-----+----------+--------------------+----------------------+
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedKey {
    pub kind: KekKind,
    pub kek_version: u32,
    pub ciphertext: Vec<u8>,
}

const WRAPPED_KEY_VERSION: u8 = 1;
const WRAPPED_HEADER_LEN: usize = 6;

impl WrappedKey {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(WRAPPED_HEADER_LEN + self.ciphertext.len());
        out.push(WRAPPED_KEY_VERSION);
        out.push(self.kind as u8);
        out.extend_from_slice(&self.kek_version.to_be_bytes());
        out.extend_from_slice(&self.ciphertext);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, KekError> {
        if bytes.len() < WRAPPED_HEADER_LEN || bytes[0] != WRAPPED_KEY_VERSION {
            return Err(KekError::Malformed);
        }
        let kind = KekKind::from_byte(bytes[1]).ok_or(KekError::Malformed)?;
        let kek_version = u32::from_be_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]);
        Ok(WrappedKey {
            kind,
            kek_version,
            ciphertext: bytes[WRAPPED_HEADER_LEN..].to_vec(),
        })
    }
}

impl std::fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WrappedKey({} v{})", self.kind.name(), self.kek_version)
    }
}

/// Errors of KEK providers. `Unavailable` is the one a caller may retry.
/// Clone, so that one failed batch call can answer each of its callers.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum KekError {
    /// The provider cannot be reached or refused for a passing reason.
    #[error("key provider unavailable: {0}")]
    Unavailable(String),
    /// A wrapped key did not open under this KEK (wrong key file, a
    /// version below the floor or trimmed, or tampering).
    #[error("a stored key could not be unwrapped by the {0} key provider")]
    UnwrapFailed(&'static str),
    /// A key was wrapped by another provider than the configured one.
    #[error(
        "a stored key was wrapped by the {found} key provider, but {configured} is configured"
    )]
    WrongProvider {
        found: &'static str,
        configured: &'static str,
    },
    /// A stored wrapped key is not in a known layout.
    #[error("a stored wrapped key is malformed")]
    Malformed,
    /// The provider's own configuration or key file is unusable.
    #[error("key provider setup: {0}")]
    Setup(String),
    /// The operation needs another provider or a key file.
    #[error("{0}")]
    Unsupported(&'static str),
}

/// Where the KEK stands: its newest version (what new wraps use) and the
/// oldest version it still unwraps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KekStatus {
    pub latest_version: u32,
    pub min_decryption_version: u32,
}

#[async_trait]
pub trait KekProvider: Send + Sync + 'static {
    /// Which provider this is (stored with every wrapped key).
    fn kind(&self) -> KekKind;

    /// False for providers that hold the KEK in this process (the local key
    /// file): the server warns at start-up when it runs on one.
    fn is_secure(&self) -> bool;

    /// Wraps each key, in order. One call to the provider for the batch.
    async fn wrap(&self, keys: &[&SecretKey]) -> Result<Vec<WrappedKey>, KekError>;

    /// Unwraps each key, in order. One call to the provider for the batch.
    async fn unwrap(&self, keys: &[&WrappedKey]) -> Result<Vec<SecretKey>, KekError>;

    /// Calls made to a remote key service since start (a batch call is
    /// one); None for a provider that calls nothing remote.
    fn remote_calls(&self) -> Option<u64> {
        None
    }

    /// The KEK's versions; also the health probe of the provider.
    async fn status(&self) -> Result<KekStatus, KekError>;

    /// Makes a new KEK version the one new wraps use; returns it.
    async fn rotate(&self) -> Result<u32, KekError> {
        Err(KekError::Unsupported(
            "this key provider has no versions to rotate",
        ))
    }

    /// Re-wraps keys under the newest KEK version without ever showing
    /// this process the keys.
    async fn rewrap(&self, _keys: &[&WrappedKey]) -> Result<Vec<WrappedKey>, KekError> {
        Err(KekError::Unsupported(
            "this key provider has no versions to rotate",
        ))
    }
}

/// Builds the configured provider: the one place that names a vendor.
/// `dev` lets the local provider create its key file when missing. Its
/// calls and failures are counted for the metrics endpoint.
pub async fn open_provider(
    config: &KekConfig,
    data_dir: &Path,
    dev: bool,
) -> Result<Arc<dyn KekProvider>, KekError> {
    let provider = open_configured(config, data_dir, dev).await?;
    Ok(Arc::new(metered::Metered(provider)))
}

/// Where the local KEK's key file is: the configured path, or
/// `<data_dir>/kek.key`.
pub fn local_key_path(configured: Option<&Path>, data_dir: &Path) -> std::path::PathBuf {
    configured.map_or_else(|| data_dir.join("kek.key"), Path::to_path_buf)
}

async fn open_configured(
    config: &KekConfig,
    data_dir: &Path,
    dev: bool,
) -> Result<Arc<dyn KekProvider>, KekError> {
    match config {
        KekConfig::Local { path } => Ok(Arc::new(local::LocalKek::open(
            &local_key_path(path.as_deref(), data_dir),
            dev,
        )?)),
        KekConfig::Vault { .. } => Ok(transit::VaultKek::open(vault_settings(config)?).await?),
    }
}

/// The Vault provider's settings from `[kek]`; a setup error for the local
/// provider or a login that is not exactly one of token and AppRole.
pub fn vault_settings(config: &KekConfig) -> Result<transit::VaultSettings, KekError> {
    let KekConfig::Vault {
        address,
        mount,
        key_name,
        ca_cert,
        timeout_ms,
        token_env,
        approle,
    } = config
    else {
        return Err(KekError::Setup(
            "kek.provider is \"local\": there are no Vault settings".into(),
        ));
    };
    let auth = match (token_env, approle) {
        (Some(variable), None) => transit::VaultAuth::TokenEnv(variable.clone()),
        (None, Some(approle)) => transit::VaultAuth::AppRole {
            mount: approle.mount.clone(),
            role_id: approle.role_id.clone(),
            secret_id_file: approle.secret_id_file.clone(),
        },
        _ => {
            return Err(KekError::Setup(
                "kek: give exactly one of token_env or [kek.approle]".into(),
            ))
        }
    };
    Ok(transit::VaultSettings {
        address: address.clone(),
        mount: mount.clone(),
        key_name: key_name.clone(),
        ca_cert: ca_cert.clone(),
        timeout: Duration::from_millis(*timeout_ms),
        auth,
    })
}

/// Rejects a wrapped key of another provider with a clear error.
pub(crate) fn check_kind(key: &WrappedKey, configured: KekKind) -> Result<(), KekError> {
    if key.kind == configured {
        Ok(())
    } else {
        Err(KekError::WrongProvider {
            found: key.kind.name(),
            configured: configured.name(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_key_round_trips_and_rejects_garbage() {
        let key = WrappedKey {
            kind: KekKind::Vault,
            kek_version: 7,
            ciphertext: b"vault:v7:abc".to_vec(),
        };
        assert_eq!(WrappedKey::decode(&key.encode()).expect("decode"), key);
        assert!(matches!(WrappedKey::decode(b""), Err(KekError::Malformed)));
        assert!(matches!(
            WrappedKey::decode(&[2, 1, 0, 0, 0, 1]),
            Err(KekError::Malformed)
        ));
        assert!(matches!(
            WrappedKey::decode(&[1, 9, 0, 0, 0, 1]),
            Err(KekError::Malformed)
        ));
    }
}
