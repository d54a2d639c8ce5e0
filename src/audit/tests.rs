//! The log over a real RocksDB store and file: group commit, restarts,
//! catching up after a crash, failing closed.

use std::path::{Path, PathBuf};

use super::verify::{walk_file, walk_store, VerifyError};
use super::*;
use crate::store::rocks::{RocksOptions, RocksStore};

struct Fixture {
    _dir: tempfile::TempDir,
    db: PathBuf,
    file: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    Fixture {
        db: dir.path().join("rocksdb"),
        file: dir.path().join("audit.jsonl"),
        _dir: dir,
    }
}

fn open_store(path: &Path) -> Arc<dyn Store> {
    open_store_with(path, Durability::Synced)
}

/// A store whose audit writes match the log's durability, as the server
/// opens them.
fn open_store_with(path: &Path, durability: Durability) -> Arc<dyn Store> {
    let options = RocksOptions {
        sync_writes: false,
        sync_audit: durability == Durability::Synced,
        block_cache_bytes: 1 << 20,
    };
    Arc::new(RocksStore::open(path, &options).expect("open store"))
}

fn hash_key() -> SecretKey {
    SecretKey::from_slice(&[7; 32]).expect("32 bytes")
}

async fn open_log(store: &Arc<dyn Store>, file: &Path) -> AuditLog {
    open_log_with(store, file, Durability::Synced).await
}

/// The default durability, with a sync interval no test waits for.
const WRITTEN: Durability = Durability::Written {
    sync_every: Duration::from_secs(3600),
};

async fn open_log_with(store: &Arc<dyn Store>, file: &Path, durability: Durability) -> AuditLog {
    AuditLog::open(Arc::clone(store), hash_key(), file, durability)
        .await
        .expect("open log")
}

/// Appends `count` reveals of tokens `t0`, `t1`, ..., one after another.
async fn append_reveals(log: &AuditLog, count: usize) {
    for i in 0..count {
        log.append(reveal(&format!("t{i}"))).await.expect("append");
    }
}

fn reveal(token: &str) -> AuditEvent<'_> {
    AuditEvent {
        principal: "billing".into(),
        rpc: "detokenize",
        purpose: "refund".into(),
        subjects: vec![SubjectHash([9; 32])],
        tokens: vec![token],
        count: 1,
        ..AuditEvent::default()
    }
}

/// Verifies both copies and that they agree; the record count.
async fn verify(store: &Arc<dyn Store>, file: &Path) -> Result<u64, VerifyError> {
    let mut pages = Vec::new();
    let mut from = 0;
    loop {
        let page = store.audit_records(from, 100).await.expect("read");
        let Some((last, _)) = page.last() else { break };
        from = last + 1;
        pages.push(page);
    }
    let mut pages = pages.into_iter();
    let key = ChainKey::from_audit_hash_key(&hash_key());
    let hashes = walk_store(
        &key,
        |_| Ok(pages.next().unwrap_or_default()),
        &mut |_, _| {},
    )?;
    let reader = std::io::BufReader::new(std::fs::File::open(file).expect("file"));
    walk_file(&key, reader, Some(&hashes), false, None, &mut |_, _| {})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_get_distinct_numbers_and_one_sound_chain() {
    for durability in [Durability::Synced, WRITTEN] {
        concurrent_appends_make_one_chain(durability).await;
    }
}

async fn concurrent_appends_make_one_chain(durability: Durability) {
    let f = fixture();
    let store = open_store_with(&f.db, durability);
    let log = Arc::new(open_log_with(&store, &f.file, durability).await);
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let log = Arc::clone(&log);
            tokio::spawn(async move { log.append(reveal(&format!("tok-{i}"))).await })
        })
        .collect();
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.push(task.await.expect("task").expect("append"));
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=200).collect::<Vec<u64>>());
    assert_eq!(verify(&store, &f.file).await, Ok(200));

    let text = std::fs::read_to_string(&f.file).expect("read");
    assert!(!text.contains("tok-1"), "tokens are stored hashed only");
    assert!(
        !text.contains(&hex::encode([9u8; 32])),
        "subject hashes are hashed again under the audit key"
    );
}

