//! One audit record and its canonical encoding.
//!
//! A record is one line of JSON, the same bytes in the store and in the
//! file. Fields in this order, no whitespace, UTF-8 unescaped (serde_json's
//! compact output of [`AuditRecord`]):
//!
//! ```text
//! {"v":1,"seq":7,"time_unix_ms":1764090000000,"principal":"billing",
//!  "actor":null,"rpc":"detokenize","purpose":"refund",
//!  "subject_hashes":[],"token_hashes":["<hex HMAC, 128 bits>",..],"count":2,
//!  "outcome":{"result":"ok"},"prev":"<hex SHA-256>","hash":"<hex SHA-256>"}
//! ```
//!
//! Listed subject and token hashes are the first 128 bits of the keyed
//! hash ([`ListedHash`]); records written before that list all 256 bits,
//! whose hex begins with the same 32 digits, so one prefix finds a token
//! in old and new records alike. The chain's `prev` and `hash` are whole.
//!
//! `hash` covers the canonical bytes of the record without its `hash`
//! field (the same JSON, ending after `prev`), so it covers `prev` and the
//! chain links every record to all before it. The first record's `prev` is
//! 64 zeros. A stored line is accepted only if it re-encodes to exactly
//! its own bytes, so no byte can change without changing the hash input.
//!
//! Two versions, by `v`: records of version 1 (written before the chain
//! had a key) are hashed with plain SHA-256, so anyone could rebuild
//! them; version 2 records ([`RECORD_VERSION`], all new ones) with
//! HMAC-SHA256 under the chain key ([`ChainKey`], derived from the
//! system key), of the line's 4-byte big-endian length and its bytes.
//! Rebuilding or extending a version 2 chain needs the vault's key, and
//! so does verifying it. A chain may go from version 1 to 2 once, never
//! back (see `verify`).

use serde::{Deserialize, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::crypto::{KeyedMac, SecretKey};

/// The version of new records: chained under the chain key.
pub const RECORD_VERSION: u32 = 2;
/// Records written before the chain had a key: chained with SHA-256.
pub const UNKEYED_VERSION: u32 = 1;

/// The key of the chain's MACs (version 2 records), derived from the
/// audit-hash key, which is derived from the system key: only the vault
/// can extend or verify its chain.
#[derive(Clone, Debug)]
pub struct ChainKey(KeyedMac);

impl ChainKey {
    pub fn from_audit_hash_key(key: &SecretKey) -> Self {
        ChainKey(key.derive(b"tokenvault/v1/audit/chain").keyed_mac())
    }

    fn hash(&self, version: u32, line: &[u8]) -> Option<[u8; 32]> {
        match version {
            UNKEYED_VERSION => Some(Sha256::digest(line).into()),
            RECORD_VERSION => Some(self.0.mac(&[line])),
            _ => None,
        }
    }
}

/// `prev` of the first record.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A record as read (`H` = `String`) or as the writer drafts it (`H` =
/// [`ListedHash`], the same JSON without an allocation per listed hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord<H = String> {
    pub v: u32,
    pub seq: u64,
    pub time_unix_ms: i64,
    pub principal: String,
    pub actor: Option<String>,
    pub rpc: String,
    pub purpose: String,
    pub subject_hashes: Vec<H>,
    pub token_hashes: Vec<H>,
    pub count: u64,
    pub outcome: RecordOutcome,
    pub prev: String,
    /// Absent only while the hash is computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

/// The outcome as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case", deny_unknown_fields)]
pub enum RecordOutcome {
    Ok,
    Denied { code: String, reason: String },
    Alert { kind: String, detail: String },
}

/// Why a stored line is not a valid record (before chain checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineProblem {
    /// Not JSON of a record.
    Malformed,
    /// A record, but not in its canonical encoding.
    NotCanonical,
    /// The hash field does not match the record's bytes.
    HashMismatch,
}

impl<H: Serialize> AuditRecord<H> {
    /// Seals the record: computes `hash` (as its version says) and
    /// returns the line (without a newline) and the hash.
    pub fn seal(mut self, key: &ChainKey) -> Result<(Vec<u8>, String), serde_json::Error> {
        self.hash = None;
        let mut line = Vec::with_capacity(self.encoded_len_estimate());
        serde_json::to_writer(&mut line, &self)?;
        let hash = key
            .hash(self.v, &line)
            .ok_or_else(|| serde::ser::Error::custom("unknown record version"))?;
        let hash = hex32(&hash);
        // `hash` is the last field: the sealed line is the hashed one with
        // it added before the closing brace, as serializing again with
        // `hash` set would write it (`open` checks exactly that).
        if line.pop() != Some(b'}') {
            return Err(serde::ser::Error::custom(
                "a record serializes to an object",
            ));
        }
        line.extend_from_slice(b",\"hash\":\"");
        line.extend_from_slice(hash.as_bytes());
        line.extend_from_slice(b"\"}");
        Ok((line, hash))
    }

