//! Group commit (`group`) against a real server: a call that fails in a
//! group fails alone and stores nothing, a forget on another replica fails
//! only its subject's call, a caller gone while queued stores nothing, and
//! deterministic races across three replicas still give one token a value.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::tests::{fresh_database, new_token, options, wrapped};
use super::*;

/// Long enough that calls started together join one group.
const GATHER: Duration = Duration::from_millis(50);

async fn open_with(url: &str, replica: &str, group: GroupBounds) -> Arc<PostgresStore> {
    let options = PostgresOptions {
        group,
        ..options(url, replica)
    };
    Arc::new(
        PostgresStore::open(&options)
            .await
            .expect("open the postgres store"),
    )
}

fn gathering() -> GroupBounds {
    GroupBounds {
        wait: GATHER,
        ..GroupBounds::default()
    }
}

/// (group transactions committed, calls they stored).
fn committed(store: &PostgresStore) -> (u64, u64) {
    let stats = &store.group_writer.as_ref().expect("grouping is on").stats;
    (
        stats.transactions.load(Ordering::SeqCst),
        stats.calls.load(Ordering::SeqCst),
    )
}

/// Runs the calls at once (one task each); their outcomes in order.
async fn together(
    store: &Arc<PostgresStore>,
    calls: Vec<(Vec<NewToken>, SubjectHash, WrappedKey)>,
) -> Vec<Result<InsertOutcome, StoreError>> {
    let tasks: Vec<_> = calls
        .into_iter()
        .map(|(batch, subject, key)| {
            let store = Arc::clone(store);
            tokio::spawn(async move { store.insert_tokens(batch, &[(subject, &key)], 100).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.expect("task"));
    }
    outcomes
}

async fn present(store: &PostgresStore, tokens: &[&str]) -> Vec<bool> {
    let tokens: Vec<String> = tokens.iter().map(|t| t.to_string()).collect();
    store
        .token_records(&tokens)
        .await
        .expect("read")
        .iter()
        .map(Option::is_some)
        .collect()
}

/// A raw connection to the test database, to hold a key row's lock.
async fn raw(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_call_fails_alone_and_the_rest_of_its_group_commits_once() {
    let url = fresh_database().await;
    let store = open_with(&url, "a", gathering()).await;
    let (subject, key) = (SubjectHash([5; 32]), wrapped(5));
    store
        .insert_subject_key(subject, key.clone())
        .await
        .expect("key");
    let stored = store
        .insert_tokens(vec![new_token("old", 5, Some(50))], &[(subject, &key)], 100)
        .await
        .expect("insert");
    assert_eq!(stored, InsertOutcome::Committed);
    let before = committed(&store);

    // Six good calls, and one whose second item's value was stored first.
    let mut calls: Vec<_> = (0..6u8)
        .map(|i| {
            (
                vec![new_token(&format!("ok{i}"), 5, Some(i))],
                subject,
                key.clone(),
            )
        })
        .collect();
    calls.push((
        vec![
            new_token("late-1", 5, Some(60)),
            new_token("late-2", 5, Some(50)),
        ],
        subject,
        key.clone(),
    ));
    let outcomes = together(&store, calls).await;
    for (i, outcome) in outcomes[..6].iter().enumerate() {
        assert_eq!(
            outcome.as_ref().expect("ok call"),
            &InsertOutcome::Committed,
            "ok{i}"
        );
    }
    match &outcomes[6] {
        Ok(InsertOutcome::Conflicts(conflicts)) => assert_eq!(
            conflicts,
            &[Conflict::IndexTaken {
                item: 1,
                existing: IndexEntry {
                    token: "old".into(),
                    expires_at: None
                }
            }]
        ),
        other => panic!("the late call: {other:?}"),
    }
    assert_eq!(
        present(&store, &["ok0", "ok5", "late-1", "late-2"]).await,
        [true, true, false, false],
        "the conflicting call stored nothing, its neighbours everything"
    );
    let late_index = store
        .index_entries(&[IndexKey([60; 64])])
        .await
        .expect("read");
    assert_eq!(late_index, [None]);
    let after = committed(&store);
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (1, 6),
        "the six good calls shared one transaction"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_postgres_refuses_fails_only_its_own_call() {
    let url = fresh_database().await;
    let store = open_with(&url, "a", gathering()).await;
    let (subject, key) = (SubjectHash([6; 32]), wrapped(6));
    store
        .insert_subject_key(subject, key.clone())
        .await
        .expect("key");
    let mut calls: Vec<_> = (0..5u8)
        .map(|i| {
            (
                vec![new_token(&format!("ok{i}"), 6, Some(i))],
                subject,
                key.clone(),
            )
        })
        .collect();
    // PostgreSQL's text holds no NUL: the whole statement is refused.
    calls.push((
        vec![
            new_token("fine", 6, Some(70)),
            new_token("nul\0", 6, Some(71)),
        ],
        subject,
        key.clone(),
    ));
    let outcomes = together(&store, calls).await;
    for (i, outcome) in outcomes[..5].iter().enumerate() {
        assert_eq!(
            outcome.as_ref().expect("ok call"),
            &InsertOutcome::Committed,
            "ok{i}"
        );
    }
    assert!(
        matches!(outcomes[5], Err(StoreError::Engine(_))),
        "the refused call: {:?}",
        outcomes[5]
    );
    assert_eq!(
        present(&store, &["ok0", "ok4", "fine"]).await,
        [true, true, false]
    );
}

/// Holds `subject`'s key row `FOR UPDATE` as a forget on another replica
/// does, while a group of this replica's calls waits on it, then deletes
/// it and commits: the forgotten subject's call fails, the others commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_forgotten_mid_group_fails_only_its_call() {
    let url = fresh_database().await;
    let store = open_with(&url, "b", gathering()).await;
    for tag in 1..=4u8 {
        store
            .insert_subject_key(SubjectHash([tag; 32]), wrapped(tag))
            .await
            .expect("key");
    }
    let forgotten = SubjectHash([2; 32]);
    let mut other_replica = raw(&url).await;
    let forget = other_replica.transaction().await.expect("begin");
    forget
        .execute(
            "SELECT 1 FROM tv_subjects WHERE subject = $1 FOR UPDATE",
            &[&forgotten.0.as_slice()],
        )
        .await
        .expect("lock the key row");
    let before = committed(&store);
    let calls: Vec<_> = (1..=4u8)
        .map(|tag| {
            (
                vec![new_token(&format!("s{tag}"), tag, Some(tag))],
                SubjectHash([tag; 32]),
                wrapped(tag),
            )
        })
        .collect();
    let running = {
        let store = Arc::clone(&store);
        tokio::spawn(async move { together(&store, calls).await })
    };
    tokio::time::sleep(GATHER * 4).await;
    assert!(!running.is_finished(), "the group waits for the forget");
    forget
        .execute(
            "DELETE FROM tv_subjects WHERE subject = $1",
            &[&forgotten.0.as_slice()],
        )
        .await
        .expect("delete the key row");
    forget.commit().await.expect("commit the forget");

    let outcomes = running.await.expect("calls");
    assert!(
        matches!(outcomes[1], Err(StoreError::SubjectErased)),
        "the forgotten subject's call: {:?}",
        outcomes[1]
    );
    for i in [0, 2, 3] {
        assert_eq!(
            outcomes[i].as_ref().expect("call"),
            &InsertOutcome::Committed
        );
    }
    assert_eq!(
        present(&store, &["s1", "s2", "s3", "s4"]).await,
        [true, false, true, true]
    );
    let after = committed(&store);
    assert_eq!((after.0 - before.0, after.1 - before.1), (1, 3));
    // Under the subject's new key (made by the retry's keys_for_write in
    // the vault), the call stores.
    let new_key = store
        .insert_subject_key(forgotten, wrapped(12))
        .await
        .expect("new key");
    let retried = store
        .insert_tokens(
            vec![new_token("s2", 2, Some(2))],
            &[(forgotten, &new_key)],
            100,
        )
        .await
        .expect("retry");
    assert_eq!(retried, InsertOutcome::Committed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_gone_while_queued_stores_nothing_and_the_group_commits() {
    let url = fresh_database().await;
    let store = open_with(
        &url,
        "a",
        GroupBounds {
            in_flight: 1,
            ..GroupBounds::default()
        },
    )
    .await;
    let (blocked, queued) = (SubjectHash([7; 32]), SubjectHash([8; 32]));
    store
        .insert_subject_key(blocked, wrapped(7))
        .await
        .expect("key");
    store
        .insert_subject_key(queued, wrapped(8))
        .await
        .expect("key");
    // The one group in flight waits on a lock; the next calls queue.
    let mut other = raw(&url).await;
    let lock = other.transaction().await.expect("begin");
    lock.execute(
        "SELECT 1 FROM tv_subjects WHERE subject = $1 FOR UPDATE",
        &[&blocked.0.as_slice()],
    )
    .await
    .expect("lock");
    let in_flight = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            store
                .insert_tokens(
                    vec![new_token("first", 7, None)],
                    &[(blocked, &wrapped(7))],
                    100,
                )
                .await
        })
    };
    tokio::time::sleep(GATHER).await;
    // Its deadline passes while it is queued behind the group in flight.
    let gone = tokio::time::timeout(
        GATHER,
        store.insert_tokens(
            vec![new_token("gone", 8, Some(8))],
            &[(queued, &wrapped(8))],
            100,
        ),
    )
    .await;
    assert!(gone.is_err(), "the call was still queued: {gone:?}");
    let waiting = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            store
                .insert_tokens(
                    vec![new_token("after", 8, None)],
                    &[(queued, &wrapped(8))],
                    100,
                )
                .await
        })
    };
    tokio::time::sleep(GATHER).await;
    lock.rollback().await.expect("release");

    assert_eq!(
        in_flight.await.expect("task").expect("first"),
        InsertOutcome::Committed
    );
    assert_eq!(
        waiting.await.expect("task").expect("after"),
        InsertOutcome::Committed
    );
    assert_eq!(
        present(&store, &["first", "gone", "after"]).await,
        [true, false, true]
    );
    assert_eq!(
        store
            .index_entries(&[IndexKey([8; 64])])
            .await
            .expect("read"),
        [None],
        "nothing of the gone call is stored"
    );
    assert_eq!(committed(&store).1, 2);
}

