//! Byte layouts of stored records. Every record starts with a version byte
//! so that a later layout can read older ones.

use crate::crypto::{Sealed, SubjectHash, NONCE_LEN};

use super::StoreError;

const RECORD_VERSION: u8 = 1;

/// A token's stored record: its subject (as a keyed hash), format, times
/// and the sealed value.
///
/// ```text
/// 0     1              33            41            49     50        50+n   62+n
/// +-----+--------------+-------------+-------------+------+---------+------+------------+
/// | v=1 | subject hash | created_at  | expires_at  | n    | format  | nonce| ciphertext |
/// |     | (32)         | i64 BE unix | i64 BE, 0 = | (u8) | (UTF-8) | (12) | + tag (16) |
/// |     |              |             | never       |      |         |      |            |
/// +-----+--------------+-------------+-------------+------+---------+------+------------+
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub subject: SubjectHash,
    pub format: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub sealed: Sealed,
}

impl TokenRecord {
    pub fn is_expired(&self, now: i64) -> bool {
        is_expired(self.expires_at, now)
    }

    pub fn encode(&self) -> Result<Vec<u8>, StoreError> {
        let format_len = u8::try_from(self.format.len())
            .map_err(|_| StoreError::Misuse("format name over 255 bytes"))?;
        let mut out =
            Vec::with_capacity(50 + self.format.len() + NONCE_LEN + self.sealed.ciphertext.len());
        out.push(RECORD_VERSION);
        out.extend_from_slice(self.subject.as_bytes());
        out.extend_from_slice(&self.created_at.to_be_bytes());
        out.extend_from_slice(&self.expires_at.unwrap_or(0).to_be_bytes());
        out.push(format_len);
        out.extend_from_slice(self.format.as_bytes());
        out.extend_from_slice(&self.sealed.nonce);
        out.extend_from_slice(&self.sealed.ciphertext);
        Ok(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let corrupt = || StoreError::Corrupt("token");
        let mut reader = Reader::new(bytes);
        if reader.byte().ok_or_else(corrupt)? != RECORD_VERSION {
            return Err(corrupt());
        }
        let subject = SubjectHash(reader.array::<32>().ok_or_else(corrupt)?);
        let created_at = i64::from_be_bytes(reader.array::<8>().ok_or_else(corrupt)?);
        let expires_at = i64::from_be_bytes(reader.array::<8>().ok_or_else(corrupt)?);
        let format_len = reader.byte().ok_or_else(corrupt)? as usize;
        let format = std::str::from_utf8(reader.take(format_len).ok_or_else(corrupt)?)
            .map_err(|_| corrupt())?
            .to_string();
        let nonce = reader.array::<NONCE_LEN>().ok_or_else(corrupt)?;
        Ok(TokenRecord {
            subject,
            format,
            created_at,
            expires_at: (expires_at != 0).then_some(expires_at),
            sealed: Sealed {
                nonce,
                ciphertext: reader.rest().to_vec(),
            },
        })
    }
}

/// A deterministic-index entry: the token of a (subject, format, value),
/// with the token's expiry so an expired entry can be replaced without
/// reading the token record.
///
/// ```text
/// 0     1                 9
/// +-----+-----------------+---------------+
/// | v=1 | expires_at i64  | token (UTF-8) |
/// +-----+-----------------+---------------+
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub token: String,
    pub expires_at: Option<i64>,
}

impl IndexEntry {
    pub fn is_expired(&self, now: i64) -> bool {
        is_expired(self.expires_at, now)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + self.token.len());
        out.push(RECORD_VERSION);
        out.extend_from_slice(&self.expires_at.unwrap_or(0).to_be_bytes());
        out.extend_from_slice(self.token.as_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let corrupt = || StoreError::Corrupt("index");
        let mut reader = Reader::new(bytes);
        if reader.byte().ok_or_else(corrupt)? != RECORD_VERSION {
            return Err(corrupt());
        }
        let expires_at = i64::from_be_bytes(reader.array::<8>().ok_or_else(corrupt)?);
        let token = std::str::from_utf8(reader.rest())
            .map_err(|_| corrupt())?
            .to_string();
        Ok(IndexEntry {
            token,
            expires_at: (expires_at != 0).then_some(expires_at),
        })
    }
}

