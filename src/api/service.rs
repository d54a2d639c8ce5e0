//! `TokenVault` over the vault: converts messages, checks the caller's
//! policy, maps errors.

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::status::{policy_status, to_status};
use crate::erasure::SignedReceipt;
use crate::pb;
use crate::policy::{PolicyError, Principal, RateLimiter, Reveal, Rpc};
use crate::vault::{self, TokenMode, TokenStatus, Vault};

pub struct TokenVaultService {
    vault: Arc<Vault>,
    /// Detokenize rate limits, per principal and per actor.
    rates: Arc<RateLimiter>,
}

impl TokenVaultService {
    pub fn new(vault: Arc<Vault>) -> Self {
        TokenVaultService {
            vault,
            rates: Arc::new(RateLimiter::new()),
        }
    }

    /// Charges `values` revealed values to the caller's rate limits, or
    /// RESOURCE_EXHAUSTED. Alerts are already logged and counted.
    fn admit(&self, principal: &Principal, rpc: Rpc, values: usize) -> Result<(), Status> {
        admit(&self.rates, principal, rpc, values)
    }
}

/// [`TokenVaultService::admit`], for work that outlives the call handler
/// (the export stream).
fn admit(
    rates: &RateLimiter,
    principal: &Principal,
    rpc: Rpc,
    values: usize,
) -> Result<(), Status> {
    let values = u64::try_from(values).unwrap_or(u64::MAX);
    match rates.admit(principal, rpc, values) {
        Ok(_warnings) => {
            // AUDIT: append each warning alert here once the audit log
            // is merged.
            Ok(())
        }
        // Nothing was revealed; the refusal carries its alert.
        Err(alert) => Err(refused(principal, rpc, PolicyError::RateLimited(alert))),
    }
}

/// A call refused by policy, as its status. The one place every policy
/// refusal (denied RPC, purpose, actor, second factor, rate limit) passes.
fn refused(principal: &Principal, rpc: Rpc, error: PolicyError) -> Status {
    // AUDIT: append a denied-call record here once the audit log is merged:
    // principal.name, principal.actor_name(), rpc.name(), error.reason(),
    // and for RateLimited the Alert.
    let _ = (principal, rpc);
    // The denial is already logged by the policy (names only).
    policy_status(&error)
}

fn pb_reveal(reveal: Reveal) -> pb::Reveal {
    match reveal {
        Reveal::Full => pb::Reveal::Full,
        Reveal::Masked => pb::Reveal::Masked,
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
    principal
        .require(rpc)
        .map_err(|error| refused(&principal, rpc, error))?;
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
        let principal = principal(&request, Rpc::Detokenize)?;
        let request = request.into_inner();
        principal
            .check_reveal(Rpc::Detokenize, &request.purpose)
            .map_err(|error| refused(&principal, Rpc::Detokenize, error))?;
        // Every requested token counts, found or not, so probing for
        // tokens is limited too; charged before anything is read. A batch
        // the vault refuses as invalid costs nothing.
        let batch = request.tokens.len();
        if (1..=self.vault.limits().max_batch_items).contains(&batch) {
            self.admit(&principal, Rpc::Detokenize, batch)?;
        }
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
                let format = outcome.format.unwrap_or_default();
                let (reveal, value) = match outcome.value {
                    Some(value) if outcome.status == TokenStatus::Found => {
                        let (reveal, shown) = principal.reveal(&format, value);
                        // Moved out of the zeroizing wrapper only here, into
                        // the response the caller is entitled to.
                        (pb_reveal(reveal), shown.to_string())
                    }
                    _ => (pb::Reveal::Unspecified, String::new()),
                };
                pb::DetokenizeResult {
                    token,
                    status: status_of(outcome.status) as i32,
                    value,
                    reveal: reveal as i32,
                    format,
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
        let principal = principal(&request, Rpc::RestoreText)?;
        let request = request.into_inner();
        principal
            .check_reveal(Rpc::RestoreText, &request.purpose)
            .map_err(|error| refused(&principal, Rpc::RestoreText, error))?;
        let mut restored = self
            .vault
            .restore_text_with(&request.text, |format, value| {
                principal.reveal(format, value).1
            })
            .await
            .map_err(to_status)?;
        // Restored tokens count; on a refusal the restored text is dropped
        // (zeroized) unseen.
        self.admit(&principal, Rpc::RestoreText, restored.restored)?;
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
        let principal = principal(&request, Rpc::ExportSubject)?;
        let request = request.into_inner();
        principal
            .check_reveal(Rpc::ExportSubject, &request.purpose)
            .map_err(|error| refused(&principal, Rpc::ExportSubject, error))?;
        // The first page is read before the stream starts, so a bad subject,
        // an unavailable key provider or a spent rate limit is the call's
        // status. Each page is charged to the rate limits before it is sent.
        let first = self
            .vault
            .export_page(&request.subject_id, None)
            .await
            .map_err(to_status)?;
        if !first.tokens.is_empty() {
            self.admit(&principal, Rpc::ExportSubject, first.tokens.len())?;
        }
        let (sender, receiver) = tokio::sync::mpsc::channel(2);
        let export = Export {
            vault: Arc::clone(&self.vault),
            rates: Arc::clone(&self.rates),
            principal,
            subject_id: request.subject_id,
        };
        tokio::spawn(export.stream(first, sender));
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

/// An export in progress: what its stream task needs of the call.
struct Export {
    vault: Arc<Vault>,
    rates: Arc<RateLimiter>,
    principal: Principal,
    subject_id: String,
}

impl Export {
    /// Sends the export page by page (each shown per the caller's reveal
    /// policy) until the subject's tokens end, the caller goes away, or a
    /// page would go over the caller's rate limit.
    async fn stream(
        self,
        first: vault::ExportPage,
        sender: tokio::sync::mpsc::Sender<Result<pb::ExportSubjectResponse, Status>>,
    ) {
        let mut page = first;
        loop {
            for exported in page.tokens {
                let (_, shown) = self.principal.reveal(&exported.format, exported.value);
                let message = pb::ExportSubjectResponse {
                    token: exported.token,
                    format: exported.format,
                    // Moved out of the zeroizing wrapper only here, into the
                    // response the caller is entitled to.
                    value: shown.to_string(),
                    created_at_unix: exported.created_at_unix,
                };
                if sender.send(Ok(message)).await.is_err() {
                    return;
                }
            }
            let Some(cursor) = page.next else {
                return;
            };
            page = match self.next_page(cursor).await {
                Ok(next) => next,
                Err(status) => {
                    let _ = sender.send(Err(status)).await;
                    return;
                }
            };
        }
    }

    async fn next_page(&self, cursor: Vec<u8>) -> Result<vault::ExportPage, Status> {
        let page = self
            .vault
            .export_page(&self.subject_id, Some(cursor))
            .await
            .map_err(to_status)?;
        if !page.tokens.is_empty() {
            admit(
                &self.rates,
                &self.principal,
                Rpc::ExportSubject,
                page.tokens.len(),
            )?;
        }
        Ok(page)
    }
}