    /// About the length of the sealed line, so that it is written into one
    /// allocation (a 100-token record is 7 KB; growing to it from empty
    /// copied it ten times).
    fn encoded_len_estimate(&self) -> usize {
        let hashes = self.subject_hashes.len() + self.token_hashes.len();
        let text = self.principal.len()
            + self.actor.as_ref().map_or(0, String::len)
            + self.purpose.len()
            + match &self.outcome {
                RecordOutcome::Ok => 0,
                RecordOutcome::Denied { code, reason } => code.len() + reason.len(),
                RecordOutcome::Alert { kind, detail } => kind.len() + detail.len(),
            };
        // Field names, numbers and the two 64-digit hashes; each listed
        // hash is 32 digits, two quotes and a comma.
        384 + (LISTED_HASH_DIGITS + 3) * hashes + text
    }
}

impl AuditRecord {
    /// Parses a stored line and checks it is canonical and its hash is
    /// right (under `key` for version 2). Chain links (`seq`, `prev`) are
    /// the verifier's business.
    pub fn open(line: &[u8], key: &ChainKey) -> Result<AuditRecord, LineProblem> {
        let record: AuditRecord =
            serde_json::from_slice(line).map_err(|_| LineProblem::Malformed)?;
        let stated = record.hash.clone().ok_or(LineProblem::Malformed)?;
        let canonical = serde_json::to_vec(&record).map_err(|_| LineProblem::Malformed)?;
        if canonical != line {
            return Err(LineProblem::NotCanonical);
        }
        let (_, hash) = record
            .clone()
            .seal(key)
            .map_err(|_| LineProblem::Malformed)?;
        if hash != stated {
            return Err(LineProblem::HashMismatch);
        }
        Ok(record)
    }

    /// The record's own hash (set on every opened or sealed record).
    pub fn hash(&self) -> &str {
        self.hash.as_deref().unwrap_or_default()
    }
}

/// Lower-case hex of a hash or MAC.
pub(crate) fn hex32(bytes: &[u8; 32]) -> String {
    HexDigest::of(bytes).as_str().to_owned()
}

/// The first `N / 2` bytes of a 32-byte hash or MAC as `N` lower-case hex
/// digits, held inline: a Detokenize of 100 tokens lists 100 of them per
/// record, and a `String` each cost an allocation and a
/// character-by-character copy.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HexDigits<const N: usize>([u8; N]);

/// A whole 32-byte hash as 64 hex digits (the chain's `prev` and `hash`).
pub type HexDigest = HexDigits<64>;

/// Hex digits of a listed subject or token hash.
pub const LISTED_HASH_DIGITS: usize = 32;

/// A subject or token hash as listed in a record: the first 128 bits of
/// its HMAC-SHA256. The list is most of a batch reveal's record (100
/// tokens: 6.7 KB of 7.1 KB at 256 bits), and every byte of it is written
/// twice, hashed into the chain and shipped to a SIEM. 128 bits keep a
/// collision between two of a vault's tokens out of reach (about 2^64
/// tokens before one is likely), and without the audit-hash key nobody
/// can compute a hash to look for.
pub type ListedHash = HexDigits<LISTED_HASH_DIGITS>;

impl<const N: usize> HexDigits<N> {
    pub fn of(bytes: &[u8; 32]) -> Self {
        const {
            assert!(
                N.is_multiple_of(2) && N <= 64,
                "at most 64 digits of 32 bytes"
            )
        };
        let mut digits = [0u8; N];
        // Cannot fail: the output is exactly twice the input.
        let _ = hex::encode_to_slice(&bytes[..N / 2], &mut digits);
        HexDigits(digits)
    }

    pub fn as_str(&self) -> &str {
        // Hex digits are ASCII: this never falls back.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl<const N: usize> std::fmt::Debug for HexDigits<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// As a string, exactly as the `String` it stands for.
impl<const N: usize> Serialize for HexDigits<N> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The chain key of the tests.
    pub(crate) fn key() -> ChainKey {
        ChainKey::from_audit_hash_key(&SecretKey::from_slice(&[5; 32]).expect("key"))
    }

    pub(crate) fn sample(seq: u64, prev: &str) -> AuditRecord {
        AuditRecord {
            v: RECORD_VERSION,
            seq,
            time_unix_ms: 1_764_090_000_000,
            principal: "billing".into(),
            actor: None,
            rpc: "detokenize".into(),
            purpose: "refund".into(),
            subject_hashes: vec![],
            token_hashes: vec!["ab".repeat(32)],
            count: 1,
            outcome: RecordOutcome::Ok,
            prev: prev.into(),
            hash: None,
        }
    }

    #[test]
    fn hex32_is_lower_case_hex() {
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = (i as u8).wrapping_mul(37).wrapping_add(0xa5);
        }
        assert_eq!(hex32(&bytes), hex::encode(bytes));
        assert_eq!(hex32(&[0xff; 32]), "ff".repeat(32));
    }

