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
use rustify::endpoint::Endpoint;
use rustify::enums::{RequestMethod, RequestType, ResponseType};
use serde::Deserialize;
use tokio::task::JoinHandle;
use vaultrs::client::{Client as _, VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;
use zeroize::{Zeroize, Zeroizing};

use super::{check_kind, KekError, KekKind, KekProvider, KekStatus, WrappedKey};
use crate::crypto::SecretKey;

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

/// A key to wrap and where its caller waits. The key is a copy that
/// zeroizes when the job is dropped.
struct WrapJob {
    key: SecretKey,
    reply: tokio::sync::oneshot::Sender<Result<WrappedKey, KekError>>,
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

    fn is_approle(&self) -> bool {
        matches!(self.settings.auth, VaultAuth::AppRole { .. })
    }

    /// Logs in with AppRole and swaps the client; returns the new token's
    /// TTL.
    async fn login_again(&self) -> Result<Duration, KekError> {
        let (token, ttl) = approle_login(&self.settings).await?;
        *self.client.write() = Arc::new(build_client(&self.settings, &token)?);
        tracing::info!(ttl_seconds = ttl.as_secs(), "vault: logged in with AppRole");
        Ok(ttl)
    }

    /// Renews the current token; returns its new TTL, or an error when the
    /// token cannot be renewed (then AppRole logs in again).
    async fn renew_token(&self) -> Result<Duration, KekError> {
        let client = self.client();
        let lookup = tokio::time::timeout(self.settings.timeout, client.lookup())
            .await
            .map_err(|_| KekError::Unavailable("token lookup timed out".into()))?
            .map_err(|e| KekError::Unavailable(describe(&e)))?;
        if lookup.ttl == 0 {
            // A root or periodic-less token without expiry: nothing to do.
            return Ok(Duration::ZERO);
        }
        if !lookup.renewable {
            return Err(KekError::Unavailable(
                "the vault token is not renewable".into(),
            ));
        }
        let auth = tokio::time::timeout(self.settings.timeout, client.renew(None))
            .await
            .map_err(|_| KekError::Unavailable("token renewal timed out".into()))?
            .map_err(|e| KekError::Unavailable(describe(&e)))?;
        Ok(Duration::from_secs(auth.lease_duration))
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
        // An operator's action, not the request path: one attempt.
        let client = self.client();
        tokio::time::timeout(
            self.settings.timeout,
            vaultrs::transit::key::rotate(
                client.as_ref(),
                &self.settings.mount,
                &self.settings.key_name,
            ),
        )
        .await
        .map_err(|_| unavailable_after_deadline(Operation::Rotate, &self.settings))?
        .map_err(|e| match classify(Operation::Rotate, &e) {
            Failure::Final(error) => error,
            Failure::Denied => KekError::Setup(
                "vault denied the key rotation (403): rotating needs the tokenvault-rotate policy"
                    .into(),
            ),
            Failure::Retry(reason) => KekError::Unavailable(reason),
        })?;
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

/// The body of a decrypt or rewrap: each key's transit ciphertext.
fn ciphertext_batch(keys: &[&WrappedKey]) -> Result<Zeroizing<Vec<u8>>, KekError> {
    let items = keys
        .iter()
        .map(|key| {
            check_kind(key, KekKind::Vault)?;
            let ciphertext =
                std::str::from_utf8(&key.ciphertext).map_err(|_| KekError::Malformed)?;
            Ok(serde_json::json!({ "ciphertext": ciphertext }))
        })
        .collect::<Result<Vec<_>, KekError>>()?;
    serde_json::to_vec(&serde_json::json!({ "batch_input": items }))
        .map(Zeroizing::new)
        .map_err(|e| KekError::Setup(format!("cannot encode a vault request: {e}")))
}

/// The body of an encrypt: each key in base64, written straight into a
/// zeroizing buffer (base64 needs no JSON escaping), so no copy of a
/// plaintext key is left in freed memory.
fn plaintext_batch(keys: &[&SecretKey]) -> Zeroizing<Vec<u8>> {
    let mut body = Zeroizing::new(Vec::with_capacity(20 + keys.len() * 60));
    body.extend_from_slice(b"{\"batch_input\":[");
    for (i, key) in keys.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(b"{\"plaintext\":\"");
        let encoded = Zeroizing::new(BASE64.encode(key.expose()));
        body.extend_from_slice(encoded.as_bytes());
        body.extend_from_slice(b"\"}");
    }
    body.extend_from_slice(b"]}");
    body
}

impl VaultKek {
    /// Wraps keys now, in calls of at most [`MAX_BATCH`].
    async fn wrap_now(&self, keys: &[&SecretKey]) -> Result<Vec<WrappedKey>, KekError> {
        self.in_batches(
            Operation::Wrap,
            keys,
            |chunk| Ok(plaintext_batch(chunk)),
            |item| wrapped_from_ciphertext(&item.ciphertext),
        )
        .await
    }

    /// Runs `operation` over `keys` in transit calls of at most
    /// [`MAX_BATCH`]: `body` writes a call's request, `read` turns each
    /// answer item into the result, in order.
    async fn in_batches<K, T>(
        &self,
        operation: Operation,
        keys: &[K],
        body: impl Fn(&[K]) -> Result<Zeroizing<Vec<u8>>, KekError>,
        read: impl Fn(&BatchItem) -> Result<T, KekError>,
    ) -> Result<Vec<T>, KekError> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(MAX_BATCH) {
            let request = body(chunk)?;
            for item in self.transit_batch(operation, request, chunk.len()).await? {
                out.push(read(&item)?);
            }
        }
        Ok(out)
    }
}

/// The batching task: takes every key waiting (up to [`MAX_BATCH`]),
/// wraps them in one call, answers each caller. While a call is out, new
/// keys queue up for the next one. Ends when the provider is dropped.
async fn wrap_in_batches(
    kek: std::sync::Weak<VaultKek>,
    mut jobs: tokio::sync::mpsc::UnboundedReceiver<WrapJob>,
) {
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let Some(kek) = kek.upgrade() else { return };
        let keys: Vec<&SecretKey> = batch.iter().map(|job| &job.key).collect();
        match kek.wrap_now(&keys).await {
            Ok(wrapped) => {
                for (job, key) in batch.into_iter().zip(wrapped) {
                    let _ = job.reply.send(Ok(key));
                }
            }
            Err(error) => {
                for job in batch {
                    let _ = job.reply.send(Err(error.clone()));
                }
            }
        }
    }
}

