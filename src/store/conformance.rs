//! The behaviour every [`Store`] must show, as functions over `&dyn Store`.
//! Each backend's tests call every function here.

use std::sync::Arc;

use super::*;
use crate::crypto::{Sealed, NONCE_LEN};
use crate::kek::KekKind;

fn wrapped(tag: u8) -> WrappedKey {
    WrappedKey {
        kind: KekKind::Local,
        kek_version: 1,
        ciphertext: vec![tag; 60],
    }
}

fn record(subject: u8, expires_at: Option<i64>) -> TokenRecord {
    TokenRecord {
        subject: SubjectHash([subject; 32]),
        format: "text".into(),
        created_at: 100,
        expires_at,
        sealed: Sealed {
            nonce: [subject; NONCE_LEN],
            ciphertext: vec![subject; 20],
        },
    }
}

fn new_token(token: &str, subject: u8, index: Option<u8>) -> NewToken {
    NewToken {
        token: token.into(),
        record: record(subject, None),
        index_key: index.map(|tag| IndexKey([tag; 64])),
    }
}

/// Inserts a batch after creating its subjects' keys, as the vault does
/// (a shared store refuses tokens of a subject without a key).
async fn insert(store: &dyn Store, batch: Vec<NewToken>, now: i64) -> InsertOutcome {
    let subjects: std::collections::BTreeSet<[u8; 32]> =
        batch.iter().map(|item| item.record.subject.0).collect();
    let mut keys = Vec::new();
    for subject in subjects {
        let key = store
            .insert_subject_key(SubjectHash(subject), wrapped(subject[0]))
            .await
            .expect("subject key");
        keys.push((SubjectHash(subject), key));
    }
    let sealed_under: Vec<(SubjectHash, &WrappedKey)> =
        keys.iter().map(|(subject, key)| (*subject, key)).collect();
    store
        .insert_tokens(batch, &sealed_under, now)
        .await
        .expect("insert")
}

pub async fn subject_key_first_writer_wins(store: &dyn Store) {
    let subject = SubjectHash([1; 32]);
    assert_eq!(
        store.subject_keys(&[subject]).await.expect("read"),
        vec![None]
    );
    assert_eq!(
        store
            .insert_subject_key(subject, wrapped(1))
            .await
            .expect("insert"),
        wrapped(1)
    );
    assert_eq!(
        store
            .insert_subject_key(subject, wrapped(2))
            .await
            .expect("insert"),
        wrapped(1)
    );
    assert_eq!(
        store.subject_keys(&[subject]).await.expect("read"),
        vec![Some(wrapped(1))]
    );
}

pub async fn system_key_first_writer_wins(store: &dyn Store) {
    assert_eq!(store.system_key().await.expect("read"), None);
    assert_eq!(
        store.init_system_key(wrapped(5)).await.expect("init"),
        wrapped(5)
    );
    assert_eq!(
        store.init_system_key(wrapped(6)).await.expect("init"),
        wrapped(5)
    );
    assert_eq!(store.system_key().await.expect("read"), Some(wrapped(5)));
}

pub async fn inserted_tokens_read_back(store: &dyn Store) {
    let batch = vec![new_token("a1", 1, Some(1)), new_token("a2", 1, None)];
    assert_eq!(insert(store, batch, 100).await, InsertOutcome::Committed);
    let records = store
        .token_records(&["a1".into(), "missing".into(), "a2".into()])
        .await
        .expect("read");
    assert_eq!(records[0], Some(record(1, None)));
    assert_eq!(records[1], None);
    assert_eq!(records[2], Some(record(1, None)));
    let entries = store
        .index_entries(&[IndexKey([1; 64]), IndexKey([9; 64])])
        .await
        .expect("read");
    assert_eq!(
        entries[0],
        Some(IndexEntry {
            token: "a1".into(),
            expires_at: None
        })
    );
    assert_eq!(entries[1], None);
}

