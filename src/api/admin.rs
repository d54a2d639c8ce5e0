//! The operator API (`tokenvault.admin.v1.Admin`): KEK rotation and key
//! status, purges and their status, backups and receipt checks, anomaly
//! alerts and step-downs (list, ack, clear), served only on the Unix socket `<data_dir>/admin.sock`, created
//! owner-only (umask 077, in the 0700 data directory). Whoever may open that socket may already read the data
//! directory, so the socket's file mode is its authentication; nothing
//! here reveals a value or a key, and it is never on the network port.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::status::to_status;
use crate::erasure::SignedReceipt;
use crate::pb::admin;
use crate::vault::erasure::PurgeStatus;
use crate::vault::{KeyStatus, RotationProgress, Vault};

/// The socket's file name inside the data directory.
pub const ADMIN_SOCKET: &str = "admin.sock";

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(ADMIN_SOCKET)
}

pub struct AdminService {
    vault: Arc<Vault>,
}

impl AdminService {
    pub fn new(vault: Arc<Vault>) -> Self {
        AdminService { vault }
    }
}

type ProgressStream = Pin<Box<dyn Stream<Item = Result<admin::RotateKekProgress, Status>> + Send>>;

pub fn progress_message(progress: RotationProgress, finished: bool) -> admin::RotateKekProgress {
    admin::RotateKekProgress {
        target_version: progress.target_version,
        done: progress.done,
        total: progress.total,
        rewrapped: progress.rewrapped,
        resumed: progress.resumed,
        finished,
    }
}

pub fn erasure_status_message(
    status: &PurgeStatus,
    full_purge_at_return: bool,
) -> admin::ErasureStatusResponse {
    admin::ErasureStatusResponse {
        pending: status.pending.count,
        oldest_erased_at_unix: status.pending.oldest_erased_at.unwrap_or(0),
        deadline_unix: status.deadline_unix.unwrap_or(0),
        purge_within_seconds: status.within_seconds,
        missed: status.missed(crate::clock::unix_now()),
        full_purge_at_return,
    }
}

pub fn status_message(status: &KeyStatus) -> admin::KeyStatusResponse {
    admin::KeyStatusResponse {
        provider: status.provider.to_string(),
        latest_version: status.latest_version,
        min_decryption_version: status.min_decryption_version,
        system_key_version: status.system_key_version.unwrap_or(0),
        subject_keys: status
            .subject_keys_by_version
            .iter()
            .map(|(&kek_version, &subject_keys)| admin::VersionCount {
                kek_version,
                subject_keys,
            })
            .collect(),
        rotation_in_progress: status.rotation_in_progress.unwrap_or(0),
    }
}

/// An anomaly alert as its message (names and counts only).
pub fn alert_message(alert: &crate::anomaly::AnomalyAlert) -> admin::AnomalyAlert {
    let f = &alert.finding;
    admin::AnomalyAlert {
        id: alert.id,
        detector: f.detector.name().to_string(),
        principal: f.principal.to_string(),
        actor: f.actor.as_deref().unwrap_or("-").to_string(),
        score: f.score,
        reason: f.reason.clone(),
        at_unix: f.at,
        window_start_unix: f.window_start,
        window_seconds: f.window_seconds,
        values: f.values,
        subjects: f.subjects,
        response: f.response.name().to_string(),
        acked: alert.acked,
    }
}

#[tonic::async_trait]
impl admin::admin_server::Admin for AdminService {
    async fn list_alerts(
        &self,
        _request: Request<admin::ListAlertsRequest>,
    ) -> Result<Response<admin::ListAlertsResponse>, Status> {
        let Some(monitor) = self.vault.anomaly() else {
            return Ok(Response::new(admin::ListAlertsResponse::default()));
        };
        let (alerts, step_downs) = monitor.list();
        Ok(Response::new(admin::ListAlertsResponse {
            enabled: true,
            alerts: alerts.iter().map(alert_message).collect(),
            step_downs: step_downs
                .into_iter()
                .map(|((principal, actor), s)| admin::StepDown {
                    principal: principal.to_string(),
                    actor: actor.as_deref().unwrap_or("-").to_string(),
                    response: s.response.name().to_string(),
                    alert_id: s.alert_id,
                    detector: s.detector.name().to_string(),
                    reason: s.reason,
                })
                .collect(),
        }))
    }

    async fn ack_alert(
        &self,
        request: Request<admin::AckAlertRequest>,
    ) -> Result<Response<admin::AckAlertResponse>, Status> {
        let id = request.into_inner().id;
        match self.vault.anomaly() {
            Some(monitor) if monitor.ack(id) => Ok(Response::new(admin::AckAlertResponse {})),
            Some(_) => Err(Status::not_found(format!("no anomaly alert {id}"))),
            None => Err(Status::failed_precondition("[anomaly] is not enabled")),
        }
    }

