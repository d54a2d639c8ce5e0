//! The Vault KEK: a HashiCorp Vault (or API-compatible OpenBao) transit key,
//! reached with `vaultrs`. The KEK never leaves Vault: a DEK is wrapped by
//! transit `encrypt` and unwrapped by transit `decrypt`, several keys per
//! HTTP call (`batch_input`); `keys rotate` rotates the transit key and
//! moves every wrapped DEK to the new version with transit `rewrap`, which
//! never shows tokenvault a plaintext key.
//!
//! A wrapped key stores the transit ciphertext string (`vault:v3:...`) as
//! its provider ciphertext and the version from it as its KEK version.
//!
//! Every operation has one deadline, `kek.timeout_ms`: attempts that fail
//! for a passing reason (connection refused or reset, a timeout, 429, 5xx,
//! a sealed Vault) are retried with backoff until it expires, then the
//! caller gets [`KekError::Unavailable`]. A 403 makes an AppRole login
//! again once (the token may have expired while Vault was away).
//!
//! New subjects' DEKs are wrapped by one task that takes every key waiting
//! and sends them in one transit call (as the store's writer does with
//! writes), so concurrent calls for different new subjects share a call.
//!
//! Authentication: a token from an environment variable, or AppRole with
//! the secret id read from a file at every login (so the file can be
//! rotated). A background task renews the token at two thirds of its TTL,
//! and an AppRole logs in again when renewal is refused.
//!
//! It never logs or returns a key, a token or a secret id. Plaintext DEKs
//! cross the HTTP client's buffers, which this module cannot zeroize; TLS
//! to Vault (`kek.ca_cert`) protects them in transit.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use parking_lot::RwLock;
use tokio::task::JoinHandle;
use vaultrs::client::VaultClient;
use zeroize::Zeroizing;

use crate::crypto::SecretKey;
use crate::kek::{KekError, KekKind, KekProvider, KekStatus, WrappedKey};

mod auth;
mod batch;
mod http;
mod retire;
mod retry;

use auth::{build_client, initial_token, renew_forever};
use batch::{ciphertext_batch, wrap_in_batches, WrapJob};
use http::{BatchItem, BatchResponse, KeyInfoResponse, TransitCall};
use retry::{classify, unavailable_after_deadline, Failure, Operation};

/// The first retry waits this long; each next one twice as long.
const FIRST_BACKOFF: Duration = Duration::from_millis(25);
/// Most attempts of one operation, within its deadline.
const MAX_ATTEMPTS: u32 = 4;
/// Keys per transit batch call (Vault handles far more; this bounds one
/// request's size and time).
const MAX_BATCH: usize = 256;
/// A token whose TTL is unknown or 0 (a root token) is checked this often.
const IDLE_RENEW_CHECK: Duration = Duration::from_secs(300);

/// Settings of the Vault provider, from `[kek]` with `provider = "vault"`.
#[derive(Clone)]
pub struct VaultSettings {
    pub address: String,
    pub mount: String,
    pub key_name: String,
    pub ca_cert: Option<PathBuf>,
    pub timeout: Duration,
    pub auth: VaultAuth,
}

/// How tokenvault logs in to Vault.
#[derive(Clone)]
pub enum VaultAuth {
    /// A token read once at start-up from this environment variable.
    TokenEnv(String),
    /// AppRole: the role id, and a file holding the secret id.
    AppRole {
        mount: String,
        role_id: String,
        secret_id_file: PathBuf,
    },
}

