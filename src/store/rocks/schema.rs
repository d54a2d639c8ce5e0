//! The store's schema: column family names, key layouts, meta keys, and the
//! options each family is opened with (its compaction filters and merge
//! operator among them). Layouts only: nothing here reads or writes the
//! database. A change here is a change of the on-disk format.

use rocksdb::compaction_filter::Decision;
use rocksdb::{BlockBasedOptions, Cache, DBCompressionType, Options};

use super::counters;
use crate::crypto::{IndexKey, SubjectHash};
use crate::store::records::{index_entry_expired, token_record_expired};

pub(super) const CF_META: &str = "meta";
pub(super) const CF_SUBJECTS: &str = "subjects";
pub(super) const CF_TOKENS: &str = "tokens";
pub(super) const CF_INDEX: &str = "index";
pub(super) const CF_TOMBSTONES: &str = "tombstones";
/// Audit records by big-endian sequence number, so key order is
/// sequence order (see `crate::audit`).
pub(super) const CF_AUDIT: &str = "audit";
/// The families of the vault instance (the store's directory).
pub(super) const COLUMN_FAMILIES: [&str; 5] =
    [CF_META, CF_TOKENS, CF_INDEX, CF_TOMBSTONES, CF_AUDIT];
/// The key instance (`KEYS_DIR` under the store's directory) holds only
/// `subjects`, and purge markers in its default family (see `keys`).
pub(super) const KEYS_DIR: &str = "keys";
pub(super) const KEY_FAMILIES: [&str; 2] = [rocksdb::DEFAULT_COLUMN_FAMILY_NAME, CF_SUBJECTS];
/// The vault instance's families that hold data a full purge must remove
/// physically (and `subjects` in the key instance).
pub(super) const PURGED_FAMILIES: [&str; 2] = [CF_TOKENS, CF_INDEX];
/// A family of an earlier development layout (three entries per token).
pub(super) const OLD_LAYOUT_FAMILY: &str = "subject_tokens";

/// `index` key tags after the subject hash.
pub(super) const TAG_DETERMINISTIC: u8 = 0x01;
const TAG_TOKEN_LIST: u8 = 0x02;

/// The `index` key of a deterministic-index entry: subject ‖ 0x01 ‖ MAC.
pub(super) fn deterministic_key(key: &IndexKey) -> [u8; 65] {
    let mut out = [0u8; 65];
    out[..32].copy_from_slice(&key.0[..32]);
    out[32] = TAG_DETERMINISTIC;
    out[33..].copy_from_slice(&key.0[32..]);
    out
}

/// The `index` key that lists a random-mode token under its subject.
pub(super) fn token_list_key(subject: &SubjectHash, token: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(33 + token.len());
    out.extend_from_slice(subject.as_bytes());
    out.push(TAG_TOKEN_LIST);
    out.extend_from_slice(token.as_bytes());
    out
}

pub(super) const SYSTEM_KEY: &[u8] = b"system_key";
/// The KEK version a rotation in progress moves keys to (u32 BE).
pub(super) const KEK_ROTATION: &[u8] = b"kek_rotation";
/// When the last purge started (i64 BE unix seconds), in `meta` and in
/// the key instance's default family.
pub(super) const LAST_PURGE: &[u8] = b"last_purge";
/// Applied erasure-ledger entries: this, then the sequence number (u64
/// BE), to the entry's MAC; up to (not including) the end key.
pub(super) const LEDGER_APPLIED: &[u8] = b"ledger_applied/";
pub(super) const LEDGER_APPLIED_END: &[u8] = b"ledger_applied0";

