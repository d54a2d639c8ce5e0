//! Chain verification: walks stored records in order and names the first
//! one that is wrong, and compares the chain with its newest checkpoint.
//! Shared by `tokenvault audit verify` (the database and the file) and the
//! log's own start-up checks. Version 2 records need the chain key.

use super::checkpoint::Checkpoint;
use super::record::{AuditRecord, ChainKey, LineProblem, GENESIS_PREV, RECORD_VERSION};

/// The first thing wrong with a chain, naming the record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The record does not parse as a record.
    #[error("record {0}: malformed")]
    Malformed(u64),
    /// It parses, but is not the canonical encoding (bytes were changed).
    #[error("record {0}: not in canonical form")]
    NotCanonical(u64),
    /// Its `hash` is not the hash of its bytes.
    #[error("record {0}: hash mismatch")]
    HashMismatch(u64),
    /// Its `prev` is not the hash of the record before it.
    #[error("record {0}: hash mismatch (prev is not the hash of the record before)")]
    BrokenLink(u64),
    /// The chain skips this sequence number.
    #[error("missing record {0}")]
    Missing(u64),
    /// The chain skips these sequence numbers (first, last).
    #[error("missing records {0}-{1}")]
    MissingRange(u64, u64),
    /// A record of the unkeyed version after keyed ones: a forgery (a
    /// server never goes back to version 1).
    #[error("record {0}: an unkeyed (version 1) record after keyed ones")]
    Downgraded(u64),
    /// Two records stand in each other's place.
    #[error("records {0} and {1}: out of order")]
    Swapped(u64, u64),
    /// A record where another was expected (moved or repeated).
    #[error("record {expected}: out of order (found record {found})")]
    OutOfOrder { expected: u64, found: u64 },
}

/// Checks records one at a time, in stored order.
#[derive(Debug)]
pub struct ChainVerifier {
    key: ChainKey,
    next_seq: u64,
    prev: String,
    /// A record ahead of `next_seq`, waiting to see whether the expected
    /// one follows it (two swapped records) or never comes (a deletion).
    ahead: Option<u64>,
    /// A keyed record was accepted: no unkeyed one may follow.
    keyed: bool,
    /// The record whose hash is kept (a checkpoint's), and that hash.
    watch: Option<(u64, Option<String>)>,
}

impl ChainVerifier {
    pub fn new(key: ChainKey) -> Self {
        ChainVerifier {
            key,
            next_seq: 1,
            prev: GENESIS_PREV.to_string(),
            ahead: None,
            keyed: false,
            watch: None,
        }
    }

    /// Keeps the hash of record `seq` when it is accepted.
    pub fn watch(&mut self, seq: u64) {
        self.watch = Some((seq, None));
    }

    /// The hash of the watched record, if it was accepted.
    pub fn watched(&self) -> Option<&str> {
        self.watch.as_ref().and_then(|(_, hash)| hash.as_deref())
    }

    /// Records accepted so far.
    pub fn count(&self) -> u64 {
        self.next_seq - 1
    }

    /// The hash of the last accepted record (the genesis `prev` if none).
    pub fn head(&self) -> &str {
        &self.prev
    }

    /// Checks a line of the file: sequence numbers are in the records only.
    pub fn push_line(&mut self, line: &[u8]) -> Result<AuditRecord, ChainError> {
        let record = self.open(line)?;
        if let Some(ahead) = self.ahead.take() {
            return Err(if record.seq == self.next_seq {
                ChainError::Swapped(self.next_seq, ahead)
            } else {
                ChainError::Missing(self.next_seq)
            });
        }
        if record.seq > self.next_seq {
            self.ahead = Some(record.seq);
            return Ok(record);
        }
        self.accept(record)
    }

    /// Checks a database entry: `key` is the sequence number it is stored
    /// under, in key order.
    pub fn push_keyed(&mut self, key: u64, value: &[u8]) -> Result<AuditRecord, ChainError> {
        if key > self.next_seq + 1 {
            return Err(ChainError::MissingRange(self.next_seq, key - 1));
        }
        if key != self.next_seq {
            return Err(ChainError::Missing(self.next_seq));
        }
        let record = self.open(value)?;
        if record.seq != key {
            return Err(ChainError::OutOfOrder {
                expected: key,
                found: record.seq,
            });
        }
        self.accept(record)
    }

