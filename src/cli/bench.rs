//! `tokenvault bench`: the end-to-end load tool. It drives a running
//! server over gRPC (Tokenize of new values, Tokenize of known values,
//! Detokenize; single items and batches; several concurrencies) and, in
//! the same run, the peer baseline: OpenBao/Vault transit `encrypt` of the
//! same values over HTTP at the same concurrency and batch size. It prints
//! one markdown table of values/s and per-call latency percentiles, then
//! the cost of the audit log: every Detokenize waits for its synced audit
//! record, Tokenize of known values does the same lookups and key work
//! with no record, so their ratio per cell is what auditing costs.
//!
//! `--http-addr URL` adds Tokenize of known values and Detokenize over the
//! HTTP/JSON API to each cell (`bench_http`).
//!
//! `--redact-corpus FILE` drives RedactText with a chat corpus instead
//! (see `bench_redact`).
//!
//! Loads go to the given addresses only (loopback in every script of this
//! repo), are bounded in time, and stop by themselves.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine;
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HttpClient;

use super::bench_http::{keep_alive_client, HttpJson};
use super::client::{connect, Client};
use super::ClientArgs;
use crate::pb;
use crate::token::checks::luhn_check_digit;

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Seconds each measurement runs.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Concurrent callers, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub concurrency: Vec<usize>,
    /// Values per call, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,100")]
    pub batch: Vec<usize>,
    /// Known subjects the load spreads over (created before measuring).
    #[arg(long, default_value_t = 64)]
    pub subjects: usize,
    /// OpenBao/Vault address for the transit baseline (e.g.
    /// http://127.0.0.1:8200); without it only tokenvault is measured.
    #[arg(long)]
    pub peer_addr: Option<String>,
    /// Token for the peer.
    #[arg(
        long,
        env = "BENCH_PEER_TOKEN",
        hide_env_values = true,
        default_value = "root"
    )]
    pub peer_token: String,
    /// Transit mount and key of the peer (created when missing).
    #[arg(long, default_value = "transit")]
    pub peer_mount: String,
    #[arg(long, default_value = "tokenvault-bench")]
    pub peer_key: String,
    /// Run a key-provider phase instead of the matrix: `load` tokenizes
    /// --kek-values new values for each of --subjects new subjects, then as
    /// many again for the same (now known) subjects, and saves one token per
    /// subject to --kek-state; `cold`, after a server restart, detokenizes
    /// those tokens (every subject's key cold) and reports subjects/s. Both
    /// read the server's key-provider counters from <data-dir>/admin.sock.
    #[arg(long, value_enum, requires = "kek_state")]
    pub kek_phase: Option<KekPhase>,
    /// Values per subject and pass in the `load` phase (one call each).
    #[arg(long, default_value_t = 100)]
    pub kek_values: usize,
    /// File of the subjects' tokens, written by `load`, read by `cold`.
    #[arg(long)]
    pub kek_state: Option<std::path::PathBuf>,
    /// Instead of the matrix, drive RedactText with the messages (`text`
    /// of each JSON line) of this corpus at each --concurrency and print
    /// messages/s and MB/s.
    #[arg(long, conflicts_with = "kek_phase")]
    pub redact_corpus: Option<std::path::PathBuf>,
    /// Instead of the matrix, measure erasure: after --forget-fill tokens,
    /// forget latency for this many subjects with --forget-tokens tokens
    /// each, forget throughput with 8 callers, then Tokenize p50/p99 alone
    /// and while 50 forgets/s run.
    #[arg(long, conflicts_with_all = ["kek_phase", "redact_corpus"])]
    pub forget_subjects: Option<usize>,
    /// Tokens per forgotten subject in the latency measurement.
    #[arg(long, default_value_t = 1000)]
    pub forget_tokens: usize,
    /// Tokens to add to the store before the erasure measurement (its
    /// size at which forgets are measured).
    #[arg(long, default_value_t = 0)]
    pub forget_fill: u64,
    /// More replicas of the same vault (a shared PostgreSQL store),
    /// comma-separated: the load spreads evenly over --addr and these.
    #[arg(long, value_delimiter = ',')]
    pub also_addr: Vec<String>,
    /// tokenvault's HTTP/JSON address (e.g. http://127.0.0.1:50052): Tokenize
    /// of known values and Detokenize are also measured over HTTP.
    #[arg(long)]
    pub http_addr: Option<String>,
    /// Name of the provider in the printed rows.
    #[arg(long, default_value = "")]
    pub label: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KekPhase {
    Load,
    Cold,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    TokenizeNew,
    TokenizeKnown,
    Detokenize,
    HttpTokenizeKnown,
    HttpDetokenize,
    PeerEncrypt,
}

