//! The PostgreSQL store against a real server: tests/setup-machine.sh
//! starts one; `TOKENVAULT_TEST_PG_URL` points elsewhere. Each test gets
//! a database of its own. An unreachable server fails the test.

use std::sync::Arc;

use super::*;
use crate::crypto::{Sealed, NONCE_LEN};
use crate::kek::KekKind;

/// Where the test server is (tests/setup-machine.sh's cluster).
pub(crate) const DEFAULT_TEST_URL: &str = "postgres://postgres@127.0.0.1:55432/postgres";

/// Creates a fresh database and returns its URL.
pub(crate) async fn fresh_database() -> String {
    let admin = std::env::var("TOKENVAULT_TEST_PG_URL").unwrap_or(DEFAULT_TEST_URL.into());
    let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not reachable at {admin} ({e}): run tests/setup-machine.sh, or set TOKENVAULT_TEST_PG_URL"
            )
        });
    tokio::spawn(connection);
    let name = format!("tv_test_{}", hex::encode(rand::random::<[u8; 8]>()));
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create database");
    let mut config: tokio_postgres::Config = admin.parse().expect("url");
    config.dbname(&name);
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => "127.0.0.1".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("postgres");
    format!("postgres://{user}@{host}:{port}/{name}")
}

pub(crate) fn options(url: &str, replica: &str) -> PostgresOptions {
    PostgresOptions {
        url: url.into(),
        pool_size: 8,
        tls: false,
        ca_file: None,
        replica: replica.into(),
        sync_writes: true,
        group: GroupBounds::default(),
    }
}

async fn open(url: &str, replica: &str) -> PostgresStore {
    PostgresStore::open(&options(url, replica))
        .await
        .expect("open the postgres store")
}

pub(super) fn wrapped(tag: u8) -> WrappedKey {
    WrappedKey {
        kind: KekKind::Local,
        kek_version: 1,
        ciphertext: vec![tag; 60],
    }
}

pub(super) fn new_token(token: &str, subject: u8, index: Option<u8>) -> NewToken {
    NewToken {
        token: token.into(),
        record: TokenRecord {
            subject: SubjectHash([subject; 32]),
            format: "text".into(),
            created_at: 100,
            expires_at: None,
            sealed: Sealed {
                nonce: [subject; NONCE_LEN],
                ciphertext: vec![subject; 20],
            },
        },
        index_key: index.map(|tag| IndexKey([tag; 64])),
    }
}