    /// Ends the walk; the number of records in a sound chain.
    pub fn finish(self) -> Result<u64, ChainError> {
        match self.ahead {
            Some(_) => Err(ChainError::Missing(self.next_seq)),
            None => Ok(self.count()),
        }
    }

    fn open(&self, line: &[u8]) -> Result<AuditRecord, ChainError> {
        AuditRecord::open(line, &self.key).map_err(|problem| match problem {
            LineProblem::Malformed => ChainError::Malformed(self.next_seq),
            LineProblem::NotCanonical => ChainError::NotCanonical(self.next_seq),
            LineProblem::HashMismatch => ChainError::HashMismatch(self.next_seq),
        })
    }

    fn accept(&mut self, record: AuditRecord) -> Result<AuditRecord, ChainError> {
        if record.seq < self.next_seq {
            return Err(ChainError::OutOfOrder {
                expected: self.next_seq,
                found: record.seq,
            });
        }
        if record.prev != self.prev {
            return Err(ChainError::BrokenLink(record.seq));
        }
        if record.v == RECORD_VERSION {
            self.keyed = true;
        } else if self.keyed {
            return Err(ChainError::Downgraded(record.seq));
        }
        self.prev = record.hash().to_string();
        if let Some((seq, hash)) = &mut self.watch {
            if *seq == record.seq {
                *hash = Some(self.prev.clone());
            }
        }
        self.next_seq += 1;
        Ok(record)
    }
}

/// What `tokenvault audit verify` can find wrong, in one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// One copy's chain is broken.
    #[error("{sink}: {error}")]
    Chain {
        sink: &'static str,
        error: ChainError,
    },
    /// Both chains are sound but hold different records.
    #[error("record {0}: database and file differ")]
    Differ(u64),
    /// One copy ends before the other.
    #[error("missing record {seq} in the {sink}")]
    MissingIn { seq: u64, sink: &'static str },
    /// A copy could not be read.
    #[error("{0}")]
    Read(String),
    /// The chain ends before the newest checkpoint's record: its tail was
    /// cut.
    #[error("{sink}: the chain ends at record {ends} but the newest checkpoint names record {checkpoint}: {} (cut from the tail)", missing(*.ends + 1, *.checkpoint))]
    Cut {
        sink: &'static str,
        ends: u64,
        checkpoint: u64,
    },
    /// The checkpoint's record has another hash: the chain was rebuilt.
    #[error(
        "{sink}: record {seq} is not the one the newest checkpoint names (the chain was rewritten)"
    )]
    NotCheckpointed { sink: &'static str, seq: u64 },
}

/// "records 18-20 are missing", or "record 20 is missing".
fn missing(first: u64, last: u64) -> String {
    if first == last {
        format!("record {first} is missing")
    } else {
        format!("records {first}-{last} are missing")
    }
}

/// Compares a sound chain of `count` records, whose record at the
/// checkpoint's number has hash `hash_at_checkpoint`, with the checkpoint.
pub fn against_checkpoint(
    sink: &'static str,
    count: u64,
    hash_at_checkpoint: Option<&str>,
    checkpoint: &Checkpoint,
) -> Result<(), VerifyError> {
    if checkpoint.seq == 0 {
        return Ok(());
    }
    if count < checkpoint.seq {
        return Err(VerifyError::Cut {
            sink,
            ends: count,
            checkpoint: checkpoint.seq,
        });
    }
    if hash_at_checkpoint != Some(checkpoint.hash.as_str()) {
        return Err(VerifyError::NotCheckpointed {
            sink,
            seq: checkpoint.seq,
        });
    }
    Ok(())
}

/// How often progress is reported, in records.
pub const PROGRESS_EVERY: u64 = 100_000;

