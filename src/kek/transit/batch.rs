//! Batching: new subjects' DEKs wait for one task that wraps every key
//! queued in one transit call, and the request bodies of batch calls,
//! written straight into zeroizing buffers. Never logs a key.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use zeroize::Zeroizing;

use super::http::BatchItem;
use super::retry::Operation;
use super::{wrapped_from_ciphertext, VaultKek, MAX_BATCH};
use crate::crypto::SecretKey;
use crate::kek::{check_kind, KekError, KekKind, WrappedKey};

/// A key to wrap and where its caller waits. The key is a copy that
/// zeroizes when the job is dropped.
pub(super) struct WrapJob {
    pub(super) key: SecretKey,
    pub(super) reply: tokio::sync::oneshot::Sender<Result<WrappedKey, KekError>>,
}

/// The body of a decrypt or rewrap: each key's transit ciphertext.
pub(super) fn ciphertext_batch(keys: &[&WrappedKey]) -> Result<Zeroizing<Vec<u8>>, KekError> {
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
pub(super) fn plaintext_batch(keys: &[&SecretKey]) -> Zeroizing<Vec<u8>> {
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
    pub(super) async fn wrap_now(&self, keys: &[&SecretKey]) -> Result<Vec<WrappedKey>, KekError> {
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
    pub(super) async fn in_batches<K, T>(
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
pub(super) async fn wrap_in_batches(
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