pub async fn conflicting_batch_stores_nothing(store: &dyn Store) {
    let first = vec![new_token("b1", 2, Some(2))];
    assert_eq!(insert(store, first, 100).await, InsertOutcome::Committed);
    let second = vec![
        new_token("b2", 2, None),
        new_token("b1", 2, None),
        new_token("b3", 2, Some(2)),
    ];
    let outcome = insert(store, second, 100).await;
    let InsertOutcome::Conflicts(conflicts) = outcome else {
        panic!("expected conflicts, got {outcome:?}");
    };
    assert!(conflicts.contains(&Conflict::TokenTaken { item: 1 }));
    assert!(conflicts.contains(&Conflict::IndexTaken {
        item: 2,
        existing: IndexEntry {
            token: "b1".into(),
            expires_at: None
        },
    }));
    let records = store
        .token_records(&["b2".into(), "b3".into()])
        .await
        .expect("read");
    assert_eq!(
        records,
        vec![None, None],
        "a conflicting batch must store nothing"
    );
}

pub async fn repeated_token_in_one_batch_is_a_conflict(store: &dyn Store) {
    let batch = vec![new_token("c1", 3, None), new_token("c1", 3, None)];
    assert_eq!(
        insert(store, batch, 100).await,
        InsertOutcome::Conflicts(vec![Conflict::TokenTaken { item: 1 }])
    );
}

pub async fn expired_index_entry_can_be_replaced(store: &dyn Store) {
    let mut old = new_token("d1", 4, Some(4));
    old.record.expires_at = Some(150);
    assert_eq!(
        insert(store, vec![old], 100).await,
        InsertOutcome::Committed
    );
    let again = vec![new_token("d2", 4, Some(4))];
    assert!(matches!(
        insert(store, again.clone(), 120).await,
        InsertOutcome::Conflicts(_)
    ));
    assert_eq!(insert(store, again, 150).await, InsertOutcome::Committed);
    let entry = store
        .index_entries(&[IndexKey([4; 64])])
        .await
        .expect("read");
    assert_eq!(entry[0].as_ref().map(|e| e.token.as_str()), Some("d2"));
}

pub async fn concurrent_writers_of_one_index_key_store_one_token(store: std::sync::Arc<dyn Store>) {
    store
        .insert_subject_key(SubjectHash([5; 32]), wrapped(5))
        .await
        .expect("key");
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = std::sync::Arc::clone(&store);
            tokio::spawn(async move {
                let batch = vec![new_token(&format!("e{i}"), 5, Some(5))];
                store
                    .insert_tokens(batch, &[(SubjectHash([5; 32]), &wrapped(5))], 100)
                    .await
                    .expect("insert")
            })
        })
        .collect();
    let mut committed = 0;
    for task in tasks {
        if task.await.expect("task") == InsertOutcome::Committed {
            committed += 1;
        }
    }
    assert_eq!(
        committed, 1,
        "exactly one writer may create the index entry"
    );
}

pub async fn subject_keys_scan_in_pages(store: &dyn Store) {
    for tag in [3u8, 1, 2] {
        store
            .insert_subject_key(SubjectHash([tag; 32]), wrapped(tag))
            .await
            .expect("insert");
    }
    let first = store.subject_keys_after(None, 2).await.expect("scan");
    assert_eq!(
        first,
        vec![
            (SubjectHash([1; 32]), wrapped(1)),
            (SubjectHash([2; 32]), wrapped(2))
        ]
    );
    let rest = store
        .subject_keys_after(Some(SubjectHash([2; 32])), 2)
        .await
        .expect("scan");
    assert_eq!(rest, vec![(SubjectHash([3; 32]), wrapped(3))]);
    assert!(store
        .subject_keys_after(Some(SubjectHash([3; 32])), 2)
        .await
        .expect("scan")
        .is_empty());
}

