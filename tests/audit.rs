//! The audit log through the real binary: a long chain verifies, tampering
//! with either copy is named by `tokenvault audit verify`, an unwritable
//! audit file stops every reveal, and neither the audit log nor the server
//! log holds a value or a subject id.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{admin_principal_toml, card, item, tokenize, Server, TEST_API_KEY};
use tokenvault::pb;
use tonic::Code;

const RECORDS: usize = 10_000;
const CALLERS: usize = 32;

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn audit_file(server: &Server) -> PathBuf {
    server.data_dir().join("audit.jsonl")
}

/// Runs `audit verify` on the server's data directory (and its config
/// file, if it has one: verify opens its key provider); (success, output).
fn verify(server: &Server) -> (bool, String) {
    let data_dir = server.data_dir().display().to_string();
    let config = server.config_path();
    let config = config.display().to_string();
    let mut args = vec!["audit", "verify", "--data-dir", &data_dir];
    if server.config_path().exists() {
        args.extend(["--config", &config]);
    }
    let output = server.run_cli(&args);
    (output.status.success(), text(&output))
}

fn assert_verify_fails_naming(server: &Server, named: &str) {
    let (ok, output) = verify(server);
    assert!(!ok, "verify passed a tampered log: {output}");
    let last = output.lines().last().unwrap_or_default();
    assert!(last.contains(named), "expected {named:?} in: {output}");
}

