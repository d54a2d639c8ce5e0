//! The one place where internal errors become gRPC statuses, and gRPC
//! codes HTTP statuses. Callers get a code they can act on and a message
//! that is safe to show; internal details go to the log only.

use tonic::Status;

use crate::audit::AuditError;
use crate::policy::{ActorError, PolicyError};
use crate::vault::VaultError;

/// A policy refusal: PERMISSION_DENIED, or RESOURCE_EXHAUSTED for a rate
/// limit; purpose checks are PERMISSION_DENIED too (the policy, not the
/// request's shape, refuses), except a purpose over the length limit,
/// which is INVALID_ARGUMENT like every other input over a limit.
pub fn policy_status(error: &PolicyError) -> Status {
    match error {
        PolicyError::RateLimited(_) => Status::resource_exhausted(error.to_string()),
        PolicyError::PurposeTooLong => Status::invalid_argument(error.to_string()),
        PolicyError::NotAllowed { .. }
        | PolicyError::PurposeRequired { .. }
        | PolicyError::ActorRequired { .. }
        | PolicyError::SecondFactorRequired
        | PolicyError::SteppedDown { .. } => Status::permission_denied(error.to_string()),
    }
}

/// Every refused actor token is UNAUTHENTICATED: the credential is bad.
pub fn actor_status(error: &ActorError) -> Status {
    Status::unauthenticated(error.to_string())
}

/// The status of a call whose audit record could not be written: nothing
/// was revealed, and the caller may retry later.
pub fn audit_status(error: AuditError) -> Status {
    tracing::error!(%error, "audit record not written; call refused");
    Status::unavailable("audit log unavailable; nothing was revealed")
}

/// Every service error's status. No wildcard arm: a new variant of
/// `VaultError` does not compile until it is given its code here.
pub fn to_status(error: VaultError) -> Status {
    match &error {
        VaultError::InvalidArgument(message) => Status::invalid_argument(message.clone()),
        VaultError::KeyProviderUnavailable(source) => {
            tracing::warn!(error = %source, "key provider unavailable");
            Status::unavailable(error.to_string())
        }
        // The disk guard's refusal: logged once when the disk fills (see
        // `store::disk`), not per call; the caller learns the cause.
        VaultError::StorageUnavailable(crate::store::StoreError::DiskFull) => {
            tracing::debug!("call refused: disk full");
            Status::unavailable(
                "disk full: new tokens are refused until space returns; nothing was stored; retry later",
            )
        }
        VaultError::StorageUnavailable(source) => {
            tracing::error!(error = %source, "storage unavailable");
            Status::unavailable(error.to_string())
        }
        VaultError::KeyUnwrap(source) => {
            tracing::error!(error = %source, "stored key did not unwrap");
            Status::failed_precondition(error.to_string())
        }
        VaultError::KeyManagement(message) => Status::failed_precondition(message.clone()),
        VaultError::NewValuesLimited(_) => Status::resource_exhausted(error.to_string()),
        VaultError::LedgerUnavailable(detail) => {
            tracing::error!(error = %detail, "erasure ledger unavailable");
            Status::unavailable(error.to_string())
        }
        // Raised while opening, before anything is served: a call never
        // sees it, but if one did it would be the operator's to fix.
        VaultError::LedgerRefused(detail) => {
            tracing::error!(error = %detail, "erasure ledger refused");
            Status::internal("internal error; see the server log")
        }
        VaultError::Internal(detail) => {
            tracing::error!(error = %detail, "internal error");
            Status::internal("internal error; see the server log")
        }
    }
}

