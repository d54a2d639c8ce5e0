//! End-to-end behaviour of Tokenize and Detokenize against the real binary.

mod common;

use std::collections::HashSet;

use common::{card, detokenize, item, random_item, tokenize, Server};
use tokenvault::pb;
use tokenvault::token::checks;
use tonic::Code;

/// One valid value of every format, in varied layouts.
const SAMPLES: &[(&str, &str)] = &[
    ("card", "4111 1111 1111 1111"),
    ("card", "5500-0000-0000-0004"),
    ("card", "378282246310005"),
    ("phone", "+7 (916) 123-45-67"),
    ("phone", "8 916 123 45 67"),
    ("phone", "+44 20 7946 0958"),
    ("email", "ivan.petrov@mail.ru"),
    ("email", "анна@почта.рф"),
    ("iban", "GB82 WEST 1234 5698 7654 32"),
    ("iban", "DE89370400440532013000"),
    ("ru_passport", "4506 123456"),
    ("ru_passport", "45 06 123456"),
    ("ru_snils", "112-233-445 95"),
    ("ru_inn", "7707083893"),
    ("ru_inn", "500100732259"),
    ("ru_ogrn", "1027700132195"),
    ("ru_ogrn", "304500116000157"),
    ("ru_bank_account", "40817810099910004312"),
    ("ru_bank_account", "044525225 40702810938000000001"),
    ("us_ssn", "123-45-6789"),
    ("text", "Иван Petrov, 42 года"),
    ("opaque", "any bytes at all ✓"),
];

fn digits(s: &str) -> Vec<u8> {
    s.chars()
        .filter_map(|c| c.to_digit(10))
        .map(|d| d as u8)
        .collect()
}

/// Non-alphanumeric characters and their positions: the layout a token keeps.
fn layout(s: &str) -> Vec<(usize, char)> {
    s.chars()
        .enumerate()
        .filter(|(_, c)| !c.is_alphanumeric())
        .collect()
}

/// The SPEC's per-format rule: shape kept, checksum broken, kept parts kept.
fn assert_token_rules(format: &str, value: &str, token: &str) {
    assert_ne!(token, value, "{format}: token equals its value");
    match format {
        "opaque" => {
            let body = token
                .strip_prefix("tok_")
                .expect("opaque tokens start tok_");
            assert_eq!(body.len(), 26);
            assert!(body
                .chars()
                .all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c)));
            return;
        }
        "email" => {
            let (local, domain) = value.split_once('@').expect("@");
            let (token_local, token_domain) = token.split_once('@').expect("token has @");
            assert_eq!(token_local.chars().count(), local.chars().count());
            assert_eq!(
                token_domain,
                format!("{domain}.invalid"),
                "email tokens never deliver"
            );
            return;
        }
        _ => {}
    }
    assert_eq!(
        token.chars().count(),
        value.chars().count(),
        "{format}: length"
    );
    assert_eq!(layout(token), layout(value), "{format}: layout");
    let (v, t) = (digits(value), digits(token));
    match format {
        "card" => {
            assert!(!checks::luhn_valid(&t), "card token passes Luhn");
            let keep = 6.min(v.len() - 10);
            assert_eq!(t[..keep], v[..keep], "card keeps its first digits");
            assert_eq!(t[t.len() - 4..], v[v.len() - 4..], "card keeps its last 4");
        }
        "phone" if value.starts_with('+') => {
            let cc = if value.starts_with("+7") { 1 } else { 2 };
            assert_eq!(t[..cc], v[..cc], "phone keeps its country code");
        }
        "iban" => {
            let compact: String = token.chars().filter(|c| !c.is_whitespace()).collect();
            assert!(!checks::iban_valid(&compact), "iban token passes mod-97");
            assert_eq!(token[..2], value[..2], "iban keeps its country");
        }
        "ru_snils" => assert!(!checks::snils_valid(&t)),
        "ru_inn" => assert!(!checks::inn_valid(&t)),
        "ru_ogrn" => {
            assert!(!checks::ogrn_valid(&t));
            assert_eq!(t[0], v[0]);
        }
        "ru_bank_account" if v.len() == 29 => {
            assert_eq!(t[..9], v[..9], "the BIK is kept");
            assert!(!checks::bank_account_key_valid(&t[..9], &t[9..]));
            assert_eq!(t[9..17], v[9..17], "account class and currency kept");
        }
        "ru_bank_account" => assert_eq!(t[..8], v[..8], "account class and currency kept"),
        "us_ssn" => assert!(t[0] == 9, "ssn tokens use never-issued areas 900-999"),
        _ => {}
    }
}

