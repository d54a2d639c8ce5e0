//! The soak and fault run: a mixed load of Tokenize, Detokenize and
//! RedactText from several tasks for `SOAK_SECONDS` (default 60) while a
//! driver, in turn, kills the server with SIGKILL and restarts it, fills
//! its data directory (a small tmpfs) to the brim and drains it, sends
//! malformed gRPC / HTTP/2 frames, raw garbage and an oversized message,
//! and stops it with SIGTERM (which must exit 0) and restarts it.
//!
//! At the end the server is restarted once more and every acknowledged
//! token is detokenized. It reports calls made, errors by code,
//! acknowledged tokens lost and panics in the server log, and fails if
//! any token was lost or the server panicked. Loopback only, bounded in
//! time; needs root and tmpfs (see `common::tmpfs`).
//!
//! Run: `bash tests/soak.sh` (or `SOAK_SECONDS=60 cargo test --release
//! --test soak -- --ignored --nocapture`).

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::rawh2::{frame, h2_start, tokenize_headers_frame};
use common::tmpfs::Tmpfs;
use common::{admin_principal_toml, item, Server, TEST_API_KEY};
use tokenvault::cli::client::Client;
use tokenvault::pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Mutex, RwLock};

/// Longest wait for one call: a call to a server being killed must not
/// hang the load.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const LOAD_TASKS: usize = 6;
const SOAK_DISK_MB: u64 = 768;

#[derive(Default)]
struct Report {
    calls: AtomicU64,
    ok: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    /// Detokenize of an acknowledged token answered with another value or
    /// NOT_FOUND while the server was up.
    wrong: AtomicU64,
    acknowledged: Mutex<Vec<(String, String)>>,
    faults: Mutex<BTreeMap<&'static str, u64>>,
}

impl Report {
    async fn error(&self, rpc: &str, code: String) {
        *self
            .errors
            .lock()
            .await
            .entry(format!("{rpc} {code}"))
            .or_default() += 1;
    }

    async fn fault(&self, name: &'static str) {
        *self.faults.lock().await.entry(name).or_default() += 1;
    }
}

