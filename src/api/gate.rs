//! The gate every `TokenVault` call passes before its handler, whichever
//! protocol it came by (the gRPC interceptor, the HTTP/JSON handlers):
//! its credentials name a principal (`api::auth`), a refusal is counted
//! for the windowed audit of refused credentials (`api::denials`), and the
//! principal is put on the request for the service.
//!
//! It owns no policy: what the principal may do is the service's to check.

use std::sync::Arc;

use tonic::{Request, Status};

use super::auth::{Access, Denied};
use super::denials::DeniedCredentials;
use crate::metrics::CallRecord;

/// The RPC a request is for, by its snake_case name, put on the request
/// before the gate (which, as a gRPC interceptor, does not see the path).
#[derive(Debug, Clone, Copy)]
pub struct CalledRpc(pub &'static str);

/// Credentials in, principal out, for every protocol.
#[derive(Clone)]
pub struct Gate {
    access: Arc<Access>,
    denials: Arc<DeniedCredentials>,
}

impl Gate {
    pub fn new(access: Arc<Access>, denials: Arc<DeniedCredentials>) -> Self {
        Gate { access, denials }
    }

    /// Puts the caller's principal on `request`, or refuses it
    /// (UNAUTHENTICATED) and counts the refusal.
    pub fn admit<T>(&self, request: &mut Request<T>) -> Result<(), Status> {
        let principal = self.access.check(request).map_err(|denied| {
            count_unauthenticated(&self.denials, request, &denied);
            Status::from(denied)
        })?;
        if let Some(call) = request.extensions().get::<CallRecord>() {
            call.set_principal(&principal.name);
        }
        request.extensions_mut().insert(principal);
        Ok(())
    }
}

/// Counts a call refused for its credentials, by its peer's address (and
/// principal, when only its actor token was refused): the counts are
/// audited (and logged) once a window (`api::denials`), so that a flood of
/// bad keys costs a few records, not one per call.
fn count_unauthenticated<T>(denials: &DeniedCredentials, request: &Request<T>, denied: &Denied) {
    let rpc = request
        .extensions()
        .get::<CalledRpc>()
        .map_or("other", |called| called.0);
    let source = request.remote_addr().map(|addr| addr.ip());
    denials.record(
        source,
        denied.principal.as_deref(),
        rpc,
        denied.status.message(),
    );
}
