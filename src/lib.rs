//! tokenvault: a gRPC tokenization vault that keeps customers' sensitive
//! data out of chat systems.
//!
//! Layers, outside in: `api` (gRPC, auth, status codes) → `vault`
//! (service logic) → `token` (formats), `crypto` (sealing, derivation),
//! `kek` (key-encryption-key providers) and `store` (persistence).

pub mod api;
pub mod audit;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod erasure;
pub mod exposure;
pub mod kek;
pub mod metrics;
pub mod policy;
pub mod scan;
pub mod store;
pub mod token;
pub mod vault;

/// Code generated from `proto/tokenvault/v1/tokenvault.proto`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("tokenvault.v1");

    /// The encoded descriptor set, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("tokenvault_descriptor");

    /// The operator API on the data directory's Unix socket.
    #[allow(clippy::all, missing_docs)]
    pub mod admin {
        tonic::include_proto!("tokenvault.admin.v1");
    }
}
