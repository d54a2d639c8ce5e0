//! The entry format and the chain: an entry's line (JSON), its MAC over
//! the previous entry's, and the check of a run of entries in order.
//! Shared by the file and the PostgreSQL backend, which store the same
//! lines.

use super::*;

/// The file form of an entry; `kind` says which optional fields it has.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Line {
    pub(super) seq: u64,
    pub(super) kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) subject_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) erased_at_unix: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) destroyed_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) lines: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) digest: Option<String>,
    pub(super) mac: String,
}

/// A line of an earlier version (no chain).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LegacyLine {
    pub(super) subject_hash: String,
    #[allow(dead_code)]
    pub(super) erased_at_unix: i64,
}

pub(super) const KIND_FORGET: &str = "forget";
/// Domain separation of a forget's destroyed-key fingerprint in its MAC
/// (an entry without one is MACed as before, so old entries verify).
pub(super) const DESTROYED_KEY_LABEL: &[u8] = b"destroyed-key";
pub(super) const KIND_LEGACY: &str = "legacy_prefix";

pub(super) fn entry_mac(key: &SecretKey, seq: u64, record: &Record, prev: &[u8; 32]) -> [u8; 32] {
    let seq = seq.to_be_bytes();
    match record {
        Record::Forget {
            subject,
            erased_at_unix,
            destroyed_key: None,
        } => key.mac(&[
            MAC_LABEL,
            &seq,
            KIND_FORGET.as_bytes(),
            subject.as_bytes(),
            &erased_at_unix.to_be_bytes(),
            prev,
        ]),
        Record::Forget {
            subject,
            erased_at_unix,
            destroyed_key: Some(fingerprint),
        } => key.mac(&[
            MAC_LABEL,
            &seq,
            KIND_FORGET.as_bytes(),
            subject.as_bytes(),
            &erased_at_unix.to_be_bytes(),
            DESTROYED_KEY_LABEL,
            fingerprint,
            prev,
        ]),
        Record::LegacyPrefix { lines, digest } => key.mac(&[
            MAC_LABEL,
            &seq,
            KIND_LEGACY.as_bytes(),
            &lines.to_be_bytes(),
            digest,
            prev,
        ]),
    }
}

pub(super) fn to_line(entry: &Entry) -> String {
    let mut line = Line {
        seq: entry.seq,
        kind: String::new(),
        subject_hash: None,
        erased_at_unix: None,
        destroyed_key: None,
        lines: None,
        digest: None,
        mac: hex::encode(entry.mac),
    };
    match &entry.record {
        Record::Forget {
            subject,
            erased_at_unix,
            destroyed_key,
        } => {
            line.kind = KIND_FORGET.into();
            line.subject_hash = Some(hex::encode(subject.as_bytes()));
            line.erased_at_unix = Some(*erased_at_unix);
            line.destroyed_key = destroyed_key.map(hex::encode);
        }
        Record::LegacyPrefix { lines, digest } => {
            line.kind = KIND_LEGACY.into();
            line.lines = Some(*lines);
            line.digest = Some(hex::encode(digest));
        }
    }
    // A struct of strings and integers always serialises.
    serde_json::to_string(&line).unwrap_or_default()
}

pub(super) fn hex32(text: &str) -> Option<[u8; 32]> {
    hex::decode(text).ok()?.try_into().ok()
}

/// Parses a chained line (not yet checked against the chain).
pub(super) fn parse_line(text: &str) -> Result<Entry, &'static str> {
    let line: Line = serde_json::from_str(text).map_err(|_| "not a ledger entry")?;
    let mac = hex32(&line.mac).ok_or("not a ledger entry")?;
    let destroyed_key = match (line.kind.as_str(), &line.destroyed_key) {
        (_, None) => None,
        (KIND_FORGET, Some(hex)) => Some(hex32(hex).ok_or("not a ledger entry")?),
        _ => return Err("not a ledger entry"),
    };
    let record = match (
        line.kind.as_str(),
        line.subject_hash,
        line.erased_at_unix,
        line.lines,
        line.digest,
    ) {
        (KIND_FORGET, Some(subject), Some(erased_at_unix), None, None) => Record::Forget {
            subject: SubjectHash(hex32(&subject).ok_or("not a ledger entry")?),
            erased_at_unix,
            destroyed_key,
        },
        (KIND_LEGACY, None, None, Some(lines), Some(digest)) => Record::LegacyPrefix {
            lines,
            digest: hex32(&digest).ok_or("not a ledger entry")?,
        },
        _ => return Err("not a ledger entry"),
    };
    Ok(Entry {
        seq: line.seq,
        mac,
        record,
    })
}

/// Checks chained entries in order against the key, after `legacy`
/// unchained lines whose bytes hash to `legacy_digest`.
pub(super) struct ChainCheck<'a> {
    pub(super) key: &'a SecretKey,
    pub(super) name: &'a str,
    pub(super) legacy: u64,
    pub(super) legacy_digest: [u8; 32],
    pub(super) prev: [u8; 32],
    pub(super) next_seq: u64,
}

impl ChainCheck<'_> {
    pub(super) fn push(&mut self, line_no: usize, entry: &Entry) -> Result<(), LedgerError> {
        let corrupt = |why| LedgerError::Corrupt {
            name: self.name.to_string(),
            line: line_no,
            why,
        };
        if entry.seq != self.next_seq {
            return Err(corrupt(
                "out of sequence: entries were removed, reordered or inserted",
            ));
        }
        let expected = entry_mac(self.key, entry.seq, &entry.record, &self.prev);
        if !bool::from(expected.ct_eq(&entry.mac)) {
            return Err(corrupt(
                "its MAC does not match: the entry was edited or moved, or the ledger is another vault's",
            ));
        }
        if let Record::LegacyPrefix { lines, digest } = &entry.record {
            if entry.seq != 1 || *lines != self.legacy || *digest != self.legacy_digest {
                return Err(corrupt(
                    "the unchained lines before it are not the ones it sealed",
                ));
            }
        }
        if entry.seq == 1 && self.legacy > 0 && !matches!(entry.record, Record::LegacyPrefix { .. })
        {
            return Err(corrupt("unchained lines are not sealed"));
        }
        self.prev = entry.mac;
        self.next_seq += 1;
        Ok(())
    }
}
