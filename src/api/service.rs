//! `TokenVault` over the vault: converts messages, checks the caller's
//! policy, maps errors. RPCs that later work builds answer UNIMPLEMENTED.
//!
//! Audit: a denied call and every call that reveals data append a record
//! to the audit log; a reveal waits for its record and returns nothing if
//! it cannot be written (UNAVAILABLE).

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::status::{audit_status, to_status};
use crate::audit::{AuditEvent, AuditLog, Outcome};
use crate::crypto::SubjectHash;
use crate::pb;
use crate::policy::{Principal, Rpc};
use crate::vault::{self, TokenMode, TokenStatus, Vault};

pub struct TokenVaultService {
    vault: Arc<Vault>,
    audit: Arc<AuditLog>,
}

impl TokenVaultService {
    pub fn new(vault: Arc<Vault>, audit: Arc<AuditLog>) -> Self {
        TokenVaultService { vault, audit }
    }

    /// The caller if its policy allows `rpc`. A denial is audited; if even
    /// that record cannot be written the call is still denied (it reveals
    /// nothing) and the failure is logged.
    async fn authorize<T>(&self, request: &Request<T>, rpc: Rpc) -> Result<Principal, Status> {
        let principal = principal(request)?;
        if let Err(denied) = principal.require(rpc) {
            let event = AuditEvent {
                principal: principal.name.to_string(),
                rpc: rpc.name(),
                outcome: Outcome::Denied {
                    code: "permission_denied",
                    reason: denied.message().to_string(),
                },
                ..AuditEvent::default()
            };
            if let Err(error) = self.audit.append(event).await {
                tracing::error!(%error, rpc = rpc.name(), "denied call not audited");
            }
            return Err(denied);
        }
        Ok(principal)
    }

    /// Appends the record of a reveal; UNAVAILABLE if it cannot be written,
    /// and then the caller must return no value.
    async fn audit_reveal(&self, event: AuditEvent) -> Result<(), Status> {
        self.audit
            .append(event)
            .await
            .map(drop)
            .map_err(audit_status)
    }
}

/// The principal the auth interceptor put on the request. Its absence is a
/// wiring bug, and then nothing is served.
fn principal<T>(request: &Request<T>) -> Result<Principal, Status> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no authenticated principal"))
}

/// Each subject once, in a stable order.
fn distinct_subjects(subjects: impl Iterator<Item = SubjectHash>) -> Vec<SubjectHash> {
    let mut subjects: Vec<SubjectHash> = subjects.collect();
    subjects.sort_unstable();
    subjects.dedup();
    subjects
}

fn token_mode(raw: i32, index: usize) -> Result<TokenMode, Status> {
    match pb::TokenMode::try_from(raw) {
        Ok(pb::TokenMode::Unspecified | pb::TokenMode::Deterministic) => {
            Ok(TokenMode::Deterministic)
        }
        Ok(pb::TokenMode::Random) => Ok(TokenMode::Random),
        Err(_) => Err(Status::invalid_argument(format!(
            "items[{index}]: unknown mode {raw}"
        ))),
    }
}

fn status_of(status: TokenStatus) -> pb::TokenStatus {
    match status {
        TokenStatus::Found => pb::TokenStatus::Found,
        TokenStatus::NotFound => pb::TokenStatus::NotFound,
        TokenStatus::Erased => pb::TokenStatus::Erased,
        TokenStatus::Expired => pb::TokenStatus::Expired,
    }
}

/// A byte offset or count for the wire; texts are far below 4 GiB
/// (`limits.max_text_bytes`), so overflow is a bug.
fn offset(value: usize) -> Result<u32, Status> {
    u32::try_from(value).map_err(|_| Status::internal("internal error; see the server log"))
}

