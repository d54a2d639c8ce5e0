//! The service's side of anomaly detection: before a reveal, the
//! step-down in force against the caller's actor (`mask`: every value
//! masked; `deny`: PERMISSION_DENIED naming the alert and its reason,
//! audited); after it, the reveal counted into the detectors and each
//! alert it raised audited. It passes the detectors keyed hashes of the
//! subjects and the purpose's hash only, never a value, token or subject
//! id, and it never fails a served call: an alert that cannot be audited
//! is logged.

use tonic::Status;

use super::service::refused;
use crate::anomaly::{digest_u64, AnomalyAlert};
use crate::audit::{AuditEvent, AuditLog, Outcome};
use crate::config::AnomalyResponse;
use crate::crypto::SubjectHash;
use crate::notify::Notice;
use crate::policy::{Principal, Reveal};
use crate::rpc::Rpc;
use crate::vault::Vault;

/// `principal` with the step-down in force against it applied: masked, or
/// refused (audited).
pub async fn step_down(
    vault: &Vault,
    audit: &AuditLog,
    principal: Principal,
    rpc: Rpc,
) -> Result<Principal, Status> {
    let Some(monitor) = vault.anomaly() else {
        return Ok(principal);
    };
    match monitor.step_down(&principal.name, principal.actor_name()) {
        None => Ok(principal),
        Some(step) if step.response == AnomalyResponse::Deny => {
            let error =
                principal.stepped_down(rpc, step.alert_id, step.detector.name(), step.reason);
            Err(refused(audit, &principal, rpc, error).await)
        }
        Some(_) => Ok(principal.masked_by_anomaly()),
    }
}

/// One value a call revealed: its format, its subject and how it was
/// shown.
pub struct Revealed<'a> {
    pub format: &'a str,
    pub subject: Option<SubjectHash>,
    pub reveal: Reveal,
}

/// Counts a served reveal into the detectors and audits the alerts it
/// raised.
pub async fn observe(
    vault: &Vault,
    audit: &AuditLog,
    principal: &Principal,
    rpc: Rpc,
    purpose: &str,
    revealed: &[Revealed<'_>],
) {
    let Some(monitor) = vault.anomaly() else {
        return;
    };
    if revealed.is_empty() {
        return;
    }
    let mut formats: Vec<String> = revealed.iter().map(|r| r.format.to_string()).collect();
    formats.sort_unstable();
    formats.dedup();
    let mut subjects: Vec<u64> = revealed
        .iter()
        .filter_map(|r| r.subject)
        .map(|s| digest_u64(&[b"anomaly subject", s.as_bytes()]))
        .collect();
    subjects.sort_unstable();
    subjects.dedup();
    let full = revealed.iter().filter(|r| r.reveal == Reveal::Full).count() as u64;
    let actor = principal.actor.as_ref().map(|a| &a.name);
    let alerts = monitor.reveal(
        &principal.name,
        actor,
        purpose,
        formats,
        subjects,
        revealed.len() as u64,
        full,
    );
    for alert in &alerts {
        vault.notify(notice(alert));
        if let Err(error) = audit.append(alert_event(principal, rpc, alert)).await {
            tracing::error!(%error, "anomaly alert not audited");
        }
    }
}

/// An anomaly alert as the sinks get it (names, counts, the reason).
fn notice(alert: &AnomalyAlert) -> Notice {
    let f = &alert.finding;
    Notice {
        kind: "anomaly",
        alert: f.detector.name(),
        id: alert.id,
        principal: f.principal.to_string(),
        actor: f.actor.as_deref().unwrap_or("-").to_string(),
        at_unix: f.at,
        score: f.score,
        reason: f.reason.clone(),
        response: f.response.name(),
        window_start_unix: f.window_start,
        window_seconds: f.window_seconds,
        values: f.values,
        subjects: f.subjects,
        limit: 0,
    }
}

/// The audit record of an anomaly alert: detector, score and reason.
fn alert_event(principal: &Principal, rpc: Rpc, alert: &AnomalyAlert) -> AuditEvent<'static> {
    let f = &alert.finding;
    AuditEvent {
        principal: principal.name.to_string(),
        actor: principal.actor_name().map(str::to_string),
        rpc: rpc.name(),
        count: f.values,
        outcome: Outcome::Alert {
            kind: format!("anomaly_{}", f.detector.name()),
            detail: format!(
                "alert {} score {:.1} response {}: {}",
                alert.id,
                f.score,
                f.response.name(),
                f.reason
            ),
        },
        ..AuditEvent::default()
    }
}
