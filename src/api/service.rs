//! `TokenVault` over the vault: converts messages, checks the caller's
//! policy, maps errors. RPCs that later work builds answer UNIMPLEMENTED.

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::status::to_status;
use crate::pb;
use crate::policy::{Principal, Rpc};
use crate::vault::{self, TokenMode, TokenStatus, Vault};

pub struct TokenVaultService {
    vault: Arc<Vault>,
}

impl TokenVaultService {
    pub fn new(vault: Arc<Vault>) -> Self {
        TokenVaultService { vault }
    }
}

/// The principal the auth interceptor put on the request. Its absence is a
/// wiring bug, and then nothing is served.
fn principal<T>(request: &Request<T>, rpc: Rpc) -> Result<Principal, Status> {
    let principal = request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no authenticated principal"))?;
    principal.require(rpc)?;
    Ok(principal)
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
        principal(&request, Rpc::Tokenize)?;
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
        principal(&request, Rpc::Detokenize)?;
        let request = request.into_inner();
        let outcomes = self
            .vault
            .detokenize(&request.tokens)
            .await
            .map_err(to_status)?;
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
        principal(&request, Rpc::RedactText)?;
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
        principal(&request, Rpc::RestoreText)?;
        let request = request.into_inner();
        let mut restored = self
            .vault
            .restore_text(&request.text)
            .await
            .map_err(to_status)?;
        let restored_count = offset(restored.restored)?;
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
        principal(&request, Rpc::ForgetSubject)?;
        Err(Status::unimplemented(
            "ForgetSubject is not implemented yet",
        ))
    }

    type ExportSubjectStream = ExportStream;

    async fn export_subject(
        &self,
        request: Request<pb::ExportSubjectRequest>,
    ) -> Result<Response<Self::ExportSubjectStream>, Status> {
        principal(&request, Rpc::ExportSubject)?;
        Err(Status::unimplemented(
            "ExportSubject is not implemented yet",
        ))
    }
}
