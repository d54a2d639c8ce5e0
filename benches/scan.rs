//! Criterion bench of in-process PII detection: `Scanner::scan` over every
//! message of the labelled chat corpus, reported as messages/s and bytes/s.
//! `benches/presidio.py` measures Microsoft Presidio on the same corpus.
//!
//! Run: `cargo bench --bench scan`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tokenvault::scan::Scanner;

const CORPUS: &str = include_str!("../tests/data/chat_corpus.jsonl");

fn messages() -> Vec<String> {
    CORPUS
        .lines()
        .map(|line| {
            let v: serde_json::Value =
                serde_json::from_str(line).expect("the corpus is valid JSON lines");
            v["text"]
                .as_str()
                .expect("every corpus line has a text")
                .to_owned()
        })
        .collect()
}

fn scan_corpus(c: &mut Criterion) {
    let messages = messages();
    let bytes: usize = messages.iter().map(String::len).sum();
    let scanner = Scanner::all();
    let mut group = c.benchmark_group("scan_corpus");
    group.throughput(Throughput::Elements(messages.len() as u64));
    group.bench_function("messages", |b| {
        b.iter(|| {
            messages
                .iter()
                .map(|m| scanner.scan(m).len())
                .sum::<usize>()
        })
    });
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("bytes", |b| {
        b.iter(|| {
            messages
                .iter()
                .map(|m| scanner.scan(m).len())
                .sum::<usize>()
        })
    });
    group.finish();
}

criterion_group!(benches, scan_corpus);
criterion_main!(benches);
