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