    fn with_digests(
        record: &AuditRecord,
        subjects: &[[u8; 32]],
        tokens: &[[u8; 32]],
    ) -> AuditRecord<ListedHash> {
        AuditRecord {
            v: record.v,
            seq: record.seq,
            time_unix_ms: record.time_unix_ms,
            principal: record.principal.clone(),
            actor: record.actor.clone(),
            rpc: record.rpc.clone(),
            purpose: record.purpose.clone(),
            subject_hashes: subjects.iter().map(ListedHash::of).collect(),
            token_hashes: tokens.iter().map(ListedHash::of).collect(),
            count: record.count,
            outcome: record.outcome.clone(),
            prev: record.prev.clone(),
            hash: None,
        }
    }

    proptest::proptest! {
        /// The writer's drafts seal to the very bytes (and hash) of the
        /// record as read back, whatever the text fields hold.
        #[test]
        fn a_draft_seals_like_the_record_it_stands_for(
            subjects in proptest::collection::vec(proptest::array::uniform32(proptest::num::u8::ANY), 0..3),
            tokens in proptest::collection::vec(proptest::array::uniform32(proptest::num::u8::ANY), 0..120),
            principal in "\\PC{0,20}",
            purpose in "(?s).{0,40}",
            actor in proptest::option::of("\\PC{0,10}"),
        ) {
            let mut record = sample(5, GENESIS_PREV);
            record.principal = principal;
            record.purpose = purpose;
            record.actor = actor;
            let draft = with_digests(&record, &subjects, &tokens);
            record.subject_hashes = subjects.iter().map(|s| hex::encode(&s[..16])).collect();
            record.token_hashes = tokens.iter().map(|t| hex::encode(&t[..16])).collect();
            let drafted = draft.seal(&key()).expect("seal draft");
            let sealed = record.seal(&key()).expect("seal record");
            proptest::prop_assert_eq!(&drafted, &sealed);
            let opened = AuditRecord::open(&drafted.0, &key()).expect("the draft's line opens");
            proptest::prop_assert_eq!(opened.hash(), drafted.1.as_str());
        }
    }

    #[test]
    fn sealed_line_opens_and_hash_covers_prev() {
        let (line, hash) = sample(1, GENESIS_PREV).seal(&key()).expect("seal");
        let opened = AuditRecord::open(&line, &key()).expect("open");
        assert_eq!(opened.hash(), hash);
        let (_, other) = sample(1, &"1".repeat(64)).seal(&key()).expect("seal");
        assert_ne!(hash, other, "prev is part of the hash input");
        let text = String::from_utf8(line).expect("utf-8");
        assert!(text.starts_with("{\"v\":2,\"seq\":1,"), "{text}");
        assert!(text.ends_with(&format!(",\"hash\":\"{hash}\"}}")), "{text}");
    }

    #[test]
    fn new_records_need_the_chain_key_and_old_ones_still_open() {
        let (line, hash) = sample(1, GENESIS_PREV).seal(&key()).expect("seal");
        let other = ChainKey::from_audit_hash_key(&SecretKey::from_slice(&[6; 32]).expect("key"));
        assert_eq!(
            AuditRecord::open(&line, &other),
            Err(LineProblem::HashMismatch),
            "a version 2 record opens under its own vault's key only"
        );
        let hashed = |sealed: &[u8]| [&sealed[..sealed.len() - 75], b"}"].concat();
        let sha = hex32(&Sha256::digest(hashed(&line)).into());
        assert_ne!(hash, sha, "not a plain SHA-256");
        // A record of version 1 (SHA-256, no key), as older servers wrote.
        let mut old = sample(1, GENESIS_PREV);
        old.v = UNKEYED_VERSION;
        let (old_line, old_hash) = old.seal(&other).expect("seal");
        let unkeyed = hex32(&Sha256::digest(hashed(&old_line)).into());
        assert_eq!(old_hash, unkeyed);
        assert_eq!(
            AuditRecord::open(&old_line, &key()).expect("opens").hash(),
            old_hash
        );
    }

    #[test]
    fn every_single_byte_change_is_rejected() {
        let (line, _) = sample(3, GENESIS_PREV).seal(&key()).expect("seal");
        for i in 0..line.len() {
            let mut changed = line.clone();
            changed[i] ^= 0x01;
            assert!(
                AuditRecord::open(&changed, &key()).is_err(),
                "byte {i} changed went unnoticed"
            );
        }
    }

    #[test]
    fn denied_and_alert_outcomes_round_trip() {
        for outcome in [
            RecordOutcome::Denied {
                code: "permission_denied".into(),
                reason: "principal chat may not call detokenize".into(),
            },
            RecordOutcome::Alert {
                kind: "rate".into(),
                detail: "over 100/min".into(),
            },
        ] {
            let mut record = sample(2, GENESIS_PREV);
            record.outcome = outcome.clone();
            let (line, _) = record.seal(&key()).expect("seal");
            assert_eq!(
                AuditRecord::open(&line, &key()).expect("open").outcome,
                outcome
            );
        }
    }
}
