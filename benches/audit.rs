//! Criterion benches of one audit append, the cost every reveal pays
//! before it answers: the draft (keyed hashes), sealing (JSON, SHA-256,
//! chaining) and the writes, on a real RocksDB store and file.
//!
//! `append/written` is the default durability: the record written to the
//! file before the append returns, stored in the database by the sync
//! thread in batches (its CPU is not in the timing unless the bench is
//! pinned to one core: `taskset -c 0 target/release/deps/audit-* --bench`).
//! `seal/draft` is the record's encoding and hash alone, as the writer
//! seals a draft.

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use tokenvault::audit::record::ListedHash;
use tokenvault::audit::{AuditEvent, AuditLog, AuditRecord, ChainKey, Durability, RecordOutcome};
use tokenvault::crypto::{SecretKey, SubjectHash};
use tokenvault::store::rocks::{RocksOptions, RocksStore};
use tokenvault::store::Store;

/// Tokens about as long as a card's (the log only hashes them, so what
/// they hold does not change the cost).
fn tokens(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("tok_4111{i:08}1111")).collect()
}

fn reveal<'a>(tokens: &'a [String]) -> AuditEvent<'a> {
    AuditEvent {
        principal: "billing-service".into(),
        rpc: "detokenize",
        purpose: "refund".into(),
        subjects: vec![SubjectHash([9; 32])],
        tokens: tokens.iter().map(String::as_str).collect(),
        count: tokens.len() as u64,
        ..AuditEvent::default()
    }
}

fn append(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let options = RocksOptions {
        sync_writes: false,
        sync_audit: false,
        block_cache_bytes: 8 << 20,
    };
    let store: Arc<dyn Store> =
        Arc::new(RocksStore::open(&dir.path().join("db"), &options).expect("store"));
    let log = runtime
        .block_on(AuditLog::open(
            store,
            SecretKey::from_slice(&[7; 32]).expect("key"),
            &dir.path().join("audit.jsonl"),
            Durability::Written {
                sync_every: Duration::from_millis(200),
            },
        ))
        .expect("audit log");
    let mut group = c.benchmark_group("append");
    for count in [1usize, 100] {
        let tokens = tokens(count);
        group.bench_with_input(BenchmarkId::new("written", count), &tokens, |b, tokens| {
            b.iter(|| {
                runtime
                    .block_on(log.append(reveal(tokens)))
                    .expect("append")
            })
        });
    }
    group.finish();
    runtime.block_on(log.close());
}

fn seal(c: &mut Criterion) {
    let mut group = c.benchmark_group("seal");
    let key = ChainKey::from_audit_hash_key(&SecretKey::from_slice(&[7; 32]).expect("key"));
    for count in [1usize, 100] {
        // As the writer drafts it: listed hashes of 32 hex digits.
        let draft = AuditRecord {
            v: tokenvault::audit::record::RECORD_VERSION,
            seq: 1_000_000,
            time_unix_ms: 1_764_000_000_000,
            principal: "billing-service".into(),
            actor: None,
            rpc: "detokenize".into(),
            purpose: "refund".into(),
            subject_hashes: vec![ListedHash::of(&[9; 32])],
            token_hashes: (0..count).map(|i| ListedHash::of(&[i as u8; 32])).collect(),
            count: count as u64,
            outcome: RecordOutcome::Ok,
            prev: "a".repeat(64),
            hash: None,
        };
        group.bench_with_input(BenchmarkId::new("draft", count), &draft, |b, draft| {
            b.iter(|| draft.clone().seal(&key).expect("seal"))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = append, seal
}
criterion_main!(benches);
