//! `TokenVault` over the vault: converts messages, checks the caller's
//! policy, maps errors.
//!
//! Audit: every refused call (policy, purpose, actor, rate limit), every
//! rate alert and every call that reveals or destroys data appends a
//! record to the audit log. A reveal waits for its record and returns
//! nothing if it cannot be written (UNAVAILABLE); a forget names its
//! record's sequence number in the receipt.

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::anomaly::{self, Revealed};
use super::status::{audit_status, policy_status, to_status};
use crate::audit::{AuditEvent, AuditLog, Outcome};
use crate::crypto::SubjectHash;
use crate::erasure::SignedReceipt;
use crate::metrics::{CallRecord, METRICS};
use crate::notify::Notice;
use crate::pb;
use crate::policy::quota::{NewValueCaller, QuotaAlert};
use crate::policy::rate::SharedRefusal;
use crate::policy::{Alert, AlertKind, PolicyError, Principal, RateLimiter, Reveal};
use crate::rpc::Rpc;
use crate::vault::{self, TokenMode, TokenStatus, Vault};

pub struct TokenVaultService {
    vault: Arc<Vault>,
    /// Detokenize rate limits, per principal and per actor.
    rates: Arc<RateLimiter>,
    audit: Arc<AuditLog>,
}

impl TokenVaultService {
    pub fn new(vault: Arc<Vault>, audit: Arc<AuditLog>) -> Self {
        TokenVaultService {
            rates: Arc::new(RateLimiter::with_shared(
                vault.counters(),
                vault.counter_key().clone(),
            )),
            vault,
            audit,
        }
    }

    /// The caller if its policy allows `rpc`; a refusal is audited.
    async fn authorize<T>(&self, request: &Request<T>, rpc: Rpc) -> Result<Principal, Status> {
        let principal = principal(request)?;
        if let Err(error) = principal.require(rpc) {
            return Err(refused(&self.audit, &principal, rpc, error).await);
        }
        Ok(principal)
    }

    /// [`Principal::check_reveal`] (purpose, actor, second factor), with a
    /// refusal audited.
    async fn check_reveal(
        &self,
        principal: &Principal,
        rpc: Rpc,
        purpose: &str,
    ) -> Result<(), Status> {
        match principal.check_reveal(rpc, purpose) {
            Ok(()) => Ok(()),
            Err(error) => Err(refused(&self.audit, principal, rpc, error).await),
        }
    }

    /// Charges `values` revealed values to the caller's rate limits, or
    /// RESOURCE_EXHAUSTED. Alerts are logged, counted and audited.
    async fn admit(&self, principal: &Principal, rpc: Rpc, values: usize) -> Result<(), Status> {
        admit(
            &self.vault,
            &self.rates,
            &self.audit,
            principal,
            rpc,
            values,
        )
        .await
    }

    /// A vault error as its status; a new-value limit's refusal is audited
    /// as its alert first (the call is refused even if that record cannot
    /// be written: nothing was stored).
    async fn vault_refusal(&self, principal: &Principal, error: vault::VaultError) -> Status {
        if let vault::VaultError::NewValuesLimited(alert) = &error {
            if let Err(audit_error) = self.audit.append(quota_event(principal, alert)).await {
                tracing::error!(error = %audit_error, "new value limit refusal not audited");
            }
        }
        to_status(error)
    }

    /// Audits the warnings of a served call; a failure is logged, not the
    /// caller's problem.
    async fn quota_warnings(&self, principal: &Principal, warnings: &[QuotaAlert]) {
        for warning in warnings {
            if let Err(error) = self.audit.append(quota_event(principal, warning)).await {
                tracing::error!(%error, "new value warning alert not audited");
            }
        }
    }

    /// Appends the record of a reveal or erasure; UNAVAILABLE if it cannot
    /// be written, and then the caller must return no value.
    async fn audit_done(&self, event: AuditEvent<'_>) -> Result<u64, Status> {
        self.audit.append(event).await.map_err(audit_status)
    }
}

