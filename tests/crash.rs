//! Durability: every acknowledged Tokenize, and the audit record of every
//! answered reveal, survives kill -9.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{detokenize, item, Server};
use tokenvault::pb;
use tokio::sync::Mutex;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_tokens_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(dir.path());
    let client = server.client().await;
    let acknowledged: Arc<Mutex<Vec<(String, String)>>> = Arc::default();

    let writers: Vec<_> = (0..8)
        .map(|w| {
            let mut client = client.clone();
            let acknowledged = Arc::clone(&acknowledged);
            tokio::spawn(async move {
                for n in 0.. {
                    let values: Vec<String> =
                        (0..10).map(|i| format!("w{w}-n{n}-i{i} Ivanov")).collect();
                    let request = pb::TokenizeRequest {
                        subject_id: format!("subject-{w}-{}", n % 7),
                        items: values.iter().map(|v| item(v, "text")).collect(),
                    };
                    match client.tokenize(request).await {
                        Ok(response) => {
                            let tokens = response.into_inner().tokens;
                            acknowledged
                                .lock()
                                .await
                                .extend(tokens.into_iter().zip(values));
                        }
                        Err(_) => return, // the server died under us
                    }
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill9();
    for writer in writers {
        writer.await.expect("writer task");
    }
    let acknowledged = acknowledged.lock().await.clone();
    assert!(
        acknowledged.len() > 100,
        "only {} acknowledged before the crash",
        acknowledged.len()
    );

    server.restart();
    let mut client = server.client().await;
    for chunk in acknowledged.chunks(1000) {
        let tokens: Vec<String> = chunk.iter().map(|(t, _)| t.clone()).collect();
        let results = detokenize(&mut client, &tokens).await;
        for ((token, value), result) in chunk.iter().zip(results) {
            assert_eq!(
                result.status,
                pb::TokenStatus::Found as i32,
                "acknowledged {token} lost"
            );
            assert_eq!(&result.value, value);
        }
    }
}

/// The default audit durability ("write") reveals once the record is in
/// the file in the kernel's hands, before any sync, and stores the
/// database's copy after: a killed process must not lose the record of any
/// reveal it answered, and the next start completes the database's copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answered_reveal_keeps_its_audit_record_through_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(dir.path());
    let mut client = server.client().await;
    let values: Vec<String> = (0..20).map(|i| format!("reveal-{i} Petrova")).collect();
    let request = pb::TokenizeRequest {
        subject_id: "subject-audit-crash".into(),
        items: values.iter().map(|v| item(v, "text")).collect(),
    };
    let tokens = client
        .tokenize(request)
        .await
        .expect("tokenize")
        .into_inner()
        .tokens;

    let answered = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let readers: Vec<_> = (0..8)
        .map(|r| {
            let mut client = client.clone();
            let answered = Arc::clone(&answered);
            let tokens = tokens.clone();
            tokio::spawn(async move {
                for n in 0usize.. {
                    let request = pb::DetokenizeRequest {
                        tokens: vec![tokens[(r + n) % tokens.len()].clone()],
                        purpose: "crash test".into(),
                    };
                    match client.detokenize(request).await {
                        Ok(_) => answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst),
                        Err(_) => return,
                    };
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill9();
    for reader in readers {
        reader.await.expect("reader task");
    }
    let answered = answered.load(std::sync::atomic::Ordering::SeqCst);
    assert!(answered > 100, "only {answered} reveals before the crash");

    // The file, as found after the crash (before a restart could repair
    // anything), holds a record for every answered reveal.
    let file = std::fs::read_to_string(server.data_dir().join("audit.jsonl")).expect("audit file");
    let in_file = file
        .lines()
        .filter(|line| line.contains("\"rpc\":\"detokenize\""))
        .count() as u64;
    assert!(
        in_file >= answered,
        "{answered} reveals answered, {in_file} audit records in the file"
    );
    let in_db_at_crash = detokenize_records_in_database(&server.data_dir());

    // The database's copy follows the file's; the restart stores the rest.
    server.restart();
    server.stop().await;
    let in_db = detokenize_records_in_database(&server.data_dir());
    assert!(
        in_db >= answered,
        "{answered} reveals answered, {in_db} audit records in the database after the restart ({in_db_at_crash} at the crash)"
    );

    let output = server.run_cli(&[
        "audit",
        "verify",
        "--data-dir",
        &server.data_dir().display().to_string(),
    ]);
    assert!(
        output.status.success(),
        "audit verify after the crash: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Audit records of Detokenize calls in a stopped server's database.
fn detokenize_records_in_database(data_dir: &std::path::Path) -> u64 {
    let path = data_dir.join("rocksdb");
    let db = tokenvault::store::rocks::open_for_inspection(&path, true)
        .expect("open the store read-only");
    let audit = db.cf_handle("audit").expect("audit family");
    const NEEDLE: &[u8] = b"\"rpc\":\"detokenize\"";
    db.iterator_cf(audit, rocksdb::IteratorMode::Start)
        .filter(|entry| {
            entry
                .as_ref()
                .is_ok_and(|(_, line)| line.windows(NEEDLE.len()).any(|w| w == NEEDLE))
        })
        .count() as u64
}
