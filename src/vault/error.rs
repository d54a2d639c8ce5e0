//! Errors of the vault's service logic. Messages are safe to send to a
//! caller: they name items and rules, never values, subject ids or keys.
//! `api::status` maps them to gRPC codes, in one place.

use crate::crypto::CryptoError;
use crate::kek::KekError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// Bad input; the message says which item and why.
    #[error("{0}")]
    InvalidArgument(String),
    /// The key provider cannot be reached: retry later; nothing was stored.
    #[error("key provider unavailable, nothing was stored; retry later")]
    KeyProviderUnavailable(#[source] KekError),
    /// A stored key does not unwrap (wrong KEK, deleted key version).
    #[error("a stored key could not be unwrapped; check the KEK configuration")]
    KeyUnwrap(#[source] KekError),
    /// A key-management operation (KEK rotation) was refused: the local
    /// provider cannot rotate, or Vault denied it. Goes to the operator.
    #[error("{0}")]
    KeyManagement(String),
    /// The erasure ledger cannot be written or read: nothing was erased.
    #[error("erasure ledger unavailable, nothing was erased; retry later")]
    LedgerUnavailable(String),
    /// At start-up: the erasure ledger is missing, cut, corrupt or not the
    /// one the store expects, so the vault does not open. The message
    /// names the ledger and why (no subject, value or key).
    #[error("{0}")]
    LedgerRefused(String),
    /// The storage engine failed (I/O, disk full).
    #[error("storage unavailable, nothing was stored; retry later")]
    StorageUnavailable(#[source] StoreError),
    /// The call would pass a new-value limit (`policy::quota`); nothing
    /// was stored. The alert has been raised; the caller audits it.
    #[error("new value limit of {} per {} s reached for this {}; retry later", .0.limit, .0.window_seconds, .0.scope.name())]
    NewValuesLimited(crate::policy::quota::QuotaAlert),
    /// Anything that should not happen: corrupt records, a bug. The
    /// detail goes to the log, never to the caller.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<KekError> for VaultError {
    fn from(error: KekError) -> Self {
        match error {
            KekError::Unavailable(_) => VaultError::KeyProviderUnavailable(error),
            KekError::UnwrapFailed(_) | KekError::WrongProvider { .. } => {
                VaultError::KeyUnwrap(error)
            }
            // A provider that refuses for a setup reason (a deleted transit
            // key, a revoked policy) cannot serve: retryable once fixed.
            KekError::Setup(_) => VaultError::KeyProviderUnavailable(error),
            KekError::Unsupported(message) => VaultError::KeyManagement(message.to_string()),
            other => VaultError::Internal(other.to_string()),
        }
    }
}

impl From<StoreError> for VaultError {
    fn from(error: StoreError) -> Self {
        match error {
            // A forget on another replica won the race: nothing was
            // stored, and a retry creates the subject's new key.
            StoreError::Engine(_) | StoreError::DiskFull | StoreError::SubjectErased => {
                VaultError::StorageUnavailable(error)
            }
            StoreError::Unsupported(message) => VaultError::KeyManagement(message.to_string()),
            other => VaultError::Internal(other.to_string()),
        }
    }
}

impl From<CryptoError> for VaultError {
    fn from(error: CryptoError) -> Self {
        VaultError::Internal(error.to_string())
    }
}
