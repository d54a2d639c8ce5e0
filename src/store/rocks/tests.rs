//! Unit tests of the RocksDB store as a whole (the conformance suite, the
//! key layout, reopening).

use super::*;
use crate::crypto::IndexKey;
use crate::store::{IndexEntry, InsertOutcome, NewToken, Store, TokenRecord};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rocksdb_passes_the_store_conformance_suite() {
    let root = tempfile::tempdir().expect("tempdir");
    let counter = std::sync::atomic::AtomicUsize::new(0);
    let options = RocksOptions {
        sync_writes: true,
        sync_audit: true,
        block_cache_bytes: 1 << 20,
    };
    super::super::conformance::run_all(|| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let store = RocksStore::open(&root.path().join(n.to_string()), &options).expect("open");
        std::future::ready(Arc::new(store) as Arc<dyn Store>)
    })
    .await;
}

#[tokio::test]
async fn every_token_is_listed_once_under_its_subject() {
    let root = tempfile::tempdir().expect("tempdir");
    let options = RocksOptions::for_tests();
    let store = RocksStore::open(root.path(), &options).expect("open");
    let subject = SubjectHash([3; 32]);
    let record = |tag: u8| TokenRecord {
        subject,
        format: "text".into(),
        created_at: 1,
        expires_at: None,
        sealed: crate::crypto::Sealed {
            nonce: [tag; crate::crypto::NONCE_LEN],
            ciphertext: vec![tag; 20],
        },
    };
    let batch = vec![
        NewToken {
            token: "det".into(),
            record: record(1),
            index_key: Some(IndexKey([3; 64])),
        },
        NewToken {
            token: "rnd".into(),
            record: record(2),
            index_key: None,
        },
    ];
    let key = WrappedKey {
        kind: crate::kek::KekKind::Local,
        kek_version: 1,
        ciphertext: vec![3; 40],
    };
    store
        .insert_subject_key(subject, key.clone())
        .await
        .expect("key");
    assert_eq!(
        store
            .insert_tokens(batch, &[(subject, &key)], 1)
            .await
            .expect("insert"),
        InsertOutcome::Committed
    );
    let cf = store.inner.cf(CF_INDEX).expect("cf");
    let listed: Vec<String> = store
        .inner
        .db
        .prefix_iterator_cf(cf, subject.as_bytes())
        .map(|entry| entry.expect("entry"))
        .take_while(|(key, _)| key.starts_with(subject.as_bytes()))
        .map(|(_, value)| IndexEntry::decode(&value).expect("entry").token)
        .collect();
    assert_eq!(listed, ["det", "rnd"], "two entries per token, all listed");
    let counts = store.counts().expect("counts");
    assert_eq!((counts.tokens, counts.index_entries), (2, 1));
}

#[tokio::test]
async fn data_survives_reopening() {
    let root = tempfile::tempdir().expect("tempdir");
    let options = RocksOptions {
        sync_writes: true,
        sync_audit: true,
        block_cache_bytes: 1 << 20,
    };
    {
        let store = RocksStore::open(root.path(), &options).expect("open");
        let subject = SubjectHash([1; 32]);
        let key = WrappedKey {
            kind: crate::kek::KekKind::Local,
            kek_version: 1,
            ciphertext: vec![1; 40],
        };
        store
            .insert_subject_key(subject, key)
            .await
            .expect("insert");
    }
    let store = RocksStore::open(root.path(), &options).expect("reopen");
    assert!(store
        .subject_keys(&[SubjectHash([1; 32])])
        .await
        .expect("read")[0]
        .is_some());
}

