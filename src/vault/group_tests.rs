//! Group commit on the PostgreSQL store, seen from the vault: calls that
//! share a group keep their own outcomes. Three replicas of one database;
//! C's notices are late, so its cached key of a subject forgotten on A and
//! given a new key on B is stale.

use std::sync::Arc;
use std::time::Duration;

use super::test_support::{postgres_replica, text_item};
use super::*;
use crate::store::postgres::tests::{fresh_database, options};
use crate::store::postgres::{GroupBounds, PostgresOptions, PostgresStore};

/// A replica whose group writer waits long enough that calls started
/// together share a transaction.
async fn replica(url: &str, name: &str) -> (Arc<Vault>, Arc<PostgresStore>) {
    let options = PostgresOptions {
        group: GroupBounds {
            wait: Duration::from_millis(50),
            ..GroupBounds::default()
        },
        ..options(url, name)
    };
    let (vault, store) = postgres_replica(&options).await;
    (Arc::new(vault), store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_key_retries_and_an_invalid_item_fails_only_their_own_calls() {
    let url = fresh_database().await;
    let ((a, _), (b, _), (c, c_store)) =
        tokio::join!(replica(&url, "a"), replica(&url, "b"), replica(&url, "c"));
    let subjects = ["stale", "fresh-1", "fresh-2", "fresh-3"];
    for subject in subjects {
        c.tokenize(subject, &[text_item("cached")])
            .await
            .expect("tokenize on C");
    }
    c_store.drop_invalidations();
    a.forget("stale").await.expect("forget on A");
    b.tokenize("stale", &[text_item("new key on B")])
        .await
        .expect("tokenize on B");

    // At once on C: the stale subject, three others, and a call with an
    // invalid item.
    let mut calls = Vec::new();
    for subject in subjects {
        let c = Arc::clone(&c);
        calls.push(tokio::spawn(async move {
            c.tokenize(subject, &[text_item(&format!("grouped {subject}"))])
                .await
        }));
    }
    let invalid = {
        let c = Arc::clone(&c);
        tokio::spawn(async move {
            let bad = TokenizeItem {
                format: "no-such-format".into(),
                ..text_item("x")
            };
            c.tokenize("fresh-1", &[text_item("valid neighbour"), bad])
                .await
        })
    };
    let mut tokens = Vec::new();
    for call in calls {
        tokens.push(call.await.expect("task").expect("tokenize on C").remove(0));
    }
    let refused = invalid.await.expect("task");
    assert!(
        matches!(&refused, Err(VaultError::InvalidArgument(reason)) if reason.starts_with("items[1]")),
        "{refused:?}"
    );

    // Every grouped value opens on another replica: the stale subject's
    // under its new key.
    let opened = a.detokenize(&tokens).await.expect("detokenize on A");
    let values: Vec<Option<&str>> = opened
        .iter()
        .map(|d| d.value.as_deref().map(String::as_str))
        .collect();
    assert_eq!(
        values,
        [
            Some("grouped stale"),
            Some("grouped fresh-1"),
            Some("grouped fresh-2"),
            Some("grouped fresh-3"),
        ]
    );
    // The invalid call stored nothing: fresh-1 holds its two values only.
    let page = a.export_page("fresh-1", None).await.expect("export");
    let mut exported: Vec<&str> = page.tokens.iter().map(|e| e.value.as_str()).collect();
    exported.sort_unstable();
    assert_eq!(exported, ["cached", "grouped fresh-1"]);
}
