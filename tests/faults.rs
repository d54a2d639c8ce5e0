//! Faults in production: SIGTERM in the middle of a load, and a full disk.
//!
//! - SIGTERM under load: the server stops accepting, lets calls in flight
//!   finish, exits 0, and every Tokenize that got a reply detokenizes after
//!   a restart on the same data directory.
//! - Disk full (a small tmpfs filled to ENOSPC; needs root and tmpfs):
//!   Tokenize answers UNAVAILABLE with a "disk full" log line, the server
//!   stays up and serves Detokenize (its audit records use the released
//!   reserve), and Tokenize works again once space returns; nothing
//!   acknowledged is lost.
//!
//! Run: `cargo test --release --test faults`

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::tmpfs::Tmpfs;
use common::{admin_principal_toml, detokenize, item, Server};
use tokenvault::cli::client::Client;
use tokenvault::pb;
use tokio::sync::Mutex;
use tonic::Code;

type Acknowledged = Arc<Mutex<Vec<(String, String)>>>;

/// Tokenizes batches from `writers` tasks until a call fails; every reply
/// is recorded as acknowledged (token, value).
fn start_writers(
    client: &Client,
    writers: usize,
    acknowledged: &Acknowledged,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..writers)
        .map(|w| {
            let mut client = client.clone();
            let acknowledged = Arc::clone(acknowledged);
            tokio::spawn(async move {
                for n in 0.. {
                    let values: Vec<String> =
                        (0..10).map(|i| format!("w{w}-n{n}-i{i} Petrova")).collect();
                    let request = pb::TokenizeRequest {
                        subject_id: format!("subject-{w}-{}", n % 5),
                        items: values.iter().map(|v| item(v, "text")).collect(),
                    };
                    match client.tokenize(request).await {
                        Ok(response) => acknowledged
                            .lock()
                            .await
                            .extend(response.into_inner().tokens.into_iter().zip(values)),
                        Err(_) => return, // the server is stopping
                    }
                }
            })
        })
        .collect()
}

/// Asserts every (token, value) detokenizes to its value.
async fn assert_all_found(client: &mut Client, acknowledged: &[(String, String)]) {
    for chunk in acknowledged.chunks(1000) {
        let tokens: Vec<String> = chunk.iter().map(|(t, _)| t.clone()).collect();
        let results = detokenize(client, &tokens).await;
        for ((token, value), result) in chunk.iter().zip(results) {
            assert_eq!(
                result.status,
                pb::TokenStatus::Found as i32,
                "acknowledged {token} lost"
            );
            assert_eq!(&result.value, value, "{token} detokenizes to another value");
        }
    }
}

/// The admin's new-value limits raised as a bulk importer's: these tests
/// write thousands of new values for a few subjects to fill a disk.
const BULK_WRITER: &str = "[new_value_limits.principals.admin]\nper_subject_per_principal = 100000000\nper_subject = 100000000\nper_principal = 100000000\nper_shape_per_principal_permille = 1000\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_0_and_loses_no_acknowledged_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(dir.path());
    let client = server.client().await;
    let acknowledged: Acknowledged = Arc::default();
    let writers = start_writers(&client, 8, &acknowledged);

    // Let the load run until a good number of calls were answered.
    while acknowledged.lock().await.len() < 2_000 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(client);
    // SIGTERM with calls in flight; asserts exit status 0 (and an exit
    // within 30 s; the grace period is 10 s).
    server.stop().await;
    for writer in writers {
        writer.await.expect("writer task");
    }
    let acknowledged = acknowledged.lock().await.clone();
    server
        .wait_for_log("stopped; cached keys zeroized", 1)
        .await;
    server.wait_for_log("store flushed at shutdown", 1).await;

    server.restart();
    let mut client = server.client().await;
    assert_all_found(&mut client, &acknowledged).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_tokenize_serves_detokenize_and_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    // The data directory is the tmpfs; the server's own log stays outside.
    let disk = Tmpfs::mount(&root.join("data"), 64);
    let kek = root.join("kek.key");
    std::fs::write(&kek, [7u8; 32]).expect("kek");
    let toml = format!(
        "[kek]\nprovider = \"local\"\npath = \"{}\"\n[storage]\ndisk_reserve_bytes = {}\n{}",
        kek.display(),
        8 << 20,
        admin_principal_toml()
    );
    let mut server = Server::start_with_config(root, &toml);
    let mut client = server.client().await;

    let mut acknowledged = Vec::new();
    for n in 0..20 {
        let values: Vec<String> = (0..10).map(|i| format!("before-{n}-{i}")).collect();
        let tokens = common::tokenize(
            &mut client,
            &format!("s{}", n % 3),
            values.iter().map(|v| item(v, "text")).collect(),
        )
        .await;
        acknowledged.extend(tokens.into_iter().zip(values));
    }

    assert!(disk.fill() > 0, "the filler wrote nothing");
    server.wait_for_log("disk full: free space", 1).await;
    if !disk.has_room() {
        // The guard released the reserve while the filler was still
        // writing, and the filler took it too (the soak shows that case:
        // reveals are then refused, fail-closed). Here the filler stops
        // short of the reserve, as a disk filled by our own writes does.
        disk.shrink_filler(8 << 20);
    }

    let refused = client
        .tokenize(pb::TokenizeRequest {
            subject_id: "s0".into(),
            items: vec![item("while-full", "text")],
        })
        .await
        .expect_err("Tokenize on a full disk");
    assert!(
        matches!(refused.code(), Code::Unavailable | Code::ResourceExhausted),
        "Tokenize on a full disk: {refused:?}"
    );
    assert!(
        refused.message().contains("disk full"),
        "the status names the cause: {refused:?}"
    );
    // A new subject (a key write) is refused the same way.
    let refused = client
        .tokenize(pb::TokenizeRequest {
            subject_id: "a-new-subject".into(),
            items: vec![item("while-full", "text")],
        })
        .await
        .expect_err("Tokenize for a new subject on a full disk");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");

    // Reveals go on: their audit records use the released reserve.
    assert_all_found(&mut client, &acknowledged).await;

    disk.drain();
    assert!(disk.has_room());
    let values: Vec<String> = (0..10).map(|i| format!("after-{i}")).collect();
    let tokens = common::tokenize(
        &mut client,
        "s0",
        values.iter().map(|v| item(v, "text")).collect(),
    )
    .await;
    acknowledged.extend(tokens.into_iter().zip(values));
    server.wait_for_log("disk space back", 1).await;

    drop(client);
    server.stop().await;
    server.restart();
    let mut client = server.client().await;
    assert_all_found(&mut client, &acknowledged).await;
    drop(client);
    server.stop().await;
    drop(disk);
}