/// Walks the store's records page by page (`page(from_seq)` returns the
/// records from `from_seq` on, empty at the end) and returns each record's
/// hash in order.
pub fn walk_store(
    key: &ChainKey,
    mut page: impl FnMut(u64) -> Result<Vec<(u64, Vec<u8>)>, String>,
    progress: &mut dyn FnMut(&str, u64),
) -> Result<Vec<[u8; 32]>, VerifyError> {
    let chain = |error| VerifyError::Chain {
        sink: "database",
        error,
    };
    let mut verifier = ChainVerifier::new(key.clone());
    let mut hashes = Vec::new();
    let mut from = 0;
    loop {
        let records = page(from).map_err(VerifyError::Read)?;
        let Some((last, _)) = records.last() else {
            break;
        };
        from = last + 1;
        for (key, value) in records {
            let record = verifier.push_keyed(key, &value).map_err(chain)?;
            hashes.push(hash_bytes(record.hash()));
            if key % PROGRESS_EVERY == 0 {
                progress("database", key);
            }
        }
    }
    verifier.finish().map_err(chain)?;
    Ok(hashes)
}

/// Walks the file's lines, and, given the store's hashes, checks that both
/// copies hold the same records; the file may end ahead of the store (its
/// copy follows the file's). `live`: a server may be appending, so an
/// unfinished last line is being written, not torn, and the store may end
/// a group ahead of the file. `checkpoint`: the file is compared with it
/// too. Returns the file's record count.
pub fn walk_file(
    key: &ChainKey,
    mut reader: impl std::io::BufRead,
    store_hashes: Option<&[[u8; 32]]>,
    live: bool,
    checkpoint: Option<&Checkpoint>,
    progress: &mut dyn FnMut(&str, u64),
) -> Result<u64, VerifyError> {
    let chain = |error| VerifyError::Chain {
        sink: "file",
        error,
    };
    let mut verifier = ChainVerifier::new(key.clone());
    if let Some(checkpoint) = checkpoint {
        verifier.watch(checkpoint.seq);
    }
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| VerifyError::Read(format!("audit file: {e}")))?;
        if read == 0 {
            break;
        }
        if line.last() != Some(&b'\n') {
            if live {
                break;
            }
            return Err(chain(ChainError::Malformed(verifier.count() + 1)));
        }
        line.pop();
        let record = verifier.push_line(&line).map_err(chain)?;
        if let Some(hashes) = store_hashes {
            match hashes.get(verifier.count().saturating_sub(1) as usize) {
                Some(hash) if verifier.count() == record.seq => {
                    if *hash != hash_bytes(record.hash()) {
                        return Err(VerifyError::Differ(record.seq));
                    }
                }
                // Past the database's last record: with written
                // durability the database's copy follows the file (and a
                // server catches it up at start), so the file may run
                // ahead; a record missing in between breaks the chain.
                Some(_) | None => {}
            }
        }
        if record.seq % PROGRESS_EVERY == 0 {
            progress("file", record.seq);
        }
    }
    let watched = verifier.watched().map(str::to_string);
    let count = verifier.finish().map_err(chain)?;
    if let Some(hashes) = store_hashes {
        // A live server writes both copies at once: the file may not have
        // the group the database snapshot already holds.
        if (hashes.len() as u64) > count && !live {
            return Err(VerifyError::MissingIn {
                seq: count + 1,
                sink: "file",
            });
        }
    }
    if let Some(checkpoint) = checkpoint {
        against_checkpoint("file", count, watched.as_deref(), checkpoint)?;
    }
    Ok(count)
}

/// The hex of a 32-byte hash, as records and checkpoints write it.
pub fn hash_hex(bytes: &[u8; 32]) -> String {
    hex::encode(bytes)
}

