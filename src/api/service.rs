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
        Err(Status::unimplemented("RedactText is not implemented yet"))
    }

    async fn restore_text(
        &self,
        request: Request<pb::RestoreTextRequest>,
    ) -> Result<Response<pb::RestoreTextResponse>, Status> {
        principal(&request, Rpc::RestoreText)?;
        Err(Status::unimplemented("RestoreText is not implemented yet"))
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
