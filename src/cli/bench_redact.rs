//! The RedactText phase of `tokenvault bench` (`--redact-corpus FILE`):
//! drives RedactText over gRPC with the messages of a JSON-lines corpus
//! (the `text` field of each line, e.g. `tests/data/chat_corpus.jsonl`) at
//! each `--concurrency` for `--seconds`, and prints messages/s, MB/s of
//! message text, findings/s and latency percentiles.
//!
//! Every pass over the corpus uses new subjects, so every finding is
//! tokenized afresh (a new token is minted and stored), never answered
//! from the deterministic index of an earlier pass.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::bench::BenchArgs;
use super::client::{connect, Client};
use crate::pb;

/// Subjects a pass over the corpus spreads its messages over.
const SUBJECTS_PER_PASS: u64 = 64;

pub async fn run(corpus: &Path, args: &BenchArgs) -> anyhow::Result<()> {
    let messages = Arc::new(read_corpus(corpus)?);
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(connect(&args.client).await?);
    }
    let run = crate::clock::unix_now();
    let duration = Duration::from_secs_f64(args.seconds);
    let bytes: usize = messages.iter().map(String::len).sum();
    println!(
        "corpus: {} messages, {:.2} MB",
        messages.len(),
        bytes as f64 / 1e6
    );
    println!(
        "| scenario | concurrency | messages/s | MB/s | findings/s | p50 ms | p99 ms | errors |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (round, &concurrency) in args.concurrency.iter().enumerate() {
        let next = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let deadline = start + duration;
        let workers: Vec<_> = (0..concurrency.max(1))
            .map(|worker| {
                let mut client: Client = clients[worker % clients.len()].clone();
                let messages = Arc::clone(&messages);
                let next = Arc::clone(&next);
                tokio::spawn(async move {
                    let mut tally = Tally::default();
                    while Instant::now() < deadline {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        let len = messages.len() as u64;
                        let pass = n / len;
                        let text = &messages[(n % len) as usize];
                        let subject = format!(
                            "redact-bench-{run}-{round}-{pass}-{}",
                            n % SUBJECTS_PER_PASS
                        );
                        let began = Instant::now();
                        let outcome = client
                            .redact_text(pb::RedactTextRequest {
                                subject_id: subject,
                                text: text.clone(),
                                kinds: Vec::new(),
                            })
                            .await;
                        tally
                            .latencies_us
                            .push(began.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                        match outcome {
                            Ok(response) => {
                                tally.messages += 1;
                                tally.bytes += text.len() as u64;
                                tally.findings += response.into_inner().findings.len() as u64;
                            }
                            Err(_) => tally.errors += 1,
                        }
                    }
                    tally
                })
            })
            .collect();
        let mut total = Tally::default();
        for worker in workers {
            let tally = worker.await.context("a bench worker panicked")?;
            total.messages += tally.messages;
            total.bytes += tally.bytes;
            total.findings += tally.findings;
            total.errors += tally.errors;
            total.latencies_us.extend(tally.latencies_us);
        }
        let seconds = start.elapsed().as_secs_f64();
        total.latencies_us.sort_unstable();
        println!(
            "| redact_text (corpus, new subjects) | {concurrency} | {:.0} | {:.2} | {:.0} | {:.3} | {:.3} | {} |",
            total.messages as f64 / seconds,
            total.bytes as f64 / seconds / 1e6,
            total.findings as f64 / seconds,
            percentile_ms(&total.latencies_us, 0.50),
            percentile_ms(&total.latencies_us, 0.99),
            total.errors
        );
    }
    Ok(())
}

#[derive(Default)]
struct Tally {
    messages: u64,
    bytes: u64,
    findings: u64,
    errors: u64,
    latencies_us: Vec<u32>,
}

fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted_us.len() - 1) as f64 * p).round() as usize;
    f64::from(sorted_us[rank]) / 1000.0
}

/// The `text` of every line of a JSON-lines file.
fn read_corpus(path: &Path) -> anyhow::Result<Vec<String>> {
    let raw = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read corpus {}", path.display()))?;
    let mut messages = Vec::new();
    for (n, line) in raw.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not JSON", path.display(), n + 1))?;
        match value.get("text").and_then(|t| t.as_str()) {
            Some(text) => messages.push(text.to_string()),
            None => bail!("{}:{}: no \"text\" string", path.display(), n + 1),
        }
    }
    if messages.is_empty() {
        bail!("corpus {} has no messages", path.display());
    }
    Ok(messages)
}
