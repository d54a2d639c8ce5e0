//! The key-provider phases of `tokenvault bench` (`--kek-phase`): how many
//! KEK calls tokenizing for many new subjects costs, whether known subjects
//! cost none, and how fast a restarted server unwraps cold subjects. Run
//! against a local-provider and a Vault-provider server by
//! `benches/kek.sh`, which prints both side by side.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::bench::{tokenize_request, BenchArgs, CardSource, KekPhase};
use super::client::{connect, Client};
use super::keys::connect_admin;
use crate::pb;
use crate::pb::admin::{StatsRequest, StatsResponse};

pub async fn run(phase: KekPhase, args: &BenchArgs) -> anyhow::Result<()> {
    let state = args.kek_state.as_ref().context("--kek-state is required")?;
    let concurrency = args.concurrency[0].max(1);
    let client = connect(&args.client).await?;
    println!("| provider | phase | subjects | values | values/s | KEK operations | keys through the KEK | Vault HTTP calls | seconds |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    match phase {
        KekPhase::Load => {
            let run = CardSource::new();
            let subjects: Vec<String> = (0..args.subjects)
                .map(|i| format!("kek-bench-{}-{i}", crate::clock::unix_now()))
                .collect();
            let mut first_tokens = Vec::new();
            for (pass, label) in ["tokenize, new subjects", "tokenize, known subjects"]
                .into_iter()
                .enumerate()
            {
                let before = stats(args).await?;
                let started = Instant::now();
                let tokens =
                    tokenize_all(&client, &subjects, &run, args.kek_values, concurrency).await?;
                let elapsed = started.elapsed();
                let after = stats(args).await?;
                print_row(
                    &args.label,
                    label,
                    subjects.len(),
                    subjects.len() * args.kek_values,
                    elapsed,
                    after.kek_wrap_calls + after.kek_unwrap_calls
                        - before.kek_wrap_calls
                        - before.kek_unwrap_calls,
                    after.kek_keys_wrapped + after.kek_keys_unwrapped
                        - before.kek_keys_wrapped
                        - before.kek_keys_unwrapped,
                    after.kek_remote_calls - before.kek_remote_calls,
                );
                if pass == 0 {
                    first_tokens = tokens;
                }
            }
            std::fs::write(state, first_tokens.join("\n"))
                .with_context(|| format!("cannot write {}", state.display()))?;
        }
        KekPhase::Cold => {
            let text = std::fs::read_to_string(state)
                .with_context(|| format!("cannot read {}", state.display()))?;
            let tokens: Vec<String> = text.lines().map(str::to_string).collect();
            let before = stats(args).await?;
            let started = Instant::now();
            detokenize_all(&client, &tokens, concurrency).await?;
            let elapsed = started.elapsed();
            let after = stats(args).await?;
            print_row(
                &args.label,
                "detokenize after restart (cold subjects)",
                tokens.len(),
                tokens.len(),
                elapsed,
                after.kek_unwrap_calls - before.kek_unwrap_calls,
                after.kek_keys_unwrapped - before.kek_keys_unwrapped,
                after.kek_remote_calls - before.kek_remote_calls,
            );
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn print_row(
    provider: &str,
    phase: &str,
    subjects: usize,
    values: usize,
    elapsed: Duration,
    calls: u64,
    keys: u64,
    remote: u64,
) {
    println!(
        "| {provider} | {phase} | {subjects} | {values} | {:.0} | {calls} | {keys} | {remote} | {:.2} |",
        values as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
}

async fn stats(args: &BenchArgs) -> anyhow::Result<StatsResponse> {
    let Some(mut admin) = connect_admin(&args.client.data_dir).await? else {
        bail!(
            "no server admin socket in {} (pass the server's --data-dir)",
            args.client.data_dir.display()
        );
    };
    Ok(admin
        .stats(StatsRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("admin stats: {}", s.message()))?
        .into_inner())
}

/// One call of `per_subject` new values per subject, `concurrency` calls
/// at a time; returns each subject's first token.
async fn tokenize_all(
    client: &Client,
    subjects: &[String],
    cards: &CardSource,
    per_subject: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<String>> {
    let requests: Vec<pb::TokenizeRequest> = subjects
        .iter()
        .map(|subject| {
            let values: Vec<String> = (0..per_subject).map(|_| cards.card()).collect();
            tokenize_request(subject, &values)
        })
        .collect();
    let queue = Arc::new(parking_lot::Mutex::new(
        requests.into_iter().enumerate().collect::<Vec<_>>(),
    ));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let queue = Arc::clone(&queue);
        let mut client = client.clone();
        workers.push(tokio::spawn(async move {
            let mut firsts = Vec::new();
            loop {
                let next = queue.lock().pop();
                let Some((i, request)) = next else { break };
                let tokens = client
                    .tokenize(request)
                    .await
                    .map_err(|s| anyhow::anyhow!("tokenize: {:?} {}", s.code(), s.message()))?
                    .into_inner()
                    .tokens;
                firsts.push((i, tokens.into_iter().next().unwrap_or_default()));
            }
            anyhow::Ok(firsts)
        }));
    }
    let mut firsts = Vec::new();
    for worker in workers {
        firsts.extend(worker.await??);
    }
    firsts.sort();
    Ok(firsts.into_iter().map(|(_, token)| token).collect())
}

/// Detokenizes in calls of 100 tokens, `concurrency` at a time; every
/// token must be found.
async fn detokenize_all(
    client: &Client,
    tokens: &[String],
    concurrency: usize,
) -> anyhow::Result<()> {
    let queue = Arc::new(parking_lot::Mutex::new(
        tokens
            .chunks(100)
            .map(<[String]>::to_vec)
            .collect::<Vec<_>>(),
    ));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let queue = Arc::clone(&queue);
        let mut client = client.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let next = queue.lock().pop();
                let Some(tokens) = next else { break };
                let results = client
                    .detokenize(pb::DetokenizeRequest {
                        tokens,
                        purpose: "bench".into(),
                    })
                    .await
                    .map_err(|s| anyhow::anyhow!("detokenize: {:?} {}", s.code(), s.message()))?
                    .into_inner()
                    .results;
                if results
                    .iter()
                    .any(|r| r.status != pb::TokenStatus::Found as i32)
                {
                    bail!("a token of the load phase was not found");
                }
            }
            anyhow::Ok(())
        }));
    }
    for worker in workers {
        worker.await??;
    }
    Ok(())
}
