//! tokenvault: a gRPC tokenization vault that keeps customers' sensitive
//! data out of chat systems.
//!
//! Layers, bottom up; a module uses only its own layer and those below
//! (checked by the `layering` test, which lists the edges that still run
//! back up until they are moved):
//!
//! 1. leaves: `clock`, `rpc` (the RPCs' names), `crypto`, `token` (formats), `scan` (detection in
//!    text), `config` (the file's schema), `pb` (generated);
//! 2. backends: `kek` (key-encryption-key providers), `store`
//!    (persistence), `erasure` (receipts and the ledger), `metrics`,
//!    `notify` (alert sinks);
//! 3. `audit` (the tamper-evident log), `policy` (access control) and
//!    `anomaly` (behavioural baselines and detectors);
//! 4. `vault`: the service logic;
//! 5. `app`: the composition root (builds a vault from a configuration,
//!    choosing its store and key provider); `exposure`: what a
//!    configuration would expose;
//! 6. `api`: gRPC and HTTP/JSON, authentication, status codes;
//! 7. `cli`: the command line, `serve` among it.

pub mod anomaly;
pub mod api;
pub mod app;
pub mod audit;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod erasure;
pub mod exposure;
pub mod kek;
#[cfg(test)]
mod layering;
pub mod metrics;
pub mod notify;
pub mod policy;
pub mod rpc;
pub mod scan;
pub mod store;
pub mod token;
pub mod vault;

/// Code generated from `proto/tokenvault/v1/tokenvault.proto`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("tokenvault.v1");
    // proto3 canonical JSON for every message and enum above (pbjson).
    include!(concat!(env!("OUT_DIR"), "/tokenvault.v1.serde.rs"));

    /// The encoded descriptor set, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("tokenvault_descriptor");

    /// The operator API on the data directory's Unix socket.
    #[allow(clippy::all, missing_docs)]
    pub mod admin {
        tonic::include_proto!("tokenvault.admin.v1");
    }
}
