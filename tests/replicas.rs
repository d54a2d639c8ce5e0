//! Several tokenvault processes on one PostgreSQL (storage.backend =
//! "postgres"), end to end on the real binary: concurrent deterministic
//! tokenizations of one value spread over three replicas give one token;
//! a token made on one replica detokenizes on the others; forgetting a
//! subject on one replica makes its tokens ERASED on the others as soon as
//! the call returns, although they had its key cached; killing a replica
//! under load loses no acknowledged token and the others keep serving; a
//! second server with a replica name in use refuses to start.
//! Needs the PostgreSQL that tests/setup-machine.sh starts.

mod common;

use common::postgres::{fresh_database, replica_config};
use common::{card, detokenize, item, random_item, tokenize, Server};
use tokenvault::cli::client::Client;
use tokenvault::pb;

struct Cluster {
    _dir: tempfile::TempDir,
    servers: Vec<Server>,
}

async fn cluster(n: usize) -> Cluster {
    let dir = tempfile::tempdir().expect("tempdir");
    let kek = dir.path().join("kek.key");
    std::fs::write(&kek, [9u8; 32]).expect("kek file");
    let url = fresh_database().await;
    let servers = (0..n)
        .map(|i| {
            Server::start_with_config(
                &dir.path().join(format!("r{i}")),
                &replica_config(&url, &kek, &format!("r{i}")),
            )
        })
        .collect();
    Cluster { _dir: dir, servers }
}

fn status(result: &pb::DetokenizeResult) -> pb::TokenStatus {
    pb::TokenStatus::try_from(result.status).expect("status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_serve_one_vault() {
    let cluster = cluster(3).await;
    let mut clients: Vec<Client> = Vec::new();
    for server in &cluster.servers {
        clients.push(server.client().await);
    }

    // 64 concurrent deterministic tokenizations of one new value, spread
    // over the three replicas: one token.
    let value = card(777);
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let mut client = clients[i % 3].clone();
            let value = value.clone();
            tokio::spawn(async move {
                tokenize(&mut client, "race-subject", vec![item(&value, "card")]).await
            })
        })
        .collect();
    let mut tokens = std::collections::HashSet::new();
    for task in tasks {
        tokens.extend(task.await.expect("task"));
    }
    assert_eq!(tokens.len(), 1, "one value, one token: got {tokens:?}");

    // Made on one replica, revealed on every other.
    let made_on_a = tokenize(
        &mut clients[0],
        "shared-subject",
        vec![random_item("shared.person@mail.example", "email")],
    )
    .await;
    for client in &mut clients[1..] {
        let results = detokenize(client, &made_on_a).await;
        assert_eq!(status(&results[0]), pb::TokenStatus::Found);
        assert_eq!(results[0].value, "shared.person@mail.example");
    }

    // B and C cache the subject's key by revealing its tokens; A forgets
    // it; right after the call returns B and C answer ERASED.
    let doomed = tokenize(
        &mut clients[0],
        "doomed-subject",
        vec![
            item(&card(4242), "card"),
            random_item("doomed@mail.example", "email"),
        ],
    )
    .await;
    for client in &mut clients[1..] {
        let results = detokenize(client, &doomed).await;
        assert!(results.iter().all(|r| status(r) == pb::TokenStatus::Found));
    }
    let forgotten = clients[0]
        .forget_subject(pb::ForgetSubjectRequest {
            subject_id: "doomed-subject".into(),
            reason: "replica test".into(),
        })
        .await
        .expect("forget")
        .into_inner();
    assert!(forgotten.receipt.is_some());
    for client in &mut clients[1..] {
        let results = detokenize(client, &doomed).await;
        assert!(
            results
                .iter()
                .all(|r| status(r) == pb::TokenStatus::Erased && r.value.is_empty()),
            "a forgotten subject's tokens must answer ERASED on every replica"
        );
    }
    // The subject can start over; its new tokens work everywhere.
    let reborn = tokenize(
        &mut clients[1],
        "doomed-subject",
        vec![item(&card(4242), "card")],
    )
    .await;
    assert!(!doomed.contains(&reborn[0]));
    let results = detokenize(&mut clients[2], &reborn).await;
    assert_eq!(status(&results[0]), pb::TokenStatus::Found);
    assert_eq!(results[0].value, card(4242));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_replica_under_load_loses_no_acknowledged_token() {
    let mut cluster = cluster(3).await;
    let mut clients: Vec<Client> = Vec::new();
    for server in &cluster.servers {
        clients.push(server.client().await);
    }
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..6)
        .map(|w| {
            let mut client = clients[w % 3].clone();
            let acked = acked_tx.clone();
            let stop = std::sync::Arc::clone(&stop);
            tokio::spawn(async move {
                let mut n = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let value = format!("load.{w}.{n}@mail.example");
                    let request = pb::TokenizeRequest {
                        subject_id: format!("load-subject-{w}-{}", n % 50),
                        items: vec![random_item(&value, "email")],
                    };
                    // Calls to the killed replica fail: not acknowledged.
                    if let Ok(response) = client.tokenize(request).await {
                        let token = response.into_inner().tokens.remove(0);
                        let _ = acked.send((w % 3, value, token));
                    }
                    n += 1;
                }
            })
        })
        .collect();
    drop(acked_tx);

    // Let every replica acknowledge some work, then kill B mid-load.
    let mut acked = Vec::new();
    while acked.iter().filter(|(r, _, _)| *r == 1).count() < 20 {
        acked.push(acked_rx.recv().await.expect("load running"));
    }
    cluster.servers[1].kill9();
    // A and C keep serving (B's calls now fail, and are not counted).
    let after_kill = acked.len();
    while acked.len() < after_kill + 200 {
        acked.push(acked_rx.recv().await.expect("load running"));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for worker in workers {
        worker.await.expect("worker");
    }
    while let Some(more) = acked_rx.recv().await {
        acked.push(more);
    }

    // Every acknowledged token, from any replica, detokenizes on A and C.
    for client in [&mut clients[0].clone(), &mut clients[2].clone()] {
        for chunk in acked.chunks(100) {
            let tokens: Vec<String> = chunk.iter().map(|(_, _, t)| t.clone()).collect();
            let results = detokenize(client, &tokens).await;
            for ((_, value, _), result) in chunk.iter().zip(&results) {
                assert_eq!(status(result), pb::TokenStatus::Found);
                assert_eq!(&result.value, value);
            }
        }
    }
}