/// A rate alert as the sinks get it (names and counts).
fn rate_notice(alert: &Alert) -> Notice {
    Notice {
        kind: "rate",
        alert: alert.kind.name(),
        principal: alert.principal.to_string(),
        actor: alert.actor.as_deref().unwrap_or("-").to_string(),
        at_unix: crate::clock::unix_now(),
        score: 1.0,
        reason: format!(
            "{} limit of {} values a minute: {} asked",
            alert.scope.name(),
            alert.limit,
            alert.values
        ),
        response: match alert.kind {
            AlertKind::RateWarning => "served",
            AlertKind::RateExceeded => "refused",
        },
        window_seconds: 60,
        values: alert.values,
        limit: u64::from(alert.limit),
        ..Notice::default()
    }
}

/// [`TokenVaultService::admit`], for work that outlives the call handler
/// (the export stream).
async fn admit(
    vault: &Vault,
    rates: &RateLimiter,
    audit: &AuditLog,
    principal: &Principal,
    rpc: Rpc,
    values: usize,
) -> Result<(), Status> {
    let values = u64::try_from(values).unwrap_or(u64::MAX);
    match rates.admit(principal, rpc, values) {
        Ok(warnings) => {
            for warning in warnings {
                vault.notify(rate_notice(&warning));
                // A warning alert lets the call through: a failure to
                // record it is logged, not the caller's problem.
                if let Err(error) = audit.append(alert_event(principal, &warning)).await {
                    tracing::error!(%error, "rate warning alert not audited");
                }
            }
            // The same limits over every replica and across restarts.
            match rates.admit_shared(principal, rpc, values).await {
                Ok(()) => Ok(()),
                Err(SharedRefusal::Limited(alert)) => {
                    vault.notify(rate_notice(&alert));
                    Err(refused(audit, principal, rpc, PolicyError::RateLimited(alert)).await)
                }
                Err(SharedRefusal::Unavailable(error)) => Err(to_status(error.into())),
            }
        }
        // Nothing was revealed; the refusal carries its alert.
        Err(alert) => {
            vault.notify(rate_notice(&alert));
            Err(refused(audit, principal, rpc, PolicyError::RateLimited(alert)).await)
        }
    }
}

/// A call refused by policy, as its status. The one place every policy
/// refusal (denied RPC, purpose, actor, second factor, rate limit) passes,
/// and where it is audited: a rate refusal as its alert, others as a
/// denial. The call is refused even if the record cannot be written (it
/// reveals nothing); that failure is logged.
pub(super) async fn refused(
    audit: &AuditLog,
    principal: &Principal,
    rpc: Rpc,
    error: PolicyError,
) -> Status {
    let status = policy_status(&error);
    let event = match &error {
        PolicyError::RateLimited(alert) => alert_event(principal, alert),
        _ => AuditEvent {
            outcome: Outcome::Denied {
                code: code_name(status.code()),
                reason: error.reason().to_string(),
            },
            ..caller_event(principal, rpc)
        },
    };
    if let Err(audit_error) = audit.append(event).await {
        tracing::error!(error = %audit_error, rpc = rpc.name(), "refused call not audited");
    }
    // The denial is already logged by the policy (names only).
    status
}

/// The audit record of a rate alert.
fn alert_event(principal: &Principal, alert: &Alert) -> AuditEvent<'static> {
    AuditEvent {
        count: alert.values,
        outcome: Outcome::Alert {
            kind: alert.kind.name().to_string(),
            detail: format!(
                "{} limit {} values/min, {} asked",
                alert.scope.name(),
                alert.limit,
                alert.values
            ),
        },
        ..caller_event(principal, alert.rpc)
    }
}

/// Who a Tokenize or RedactText call creates new values for.
fn new_value_caller(principal: &Principal, rpc: Rpc) -> NewValueCaller {
    NewValueCaller {
        principal: Arc::clone(&principal.name),
        actor: principal.actor.as_ref().map(|a| Arc::clone(&a.name)),
        rpc,
    }
}