type Slot = Arc<RwLock<Option<Client>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: run by tests/soak.sh and .ci/run (SOAK_SECONDS)"]
async fn soak_with_faults_loses_nothing_and_never_panics() {
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    // Room for a minute of load and its audit records (the final check
    // alone writes one record per 1000 tokens, 64 bytes per token).
    let disk = Tmpfs::mount(&root.join("data"), SOAK_DISK_MB);
    let kek = root.join("kek.key");
    std::fs::write(&kek, [5u8; 32]).expect("kek");
    let toml = format!(
        "shutdown_grace_seconds = 5\n[kek]\nprovider = \"local\"\npath = \"{}\"\n[storage]\ndisk_reserve_bytes = {}\n{}",
        kek.display(),
        16 << 20,
        admin_principal_toml()
    );
    let mut server = Server::start_with_config(root, &toml);
    let slot: Slot = Arc::new(RwLock::new(Some(server.client().await)));
    let report = Arc::new(Report::default());
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);

    let load: Vec<_> = (0..LOAD_TASKS)
        .map(|task| {
            let slot = Arc::clone(&slot);
            let report = Arc::clone(&report);
            tokio::spawn(run_load(task, slot, report, deadline))
        })
        .collect();

    let faults = ["kill9", "disk_full", "malformed", "sigterm"];
    let mut round = 0;
    while Instant::now() + Duration::from_secs(4) < deadline {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let fault = faults[round % faults.len()];
        round += 1;
        report.fault(fault).await;
        match fault {
            "kill9" => {
                *slot.write().await = None;
                server.kill9();
                server.restart();
                *slot.write().await = Some(server.client().await);
            }
            "disk_full" => {
                disk.fill();
                tokio::time::sleep(Duration::from_millis(1500)).await;
                disk.drain();
            }
            "malformed" => malformed(&server, &report).await,
            _ => {
                *slot.write().await = None;
                server.stop().await; // asserts exit 0
                server.restart();
                *slot.write().await = Some(server.client().await);
            }
        }
    }
    for task in load {
        task.await.expect("load task");
    }

    // Every acknowledged token, after one more restart.
    *slot.write().await = None;
    server.stop().await;
    server.restart();
    let acknowledged = report.acknowledged.lock().await.clone();
    let mut client = server.client().await;
    let mut lost = 0u64;
    for chunk in acknowledged.chunks(1000) {
        let tokens: Vec<String> = chunk.iter().map(|(t, _)| t.clone()).collect();
        let results = common::detokenize(&mut client, &tokens).await;
        for ((_, value), result) in chunk.iter().zip(results) {
            if result.status != pb::TokenStatus::Found as i32 || &result.value != value {
                lost += 1;
            }
        }
    }
    drop(client);
    server.stop().await;
    let log = std::fs::read_to_string(server.log_path()).unwrap_or_default();
    let panics = log.matches("panicked").count();
    if let Ok(keep) = std::env::var("SOAK_LOG") {
        std::fs::write(&keep, &log).expect("write SOAK_LOG");
    }

    println!("soak: {seconds} s, {LOAD_TASKS} load tasks");
    println!("faults: {:?}", report.faults.lock().await);
    println!(
        "calls: {} (ok {})",
        report.calls.load(Ordering::Relaxed),
        report.ok.load(Ordering::Relaxed)
    );
    println!("errors by code:");
    for (code, n) in report.errors.lock().await.iter() {
        println!("  {code}: {n}");
    }
    println!("acknowledged tokens: {}", acknowledged.len());
    println!(
        "data dir: {} MiB used of {SOAK_DISK_MB} MiB",
        SOAK_DISK_MB
            .saturating_sub(tokenvault::store::disk::free_bytes(&disk.path).unwrap_or(0) >> 20)
    );
    println!("acknowledged tokens lost: {lost}");
    println!(
        "wrong detokenize answers during the run: {}",
        report.wrong.load(Ordering::Relaxed)
    );
    println!("panics in the server log: {panics}");
    println!("server log lines:");
    for needle in [
        "disk full: free space",
        "disk space back",
        "audit record not written",
        "storage unavailable",
        "SIGTERM: shutting down",
        "stopped; cached keys zeroized",
    ] {
        println!("  {needle:?}: {}", log.matches(needle).count());
    }
    assert_eq!(lost, 0, "acknowledged tokens lost");
    assert_eq!(
        panics,
        0,
        "the server panicked; log: {}",
        server.log_path().display()
    );
    assert_eq!(report.wrong.load(Ordering::Relaxed), 0);
    assert!(
        acknowledged.len() > 100,
        "the load hardly ran: {} tokens acknowledged",
        acknowledged.len()
    );
    drop(disk);
}