pub async fn keys_are_replaced_only_if_unchanged(store: &dyn Store) {
    let subject = SubjectHash([7; 32]);
    assert!(
        !store
            .replace_subject_key(subject, &wrapped(1), wrapped(2))
            .await
            .expect("replace"),
        "a missing key is never created by a replace"
    );
    assert_eq!(
        store.subject_keys(&[subject]).await.expect("read"),
        vec![None]
    );
    store
        .insert_subject_key(subject, wrapped(1))
        .await
        .expect("insert");
    assert!(!store
        .replace_subject_key(subject, &wrapped(9), wrapped(2))
        .await
        .expect("replace"));
    assert!(store
        .replace_subject_key(subject, &wrapped(1), wrapped(2))
        .await
        .expect("replace"));
    assert_eq!(
        store.subject_keys(&[subject]).await.expect("read"),
        vec![Some(wrapped(2))]
    );

    store.init_system_key(wrapped(5)).await.expect("init");
    assert!(!store
        .replace_system_key(&wrapped(6), wrapped(7))
        .await
        .expect("replace"));
    assert!(store
        .replace_system_key(&wrapped(5), wrapped(7))
        .await
        .expect("replace"));
    assert_eq!(store.system_key().await.expect("read"), Some(wrapped(7)));
}

pub async fn rotation_marker_is_stored_and_cleared(store: &dyn Store) {
    assert_eq!(store.kek_rotation().await.expect("read"), None);
    store.set_kek_rotation(Some(4)).await.expect("set");
    assert_eq!(store.kek_rotation().await.expect("read"), Some(4));
    store.set_kek_rotation(None).await.expect("clear");
    assert_eq!(store.kek_rotation().await.expect("read"), None);
}

pub async fn audit_records_read_back_in_sequence_order(store: &dyn Store) {
    store.claim_audit_chain().await.expect("claim the chain");
    assert_eq!(store.last_audit_record().await.expect("last"), None);
    let record = |seq: u64| (seq, format!("{{\"seq\":{seq}}}").into_bytes());
    // Sequence 256 sorts after 2 only with big-endian keys.
    store
        .append_audit(vec![record(1), record(2), record(256)])
        .await
        .expect("append");
    store.append_audit(vec![record(3)]).await.expect("append");
    assert_eq!(
        store.last_audit_record().await.expect("last"),
        Some(record(256))
    );
    assert_eq!(
        store.audit_records(2, 2).await.expect("scan"),
        vec![record(2), record(3)]
    );
    assert_eq!(
        store.audit_records(4, 10).await.expect("scan"),
        vec![record(256)]
    );
    // A retry stores the same bytes again without harm.
    store.append_audit(vec![record(3)]).await.expect("retry");
    assert_eq!(store.audit_records(0, 10).await.expect("scan").len(), 4);
}

/// Runs the whole suite against fresh stores from `make`.
fn hasher() -> TombstoneHasher {
    Arc::new(|token: &str| {
        let mut hash = [0u8; 32];
        for (i, byte) in token.bytes().enumerate().take(32) {
            hash[i] = byte;
        }
        hash
    })
}

pub async fn forget_erases_one_subject_and_leaves_tombstones(store: &dyn Store) {
    for subject in [7u8, 8] {
        store
            .insert_subject_key(SubjectHash([subject; 32]), wrapped(subject))
            .await
            .expect("key");
    }
    let batch = |subject: u8, prefix: &str| {
        vec![
            new_token(&format!("{prefix}-det"), subject, Some(subject)),
            new_token(&format!("{prefix}-rnd1"), subject, None),
            new_token(&format!("{prefix}-rnd2"), subject, None),
        ]
    };
    for (subject, prefix) in [(7, "gone"), (8, "kept")] {
        assert_eq!(
            store
                .insert_tokens(
                    batch(subject, prefix),
                    &[(SubjectHash([subject; 32]), &wrapped(subject))],
                    100
                )
                .await
                .expect("insert"),
            InsertOutcome::Committed
        );
    }
    let forgotten = SubjectHash([7; 32]);
    assert_eq!(
        store
            .forget_subject(forgotten, hasher(), 200)
            .await
            .expect("forget"),
        3
    );
    store.purge().await.expect("purge");

    let gone: Vec<String> = ["gone-det", "gone-rnd1", "gone-rnd2"]
        .map(String::from)
        .into();
    let kept: Vec<String> = ["kept-det", "kept-rnd1", "kept-rnd2"]
        .map(String::from)
        .into();
    assert_eq!(
        store.token_records(&gone).await.expect("read"),
        vec![None; 3]
    );
    assert!(store
        .token_records(&kept)
        .await
        .expect("read")
        .iter()
        .all(Option::is_some));
    assert_eq!(
        store
            .subject_keys(&[forgotten, SubjectHash([8; 32])])
            .await
            .expect("read"),
        vec![None, Some(wrapped(8))]
    );
    assert_eq!(
        store
            .index_entries(&[IndexKey([7; 64]), IndexKey([8; 64])])
            .await
            .expect("read")
            .iter()
            .map(Option::is_some)
            .collect::<Vec<_>>(),
        vec![false, true]
    );
    let tombstones = |tokens: &[String]| tokens.iter().map(|t| hasher()(t)).collect::<Vec<_>>();
    assert_eq!(
        store.tombstones(&tombstones(&gone)).await.expect("read"),
        vec![true; 3]
    );
    assert_eq!(
        store.tombstones(&tombstones(&kept)).await.expect("read"),
        vec![false; 3]
    );
    assert!(store
        .subject_tokens(forgotten, None, 10)
        .await
        .expect("list")
        .tokens
        .is_empty());
    // Idempotent: nothing is left to erase.
    assert_eq!(
        store
            .forget_subject(forgotten, hasher(), 300)
            .await
            .expect("forget again"),
        0
    );
}