/// What a call was, for messages and for how its failures read.
#[derive(Clone, Copy, Debug)]
enum Operation {
    Wrap,
    Unwrap,
    Rewrap,
    ReadKey,
    Rotate,
}

impl Operation {
    fn name(self) -> &'static str {
        match self {
            Operation::Wrap => "encrypt",
            Operation::Unwrap => "decrypt",
            Operation::Rewrap => "rewrap",
            Operation::ReadKey => "read key",
            Operation::Rotate => "rotate key",
        }
    }

    fn transit_verb(self) -> &'static str {
        match self {
            Operation::Wrap => "encrypt",
            Operation::Unwrap => "decrypt",
            Operation::Rewrap => "rewrap",
            Operation::ReadKey | Operation::Rotate => "keys",
        }
    }

    /// The error of a 400 / failed batch item: for decrypt and rewrap, the
    /// stored key does not open (a deleted or trimmed key version, a
    /// deleted key, tampering); otherwise a setup problem.
    fn item_failure(self) -> KekError {
        match self {
            Operation::Unwrap | Operation::Rewrap => KekError::UnwrapFailed("vault"),
            _ => KekError::Setup(format!(
                "vault refused transit {}: check kek.mount, kek.key_name and that the key exists",
                self.name()
            )),
        }
    }
}

enum Failure {
    /// Passing: retry within the deadline.
    Retry(String),
    /// 403: permission denied or an expired token.
    Denied,
    /// Retrying cannot help.
    Final(KekError),
}

