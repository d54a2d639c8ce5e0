//! The one place where internal errors become gRPC statuses. Callers get a
//! code they can act on and a message that is safe to show; internal
//! details go to the log only.

use tonic::Status;

use crate::vault::VaultError;

pub fn to_status(error: VaultError) -> Status {
    match &error {
        VaultError::InvalidArgument(message) => Status::invalid_argument(message.clone()),
        VaultError::KeyProviderUnavailable(source) => {
            tracing::warn!(error = %source, "key provider unavailable");
            Status::unavailable(error.to_string())
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
        VaultError::LedgerUnavailable(detail) => {
            tracing::error!(error = %detail, "erasure ledger unavailable");
            Status::unavailable(error.to_string())
        }
        VaultError::Internal(detail) => {
            tracing::error!(error = %detail, "internal error");
            Status::internal("internal error; see the server log")
        }
        // Later variants fall back to a safe internal status.
        #[allow(unreachable_patterns)]
        _ => {
            tracing::error!(error = %error, "unmapped error");
            Status::internal("internal error; see the server log")
        }
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
        ];
        for (error, code) in cases {
            assert_eq!(to_status(error).code(), code);
        }
    }

    #[test]
    fn internal_details_stay_in_the_log() {
        let status = to_status(VaultError::Internal("column family tokens missing".into()));
        assert!(!status.message().contains("column family"));
    }
}