fn hasher() -> TombstoneHasher {
    Arc::new(|token: &str| {
        let mut hash = [0u8; 32];
        for (i, byte) in token.bytes().enumerate().take(32) {
            hash[i] = byte;
        }
        hash
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_passes_the_store_conformance_suite() {
    super::super::conformance::run_all(|| async {
        let url = fresh_database().await;
        Arc::new(open(&url, "r1").await) as Arc<dyn Store>
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_counters_charge_all_or_none() {
    let url = fresh_database().await;
    let store = open(&url, "r1").await;
    crate::store::counters::a_charge_over_any_limit_charges_none_in(&store).await;
}

/// Many callers on two replicas charging at once are admitted exactly up
/// to the limit, grouped into shared transactions or one by one, and a
/// call refused on one of its counters adds nothing to the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_charges_on_two_replicas_admit_exactly_the_limit() {
    use crate::store::counters::{Charge, Charged, WindowCounters};
    let charge = |key: String, amount: u64, limit: u64| Charge {
        key,
        window_start: 0,
        window_seconds: 3600,
        amount,
        limit,
    };
    for max_calls in [64, 1] {
        let url = fresh_database().await;
        let mut replica = options(&url, "a");
        replica.group.max_calls = max_calls;
        let a = Arc::new(PostgresStore::open(&replica).await.expect("open a"));
        replica.replica = "b".into();
        let b = Arc::new(PostgresStore::open(&replica).await.expect("open b"));
        let calls: Vec<_> = (0..64u64)
            .map(|i| {
                let store = Arc::clone(if i % 2 == 0 { &a } else { &b });
                // Every 8th caller's own counter has no room at all.
                let own_limit = if i % 8 == 0 { 0 } else { 10 };
                let charges = vec![
                    charge(format!("own/{i}"), 1, own_limit),
                    charge("shared".into(), 1, 40),
                ];
                tokio::spawn(async move { store.charge(&charges, 1).await.expect("charge") })
            })
            .collect();
        let (mut admitted, mut refused_on_own, mut refused_on_shared) = (0, 0, 0);
        for call in calls {
            match call.await.expect("task") {
                Charged::Admitted(_) => admitted += 1,
                Charged::Refused { index: 0, .. } => refused_on_own += 1,
                Charged::Refused { .. } => refused_on_shared += 1,
            }
        }
        let counts = (admitted, refused_on_own, refused_on_shared);
        assert_eq!(counts, (40, 8, 16), "max_calls = {max_calls}");
        let shared = a
            .charge(&[charge("shared".into(), 0, u64::MAX)], 1)
            .await
            .expect("read the shared counter");
        assert_eq!(
            shared,
            Charged::Admitted(vec![40]),
            "max_calls = {max_calls}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_once_when_replicas_start_together() {
    let url = fresh_database().await;
    let (a, b, c) = tokio::join!(open(&url, "a"), open(&url, "b"), open(&url, "c"));
    a.insert_subject_key(SubjectHash([1; 32]), wrapped(1))
        .await
        .expect("insert");
    drop((a, b, c));
    // A restart finds the schema at its version and the data kept.
    let again = open(&url, "a").await;
    assert_eq!(
        again
            .subject_keys(&[SubjectHash([1; 32])])
            .await
            .expect("read"),
        vec![Some(wrapped(1))]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_of_a_forgotten_subject_are_refused_on_every_replica() {
    let url = fresh_database().await;
    let (a, b) = tokio::join!(open(&url, "a"), open(&url, "b"));
    let subject = SubjectHash([3; 32]);
    a.insert_subject_key(subject, wrapped(3))
        .await
        .expect("key");
    assert_eq!(
        b.insert_tokens(
            vec![new_token("t1", 3, Some(3))],
            &[(subject, &wrapped(3))],
            100
        )
        .await
        .expect("insert"),
        InsertOutcome::Committed
    );
    assert_eq!(
        a.forget_subject(subject, hasher(), 200)
            .await
            .expect("forget"),
        1
    );
    // B still holds the old key (as its cache would): its batch must not
    // land sealed under the destroyed key.
    let refused = b
        .insert_tokens(
            vec![new_token("t2", 3, Some(3))],
            &[(subject, &wrapped(3))],
            300,
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::SubjectErased)),
        "got {refused:?}"
    );
    assert_eq!(
        a.token_records(&["t1".into(), "t2".into()])
            .await
            .expect("read"),
        vec![None, None]
    );
    assert_eq!(
        a.tombstones(&[hasher()("t1")]).await.expect("read"),
        vec![true]
    );
}

/// A replica whose cached key is no longer the subject's (a forget and a
/// new key elsewhere, or a rewrap) must not store tokens sealed under it:
/// under a destroyed key they would never open again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_sealed_under_a_key_that_is_not_the_subjects_are_refused() {
    let url = fresh_database().await;
    let (a, b) = tokio::join!(open(&url, "a"), open(&url, "b"));
    let subject = SubjectHash([4; 32]);
    let insert = |token: &'static str, key: WrappedKey| {
        let b = &b;
        async move {
            b.insert_tokens(vec![new_token(token, 4, None)], &[(subject, &key)], 100)
                .await
        }
    };
    // A batch under `stale` stores nothing; the same under `current` does.
    let refused_then_stored = |stale: (&'static str, u8), current: (&'static str, u8)| {
        let insert = &insert;
        async move {
            let refused = insert(stale.0, wrapped(stale.1)).await;
            assert!(
                matches!(refused, Err(StoreError::SubjectErased)),
                "{}: got {refused:?}",
                stale.0
            );
            let stored = insert(current.0, wrapped(current.1)).await;
            assert_eq!(stored.expect("insert"), InsertOutcome::Committed);
        }
    };
    a.insert_subject_key(subject, wrapped(4))
        .await
        .expect("key");
    assert_eq!(
        insert("t1", wrapped(4)).await.expect("insert"),
        InsertOutcome::Committed
    );

    // Forgotten on A, then a new key made for the subject (as by another
    // replica's Tokenize); B still holds the old one.
    a.forget_subject(subject, hasher(), 200)
        .await
        .expect("forget");
    a.insert_subject_key(subject, wrapped(14))
        .await
        .expect("new key");
    refused_then_stored(("t2", 4), ("t3", 14)).await;

    // A KEK rotation rewraps the key: the old wrapping is refused too, so
    // the caller reads the key again.
    assert!(a
        .replace_subject_key(subject, &wrapped(14), wrapped(24))
        .await
        .expect("rewrap"));
    refused_then_stored(("t4", 14), ("t5", 24)).await;

    let stored = a
        .token_records(&[
            "t1".into(),
            "t2".into(),
            "t3".into(),
            "t4".into(),
            "t5".into(),
        ])
        .await
        .expect("read");
    let present: Vec<bool> = stored.iter().map(Option::is_some).collect();
    assert_eq!(present, [false, false, true, false, true]);

    let unnamed = b
        .insert_tokens(vec![new_token("t6", 4, None)], &[], 100)
        .await;
    assert!(
        matches!(unnamed, Err(StoreError::Misuse(_))),
        "a batch must name its sealing key: {unnamed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_forgets_and_batches_never_leave_a_token_without_its_key() {
    let url = fresh_database().await;
    let (a, b) = tokio::join!(open(&url, "a"), open(&url, "b"));
    let (a, b) = (Arc::new(a), Arc::new(b));
    for round in 0..20u8 {
        let subject = SubjectHash([round; 32]);
        a.insert_subject_key(subject, wrapped(round))
            .await
            .expect("key");
        let writer = {
            let b = Arc::clone(&b);
            tokio::spawn(async move {
                let mut stored = Vec::new();
                for i in 0..10 {
                    let token = format!("r{round}-{i}");
                    match b
                        .insert_tokens(
                            vec![new_token(&token, round, None)],
                            &[(subject, &wrapped(round))],
                            100,
                        )
                        .await
                    {
                        Ok(InsertOutcome::Committed) => stored.push(token),
                        Ok(other) => panic!("unexpected {other:?}"),
                        Err(StoreError::SubjectErased) => break,
                        Err(other) => panic!("unexpected {other}"),
                    }
                }
                stored
            })
        };
        let forgotten = a
            .forget_subject(subject, hasher(), 200)
            .await
            .expect("forget");
        let stored = writer.await.expect("writer");
        // Whatever committed before the forget was erased by it; nothing
        // committed after it.
        let left = a.subject_tokens(subject, None, 100).await.expect("list");
        assert!(
            left.tokens.is_empty(),
            "round {round}: {} tokens outlived their key",
            left.tokens.len()
        );
        assert!(forgotten as usize <= stored.len());
        let hashes: Vec<[u8; 32]> = stored.iter().map(|t| hasher()(t)).collect();
        let erased = a.tombstones(&hashes).await.expect("tombstones");
        assert_eq!(
            erased.iter().filter(|e| **e).count() as u64,
            forgotten,
            "round {round}: every erased token left a tombstone"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forget_invalidates_the_other_replicas_caches() {
    let url = fresh_database().await;
    let (a, b) = tokio::join!(open(&url, "a"), open(&url, "b"));
    let (seen, mut arrivals) = tokio::sync::mpsc::unbounded_channel();
    b.watch_invalidations(Arc::new(move |invalidation| {
        let _ = seen.send(invalidation);
    }));
    assert!(b.listening());
    let subject = SubjectHash([9; 32]);
    a.insert_subject_key(subject, wrapped(9))
        .await
        .expect("key");
    a.forget_subject(subject, hasher(), 200)
        .await
        .expect("forget");
    assert_eq!(arrivals.recv().await, Some(Invalidation::Subject(subject)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_creating_one_subject_key_agree_on_it() {
    let url = fresh_database().await;
    let stores: Vec<Arc<PostgresStore>> = vec![
        Arc::new(open(&url, "a").await),
        Arc::new(open(&url, "b").await),
        Arc::new(open(&url, "c").await),
    ];
    let subject = SubjectHash([4; 32]);
    let tasks: Vec<_> = (0..12u8)
        .map(|i| {
            let store = Arc::clone(&stores[usize::from(i) % 3]);
            tokio::spawn(async move {
                store
                    .insert_subject_key(subject, wrapped(100 + i))
                    .await
                    .expect("insert")
            })
        })
        .collect();
    let mut in_force = Vec::new();
    for task in tasks {
        in_force.push(task.await.expect("task"));
    }
    let stored = stores[0].subject_keys(&[subject]).await.expect("read")[0].clone();
    assert!(stored.is_some());
    assert!(in_force.iter().all(|key| Some(key) == stored.as_ref()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_replica_keeps_its_own_audit_chain() {
    let url = fresh_database().await;
    let (a, b) = tokio::join!(open(&url, "a"), open(&url, "b"));
    a.claim_audit_chain().await.expect("lease a");
    b.claim_audit_chain().await.expect("lease b");
    a.append_audit(vec![(1, b"a1".to_vec()), (2, b"a2".to_vec())])
        .await
        .expect("append");
    b.append_audit(vec![(1, b"b1".to_vec())])
        .await
        .expect("append");
    assert_eq!(
        a.audit_records(0, 10).await.expect("scan"),
        vec![(1, b"a1".to_vec()), (2, b"a2".to_vec())]
    );
    assert_eq!(
        b.last_audit_record().await.expect("last"),
        Some((1, b"b1".to_vec()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_audit_insert_is_an_error_and_a_retry_is_not() {
    let url = fresh_database().await;
    let store = open(&url, "r").await;
    store.claim_audit_chain().await.expect("lease");
    store
        .append_audit(vec![(1, b"first".to_vec()), (2, b"second".to_vec())])
        .await
        .expect("append");
    // The same bytes again: a retry of a write that may have landed.
    store
        .append_audit(vec![(2, b"second".to_vec()), (3, b"third".to_vec())])
        .await
        .expect("a retry stores nothing twice");
    // Other bytes under a stored number: another writer of this chain.
    let error = store
        .append_audit(vec![(3, b"other".to_vec()), (4, b"fourth".to_vec())])
        .await
        .expect_err("a conflicting record must not be dropped silently");
    assert!(error.to_string().contains("record 3"), "{error}");
    assert_eq!(
        store.audit_records(0, 10).await.expect("scan"),
        vec![
            (1, b"first".to_vec()),
            (2, b"second".to_vec()),
            (3, b"third".to_vec())
        ],
        "nothing of the refused batch is stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_name_is_held_by_one_store_at_a_time() {
    let url = fresh_database().await;
    let first = open(&url, "twin").await;
    first.claim_audit_chain().await.expect("lease");
    let second = open(&url, "twin").await;
    let error = second
        .claim_audit_chain()
        .await
        .expect_err("a second holder of one replica name");
    assert!(error.to_string().contains("\"twin\""), "{error}");
    // Without the lease, its chain is not written.
    assert!(second.append_audit(vec![(1, b"x".to_vec())]).await.is_err());
    let other = open(&url, "other").await;
    other.claim_audit_chain().await.expect("another name");
    // The lease ends with its holder.
    drop(first);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while let Err(error) = second.claim_audit_chain().await {
        assert!(
            std::time::Instant::now() < deadline,
            "the lease outlived its store: {error}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    second
        .append_audit(vec![(1, b"x".to_vec())])
        .await
        .expect("append under the lease");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_point_to_postgres_tools() {
    let url = fresh_database().await;
    let store = open(&url, "a").await;
    let error = store
        .create_backup(std::path::Path::new("/nonexistent"))
        .await
        .expect_err("unsupported");
    assert!(error.to_string().contains("pg_dump"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_listen_connection_turns_the_cache_off_until_it_is_back() {
    let url = fresh_database().await;
    let store = open(&url, "a").await;
    let (seen, mut arrivals) = tokio::sync::mpsc::unbounded_channel();
    store.watch_invalidations(Arc::new(move |invalidation| {
        let _ = seen.send(invalidation);
    }));
    let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let killed = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND query LIKE 'LISTEN%'",
            &[],
        )
        .await
        .expect("terminate");
    assert_eq!(killed.len(), 1, "one LISTEN connection per store");
    assert_eq!(arrivals.recv().await, Some(Invalidation::Suspend));
    assert_eq!(arrivals.recv().await, Some(Invalidation::Resume));
    assert!(store.listening());
    // Notifications arrive again on the new connection.
    let subject = SubjectHash([5; 32]);
    store
        .insert_subject_key(subject, wrapped(5))
        .await
        .expect("key");
    store
        .forget_subject(subject, hasher(), 200)
        .await
        .expect("forget");
    assert_eq!(arrivals.recv().await, Some(Invalidation::Subject(subject)));
}

#[test]
fn the_postgres_config_needs_exactly_one_url_and_a_backend_table() {
    let parse = |text: &str| crate::config::Config::parse(text).expect("parse");
    let config = parse(
        "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"postgres://u@h/db\"\nreplica = \"r1\"\n[erasure.postgres]\nurl = \"postgres://u@h/db_ledger\"\n",
    );
    config.check().expect("valid");
    let options = config
        .storage
        .postgres_options()
        .expect("options")
        .expect("postgres");
    assert_eq!((options.pool_size, options.replica.as_str()), (16, "r1"));
    assert!(options.sync_writes && !options.tls);

    let both = parse(
        "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"postgres://u@h/db\"\nurl_env = \"X\"\n",
    );
    assert!(both.check().is_err(), "url and url_env together");
    let no_table = parse("[storage]\nbackend = \"postgres\"\n");
    assert!(
        no_table.check().is_err(),
        "postgres needs [storage.postgres]"
    );
    let unset = parse(
        "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl_env = \"TOKENVAULT_TEST_SURELY_UNSET_VAR\"\n",
    );
    assert!(
        unset.check().is_err(),
        "an unset url_env is an error at start"
    );
    let rocks = parse("[storage]\nbackend = \"rocksdb\"\n");
    assert!(rocks.storage.postgres_options().expect("ok").is_none());
    assert!(parse("[storage]\nbackend = \"mysql\"\n").check().is_err());
}
