//! The network surface: authentication, the `TokenVault` service, the one
//! mapping of errors to status codes, the gRPC server with health and
//! reflection, and the HTTP/JSON API that translates to the same service.
//!
//! It converts between protobuf messages and the vault's types and checks
//! who may call what; it holds no business logic of its own and never logs
//! a request body.

pub mod admin;
mod anomaly;
pub mod auth;
pub mod denials;
pub mod gate;
pub mod http;
pub mod ready;
pub mod server;
pub mod service;
pub mod status;

pub use crate::policy::Principal;
pub use crate::rpc::Rpc;
pub use auth::Authenticator;