/// Without the guard (`disk_reserve_bytes = 0`) RocksDB itself meets
/// ENOSPC and stops taking writes (its background-error state); it
/// recovers on its own once space returns (its SstFileManager polls for
/// free space every 5 s and resumes once 64 MiB are free), without a
/// restart, and loses nothing acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rocksdb_recovers_from_enospc_once_space_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    // RocksDB resumes only with free space above its reserved buffer (the
    // memtables it may have to flush: 4 x 16 MiB), so the disk is larger.
    let disk = Tmpfs::mount(&root.join("data"), 160);
    let kek = root.join("kek.key");
    std::fs::write(&kek, [7u8; 32]).expect("kek");
    let toml = format!(
        "[kek]\nprovider = \"local\"\npath = \"{}\"\n[storage]\ndisk_reserve_bytes = 0\n{}{BULK_WRITER}",
        kek.display(),
        admin_principal_toml()
    );
    let mut server = Server::start_with_config(root, &toml);
    let mut client = server.client().await;
    disk.fill();

    // Write until the engine refuses (its preallocated WAL takes a while).
    let mut acknowledged = Vec::new();
    let mut refused = None;
    for n in 0..5_000 {
        let values: Vec<String> = (0..50)
            .map(|i| format!("{n}-{i}-{}", "x".repeat(900)))
            .collect();
        let request = pb::TokenizeRequest {
            subject_id: format!("s{}", n % 4),
            items: values.iter().map(|v| item(v, "text")).collect(),
        };
        match client.tokenize(request).await {
            Ok(response) => {
                acknowledged.extend(response.into_inner().tokens.into_iter().zip(values))
            }
            Err(status) => {
                refused = Some(status);
                break;
            }
        }
    }
    let refused = refused.expect("a full disk never refused a write");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");

    disk.drain();
    // Recovery is RocksDB's own, polled: wait for it (bounded).
    let mut recovered = false;
    for _ in 0..300 {
        let attempt = client
            .tokenize(pb::TokenizeRequest {
                subject_id: "s0".into(),
                items: vec![item("after-recovery", "text")],
            })
            .await;
        if let Ok(response) = attempt {
            let token = response.into_inner().tokens.remove(0);
            acknowledged.push((token, "after-recovery".into()));
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !recovered {
        let engine_log = std::fs::read_to_string(root.join("data/rocksdb/LOG")).unwrap_or_default();
        let errors: Vec<&str> = engine_log
            .lines()
            .filter(|l| l.contains("rror") || l.contains("ecover") || l.contains("space"))
            .collect();
        let df = std::process::Command::new("df")
            .arg(root.join("data"))
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        panic!(
            "writes did not come back within 30 s of space returning\n{df}\nRocksDB LOG:\n{}",
            errors.join("\n")
        );
    }
    assert_all_found(&mut client, &acknowledged).await;

    drop(client);
    server.stop().await;
    server.restart();
    let mut client = server.client().await;
    assert_all_found(&mut client, &acknowledged).await;
    drop(client);
    server.stop().await;
    drop(disk);
}

/// A call that never finishes (its body never comes) holds shutdown only
/// for `shutdown_grace_seconds`: then the server stops anyway, says so,
/// and still exits 0 with the store closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_stuck_in_flight_holds_shutdown_only_for_the_grace_period() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let kek = root.join("kek.key");
    std::fs::create_dir_all(root).expect("root");
    std::fs::write(&kek, [7u8; 32]).expect("kek");
    let toml = format!(
        "shutdown_grace_seconds = 1\n[kek]\nprovider = \"local\"\npath = \"{}\"\n{}",
        kek.display(),
        admin_principal_toml()
    );
    let mut server = Server::start_with_config(root, &toml);
    let host = server.addr.trim_start_matches("http://").to_string();
    let mut stuck = tokio::net::TcpStream::connect(&host)
        .await
        .expect("connect");
    let mut opening = common::rawh2::h2_start();
    opening.extend(common::rawh2::tokenize_headers_frame(common::TEST_API_KEY));
    stuck.write_all(&opening).await.expect("send headers");
    // The server's SETTINGS: the connection is up and the call open.
    let mut buf = [0u8; 64];
    assert!(stuck.read(&mut buf).await.expect("read settings") > 0);
    tokio::time::sleep(Duration::from_millis(200)).await;

    server.stop().await; // asserts exit 0
    server
        .wait_for_log("still open after the shutdown grace period", 1)
        .await;
    server
        .wait_for_log("stopped; cached keys zeroized", 1)
        .await;
    drop(stuck);
}