    async fn clear_actor(
        &self,
        request: Request<admin::ClearActorRequest>,
    ) -> Result<Response<admin::ClearActorResponse>, Status> {
        let actor = request.into_inner().actor;
        if actor.is_empty() {
            return Err(Status::invalid_argument(
                "actor: required (\"-\" for calls without one)",
            ));
        }
        let Some(monitor) = self.vault.anomaly() else {
            return Err(Status::failed_precondition("[anomaly] is not enabled"));
        };
        let cleared = monitor.clear(&actor);
        tracing::warn!(target: crate::policy::ALERT_TARGET, actor = %actor, cleared, "anomaly step-downs cleared by an operator");
        Ok(Response::new(admin::ClearActorResponse {
            cleared: cleared as u64,
        }))
    }

    type RotateKekStream = ProgressStream;

    async fn rotate_kek(
        &self,
        _request: Request<admin::RotateKekRequest>,
    ) -> Result<Response<Self::RotateKekStream>, Status> {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        let vault = Arc::clone(&self.vault);
        tokio::spawn(async move {
            let pages = sender.clone();
            let outcome = vault
                .rotate_kek(move |progress| {
                    let _ = pages.send(Ok(progress_message(progress, false)));
                })
                .await;
            let last = outcome
                .map(|progress| progress_message(progress, true))
                .map_err(to_status);
            let _ = sender.send(last);
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::UnboundedReceiverStream::new(receiver),
        )))
    }

    async fn stats(
        &self,
        _request: Request<admin::StatsRequest>,
    ) -> Result<Response<admin::StatsResponse>, Status> {
        use std::sync::atomic::Ordering::Relaxed;
        let (kek, cache) = (self.vault.kek_stats(), self.vault.cache().stats());
        Ok(Response::new(admin::StatsResponse {
            kek_wrap_calls: kek.wrap_calls.load(Relaxed),
            kek_unwrap_calls: kek.unwrap_calls.load(Relaxed),
            kek_keys_wrapped: kek.keys_wrapped.load(Relaxed),
            kek_keys_unwrapped: kek.keys_unwrapped.load(Relaxed),
            dek_cache_hits: cache.hits.load(Relaxed),
            dek_cache_misses: cache.misses.load(Relaxed),
            dek_cache_evictions: cache.evictions.load(Relaxed),
            kek_remote_calls: self.vault.kek().remote_calls().unwrap_or(0),
            alerts_rate_warning: crate::policy::ALERTS.rate_warning.load(Relaxed),
            alerts_rate_exceeded: crate::policy::ALERTS.rate_exceeded.load(Relaxed),
        }))
    }

    async fn key_status(
        &self,
        _request: Request<admin::KeyStatusRequest>,
    ) -> Result<Response<admin::KeyStatusResponse>, Status> {
        let status = self.vault.key_status().await.map_err(to_status)?;
        Ok(Response::new(status_message(&status)))
    }

    async fn purge(
        &self,
        _request: Request<admin::PurgeRequest>,
    ) -> Result<Response<admin::PurgeResponse>, Status> {
        self.vault.purge().await.map_err(to_status)?;
        Ok(Response::new(admin::PurgeResponse {}))
    }

    async fn erasure_status(
        &self,
        _request: Request<admin::ErasureStatusRequest>,
    ) -> Result<Response<admin::ErasureStatusResponse>, Status> {
        let status = self.vault.purge_status().await.map_err(to_status)?;
        Ok(Response::new(erasure_status_message(
            &status,
            self.vault.physical_purge().full_at_return,
        )))
    }

    async fn create_backup(
        &self,
        request: Request<admin::CreateBackupRequest>,
    ) -> Result<Response<admin::CreateBackupResponse>, Status> {
        let dir = request.into_inner().dir;
        if dir.is_empty() {
            return Err(Status::invalid_argument(
                "dir: the backup directory is required",
            ));
        }
        let info = self
            .vault
            .create_backup(Path::new(&dir))
            .await
            .map_err(to_status)?;
        Ok(Response::new(admin::CreateBackupResponse {
            backup_id: info.id,
            timestamp_unix: info.timestamp_unix,
            size_bytes: info.size_bytes,
        }))
    }

    async fn verify_receipt(
        &self,
        request: Request<admin::VerifyReceiptRequest>,
    ) -> Result<Response<admin::VerifyReceiptResponse>, Status> {
        let verdict = SignedReceipt::parse(&request.into_inner().receipt)
            .and_then(|receipt| self.vault.verify_receipt(&receipt));
        Ok(Response::new(admin::VerifyReceiptResponse {
            valid: verdict.is_ok(),
            reason: verdict.err().map(|e| e.to_string()).unwrap_or_default(),
        }))
    }
}