type ExportStream = Pin<Box<dyn Stream<Item = Result<pb::ExportSubjectResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::token_vault_server::TokenVault for TokenVaultService {
    async fn tokenize(
        &self,
        request: Request<pb::TokenizeRequest>,
    ) -> Result<Response<pb::TokenizeResponse>, Status> {
        self.authorize(&request, Rpc::Tokenize).await?;
        let request = request.into_inner();
        let items = request
            .items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                Ok(vault::TokenizeItem {
                    mode: token_mode(item.mode, i)?,
                    value: item.value,
                    format: item.format,
                    ttl_seconds: item.ttl_seconds,
                })
            })
            .collect::<Result<Vec<_>, Status>>()?;
        let tokens = self
            .vault
            .tokenize(&request.subject_id, &items)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::TokenizeResponse { tokens }))
    }

    async fn detokenize(
        &self,
        request: Request<pb::DetokenizeRequest>,
    ) -> Result<Response<pb::DetokenizeResponse>, Status> {
        let caller = self.authorize(&request, Rpc::Detokenize).await?;
        let request = request.into_inner();
        let outcomes = self
            .vault
            .detokenize(&request.tokens)
            .await
            .map_err(to_status)?;
        let found = outcomes
            .iter()
            .filter(|o| o.status == TokenStatus::Found)
            .count();
        self.audit_reveal(AuditEvent {
            principal: caller.name.to_string(),
            rpc: Rpc::Detokenize.name(),
            purpose: request.purpose.clone(),
            subjects: distinct_subjects(outcomes.iter().filter_map(|o| o.subject)),
            tokens: request.tokens.clone(),
            count: found as u64,
            ..AuditEvent::default()
        })
        .await?;
        let results = request
            .tokens
            .into_iter()
            .zip(outcomes)
            .map(|(token, outcome)| {
                let found = outcome.status == TokenStatus::Found;
                pb::DetokenizeResult {
                    token,
                    status: status_of(outcome.status) as i32,
                    // Moved out of the zeroizing wrapper only here, into the
                    // response the caller is entitled to.
                    value: outcome.value.map(|v| v.to_string()).unwrap_or_default(),
                    reveal: if found {
                        pb::Reveal::Full as i32
                    } else {
                        pb::Reveal::Unspecified as i32
                    },
                    format: outcome.format.unwrap_or_default(),
                }
            })
            .collect();
        Ok(Response::new(pb::DetokenizeResponse { results }))
    }

    async fn redact_text(
        &self,
        request: Request<pb::RedactTextRequest>,
    ) -> Result<Response<pb::RedactTextResponse>, Status> {
        self.authorize(&request, Rpc::RedactText).await?;
        let request = request.into_inner();
        let redacted = self
            .vault
            .redact_text(&request.subject_id, &request.text, &request.kinds)
            .await
            .map_err(to_status)?;
        let findings = redacted
            .findings
            .into_iter()
            .map(|f| {
                Ok(pb::Finding {
                    kind: f.kind.name().to_string(),
                    start: offset(f.start)?,
                    end: offset(f.end)?,
                    token: f.token,
                })
            })
            .collect::<Result<Vec<_>, Status>>()?;
        Ok(Response::new(pb::RedactTextResponse {
            text: redacted.text,
            findings,
        }))
    }

    async fn restore_text(
        &self,
        request: Request<pb::RestoreTextRequest>,
    ) -> Result<Response<pb::RestoreTextResponse>, Status> {
        // Reveal is full for every allowed principal for now; the
        // principal's per-format policy is passed down with masking.
        let caller = self.authorize(&request, Rpc::RestoreText).await?;
        let request = request.into_inner();
        let mut restored = self
            .vault
            .restore_text(&request.text)
            .await
            .map_err(to_status)?;
        let restored_count = offset(restored.restored)?;
        self.audit_reveal(AuditEvent {
            principal: caller.name.to_string(),
            rpc: Rpc::RestoreText.name(),
            purpose: request.purpose.clone(),
            count: u64::from(restored_count),
            ..AuditEvent::default()
        })
        .await?;
        Ok(Response::new(pb::RestoreTextResponse {
            // Moved out of the zeroizing wrapper only here, into the
            // response the caller is entitled to.
            text: std::mem::take(&mut *restored.text),
            restored: restored_count,
        }))
    }

    async fn forget_subject(
        &self,
        request: Request<pb::ForgetSubjectRequest>,
    ) -> Result<Response<pb::ForgetSubjectResponse>, Status> {
        self.authorize(&request, Rpc::ForgetSubject).await?;
        Err(Status::unimplemented(
            "ForgetSubject is not implemented yet",
        ))
    }

    type ExportSubjectStream = ExportStream;

    async fn export_subject(
        &self,
        request: Request<pb::ExportSubjectRequest>,
    ) -> Result<Response<Self::ExportSubjectStream>, Status> {
        self.authorize(&request, Rpc::ExportSubject).await?;
        Err(Status::unimplemented(
            "ExportSubject is not implemented yet",
        ))
    }
}