/// The audit record of a new-value limit alert; it names the subject (the
/// log stores its keyed hash).
fn quota_event(principal: &Principal, alert: &QuotaAlert) -> AuditEvent<'static> {
    AuditEvent {
        count: alert.values,
        subjects: vec![alert.subject],
        outcome: Outcome::Alert {
            kind: alert.kind_name().to_string(),
            detail: alert.detail(),
        },
        ..caller_event(principal, alert.rpc)
    }
}

/// An audit event naming the caller (principal and actor) and the RPC.
fn caller_event(principal: &Principal, rpc: Rpc) -> AuditEvent<'static> {
    AuditEvent {
        principal: principal.name.to_string(),
        actor: principal.actor_name().map(str::to_string),
        rpc: rpc.name(),
        ..AuditEvent::default()
    }
}

fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::ResourceExhausted => "resource_exhausted",
        tonic::Code::InvalidArgument => "invalid_argument",
        _ => "permission_denied",
    }
}

/// Each subject once, in a stable order.
fn distinct_subjects(subjects: impl Iterator<Item = SubjectHash>) -> Vec<SubjectHash> {
    let mut subjects: Vec<SubjectHash> = subjects.collect();
    subjects.sort_unstable();
    subjects.dedup();
    subjects
}

fn pb_reveal(reveal: Reveal) -> pb::Reveal {
    match reveal {
        Reveal::Full => pb::Reveal::Full,
        Reveal::Masked => pb::Reveal::Masked,
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
        let principal = self.authorize(&request, Rpc::Tokenize).await?;
        let call = CallRecord::of(&request);
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
        let caller = new_value_caller(&principal, Rpc::Tokenize);
        let (tokens, warnings) = match self
            .vault
            .tokenize_as(&caller, &request.subject_id, &items)
            .await
        {
            Ok(done) => done,
            Err(error) => return Err(self.vault_refusal(&principal, error).await),
        };
        self.quota_warnings(&principal, &warnings).await;
        call.values(Rpc::Tokenize, tokens.len() as u64);
        Ok(Response::new(pb::TokenizeResponse { tokens }))
    }

    async fn detokenize(
        &self,
        request: Request<pb::DetokenizeRequest>,
    ) -> Result<Response<pb::DetokenizeResponse>, Status> {
        let principal = self.authorize(&request, Rpc::Detokenize).await?;
        let call = CallRecord::of(&request);
        let request = request.into_inner();
        self.check_reveal(&principal, Rpc::Detokenize, &request.purpose)
            .await?;
        let principal =
            anomaly::step_down(&self.vault, &self.audit, principal, Rpc::Detokenize).await?;
        // Every requested token counts, found or not, so probing for
        // tokens is limited too; charged before anything is read. A batch
        // the vault refuses as invalid costs nothing.
        let batch = request.tokens.len();
        if (1..=self.vault.limits().max_batch_items).contains(&batch) {
            self.admit(&principal, Rpc::Detokenize, batch).await?;
        }
        let outcomes = self
            .vault
            .detokenize(&request.tokens)
            .await
            .map_err(to_status)?;
        let found = outcomes
            .iter()
            .filter(|o| o.status == TokenStatus::Found)
            .count();
        self.audit_done(AuditEvent {
            purpose: request.purpose.clone(),
            subjects: distinct_subjects(outcomes.iter().filter_map(|o| o.subject)),
            tokens: request.tokens.iter().map(String::as_str).collect(),
            count: found as u64,
            ..caller_event(&principal, Rpc::Detokenize)
        })
        .await?;
        let revealed: Vec<Revealed<'_>> = outcomes
            .iter()
            .filter(|o| o.status == TokenStatus::Found)
            .map(|o| {
                let format = o.format.as_deref().unwrap_or_default();
                Revealed {
                    format,
                    subject: o.subject,
                    reveal: principal.reveal_for(format),
                }
            })
            .collect();
        anomaly::observe(
            &self.vault,
            &self.audit,
            &principal,
            Rpc::Detokenize,
            &request.purpose,
            &revealed,
        )
        .await;
        drop(revealed);
        let results = request
            .tokens
            .into_iter()
            .zip(outcomes)
            .map(|(token, outcome)| {
                let format = outcome.format.unwrap_or_default();
                let (reveal, value) = match outcome.value {
                    Some(value) if outcome.status == TokenStatus::Found => {
                        let (reveal, shown) =
                            principal.reveal(self.vault.templates(), &format, value);
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
        call.values(Rpc::Detokenize, found as u64);
        Ok(Response::new(pb::DetokenizeResponse { results }))
    }

    async fn redact_text(
        &self,
        request: Request<pb::RedactTextRequest>,
    ) -> Result<Response<pb::RedactTextResponse>, Status> {
        let principal = self.authorize(&request, Rpc::RedactText).await?;
        let call = CallRecord::of(&request);
        let request = request.into_inner();
        let caller = new_value_caller(&principal, Rpc::RedactText);
        let (redacted, warnings) = match self
            .vault
            .redact_text_as(&caller, &request.subject_id, &request.text, &request.kinds)
            .await
        {
            Ok(done) => done,
            Err(error) => return Err(self.vault_refusal(&principal, error).await),
        };
        self.quota_warnings(&principal, &warnings).await;
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
        call.values(Rpc::RedactText, findings.len() as u64);
        Ok(Response::new(pb::RedactTextResponse {
            text: redacted.text,
            findings,
        }))
    }

    async fn restore_text(
        &self,
        request: Request<pb::RestoreTextRequest>,
    ) -> Result<Response<pb::RestoreTextResponse>, Status> {
        let principal = self.authorize(&request, Rpc::RestoreText).await?;
        let call = CallRecord::of(&request);
        let request = request.into_inner();
        self.check_reveal(&principal, Rpc::RestoreText, &request.purpose)
            .await?;
        let principal =
            anomaly::step_down(&self.vault, &self.audit, principal, Rpc::RestoreText).await?;
        // The format and reveal of each restored value, for the detectors.
        let shown = parking_lot::Mutex::new(Vec::new());
        let mut restored = self
            .vault
            .restore_text_with(
                &request.text,
                Some(request.subject_id.as_str()).filter(|id| !id.is_empty()),
                |format, value| {
                    let (reveal, value) = principal.reveal(self.vault.templates(), format, value);
                    shown.lock().push((format.to_string(), reveal));
                    value
                },
            )
            .await
            .map_err(to_status)?;
        // Restored tokens count; on a refusal the restored text is dropped
        // (zeroized) unseen.
        self.admit(&principal, Rpc::RestoreText, restored.restored)
            .await?;
        let restored_count = offset(restored.restored)?;
        self.audit_done(AuditEvent {
            purpose: request.purpose.clone(),
            subjects: distinct_subjects(restored.subjects.iter().copied()),
            tokens: restored.tokens.iter().map(String::as_str).collect(),
            count: u64::from(restored_count),
            ..caller_event(&principal, Rpc::RestoreText)
        })
        .await?;
        let shown = shown.into_inner();
        let subjects = &restored.subjects;
        let revealed: Vec<Revealed<'_>> = shown
            .iter()
            .enumerate()
            .map(|(i, (format, reveal))| Revealed {
                format,
                subject: subjects.get(i).or(subjects.first()).copied(),
                reveal: *reveal,
            })
            .collect();
        anomaly::observe(
            &self.vault,
            &self.audit,
            &principal,
            Rpc::RestoreText,
            &request.purpose,
            &revealed,
        )
        .await;
        call.values(Rpc::RestoreText, u64::from(restored_count));
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
        let caller = self.authorize(&request, Rpc::ForgetSubject).await?;
        let call = CallRecord::of(&request);
        let request = request.into_inner();
        check_reason(&request.reason)?;
        let forgotten = self
            .vault
            .forget(&request.subject_id)
            .await
            .map_err(to_status)?;
        // The erasure is done and cannot be undone; if its record cannot be
        // written the caller gets UNAVAILABLE and, retrying, a receipt for
        // 0 tokens with the record of the retry.
        let sequence = self
            .audit_done(AuditEvent {
                purpose: request.reason.clone(),
                subjects: vec![forgotten.subject],
                count: forgotten.tokens_erased,
                ..caller_event(&caller, Rpc::ForgetSubject)
            })
            .await?;
        // The audit sequence number joins the receipt with the audit log.
        let receipt = self.vault.receipt(&forgotten, sequence);
        call.values(Rpc::ForgetSubject, forgotten.tokens_erased);
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
        let principal = self.authorize(&request, Rpc::ExportSubject).await?;
        let call = CallRecord::of(&request);
        let request = request.into_inner();
        self.check_reveal(&principal, Rpc::ExportSubject, &request.purpose)
            .await?;
        let principal =
            anomaly::step_down(&self.vault, &self.audit, principal, Rpc::ExportSubject).await?;
        // The first page is read before the stream starts, so a bad subject,
        // an unavailable key provider or a spent rate limit is the call's
        // status. Each page is charged to the rate limits before it is sent.
        let first = self
            .vault
            .export_page(&request.subject_id, None)
            .await
            .map_err(to_status)?;
        if !first.tokens.is_empty() {
            self.admit(&principal, Rpc::ExportSubject, first.tokens.len())
                .await?;
            self.audit_done(export_event(&principal, &request.purpose, &first))
                .await?;
            observe_page(
                &self.vault,
                &self.audit,
                &principal,
                &request.purpose,
                &first,
            )
            .await;
            // Later pages are counted in the metrics only: the call's log
            // line is written when its stream starts.
            call.values(Rpc::ExportSubject, first.tokens.len() as u64);
        }
        let (sender, receiver) = tokio::sync::mpsc::channel(2);
        let export = Export {
            vault: Arc::clone(&self.vault),
            rates: Arc::clone(&self.rates),
            audit: Arc::clone(&self.audit),
            principal,
            subject_id: request.subject_id,
            purpose: request.purpose,
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
        at_return: receipt
            .receipt
            .guarantees
            .map(|g| g.at_return.name().to_string())
            .unwrap_or_default(),
        purged_by_unix: receipt.receipt.guarantees.map_or(0, |g| g.purged_by_unix),
    }
}

/// An export in progress: what its stream task needs of the call.
struct Export {
    vault: Arc<Vault>,
    rates: Arc<RateLimiter>,
    audit: Arc<AuditLog>,
    principal: Principal,
    subject_id: String,
    purpose: String,
}

/// The audit record of one export page (every page is a reveal).
fn export_event<'a>(
    principal: &Principal,
    purpose: &str,
    page: &'a vault::ExportPage,
) -> AuditEvent<'a> {
    AuditEvent {
        purpose: purpose.to_string(),
        subjects: vec![page.subject],
        tokens: page.tokens.iter().map(|e| e.token.as_str()).collect(),
        count: page.tokens.len() as u64,
        ..caller_event(principal, Rpc::ExportSubject)
    }
}

/// Counts an export page into the anomaly detectors.
async fn observe_page(
    vault: &Vault,
    audit: &AuditLog,
    principal: &Principal,
    purpose: &str,
    page: &vault::ExportPage,
) {
    let revealed: Vec<Revealed<'_>> = page
        .tokens
        .iter()
        .map(|e| Revealed {
            format: &e.format,
            subject: Some(page.subject),
            reveal: principal.reveal_for(&e.format),
        })
        .collect();
    anomaly::observe(
        vault,
        audit,
        principal,
        Rpc::ExportSubject,
        purpose,
        &revealed,
    )
    .await;
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
                let (_, shown) =
                    self.principal
                        .reveal(self.vault.templates(), &exported.format, exported.value);
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
                &self.vault,
                &self.rates,
                &self.audit,
                &self.principal,
                Rpc::ExportSubject,
                page.tokens.len(),
            )
            .await?;
            self.audit
                .append(export_event(&self.principal, &self.purpose, &page))
                .await
                .map_err(audit_status)?;
            observe_page(
                &self.vault,
                &self.audit,
                &self.principal,
                &self.purpose,
                &page,
            )
            .await;
            METRICS.values(Rpc::ExportSubject.name(), page.tokens.len() as u64);
        }
        Ok(page)
    }
}