/// Two callers on each of three replicas race on every value (the same
/// index key, their own tokens): each value ends with one token, and every
/// caller is answered with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deterministic_races_across_three_replicas_give_one_token_per_value() {
    let url = fresh_database().await;
    let (a, b, c) = tokio::join!(
        open_with(&url, "a", GroupBounds::default()),
        open_with(&url, "b", GroupBounds::default()),
        open_with(&url, "c", GroupBounds::default()),
    );
    let (subject, key) = (SubjectHash([9; 32]), wrapped(9));
    a.insert_subject_key(subject, key.clone())
        .await
        .expect("key");
    let values = 40u8;
    let mut tasks = Vec::new();
    for (name, store) in [("a", &a), ("b", &b), ("c", &c)] {
        for caller in 0..2 {
            let (store, key) = (Arc::clone(store), key.clone());
            tasks.push(tokio::spawn(async move {
                let mut answers = Vec::new();
                for value in 0..values {
                    let token = format!("{name}{caller}-{value}");
                    let batch = vec![new_token(&token, 9, Some(value))];
                    let outcome = store
                        .insert_tokens(batch, &[(subject, &key)], 100)
                        .await
                        .expect("insert");
                    answers.push(match outcome {
                        InsertOutcome::Committed => token,
                        InsertOutcome::Conflicts(conflicts) => match &conflicts[..] {
                            [Conflict::IndexTaken { existing, .. }] => existing.token.clone(),
                            other => panic!("unexpected conflicts {other:?}"),
                        },
                    });
                }
                answers
            }));
        }
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("caller"));
    }
    let keys: Vec<IndexKey> = (0..values).map(|v| IndexKey([v; 64])).collect();
    let entries = a.index_entries(&keys).await.expect("read");
    let mut candidates = Vec::new();
    for (value, entry) in entries.iter().enumerate() {
        let winner = &entry.as_ref().expect("indexed").token;
        for caller in &answers {
            assert_eq!(&caller[value], winner, "value {value}");
        }
        for name in ["a", "b", "c"] {
            for caller in 0..2 {
                candidates.push(format!("{name}{caller}-{value}"));
            }
        }
    }
    let stored = a.token_records(&candidates).await.expect("read");
    assert_eq!(
        stored.iter().filter(|record| record.is_some()).count(),
        usize::from(values),
        "one token row per value"
    );
}