#[tokio::test]
async fn after_a_cut_tail_numbering_goes_on_above_the_checkpoint() {
    let f = fixture();
    let store = open_store(&f.db);
    {
        let log = open_log(&store, &f.file).await;
        append_reveals(&log, 5).await;
        log.close().await;
    }
    let checkpoint = checkpoint::read(
        &default_checkpoint_path(&f.file),
        &CheckpointKey::from_audit_hash_key(&hash_key()),
        "",
    )
    .expect("read")
    .expect("a clean close leaves a checkpoint");
    assert_eq!(checkpoint.seq, 5);
    // The last two records cut from both copies.
    let text = std::fs::read_to_string(&f.file).expect("read");
    let kept: Vec<&str> = text.lines().take(3).collect();
    std::fs::write(&f.file, format!("{}\n", kept.join("\n"))).expect("write");
    drop(store);
    {
        let db = crate::store::rocks::open_for_inspection(&f.db, false).expect("open");
        let cf = db.cf_handle("audit").expect("audit family");
        for seq in [4u64, 5] {
            db.delete_cf(cf, seq.to_be_bytes()).expect("delete");
        }
    }
    let store = open_store(&f.db);
    assert_eq!(
        verify(&store, &f.file).await,
        Ok(3),
        "each copy alone is sound"
    );
    let log = open_log(&store, &f.file).await;
    assert_eq!(
        log.append(reveal("t9")).await.expect("append"),
        6,
        "numbers 4 and 5 are not given again"
    );
    assert_eq!(
        verify(&store, &f.file).await,
        Err(VerifyError::Chain {
            sink: "database",
            error: ChainError::MissingRange(4, 5)
        })
    );
}

#[tokio::test]
async fn the_chain_continues_across_restarts() {
    let f = fixture();
    let store = open_store(&f.db);
    {
        let log = open_log(&store, &f.file).await;
        append_reveals(&log, 3).await;
    }
    let log = open_log(&store, &f.file).await;
    assert_eq!(log.append(reveal("t3")).await.expect("append"), 4);
    assert_eq!(verify(&store, &f.file).await, Ok(4));
}

#[tokio::test]
async fn a_file_behind_the_database_catches_up_at_open() {
    let f = fixture();
    let store = open_store(&f.db);
    {
        let log = open_log(&store, &f.file).await;
        append_reveals(&log, 5).await;
    }
    // A crash after the store's write and before the file's: the last two
    // lines never reached the file.
    let text = std::fs::read_to_string(&f.file).expect("read");
    let kept: Vec<&str> = text.lines().take(3).collect();
    std::fs::write(&f.file, format!("{}\n", kept.join("\n"))).expect("write");

    let log = open_log(&store, &f.file).await;
    assert_eq!(verify(&store, &f.file).await, Ok(5));
    assert_eq!(log.append(reveal("t5")).await.expect("append"), 6);
}

#[tokio::test]
async fn a_database_behind_the_file_catches_up_at_open() {
    let f = fixture();
    {
        let log = open_log(&open_store(&f.db), &f.file).await;
        append_reveals(&log, 5).await;
    }
    // A store that lost its copy stands in for a crash before its write.
    let fresh = open_store(&f.db.with_extension("fresh"));
    let log = open_log(&fresh, &f.file).await;
    assert_eq!(verify(&fresh, &f.file).await, Ok(5));
    assert_eq!(log.append(reveal("t5")).await.expect("append"), 6);
}

