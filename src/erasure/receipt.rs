//! Erasure receipts: a statement that a subject (by keyed hash) was erased
//! at a time, with how many tokens and the audit record's sequence number,
//! under a MAC with a vault key (derived from the system key), so only the
//! vault that erased can issue or verify one.
//!
//! The receipt file is one line of JSON in a canonical form:
//!
//! ```text
//! {"version":1,"subject_hash":"<64 hex>","erased_at_unix":N,"tokens_erased":N,"audit_sequence":N,"mac":"<64 hex>"}
//! ```
//!
//! Parsing accepts exactly that form (with or without a final newline):
//! any changed byte either breaks the form or the MAC.

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::crypto::SecretKey;

/// Domain separation: a MAC made for something else never verifies here.
const MAC_LABEL: &[u8] = b"tokenvault/v1/erasure-receipt";
const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReceiptError {
    #[error("not a tokenvault erasure receipt: {0}")]
    Malformed(&'static str),
    #[error("the receipt's MAC does not match: it was altered or issued by another vault")]
    BadMac,
}

/// What a receipt states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub subject_hash: [u8; 32],
    pub erased_at_unix: i64,
    pub tokens_erased: u64,
    pub audit_sequence: u64,
}

/// A receipt with its MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedReceipt {
    pub receipt: Receipt,
    pub mac: [u8; 32],
}

/// The file form; field order is the canonical order.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceiptFile {
    version: u32,
    subject_hash: String,
    erased_at_unix: i64,
    tokens_erased: u64,
    audit_sequence: u64,
    mac: String,
}

impl Receipt {
    fn mac(&self, key: &SecretKey) -> [u8; 32] {
        key.mac(&[
            MAC_LABEL,
            &VERSION.to_be_bytes(),
            &self.subject_hash,
            &self.erased_at_unix.to_be_bytes(),
            &self.tokens_erased.to_be_bytes(),
            &self.audit_sequence.to_be_bytes(),
        ])
    }

    pub fn sign(self, key: &SecretKey) -> SignedReceipt {
        let mac = self.mac(key);
        SignedReceipt { receipt: self, mac }
    }
}

impl SignedReceipt {
    /// Checks the MAC in constant time.
    pub fn verify(&self, key: &SecretKey) -> Result<(), ReceiptError> {
        if bool::from(self.receipt.mac(key).ct_eq(&self.mac)) {
            Ok(())
        } else {
            Err(ReceiptError::BadMac)
        }
    }

    /// The canonical one-line JSON form (no final newline).
    pub fn to_json(&self) -> String {
        let file = ReceiptFile {
            version: VERSION,
            subject_hash: hex::encode(self.receipt.subject_hash),
            erased_at_unix: self.receipt.erased_at_unix,
            tokens_erased: self.receipt.tokens_erased,
            audit_sequence: self.receipt.audit_sequence,
            mac: hex::encode(self.mac),
        };
        // Serialising a struct of strings and integers cannot fail.
        serde_json::to_string(&file).unwrap_or_default()
    }

    /// A receipt from its fields as they travel (hashes in hex): the file
    /// form and the gRPC `ErasureReceipt` message.
    pub fn from_fields(
        subject_hash_hex: &str,
        erased_at_unix: i64,
        tokens_erased: u64,
        audit_sequence: u64,
        mac_hex: &str,
    ) -> Result<Self, ReceiptError> {
        Ok(SignedReceipt {
            receipt: Receipt {
                subject_hash: hex32(subject_hash_hex)?,
                erased_at_unix,
                tokens_erased,
                audit_sequence,
            },
            mac: hex32(mac_hex)?,
        })
    }

    /// Parses the canonical form; anything else is malformed.
    pub fn parse(text: &str) -> Result<Self, ReceiptError> {
        let line = text.strip_suffix('\n').unwrap_or(text);
        let file: ReceiptFile =
            serde_json::from_str(line).map_err(|_| ReceiptError::Malformed("not receipt JSON"))?;
        if file.version != VERSION {
            return Err(ReceiptError::Malformed("unknown version"));
        }
        let signed = SignedReceipt::from_fields(
            &file.subject_hash,
            file.erased_at_unix,
            file.tokens_erased,
            file.audit_sequence,
            &file.mac,
        )?;
        if signed.to_json() != line {
            return Err(ReceiptError::Malformed("not in canonical form"));
        }
        Ok(signed)
    }
}

fn hex32(text: &str) -> Result<[u8; 32], ReceiptError> {
    hex::decode(text)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(ReceiptError::Malformed("a hash is not 64 hex digits"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SecretKey {
        SecretKey::from_slice(&[byte; 32]).expect("32 bytes")
    }

    fn receipt() -> Receipt {
        Receipt {
            subject_hash: [0xab; 32],
            erased_at_unix: 1_764_000_000,
            tokens_erased: 1000,
            audit_sequence: 42,
        }
    }

    #[test]
    fn known_answer() {
        // Pins the MAC input layout: a change here is a format change and
        // makes every issued receipt unverifiable.
        // The MAC was computed independently (Python's hmac over the
        // length-prefixed parts).
        let signed = receipt().sign(&key(7));
        assert_eq!(
            hex::encode(signed.mac),
            "cb09bb5dbb824ec32a1e2e4f6f9a7a575015c42dabc02f12446f55e3336592af"
        );
        assert_eq!(
            signed.to_json(),
            format!(
                "{{\"version\":1,\"subject_hash\":\"{}\",\"erased_at_unix\":1764000000,\"tokens_erased\":1000,\"audit_sequence\":42,\"mac\":\"{}\"}}",
                "ab".repeat(32),
                hex::encode(signed.mac)
            )
        );
    }

    #[test]
    fn round_trips_and_verifies() {
        let signed = receipt().sign(&key(1));
        let parsed = SignedReceipt::parse(&format!("{}\n", signed.to_json())).expect("parse");
        assert_eq!(parsed, signed);
        assert_eq!(parsed.verify(&key(1)), Ok(()));
        assert_eq!(parsed.verify(&key(2)), Err(ReceiptError::BadMac));
    }

    #[test]
    fn every_changed_byte_fails() {
        let json = receipt().sign(&key(1)).to_json();
        for i in 0..json.len() {
            for replacement in [b'0', b'1', b'f', b' ', b'"'] {
                let mut bytes = json.clone().into_bytes();
                if bytes[i] == replacement {
                    continue;
                }
                bytes[i] = replacement;
                let Ok(text) = String::from_utf8(bytes) else {
                    continue;
                };
                let verdict = SignedReceipt::parse(&text).and_then(|r| r.verify(&key(1)));
                assert!(
                    verdict.is_err(),
                    "byte {i} changed to {replacement} still verifies"
                );
            }
        }
    }
}