pub async fn subject_tokens_come_in_pages(store: &dyn Store) {
    let subject = SubjectHash([4; 32]);
    let mut batch: Vec<NewToken> = (0..5)
        .map(|i| new_token(&format!("p{i}"), 4, None))
        .collect();
    batch.push(new_token("p-det", 4, Some(4)));
    batch.push(new_token("other", 5, None));
    assert_eq!(insert(store, batch, 100).await, InsertOutcome::Committed);
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = store
            .subject_tokens(subject, cursor, 2)
            .await
            .expect("page");
        pages += 1;
        assert!(page.tokens.len() <= 2);
        for (token, record) in page.tokens {
            assert_eq!(record.subject, subject);
            seen.push(token);
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, ["p-det", "p0", "p1", "p2", "p3", "p4"]);
    assert_eq!(pages, 3);

    // A page limit of 0 is taken as 1: an export still makes progress
    // instead of ending at an empty first page.
    let page = store.subject_tokens(subject, None, 0).await.expect("page");
    assert_eq!(page.tokens.len(), 1);
    assert!(page.next.is_some());
}

pub async fn run_all<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = std::sync::Arc<dyn Store>>,
{
    subject_key_first_writer_wins(make().await.as_ref()).await;
    system_key_first_writer_wins(make().await.as_ref()).await;
    inserted_tokens_read_back(make().await.as_ref()).await;
    conflicting_batch_stores_nothing(make().await.as_ref()).await;
    repeated_token_in_one_batch_is_a_conflict(make().await.as_ref()).await;
    expired_index_entry_can_be_replaced(make().await.as_ref()).await;
    concurrent_writers_of_one_index_key_store_one_token(make().await).await;
    subject_keys_scan_in_pages(make().await.as_ref()).await;
    keys_are_replaced_only_if_unchanged(make().await.as_ref()).await;
    rotation_marker_is_stored_and_cleared(make().await.as_ref()).await;
    forget_erases_one_subject_and_leaves_tombstones(make().await.as_ref()).await;
    subject_tokens_come_in_pages(make().await.as_ref()).await;
    audit_records_read_back_in_sequence_order(make().await.as_ref()).await;
    key_rotation_leaves_tokens_readable(make().await.as_ref()).await;
    tokens_sealed_under_a_key_that_is_not_the_subjects_are_refused(make().await.as_ref()).await;
    ledger_marks_read_back_in_sequence_order(make().await.as_ref()).await;
}