#[tokio::test]
async fn a_broken_last_record_stops_the_open() {
    let f = fixture();
    let store = open_store(&f.db);
    {
        let log = open_log(&store, &f.file).await;
        log.append(reveal("t0")).await.expect("append");
    }
    let text = std::fs::read_to_string(&f.file).expect("read");
    std::fs::write(&f.file, text.replace("refund", "refuse")).expect("write");
    let error = AuditLog::open(Arc::clone(&store), hash_key(), &f.file, Durability::Synced)
        .await
        .expect_err("a tampered head must not be extended");
    assert!(error.to_string().contains("audit verify"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_file_fails_the_append_and_the_chain_heals_after() {
    for durability in [Durability::Synced, WRITTEN] {
        an_unwritable_file_fails_closed(durability).await;
    }
}

async fn an_unwritable_file_fails_closed(durability: Durability) {
    let f = fixture();
    let store = open_store_with(&f.db, durability);
    let log = open_log_with(&store, &f.file, durability).await;
    log.append(reveal("t0")).await.expect("append");

    // Replacing the path with a directory defeats root too (unlike chmod).
    std::fs::rename(&f.file, f.file.with_extension("old")).expect("move");
    std::fs::create_dir(&f.file).expect("mkdir");
    std::thread::sleep(file::PATH_CHECK_EVERY);
    let error = log.append(reveal("t1")).await.expect_err("fail closed");
    assert!(matches!(error, AuditError::Unavailable(_)), "{error}");

    // Back in place: the record that failed is written first, the chain
    // has no hole.
    std::fs::remove_dir(&f.file).expect("rmdir");
    std::fs::rename(f.file.with_extension("old"), &f.file).expect("move back");
    std::thread::sleep(file::PATH_CHECK_EVERY);
    assert_eq!(log.append(reveal("t2")).await.expect("append"), 3);
    assert_eq!(verify(&store, &f.file).await, Ok(3));
}

/// `[audit] purpose_mode`: as given (cut at 256 bytes), or as a keyed
/// hash that keeps equal purposes equal and shows nothing of the text.
#[tokio::test]
async fn purposes_are_recorded_as_given_or_as_their_keyed_hash() {
    let f = fixture();
    let store = open_store(&f.db);
    let log = open_log(&store, &f.file).await;
    assert_eq!(log.recorded_purpose("refund".into()), "refund");
    assert_eq!(
        log.recorded_purpose("p".repeat(300)).len(),
        MAX_PURPOSE_BYTES
    );

    let log = log.with_purpose_mode(PurposeMode::KeyedHash);
    let hashed = log.recorded_purpose("refund for Ivan Petrov".into());
    assert!(hashed.starts_with("hmac:"), "{hashed}");
    assert_eq!(hashed.len(), "hmac:".len() + record::LISTED_HASH_DIGITS);
    assert!(!hashed.contains("Ivan") && !hashed.contains("refund"));
    assert_eq!(
        log.recorded_purpose("refund for Ivan Petrov".into()),
        hashed,
        "equal purposes stay comparable"
    );
    assert_ne!(log.recorded_purpose("refund".into()), hashed);
    assert_eq!(log.recorded_purpose(String::new()), "");
    // Not the subject hash of the same bytes: the purpose has its label.
    let as_subject = ListedHash::of(&log.hasher.mac(&[b"subject", b"refund"]));
    assert_ne!(
        log.recorded_purpose("refund".into()),
        format!("hmac:{}", as_subject.as_str())
    );

    log.append(reveal("t0")).await.expect("append");
    let line = std::fs::read_to_string(&f.file).expect("read");
    assert!(
        line.contains(&format!(
            "\"purpose\":\"{}\"",
            log.recorded_purpose("refund".into())
        )),
        "{line}"
    );
}

#[test]
fn long_purposes_are_cut_at_a_character_boundary() {
    assert_eq!(truncated("ééé".into(), 3), "é");
    assert_eq!(truncated("abc".into(), 3), "abc");
}

#[tokio::test]
async fn a_lost_file_is_rebuilt_from_the_database() {
    let f = fixture();
    let store = open_store(&f.db);
    {
        let log = open_log(&store, &f.file).await;
        append_reveals(&log, 3).await;
    }
    // What an operator does with a damaged file: move it aside.
    std::fs::rename(&f.file, f.file.with_extension("damaged")).expect("move");
    let log = open_log(&store, &f.file).await;
    assert_eq!(verify(&store, &f.file).await, Ok(3));
    assert_eq!(log.append(reveal("t3")).await.expect("append"), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_written_record_is_in_the_file_when_append_returns_and_stored_at_close() {
    // What survives kill -9: the kernel has the file's copy before the
    // reveal, with no sync yet (the interval is an hour). The store's copy
    // follows in batches; close stores the rest.
    let f = fixture();
    let store = open_store_with(&f.db, WRITTEN);
    let log = open_log_with(&store, &f.file, WRITTEN).await;
    append_reveals(&log, 5).await;
    let lines = std::fs::read_to_string(&f.file)
        .expect("read")
        .lines()
        .count();
    assert_eq!(
        lines, 5,
        "every record is in the file before append returns"
    );
    let stored = store.audit_records(1, 10).await.expect("read").len();
    assert!(stored < 5, "the store's copy waits for a batch ({stored})");
    log.close().await;
    assert_eq!(store.audit_records(1, 10).await.expect("read").len(), 5);
    assert_eq!(verify(&store, &f.file).await, Ok(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_takes_deferred_records_in_batches_and_at_each_sync() {
    let f = fixture();
    let store = open_store_with(&f.db, WRITTEN);
    let log = open_log_with(&store, &f.file, WRITTEN).await;
    let batch = STORE_BATCH as usize;
    append_reveals(&log, batch + 1).await;
    // The interval is an hour: only the full batch wakes the sync thread.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let full_batch_stored = |stored: usize| stored > 0 && batch + 1 - stored < batch;
    while !full_batch_stored(store.audit_records(1, 2 * batch).await.expect("read").len()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the sync thread stores each full batch (of records or bytes)"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    log.close().await;

    let ticking = Durability::Written {
        sync_every: Duration::from_millis(20),
    };
    let log = open_log_with(&store, &f.file, ticking).await;
    log.append(reveal("after")).await.expect("append");
    let total = batch as u64 + 2;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while (store.audit_records(1, 2 * batch).await.expect("read").len() as u64) < total {
        assert!(
            std::time::Instant::now() < deadline,
            "the sync thread stores the record"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    log.close().await;
    assert_eq!(verify(&store, &f.file).await, Ok(total));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_log_stops_syncing() {
    // The sync thread's own flush writes nothing when nothing waits; it
    // must not mark the log as written and sync every tick forever.
    let f = fixture();
    let store = open_store_with(&f.db, WRITTEN);
    let ticking = Durability::Written {
        sync_every: Duration::from_millis(10),
    };
    let log = open_log_with(&store, &f.file, ticking).await;
    log.append(reveal("t0")).await.expect("append");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.audit_records(1, 10).await.expect("read").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the sync thread stores the record"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !log.health.sync_due(),
        "no sync is due with nothing written"
    );
    log.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_thread_hands_the_turn_to_a_caller_that_found_it_writing() {
    // A caller that finds the writer held queues its record and sleeps
    // until whoever holds the writer passes the turn on. The sync thread
    // holds it while it stores deferred records; if it let go without
    // passing the turn, queued reveals slept until their 50 ms re-check.
    let f = fixture();
    let store = open_store_with(&f.db, WRITTEN);
    let log = open_log_with(&store, &f.file, WRITTEN).await;
    let catch_up = store_catch_up_task(&log.writer, &log.queue, Arc::clone(&store));
    let held = log.writer.lock().await;
    let (reply, _answer) = oneshot::channel();
    log.queue.records.lock().push(Append {
        record: log.draft(reveal("t0")),
        reply,
    });
    let turn = log.queue.turn.notified();
    tokio::pin!(turn);
    turn.as_mut().enable();
    let sync_thread = tokio::task::spawn_blocking(catch_up);
    drop(held);
    sync_thread.await.expect("joins").expect("stores");
    assert!(
        futures_util::FutureExt::now_or_never(turn.as_mut()).is_some(),
        "the sync thread passed the turn on when it let go of the writer"
    );
    log.close().await;
    assert_eq!(verify(&store, &f.file).await, Ok(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_file_gets_no_new_record_before_the_store_has_the_old_ones() {
    // A rotation (move, then a new file at the path) followed by a crash
    // must not leave the store without records only the moved file holds.
    let f = fixture();
    let store = open_store_with(&f.db, WRITTEN);
    let log = open_log_with(&store, &f.file, WRITTEN).await;
    append_reveals(&log, 3).await;
    std::fs::rename(&f.file, f.file.with_extension("1")).expect("rotate");
    std::thread::sleep(file::PATH_CHECK_EVERY);
    assert_eq!(log.append(reveal("t3")).await.expect("append"), 4);
    assert_eq!(
        store.audit_records(1, 10).await.expect("read").len(),
        4,
        "the store took the old file's records first"
    );
    let new_file = std::fs::read_to_string(&f.file).expect("new file");
    assert_eq!(new_file.lines().count(), 1);
    assert!(new_file.contains("\"seq\":4,"), "{new_file}");
    drop(log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_cancelled_mid_append_strand_no_one() {
    // A gRPC call can be dropped while its handler leads a group (synced,
    // the leader awaits the store's writer thread); the records queued
    // behind it must still be written and answered.
    let f = fixture();
    let store = open_store(&f.db);
    let log = Arc::new(open_log(&store, &f.file).await);
    let mut kept = Vec::new();
    let mut aborted = Vec::new();
    for i in 0..300 {
        let log = Arc::clone(&log);
        let task = tokio::spawn(async move { log.append(reveal(&format!("t{i}"))).await });
        if i % 3 == 0 {
            aborted.push(task);
        } else {
            kept.push(task);
        }
        if i % 30 == 29 {
            // Let some of them start leading, then cancel them mid-write.
            tokio::time::sleep(Duration::from_micros(300)).await;
            aborted.drain(..).for_each(|task| task.abort());
        }
    }
    for task in kept {
        task.await.expect("task").expect("append");
    }
    // Aborted appends may or may not have been written; the chain is
    // whole either way, and holds at least every answered record.
    let records = verify(&store, &f.file).await.expect("sound chain");
    assert!((200..=300).contains(&records), "{records} records");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_writes_what_was_queued_and_refuses_after() {
    let f = fixture();
    let store = open_store_with(&f.db, WRITTEN);
    let log = open_log_with(&store, &f.file, WRITTEN).await;
    log.append(reveal("t0")).await.expect("append");
    log.close().await;
    let error = log.append(reveal("t1")).await.expect_err("closed");
    assert!(matches!(error, AuditError::Unavailable(_)), "{error}");
    assert_eq!(verify(&store, &f.file).await, Ok(1));
}

/// HMAC-SHA256 under the test's audit-hash key, computed here with the
/// `hmac` crate directly (not through `KeyedMac`), over the length-prefixed
/// parts `KeyedMac` documents.
fn reference_mac(label: &[u8], value: &[u8]) -> [u8; 32] {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&[7; 32]).expect("any key length");
    for part in [label, value] {
        mac.update(&(part.len() as u32).to_be_bytes());
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

#[tokio::test]
async fn records_list_the_first_128_bits_of_each_keyed_hash() {
    // An investigator who holds the audit-hash key finds a token's records
    // by the first 32 hex digits of its HMAC; records of earlier versions
    // list all 64, which begin with the same digits.
    let f = fixture();
    let store = open_store(&f.db);
    let log = open_log(&store, &f.file).await;
    log.append(reveal("4111 1111 1111 1111"))
        .await
        .expect("append");
    log.close().await;
    let text = std::fs::read_to_string(&f.file).expect("read file");
    let record: AuditRecord = serde_json::from_str(text.trim_end()).expect("one record");
    let token = hex::encode(reference_mac(b"token", b"4111 1111 1111 1111"));
    let subject = hex::encode(reference_mac(b"subject", &[9; 32]));
    assert_eq!(record.token_hashes, vec![token[..32].to_string()]);
    assert_eq!(record.subject_hashes, vec![subject[..32].to_string()]);
    assert_eq!(record.hash().len(), 64, "the chain hash stays whole");
}