#[tokio::test]
async fn every_format_round_trips_and_keeps_its_shape() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let mut client = server.client().await;
    let items = SAMPLES.iter().map(|(f, v)| item(v, f)).collect();
    let tokens = tokenize(&mut client, "subject-1", items).await;
    assert_eq!(tokens.len(), SAMPLES.len());
    for ((format, value), token) in SAMPLES.iter().zip(&tokens) {
        assert_token_rules(format, value, token);
    }
    let results = detokenize(&mut client, &tokens).await;
    for ((format, value), result) in SAMPLES.iter().zip(results) {
        assert_eq!(result.status, pb::TokenStatus::Found as i32, "{format}");
        assert_eq!(result.value, *value, "{format} round trip");
        assert_eq!(result.format, *format);
        assert_eq!(result.reveal, pb::Reveal::Full as i32);
    }
}

#[tokio::test]
async fn deterministic_per_subject_random_on_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let mut client = server.client().await;
    let card = "4111 1111 1111 1111";
    let a1 = tokenize(&mut client, "alice", vec![item(card, "card")]).await;
    let a2 = tokenize(
        &mut client,
        "alice",
        vec![item(card, "card"), item(card, "card")],
    )
    .await;
    assert_eq!(
        a1[0], a2[0],
        "same subject, format and value give the same token"
    );
    assert_eq!(a2[0], a2[1], "a value twice in one batch gets one token");
    let b = tokenize(&mut client, "bob", vec![item(card, "card")]).await;
    assert_ne!(a1[0], b[0], "different subjects get different tokens");
    let r1 = tokenize(&mut client, "alice", vec![random_item(card, "card")]).await;
    let r2 = tokenize(&mut client, "alice", vec![random_item(card, "card")]).await;
    assert_ne!(r1[0], r2[0], "random mode gives a fresh token");
    assert_ne!(r1[0], a1[0]);
    for token in [&r1[0], &r2[0], &b[0]] {
        let result = detokenize(&mut client, std::slice::from_ref(token))
            .await
            .remove(0);
        assert_eq!(result.value, card);
    }
}

#[tokio::test]
async fn unknown_tokens_are_not_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let mut client = server.client().await;
    let results = detokenize(&mut client, &["tok_aaaaaaaaaaaaaaaaaaaaaaaaaa".into()]).await;
    assert_eq!(results[0].status, pb::TokenStatus::NotFound as i32);
    assert!(results[0].value.is_empty());
}

#[tokio::test]
async fn ttl_is_enforced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let mut client = server.client().await;
    let short = pb::TokenizeItem {
        ttl_seconds: 1,
        ..item("Ivan", "text")
    };
    let long = pb::TokenizeItem {
        ttl_seconds: 3600,
        ..item("Petr", "text")
    };
    let tokens = tokenize(&mut client, "s", vec![short.clone(), long]).await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let results = detokenize(&mut client, &tokens).await;
    assert_eq!(results[0].status, pb::TokenStatus::Expired as i32);
    assert!(
        results[0].value.is_empty(),
        "an expired token reveals nothing"
    );
    assert_eq!(results[1].status, pb::TokenStatus::Found as i32);
    // The deterministic entry of an expired token is replaced, not reused.
    let again = tokenize(&mut client, "s", vec![short]).await;
    assert_ne!(again[0], tokens[0]);
    assert_eq!(detokenize(&mut client, &again).await[0].value, "Ivan");
}

#[tokio::test]
async fn tokens_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(dir.path());
    let mut client = server.client().await;
    let items: Vec<_> = SAMPLES.iter().map(|(f, v)| item(v, f)).collect();
    let tokens = tokenize(&mut client, "subject-r", items.clone()).await;
    server.stop().await;
    server.restart();
    let mut client = server.client().await;
    let results = detokenize(&mut client, &tokens).await;
    for ((_, value), result) in SAMPLES.iter().zip(results) {
        assert_eq!(result.value, *value);
    }
    assert_eq!(
        tokenize(&mut client, "subject-r", items).await,
        tokens,
        "determinism survives too"
    );
}

#[tokio::test]
async fn an_invalid_item_rejects_the_whole_batch_and_stores_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(dir.path());
    let mut client = server.client().await;
    let cases = [
        (item("4111 1111 1111 1112", "card"), "items[1]", "luhn"),
        (
            item("hello", "no_such_format"),
            "items[1]",
            "unknown format",
        ),
        (item("", "opaque"), "items[1]", ""),
        (item(&"x".repeat(5000), "text"), "items[1]", "4096"),
        (
            pb::TokenizeItem {
                mode: 7,
                ..item("Ivan", "text")
            },
            "items[1]",
            "mode",
        ),
    ];
    for (bad, names, reason) in cases {
        let request = pb::TokenizeRequest {
            subject_id: "atomic".into(),
            items: vec![
                item("4111 1111 1111 1111", "card"),
                bad,
                item("x@y.ru", "email"),
            ],
        };
        let status = client.tokenize(request).await.expect_err("must fail");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with(names), "{}", status.message());
        assert!(
            status.message().to_lowercase().contains(reason),
            "{}",
            status.message()
        );
        assert!(!status.message().contains("4111"), "no value in errors");
    }
    server.stop().await;
    let store = tokenvault::store::rocks::RocksStore::open(
        &server.data_dir().join("rocksdb"),
        &tokenvault::store::rocks::RocksOptions {
            sync_writes: true,
            block_cache_bytes: 1 << 20,
            sync_audit: true,
        },
    )
    .expect("open the stopped server's store");
    let counts = store.counts().expect("counts");
    assert_eq!(counts.tokens, 0, "a rejected batch stores no token");
    assert_eq!(counts.index_entries, 0);
}