/// Concurrent lookups share queries (`reads`) and each still gets its own
/// keys' rows, in its order, a repeated key answered twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_lookups_each_get_their_own_rows() {
    let url = fresh_database().await;
    let store = open_with(&url, "a", GroupBounds::default()).await;
    let (subject, key) = (SubjectHash([3; 32]), wrapped(3));
    store
        .insert_subject_key(subject, key.clone())
        .await
        .expect("key");
    let batch: Vec<NewToken> = (0..20u8)
        .map(|i| new_token(&format!("t{i}"), 3, Some(i)))
        .collect();
    store
        .insert_tokens(batch, &[(subject, &key)], 100)
        .await
        .expect("insert");
    let tasks: Vec<_> = (0..32u8)
        .map(|n| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let (a, b) = (n % 20, (n * 7) % 25);
                let tokens = vec![format!("t{a}"), format!("t{b}"), format!("t{a}")];
                let records = store.token_records(&tokens).await.expect("records");
                let found: Vec<bool> = records.iter().map(Option::is_some).collect();
                assert_eq!(found, [true, b < 20, true], "lookup {n}");
                let entries = store
                    .index_entries(&[IndexKey([b; 64]), IndexKey([a; 64])])
                    .await
                    .expect("entries");
                let tokens: Vec<Option<String>> =
                    entries.into_iter().map(|e| e.map(|e| e.token)).collect();
                assert_eq!(
                    tokens,
                    [(b < 20).then(|| format!("t{b}")), Some(format!("t{a}"))],
                    "lookup {n}"
                );
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("lookup");
    }
}