fn classify(operation: Operation, error: &ClientError) -> Failure {
    match error {
        ClientError::APIError { code, .. } => match code {
            403 => Failure::Denied,
            400 | 404 => Failure::Final(operation.item_failure()),
            429 | 500..=599 => Failure::Retry(format!("vault answered {code}")),
            other => Failure::Final(KekError::Unavailable(format!("vault answered {other}"))),
        },
        ClientError::ResponseDataEmptyError | ClientError::ResponseEmptyError => {
            Failure::Final(KekError::Unavailable("vault answered without data".into()))
        }
        ClientError::RestClientError { source } => match source {
            rustify::errors::ClientError::ServerResponseError { code, .. } => match code {
                403 => Failure::Denied,
                400 | 404 => Failure::Final(operation.item_failure()),
                _ => Failure::Retry(format!("vault answered {code}")),
            },
            rustify::errors::ClientError::ResponseParseError { .. } => Failure::Final(
                KekError::Unavailable("vault's answer could not be read".into()),
            ),
            other => Failure::Retry(format!("vault cannot be reached: {}", error_chain(other))),
        },
        other => Failure::Retry(describe(other)),
    }
}

fn unavailable_after_deadline(operation: Operation, settings: &VaultSettings) -> KekError {
    tracing::warn!(
        operation = operation.name(),
        timeout_ms = settings.timeout.as_millis() as u64,
        "vault: no answer within kek.timeout_ms"
    );
    KekError::Unavailable(format!(
        "vault did not answer {} within {} ms",
        operation.name(),
        settings.timeout.as_millis()
    ))
}

/// A vaultrs error in words that hold no secret (vaultrs errors carry
/// status codes and Vault's messages, never request bodies).
fn describe(error: &ClientError) -> String {
    match error {
        ClientError::APIError { code, errors } => {
            format!("vault answered {code}: {}", errors.join("; "))
        }
        other => other.to_string(),
    }
}

/// An error and its causes in one line (transport errors hide the useful
/// part, such as a certificate problem, in their sources).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn wrapped_from_ciphertext(ciphertext: &str) -> Result<WrappedKey, KekError> {
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

/// The token to start with: from the environment, or an AppRole login.
async fn initial_token(settings: &VaultSettings) -> Result<Zeroizing<String>, KekError> {
    match &settings.auth {
        VaultAuth::TokenEnv(variable) => {
            let token = std::env::var(variable).map_err(|_| {
                KekError::Setup(format!(
                    "kek.token_env names {variable}, which is not set in the environment"
                ))
            })?;
            if token.trim().is_empty() {
                return Err(KekError::Setup(format!("{variable} is empty")));
            }
            Ok(Zeroizing::new(token.trim().to_string()))
        }
        VaultAuth::AppRole { .. } => Ok(approle_login(settings).await?.0),
    }
}

async fn approle_login(
    settings: &VaultSettings,
) -> Result<(Zeroizing<String>, Duration), KekError> {
    let VaultAuth::AppRole {
        mount,
        role_id,
        secret_id_file,
    } = &settings.auth
    else {
        return Err(KekError::Setup(
            "AppRole login without AppRole settings".into(),
        ));
    };
    let secret_id = Zeroizing::new(
        std::fs::read_to_string(secret_id_file)
            .map_err(|e| {
                KekError::Setup(format!(
                    "cannot read kek.approle.secret_id_file {}: {e}",
                    secret_id_file.display()
                ))
            })?
            .trim()
            .to_string(),
    );
    let anonymous = build_client(settings, &Zeroizing::new(String::new()))?;
    let auth = tokio::time::timeout(
        settings.timeout,
        vaultrs::auth::approle::login(&anonymous, mount, role_id, &secret_id),
    )
    .await
    .map_err(|_| KekError::Unavailable("vault AppRole login timed out".into()))?
    .map_err(|e| match &e {
        ClientError::APIError { code: 400, .. } | ClientError::APIError { code: 403, .. } => {
            KekError::Setup(
                "vault refused the AppRole login: check role_id and the secret id".into(),
            )
        }
        other => KekError::Unavailable(format!("vault AppRole login: {}", describe(other))),
    })?;
    let mut client_token = auth.client_token;
    let token = Zeroizing::new(client_token.clone());
    client_token.zeroize();
    Ok((token, Duration::from_secs(auth.lease_duration)))
}

