//! The RPCs of the `TokenVault` service, as configuration, policy, metrics
//! and the API name them. A leaf: it imports nothing of the crate.

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

    /// The RPC's bit in a set of allowed RPCs.
    pub(crate) fn bit(self) -> u8 {
        1 << (self as u8)
    }
}