/// Waits until at least `needed` seconds are left in the current clock
/// minute, so a test's calls fall in one window of the shared counters.
async fn start_of_a_minute(needed: u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let left = 60 - now % 60;
    if left < needed {
        tokio::time::sleep(std::time::Duration::from_secs(left + 1)).await;
    }
}

/// A detokenize limit of 100 values a minute holds for three replicas
/// together (one shared window counter in PostgreSQL), and a replica
/// restarted within the minute does not get its allowance back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_one_detokenize_limit_and_a_restart_does_not_refill_it() {
    use sha2::Digest;
    const KEY: &str = "tvk_limited_replica_key_0005";
    let dir = tempfile::tempdir().expect("tempdir");
    let kek = dir.path().join("kek.key");
    std::fs::write(&kek, [9u8; 32]).expect("kek file");
    let url = fresh_database().await;
    let extra = format!(
        "[[principals]]\nname = \"limited\"\napi_key_sha256 = \"{}\"\nallow = [\"detokenize\"]\nreveal = {{ default = \"full\" }}\nmax_detokenize_per_minute = 100\n[new_value_limits.principals.admin]\nper_subject_per_principal = 1000000\n",
        hex::encode(sha2::Sha256::digest(KEY.as_bytes()))
    );
    let mut servers: Vec<Server> = (0..3)
        .map(|i| {
            Server::start_with_config(
                &dir.path().join(format!("r{i}")),
                &format!("{}{extra}", replica_config(&url, &kek, &format!("r{i}"))),
            )
        })
        .collect();
    let mut admin = servers[0].client().await;
    let tokens = tokenize(
        &mut admin,
        "limited-subject",
        (0..10).map(|n| item(&card(n), "card")).collect(),
    )
    .await;

    start_of_a_minute(40).await;
    let mut served = 0usize;
    for round in 0..10 {
        for server in &servers {
            let mut client = server.client_with_key(KEY).await;
            match client
                .detokenize(pb::DetokenizeRequest {
                    tokens: tokens.clone(),
                    purpose: String::new(),
                })
                .await
            {
                Ok(response) => served += response.into_inner().results.len(),
                Err(status) => assert_eq!(
                    status.code(),
                    tonic::Code::ResourceExhausted,
                    "round {round}: {status:?}"
                ),
            }
        }
    }
    assert_eq!(served, 100, "300 values asked of three replicas");

    servers[1].kill9();
    servers[1].restart();
    let mut client = servers[1].client_with_key(KEY).await;
    let status = client
        .detokenize(pb::DetokenizeRequest {
            tokens: tokens[..1].to_vec(),
            purpose: String::new(),
        })
        .await
        .expect_err("a restart within the minute does not refill the limit");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_with_a_replica_name_in_use_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kek = dir.path().join("kek.key");
    std::fs::write(&kek, [9u8; 32]).expect("kek file");
    let url = fresh_database().await;
    let mut first =
        Server::start_with_config(&dir.path().join("a"), &replica_config(&url, &kek, "twin"));
    let mut client = first.client().await;
    let tokens = tokenize(&mut client, "twin-subject", vec![item(&card(5), "card")]).await;
    detokenize(&mut client, &tokens).await;

    let mut second = Server::prepared_with_config(
        &dir.path().join("b"),
        &replica_config(&url, &kek, "twin"),
        &[],
    );
    let (status, log) = second.run_to_exit();
    assert!(!status.success(), "a second \"twin\" started: {log}");
    assert!(
        log.contains("replica name \"twin\"") && log.contains("in use"),
        "the refusal names the clash: {log}"
    );
    // The first keeps serving and auditing.
    let results = detokenize(&mut client, &tokens).await;
    assert_eq!(results[0].value, card(5));

    // Once the first stops, the name is free again.
    first.stop().await;
    let mut again =
        Server::start_with_config(&dir.path().join("b"), &replica_config(&url, &kek, "twin"));
    let mut client = again.client().await;
    let results = detokenize(&mut client, &tokens).await;
    assert_eq!(results[0].value, card(5));
    again.stop().await;
}
