//! `TokenVault` over the vault: converts messages, checks the caller's
//! policy, maps errors.

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::status::to_status;
use crate::erasure::SignedReceipt;
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
        let request = request.into_inner();
        check_reason(&request.reason)?;
        let forgotten = self
            .vault
            .forget(&request.subject_id)
            .await
            .map_err(to_status)?;
        // The audit sequence number joins the receipt with the audit log.
        let receipt = self.vault.receipt(&forgotten, 0);
        Ok(Response::new(pb::ForgetSubjectResponse {
            tokens_erased: forgotten.tokens_erased,
            receipt: Some(receipt_message(&receipt)),
        }))
    }

    type ExportSubjectStream = ExportStream;

    async fn export_subject(
        &self,
        request: Request<pb::ExportSubjectRequest>,
    ) -> Result<Response<Self::ExportSubjectStream>, Status> {
        principal(&request, Rpc::ExportSubject)?;
        let request = request.into_inner();
        // The first page is read before the stream starts, so a bad subject
        // or an unavailable key provider is the call's status.
        let first = self
            .vault
            .export_page(&request.subject_id, None)
            .await
            .map_err(to_status)?;
        let (sender, receiver) = tokio::sync::mpsc::channel(2);
        let vault = Arc::clone(&self.vault);
        tokio::spawn(stream_export(vault, request.subject_id, first, sender));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }
}

/// Longest `reason` of a ForgetSubject (it names a request or a ticket;
/// it is not a place for personal data).
const MAX_REASON_BYTES: usize = 256;

fn check_reason(reason: &str) -> Result<(), Status> {
    if reason.len() > MAX_REASON_BYTES {
        return Err(Status::invalid_argument(format!(
            "reason: at most {MAX_REASON_BYTES} bytes"
        )));
    }
    Ok(())
}

pub fn receipt_message(receipt: &SignedReceipt) -> pb::ErasureReceipt {
    pb::ErasureReceipt {
        subject_hash: hex::encode(receipt.receipt.subject_hash),
        erased_at_unix: receipt.receipt.erased_at_unix,
        tokens_erased: receipt.receipt.tokens_erased,
        audit_sequence: receipt.receipt.audit_sequence,
        mac: hex::encode(receipt.mac),
    }
}

/// Sends the export page by page until the subject's tokens end or the
/// caller goes away.
async fn stream_export(
    vault: Arc<Vault>,
    subject_id: String,
    first: vault::ExportPage,
    sender: tokio::sync::mpsc::Sender<Result<pb::ExportSubjectResponse, Status>>,
) {
    let mut page = first;
    loop {
        for exported in page.tokens {
            let message = pb::ExportSubjectResponse {
                token: exported.token,
                format: exported.format,
                // Moved out of the zeroizing wrapper only here, into the
                // response the caller is entitled to.
                value: exported.value.to_string(),
                created_at_unix: exported.created_at_unix,
            };
            if sender.send(Ok(message)).await.is_err() {
                return;
            }
        }
        let Some(cursor) = page.next else {
            return;
        };
        page = match vault.export_page(&subject_id, Some(cursor)).await {
            Ok(next) => next,
            Err(error) => {
                let _ = sender.send(Err(to_status(error))).await;
                return;
            }
        };
    }
}
