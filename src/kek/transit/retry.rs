//! How a failed Vault call reads: which operation it was, whether the
//! failure is passing (retried with backoff within the deadline) or final,
//! and its description in words that hold no secret.

use vaultrs::error::ClientError;

use super::VaultSettings;
use crate::kek::KekError;

/// What a call was, for messages and for how its failures read.
#[derive(Clone, Copy, Debug)]
pub(super) enum Operation {
    Wrap,
    Unwrap,
    Rewrap,
    ReadKey,
    Rotate,
    /// Raising or lowering the decryption floor (`keys retire`).
    Configure,
    /// Deleting the versions below the floor (`keys retire`).
    Trim,
}

impl Operation {
    pub(super) fn name(self) -> &'static str {
        match self {
            Operation::Wrap => "encrypt",
            Operation::Unwrap => "decrypt",
            Operation::Rewrap => "rewrap",
            Operation::ReadKey => "read key",
            Operation::Rotate => "rotate key",
            Operation::Configure => "configure key",
            Operation::Trim => "trim key",
        }
    }

    pub(super) fn transit_verb(self) -> &'static str {
        match self {
            Operation::Wrap => "encrypt",
            Operation::Unwrap => "decrypt",
            Operation::Rewrap => "rewrap",
            Operation::ReadKey | Operation::Rotate | Operation::Configure | Operation::Trim => {
                "keys"
            }
        }
    }

    /// The error of a 400 / failed batch item: for decrypt and rewrap, the
    /// stored key does not open (a deleted or trimmed key version, a
    /// deleted key, tampering); otherwise a setup problem.
    pub(super) fn item_failure(self) -> KekError {
        match self {
            Operation::Unwrap | Operation::Rewrap => KekError::UnwrapFailed("vault"),
            _ => KekError::Setup(format!(
                "vault refused transit {}: check kek.mount, kek.key_name and that the key exists",
                self.name()
            )),
        }
    }
}

pub(super) enum Failure {
    /// Passing: retry within the deadline.
    Retry(String),
    /// 403: permission denied or an expired token.
    Denied,
    /// Retrying cannot help.
    Final(KekError),
}

pub(super) fn classify(operation: Operation, error: &ClientError) -> Failure {
    match error {
        ClientError::APIError { code, .. } => match code {
            403 => Failure::Denied,
            400 | 404 => Failure::Final(operation.item_failure()),
            429 | 500..=599 => Failure::Retry(format!("vault answered {code}")),
            other => Failure::Final(KekError::Unavailable(format!("vault answered {other}"))),
        },
        ClientError::ResponseDataEmptyError | ClientError::ResponseEmptyError => {
            Failure::Final(KekError::Unavailable("vault answered without data".into()))
        }
        ClientError::RestClientError { source } => match source {
            rustify::errors::ClientError::ServerResponseError { code, .. } => match code {
                403 => Failure::Denied,
                400 | 404 => Failure::Final(operation.item_failure()),
                _ => Failure::Retry(format!("vault answered {code}")),
            },
            rustify::errors::ClientError::ResponseParseError { .. } => Failure::Final(
                KekError::Unavailable("vault's answer could not be read".into()),
            ),
            other => Failure::Retry(format!("vault cannot be reached: {}", error_chain(other))),
        },
        other => Failure::Retry(describe(other)),
    }
}

pub(super) fn unavailable_after_deadline(
    operation: Operation,
    settings: &VaultSettings,
) -> KekError {
    tracing::warn!(
        operation = operation.name(),
        timeout_ms = settings.timeout.as_millis() as u64,
        "vault: no answer within kek.timeout_ms"
    );
    KekError::Unavailable(format!(
        "vault did not answer {} within {} ms",
        operation.name(),
        settings.timeout.as_millis()
    ))
}

/// A vaultrs error in words that hold no secret (vaultrs errors carry
/// status codes and Vault's messages, never request bodies).
pub(super) fn describe(error: &ClientError) -> String {
    match error {
        ClientError::APIError { code, errors } => {
            format!("vault answered {code}: {}", errors.join("; "))
        }
        other => other.to_string(),
    }
}

/// An error and its causes in one line (transport errors hide the useful
/// part, such as a certificate problem, in their sources).
pub(super) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