/// Detokenizes `token` `n` times from `CALLERS` concurrent callers.
async fn detokenize_many(server: &Server, token: &str, n: usize) {
    let client = server.client().await;
    let tasks: Vec<_> = (0..CALLERS)
        .map(|caller| {
            let mut client = client.clone();
            let token = token.to_string();
            let calls = n / CALLERS + usize::from(caller < n % CALLERS);
            tokio::spawn(async move {
                for _ in 0..calls {
                    client
                        .detokenize(pb::DetokenizeRequest {
                            tokens: vec![token.clone()],
                            purpose: "audit-test".into(),
                        })
                        .await
                        .expect("detokenize");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("caller");
    }
}

/// Rewrites the file's lines with `edit`, returns the original to restore.
fn edit_lines(path: &Path, edit: impl FnOnce(&mut Vec<String>)) -> String {
    let original = std::fs::read_to_string(path).expect("read audit file");
    let mut lines: Vec<String> = original.lines().map(String::from).collect();
    edit(&mut lines);
    std::fs::write(path, format!("{}\n", lines.join("\n"))).expect("write audit file");
    original
}

/// Opens the stopped server's RocksDB with every column family.
fn open_db(server: &Server) -> rocksdb::DB {
    let path = server.data_dir().join("rocksdb");
    tokenvault::store::rocks::open_for_inspection(&path, false).expect("open rocksdb")
}

/// Edits the database's audit family while the server is stopped; returns
/// a closure's result. Records are keyed by big-endian sequence number.
fn with_audit_family<T>(server: &Server, edit: impl FnOnce(&rocksdb::DB) -> T) -> T {
    let db = open_db(server);
    edit(&db)
}

fn get_record(db: &rocksdb::DB, seq: u64) -> Vec<u8> {
    let cf = db.cf_handle("audit").expect("audit family");
    db.get_cf(cf, seq.to_be_bytes())
        .expect("read")
        .expect("record present")
}

fn put_record(db: &rocksdb::DB, seq: u64, value: &[u8]) {
    let cf = db.cf_handle("audit").expect("audit family");
    db.put_cf(cf, seq.to_be_bytes(), value).expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_records_verify_and_every_tampering_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(dir.path());
    let mut client = server.client().await;
    let tokens = tokenize(&mut client, "cust-chain", vec![item(&card(1), "card")]).await;
    detokenize_many(&server, &tokens[0], RECORDS).await;
    server.stop().await;

    let (ok, output) = verify(&server);
    assert!(ok, "{output}");
    assert!(
        output.contains(&format!(
            "audit chain ok: {RECORDS} records; database and file agree"
        )),
        "{output}"
    );

    // The JSON-lines file.
    let file = audit_file(&server);
    let original = edit_lines(&file, |lines| {
        lines[4710] = lines[4710].replace("audit-test", "audit-tesT");
    });
    assert_verify_fails_naming(&server, "file: record 4711: hash mismatch");
    std::fs::write(&file, &original).expect("restore");

    edit_lines(&file, |lines| {
        lines.remove(4710);
    });
    assert_verify_fails_naming(&server, "file: missing record 4711");
    std::fs::write(&file, &original).expect("restore");

    edit_lines(&file, |lines| lines.swap(4710, 4711));
    assert_verify_fails_naming(&server, "file: records 4711 and 4712: out of order");
    std::fs::write(&file, &original).expect("restore");

    edit_lines(&file, |lines| {
        lines.pop();
    });
    assert_verify_fails_naming(&server, "missing record 10000 in the file");
    std::fs::write(&file, &original).expect("restore");
    assert!(verify(&server).0, "restored file verifies again");

    // The database copy.
    let record = with_audit_family(&server, |db| get_record(db, 4711));
    let mut changed = record.clone();
    let at = changed.len() / 2;
    changed[at] ^= 0x01;
    with_audit_family(&server, |db| put_record(db, 4711, &changed));
    assert_verify_fails_naming(&server, "database: record 4711: ");
    with_audit_family(&server, |db| put_record(db, 4711, &record));

    with_audit_family(&server, |db| {
        let cf = db.cf_handle("audit").expect("audit family");
        db.delete_cf(cf, 4711u64.to_be_bytes()).expect("delete");
    });
    assert_verify_fails_naming(&server, "database: missing record 4711");
    with_audit_family(&server, |db| put_record(db, 4711, &record));

    let next = with_audit_family(&server, |db| get_record(db, 4712));
    with_audit_family(&server, |db| {
        put_record(db, 4711, &next);
        put_record(db, 4712, &record);
    });
    assert_verify_fails_naming(&server, "database: record 4711: out of order");
    with_audit_family(&server, |db| {
        put_record(db, 4711, &record);
        put_record(db, 4712, &next);
    });
    let (ok, output) = verify(&server);
    assert!(ok, "restored database verifies again: {output}");

    // The chain goes on from where it stopped.
    server.restart();
    detokenize_many(&server, &tokens[0], 5).await;
    server.stop().await;
    let (ok, output) = verify(&server);
    assert!(ok && output.contains("10005 records"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_audit_file_stops_every_reveal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(dir.path());
    let mut client = server.client().await;
    let value = card(7);
    let tokens = tokenize(&mut client, "cust-closed", vec![item(&value, "card")]).await;
    let reveal = pb::DetokenizeRequest {
        tokens: tokens.clone(),
        purpose: "fail-closed".into(),
    };
    client.detokenize(reveal.clone()).await.expect("audited");

    // A directory in the file's place: no write succeeds, even as root
    // (chmod would not stop root).
    let file = audit_file(&server);
    let moved = file.with_extension("moved");
    std::fs::rename(&file, &moved).expect("move the file away");
    std::fs::create_dir(&file).expect("a directory in its place");
    // The path is looked up at most every millisecond of writing.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;

    let status = client
        .detokenize(reveal.clone())
        .await
        .expect_err("no reveal without an audit record");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(!status.message().contains(&value), "{status:?}");
    let restore = client
        .restore_text(pb::RestoreTextRequest {
            text: format!("card {} please", tokens[0]),
            purpose: "fail-closed".into(),
            ..Default::default()
        })
        .await
        .expect_err("no restore without an audit record");
    assert_eq!(restore.code(), Code::Unavailable, "{restore:?}");
    // Tokenize reveals nothing and needs no record.
    tokenize(&mut client, "cust-closed", vec![item(&card(8), "card")]).await;

    // Back in place, reveals resume and the chain has no hole. When the
    // sync thread ran during the outage, they resume at its next sync
    // (every `sync_interval_ms`), not at once.
    std::fs::remove_dir(&file).expect("remove the directory");
    std::fs::rename(&moved, &file).expect("move the file back");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let results = loop {
        match client.detokenize(reveal.clone()).await {
            Ok(answer) => break answer.into_inner().results,
            Err(status)
                if status.code() == Code::Unavailable && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(status) => panic!("reveals did not resume: {status:?}"),
        }
    };
    assert_eq!(results[0].value, value);
    server.stop().await;
    let (ok, output) = verify(&server);
    assert!(ok, "{output}");

    // A server does not start without a writable audit file.
    std::fs::rename(&file, &moved).expect("move the file away");
    std::fs::create_dir(&file).expect("a directory in its place");
    let config = format!(
        "[kek]\nprovider = \"local\"\npath = \"{}\"\n{}",
        server.data_dir().join("kek.key").display(),
        admin_principal_toml()
    );
    drop(server);
    let mut refused = Server::prepared_with_config(dir.path(), &config, &[]);
    let (status, log) = refused.run_to_exit();
    assert!(!status.success(), "started without an audit file: {log}");
    assert!(
        log.contains("audit log unavailable") && log.contains("audit.jsonl"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_calls_are_audited_and_no_value_or_subject_id_is_in_any_log() {
    use sha2::Digest;
    const CHAT_KEY: &str = "tvk_test_chat_0123456789";
    let dir = tempfile::tempdir().expect("tempdir");
    let kek = dir.path().join("kek.key");
    std::fs::write(&kek, [7u8; 32]).expect("kek file");
    let toml = format!(
        "[kek]\nprovider = \"local\"\npath = \"{}\"\n{}[[principals]]\nname = \"chat\"\napi_key_sha256 = \"{}\"\nallow = [\"tokenize\", \"redact_text\"]\n",
        kek.display(),
        admin_principal_toml(),
        hex::encode(sha2::Sha256::digest(CHAT_KEY.as_bytes()))
    );
    let mut server = Server::start_with_config(dir.path(), &toml);
    let mut admin = server.client_with_key(TEST_API_KEY).await;
    let mut chat = server.client_with_key(CHAT_KEY).await;

    let subjects = ["subj-audit-alice-93817", "subj-audit-bob-27364"];
    let values = [
        (card(4242), "card"),
        ("alice.audit.93817@mail-example.ru".to_string(), "email"),
        ("+7 912 345-67-89".to_string(), "phone"),
        ("Zqxaudit Secretname 55120".to_string(), "text"),
    ];
    let mut tokens = Vec::new();
    for subject in subjects {
        let items = values.iter().map(|(v, f)| item(v, f)).collect();
        tokens.extend(tokenize(&mut admin, subject, items).await);
    }
    let revealed = admin
        .detokenize(pb::DetokenizeRequest {
            tokens: tokens.clone(),
            purpose: "support-case-1".into(),
        })
        .await
        .expect("detokenize")
        .into_inner()
        .results;
    assert!(revealed.iter().all(|r| !r.value.is_empty()));
    let restored = admin
        .restore_text(pb::RestoreTextRequest {
            text: format!("call {} about {}", tokens[2], tokens[1]),
            purpose: "support-case-2".into(),
            ..Default::default()
        })
        .await
        .expect("restore")
        .into_inner();
    assert_eq!(restored.restored, 2);
    let denied = chat
        .detokenize(pb::DetokenizeRequest {
            tokens: tokens.clone(),
            purpose: "curious".into(),
        })
        .await
        .expect_err("chat may not detokenize");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let mut stranger = server.client_with_key("tvk_unknown_key_000").await;
    let unknown = stranger
        .detokenize(pb::DetokenizeRequest {
            tokens: tokens.clone(),
            purpose: String::new(),
        })
        .await
        .expect_err("unknown key");
    assert_eq!(unknown.code(), Code::Unauthenticated);
    // The interceptor audits in the background; give it a moment.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    server.stop().await;

    let audit = std::fs::read_to_string(audit_file(&server)).expect("audit file");
    let records: Vec<serde_json::Value> = audit
        .lines()
        .map(|line| serde_json::from_str(line).expect("json line"))
        .collect();
    let rpcs: Vec<(&str, &str)> = records
        .iter()
        .map(|r| {
            (
                r["rpc"].as_str().unwrap_or_default(),
                r["outcome"]["result"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        rpcs,
        [
            ("detokenize", "ok"),
            ("restore_text", "ok"),
            ("detokenize", "denied"),
            ("detokenize", "denied")
        ]
    );
    assert_eq!(records[0]["count"], 8);
    assert_eq!(
        records[0]["subject_hashes"].as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(records[0]["token_hashes"].as_array().map(Vec::len), Some(8));
    assert_eq!(records[0]["purpose"], "support-case-1");
    // RestoreText names what it revealed: the two tokens (keyed hashes,
    // the same as Detokenize's for the same tokens) of one subject.
    assert_eq!(records[1]["count"], 2);
    assert_eq!(
        records[1]["token_hashes"],
        serde_json::json!([records[0]["token_hashes"][2], records[0]["token_hashes"][1]])
    );
    assert_eq!(
        records[1]["subject_hashes"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(records[2]["principal"], "chat");
    assert_eq!(records[2]["outcome"]["code"], "permission_denied");
    assert_eq!(records[3]["principal"], "");
    assert_eq!(records[3]["outcome"]["code"], "unauthenticated");
    let (ok, output) = verify(&server);
    assert!(ok, "{output}");

    // Every value, in the forms a leak would take, every subject id, and
    // the raw tokens (the log keeps keyed hashes of those too).
    let mut needles: Vec<String> = subjects.iter().map(|s| s.to_string()).collect();
    for (value, _) in &values {
        needles.push(value.clone());
        let digits: String = value.chars().filter(char::is_ascii_digit).collect();
        if digits.len() >= 10 {
            needles.push(digits);
        }
    }
    let mut haystacks: Vec<(String, Vec<u8>)> = vec![
        ("audit file".into(), audit.clone().into_bytes()),
        (
            "server log".into(),
            std::fs::read(server.log_path()).expect("server log"),
        ),
    ];
    for path in common::files_under(&server.data_dir()) {
        let bytes = std::fs::read(&path).unwrap_or_default();
        haystacks.push((path.display().to_string(), bytes));
    }
    let finder = aho_corasick::AhoCorasick::new(&needles).expect("needles");
    for (name, bytes) in &haystacks {
        if let Some(found) = finder.find(bytes) {
            panic!(
                "{name} holds {:?} in the clear",
                needles[found.pattern().as_usize()]
            );
        }
    }
    for token in &tokens {
        assert!(
            !audit.contains(token.as_str()),
            "raw token in the audit log"
        );
    }
    assert!(haystacks.len() > 3, "the data directory was searched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_runs_beside_a_live_server_and_tail_follows_new_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(dir.path());
    let mut client = server.client().await;
    let tokens = tokenize(&mut client, "cust-tail", vec![item(&card(3), "card")]).await;
    detokenize_many(&server, &tokens[0], 2).await;

    // verify runs beside the live server (RocksDB read-only takes no lock).
    let (ok, output) = verify(&server);
    assert!(
        ok && output.contains("2 records") && output.contains("server running"),
        "{output}"
    );

    let data_dir = server.data_dir().display().to_string();
    let output = server.run_cli(&["audit", "tail", "--data-dir", &data_dir]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(String::from_utf8_lossy(&output.stdout).lines().count(), 2);

    let mut follower = std::process::Command::new(env!("CARGO_BIN_EXE_tokenvault"))
        .args([
            "audit",
            "tail",
            "--follow",
            "-n",
            "0",
            "--data-dir",
            &data_dir,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn tail --follow");
    let stdout = follower.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|line| line.contains("\"seq\":3,"))
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    detokenize_many(&server, &tokens[0], 1).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !reader.is_finished() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let _ = follower.kill();
    let _ = follower.wait();
    let line = reader.join().expect("reader");
    assert!(line.is_some(), "tail --follow did not print the new record");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bad_credentials_is_counted_in_a_few_records_and_raises_an_alert() {
    const BAD_CALLS: usize = 10_000;
    const CONNECTIONS: usize = 4;
    const TASKS_PER_CONNECTION: usize = 16;
    let dir = tempfile::tempdir().expect("tempdir");
    let kek = dir.path().join("kek.key");
    std::fs::write(&kek, [7u8; 32]).expect("kek file");
    let toml = format!(
        "[kek]\nprovider = \"local\"\npath = \"{}\"\n{}",
        kek.display(),
        admin_principal_toml()
    );
    // The server log at its production level: bounded lines are counted.
    let mut server =
        Server::start_with_config_env(dir.path(), &toml, &[("TOKENVAULT_LOG", "info")]);
    let mut admin = server.client_with_key(TEST_API_KEY).await;
    let value = card(99);
    let tokens = tokenize(&mut admin, "cust-flood", vec![item(&value, "card")]).await;
    let reveal = pb::DetokenizeRequest {
        tokens: tokens.clone(),
        purpose: "during-flood".into(),
    };

    let started = std::time::Instant::now();
    let mut flooders = Vec::new();
    for _ in 0..CONNECTIONS {
        let client = server.client_with_key("tvk_wrong_key_000000").await;
        for _ in 0..TASKS_PER_CONNECTION {
            let mut client = client.clone();
            let tokens = tokens.clone();
            flooders.push(tokio::spawn(async move {
                let mut refused = 0;
                for _ in 0..BAD_CALLS / (CONNECTIONS * TASKS_PER_CONNECTION) + 1 {
                    let status = client
                        .detokenize(pb::DetokenizeRequest {
                            tokens: tokens.clone(),
                            purpose: "flood".into(),
                        })
                        .await
                        .expect_err("a wrong key");
                    assert_eq!(status.code(), Code::Unauthenticated);
                    refused += 1;
                }
                refused
            }));
        }
    }
    // Reveals go on during the flood...
    for _ in 0..5 {
        let results = admin
            .detokenize(reveal.clone())
            .await
            .expect("a reveal during the flood")
            .into_inner()
            .results;
        assert_eq!(results[0].value, value);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut refused = 0;
    for flooder in flooders {
        refused += flooder.await.expect("flooder");
    }
    assert!(refused >= BAD_CALLS, "{refused} calls refused");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(120),
        "the flood took {:?}",
        started.elapsed()
    );
    // ... and right after it.
    let results = admin
        .detokenize(reveal.clone())
        .await
        .expect("a reveal right after the flood")
        .into_inner()
        .results;
    assert_eq!(results[0].value, value);
    server.stop().await;

    let audit = std::fs::read_to_string(audit_file(&server)).expect("audit file");
    let records: Vec<serde_json::Value> = audit
        .lines()
        .map(|line| serde_json::from_str(line).expect("json line"))
        .collect();
    assert!(
        records.len() < 100,
        "{} audit records for {refused} refused calls",
        records.len()
    );
    let denied: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["outcome"]["code"] == "unauthenticated")
        .collect();
    let counted: u64 = denied
        .iter()
        .map(|r| r["count"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(counted, refused as u64, "every refused call is counted");
    assert!(
        denied.iter().all(
            |r| r["outcome"]["reason"].as_str().is_some_and(|reason| reason
                .contains("unknown API key")
                && reason.contains("127.0.0.1"))
        ),
        "each aggregate names its reason and source: {denied:?}"
    );
    assert!(
        records
            .iter()
            .any(|r| r["outcome"]["result"] == "alert" && r["outcome"]["kind"] == "auth_flood"),
        "the flood raised an alert"
    );
    let log = std::fs::read_to_string(server.log_path()).expect("server log");
    let lines = log
        .lines()
        .filter(|l| l.contains("unauthenticated") || l.contains("not authenticated"))
        .count();
    assert!(
        lines < 100,
        "{lines} server log lines about refused credentials"
    );
    assert!(log.contains("auth_flood"), "the alert is in the server log");
    let (ok, output) = verify(&server);
    assert!(ok, "{output}");
}

/// Deletes the last `n` records from both copies of a stopped server's log.
fn cut_tail(server: &Server, n: usize) {
    edit_lines(&audit_file(server), |lines| {
        lines.truncate(lines.len() - n);
    });
    with_audit_family(server, |db| {
        let cf = db.cf_handle("audit").expect("audit family");
        let last: Vec<Vec<u8>> = db
            .iterator_cf(cf, rocksdb::IteratorMode::End)
            .take(n)
            .map(|entry| entry.expect("read").0.to_vec())
            .collect();
        for key in last {
            db.delete_cf(cf, key).expect("delete");
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tail_cut_from_both_copies_is_named_and_its_numbers_are_not_used_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(dir.path());
    let mut client = server.client().await;
    let tokens = tokenize(&mut client, "cust-cut", vec![item(&card(11), "card")]).await;
    detokenize_many(&server, &tokens[0], 20).await;
    server.stop().await;
    let (ok, output) = verify(&server);
    assert!(ok && output.contains("20 records"), "{output}");
    assert!(output.contains("checkpoint"), "{output}");

    // The last 3 records gone from the database and the file alike: each
    // copy is a sound chain of 17, and only the checkpoint shows the cut.
    cut_tail(&server, 3);
    assert_verify_fails_naming(&server, "records 18-20 are missing");

    // A restart numbers on after the checkpoint: no number is used twice.
    server.restart();
    detokenize_many(&server, &tokens[0], 1).await;
    let log = std::fs::read_to_string(server.log_path()).expect("server log");
    assert!(log.contains("records 18-20 are missing"), "{log}");
    let file = std::fs::read_to_string(audit_file(&server)).expect("audit file");
    let last = file.lines().last().expect("a record");
    assert!(last.contains("\"seq\":21,"), "{last}");
    // (The database's copy of record 21 may still be on its way: then the
    // database's chain is named as cut short of the checkpoint.)
    assert_verify_fails_naming(&server, "18-20");

    // While the server runs, a file cut short under it stops reveals.
    edit_lines(&audit_file(&server), |lines| {
        lines.pop();
    });
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    // A client of the restarted server: the first one's connection died
    // with the first server, and a call on it may fail UNAVAILABLE for
    // that reason alone.
    let mut client = server.client().await;
    let refused = client
        .detokenize(pb::DetokenizeRequest {
            tokens: tokens.clone(),
            purpose: "after-the-cut".into(),
        })
        .await
        .expect_err("no reveal onto a file cut short");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("audit log"), "{refused:?}");
    // The server's line may reach its log just after the answer.
    server.wait_for_log("shorter than", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_checks_every_replicas_chain_in_postgres() {
    use common::postgres::{fresh_database, replica_config};
    let dir = tempfile::tempdir().expect("tempdir");
    let kek = dir.path().join("kek.key");
    std::fs::write(&kek, [9u8; 32]).expect("kek file");
    let url = fresh_database().await;
    let mut servers: Vec<Server> = ["r0", "r1"]
        .iter()
        .map(|name| {
            Server::start_with_config(&dir.path().join(name), &replica_config(&url, &kek, name))
        })
        .collect();
    let mut client = servers[0].client().await;
    let tokens = tokenize(&mut client, "cust-pg", vec![item(&card(12), "card")]).await;
    for server in &servers {
        detokenize_many(server, &tokens[0], 6).await;
    }
    for server in &mut servers {
        server.stop().await;
    }
    let verify_pg = |server: &Server| {
        let config = server.config_path().display().to_string();
        let data_dir = server.data_dir().display().to_string();
        let output = server.run_cli(&[
            "audit",
            "verify",
            "--config",
            &config,
            "--data-dir",
            &data_dir,
        ]);
        (output.status.success(), text(&output))
    };
    let (ok, output) = verify_pg(&servers[0]);
    assert!(ok, "{output}");
    assert!(
        output.contains("replica r0: 6 records") && output.contains("replica r1: 6 records"),
        "every replica's chain is checked: {output}"
    );

    // A row deleted from another replica's chain.
    let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    admin
        .execute("DELETE FROM tv_audit WHERE replica = 'r1' AND seq = 3", &[])
        .await
        .expect("delete");
    let (ok, output) = verify_pg(&servers[0]);
    assert!(!ok, "a deleted row passed: {output}");
    let last = output.lines().last().unwrap_or_default();
    assert!(
        last.contains("r1") && last.contains("missing record 3"),
        "{output}"
    );
}