fn build_client(
    settings: &VaultSettings,
    token: &Zeroizing<String>,
) -> Result<VaultClient, KekError> {
    // Every setting is given explicitly: vaultrs would otherwise read
    // VAULT_CACERT, VAULT_SKIP_VERIFY and others from the environment.
    let ca_certs = settings
        .ca_cert
        .iter()
        .map(|path| path.display().to_string())
        .collect();
    let client_settings = VaultClientSettingsBuilder::default()
        .address(&settings.address)
        .token(token.as_str())
        .timeout(Some(settings.timeout))
        .ca_certs(ca_certs)
        .identity(None)
        .verify(true)
        .namespace(None)
        .build()
        .map_err(|e| KekError::Setup(format!("vault client settings: {e}")))?;
    VaultClient::new(client_settings).map_err(|e| KekError::Setup(format!("vault client: {e}")))
}

/// Keeps the token alive: renews at two thirds of its TTL; an AppRole logs
/// in again when renewal fails. Ends when the provider is dropped.
async fn renew_forever(kek: std::sync::Weak<VaultKek>) {
    let mut wait = first_renew_wait(&kek).await;
    loop {
        tokio::time::sleep(wait).await;
        let Some(kek) = kek.upgrade() else { return };
        let renewed = match kek.renew_token().await {
            Ok(ttl) => Ok(ttl),
            Err(error) if kek.is_approle() => {
                tracing::info!(error = %error, "vault: token renewal failed; logging in again");
                kek.login_again().await
            }
            Err(error) => Err(error),
        };
        wait = match renewed {
            Ok(ttl) if ttl.is_zero() => IDLE_RENEW_CHECK,
            Ok(ttl) => (ttl * 2 / 3).max(Duration::from_secs(1)),
            Err(error) => {
                tracing::warn!(error = %error, "vault: cannot renew or log in; retrying in 5 s");
                Duration::from_secs(5)
            }
        };
    }
}

async fn first_renew_wait(kek: &std::sync::Weak<VaultKek>) -> Duration {
    let Some(kek) = kek.upgrade() else {
        return IDLE_RENEW_CHECK;
    };
    let client = kek.client();
    match tokio::time::timeout(kek.settings.timeout, client.lookup()).await {
        Ok(Ok(lookup)) if lookup.ttl > 0 => {
            (Duration::from_secs(lookup.ttl) * 2 / 3).max(Duration::from_secs(1))
        }
        _ => IDLE_RENEW_CHECK,
    }
}

/// One transit HTTP call, for `vaultrs::api::exec_with_result` (which adds
/// the token, the API version and Vault's error parsing). vaultrs has no
/// batch endpoints, so these are written here.
struct TransitCall<R> {
    path: String,
    method: RequestMethod,
    body: Option<Zeroizing<Vec<u8>>>,
    response: std::marker::PhantomData<fn() -> R>,
}

impl<R> TransitCall<R> {
    fn get(path: &str) -> Self {
        TransitCall {
            path: path.to_string(),
            method: RequestMethod::GET,
            body: None,
            response: std::marker::PhantomData,
        }
    }

    fn post(path: &str, body: &Zeroizing<Vec<u8>>) -> Self {
        TransitCall {
            path: path.to_string(),
            method: RequestMethod::POST,
            body: Some(body.clone()),
            response: std::marker::PhantomData,
        }
    }
}

#[async_trait]
impl<R: serde::de::DeserializeOwned + Send + Sync> Endpoint for TransitCall<R> {
    type Response = R;
    const REQUEST_BODY_TYPE: RequestType = RequestType::JSON;
    const RESPONSE_BODY_TYPE: ResponseType = ResponseType::JSON;

    fn path(&self) -> String {
        self.path.clone()
    }

    fn method(&self) -> RequestMethod {
        self.method.clone()
    }

    fn body(&self) -> Result<Option<Vec<u8>>, rustify::errors::ClientError> {
        Ok(self.body.as_ref().map(|body| body.to_vec()))
    }
}

#[derive(Deserialize)]
struct KeyInfoResponse {
    latest_version: u32,
    #[serde(default)]
    min_decryption_version: u32,
}

#[derive(Deserialize)]
struct BatchResponse {
    batch_results: Vec<BatchItem>,
}

#[derive(Deserialize)]
struct BatchItem {
    #[serde(default)]
    ciphertext: String,
    /// Base64 of an unwrapped key: zeroized on drop.
    #[serde(default)]
    plaintext: String,
    #[serde(default)]
    error: String,
}

impl Drop for BatchItem {
    fn drop(&mut self) {
        self.plaintext.zeroize();
    }
}

#[cfg(test)]
mod tests {
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