/// The HTTP status of a gRPC code, as `google/rpc/code.proto` maps them
/// (and grpc-gateway and Envoy's transcoder answer). No wildcard arm.
pub fn http_status(code: tonic::Code) -> http::StatusCode {
    use http::StatusCode as Http;
    use tonic::Code;
    match code {
        Code::Ok => Http::OK,
        // 499 Client Closed Request, the code.proto mapping.
        Code::Cancelled => Http::from_u16(499).unwrap_or(Http::BAD_REQUEST),
        Code::Unknown | Code::Internal | Code::DataLoss => Http::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => Http::BAD_REQUEST,
        Code::DeadlineExceeded => Http::GATEWAY_TIMEOUT,
        Code::NotFound => Http::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => Http::CONFLICT,
        Code::PermissionDenied => Http::FORBIDDEN,
        Code::Unauthenticated => Http::UNAUTHORIZED,
        Code::ResourceExhausted => Http::TOO_MANY_REQUESTS,
        Code::Unimplemented => Http::NOT_IMPLEMENTED,
        Code::Unavailable => Http::SERVICE_UNAVAILABLE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kek::KekError;
    use crate::store::StoreError;
    use tonic::Code;

    #[test]
    fn each_error_kind_has_an_actionable_code() {
        let cases = [
            (
                VaultError::InvalidArgument("items[3]: bad".into()),
                Code::InvalidArgument,
            ),
            (
                KekError::Unavailable("timeout".into()).into(),
                Code::Unavailable,
            ),
            (
                StoreError::Engine("No space left on device".into()).into(),
                Code::Unavailable,
            ),
            (
                KekError::UnwrapFailed("local").into(),
                Code::FailedPrecondition,
            ),
            (StoreError::Corrupt("token").into(), Code::Internal),
            (
                VaultError::LedgerUnavailable("disk full".into()),
                Code::Unavailable,
            ),
            (
                VaultError::LedgerRefused("ledger cut at the tail".into()),
                Code::Internal,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(to_status(error).code(), code);
        }
    }

    #[test]
    fn policy_and_actor_refusals_have_their_codes() {
        use crate::policy::{Alert, AlertKind, Scope};
        use crate::rpc::Rpc;
        let alert = Alert {
            kind: AlertKind::RateExceeded,
            scope: Scope::Principal,
            principal: "billing".into(),
            actor: None,
            rpc: Rpc::Detokenize,
            values: 1,
            limit: 100,
        };
        let cases = [
            (PolicyError::RateLimited(alert), Code::ResourceExhausted),
            (PolicyError::SecondFactorRequired, Code::PermissionDenied),
            (PolicyError::PurposeTooLong, Code::InvalidArgument),
            (
                PolicyError::PurposeRequired {
                    principal: "kyc".into(),
                    rpc: "detokenize",
                },
                Code::PermissionDenied,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(policy_status(&error).code(), code, "{error}");
        }
        assert_eq!(
            actor_status(&ActorError::Expired).code(),
            Code::Unauthenticated
        );
    }

    #[test]
    fn each_code_has_the_http_status_of_code_proto() {
        let cases = [
            (Code::Ok, 200),
            (Code::Cancelled, 499),
            (Code::Unknown, 500),
            (Code::InvalidArgument, 400),
            (Code::DeadlineExceeded, 504),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::PermissionDenied, 403),
            (Code::ResourceExhausted, 429),
            (Code::FailedPrecondition, 400),
            (Code::Aborted, 409),
            (Code::OutOfRange, 400),
            (Code::Unimplemented, 501),
            (Code::Internal, 500),
            (Code::Unavailable, 503),
            (Code::DataLoss, 500),
            (Code::Unauthenticated, 401),
        ];
        for (code, http) in cases {
            assert_eq!(http_status(code).as_u16(), http, "{code:?}");
        }
    }

    #[test]
    fn a_full_disk_is_unavailable_and_says_so() {
        let status = to_status(StoreError::DiskFull.into());
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.message().starts_with("disk full"), "{status:?}");
    }

    #[test]
    fn an_audit_failure_is_unavailable_and_names_no_detail() {
        let status = audit_status(AuditError::Unavailable(
            "/var/lib/tv/audit.jsonl: Is a directory".into(),
        ));
        assert_eq!(status.code(), Code::Unavailable);
        assert!(!status.message().contains("audit.jsonl"));
    }

    #[test]
    fn internal_details_stay_in_the_log() {
        let status = to_status(VaultError::Internal("column family tokens missing".into()));
        assert!(!status.message().contains("column family"));
    }
}
