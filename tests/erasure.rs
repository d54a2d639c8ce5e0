//! The right to be forgotten, end to end on the real binary: ForgetSubject
//! erases one subject of many (its tokens answer ERASED, the others still
//! detokenize), is idempotent, and returns only once no file under the data
//! directory holds the subject's wrapped DEK (checked from outside the
//! process, with the local and the Vault KEK); its ciphertexts leave the
//! files at the full purge (`retention purge`, the server's schedule, or
//! before the return under `full_purge_at_return`); ExportSubject
//! returns exactly one subject's tokens; receipts verify and any changed
//! byte fails; a backup restore cannot bring a forgotten subject back;
//! tokens past their ttl answer EXPIRED and leave the disk at a purge.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::bao::Bao;
use common::Server;
use common::{admin_principal_toml, card, detokenize, files_under, item, random_item, tokenize};
use tokenvault::cli::client::Client;
use tokenvault::kek::WrappedKey;
use tokenvault::pb;
use tokenvault::store::TokenRecord;

const SUBJECTS: usize = 6;
const PER_SUBJECT: usize = 20;
const TOKEN_ENV: &str = "TV_TEST_VAULT_TOKEN";

fn subject(n: usize) -> String {
    format!("erasure-subject-{n:02}@example.org")
}

/// Values of subject `n`: cards (deterministic) and emails (random mode).
fn items(n: usize) -> Vec<pb::TokenizeItem> {
    (0..PER_SUBJECT)
        .map(|i| {
            if i % 2 == 0 {
                item(&card(n * 1000 + i), "card")
            } else {
                random_item(&format!("person{n:02}.{i:02}@mail.example"), "email")
            }
        })
        .collect()
}

/// Tokenizes every subject; returns (subject, values, tokens) per subject.
async fn tokenize_all(client: &mut Client) -> Vec<(String, Vec<String>, Vec<String>)> {
    let mut out = Vec::new();
    for n in 0..SUBJECTS {
        let items = items(n);
        let values = items.iter().map(|i| i.value.clone()).collect();
        let tokens = tokenize(client, &subject(n), items).await;
        out.push((subject(n), values, tokens));
    }
    out
}

async fn forget(client: &mut Client, subject: &str) -> pb::ForgetSubjectResponse {
    client
        .forget_subject(pb::ForgetSubjectRequest {
            subject_id: subject.into(),
            reason: "GDPR art. 17 request 4711".into(),
        })
        .await
        .expect("forget")
        .into_inner()
}

async fn export(client: &mut Client, subject: &str) -> Vec<pb::ExportSubjectResponse> {
    let mut stream = client
        .export_subject(pb::ExportSubjectRequest {
            subject_id: subject.into(),
            purpose: "art. 15 access request".into(),
        })
        .await
        .expect("export")
        .into_inner();
    let mut out = Vec::new();
    while let Some(item) = stream.message().await.expect("export stream") {
        out.push(item);
    }
    out
}

