//! `[kek]`: the key-encryption key provider, a local key file or a Vault /
//! OpenBao transit key with its login (`[kek.approle]`). It says where the
//! secrets are (a file, an environment variable) and never holds one: the
//! provider is `crate::kek`.

use std::path::PathBuf;

use serde::Deserialize;

/// The key-encryption key provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "provider", rename_all = "lowercase", deny_unknown_fields)]
pub enum KekConfig {
    /// A key file (32 bytes, or the versioned file `keys rotate` writes);
    /// `path` defaults to `<data_dir>/kek.key`.
    Local { path: Option<PathBuf> },
    /// A Vault / OpenBao transit key. Exactly one of `token_env` and
    /// `approle` says how to log in. Holds no secret itself: the token
    /// stays in the environment, the secret id in its file.
    Vault {
        address: String,
        #[serde(default = "default_transit_mount")]
        mount: String,
        key_name: String,
        ca_cert: Option<PathBuf>,
        /// Deadline of one provider operation, retries included.
        #[serde(default = "default_kek_timeout_ms")]
        timeout_ms: u64,
        /// Name of the environment variable that holds a Vault token.
        token_env: Option<String>,
        approle: Option<AppRoleConfig>,
    },
}

/// `[kek.approle]`: AppRole login; the secret id is read from a file at
/// every login, so it can be rotated without a restart.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppRoleConfig {
    pub role_id: String,
    pub secret_id_file: PathBuf,
    #[serde(default = "default_approle_mount")]
    pub mount: String,
}

impl Default for KekConfig {
    fn default() -> Self {
        KekConfig::Local { path: None }
    }
}

fn default_transit_mount() -> String {
    "transit".to_string()
}

fn default_approle_mount() -> String {
    "approle".to_string()
}

fn default_kek_timeout_ms() -> u64 {
    2_000
}