fn hash_bytes(hex_hash: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    // Opened records carry 64 hex digits; anything else compares unequal.
    let _ = hex::decode_to_slice(hex_hash, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::tests::{key, sample};

    /// A sound chain of `n` lines.
    fn chain(n: u64) -> Vec<Vec<u8>> {
        let mut prev = GENESIS_PREV.to_string();
        (1..=n)
            .map(|seq| {
                let (line, hash) = sample(seq, &prev).seal(&key()).expect("seal");
                prev = hash;
                line
            })
            .collect()
    }

    fn verify_lines(lines: &[Vec<u8>]) -> Result<u64, ChainError> {
        let mut verifier = ChainVerifier::new(key());
        for line in lines {
            verifier.push_line(line)?;
        }
        verifier.finish()
    }

    fn verify_keyed(entries: &[(u64, Vec<u8>)]) -> Result<u64, ChainError> {
        let mut verifier = ChainVerifier::new(key());
        for (key, value) in entries {
            verifier.push_keyed(*key, value)?;
        }
        verifier.finish()
    }

    fn keyed(lines: Vec<Vec<u8>>) -> Vec<(u64, Vec<u8>)> {
        (1..).zip(lines).collect()
    }

    #[test]
    fn sound_chains_verify() {
        assert_eq!(verify_lines(&chain(50)), Ok(50));
        assert_eq!(verify_keyed(&keyed(chain(50))), Ok(50));
        assert_eq!(verify_lines(&[]), Ok(0));
    }

    #[test]
    fn one_changed_byte_is_named() {
        let mut lines = chain(10);
        let at = lines[6].len() / 2;
        lines[6][at] ^= 0x04;
        let error = verify_lines(&lines).unwrap_err();
        assert!(error.to_string().starts_with("record 7: "), "{error}");
        let mut entries = keyed(chain(10));
        let at = entries[6].1.len() - 10;
        entries[6].1[at] ^= 0x01;
        assert_eq!(verify_keyed(&entries), Err(ChainError::HashMismatch(7)));
    }

    #[test]
    fn a_deleted_record_is_named() {
        let mut lines = chain(10);
        lines.remove(3);
        assert_eq!(verify_lines(&lines), Err(ChainError::Missing(4)));
        let mut lines = chain(10);
        lines.remove(8);
        assert_eq!(
            verify_lines(&lines),
            Err(ChainError::Missing(9)),
            "a deletion just before the last record"
        );
        // Cutting off the tail leaves a sound, shorter chain: only the other
        // copy shows it (see `both_copies_agree_or_the_first_difference_is_named`).
        assert_eq!(verify_lines(&chain(10)[..8]), Ok(8));
        let mut entries = keyed(chain(10));
        entries.remove(3);
        assert_eq!(verify_keyed(&entries), Err(ChainError::Missing(4)));
        let mut entries = keyed(chain(10));
        entries.drain(3..6);
        assert_eq!(verify_keyed(&entries), Err(ChainError::MissingRange(4, 6)));
    }

    #[test]
    fn a_cut_tail_is_named_against_the_checkpoint() {
        let lines = chain(20);
        let hash_of = |n: usize| {
            AuditRecord::open(&lines[n - 1], &key())
                .expect("open")
                .hash()
                .to_string()
        };
        let checkpoint = Checkpoint {
            chain: String::new(),
            seq: 20,
            hash: hash_of(20),
            time_unix_ms: 0,
        };
        let walk = |lines: &[Vec<u8>], checkpoint: &Checkpoint| {
            walk_file(
                &key(),
                &file_of(lines)[..],
                None,
                false,
                Some(checkpoint),
                &mut |_, _| {},
            )
        };
        assert_eq!(walk(&lines, &checkpoint), Ok(20));
        let cut = walk(&lines[..17], &checkpoint).expect_err("a cut tail");
        assert!(
            cut.to_string().contains("records 18-20 are missing"),
            "{cut}"
        );
        // Records after the checkpoint may go unseen: that is its limit.
        let older = Checkpoint {
            seq: 15,
            hash: hash_of(15),
            ..checkpoint.clone()
        };
        assert_eq!(walk(&lines[..17], &older), Ok(17));
        let wrong = Checkpoint {
            hash: hash_of(14),
            ..older
        };
        assert!(matches!(
            walk(&lines, &wrong),
            Err(VerifyError::NotCheckpointed { seq: 15, .. })
        ));
    }

    #[test]
    fn an_unkeyed_record_after_keyed_ones_is_refused_but_an_old_chain_goes_on() {
        let seal_v = |seq: u64, prev: &str, v: u32| {
            let mut record = sample(seq, prev);
            record.v = v;
            record.seal(&key()).expect("seal")
        };
        // Version 1 records, then version 2: an upgraded vault.
        let (one, h1) = seal_v(1, GENESIS_PREV, 1);
        let (two, h2) = seal_v(2, &h1, 2);
        let (three, _) = seal_v(3, &h2, 1);
        assert_eq!(verify_lines(&[one.clone(), two.clone()]), Ok(2));
        assert_eq!(
            verify_lines(&[one, two, three]),
            Err(ChainError::Downgraded(3))
        );
    }

    #[test]
    fn swapped_records_are_named() {
        let mut lines = chain(10);
        lines.swap(4, 5);
        assert_eq!(verify_lines(&lines), Err(ChainError::Swapped(5, 6)));
        // In the database the keys stay in order; the values move.
        let mut entries = keyed(chain(10));
        let (a, b) = (entries[4].1.clone(), entries[5].1.clone());
        entries[4].1 = b;
        entries[5].1 = a;
        assert_eq!(
            verify_keyed(&entries),
            Err(ChainError::OutOfOrder {
                expected: 5,
                found: 6
            })
        );
    }

    #[test]
    fn a_rebuilt_record_breaks_the_link_to_the_next() {
        // Whoever rewrites a record with a fresh hash must rewrite every
        // record after it too; the next one names the break.
        let mut lines = chain(5);
        let mut forged = sample(3, "x");
        forged.prev = AuditRecord::open(&lines[1], &key())
            .expect("open")
            .hash()
            .into();
        forged.purpose = "other".into();
        lines[2] = forged.seal(&key()).expect("seal").0;
        assert_eq!(verify_lines(&lines), Err(ChainError::BrokenLink(4)));
    }

    fn file_of(lines: &[Vec<u8>]) -> Vec<u8> {
        lines
            .iter()
            .flat_map(|l| l.iter().copied().chain([b'\n']))
            .collect()
    }

    fn store_hashes(entries: Vec<(u64, Vec<u8>)>) -> Result<Vec<[u8; 32]>, VerifyError> {
        let mut entries = Some(entries);
        walk_store(
            &key(),
            |_| Ok(entries.take().unwrap_or_default()),
            &mut |_, _| {},
        )
    }

    #[test]
    fn both_copies_agree_or_the_first_difference_is_named() {
        let lines = chain(20);
        let hashes = store_hashes(keyed(lines.clone())).expect("sound");
        let walk =
            |file: &[u8], live| walk_file(&key(), file, Some(&hashes), live, None, &mut |_, _| {});
        assert_eq!(walk(&file_of(&lines), false), Ok(20));

        // A file that is itself sound but another chain.
        let mut other = chain(20);
        for line in &mut other[..] {
            let mut record = AuditRecord::open(line, &key()).expect("open");
            record.purpose = "x".into();
            *line = record.seal(&key()).expect("seal").0;
        }
        // Relink the forged chain so only the comparison can catch it.
        let mut prev = GENESIS_PREV.to_string();
        for line in &mut other[..] {
            let mut record = AuditRecord::open(line, &key()).expect("open");
            record.prev = prev;
            let (sealed, hash) = record.seal(&key()).expect("seal");
            *line = sealed;
            prev = hash;
        }
        assert_eq!(walk(&file_of(&other), false), Err(VerifyError::Differ(1)));

        assert_eq!(
            walk(&file_of(&lines[..19]), false),
            Err(VerifyError::MissingIn {
                seq: 20,
                sink: "file"
            })
        );
        let mut longer = chain(21);
        longer.truncate(21);
        let short = store_hashes(keyed(chain(20))).expect("sound");
        for live in [false, true] {
            assert_eq!(
                walk_file(
                    &key(),
                    &file_of(&longer)[..],
                    Some(&short),
                    live,
                    None,
                    &mut |_, _| {}
                ),
                Ok(21),
                "the database's copy follows the file's (live: {live})"
            );
        }
    }

    #[test]
    fn an_unfinished_last_line_is_an_error_unless_a_server_is_writing() {
        let mut file = file_of(&chain(3));
        file.extend_from_slice(b"{\"v\":1,");
        let walk = |live| walk_file(&key(), &file[..], None, live, None, &mut |_, _| {});
        assert_eq!(
            walk(false),
            Err(VerifyError::Chain {
                sink: "file",
                error: ChainError::Malformed(4)
            })
        );
        assert_eq!(walk(true), Ok(3));
    }
}