#[tokio::test]
async fn batch_and_subject_limits_are_invalid_argument() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let mut client = server.client().await;
    let too_many = pb::TokenizeRequest {
        subject_id: "s".into(),
        items: (0..1001).map(|i| item(&format!("v{i}"), "text")).collect(),
    };
    let status = client
        .tokenize(too_many)
        .await
        .expect_err("over the batch limit");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("1000"), "{}", status.message());
    for subject in ["", &"s".repeat(300)] {
        let request = pb::TokenizeRequest {
            subject_id: subject.into(),
            items: vec![item("v", "text")],
        };
        let status = client.tokenize(request).await.expect_err("bad subject");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with("subject_id"));
    }
    let status = client
        .detokenize(pb::DetokenizeRequest {
            tokens: vec![],
            purpose: String::new(),
        })
        .await
        .expect_err("empty");
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn an_oversized_message_is_invalid_argument() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let mut client = server.client().await;
    // 5 MiB in one request, over the 4 MiB default max_message_bytes.
    let items = (0..1000)
        .map(|_| item(&"a".repeat(5 * 1024), "text"))
        .collect();
    let status = client
        .tokenize(pb::TokenizeRequest {
            subject_id: "s".into(),
            items,
        })
        .await
        .expect_err("over the message limit");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("max_message_bytes"),
        "{}",
        status.message()
    );
    // The server is still there.
    tokenize(&mut client, "s", vec![item("ok", "text")]).await;
}

#[tokio::test]
async fn concurrent_deterministic_calls_yield_one_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let client = server.client().await;
    let calls: Vec<_> = (0..32)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move {
                tokenize(
                    &mut client,
                    "racer",
                    vec![item("+7 916 123-45-67", "phone")],
                )
                .await
                .remove(0)
            })
        })
        .collect();
    let mut tokens = HashSet::new();
    for call in calls {
        tokens.insert(call.await.expect("task"));
    }
    assert_eq!(tokens.len(), 1, "32 concurrent calls gave {tokens:?}");
}

#[tokio::test]
async fn calls_without_a_valid_key_are_unauthenticated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let mut anonymous = pb::token_vault_client::TokenVaultClient::new(server.channel().await);
    let request = || pb::TokenizeRequest {
        subject_id: "s".into(),
        items: vec![item("v", "text")],
    };
    let status = anonymous.tokenize(request()).await.expect_err("no key");
    assert_eq!(status.code(), Code::Unauthenticated);
    let mut wrong = server.client_with_key("tvk_dev_not_the_key").await;
    assert_eq!(
        wrong
            .tokenize(request())
            .await
            .expect_err("wrong key")
            .code(),
        Code::Unauthenticated
    );
    let status = wrong
        .detokenize(pb::DetokenizeRequest {
            tokens: vec!["t".into()],
            purpose: String::new(),
        })
        .await
        .expect_err("wrong key");
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn bad_erasure_requests_are_invalid_argument_and_erase_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let mut client = server.client().await;
    let tokens = tokenize(&mut client, "keep-me", vec![item(&card(3), "card")]).await;
    for (subject, reason) in [("", "ticket 1"), ("keep-me", &"x".repeat(257)[..])] {
        let status = client
            .forget_subject(pb::ForgetSubjectRequest {
                subject_id: subject.into(),
                reason: reason.into(),
            })
            .await
            .expect_err("bad forget");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }
    let status = match client
        .export_subject(pb::ExportSubjectRequest {
            subject_id: String::new(),
            purpose: "p".into(),
        })
        .await
    {
        Ok(_) => panic!("an empty subject is refused"),
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(detokenize(&mut client, &tokens).await[0].value, card(3));
}

#[tokio::test]
async fn health_is_serving_and_reflection_lists_the_service() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    let response = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "tokenvault.v1.TokenVault".into(),
        })
        .await
        .expect("health check")
        .into_inner();
    assert_eq!(
        response.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    assert!(common::reflection_services(&server)
        .await
        .contains(&"tokenvault.v1.TokenVault".to_string()));
}

/// SIGTERM right after calls: the server exits 0 every time (the audit
/// writer and the store's background work are stopped before the process
/// exits; before that, about 1 stop in 8 ended in SIGSEGV or SIGABRT).
#[tokio::test]
async fn sigterm_after_calls_exits_cleanly_every_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(dir.path());
    for round in 0..12 {
        let mut client = server.client().await;
        let tokens = tokenize(&mut client, "s", vec![item(&card(round), "card")]).await;
        assert_eq!(detokenize(&mut client, &tokens).await[0].value, card(round));
        drop(client);
        // Asserts a clean exit with status 0.
        server.stop().await;
        server.restart();
    }
}