impl std::fmt::Debug for VaultSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The role id is not a secret on its own, but nothing here needs it.
        f.debug_struct("VaultSettings")
            .field("address", &self.address)
            .field("mount", &self.mount)
            .field("key_name", &self.key_name)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Where the transit key stands (from a key read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransitKeyInfo {
    pub latest_version: u32,
    pub min_decryption_version: u32,
    /// Versions below this one were trimmed (deleted from Vault); 0 when
    /// none were.
    pub min_available_version: u32,
}

pub struct VaultKek {
    settings: VaultSettings,
    /// Replaced whole on every login; calls in flight keep the old one.
    client: RwLock<Arc<VaultClient>>,
    renewer: parking_lot::Mutex<Option<JoinHandle<()>>>,
    /// Keys waiting to be wrapped by the batching task.
    wrap_queue: tokio::sync::mpsc::UnboundedSender<WrapJob>,
    /// Transit encrypt/decrypt/rewrap calls made (each may carry many keys).
    batch_calls: std::sync::atomic::AtomicU64,
}

impl VaultKek {
    /// Connects and logs in; fails when Vault cannot be reached, the
    /// credentials are refused or the transit key cannot be read (a
    /// misconfiguration is better found at start-up than at the first call).
    pub async fn open(settings: VaultSettings) -> Result<Arc<Self>, KekError> {
        url::Url::parse(&settings.address)
            .map_err(|e| KekError::Setup(format!("kek.address is not a URL: {e}")))?;
        if let Some(ca) = &settings.ca_cert {
            if !ca.is_file() {
                return Err(KekError::Setup(format!(
                    "kek.ca_cert {} is not a readable file",
                    ca.display()
                )));
            }
        }
        let token = initial_token(&settings).await?;
        let client = build_client(&settings, &token)?;
        let (wrap_queue, wrap_jobs) = tokio::sync::mpsc::unbounded_channel();
        let kek = Arc::new(VaultKek {
            settings,
            client: RwLock::new(Arc::new(client)),
            renewer: parking_lot::Mutex::new(None),
            wrap_queue,
            batch_calls: std::sync::atomic::AtomicU64::new(0),
        });
        tokio::spawn(wrap_in_batches(Arc::downgrade(&kek), wrap_jobs));
        let named = |reason: &dyn std::fmt::Display| {
            format!(
                "cannot read transit key {}/{}: {reason}",
                kek.settings.mount, kek.settings.key_name
            )
        };
        kek.key_info().await.map_err(|e| match e {
            KekError::Unavailable(reason) => KekError::Unavailable(named(&reason)),
            KekError::Setup(reason) => KekError::Setup(named(&reason)),
            other => KekError::Setup(named(&other)),
        })?;
        let renewer = tokio::spawn(renew_forever(Arc::downgrade(&kek)));
        *kek.renewer.lock() = Some(renewer);
        Ok(kek)
    }

    fn client(&self) -> Arc<VaultClient> {
        Arc::clone(&self.client.read())
    }

    /// Reads the transit key's versions.
    pub async fn key_info(&self) -> Result<TransitKeyInfo, KekError> {
        let path = format!("{}/keys/{}", self.settings.mount, self.settings.key_name);
        let info: KeyInfoResponse = self
            .call(Operation::ReadKey, || TransitCall::get(&path))
            .await?;
        Ok(TransitKeyInfo {
            latest_version: info.latest_version,
            min_decryption_version: info.min_decryption_version,
            min_available_version: info.min_available_version,
        })
    }

    /// Runs one transit call under the operation's deadline, with retries
    /// for passing failures and one re-login on 403.
    async fn call<R, F>(&self, operation: Operation, make: F) -> Result<R, KekError>
    where
        R: serde::de::DeserializeOwned + Send + Sync,
        F: Fn() -> TransitCall<R>,
    {
        let deadline = tokio::time::Instant::now() + self.settings.timeout;
        let mut backoff = FIRST_BACKOFF;
        let mut logged_in_again = false;
        let mut last = KekError::Unavailable("vault did not answer in time".into());
        for attempt in 1..=MAX_ATTEMPTS {
            let client = self.client();
            let outcome = tokio::time::timeout_at(
                deadline,
                vaultrs::api::exec_with_result(client.as_ref(), make()),
            )
            .await;
            let error = match outcome {
                Ok(Ok(response)) => return Ok(response),
                Ok(Err(error)) => classify(operation, &error),
                Err(_) => return Err(unavailable_after_deadline(operation, &self.settings)),
            };
            match error {
                Failure::Retry(reason) => last = KekError::Unavailable(reason),
                Failure::Denied if !logged_in_again && self.is_approle() => {
                    logged_in_again = true;
                    if let Err(error) = self.login_again().await {
                        tracing::warn!(error = %error, "vault: login after 403 failed");
                    }
                    continue;
                }
                Failure::Denied => {
                    return Err(KekError::Unavailable(
                        "vault denied the request (403): check the token and the tokenvault policy"
                            .into(),
                    ))
                }
                Failure::Final(error) => return Err(error),
            }
            if attempt < MAX_ATTEMPTS {
                let wake = tokio::time::Instant::now() + backoff;
                if wake >= deadline {
                    break;
                }
                tokio::time::sleep_until(wake).await;
                backoff *= 2;
            }
        }
        tracing::warn!(operation = operation.name(), error = %last, "vault: giving up");
        Err(last)
    }

    /// One transit batch call whose body (`{"batch_input": [...]}`) holds
    /// `expected` items.
    async fn transit_batch(
        &self,
        operation: Operation,
        body: Zeroizing<Vec<u8>>,
        expected: usize,
    ) -> Result<Vec<BatchItem>, KekError> {
        let path = format!(
            "{}/{}/{}",
            self.settings.mount,
            operation.transit_verb(),
            self.settings.key_name
        );
        self.batch_calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let response: BatchResponse = self
            .call(operation, || TransitCall::post(&path, &body))
            .await?;
        if response.batch_results.len() != expected {
            return Err(KekError::Unavailable(format!(
                "vault answered {} results for {expected} keys",
                response.batch_results.len()
            )));
        }
        if let Some(failed) = response.batch_results.iter().find(|r| !r.error.is_empty()) {
            tracing::warn!(operation = operation.name(), error = %failed.error, "vault: a batch item failed");
            return Err(operation.item_failure());
        }
        Ok(response.batch_results)
    }
}

impl Drop for VaultKek {
    fn drop(&mut self) {
        if let Some(renewer) = self.renewer.lock().take() {
            renewer.abort();
        }
    }
}

#[async_trait]
impl KekProvider for VaultKek {
    fn kind(&self) -> KekKind {
        KekKind::Vault
    }

    fn is_secure(&self) -> bool {
        true
    }

    fn remote_calls(&self) -> Option<u64> {
        Some(self.batch_calls.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Queues the keys for the batching task, which wraps them together
    /// with whatever other calls are waiting.
    async fn wrap(&self, keys: &[&SecretKey]) -> Result<Vec<WrappedKey>, KekError> {
        let mut answers = Vec::with_capacity(keys.len());
        for key in keys {
            let (reply, answer) = tokio::sync::oneshot::channel();
            let job = WrapJob {
                key: (*key).clone(),
                reply,
            };
            self.wrap_queue
                .send(job)
                .map_err(|_| KekError::Unavailable("the wrapping task has stopped".into()))?;
            answers.push(answer);
        }
        let mut wrapped = Vec::with_capacity(keys.len());
        for answer in answers {
            wrapped.push(
                answer
                    .await
                    .map_err(|_| KekError::Unavailable("the wrapping task has stopped".into()))??,
            );
        }
        Ok(wrapped)
    }

    async fn unwrap(&self, keys: &[&WrappedKey]) -> Result<Vec<SecretKey>, KekError> {
        self.in_batches(Operation::Unwrap, keys, ciphertext_batch, |item| {
            let bytes = Zeroizing::new(
                BASE64
                    .decode(item.plaintext.as_bytes())
                    .map_err(|_| KekError::Malformed)?,
            );
            SecretKey::from_slice(&bytes).ok_or(KekError::Malformed)
        })
        .await
    }

    async fn rewrap(&self, keys: &[&WrappedKey]) -> Result<Vec<WrappedKey>, KekError> {
        self.in_batches(Operation::Rewrap, keys, ciphertext_batch, |item| {
            wrapped_from_ciphertext(&item.ciphertext)
        })
        .await
    }

    async fn rotate(&self) -> Result<u32, KekError> {
        let client = self.client();
        self.operator_call(
            Operation::Rotate,
            "rotating needs the tokenvault-rotate policy",
            vaultrs::transit::key::rotate(
                client.as_ref(),
                &self.settings.mount,
                &self.settings.key_name,
            ),
        )
        .await?;
        Ok(self.key_info().await?.latest_version)
    }

    async fn status(&self) -> Result<KekStatus, KekError> {
        let info = self.key_info().await?;
        Ok(KekStatus {
            latest_version: info.latest_version,
            min_decryption_version: info.min_decryption_version,
        })
    }
}

pub(super) fn wrapped_from_ciphertext(ciphertext: &str) -> Result<WrappedKey, KekError> {
    Ok(WrappedKey {
        kind: KekKind::Vault,
        kek_version: transit_version(ciphertext).ok_or(KekError::Malformed)?,
        ciphertext: ciphertext.as_bytes().to_vec(),
    })
}

/// The key version of a transit ciphertext `vault:v<N>:<base64>`.
pub fn transit_version(ciphertext: &str) -> Option<u32> {
    let rest = ciphertext.strip_prefix("vault:v")?;
    let (version, body) = rest.split_once(':')?;
    if body.is_empty() {
        return None;
    }
    version.parse().ok().filter(|&v| v > 0)
}

#[cfg(test)]
mod tests {
    use super::batch::plaintext_batch;
    use super::*;

    #[test]
    fn transit_versions_are_read_from_ciphertexts() {
        assert_eq!(transit_version("vault:v1:abcd"), Some(1));
        assert_eq!(transit_version("vault:v42:x=="), Some(42));
        for bad in [
            "",
            "vault:v0:ab",
            "vault:v:ab",
            "vault:v3:",
            "vault:vx:ab",
            "v1:ab",
        ] {
            assert_eq!(transit_version(bad), None, "{bad}");
        }
    }

    #[test]
    fn plaintext_batch_is_the_json_vault_expects() {
        let keys = [
            SecretKey::from_slice(&[0u8; 32]).expect("32 bytes"),
            SecretKey::from_slice(&[0xffu8; 32]).expect("32 bytes"),
        ];
        let body = plaintext_batch(&keys.iter().collect::<Vec<_>>());
        let parsed: serde_json::Value = serde_json::from_slice(&body).expect("valid JSON");
        let items = parsed["batch_input"].as_array().expect("array");
        assert_eq!(items.len(), 2);
        for (item, key) in items.iter().zip(&keys) {
            let decoded = BASE64
                .decode(item["plaintext"].as_str().expect("string"))
                .expect("base64");
            assert_eq!(decoded, key.expose());
        }
    }

    #[test]
    fn settings_debug_shows_no_credentials() {
        let settings = VaultSettings {
            address: "http://127.0.0.1:8200".into(),
            mount: "transit".into(),
            key_name: "tokenvault".into(),
            ca_cert: None,
            timeout: Duration::from_millis(2000),
            auth: VaultAuth::AppRole {
                mount: "approle".into(),
                role_id: "role-id-1234".into(),
                secret_id_file: "/run/secret-id".into(),
            },
        };
        let printed = format!("{settings:?}");
        assert!(!printed.contains("role-id-1234") && !printed.contains("secret-id"));
    }
}