pub(super) fn ledger_mark_key(seq: u64) -> Vec<u8> {
    let mut key = LEDGER_APPLIED.to_vec();
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// Memtable size per column family (RocksDB's default is 64 MiB).
const WRITE_BUFFER_BYTES: usize = 16 << 20;

/// Data block size of the `tokens` family (RocksDB's default is 4 KiB).
/// Tokens are random, so each token of a Detokenize batch is found in a
/// block of its own, and most of a lookup's CPU is spent searching that
/// one block through cache misses: its restart points, then the entries
/// after the nearest one. A 1 KiB block holds about 8 records of ~120
/// bytes, so that search is short. Measured with `tokenvault bench`,
/// batch 100, c=16: server CPU per Detokenize 0.46 → 0.40 ms (4 KiB →
/// 1 KiB), new-value Tokenize unchanged. 512 bytes saved a little more
/// but cost new-value Tokenize ~9% at flush time. The price is an index
/// four times larger: ~2.9 bytes per token instead of ~0.7 (table
/// properties of flushed files), held in the block cache with the
/// filters (1.25 bytes per key), so 10 million tokens keep ~29 MiB of
/// it there.
const TOKENS_BLOCK_BYTES: usize = 1 << 10;

/// Table file size of the `subjects` family (RocksDB's default is 64 MiB).
const SUBJECTS_FILE_BYTES: u64 = 2 << 20;

pub(super) fn family_options(cache: &Cache, family: &str) -> Options {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    // Nearly every read is a point lookup of a key that may not exist.
    table.set_bloom_filter(10.0, false);
    table.set_cache_index_and_filter_blocks(true);
    if family == CF_TOKENS {
        table.set_block_size(TOKENS_BLOCK_BYTES);
    }
    let mut options = Options::default();
    if family == CF_SUBJECTS {
        // A forget compacts one key of this family (see `purge`), which
        // rewrites the file that holds it on each level: small files keep
        // that cheap. The family is small (a wrapped key per subject).
        options.set_target_file_size_base(SUBJECTS_FILE_BYTES);
    }
    options.set_block_based_table_factory(&table);
    // New tokens are checked for existence before they are written, so most
    // lookups miss; a memtable bloom filter answers those without walking
    // the skiplist.
    options.set_memtable_whole_key_filtering(true);
    options.set_memtable_prefix_bloom_ratio(0.1);
    // Keys are random, so each memtable insert walks the skiplist through
    // cache misses; a smaller memtable is a shallower walk. Flushing more
    // often costs less than it saves (measured with benches/e2e.sh).
    options.set_write_buffer_size(WRITE_BUFFER_BYTES);
    // Room for full memtables to wait for their flush without stalling
    // writes when the two cores are busy.
    options.set_max_write_buffer_number(4);
    options.set_compression_type(match family {
        // Records are mostly hex hashes, which LZ4 barely shrinks (it finds
        // repeats, and random hex has few: 2.6% on records of 100 tokens,
        // `lz4` on a sample) but still spends CPU on at every flush and
        // compaction.
        CF_AUDIT => DBCompressionType::None,
        _ => DBCompressionType::Lz4,
    });
    // Retention: every compaction drops records whose ttl has passed, so
    // expired values leave the disk without a scan on the request path.
    match family {
        CF_TOKENS => options.set_compaction_filter("tokenvault-expired-tokens", |_, _, value| {
            drop_if(token_record_expired(value, crate::clock::unix_now()))
        }),
        CF_INDEX => options.set_compaction_filter("tokenvault-expired-index", |_, _, value| {
            drop_if(index_entry_expired(value, crate::clock::unix_now()))
        }),
        CF_META => {
            options.set_compaction_filter("tokenvault-expired-counters", |_, key, value| {
                drop_if(counters::expired(key, value, crate::clock::unix_now()))
            });
            options.set_merge_operator_associative("tokenvault-counter-max", counters::merge_max);
        }
        _ => {}
    }
    options
}

fn drop_if(expired: bool) -> Decision {
    if expired {
        Decision::Remove
    } else {
        Decision::Keep
    }
}

/// The `index` key range that holds every entry of a subject.
pub(super) fn subject_range(subject: &SubjectHash) -> (Vec<u8>, Vec<u8>) {
    let mut start = subject.as_bytes().to_vec();
    let mut end = start.clone();
    start.push(0x00);
    end.push(0xFF);
    (start, end)
}
