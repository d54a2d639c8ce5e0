//! Authorization: which RPCs a principal may call. Per-format reveal,
//! purposes and rate limits join here with the policy engine.
//!
//! It decides and logs denials (principal and RPC only), never sees a
//! request body.

use std::sync::Arc;

use tonic::Status;

/// The RPCs of `TokenVault`, by their snake_case config names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rpc {
    Tokenize,
    Detokenize,
    RedactText,
    RestoreText,
    ForgetSubject,
    ExportSubject,
}

impl Rpc {
    pub const ALL: [Rpc; 6] = [
        Rpc::Tokenize,
        Rpc::Detokenize,
        Rpc::RedactText,
        Rpc::RestoreText,
        Rpc::ForgetSubject,
        Rpc::ExportSubject,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Rpc::Tokenize => "tokenize",
            Rpc::Detokenize => "detokenize",
            Rpc::RedactText => "redact_text",
            Rpc::RestoreText => "restore_text",
            Rpc::ForgetSubject => "forget_subject",
            Rpc::ExportSubject => "export_subject",
        }
    }

    pub fn from_name(name: &str) -> Option<Rpc> {
        Rpc::ALL.into_iter().find(|rpc| rpc.name() == name)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub name: Arc<str>,
    allowed: u8,
}

impl Principal {
    pub fn new(name: &str, allow: impl IntoIterator<Item = Rpc>) -> Self {
        Principal {
            name: name.into(),
            allowed: allow.into_iter().fold(0, |bits, rpc| bits | rpc.bit()),
        }
    }

    pub fn may_call(&self, rpc: Rpc) -> bool {
        self.allowed & rpc.bit() != 0
    }

    /// PERMISSION_DENIED unless the policy allows `rpc`.
    pub fn require(&self, rpc: Rpc) -> Result<(), Status> {
        if self.may_call(rpc) {
            Ok(())
        } else {
            tracing::warn!(principal = %self.name, rpc = rpc.name(), "call denied by policy");
            Err(Status::permission_denied(format!(
                "principal {} may not call {}",
                self.name,
                rpc.name()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_names_round_trip() {
        for rpc in Rpc::ALL {
            assert_eq!(Rpc::from_name(rpc.name()), Some(rpc));
        }
        assert_eq!(Rpc::from_name("detokenise"), None);
    }

    #[test]
    fn principal_may_call_only_what_it_is_allowed() {
        let chat = Principal::new("chat", [Rpc::Tokenize, Rpc::RedactText]);
        assert!(chat.may_call(Rpc::Tokenize) && chat.may_call(Rpc::RedactText));
        assert!(!chat.may_call(Rpc::Detokenize));
        assert_eq!(
            chat.require(Rpc::ExportSubject).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
    }
}