fn statuses(results: &[pb::DetokenizeResult]) -> Vec<pb::TokenStatus> {
    results
        .iter()
        .map(|r| pb::TokenStatus::try_from(r.status).expect("known status"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgetting_one_subject_erases_only_it_and_is_idempotent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let mut client = server.client().await;
    let subjects = tokenize_all(&mut client).await;
    let (gone, _, gone_tokens) = &subjects[2];

    let first = forget(&mut client, gone).await;
    assert_eq!(first.tokens_erased, PER_SUBJECT as u64);
    let receipt = first.receipt.expect("a receipt");
    assert_eq!(receipt.tokens_erased, PER_SUBJECT as u64);
    // The receipt names the forget's audit record.
    let audit = std::fs::read_to_string(server.data_dir().join("audit.jsonl")).expect("audit");
    let record: serde_json::Value = audit
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("record"))
        .find(|r| r["seq"] == receipt.audit_sequence)
        .expect("the receipt's audit record");
    assert_eq!(record["rpc"], "forget_subject");
    assert_eq!(record["count"], PER_SUBJECT as u64);
    assert_eq!(record["subject_hashes"].as_array().map(Vec::len), Some(1));
    assert_eq!(receipt.subject_hash.len(), 64);
    assert!(!receipt.subject_hash.contains("erasure-subject"));

    let results = detokenize(&mut client, gone_tokens).await;
    assert_eq!(
        statuses(&results),
        vec![pb::TokenStatus::Erased; PER_SUBJECT]
    );
    assert!(results.iter().all(|r| r.value.is_empty()));
    for (n, (_, values, tokens)) in subjects.iter().enumerate() {
        if n == 2 {
            continue;
        }
        let results = detokenize(&mut client, tokens).await;
        let got: Vec<&str> = results.iter().map(|r| r.value.as_str()).collect();
        assert_eq!(got, values.iter().map(String::as_str).collect::<Vec<_>>());
    }

    let again = forget(&mut client, gone).await;
    assert_eq!(
        again.tokens_erased, 0,
        "forgetting twice erases nothing more"
    );
    assert!(export(&mut client, gone).await.is_empty());

    // Nothing of the subject id in any file (the ledger and tombstones
    // hold keyed hashes only) or in the server's log.
    let mut searched = files_under(&server.data_dir());
    searched.push(server.log_path());
    for path in searched {
        let bytes = std::fs::read(&path).unwrap_or_default();
        assert!(
            !bytes.windows(gone.len()).any(|w| w == gone.as_bytes()),
            "the subject id is in {}",
            path.display()
        );
    }

    // The subject can come back as a new one: a fresh key, fresh tokens.
    let fresh = tokenize(&mut client, gone, vec![item(&card(2000), "card")]).await;
    assert_eq!(detokenize(&mut client, &fresh).await[0].value, card(2000));
    assert!(!gone_tokens.contains(&fresh[0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_returns_exactly_the_subjects_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let mut client = server.client().await;
    let subjects = tokenize_all(&mut client).await;
    // Over one store page (256), so the stream continues across pages.
    let many: Vec<pb::TokenizeItem> = (0..600)
        .map(|i| random_item(&format!("bulk{i:04}@mail.example"), "email"))
        .collect();
    let many_values: Vec<String> = many.iter().map(|i| i.value.clone()).collect();
    let many_tokens = tokenize(&mut client, "bulk-subject", many).await;

    let (who, values, tokens) = &subjects[4];
    let mut expected: Vec<(String, String)> =
        tokens.iter().cloned().zip(values.iter().cloned()).collect();
    let mut exported: Vec<(String, String)> = export(&mut client, who)
        .await
        .into_iter()
        .map(|e| {
            assert!(e.format == "card" || e.format == "email");
            assert!(e.created_at_unix > 1_700_000_000);
            (e.token, e.value)
        })
        .collect();
    expected.sort();
    exported.sort();
    assert_eq!(exported, expected);

    let mut bulk: Vec<(String, String)> = export(&mut client, "bulk-subject")
        .await
        .into_iter()
        .map(|e| (e.token, e.value))
        .collect();
    let mut bulk_expected: Vec<(String, String)> =
        many_tokens.into_iter().zip(many_values).collect();
    bulk.sort();
    bulk_expected.sort();
    assert_eq!(bulk, bulk_expected);
    assert!(export(&mut client, "never-seen").await.is_empty());
}

/// Files under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|path| {
            std::fs::read(path)
                .map(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
                .unwrap_or(false)
        })
        .collect()
}

/// What the store holds of a subject, read from its files by a read-only
/// RocksDB instance in this (test) process, beside the running server.
struct Stored {
    /// The subject's wrapped DEK as stored: for the Vault KEK, the transit
    /// ciphertext string (`vault:v1:...`); for the local KEK, the sealed
    /// key bytes.
    wrapped_dek: Vec<u8>,
    /// The sealed values (ciphertext and tag) of the subject's tokens.
    ciphertexts: Vec<Vec<u8>>,
}

fn read_stored(data_dir: &Path, tokens: &[String]) -> Stored {
    let db = tokenvault::store::rocks::open_for_inspection(&data_dir.join("rocksdb"), true)
        .expect("open the store read-only");
    let records: Vec<TokenRecord> = tokens
        .iter()
        .map(|token| {
            let bytes = db
                .get_cf(db.cf_handle("tokens").expect("cf"), token.as_bytes())
                .expect("read")
                .expect("the token's record is stored");
            TokenRecord::decode(&bytes).expect("record")
        })
        .collect();
    let subject = records[0].subject;
    // The wrapped keys are in the key instance, `keys/` in the store's
    // directory.
    let keys =
        tokenvault::store::rocks::open_for_inspection(&data_dir.join("rocksdb").join("keys"), true)
            .expect("open the key instance read-only");
    let wrapped = keys
        .get_cf(keys.cf_handle("subjects").expect("cf"), subject.as_bytes())
        .expect("read")
        .expect("the subject's key is stored");
    let wrapped = WrappedKey::decode(&wrapped).expect("wrapped key");
    Stored {
        wrapped_dek: searchable(wrapped.ciphertext),
        ciphertexts: records
            .into_iter()
            .map(|r| searchable(r.sealed.ciphertext))
            .collect(),
    }
}

/// The part of a stored value that is found verbatim in the files. Table
/// blocks are LZ4-compressed, and LZ4 extends a match backwards: when the
/// last byte of a value happens to equal the byte before an earlier copy of
/// the next entry's header (about 1 in 256), that byte is encoded in the
/// match. Dropping the last 4 bytes keeps the needle at 28 or more random
/// bytes (it cannot occur by chance) while the search stays exact.
fn searchable(mut value: Vec<u8>) -> Vec<u8> {
    value.truncate(value.len().saturating_sub(4));
    assert!(
        value.len() >= 24,
        "a stored value this short proves nothing"
    );
    value
}

fn assert_on_disk(data_dir: &Path, stored: &Stored, what: &str) {
    assert!(
        !files_containing(data_dir, &stored.wrapped_dek).is_empty(),
        "{what}: the wrapped DEK is not found in any file (the search would prove nothing)"
    );
    for ciphertext in &stored.ciphertexts {
        assert!(
            !files_containing(data_dir, ciphertext).is_empty(),
            "{what}: a ciphertext is not found in any file"
        );
    }
}

fn assert_off_disk(data_dir: &Path, stored: &Stored, what: &str) {
    let holders = files_containing(data_dir, &stored.wrapped_dek);
    assert!(
        holders.is_empty(),
        "{what}: the wrapped DEK is still in {holders:?}"
    );
    for ciphertext in &stored.ciphertexts {
        let holders = files_containing(data_dir, ciphertext);
        assert!(
            holders.is_empty(),
            "{what}: a ciphertext is still in {holders:?}"
        );
    }
}

/// How a test server purges after a forget (`[erasure]`).
#[derive(Clone, Copy, PartialEq)]
enum Purge {
    /// The default: the wrapped key at return, the rest by a full purge
    /// (`retention purge` here, so the test does not wait on the bound).
    KeyAtReturn,
    /// `full_purge_at_return = true`: every byte before the return.
    EverythingAtReturn,
    /// `purge_within_seconds = 2`: the server's schedule runs the full
    /// purge by itself.
    Scheduled,
}

impl Purge {
    fn erasure_toml(self, root: &Path) -> String {
        let extra = match self {
            Purge::KeyAtReturn => "",
            Purge::EverythingAtReturn => "full_purge_at_return = true\n",
            Purge::Scheduled => "purge_within_seconds = 2\n",
        };
        format!(
            "[erasure]\nledger = \"{}\"\n{extra}",
            root.join("ledger").join("erasure-ledger.jsonl").display()
        )
    }
}

/// `erasure status` of a running server, with its exit status.
fn erasure_status(server: &Server) -> (bool, String) {
    let data_dir = server.data_dir();
    let output = server.run_cli(&[
        "erasure",
        "status",
        "--data-dir",
        data_dir.to_str().expect("utf-8 path"),
    ]);
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// Tokenizes, finds the forgotten subject's data in the files, forgets
/// it, and checks every file again while the server still runs: the
/// wrapped DEK is gone at return, the ciphertexts at return or after the
/// full purge that `purge` names.
async fn forget_purges_files(server: &mut Server, vault_kek: bool, purge: Purge) {
    let mut client = server.client().await;
    let subjects = tokenize_all(&mut client).await;
    let data_dir = server.data_dir();
    // Restarting moves part of the data from the WAL into table files, so
    // both kinds of file are checked.
    server.stop().await;
    server.restart();
    let mut client = server.client().await;
    let more = tokenize(
        &mut client,
        &subjects[1].0,
        vec![item(&card(77_777), "card")],
    )
    .await;
    let mut gone_tokens = subjects[1].2.clone();
    gone_tokens.extend(more);
    let gone = read_stored(&data_dir, &gone_tokens);
    let kept = read_stored(&data_dir, &subjects[3].2);
    if vault_kek {
        assert!(
            gone.wrapped_dek.starts_with(b"vault:v"),
            "a transit ciphertext"
        );
    }
    assert_on_disk(&data_dir, &gone, "before the forget");

    let forgotten = forget(&mut client, &subjects[1].0).await;
    assert_eq!(forgotten.tokens_erased, PER_SUBJECT as u64 + 1);
    let receipt = forgotten.receipt.expect("a receipt");
    let holders = files_containing(&data_dir, &gone.wrapped_dek);
    assert!(
        holders.is_empty(),
        "after ForgetSubject returned: the wrapped DEK is still in {holders:?}"
    );
    match purge {
        Purge::EverythingAtReturn => {
            assert_eq!(receipt.at_return, "everything_gone");
            assert_eq!(receipt.purged_by_unix, receipt.erased_at_unix);
            assert_off_disk(&data_dir, &gone, "after ForgetSubject returned");
            let (ok, status) = erasure_status(server);
            assert!(
                ok && status.contains("pending physical purges: none"),
                "{status}"
            );
        }
        Purge::KeyAtReturn => {
            assert_eq!(receipt.at_return, "key_gone");
            assert_eq!(receipt.purged_by_unix, receipt.erased_at_unix + 86_400);
            let (ok, status) = erasure_status(server);
            assert!(
                ok && status.contains("pending physical purges: 1 forgets"),
                "{status}"
            );
            // A repeated forget (a workflow's retry) erases nothing, and its
            // receipt promises what holds: the values are still owed to the
            // full purge, by the first forget's bound.
            let again = forget(&mut client, &subjects[1].0).await;
            assert_eq!(again.tokens_erased, 0);
            let again = again.receipt.expect("a receipt");
            assert_eq!(again.at_return, "key_gone");
            assert_eq!(again.purged_by_unix, receipt.purged_by_unix);
            let data_dir_arg = data_dir.to_str().expect("utf-8 path");
            cli_ok(server, &["retention", "purge", "--data-dir", data_dir_arg]);
            assert_off_disk(&data_dir, &gone, "after `retention purge`");
            let after_purge = forget(&mut client, &subjects[1].0).await;
            let after_purge = after_purge.receipt.expect("a receipt");
            assert_eq!(after_purge.at_return, "everything_gone");
            let (ok, status) = erasure_status(server);
            assert!(
                ok && status.contains("pending physical purges: none"),
                "{status}"
            );
        }
        Purge::Scheduled => {
            assert_eq!(receipt.at_return, "key_gone");
            assert_eq!(receipt.purged_by_unix, receipt.erased_at_unix + 2);
            // The schedule purges once half the bound is used (1 s), and
            // checks every second; its log line says when it is done.
            server.wait_for_log("full purge done", 1).await;
            assert_off_disk(&data_dir, &gone, "after the scheduled purge");
            let (ok, status) = erasure_status(server);
            assert!(
                ok && status.contains("pending physical purges: none"),
                "{status}"
            );
        }
    }
    assert_on_disk(&data_dir, &kept, "another subject");
    let results = detokenize(&mut client, &subjects[3].2).await;
    assert_eq!(
        statuses(&results),
        vec![pb::TokenStatus::Found; PER_SUBJECT]
    );
}

/// A config server with the test admin and `purge`'s `[erasure]`.
fn start_purging(root: &Path, purge: Purge) -> Server {
    std::fs::create_dir_all(root).expect("dir");
    let kek = root.join("kek.key");
    std::fs::write(&kek, [5u8; 32]).expect("kek");
    let config = format!(
        "[kek]\nprovider = \"local\"\npath = \"{}\"\n{}{}",
        kek.display(),
        admin_principal_toml(),
        purge.erasure_toml(root)
    );
    Server::start_with_config(root, &config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_leaves_no_file_with_the_subjects_key_or_values_local_kek() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = start_purging(dir.path(), Purge::KeyAtReturn);
    forget_purges_files(&mut server, false, Purge::KeyAtReturn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_full_purge_at_return_no_file_holds_the_subjects_values_at_return() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = start_purging(dir.path(), Purge::EverythingAtReturn);
    forget_purges_files(&mut server, false, Purge::EverythingAtReturn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduled_purge_removes_the_values_within_the_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = start_purging(dir.path(), Purge::Scheduled);
    forget_purges_files(&mut server, false, Purge::Scheduled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_leaves_no_file_with_the_subjects_key_or_values_vault_kek() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bao = Bao::dev(&dir.path().join("bao"));
    let root = dir.path().join("tv");
    let config = format!(
        "[kek]\nprovider = \"vault\"\naddress = \"{}\"\nkey_name = \"{}\"\ntoken_env = \"{TOKEN_ENV}\"\n{}{}",
        bao.addr(),
        common::bao::KEY_NAME,
        admin_principal_toml(),
        Purge::KeyAtReturn.erasure_toml(&root)
    );
    let mut server =
        Server::start_with_config_env(&root, &config, &[(TOKEN_ENV, bao.root_token.as_str())]);
    forget_purges_files(&mut server, true, Purge::KeyAtReturn).await;
}

fn cli_ok(server: &Server, args: &[&str]) -> String {
    let output = server.run_cli(args);
    assert!(
        output.status.success(),
        "tokenvault {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_verifies_and_any_changed_byte_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let mut client = server.client().await;
    tokenize(&mut client, "receipt-subject", vec![item(&card(5), "card")]).await;
    let data_dir = server.data_dir();
    let data_dir = data_dir.to_str().expect("utf-8 path");
    let receipt = dir.path().join("receipt.json");
    let receipt_path = receipt.to_str().expect("utf-8 path");
    cli_ok(
        &server,
        &[
            "forget",
            "receipt-subject",
            "--reason",
            "ticket 1",
            "--receipt",
            receipt_path,
            "--addr",
            &server.addr,
            "--data-dir",
            data_dir,
        ],
    );
    let verify = |path: &str| server.run_cli(&["receipt", "verify", path, "--data-dir", data_dir]);
    assert!(verify(receipt_path).status.success());

    let original = std::fs::read(&receipt).expect("read receipt");
    assert!(std::str::from_utf8(&original)
        .expect("utf-8")
        .contains("\"tokens_erased\":1"));
    let tampered = dir.path().join("tampered.json");
    let tampered_path = tampered.to_str().expect("utf-8 path");
    for i in 0..original.len() {
        let mut bytes = original.clone();
        bytes[i] = match bytes[i] {
            b'0' => b'1',
            b'0'..=b'9' | b'a'..=b'f' => b'0',
            b'"' => b'\'',
            b'x' => b'y',
            _ => b'x',
        };
        assert_ne!(bytes[i], original[i]);
        std::fs::write(&tampered, &bytes).expect("write");
        let output = verify(tampered_path);
        assert!(
            !output.status.success(),
            "byte {i} changed and the receipt still verifies"
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("does not verify"), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_backup_cannot_bring_a_forgotten_subject_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(dir.path());
    let mut client = server.client().await;
    let subjects = tokenize_all(&mut client).await;
    let data_dir = server.data_dir();
    let data_dir_arg = data_dir.to_str().expect("utf-8 path").to_string();
    let backups = dir.path().join("backups");
    let backups_arg = backups.to_str().expect("utf-8 path").to_string();
    let gone_stored = read_stored(&data_dir, &subjects[0].2);

    cli_ok(
        &server,
        &[
            "backup",
            "create",
            &backups_arg,
            "--data-dir",
            &data_dir_arg,
        ],
    );
    assert!(
        !files_containing(&backups, &gone_stored.wrapped_dek).is_empty(),
        "the backup holds the subject's wrapped DEK"
    );
    forget(&mut client, &subjects[0].0).await;
    let after_backup = tokenize(&mut client, "after-backup", vec![item(&card(9), "card")]).await;
    drop(client);
    server.stop().await;

    let restored = server.run_cli(&[
        "backup",
        "restore",
        &backups_arg,
        "--data-dir",
        &data_dir_arg,
    ]);
    assert!(
        restored.status.success(),
        "{}",
        String::from_utf8_lossy(&restored.stderr)
    );

    // Restored, the ledger replayed: the subject's key is gone again.
    assert_off_disk(&data_dir, &gone_stored, "after the restore");
    server.restart();
    let mut client = server.client().await;
    let results = detokenize(&mut client, &subjects[0].2).await;
    assert_eq!(
        statuses(&results),
        vec![pb::TokenStatus::Erased; PER_SUBJECT]
    );
    for (_, values, tokens) in &subjects[1..] {
        let results = detokenize(&mut client, tokens).await;
        let got: Vec<String> = results.into_iter().map(|r| r.value).collect();
        assert_eq!(&got, values);
    }
    // A backup is the state when it was taken: a later token is absent.
    let results = detokenize(&mut client, &after_backup).await;
    assert_eq!(statuses(&results), vec![pb::TokenStatus::NotFound]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_is_refused_while_the_server_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let data_dir = server.data_dir();
    let data_dir = data_dir.to_str().expect("utf-8 path");
    let backups = dir.path().join("backups");
    let backups = backups.to_str().expect("utf-8 path");
    cli_ok(
        &server,
        &["backup", "create", backups, "--data-dir", data_dir],
    );
    let output = server.run_cli(&["backup", "restore", backups, "--data-dir", data_dir]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("stop it before restoring"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tokens_answer_expired_and_leave_the_disk_at_a_purge() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let mut client = server.client().await;
    let short: Vec<pb::TokenizeItem> = (0..10)
        .map(|i| pb::TokenizeItem {
            ttl_seconds: 1,
            ..random_item(&format!("short-lived{i}@mail.example"), "email")
        })
        .collect();
    let short_tokens = tokenize(&mut client, "ttl-subject", short).await;
    let kept_tokens = tokenize(&mut client, "ttl-subject", vec![item(&card(11), "card")]).await;
    let data_dir = server.data_dir();
    let short_stored = read_stored(&data_dir, &short_tokens);

    tokio::time::sleep(Duration::from_millis(2100)).await;
    let results = detokenize(&mut client, &short_tokens).await;
    assert_eq!(statuses(&results), vec![pb::TokenStatus::Expired; 10]);
    assert!(results.iter().all(|r| r.value.is_empty()));
    for ciphertext in &short_stored.ciphertexts {
        assert!(!files_containing(&data_dir, ciphertext).is_empty());
    }

    cli_ok(
        &server,
        &[
            "retention",
            "purge",
            "--data-dir",
            data_dir.to_str().expect("utf-8 path"),
        ],
    );
    for ciphertext in &short_stored.ciphertexts {
        let holders = files_containing(&data_dir, ciphertext);
        assert!(
            holders.is_empty(),
            "an expired ciphertext is still in {holders:?}"
        );
    }
    // Purged records are gone: the tokens are no longer known at all.
    let results = detokenize(&mut client, &short_tokens).await;
    assert_eq!(statuses(&results), vec![pb::TokenStatus::NotFound; 10]);
    assert_eq!(
        detokenize(&mut client, &kept_tokens).await[0].value,
        card(11)
    );
}

/// A rocksdb config whose KEK file and erasure ledger live under `root`,
/// outside the data directory (`root/data`), as in production: the data
/// directory can be lost and restored without them.
fn outside_config(root: &Path) -> String {
    let kek = root.join("kek.key");
    if !kek.exists() {
        std::fs::create_dir_all(root).expect("root");
        std::fs::write(&kek, [7u8; 32]).expect("kek file");
    }
    format!(
        "[kek]\nprovider = \"local\"\npath = \"{}\"\n[erasure]\nledger = \"{}\"\n{}",
        kek.display(),
        root.join("ledger").join("erasure-ledger.jsonl").display(),
        admin_principal_toml()
    )
}

/// Must-show 2 (RocksDB): backup, forget, delete the data directory,
/// restore with the same config: the forgotten subject stays ERASED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restored_onto_a_new_data_directory_keeps_a_forgotten_subject_erased() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("tv");
    let mut server = Server::start_with_config(&root, &outside_config(&root));
    let mut client = server.client().await;
    let subjects = tokenize_all(&mut client).await;
    let data_dir = server.data_dir();
    let config = server.config_path();
    let (data_arg, config_arg) = (
        data_dir.to_str().expect("utf-8").to_string(),
        config.to_str().expect("utf-8").to_string(),
    );
    let backups = dir.path().join("backups");
    let backups_arg = backups.to_str().expect("utf-8").to_string();
    cli_ok(
        &server,
        &[
            "backup",
            "create",
            &backups_arg,
            "--config",
            &config_arg,
            "--data-dir",
            &data_arg,
        ],
    );
    forget(&mut client, &subjects[0].0).await;
    drop(client);
    server.stop().await;

    // The disaster: the data directory is gone.
    std::fs::remove_dir_all(&data_dir).expect("delete the data directory");
    cli_ok(
        &server,
        &[
            "backup",
            "restore",
            &backups_arg,
            "--config",
            &config_arg,
            "--data-dir",
            &data_arg,
        ],
    );
    server.restart();
    let mut client = server.client().await;
    let results = detokenize(&mut client, &subjects[0].2).await;
    assert_eq!(
        statuses(&results),
        vec![pb::TokenStatus::Erased; PER_SUBJECT]
    );
    for (_, values, tokens) in &subjects[1..] {
        let got: Vec<String> = detokenize(&mut client, tokens)
            .await
            .into_iter()
            .map(|r| r.value)
            .collect();
        assert_eq!(&got, values);
    }
}

/// Must-show 2, the other branch: when the ledger went with the data
/// directory (the dev default keeps it there), the restore is refused and
/// names the ledger; only the flag that says the danger lets it through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_whose_ledger_is_gone_is_refused_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(dir.path());
    let mut client = server.client().await;
    let subjects = tokenize_all(&mut client).await;
    let data_dir = server.data_dir();
    let data_arg = data_dir.to_str().expect("utf-8").to_string();
    let backups = dir.path().join("backups");
    let backups_arg = backups.to_str().expect("utf-8").to_string();
    cli_ok(
        &server,
        &["backup", "create", &backups_arg, "--data-dir", &data_arg],
    );
    forget(&mut client, &subjects[0].0).await;
    drop(client);
    server.stop().await;
    // The dev admin key and KEK go with the directory too: keep them so
    // the restored vault can be opened and called.
    let keep = dir.path().join("keep");
    std::fs::create_dir_all(&keep).expect("keep");
    for name in ["kek.key", "dev-admin.key"] {
        std::fs::copy(data_dir.join(name), keep.join(name)).expect("keep a file");
    }
    std::fs::remove_dir_all(&data_dir).expect("delete the data directory");
    std::fs::create_dir_all(&data_dir).expect("data dir");
    for name in ["kek.key", "dev-admin.key"] {
        std::fs::copy(keep.join(name), data_dir.join(name)).expect("put a file back");
    }

    let refused = server.run_cli(&["backup", "restore", &backups_arg, "--data-dir", &data_arg]);
    assert!(
        !refused.status.success(),
        "a restore without its ledger went through"
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    let ledger = data_dir.join("erasure-ledger.jsonl");
    assert!(
        stderr.contains(&ledger.display().to_string())
            && stderr.contains("--danger-restore-without-ledger"),
        "the refusal names the ledger and the flag: {stderr}"
    );
    assert!(
        !data_dir.join("rocksdb").exists(),
        "nothing was restored before the refusal"
    );

    cli_ok(
        &server,
        &[
            "backup",
            "restore",
            &backups_arg,
            "--data-dir",
            &data_arg,
            "--danger-restore-without-ledger",
        ],
    );
    server.restart();
    let mut client = server.client().await;
    // What the flag's name warns of: the forgotten subject is back.
    let results = detokenize(&mut client, &subjects[0].2).await;
    assert_eq!(
        statuses(&results),
        vec![pb::TokenStatus::Found; PER_SUBJECT]
    );
    // And the vault runs on: a new forget is recorded and holds.
    forget(&mut client, &subjects[0].0).await;
    drop(client);
    server.stop().await;
    server.restart();
    let mut client = server.client().await;
    let results = detokenize(&mut client, &subjects[0].2).await;
    assert_eq!(
        statuses(&results),
        vec![pb::TokenStatus::Erased; PER_SUBJECT]
    );
}

/// Must-show 2: a ledger with its last line cut (whole, or part of it) is
/// detected: the server refuses to start and names the ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_with_its_last_line_cut_stops_the_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("tv");
    let mut server = Server::start_with_config(&root, &outside_config(&root));
    let mut client = server.client().await;
    let subjects = tokenize_all(&mut client).await;
    forget(&mut client, &subjects[0].0).await;
    forget(&mut client, &subjects[1].0).await;
    drop(client);
    server.stop().await;
    let ledger = root.join("ledger").join("erasure-ledger.jsonl");
    let full = std::fs::read_to_string(&ledger).expect("ledger");
    let lines: Vec<&str> = full.lines().collect();
    assert!(lines.len() >= 2, "{full}");
    let whole_line_cut = format!("{}\n", lines[..lines.len() - 1].join("\n"));
    let part_line_cut = &full[..full.len() - 10];
    for cut in [whole_line_cut.as_str(), part_line_cut] {
        std::fs::write(&ledger, cut).expect("cut the ledger");
        let (status, log) = server.run_to_exit_within(Duration::from_secs(30));
        assert!(!status.success(), "started on a cut ledger");
        assert!(
            log.contains(&ledger.display().to_string()),
            "the refusal names the ledger: {log}"
        );
    }
    std::fs::write(&ledger, &full).expect("put the ledger back");
    server.restart();
    let mut client = server.client().await;
    let results = detokenize(&mut client, &subjects[1].2).await;
    assert_eq!(
        statuses(&results),
        vec![pb::TokenStatus::Erased; PER_SUBJECT]
    );
}

/// The `[kek]` section of a local key file written into `dir`.
fn local_kek_in(dir: &Path) -> String {
    let kek = dir.join("kek.key");
    std::fs::write(&kek, [9u8; 32]).expect("kek file");
    common::postgres::local_kek_toml(&kek)
}

/// The `[kek]` section of `bao`'s transit key, its token read from
/// [`TOKEN_ENV`].
fn vault_kek_toml(bao: &Bao) -> String {
    format!(
        "[kek]\nprovider = \"vault\"\naddress = \"{}\"\nkey_name = \"{}\"\ntoken_env = \"{TOKEN_ENV}\"\n",
        bao.addr(),
        common::bao::KEY_NAME,
    )
}

/// Must-show 2 (PostgreSQL): a `pg_dump` taken before a forget, restored
/// after it (the database dropped and made again under its name): the
/// vault started on it answers ERASED for the forgotten subject; with the
/// local KEK and with the Vault KEK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pg_dump_from_before_a_forget_restored_after_it_keeps_the_subject_erased() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kek = local_kek_in(dir.path());
    pg_dump_restore_keeps_the_subject_erased(dir.path(), &kek, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pg_dump_from_before_a_forget_restored_after_it_keeps_the_subject_erased_vault_kek() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bao = Bao::dev(&dir.path().join("bao"));
    let kek = vault_kek_toml(&bao);
    let env = [(TOKEN_ENV, bao.root_token.as_str())];
    pg_dump_restore_keeps_the_subject_erased(dir.path(), &kek, &env).await;
}

async fn pg_dump_restore_keeps_the_subject_erased(
    dir: &Path,
    kek_toml: &str,
    env: &[(&str, &str)],
) {
    let url = common::postgres::fresh_database().await;
    let root = dir.join("r0");
    let config = common::postgres::replica_config_with_kek(&url, kek_toml, "r0");
    let mut server = Server::start_with_config_env(&root, &config, env);
    let mut client = server.client().await;
    let subjects = tokenize_all(&mut client).await;
    let dump = dir.join("vault.dump");
    common::postgres::pg_dump(&url, &dump);
    forget(&mut client, &subjects[0].0).await;
    assert_eq!(
        statuses(&detokenize(&mut client, &subjects[0].2).await),
        vec![pb::TokenStatus::Erased; PER_SUBJECT]
    );
    drop(client);
    server.stop().await;

    common::postgres::drop_and_restore(&url, &dump).await;
    server.restart();
    let mut client = server.client().await;
    let results = detokenize(&mut client, &subjects[0].2).await;
    assert_eq!(
        statuses(&results),
        vec![pb::TokenStatus::Erased; PER_SUBJECT]
    );
    for (_, values, tokens) in &subjects[1..] {
        let got: Vec<String> = detokenize(&mut client, tokens)
            .await
            .into_iter()
            .map(|r| r.value)
            .collect();
        assert_eq!(&got, values);
    }
}

/// Must-show 4 (PostgreSQL), the running vault: the subject's rows copied
/// out before a forget (key row, tokens, index) and written back after it,
/// under two running replicas (one did the forget, the other had the key
/// cached): neither opens them, the copy is erased again, an alert names
/// no subject, and the subject can be tokenized anew; local KEK and Vault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_written_back_after_a_forget_are_refused_by_every_running_replica() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kek = local_kek_in(dir.path());
    written_back_rows_are_refused(dir.path(), &kek, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_written_back_after_a_forget_are_refused_by_every_running_replica_vault_kek() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bao = Bao::dev(&dir.path().join("bao"));
    let kek = vault_kek_toml(&bao);
    let env = [(TOKEN_ENV, bao.root_token.as_str())];
    written_back_rows_are_refused(dir.path(), &kek, &env).await;
}

async fn sql(url: &str, statements: &str) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(connection);
    client.batch_execute(statements).await.expect("sql");
}

async fn written_back_rows_are_refused(dir: &Path, kek_toml: &str, env: &[(&str, &str)]) {
    let url = common::postgres::fresh_database().await;
    let forgetting = Server::start_with_config_env(
        &dir.join("r0"),
        &common::postgres::replica_config_with_kek(&url, kek_toml, "r0"),
        env,
    );
    let other = Server::start_with_config_env(
        &dir.join("r1"),
        &common::postgres::replica_config_with_kek(&url, kek_toml, "r1"),
        env,
    );
    let mut r0 = forgetting.client().await;
    let mut r1 = other.client().await;
    let subjects = tokenize_all(&mut r0).await;
    let (forgotten, values, tokens) = &subjects[0];
    sql(
        &url,
        "CREATE TABLE copy_subjects AS SELECT * FROM tv_subjects;
         CREATE TABLE copy_tokens AS SELECT * FROM tv_tokens;
         CREATE TABLE copy_index AS SELECT * FROM tv_index;",
    )
    .await;
    forget(&mut r0, forgotten).await;

    // Written back once for each replica: the one that did the forget, then
    // the one that learns of it from the shared ledger.
    for (client, server) in [(&mut r0, &forgetting), (&mut r1, &other)] {
        sql(
            &url,
            "INSERT INTO tv_subjects SELECT * FROM copy_subjects ON CONFLICT DO NOTHING;
             INSERT INTO tv_tokens SELECT * FROM copy_tokens ON CONFLICT DO NOTHING;
             INSERT INTO tv_index SELECT * FROM copy_index ON CONFLICT DO NOTHING;",
        )
        .await;
        let results = detokenize(client, tokens).await;
        assert_eq!(
            statuses(&results),
            vec![pb::TokenStatus::Erased; PER_SUBJECT],
            "a key row written back after the forget opened the subject's values"
        );
        assert!(results.iter().all(|r| r.value.is_empty()));
        for (_, values, tokens) in &subjects[1..] {
            let got: Vec<String> = detokenize(client, tokens)
                .await
                .into_iter()
                .map(|r| r.value)
                .collect();
            assert_eq!(&got, values, "the other subjects are untouched");
        }
        server.wait_for_log("alert=\"destroyed_key_back\"", 1).await;
        let log = std::fs::read_to_string(server.log_path()).expect("log");
        assert!(
            !log.contains(forgotten.as_str()),
            "the log names the subject"
        );
        for value in values {
            assert!(!log.contains(value.as_str()), "the log holds a value");
        }
    }

    // The copy was erased again, and the subject seen anew gets a new key:
    // its new token opens on both replicas.
    let again = tokenize(&mut r1, forgotten, vec![item("seen again", "text")]).await;
    for client in [&mut r0, &mut r1] {
        assert_eq!(detokenize(client, &again).await[0].value, "seen again");
    }
}

/// Outside --dev, a ledger in the data directory (or none named, so the
/// dev default there) is refused at start-up, naming the key and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_dev_a_ledger_in_the_data_directory_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("tv");
    let data_dir = root.join("data");
    std::fs::create_dir_all(&root).expect("root");
    std::fs::write(root.join("kek.key"), [7u8; 32]).expect("kek file");
    let kek = format!(
        "[kek]\nprovider = \"local\"\npath = \"{}\"\n",
        root.join("kek.key").display()
    );
    let inside = format!(
        "[erasure]\nledger = \"{}\"\n{kek}{}",
        data_dir.join("erasure-ledger.jsonl").display(),
        admin_principal_toml()
    );
    let mut server = Server::prepared_with_config(&root, &inside, &[]);
    let (status, log) = server.run_to_exit_within(Duration::from_secs(30));
    assert!(!status.success());
    assert!(
        log.contains("erasure.ledger") && log.contains("inside data_dir"),
        "{log}"
    );
    // The same config named in the ordinary way, without [erasure].
    let none = format!("[erasure]\n{kek}{}", admin_principal_toml());
    let mut server = Server::prepared_with_config(&root, &none, &[]);
    let (status, log) = server.run_to_exit_within(Duration::from_secs(30));
    assert!(!status.success());
    assert!(log.contains("erasure.ledger is not set"), "{log}");
}

/// Whether anyone holding the key file (the vault, or whoever copies the
/// file) can open a copied key row.
async fn opens_with_key_file(kek_file: &Path, copy: &WrappedKey) -> bool {
    use tokenvault::kek::KekProvider;
    let kek = tokenvault::kek::local::LocalKek::open(kek_file, false).expect("key file");
    kek.unwrap(&[copy]).await.is_ok()
}

fn keys_cli(server: &Server, args: &[&str]) -> std::process::Output {
    let config = server.config_path();
    let mut all = vec!["keys", args[0], "--config", config.to_str().expect("utf8")];
    all.extend_from_slice(&args[1..]);
    server.run_cli(&all)
}

/// Must-show 4 by the key hierarchy with the local KEK (PostgreSQL, two
/// replicas sharing the key file): a copy of a forgotten subject's key row
/// taken before the forget opens with the key file until its version is
/// retired; `keys rotate` adds a version that the other replica picks up,
/// `keys retire --below 2 --trim-irreversibly` removes v1 from the file,
/// and then no copy opens for anyone with the file, while every surviving
/// subject detokenizes on both replicas and after a cold restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retiring_the_local_kek_version_kills_every_copy_of_a_forgotten_subjects_key_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kek_file = dir.path().join("kek.key");
    std::fs::write(&kek_file, [9u8; 32]).expect("kek file");
    let url = common::postgres::fresh_database().await;
    let start = |name: &str| {
        Server::start_with_config(
            &dir.path().join(name),
            &common::postgres::replica_config(&url, &kek_file, name),
        )
    };
    let (r0, mut r1) = (start("r0"), start("r1"));
    let mut client = r0.client().await;
    let mut subjects = Vec::new();
    for n in 0..5 {
        let value = card(n);
        let token = tokenize(&mut client, &subject(n), vec![item(&value, "card")]).await;
        subjects.push((value, token[0].clone()));
    }
    let copies = common::postgres::key_rows(&url).await;
    assert_eq!(copies.len(), 5);
    forget(&mut client, &subject(0)).await;

    let refused = keys_cli(&r0, &["retire", "--below", "2", "--trim-irreversibly"]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{said}");
    assert!(
        said.contains("between v2 and the latest version, v1"),
        "{said}"
    );
    // The weakness: the vault refuses the copy, but the key file opens it.
    for copy in &copies {
        assert!(opens_with_key_file(&kek_file, copy).await);
    }

    let rotated = keys_cli(&r0, &["rotate"]);
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    let status = String::from_utf8_lossy(&keys_cli(&r0, &["status"]).stdout).into_owned();
    assert!(status.contains("v2=4"), "{status}");
    let retired = keys_cli(&r0, &["retire", "--below", "2", "--trim-irreversibly"]);
    let said = String::from_utf8_lossy(&retired.stdout);
    assert!(
        retired.status.success() && said.contains("below v2 trimmed"),
        "{said} {}",
        String::from_utf8_lossy(&retired.stderr)
    );
    for copy in &copies {
        assert!(!opens_with_key_file(&kek_file, copy).await);
    }
    let file = std::fs::read_to_string(&kek_file).expect("a versioned key file");
    assert!(
        file.contains("floor 2") && !file.contains("\nv1 "),
        "v1 is gone"
    );

    let tokens: Vec<String> = subjects[1..].iter().map(|(_, t)| t.clone()).collect();
    let values: Vec<String> = subjects[1..].iter().map(|(v, _)| v.clone()).collect();
    for server in [&r0, &r1] {
        let mut client = server.client().await;
        let got: Vec<String> = detokenize(&mut client, &tokens)
            .await
            .into_iter()
            .map(|r| r.value)
            .collect();
        assert_eq!(got, values);
    }
    drop(client);
    r1.stop().await;
    r1.restart();
    let mut cold = r1.client().await;
    let got: Vec<String> = detokenize(&mut cold, &tokens)
        .await
        .into_iter()
        .map(|r| r.value)
        .collect();
    assert_eq!(got, values, "a cold replica opens every survivor under v2");
}