impl Scenario {
    fn label(self) -> &'static str {
        match self {
            Scenario::TokenizeNew => "tokenize (new values)",
            Scenario::TokenizeKnown => "tokenize (known values)",
            Scenario::Detokenize => "detokenize (audited)",
            Scenario::HttpTokenizeKnown => "http: tokenize (known values)",
            Scenario::HttpDetokenize => "http: detokenize (audited)",
            Scenario::PeerEncrypt => "peer: transit encrypt",
        }
    }
}

/// What one measurement gives.
struct Measurement {
    calls: u64,
    values: u64,
    errors: u64,
    elapsed: Duration,
    latencies_us: Vec<u32>,
}

impl Measurement {
    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let rank = ((self.latencies_us.len() - 1) as f64 * p).round() as usize;
        f64::from(self.latencies_us[rank]) / 1000.0
    }

    fn values_per_second(&self) -> f64 {
        self.values as f64 / self.elapsed.as_secs_f64()
    }
}

/// Unique, valid card numbers: a Visa prefix, a running number, the Luhn digit.
fn digits(text: &str) -> Vec<u8> {
    text.bytes().map(|b| b - b'0').collect()
}

pub(super) struct CardSource {
    next: AtomicU64,
    pub(super) run: u64,
}

impl CardSource {
    pub(super) fn new() -> Self {
        let run = crate::clock::unix_now() as u64 % 100_000;
        CardSource {
            next: AtomicU64::new(0),
            run,
        }
    }

    pub(super) fn card(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let body = format!("4{:05}{:09}", self.run, n % 1_000_000_000);
        format!("{body}{}", luhn_check_digit(&digits(&body)))
    }
}

/// Shared state of the tokenvault scenarios.
struct Fixture {
    clients: Vec<Client>,
    subjects: Vec<String>,
    cards: CardSource,
    /// Values tokenized before measuring, with their tokens, per subject.
    known: Vec<(String, Vec<(String, String)>)>,
    /// The HTTP/JSON API, with --http-addr.
    http: Option<HttpJson>,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.seconds <= 0.0 || args.concurrency.is_empty() || args.batch.is_empty() {
        bail!("--seconds, --concurrency and --batch must be positive");
    }
    if let Some(phase) = args.kek_phase {
        return super::bench_kek::run(phase, &args).await;
    }
    if let Some(subjects) = args.forget_subjects {
        return super::bench_forget::run(
            subjects.max(1),
            args.forget_tokens.max(1),
            args.forget_fill,
            &args,
        )
        .await;
    }
    if let Some(corpus) = &args.redact_corpus {
        return super::bench_redact::run(corpus, &args).await;
    }
    let fixture = Arc::new(prepare(&args).await?);
    let peer = match &args.peer_addr {
        Some(addr) => Some(Arc::new(Peer::prepare(addr, &args).await?)),
        None => None,
    };
    let duration = Duration::from_secs_f64(args.seconds);

