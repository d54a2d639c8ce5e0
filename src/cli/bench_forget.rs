//! The erasure phase of `tokenvault bench` (`--forget-subjects N`):
//! 1. forget latency: N subjects with `--forget-tokens` tokens each (1,000
//!    by default), forgotten one after the other; prints each latency's
//!    median and maximum. A forget returns only after the purge (flush,
//!    compaction, obsolete files deleted), so this is the cost of a
//!    provable erasure, not of a deleted row.
//! 2. Tokenize under erasure: single-value Tokenize of new values at
//!    `--concurrency` (the first value) for `--seconds` alone, then again
//!    while 100 forgets (of subjects with 100 tokens each, 4 at a time)
//!    run; prints both p50/p99 side by side.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::bench::{tokenize_request, BenchArgs, CardSource};
use super::client::{connect, Client};
use crate::pb;

/// Forgets that run during the second measurement, and how many at once.
const CONCURRENT_FORGETS: usize = 100;
const FORGET_STREAMS: usize = 4;
const TOKENS_PER_CONCURRENT_SUBJECT: usize = 100;

pub async fn run(subjects: usize, tokens: usize, args: &BenchArgs) -> anyhow::Result<()> {
    let mut client = connect(&args.client).await?;
    let cards = Arc::new(CardSource::new());
    let run = cards.run;

    let names: Vec<String> = (0..subjects).map(|i| format!("forget-{run}-{i}")).collect();
    for name in &names {
        fill(&mut client, name, tokens, &cards).await?;
    }
    let mut latencies = Vec::new();
    for name in &names {
        let began = Instant::now();
        let erased = forget(&mut client, name).await?;
        latencies.push(began.elapsed());
        anyhow::ensure!(
            erased == tokens as u64,
            "forget erased {erased}, not {tokens}"
        );
    }
    latencies.sort();
    println!("| forget of a subject with {tokens} tokens | subjects | median ms | max ms |");
    println!("|---|---:|---:|---:|");
    println!(
        "| sequential | {subjects} | {:.1} | {:.1} |",
        ms(latencies[latencies.len() / 2]),
        ms(latencies[latencies.len() - 1])
    );

    let concurrency = args.concurrency.first().copied().unwrap_or(16);
    let duration = Duration::from_secs_f64(args.seconds);
    let alone = tokenize_load(&args.client, &cards, concurrency, Load::For(duration)).await?;

    let victims: Vec<String> = (0..CONCURRENT_FORGETS)
        .map(|i| format!("forget-{run}-load-{i}"))
        .collect();
    for name in &victims {
        fill(&mut client, name, TOKENS_PER_CONCURRENT_SUBJECT, &cards).await?;
    }
    let done = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn({
        let (client_args, cards, done) =
            (args.client.clone(), Arc::clone(&cards), Arc::clone(&done));
        async move { tokenize_load(&client_args, &cards, concurrency, Load::Until(done)).await }
    });
    let began = Instant::now();
    let victims = Arc::new(victims);
    let mut streams = Vec::new();
    for stream in 0..FORGET_STREAMS {
        let (victims, mut client) = (Arc::clone(&victims), client.clone());
        streams.push(tokio::spawn(async move {
            for name in victims.iter().skip(stream).step_by(FORGET_STREAMS) {
                forget(&mut client, name).await?;
            }
            anyhow::Ok(())
        }));
    }
    for stream in streams {
        stream.await??;
    }
    let forget_window = began.elapsed();
    done.store(true, Ordering::Relaxed);
    let during = load.await??;

    println!();
    println!("| Tokenize, 1 value, c={concurrency} | calls | calls/s | p50 ms | p99 ms | errors |");
    println!("|---|---:|---:|---:|---:|---:|");
    println!(
        "| alone | {} | {:.0} | {:.3} | {:.3} | {} |",
        alone.calls(),
        alone.rate(),
        alone.p(0.5),
        alone.p(0.99),
        alone.errors
    );
    println!(
        "| while {CONCURRENT_FORGETS} forgets run ({FORGET_STREAMS} at a time, {:.1} s) | {} | {:.0} | {:.3} | {:.3} | {} |",
        forget_window.as_secs_f64(),
        during.calls(),
        during.rate(),
        during.p(0.5),
        during.p(0.99),
        during.errors
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Gives a subject `tokens` new card tokens, 100 per call.
async fn fill(
    client: &mut Client,
    subject: &str,
    tokens: usize,
    cards: &CardSource,
) -> anyhow::Result<()> {
    let mut left = tokens;
    while left > 0 {
        let values: Vec<String> = (0..left.min(100)).map(|_| cards.card()).collect();
        left -= values.len();
        client
            .tokenize(tokenize_request(subject, &values))
            .await
            .context("preparing a subject to forget")?;
    }
    Ok(())
}

async fn forget(client: &mut Client, subject: &str) -> anyhow::Result<u64> {
    Ok(client
        .forget_subject(pb::ForgetSubjectRequest {
            subject_id: subject.to_string(),
            reason: "bench".into(),
        })
        .await
        .context("forget")?
        .into_inner()
        .tokens_erased)
}

enum Load {
    For(Duration),
    Until(Arc<AtomicBool>),
}

struct Latencies {
    sorted_us: Vec<u32>,
    errors: u64,
    elapsed: Duration,
}

impl Latencies {
    fn calls(&self) -> usize {
        self.sorted_us.len()
    }

    fn rate(&self) -> f64 {
        self.calls() as f64 / self.elapsed.as_secs_f64()
    }

    fn p(&self, p: f64) -> f64 {
        if self.sorted_us.is_empty() {
            return f64::NAN;
        }
        let rank = ((self.sorted_us.len() - 1) as f64 * p).round() as usize;
        f64::from(self.sorted_us[rank]) / 1000.0
    }
}

/// Single-value Tokenize of new values on `concurrency` callers.
async fn tokenize_load(
    client_args: &super::ClientArgs,
    cards: &Arc<CardSource>,
    concurrency: usize,
    load: Load,
) -> anyhow::Result<Latencies> {
    let client = connect(client_args).await?;
    let load = Arc::new(load);
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| {
            let (mut client, cards, load) = (client.clone(), Arc::clone(cards), Arc::clone(&load));
            tokio::spawn(async move {
                let (mut latencies, mut errors) = (Vec::new(), 0u64);
                let subject = format!("forget-load-{}-{worker}", cards.run);
                loop {
                    let go_on = match load.as_ref() {
                        Load::For(duration) => start.elapsed() < *duration,
                        Load::Until(done) => !done.load(Ordering::Relaxed),
                    };
                    if !go_on {
                        break;
                    }
                    let began = Instant::now();
                    let ok = client
                        .tokenize(tokenize_request(&subject, &[cards.card()]))
                        .await
                        .is_ok();
                    latencies.push(began.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    errors += u64::from(!ok);
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut all = Latencies {
        sorted_us: Vec::new(),
        errors: 0,
        elapsed: Duration::ZERO,
    };
    for worker in workers {
        let (latencies, errors) = worker.await?;
        all.sorted_us.extend(latencies);
        all.errors += errors;
    }
    all.elapsed = start.elapsed();
    all.sorted_us.sort_unstable();
    Ok(all)
}
