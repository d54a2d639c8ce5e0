//! Cryptographic building blocks of the vault: key types, sealing of values
//! (AES-256-GCM-SIV) and keyed hashing (HMAC-SHA256, HKDF-SHA256).
//!
//! This module owns every use of a cipher or MAC in the crate. It never logs,
//! never formats key bytes, and never returns an error that says more than
//! "this did not open".

pub mod envelope;
pub mod keys;

pub use envelope::{open, seal, token_aad, Sealed, SealingKey, NONCE_LEN};
pub use keys::{
    random_bytes, IndexKey, KeyedMac, SecretKey, SubjectHash, SubjectKeys, SystemKeys, KEY_LEN,
};

/// Errors of this module. Deliberately bare: a failure to open says nothing
/// an attacker could use (which part of the input was wrong).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CryptoError {
    /// The ciphertext, nonce, key or associated data does not match.
    #[error("sealed value failed to open")]
    OpenFailed,
    /// The cipher refused to seal (only for absurd plaintext sizes).
    #[error("value could not be sealed")]
    SealFailed,
    /// The operating system's random source failed.
    #[error("random source unavailable")]
    Random,
}
