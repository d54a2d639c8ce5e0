//! Readiness: whether this server can serve a call that reveals or
//! stores data now. Ready only while the store answers a read, the key
//! provider's last probe reached it, and the audit log takes appends.
//! Answered on `GET /readyz` of the HTTP/JSON port and of the metrics
//! endpoint, for probes that speak no gRPC.
//!
//! It says which dependency is down by name only: probes are anonymous,
//! so no path, address or error text of a dependency is shown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::audit::AuditLog;
use crate::vault::Vault;

/// The dependencies a readiness check reads.
#[derive(Clone)]
pub struct Readiness {
    vault: Arc<Vault>,
    audit: Arc<AuditLog>,
    /// Set by the server's key provider probe; false until its first
    /// probe has reached the provider.
    kek_up: Arc<AtomicBool>,
}

/// The first dependency found down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    #[error("store unavailable")]
    Store,
    #[error("key provider unreachable")]
    KeyProvider,
    #[error("audit log unavailable")]
    AuditLog,
}

impl Readiness {
    pub fn new(vault: Arc<Vault>, audit: Arc<AuditLog>, kek_up: Arc<AtomicBool>) -> Self {
        Readiness {
            vault,
            audit,
            kek_up,
        }
    }

    /// Ok when every dependency is up; otherwise the first one down (the
    /// detail goes to the debug log).
    pub async fn check(&self) -> Result<(), NotReady> {
        if let Err(error) = self.audit.check_writable() {
            tracing::debug!(%error, "not ready: audit log");
            return Err(NotReady::AuditLog);
        }
        if !self.kek_up.load(Ordering::Acquire) {
            return Err(NotReady::KeyProvider);
        }
        // A point read of the one record every vault has.
        if let Err(error) = self.vault.store().system_key().await {
            tracing::debug!(%error, "not ready: store");
            return Err(NotReady::Store);
        }
        Ok(())
    }
}