    println!("| scenario | batch | concurrency | calls/s | values/s | p50 ms | p99 ms | errors |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut audit_cost = Vec::new();
    for &batch in &args.batch {
        for &concurrency in &args.concurrency {
            let mut scenarios = vec![
                Scenario::TokenizeNew,
                Scenario::TokenizeKnown,
                Scenario::Detokenize,
            ];
            if fixture.http.is_some() {
                scenarios.extend([Scenario::HttpTokenizeKnown, Scenario::HttpDetokenize]);
            }
            if peer.is_some() {
                scenarios.push(Scenario::PeerEncrypt);
            }
            for scenario in scenarios {
                let m = measure(
                    scenario,
                    batch,
                    concurrency,
                    duration,
                    &fixture,
                    peer.as_ref(),
                )
                .await;
                println!(
                    "| {} | {batch} | {concurrency} | {:.0} | {:.0} | {:.3} | {:.3} | {} |",
                    scenario.label(),
                    m.calls as f64 / m.elapsed.as_secs_f64(),
                    m.values_per_second(),
                    m.percentile_ms(0.50),
                    m.percentile_ms(0.99),
                    m.errors
                );
                if matches!(scenario, Scenario::TokenizeKnown | Scenario::Detokenize) {
                    audit_cost.push((batch, concurrency, scenario, m.values_per_second()));
                }
            }
        }
    }
    print_audit_cost(&audit_cost);
    Ok(())
}

/// The audit log's cost per cell: audited Detokenize next to Tokenize of
/// known values (same lookups and key work, no audit record).
fn print_audit_cost(cells: &[(usize, usize, Scenario, f64)]) {
    println!();
    println!("| audit cost: batch | concurrency | tokenize (known, no audit) values/s | detokenize (audited) values/s | ratio |");
    println!("|---:|---:|---:|---:|---:|");
    for &(batch, concurrency, scenario, audited) in cells {
        if scenario != Scenario::Detokenize {
            continue;
        }
        let plain = cells
            .iter()
            .find(|(b, c, s, _)| (*b, *c, *s) == (batch, concurrency, Scenario::TokenizeKnown));
        if let Some(&(_, _, _, plain)) = plain {
            println!(
                "| {batch} | {concurrency} | {plain:.0} | {audited:.0} | {:.2} |",
                audited / plain
            );
        }
    }
}

/// Connects, creates the subjects and the pool of known values.
async fn prepare(args: &BenchArgs) -> anyhow::Result<Fixture> {
    // A few HTTP/2 connections so one connection's stream handling is not
    // the bottleneck at high concurrency.
    // Interleaved, so that workers (client = worker mod clients) spread
    // evenly over the replicas.
    let mut clients = Vec::new();
    for _ in 0..4 {
        for addr in std::iter::once(&args.client.addr).chain(&args.also_addr) {
            let replica = super::ClientArgs {
                addr: addr.clone(),
                ..args.client.clone()
            };
            clients.push(connect(&replica).await?);
        }
    }
    let run = CardSource::new().run;
    let subjects: Vec<String> = (0..args.subjects.max(1))
        .map(|i| format!("bench-{run}-{i}"))
        .collect();
    let cards = CardSource::new();
    let mut known = Vec::new();
    let mut client = clients[0].clone();
    for subject in &subjects {
        let values: Vec<String> = (0..100).map(|_| cards.card()).collect();
        let request = tokenize_request(subject, &values);
        let tokens = client
            .tokenize(request)
            .await
            .context("preparing known values")?
            .into_inner()
            .tokens;
        let pairs: Vec<(String, String)> = values.into_iter().zip(tokens).collect();
        known.push((subject.clone(), pairs));
    }
    let http = match &args.http_addr {
        Some(base) => {
            let key = super::client::api_key(&args.client)?
                .context("--http-addr needs an API key (TOKENVAULT_API_KEY or the dev key file)")?;
            let http = HttpJson::new(base, &key);
            let (subject, pool) = &known[0];
            http.check(&tokenize_request(subject, &[pool[0].0.clone()]))
                .await?;
            Some(http)
        }
        None => None,
    };
    Ok(Fixture {
        clients,
        subjects,
        cards,
        known,
        http,
    })
}

pub(super) fn tokenize_request(subject: &str, values: &[String]) -> pb::TokenizeRequest {
    pb::TokenizeRequest {
        subject_id: subject.to_string(),
        items: values
            .iter()
            .map(|value| pb::TokenizeItem {
                value: value.clone(),
                format: "card".into(),
                mode: pb::TokenMode::Deterministic as i32,
                ttl_seconds: 0,
            })
            .collect(),
    }
}

async fn measure(
    scenario: Scenario,
    batch: usize,
    concurrency: usize,
    duration: Duration,
    fixture: &Arc<Fixture>,
    peer: Option<&Arc<Peer>>,
) -> Measurement {
    let start = Instant::now();
    let deadline = start + duration;
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| {
            let fixture = Arc::clone(fixture);
            let peer = peer.cloned();
            tokio::spawn(async move {
                let mut client = fixture.clients[worker % fixture.clients.len()].clone();
                let mut latencies = Vec::new();
                let (mut calls, mut errors) = (0u64, 0u64);
                let mut round = worker;
                while Instant::now() < deadline {
                    let began = Instant::now();
                    let ok = match scenario {
                        Scenario::PeerEncrypt => match &peer {
                            Some(peer) => peer.encrypt(&fixture.cards, batch).await,
                            None => false,
                        },
                        _ => call(scenario, &mut client, &fixture, batch, round).await,
                    };
                    latencies.push(began.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    calls += 1;
                    errors += u64::from(!ok);
                    round += concurrency;
                }
                (calls, errors, latencies)
            })
        })
        .collect();
    let mut m = Measurement {
        calls: 0,
        values: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies_us: Vec::new(),
    };
    for worker in workers {
        if let Ok((calls, errors, latencies)) = worker.await {
            m.calls += calls;
            m.errors += errors;
            m.latencies_us.extend(latencies);
        }
    }
    m.elapsed = start.elapsed();
    m.values = (m.calls - m.errors) * batch as u64;
    m.latencies_us.sort_unstable();
    m
}

/// One tokenvault call of a scenario; true when it succeeded.
async fn call(
    scenario: Scenario,
    client: &mut Client,
    fixture: &Fixture,
    batch: usize,
    round: usize,
) -> bool {
    let (subject, pool) = &fixture.known[round % fixture.known.len()];
    let known_values = || -> Vec<String> {
        pool.iter()
            .cycle()
            .skip(round % pool.len())
            .take(batch)
            .map(|(v, _)| v.clone())
            .collect()
    };
    let known_tokens = || pb::DetokenizeRequest {
        tokens: pool
            .iter()
            .cycle()
            .skip(round % pool.len())
            .take(batch)
            .map(|(_, t)| t.clone())
            .collect(),
        purpose: "bench".into(),
    };
    match scenario {
        Scenario::TokenizeNew => {
            let subject = &fixture.subjects[round % fixture.subjects.len()];
            let values: Vec<String> = (0..batch).map(|_| fixture.cards.card()).collect();
            client
                .tokenize(tokenize_request(subject, &values))
                .await
                .is_ok()
        }
        Scenario::TokenizeKnown => client
            .tokenize(tokenize_request(subject, &known_values()))
            .await
            .is_ok(),
        Scenario::Detokenize => {
            matches!(client.detokenize(known_tokens()).await, Ok(r) if r.get_ref().results.iter().all(|r| r.status == pb::TokenStatus::Found as i32))
        }
        Scenario::HttpTokenizeKnown => match &fixture.http {
            Some(http) => {
                http.tokenize(&tokenize_request(subject, &known_values()))
                    .await
            }
            None => false,
        },
        Scenario::HttpDetokenize => match &fixture.http {
            Some(http) => http.detokenize(&known_tokens()).await,
            None => false,
        },
        Scenario::PeerEncrypt => false,
    }
}

/// The peer baseline: transit encrypt over plain HTTP/1.1 with keep-alive.
struct Peer {
    http: HttpClient<HttpConnector, Full<Bytes>>,
    encrypt_url: String,
    token: String,
}

impl Peer {
    async fn prepare(addr: &str, args: &BenchArgs) -> anyhow::Result<Self> {
        let http = keep_alive_client();
        let base = addr.trim_end_matches('/');
        let peer = Peer {
            http,
            encrypt_url: format!("{base}/v1/{}/encrypt/{}", args.peer_mount, args.peer_key),
            token: args.peer_token.clone(),
        };
        // Mount transit and create the key; "already exists" answers are fine.
        let _ = peer
            .post(
                &format!("{base}/v1/sys/mounts/{}", args.peer_mount),
                r#"{"type":"transit"}"#.into(),
            )
            .await;
        let created = peer
            .post(
                &format!("{base}/v1/{}/keys/{}", args.peer_mount, args.peer_key),
                "{}".into(),
            )
            .await
            .context("cannot reach the peer")?;
        if !(created.is_success() || created.as_u16() == 400) {
            bail!("peer refused to create the transit key: HTTP {created}");
        }
        Ok(peer)
    }

    async fn post(&self, url: &str, body: String) -> anyhow::Result<hyper::StatusCode> {
        let request = hyper::Request::post(url)
            .header("X-Vault-Token", &self.token)
            .header("Content-Type", "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let response = self.http.request(request).await?;
        let status = response.status();
        response.into_body().collect().await?;
        Ok(status)
    }

    async fn encrypt(&self, cards: &CardSource, batch: usize) -> bool {
        let b64 = base64::engine::general_purpose::STANDARD;
        let body = if batch == 1 {
            serde_json::json!({ "plaintext": b64.encode(cards.card()) })
        } else {
            let items: Vec<_> = (0..batch)
                .map(|_| serde_json::json!({ "plaintext": b64.encode(cards.card()) }))
                .collect();
            serde_json::json!({ "batch_input": items })
        };
        matches!(self.post(&self.encrypt_url, body.to_string()).await, Ok(s) if s.is_success())
    }
}