fn is_expired(expires_at: Option<i64>, now: i64) -> bool {
    expires_at.is_some_and(|at| at <= now)
}

/// Whether an encoded token record has expired by `now`, read without
/// decoding it: the compaction filter calls this for every record it
/// compacts. Bytes it does not recognise are kept (never expired).
pub fn token_record_expired(bytes: &[u8], now: i64) -> bool {
    // Version byte, subject hash (32), created_at (8), then expires_at.
    expiry_at(bytes, 41, now)
}

/// [`token_record_expired`] for an encoded [`IndexEntry`].
pub fn index_entry_expired(bytes: &[u8], now: i64) -> bool {
    expiry_at(bytes, 1, now)
}

fn expiry_at(bytes: &[u8], offset: usize, now: i64) -> bool {
    if bytes.first() != Some(&RECORD_VERSION) {
        return false;
    }
    let Some(raw) = bytes.get(offset..offset + 8) else {
        return false;
    };
    let mut at = [0u8; 8];
    at.copy_from_slice(raw);
    let at = i64::from_be_bytes(at);
    is_expired((at != 0).then_some(at), now)
}

/// A bounds-checked cursor over a byte slice.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Some(head)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record() -> TokenRecord {
        TokenRecord {
            subject: SubjectHash([5; 32]),
            format: "card".into(),
            created_at: 1_700_000_000,
            expires_at: Some(1_700_000_600),
            sealed: Sealed {
                nonce: [1; NONCE_LEN],
                ciphertext: vec![2; 32],
            },
        }
    }

    #[test]
    fn token_record_round_trips() {
        let rec = record();
        assert_eq!(
            TokenRecord::decode(&rec.encode().expect("encode")).expect("decode"),
            rec
        );
        let forever = TokenRecord {
            expires_at: None,
            ..record()
        };
        assert_eq!(
            TokenRecord::decode(&forever.encode().expect("encode")).expect("decode"),
            forever
        );
    }

    #[test]
    fn expiry_is_inclusive_of_the_deadline() {
        let rec = record();
        assert!(!rec.is_expired(1_700_000_599));
        assert!(rec.is_expired(1_700_000_600));
    }

    #[test]
    fn index_entry_round_trips() {
        let entry = IndexEntry {
            token: "4111 11•• 1111".into(),
            expires_at: None,
        };
        assert_eq!(IndexEntry::decode(&entry.encode()).expect("decode"), entry);
    }

    #[test]
    fn expiry_is_read_from_encoded_records() {
        let rec = record().encode().expect("encode");
        assert!(!token_record_expired(&rec, 1_700_000_599));
        assert!(token_record_expired(&rec, 1_700_000_600));
        let forever = TokenRecord {
            expires_at: None,
            ..record()
        };
        assert!(!token_record_expired(
            &forever.encode().expect("encode"),
            i64::MAX
        ));
        let entry = IndexEntry {
            token: "t".into(),
            expires_at: Some(50),
        }
        .encode();
        assert!(index_entry_expired(&entry, 50) && !index_entry_expired(&entry, 49));
        assert!(
            !token_record_expired(&[9; 60], i64::MAX),
            "unknown layouts are kept"
        );
        assert!(
            !index_entry_expired(&[RECORD_VERSION, 1], i64::MAX),
            "short bytes are kept"
        );
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = TokenRecord::decode(&bytes);
            let _ = IndexEntry::decode(&bytes);
        }

        #[test]
        fn truncated_records_are_corrupt(cut in 0usize..62) {
            let bytes = record().encode().expect("encode");
            prop_assert!(TokenRecord::decode(&bytes[..cut]).is_err());
        }
    }
}