/// Applied erasure-ledger entries read back in sequence order (past 255,
/// where a byte-wise order of unpadded numbers would differ); `replace`
/// drops the earlier ones.
pub async fn ledger_marks_read_back_in_sequence_order(store: &dyn Store) {
    assert!(store.ledger_applied().await.expect("marks").is_empty());
    let mark = |seq: u64| (seq, [(seq % 251) as u8; 32]);
    store
        .mark_ledger_applied(vec![mark(300), mark(2)], false)
        .await
        .expect("mark");
    store
        .mark_ledger_applied(vec![mark(1), mark(2)], false)
        .await
        .expect("mark again");
    assert_eq!(
        store.ledger_applied().await.expect("marks"),
        vec![mark(1), mark(2), mark(300)]
    );
    store
        .mark_ledger_applied(vec![mark(7)], true)
        .await
        .expect("replace");
    assert_eq!(store.ledger_applied().await.expect("marks"), vec![mark(7)]);
}

/// A rewrapped subject key (KEK rotation) keeps the subject's tokens and
/// still admits new ones.
pub async fn key_rotation_leaves_tokens_readable(store: &dyn Store) {
    let subject = SubjectHash([6; 32]);
    assert_eq!(
        insert(store, vec![new_token("r1", 6, Some(6))], 100).await,
        InsertOutcome::Committed
    );
    assert!(store
        .replace_subject_key(subject, &wrapped(6), wrapped(16))
        .await
        .expect("replace"));
    assert_eq!(
        store
            .insert_tokens(
                vec![new_token("r2", 6, None)],
                &[(subject, &wrapped(16))],
                100
            )
            .await
            .expect("insert"),
        InsertOutcome::Committed
    );
    assert!(store
        .token_records(&["r1".into(), "r2".into()])
        .await
        .expect("read")
        .iter()
        .all(Option::is_some));
}

/// A batch sealed under a key that is not the subject's stored one (the
/// subject forgotten meanwhile, forgotten and given a new key, or its key
/// rewrapped) stores nothing and fails with `SubjectErased`; under a
/// destroyed key its tokens would never open again. A batch that names no
/// key for a subject is a misuse.
pub async fn tokens_sealed_under_a_key_that_is_not_the_subjects_are_refused(store: &dyn Store) {
    let subject = SubjectHash([9; 32]);
    let insert = |token: &'static str, key: Option<WrappedKey>| async move {
        let named: Vec<(SubjectHash, &WrappedKey)> =
            key.as_ref().map(|key| (subject, key)).into_iter().collect();
        store
            .insert_tokens(vec![new_token(token, 9, None)], &named, 100)
            .await
    };
    let refused = |token: &'static str, outcome: Result<InsertOutcome, StoreError>| {
        assert!(
            matches!(outcome, Err(StoreError::SubjectErased)),
            "{token}: got {outcome:?}"
        );
    };
    refused("t0", insert("t0", Some(wrapped(9))).await);
    store
        .insert_subject_key(subject, wrapped(9))
        .await
        .expect("key");
    assert_eq!(
        insert("t1", Some(wrapped(9))).await.expect("insert"),
        InsertOutcome::Committed
    );
    store
        .forget_subject(subject, hasher(), 200)
        .await
        .expect("forget");
    refused("t2", insert("t2", Some(wrapped(9))).await);
    store
        .insert_subject_key(subject, wrapped(19))
        .await
        .expect("new key");
    refused("t3", insert("t3", Some(wrapped(9))).await);
    assert_eq!(
        insert("t4", Some(wrapped(19))).await.expect("insert"),
        InsertOutcome::Committed
    );
    assert!(store
        .replace_subject_key(subject, &wrapped(19), wrapped(29))
        .await
        .expect("rewrap"));
    refused("t5", insert("t5", Some(wrapped(19))).await);
    assert_eq!(
        insert("t6", Some(wrapped(29))).await.expect("insert"),
        InsertOutcome::Committed
    );
    let unnamed = insert("t7", None).await;
    assert!(
        matches!(unnamed, Err(StoreError::Misuse(_))),
        "a batch must name its sealing key: {unnamed:?}"
    );
    let tokens: Vec<String> = (0..8).map(|i| format!("t{i}")).collect();
    let present: Vec<bool> = store
        .token_records(&tokens)
        .await
        .expect("read")
        .iter()
        .map(Option::is_some)
        .collect();
    assert_eq!(
        present,
        [false, false, false, false, true, false, true, false]
    );
}
