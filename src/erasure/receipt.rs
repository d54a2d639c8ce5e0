//! Erasure receipts: a statement that a subject (by keyed hash) was erased
//! at a time, with how many tokens and the audit record's sequence number,
//! under a MAC with a vault key (derived from the system key), so only the
//! vault that erased can issue or verify one.
//!
//! The receipt file is one line of JSON in a canonical form:
//!
//! ```text
//! {"version":2,"subject_hash":"<64 hex>","erased_at_unix":N,"tokens_erased":N,"audit_sequence":N,"at_return":"key_gone","purged_by_unix":N,"mac":"<64 hex>"}
//! ```
//!
//! `at_return` says what held when ForgetSubject returned ([`AtReturn`]),
//! `purged_by_unix` by when the subject's ciphertexts and index entries
//! are physically removed. Version 1 receipts (issued before those two
//! fields) still parse and verify, without them.
//!
//! Parsing accepts exactly that form (with or without a final newline):
//! any changed byte either breaks the form or the MAC.

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::crypto::SecretKey;

/// Domain separation: a MAC made for something else never verifies here.
const MAC_LABEL: &[u8] = b"tokenvault/v1/erasure-receipt";
const VERSION_1: u32 = 1;
const VERSION: u32 = 2;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReceiptError {
    #[error("not a tokenvault erasure receipt: {0}")]
    Malformed(&'static str),
    #[error("the receipt's MAC does not match: it was altered or issued by another vault")]
    BadMac,
}

/// What held when a forget returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtReturn {
    /// No file the store keeps holds any of the subject's data (a full
    /// purge ran before the return).
    EverythingGone,
    /// No file the store keeps holds the subject's wrapped DEK, so its
    /// ciphertexts are noise; they and its index entries leave the files
    /// by `purged_by_unix`.
    KeyGone,
    /// The key row is deleted and its table vacuumed (PostgreSQL): a copy
    /// taken before (WAL segments, an archive, a base backup) still holds
    /// the wrapped DEK until the KEK version that wrapped it is trimmed.
    KeyDeleted,
}

impl AtReturn {
    pub fn name(self) -> &'static str {
        match self {
            AtReturn::EverythingGone => "everything_gone",
            AtReturn::KeyGone => "key_gone",
            AtReturn::KeyDeleted => "key_deleted",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        [
            AtReturn::EverythingGone,
            AtReturn::KeyGone,
            AtReturn::KeyDeleted,
        ]
        .into_iter()
        .find(|at_return| at_return.name() == name)
    }
}

/// The physical-erasure guarantees of a receipt (version 2 on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guarantees {
    pub at_return: AtReturn,
    /// By when (unix seconds) the ciphertexts and index entries are gone.
    pub purged_by_unix: i64,
}

/// What a receipt states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub subject_hash: [u8; 32],
    pub erased_at_unix: i64,
    pub tokens_erased: u64,
    pub audit_sequence: u64,
    /// None on a version 1 receipt.
    pub guarantees: Option<Guarantees>,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    at_return: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    purged_by_unix: Option<i64>,
    mac: String,
}

impl Receipt {
    fn mac(&self, key: &SecretKey) -> [u8; 32] {
        let (erased_at, tokens, sequence) = (
            self.erased_at_unix.to_be_bytes(),
            self.tokens_erased.to_be_bytes(),
            self.audit_sequence.to_be_bytes(),
        );
        match &self.guarantees {
            None => key.mac(&[
                MAC_LABEL,
                &VERSION_1.to_be_bytes(),
                &self.subject_hash,
                &erased_at,
                &tokens,
                &sequence,
            ]),
            Some(guarantees) => key.mac(&[
                MAC_LABEL,
                &VERSION.to_be_bytes(),
                &self.subject_hash,
                &erased_at,
                &tokens,
                &sequence,
                guarantees.at_return.name().as_bytes(),
                &guarantees.purged_by_unix.to_be_bytes(),
            ]),
        }
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
        let guarantees = self.receipt.guarantees;
        let file = ReceiptFile {
            version: if guarantees.is_some() {
                VERSION
            } else {
                VERSION_1
            },
            subject_hash: hex::encode(self.receipt.subject_hash),
            erased_at_unix: self.receipt.erased_at_unix,
            tokens_erased: self.receipt.tokens_erased,
            audit_sequence: self.receipt.audit_sequence,
            at_return: guarantees.map(|g| g.at_return.name().to_string()),
            purged_by_unix: guarantees.map(|g| g.purged_by_unix),
            mac: hex::encode(self.mac),
        };
        // Serialising a struct of strings and integers cannot fail.
        serde_json::to_string(&file).unwrap_or_default()
    }