/// A store from before the key instance (its wrapped keys in the vault
/// instance's `subjects` family) opens with every key readable, and the
/// keys are then in the key instance only: no file of the vault
/// instance holds one, so a later forget's key purge covers every copy.
#[tokio::test]
async fn a_store_with_keys_in_the_vault_instance_moves_them_to_the_key_instance() {
    let root = tempfile::tempdir().expect("tempdir");
    let wrapped = |n: u8| WrappedKey {
        kind: crate::kek::KekKind::Local,
        kek_version: 1,
        // Bytes without repeats, which no compression shortens, so a
        // search of the files finds them verbatim.
        ciphertext: (0..40u32)
            .map(|i| ((u32::from(n) * 40 + i).wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect(),
    };
    let files_holding = |n: u8| -> Vec<std::ffi::OsString> {
        let needle = wrapped(n).ciphertext;
        std::fs::read_dir(root.path())
            .expect("list")
            .flatten()
            .filter(|entry| !entry.path().is_dir())
            .filter(|entry| {
                std::fs::read(entry.path())
                    .expect("read")
                    .windows(needle.len())
                    .any(|w| w == needle.as_slice())
            })
            .map(|entry| entry.file_name())
            .collect()
    };
    {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let legacy = COLUMN_FAMILIES.iter().copied().chain([CF_SUBJECTS]);
        let db = DB::open_cf(&options, root.path(), legacy).expect("legacy layout");
        let subjects = db.cf_handle(CF_SUBJECTS).expect("cf");
        for n in 0..3u8 {
            db.put_cf(subjects, [n; 32], wrapped(n).encode())
                .expect("put");
        }
        // One key in a table file, the others only in the WAL.
        db.flush_cf(subjects).expect("flush");
        db.put_cf(subjects, [9u8; 32], wrapped(9).encode())
            .expect("put");
    }
    for n in [0u8, 1, 2, 9] {
        assert!(
            !files_holding(n).is_empty(),
            "the search would prove nothing"
        );
    }
    let store = RocksStore::open(root.path(), &RocksOptions::for_tests()).expect("open");
    let subjects: Vec<SubjectHash> = [0u8, 1, 2, 9].map(|n| SubjectHash([n; 32])).to_vec();
    let keys = store.subject_keys(&subjects).await.expect("read");
    let expected: Vec<Option<WrappedKey>> = [0u8, 1, 2, 9].map(|n| Some(wrapped(n))).to_vec();
    assert_eq!(keys, expected);
    let families = DB::list_cf(&Options::default(), root.path()).expect("families");
    assert!(!families.iter().any(|f| f == CF_SUBJECTS), "{families:?}");
    for n in [0u8, 1, 2, 9] {
        let holders = files_holding(n);
        assert!(
            holders.is_empty(),
            "the vault instance still holds a key in {holders:?}"
        );
    }
    drop(store);
    // Reopening finds the new layout and moves nothing.
    let store = RocksStore::open(root.path(), &RocksOptions::for_tests()).expect("reopen");
    assert_eq!(store.subject_keys(&subjects).await.expect("read"), expected);
}

/// Forgets queued together (the writer writes them as one batch per
/// instance) erase each subject's tokens once: a subject named twice is
/// erased by one of the two, and the other subjects' counts are their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_forgets_each_erase_their_own_subject_once() {
    let root = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(RocksStore::open(root.path(), &RocksOptions::for_tests()).expect("open"));
    let key = |n: u8| WrappedKey {
        kind: crate::kek::KekKind::Local,
        kek_version: 1,
        ciphertext: vec![n; 40],
    };
    for n in 0..8u8 {
        let subject = SubjectHash([n; 32]);
        store
            .insert_subject_key(subject, key(n))
            .await
            .expect("key");
        let batch: Vec<NewToken> = (0..=n)
            .map(|i| NewToken {
                token: format!("token-{n}-{i}"),
                record: TokenRecord {
                    subject,
                    format: "text".into(),
                    created_at: 1,
                    expires_at: None,
                    sealed: crate::crypto::Sealed {
                        nonce: [i; crate::crypto::NONCE_LEN],
                        ciphertext: vec![i; 20],
                    },
                },
                index_key: None,
            })
            .collect();
        let outcome = store
            .insert_tokens(batch, &[(subject, &key(n))], 1)
            .await
            .expect("insert");
        assert_eq!(outcome, InsertOutcome::Committed);
    }
    let hasher: crate::store::TombstoneHasher = Arc::new(|token: &str| {
        let mut out = [0u8; 32];
        out[..token.len().min(32)].copy_from_slice(&token.as_bytes()[..token.len().min(32)]);
        out
    });
    // Subject 3 twice.
    let targets = [0u8, 1, 2, 3, 3, 4, 5, 6, 7];
    let calls = targets.map(|n| {
        let (store, hasher) = (Arc::clone(&store), Arc::clone(&hasher));
        tokio::spawn(async move { store.forget_subject(SubjectHash([n; 32]), hasher, 2).await })
    });
    let mut erased = Vec::new();
    for call in calls {
        erased.push(call.await.expect("join").expect("forget"));
    }
    let expected_once = |n: u8| u64::from(n) + 1;
    for (target, count) in targets.iter().zip(&erased) {
        if *target != 3 {
            assert_eq!(*count, expected_once(*target), "subject {target}");
        }
    }
    let threes: Vec<u64> = erased[3..5].to_vec();
    assert!(
        threes == [4, 0] || threes == [0, 4],
        "subject 3, forgotten twice, erased once: {threes:?}"
    );
    let keys = store
        .subject_keys(&(0..8u8).map(|n| SubjectHash([n; 32])).collect::<Vec<_>>())
        .await
        .expect("keys");
    assert!(keys.iter().all(Option::is_none), "every key is deleted");
    assert_eq!(store.counts().expect("counts").tokens, 0);
}

/// A backup whose key half is older than its vault half (the backup
/// stopped between the two) is refused before anything is overwritten:
/// restored, its newest tokens would lack their keys.
#[tokio::test]
async fn a_backup_whose_keys_are_older_than_its_vault_is_refused() {
    let root = tempfile::tempdir().expect("tempdir");
    let (db_dir, backups) = (root.path().join("db"), root.path().join("backups"));
    let store = RocksStore::open(&db_dir, &RocksOptions::for_tests()).expect("open");
    let key = WrappedKey {
        kind: crate::kek::KekKind::Local,
        kek_version: 1,
        ciphertext: vec![7; 40],
    };
    let subject = SubjectHash([7; 32]);
    store
        .insert_subject_key(subject, key.clone())
        .await
        .expect("key");
    store.create_backup(&backups).await.expect("backup");
    // A second backup that stops after the vault half, a second later
    // (backup times are in seconds).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let mut vault_half = backup::open_backup_engine(&backups).expect("engine");
    vault_half
        .create_new_backup_flush(&store.inner.db, true)
        .expect("vault half");
    drop(store);
    let error = RocksStore::restore_latest_backup(&backups, &db_dir).expect_err("refused");
    assert!(error.to_string().contains("incomplete"), "{error}");
    // Nothing was overwritten: the store opens with its key.
    let store = RocksStore::open(&db_dir, &RocksOptions::for_tests()).expect("reopen");
    assert_eq!(
        store.subject_keys(&[subject]).await.expect("read"),
        vec![Some(key)]
    );
}
