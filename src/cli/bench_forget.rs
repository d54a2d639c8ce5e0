//! The erasure phase of `tokenvault bench` (`--forget-subjects N`):
//! 0. with `--forget-fill T`, the store first gets T more tokens (subjects
//!    of 1,000 cards each, 8 callers), so the forget is measured at a
//!    store size;
//! 1. forget latency: N subjects with `--forget-tokens` tokens each,
//!    forgotten one after the other; prints the median, p99 and maximum.
//!    A forget returns once no file holds the subject's wrapped key (or,
//!    under `erasure.full_purge_at_return`, nothing of it at all);
//! 2. forget throughput: `FORGET_CALLERS` callers forget N subjects of as
//!    many tokens each; prints forgets/s;
//! 3. Tokenize under erasure: single-value Tokenize of new values at
//!    `--concurrency` (the first value) for `--seconds` alone, then again
//!    while forgets run at `FORGETS_PER_SECOND`; prints both p50/p99 side
//!    by side.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::bench::{tokenize_request, BenchArgs, CardSource};
use super::client::{connect, Client};
use crate::pb;

/// Concurrent callers of the throughput measurement and the fill.
const FORGET_CALLERS: usize = 8;
const FILL_CALLERS: usize = 8;
const FILL_PER_SUBJECT: usize = 1000;
/// The forget rate while Tokenize is measured, and its subjects' size.
const FORGETS_PER_SECOND: f64 = 50.0;
const TOKENS_PER_CONCURRENT_SUBJECT: usize = 100;

pub async fn run(
    subjects: usize,
    tokens: usize,
    fill_tokens: u64,
    args: &BenchArgs,
) -> anyhow::Result<()> {
    let mut client = connect(&args.client).await?;
    let cards = Arc::new(CardSource::new());
    let run = cards.run;
    if fill_tokens > 0 {
        fill_store(&client, &cards, fill_tokens).await?;
    }

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
    let at = |p: f64| ms(latencies[((latencies.len() - 1) as f64 * p).round() as usize]);
    println!(
        "| forget of a subject with {tokens} tokens | subjects | median ms | p99 ms | max ms |"
    );
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| sequential | {subjects} | {:.1} | {:.1} | {:.1} |",
        at(0.5),
        at(0.99),
        at(1.0)
    );

    let names: Vec<String> = (0..subjects)
        .map(|i| format!("forget-{run}-many-{i}"))
        .collect();
    for name in &names {
        fill(&mut client, name, tokens, &cards).await?;
    }
    let began = Instant::now();
    forget_all(&client, &names, FORGET_CALLERS, None).await?;
    let window = began.elapsed();
    println!(
        "| {FORGET_CALLERS} callers | {subjects} | {:.0} forgets/s | | |",
        subjects as f64 / window.as_secs_f64()
    );

    let concurrency = args.concurrency.first().copied().unwrap_or(16);
    let duration = Duration::from_secs_f64(args.seconds);
    let alone = tokenize_load(&args.client, &cards, concurrency, Load::For(duration)).await?;

    let victims: Vec<String> = (0..(FORGETS_PER_SECOND * args.seconds).ceil() as usize)
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
    forget_all(&client, &victims, FORGET_CALLERS, Some(FORGETS_PER_SECOND)).await?;
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
        "| while {} forgets run ({:.0}/s paced, {:.1}/s reached) | {} | {:.0} | {:.3} | {:.3} | {} |",
        victims.len(),
        FORGETS_PER_SECOND,
        victims.len() as f64 / forget_window.as_secs_f64(),
        during.calls(),
        during.rate(),
        during.p(0.5),
        during.p(0.99),
        during.errors
    );
    Ok(())
}

/// Adds `total` tokens to the store: subjects of `FILL_PER_SUBJECT` cards,
/// one call each, on `FILL_CALLERS` callers; prints progress to stderr.
async fn fill_store(client: &Client, cards: &Arc<CardSource>, total: u64) -> anyhow::Result<()> {
    let subjects = total.div_ceil(FILL_PER_SUBJECT as u64);
    let next = Arc::new(AtomicU64::new(0));
    let began = Instant::now();
    let workers: Vec<_> = (0..FILL_CALLERS)
        .map(|_| {
            let (mut client, cards, next) = (client.clone(), Arc::clone(cards), Arc::clone(&next));
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= subjects {
                        return anyhow::Ok(());
                    }
                    let subject = format!("fill-{}-{n}", cards.run);
                    fill(&mut client, &subject, FILL_PER_SUBJECT, &cards).await?;
                    if n % 1000 == 999 {
                        eprintln!(
                            "fill: {} tokens, {:.0}/s",
                            (n + 1) * FILL_PER_SUBJECT as u64,
                            ((n + 1) * FILL_PER_SUBJECT as u64) as f64
                                / began.elapsed().as_secs_f64()
                        );
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await??;
    }
    eprintln!(
        "fill: {} tokens in {:.0} s",
        subjects * FILL_PER_SUBJECT as u64,
        began.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Forgets every subject on `callers` callers, paced to `per_second`
/// forgets in all when given.
async fn forget_all(
    client: &Client,
    names: &[String],
    callers: usize,
    per_second: Option<f64>,
) -> anyhow::Result<()> {
    let names = Arc::new(names.to_vec());
    let began = Instant::now();
    let mut streams = Vec::new();
    for caller in 0..callers {
        let (names, mut client) = (Arc::clone(&names), client.clone());
        streams.push(tokio::spawn(async move {
            for (i, name) in names.iter().enumerate().skip(caller).step_by(callers) {
                if let Some(rate) = per_second {
                    let due = began + Duration::from_secs_f64(i as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                forget(&mut client, name).await?;
            }
            anyhow::Ok(())
        }));
    }
    for stream in streams {
        stream.await??;
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Gives a subject `tokens` new card tokens, 1,000 per call.
async fn fill(
    client: &mut Client,
    subject: &str,
    tokens: usize,
    cards: &CardSource,
) -> anyhow::Result<()> {
    let mut left = tokens;
    while left > 0 {
        let values: Vec<String> = (0..left.min(1000)).map(|_| cards.card()).collect();
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