/// One load task: Tokenize, Detokenize of acknowledged tokens, RedactText
/// in turn until the deadline.
async fn run_load(task: usize, slot: Slot, report: Arc<Report>, deadline: Instant) {
    let mut n = 0usize;
    while Instant::now() < deadline {
        n += 1;
        let Some(mut client) = slot.read().await.clone() else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        report.calls.fetch_add(1, Ordering::Relaxed);
        let subject = format!("soak-{task}-{}", n % 16);
        let outcome = match n % 3 {
            0 => tokenize(&mut client, &report, task, n, &subject).await,
            1 => detokenize(&mut client, &report, n).await,
            _ => redact(&mut client, n, &subject).await,
        };
        match outcome {
            Ok(()) => {
                report.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err((rpc, code)) => {
                report.error(rpc, code).await;
                // A server being restarted: do not spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

type CallResult = Result<(), (&'static str, String)>;

fn code_of(status: &tonic::Status) -> String {
    format!("{:?}", status.code())
}

async fn tokenize(
    client: &mut Client,
    report: &Report,
    task: usize,
    n: usize,
    subject: &str,
) -> CallResult {
    let values: Vec<String> = (0..5)
        .map(|i| format!("t{task}-n{n}-i{i} Sokolova"))
        .collect();
    let request = pb::TokenizeRequest {
        subject_id: subject.into(),
        items: values.iter().map(|v| item(v, "text")).collect(),
    };
    match tokio::time::timeout(CALL_TIMEOUT, client.tokenize(request)).await {
        Ok(Ok(response)) => {
            report
                .acknowledged
                .lock()
                .await
                .extend(response.into_inner().tokens.into_iter().zip(values));
            Ok(())
        }
        Ok(Err(status)) => Err(("tokenize", code_of(&status))),
        Err(_) => Err(("tokenize", "client-timeout".into())),
    }
}

async fn detokenize(client: &mut Client, report: &Report, n: usize) -> CallResult {
    let sample: Vec<(String, String)> = {
        let acknowledged = report.acknowledged.lock().await;
        if acknowledged.is_empty() {
            return Ok(());
        }
        (0..10)
            .map(|i| acknowledged[(n * 7919 + i * 104_729) % acknowledged.len()].clone())
            .collect()
    };
    let request = pb::DetokenizeRequest {
        tokens: sample.iter().map(|(t, _)| t.clone()).collect(),
        purpose: "soak".into(),
    };
    match tokio::time::timeout(CALL_TIMEOUT, client.detokenize(request)).await {
        Ok(Ok(response)) => {
            for ((_, value), result) in sample.iter().zip(response.into_inner().results) {
                if result.status != pb::TokenStatus::Found as i32 || &result.value != value {
                    report.wrong.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(())
        }
        Ok(Err(status)) => Err(("detokenize", code_of(&status))),
        Err(_) => Err(("detokenize", "client-timeout".into())),
    }
}

async fn redact(client: &mut Client, n: usize, subject: &str) -> CallResult {
    let request = pb::RedactTextRequest {
        subject_id: subject.into(),
        text: format!(
            "Order {n}: write to anna.sokolova{n}@example.com or call +1 415 555 0{:03}",
            n % 1000
        ),
        kinds: Vec::new(),
    };
    match tokio::time::timeout(CALL_TIMEOUT, client.redact_text(request)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(status)) => Err(("redact_text", code_of(&status))),
        Err(_) => Err(("redact_text", "client-timeout".into())),
    }
}

/// Raw garbage, broken HTTP/2 and gRPC framing, and an oversized message.
async fn malformed(server: &Server, report: &Report) {
    let host = server.addr.trim_start_matches("http://").to_string();
    let mut garbage = vec![0u8; 64 << 10];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for byte in &mut garbage {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = state as u8;
    }
    exchange(&host, &garbage).await;

    // The HTTP/2 preface, then a frame of no known type and a PING of the
    // wrong length (a connection error).
    let mut bad_frames = h2_start();
    bad_frames.extend(frame(0xEE, 0, 0, &garbage[..512]));
    bad_frames.extend(frame(0x6, 0, 0, &[1, 2, 3]));
    exchange(&host, &bad_frames).await;

    // Well-formed HTTP/2, broken gRPC messages in the body.
    let bodies: [Vec<u8>; 4] = [
        [&[0u8, 0, 0, 0, 100][..], &[1, 2, 3]].concat(), // truncated message
        [&[0u8, 0, 0, 0, 5][..], &[0xFF; 5]].concat(),   // not protobuf
        [&[1u8, 0, 0, 0, 2][..], &[0xAB; 2]].concat(),   // compressed, no encoding
        vec![0u8, 0xFF, 0xFF, 0xFF, 0xFF],               // 4 GiB length prefix
    ];
    for body in bodies {
        let mut bytes = h2_start();
        bytes.extend(tokenize_headers_frame(TEST_API_KEY));
        bytes.extend(frame(0x0, 0x1, 1, &body));
        exchange(&host, &bytes).await;
    }

    // Over limits.max_message_bytes (4 MiB): INVALID_ARGUMENT.
    let mut client = server.client().await;
    let huge = "x".repeat(5 << 20);
    let outcome = tokio::time::timeout(
        CALL_TIMEOUT,
        client.tokenize(pb::TokenizeRequest {
            subject_id: "oversized".into(),
            items: vec![item(&huge, "text")],
        }),
    )
    .await;
    report.calls.fetch_add(1, Ordering::Relaxed);
    match outcome {
        Ok(Ok(_)) => panic!("a 5 MiB message was accepted"),
        Ok(Err(status)) => {
            assert_eq!(
                status.code(),
                tonic::Code::InvalidArgument,
                "oversized message: {status:?}"
            );
            report.error("oversized", code_of(&status)).await;
        }
        Err(_) => report.error("oversized", "client-timeout".into()).await,
    }
}

/// Writes `bytes` on a new connection and reads what comes back for a
/// moment; the server may answer or close, it must not fall over.
async fn exchange(host: &str, bytes: &[u8]) {
    let Ok(mut stream) = tokio::net::TcpStream::connect(host).await else {
        return;
    };
    let _ = stream.write_all(bytes).await;
    let mut sink = vec![0u8; 16 << 10];
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}
