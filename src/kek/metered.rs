//! A key provider that counts its calls and failures by operation in
//! [`crate::metrics::METRICS`], around whichever provider is configured.
//! It forwards everything unchanged and records only operation names.

use std::sync::Arc;

use async_trait::async_trait;

use super::{KekError, KekKind, KekProvider, KekStatus, WrappedKey};
use crate::crypto::SecretKey;
use crate::metrics::METRICS;

pub struct Metered(pub Arc<dyn KekProvider>);

fn counted<T>(op: &'static str, result: Result<T, KekError>) -> Result<T, KekError> {
    METRICS.kek_call(op, result.is_ok());
    result
}

#[async_trait]
impl KekProvider for Metered {
    fn kind(&self) -> KekKind {
        self.0.kind()
    }

    fn is_secure(&self) -> bool {
        self.0.is_secure()
    }

    async fn wrap(&self, keys: &[&SecretKey]) -> Result<Vec<WrappedKey>, KekError> {
        counted("wrap", self.0.wrap(keys).await)
    }

    async fn unwrap(&self, keys: &[&WrappedKey]) -> Result<Vec<SecretKey>, KekError> {
        counted("unwrap", self.0.unwrap(keys).await)
    }

    fn remote_calls(&self) -> Option<u64> {
        self.0.remote_calls()
    }

    async fn status(&self) -> Result<KekStatus, KekError> {
        counted("status", self.0.status().await)
    }

    async fn rotate(&self) -> Result<u32, KekError> {
        counted("rotate", self.0.rotate().await)
    }

    async fn rewrap(&self, keys: &[&WrappedKey]) -> Result<Vec<WrappedKey>, KekError> {
        counted("rewrap", self.0.rewrap(keys).await)
    }
}
