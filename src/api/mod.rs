//! The gRPC surface: authentication, the `TokenVault` service, the one
//! mapping of errors to status codes, and the server with health and
//! reflection.
//!
//! It converts between protobuf messages and the vault's types and checks
//! who may call what; it holds no business logic of its own and never logs
//! a request body.

pub mod admin;
pub mod auth;
pub mod denials;
pub mod server;
pub mod service;
pub mod status;

pub use crate::policy::Principal;
pub use crate::rpc::Rpc;
pub use auth::Authenticator;