    /// A receipt from its fields as they travel (hashes in hex): the file
    /// form and the gRPC `ErasureReceipt` message.
    /// `at_return` empty: a version 1 receipt (without guarantees).
    pub fn from_fields(
        subject_hash_hex: &str,
        erased_at_unix: i64,
        tokens_erased: u64,
        audit_sequence: u64,
        (at_return, purged_by_unix): (&str, i64),
        mac_hex: &str,
    ) -> Result<Self, ReceiptError> {
        let guarantees = match at_return {
            "" => None,
            name => Some(Guarantees {
                at_return: AtReturn::from_name(name)
                    .ok_or(ReceiptError::Malformed("unknown at_return"))?,
                purged_by_unix,
            }),
        };
        Ok(SignedReceipt {
            receipt: Receipt {
                subject_hash: hex32(subject_hash_hex)?,
                erased_at_unix,
                tokens_erased,
                audit_sequence,
                guarantees,
            },
            mac: hex32(mac_hex)?,
        })
    }

    /// Parses the canonical form; anything else is malformed.
    pub fn parse(text: &str) -> Result<Self, ReceiptError> {
        let line = text.strip_suffix('\n').unwrap_or(text);
        let file: ReceiptFile =
            serde_json::from_str(line).map_err(|_| ReceiptError::Malformed("not receipt JSON"))?;
        let guarantees = match (file.version, &file.at_return, file.purged_by_unix) {
            (VERSION_1, None, None) => ("", 0),
            (VERSION, Some(at_return), Some(purged_by)) if !at_return.is_empty() => {
                (at_return.as_str(), purged_by)
            }
            (VERSION_1 | VERSION, _, _) => {
                return Err(ReceiptError::Malformed("fields do not match the version"))
            }
            _ => return Err(ReceiptError::Malformed("unknown version")),
        };
        let signed = SignedReceipt::from_fields(
            &file.subject_hash,
            file.erased_at_unix,
            file.tokens_erased,
            file.audit_sequence,
            guarantees,
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

    fn receipt_v1() -> Receipt {
        Receipt {
            subject_hash: [0xab; 32],
            erased_at_unix: 1_764_000_000,
            tokens_erased: 1000,
            audit_sequence: 42,
            guarantees: None,
        }
    }

    fn receipt() -> Receipt {
        Receipt {
            guarantees: Some(Guarantees {
                at_return: AtReturn::KeyGone,
                purged_by_unix: 1_764_086_400,
            }),
            ..receipt_v1()
        }
    }

    #[test]
    fn known_answer() {
        // Pins the MAC input layout: a change here is a format change and
        // makes every issued receipt unverifiable.
        // The MAC was computed independently (Python's hmac over the
        // length-prefixed parts).
        let signed = receipt_v1().sign(&key(7));
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
    fn a_version_2_receipt_states_its_guarantees_under_the_mac() {
        let signed = receipt().sign(&key(7));
        assert_eq!(
            signed.to_json(),
            format!(
                "{{\"version\":2,\"subject_hash\":\"{}\",\"erased_at_unix\":1764000000,\"tokens_erased\":1000,\"audit_sequence\":42,\"at_return\":\"key_gone\",\"purged_by_unix\":1764086400,\"mac\":\"{}\"}}",
                "ab".repeat(32),
                hex::encode(signed.mac)
            )
        );
        // A stronger claim, or a later deadline, under the same MAC fails.
        for changed in [
            Guarantees {
                at_return: AtReturn::EverythingGone,
                purged_by_unix: 1_764_086_400,
            },
            Guarantees {
                at_return: AtReturn::KeyGone,
                purged_by_unix: 1_764_086_401,
            },
        ] {
            let mut forged = signed.clone();
            forged.receipt.guarantees = Some(changed);
            assert_eq!(forged.verify(&key(7)), Err(ReceiptError::BadMac));
        }
        // Dropping the guarantees (posing as version 1) fails too.
        let mut downgraded = signed.clone();
        downgraded.receipt.guarantees = None;
        assert_eq!(downgraded.verify(&key(7)), Err(ReceiptError::BadMac));
        let v1_claiming_v2 = signed.to_json().replace("\"version\":2", "\"version\":1");
        assert!(SignedReceipt::parse(&v1_claiming_v2).is_err());
    }

    #[test]
    fn a_version_1_receipt_still_verifies() {
        let signed = receipt_v1().sign(&key(1));
        let parsed = SignedReceipt::parse(&signed.to_json()).expect("parse");
        assert_eq!(parsed.receipt.guarantees, None);
        assert_eq!(parsed.verify(&key(1)), Ok(()));
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
