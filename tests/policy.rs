//! Who may see what, against the real binary with API keys: the RPC matrix
//! of four principals, masked reveal in Detokenize and RestoreText,
//! required purposes, rate limits with alerts (per principal and per
//! actor), actor tokens, SIGHUP reload, and a server log free of values
//! and subject ids.

mod common;

use std::path::Path;

use common::actor::{actor_client, detokenize_as, es256_key, jwt};
use common::{admin_principal_toml, card, item, tokenize, Server};

use sha2::{Digest, Sha256};
use tokenvault::pb;
use tokenvault::token::template::Templates;
use tonic::{Code, Status};

/// A built-in format's mask (no operator-defined formats in these tests).
fn mask(format: &str, value: &str) -> String {
    tokenvault::policy::mask::mask(&Templates::default(), format, value)
}

const CHAT_KEY: &str = "tvk_chat_backend_key_0001";
const BILLING_KEY: &str = "tvk_billing_service_key_0002";
const KYC_KEY: &str = "tvk_kyc_service_key_0003";
const ERASURE_KEY: &str = "tvk_erasure_workflow_key_0004";
const SUBJECT: &str = "subject-policy-9c41e7";

fn digest(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn kek(root: &Path) -> String {
    std::fs::create_dir_all(root).expect("root");
    let path = root.join("kek.key");
    std::fs::write(&path, [9u8; 32]).expect("kek");
    format!(
        "[kek]\nprovider = \"local\"\npath = \"{}\"\n",
        path.display()
    )
}

/// The four callers of the spec, plus the admin that tokenizes for tests.
fn four_principals() -> String {
    format!(
        r#"
[[principals]]
name = "chat-backend"
api_key_sha256 = "{chat}"
allow = ["tokenize", "redact_text"]

[[principals]]
name = "billing"
api_key_sha256 = "{billing}"
allow = ["detokenize", "restore_text"]
reveal = {{ card = "masked", email = "full" }}

[[principals]]
name = "kyc"
api_key_sha256 = "{kyc}"
allow = ["detokenize", "restore_text"]
reveal = {{ default = "full" }}
require_purpose = true

[[principals]]
name = "erasure"
api_key_sha256 = "{erasure}"
allow = ["forget_subject", "export_subject"]
"#,
        chat = digest(CHAT_KEY),
        billing = digest(BILLING_KEY),
        kyc = digest(KYC_KEY),
        erasure = digest(ERASURE_KEY),
    )
}

fn start(root: &Path, principals: &str) -> Server {
    // The admin loads test data in bulk: a bulk importer's limits.
    let config = format!(
        "{}{}{}\n[new_value_limits.principals.admin]\nper_subject_per_principal = 1000000\nper_subject = 1000000\n",
        kek(root),
        admin_principal_toml(),
        principals
    );
    Server::start_with_config(root, &config)
}

/// One call of `rpc` that the policy alone decides (valid input).
async fn call(
    client: &mut tokenvault::cli::client::Client,
    rpc: &str,
    token: &str,
) -> Result<(), Status> {
    match rpc {
        "tokenize" => client
            .tokenize(pb::TokenizeRequest {
                subject_id: SUBJECT.into(),
                items: vec![item("4111 1111 1111 1111", "card")],
            })
            .await
            .map(drop),
        "detokenize" => client
            .detokenize(pb::DetokenizeRequest {
                tokens: vec![token.into()],
                purpose: "matrix".into(),
            })
            .await
            .map(drop),
        "redact_text" => client
            .redact_text(pb::RedactTextRequest {
                subject_id: SUBJECT.into(),
                text: "card 4111 1111 1111 1111".into(),
                kinds: vec![],
            })
            .await
            .map(drop),
        "restore_text" => client
            .restore_text(pb::RestoreTextRequest {
                text: format!("card {token}"),
                purpose: "matrix".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        // Another subject, so an implemented ForgetSubject leaves the
        // matrix's tokens alone.
        "forget_subject" => client
            .forget_subject(pb::ForgetSubjectRequest {
                subject_id: "subject-policy-forget".into(),
                reason: "matrix".into(),
            })
            .await
            .map(drop),
        "export_subject" => client
            .export_subject(pb::ExportSubjectRequest {
                subject_id: SUBJECT.into(),
                purpose: "matrix".into(),
            })
            .await
            .map(drop),
        other => panic!("unknown rpc {other}"),
    }
}

#[tokio::test]
async fn each_principal_may_call_exactly_its_rpcs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), &four_principals());
    let mut admin = server.client().await;
    let token = tokenize(
        &mut admin,
        SUBJECT,
        vec![item("4111 1111 1111 1111", "card")],
    )
    .await
    .remove(0);

    let rpcs = [
        "tokenize",
        "detokenize",
        "redact_text",
        "restore_text",
        "forget_subject",
        "export_subject",
    ];
    let matrix: [(&str, &str, &[&str]); 4] = [
        ("chat-backend", CHAT_KEY, &["tokenize", "redact_text"]),
        ("billing", BILLING_KEY, &["detokenize", "restore_text"]),
        ("kyc", KYC_KEY, &["detokenize", "restore_text"]),
        (
            "erasure",
            ERASURE_KEY,
            &["forget_subject", "export_subject"],
        ),
    ];
    for (name, key, allowed) in matrix {
        let mut client = server.client_with_key(key).await;
        for rpc in rpcs {
            let outcome = call(&mut client, rpc, &token).await;
            let code = outcome.as_ref().err().map(Status::code);
            if allowed.contains(&rpc) {
                assert_ne!(
                    code,
                    Some(Code::PermissionDenied),
                    "{name} may call {rpc}: {outcome:?}"
                );
                assert!(outcome.is_ok(), "{name} {rpc}: {outcome:?}");
            } else {
                assert_eq!(
                    code,
                    Some(Code::PermissionDenied),
                    "{name} may not call {rpc}: {outcome:?}"
                );
            }
        }
    }
    assert_log_is_clean(&server, &["4111 1111 1111 1111", "4111111111111111"]);
}

#[tokio::test]
async fn export_reveals_per_policy_and_counts_against_the_rate_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exporter = format!(
        "[[principals]]\nname = \"exporter\"\napi_key_sha256 = \"{}\"\nallow = [\"export_subject\"]\nreveal = {{ card = \"masked\", email = \"full\" }}\nrequire_purpose = true\nmax_detokenize_per_minute = 5\n",
        digest(ERASURE_KEY)
    );
    let server = start(dir.path(), &exporter);
    let mut admin = server.client().await;
    let cards = [card(1), card(2), card(3)];
    let emails = ["anna@mail.example", "boris@mail.example"];
    let mut items: Vec<pb::TokenizeItem> = cards.iter().map(|c| item(c, "card")).collect();
    items.extend(emails.iter().map(|e| item(e, "email")));
    tokenize(&mut admin, SUBJECT, items).await;

    let mut client = server.client_with_key(ERASURE_KEY).await;
    let export = |purpose: &str| pb::ExportSubjectRequest {
        subject_id: SUBJECT.into(),
        purpose: purpose.into(),
    };
    let denied = client.export_subject(export("")).await.map(drop);
    assert_eq!(
        denied.unwrap_err().code(),
        Code::PermissionDenied,
        "purpose required"
    );

    let mut stream = client
        .export_subject(export("art. 15"))
        .await
        .expect("export")
        .into_inner();
    let mut shown = Vec::new();
    while let Some(item) = stream.message().await.expect("stream") {
        shown.push((item.format, item.value));
    }
    shown.sort();
    let mut expected: Vec<(String, String)> = cards
        .iter()
        .map(|c| ("card".to_string(), mask("card", c)))
        .chain(emails.iter().map(|e| ("email".to_string(), e.to_string())))
        .collect();
    expected.sort();
    assert_eq!(shown, expected, "cards masked, emails in full");

    // The five values spent the minute's budget: the next export is refused
    // before anything is sent.
    let refused = client.export_subject(export("art. 15")).await.map(drop);
    assert_eq!(refused.unwrap_err().code(), Code::ResourceExhausted);
    assert_log_is_clean(&server, &["anna@mail.example", &cards[0]]);
}

/// One value of every format.
const SAMPLES: &[(&str, &str)] = &[
    ("card", "4111 1111 1111 1111"),
    ("phone", "+7 (916) 123-45-67"),
    ("email", "ivan.petrov@mail.ru"),
    ("iban", "GB82 WEST 1234 5698 7654 32"),
    ("ru_passport", "4506 123456"),
    ("ru_snils", "112-233-445 95"),
    ("ru_inn", "7707083893"),
    ("ru_ogrn", "1027700132195"),
    ("ru_bank_account", "40817810099910004312"),
    ("us_ssn", "123-45-6789"),
    ("text", "Иван Petrov, 42 года"),
    ("opaque", "any bytes at all"),
];

#[tokio::test]
async fn masked_formats_are_shaped_as_documented_in_detokenize_and_restore_text() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), &four_principals());
    let mut admin = server.client().await;
    let items = SAMPLES.iter().map(|(f, v)| item(v, f)).collect();
    let tokens = tokenize(&mut admin, SUBJECT, items).await;

    let mut billing = server.client_with_key(BILLING_KEY).await;
    let results = billing
        .detokenize(pb::DetokenizeRequest {
            tokens: tokens.clone(),
            purpose: String::new(),
        })
        .await
        .expect("billing detokenizes")
        .into_inner()
        .results;
    for ((format, value), result) in SAMPLES.iter().zip(&results) {
        assert_eq!(result.format, *format);
        if *format == "email" {
            assert_eq!(result.reveal, pb::Reveal::Full as i32);
            assert_eq!(result.value, *value);
        } else {
            assert_eq!(result.reveal, pb::Reveal::Masked as i32, "{format}");
            assert_eq!(result.value, mask(format, value), "{format}");
            assert_ne!(result.value, *value, "{format}");
        }
    }
    // The documented shapes, spelled out.
    let shown: Vec<&str> = results.iter().map(|r| r.value.as_str()).collect();
    assert_eq!(shown[0], "•••• •••• •••• 1111");
    assert_eq!(shown[1], "+• (•••) •••-••-67");
    assert_eq!(shown[3], "GB•• •••• •••• •••• ••54 32");
    assert_eq!(shown[9], "•••-••-6789");
    assert_eq!(shown[11], "••••••••");

    // RestoreText: the card masked, the email in full.
    let text = format!("pay with {} and mail {}", tokens[0], tokens[2]);
    let restored = billing
        .restore_text(pb::RestoreTextRequest {
            text,
            purpose: String::new(),
            ..Default::default()
        })
        .await
        .expect("billing restores")
        .into_inner();
    assert_eq!(restored.restored, 2);
    assert_eq!(
        restored.text,
        "pay with •••• •••• •••• 1111 and mail ivan.petrov@mail.ru"
    );

    // KYC sees everything in full, with a purpose.
    let mut kyc = server.client_with_key(KYC_KEY).await;
    let results = kyc
        .detokenize(pb::DetokenizeRequest {
            tokens: tokens.clone(),
            purpose: "kyc-review".into(),
        })
        .await
        .expect("kyc detokenizes")
        .into_inner()
        .results;
    for ((_, value), result) in SAMPLES.iter().zip(&results) {
        assert_eq!(
            (result.value.as_str(), result.reveal),
            (*value, pb::Reveal::Full as i32)
        );
    }
    let values: Vec<&str> = SAMPLES.iter().map(|(_, v)| *v).collect();
    assert_log_is_clean(&server, &values);
}

#[tokio::test]
async fn a_missing_purpose_is_permission_denied_where_required() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), &four_principals());
    let mut admin = server.client().await;
    let token = tokenize(&mut admin, SUBJECT, vec![item("ivan@mail.ru", "email")])
        .await
        .remove(0);
    let mut kyc = server.client_with_key(KYC_KEY).await;
    for purpose in ["", "   "] {
        let status = kyc
            .detokenize(pb::DetokenizeRequest {
                tokens: vec![token.clone()],
                purpose: purpose.into(),
            })
            .await
            .expect_err("no purpose");
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(status.message().contains("purpose"), "{status:?}");
        let status = kyc
            .restore_text(pb::RestoreTextRequest {
                text: token.clone(),
                purpose: purpose.into(),
                ..Default::default()
            })
            .await
            .expect_err("no purpose");
        assert_eq!(status.code(), Code::PermissionDenied);
    }
    server.wait_for_log("reason=\"purpose_required\"", 4).await;
    assert_log_is_clean(&server, &["ivan@mail.ru"]);
}

#[tokio::test]
async fn the_101st_value_of_a_minute_is_resource_exhausted_and_alerted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limited = format!(
        "[[principals]]\nname = \"limited\"\napi_key_sha256 = \"{}\"\nallow = [\"detokenize\", \"restore_text\"]\nreveal = {{ default = \"full\" }}\nmax_detokenize_per_minute = 100\n",
        digest(BILLING_KEY)
    );
    let server = start(dir.path(), &limited);
    let mut admin = server.client().await;
    let items = (0..101).map(|n| item(&card(n), "card")).collect();
    let tokens = tokenize(&mut admin, SUBJECT, items).await;

    let mut client = server.client_with_key(BILLING_KEY).await;
    let start = std::time::Instant::now();
    let first = client
        .detokenize(pb::DetokenizeRequest {
            tokens: tokens[..100].to_vec(),
            purpose: String::new(),
        })
        .await
        .expect("100 values are within the limit");
    assert_eq!(first.into_inner().results.len(), 100);
    let second = client
        .detokenize(pb::DetokenizeRequest {
            tokens: tokens[100..].to_vec(),
            purpose: String::new(),
        })
        .await;
    match second {
        Err(status) => assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}"),
        // The bucket refills 100 a minute: one value is back after 0.6 s,
        // which only a very slow run reaches.
        Ok(_) => assert!(
            start.elapsed() >= std::time::Duration::from_millis(600),
            "the 101st value was served {:?} after the first 100",
            start.elapsed()
        ),
    }
    // Restored tokens count too: 10 of them do not fit for 6 s.
    let text: Vec<&str> = tokens[..10].iter().map(String::as_str).collect();
    let status = client
        .restore_text(pb::RestoreTextRequest {
            text: text.join(" and "),
            purpose: String::new(),
            ..Default::default()
        })
        .await
        .expect_err("restored tokens count too");
    assert_eq!(status.code(), Code::ResourceExhausted);

    server.wait_for_log("alert=\"rate_warning\"", 1).await;
    server.wait_for_log("alert=\"rate_exceeded\"", 1).await;
    let log = std::fs::read_to_string(server.log_path()).expect("log");
    assert!(
        log.contains("tokenvault::alert"),
        "alerts on their own target"
    );
    let mut admin_api = tokenvault::cli::keys::connect_admin(&server.data_dir())
        .await
        .expect("admin socket")
        .expect("server is running");
    let stats = admin_api
        .stats(pb::admin::StatsRequest {})
        .await
        .expect("stats")
        .into_inner();
    assert!(stats.alerts_rate_warning >= 1 && stats.alerts_rate_exceeded >= 1);
    // The audit log holds the alerts as records of the principal.
    let audit = std::fs::read_to_string(server.data_dir().join("audit.jsonl")).expect("audit");
    let alerts: Vec<serde_json::Value> = audit
        .lines()
        .map(|line| serde_json::from_str(line).expect("record"))
        .filter(|r: &serde_json::Value| r["outcome"]["result"] == "alert")
        .collect();
    for kind in ["rate_warning", "rate_exceeded"] {
        assert!(
            alerts
                .iter()
                .any(|r| r["outcome"]["kind"] == kind && r["principal"] == "limited"),
            "no {kind} alert record in the audit log"
        );
    }
    let cards: Vec<String> = (0..101).map(card).collect();
    let cards: Vec<&str> = cards.iter().map(String::as_str).collect();
    assert_log_is_clean(&server, &cards);
}

// ---- new-value limits (Tokenize as a dictionary oracle) ----

/// The audit records of `server` whose outcome is an alert of `kind`.
fn alert_records(server: &Server, kind: &str) -> Vec<serde_json::Value> {
    let audit = std::fs::read_to_string(server.data_dir().join("audit.jsonl")).expect("audit");
    audit
        .lines()
        .map(|line| serde_json::from_str(line).expect("record"))
        .filter(|r: &serde_json::Value| {
            r["outcome"]["result"] == "alert" && r["outcome"]["kind"] == kind
        })
        .collect()
}

/// The Luhn-valid cards `427638 ?????? 5671`, by middle digits from
/// `from`.
fn candidates(from: u32) -> impl Iterator<Item = String> {
    (from..1_000_000)
        .map(|middle| format!("427638{middle:06}5671"))
        .filter(|card| {
            let digits: Vec<u8> = card.bytes().map(|b| b - b'0').collect();
            tokenvault::token::checks::luhn_valid(&digits)
        })
}

/// A tokenize-only caller holding one card token of a subject tries the
/// card's ~100,000 Luhn-valid middles (first six and last four are in the
/// token) in deterministic batches: it is refused with RESOURCE_EXHAUSTED
/// long before 1 % of them, the refusal is an alert in the audit log, and
/// RedactText's findings count against the same limit.
#[tokio::test]
async fn brute_forcing_a_card_tokens_middle_digits_is_refused_before_one_percent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), &four_principals());
    let mut admin = server.client().await;
    let real = candidates(990_000).next().expect("a card");
    let known = tokenize(&mut admin, SUBJECT, vec![item(&real, "card")]).await;

    let mut chat = server.client_with_key(CHAT_KEY).await;
    let all: Vec<String> = candidates(0).collect();
    assert!(all.len() > 99_000, "{} candidates", all.len());
    let mut tried = 0usize;
    let mut refused = None;
    for batch in all.chunks(50) {
        let items = batch.iter().map(|c| item(c, "card")).collect();
        match chat
            .tokenize(pb::TokenizeRequest {
                subject_id: SUBJECT.into(),
                items,
            })
            .await
        {
            Ok(response) => {
                tried += batch.len();
                assert!(!response.into_inner().tokens.contains(&known[0]));
            }
            Err(status) => {
                refused = Some(status);
                break;
            }
        }
    }
    let status = refused.expect("the search is refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        tried < all.len() / 100,
        "{tried} candidates were tried, 1 % is {}",
        all.len() / 100
    );
    // RedactText's findings are new values of the subject too.
    let redacted = chat
        .redact_text(pb::RedactTextRequest {
            subject_id: SUBJECT.into(),
            text: format!("my card is {}", card(7)),
            kinds: vec![],
        })
        .await
        .expect_err("RedactText counts the same");
    assert_eq!(redacted.code(), Code::ResourceExhausted);
    // Another subject is not held back.
    chat.tokenize(pb::TokenizeRequest {
        subject_id: "another-subject".into(),
        items: vec![item(&card(8), "card")],
    })
    .await
    .expect("another subject");

    server
        .wait_for_log("alert=\"new_value_limit_exceeded\"", 1)
        .await;
    let alerts = alert_records(&server, "new_value_limit_exceeded");
    assert!(
        alerts
            .iter()
            .any(|r| r["principal"] == "chat-backend" && r["rpc"] == "tokenize"),
        "no refusal alert of chat-backend's Tokenize: {alerts:?}"
    );
    assert!(alerts.iter().any(|r| r["rpc"] == "redact_text"));
    assert!(!alert_records(&server, "new_value_limit_warning").is_empty());
    assert_log_is_clean(&server, &[real.as_str(), SUBJECT]);
}

/// An import of 10,000 subjects with 3 cards each, under the default
/// limits, is served in full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_import_of_ten_thousand_subjects_with_three_cards_is_not_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let importer = format!(
        "[[principals]]\nname = \"importer\"\napi_key_sha256 = \"{}\"\nallow = [\"tokenize\"]\n",
        digest(CHAT_KEY)
    );
    let server = start(dir.path(), &importer);
    let client = server.client_with_key(CHAT_KEY).await;
    let started = std::time::Instant::now();
    // 1,000 items at a time: 333 subjects' calls in flight.
    for group in (0..10_000usize).collect::<Vec<_>>().chunks(333) {
        let calls = group.iter().map(|&subject| {
            let mut client = client.clone();
            async move {
                let items = (0..3)
                    .map(|k| item(&card(subject * 3 + k), "card"))
                    .collect();
                client
                    .tokenize(pb::TokenizeRequest {
                        subject_id: format!("imported-{subject}"),
                        items,
                    })
                    .await
                    .map(|r| r.into_inner().tokens.len())
            }
        });
        for served in futures_util::future::join_all(calls).await {
            assert_eq!(served.expect("an imported subject is not refused"), 3);
        }
    }
    eprintln!("imported 30,000 cards in {:?}", started.elapsed());
    assert!(alert_records(&server, "new_value_limit_exceeded").is_empty());
}

/// On RocksDB the windows are kept in the store: a restart within the
/// minute gives no allowance back, for the detokenize limit and the
/// new-value limits alike.
#[tokio::test]
async fn a_restart_within_the_window_does_not_refill_the_limits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limited = format!(
        "{}[[principals]]\nname = \"limited\"\napi_key_sha256 = \"{}\"\nallow = [\"detokenize\"]\nreveal = {{ default = \"full\" }}\nmax_detokenize_per_minute = 100\n",
        four_principals(),
        digest(BILLING_KEY.replace("0002", "0009").as_str())
    );
    let mut server = start(dir.path(), &limited);
    let mut admin = server.client().await;
    let tokens = tokenize(
        &mut admin,
        SUBJECT,
        (0..100).map(|n| item(&card(n), "card")).collect(),
    )
    .await;
    let limited_key = BILLING_KEY.replace("0002", "0009");
    // Within one clock minute (the shared window's).
    let now = unix_now();
    if 60 - now % 60 < 30 {
        tokio::time::sleep(std::time::Duration::from_secs((60 - now % 60) as u64 + 1)).await;
    }
    let mut client = server.client_with_key(&limited_key).await;
    client
        .detokenize(pb::DetokenizeRequest {
            tokens: tokens.clone(),
            purpose: String::new(),
        })
        .await
        .expect("100 values");
    let mut chat = server.client_with_key(CHAT_KEY).await;
    chat.tokenize(pb::TokenizeRequest {
        subject_id: "restarted-subject".into(),
        items: (0..100).map(|n| item(&card(1000 + n), "card")).collect(),
    })
    .await
    .expect("100 new values");

    server.kill9();
    server.restart();
    let mut client = server.client_with_key(&limited_key).await;
    let status = client
        .detokenize(pb::DetokenizeRequest {
            tokens: tokens[..1].to_vec(),
            purpose: String::new(),
        })
        .await
        .expect_err("the detokenize window survives the restart");
    assert_eq!(status.code(), Code::ResourceExhausted);
    let mut chat = server.client_with_key(CHAT_KEY).await;
    let status = chat
        .tokenize(pb::TokenizeRequest {
            subject_id: "restarted-subject".into(),
            items: vec![item(&card(5000), "card")],
        })
        .await
        .expect_err("the new-value window survives the restart");
    assert_eq!(status.code(), Code::ResourceExhausted);
}

// ---- actor tokens ----

const AUDIENCE: &str = "tokenvault-test";
const ISSUER: &str = "test-idp";

fn unix_now() -> i64 {
    tokenvault::clock::unix_now()
}

fn claims(sub: &str, amr: &[&str]) -> serde_json::Value {
    serde_json::json!({"sub": sub, "aud": AUDIENCE, "iss": ISSUER, "iat": unix_now(), "exp": unix_now() + 600, "amr": amr})
}

#[tokio::test]
async fn actors_behind_one_service_have_their_own_limits_and_second_factor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (signing, public) = es256_key(dir.path(), "idp");
    let (impostor, _) = es256_key(dir.path(), "impostor");
    let config = format!(
        r#"
[actor_tokens]
audience = "{AUDIENCE}"
issuer = "{ISSUER}"
keys = [{{ kid = "k1", alg = "ES256", public_key_pem = "{public}" }}]

[[principals]]
name = "shared-billing"
api_key_sha256 = "{billing}"
allow = ["detokenize"]
reveal = {{ default = "full" }}
max_detokenize_per_minute = 1000
max_detokenize_per_minute_per_actor = 5
full_reveal_needs_second_factor = true

[[principals]]
name = "strict"
api_key_sha256 = "{kyc}"
allow = ["detokenize"]
reveal = {{ default = "full" }}
full_reveal_needs_second_factor = true
without_second_factor = "deny"
"#,
        public = public.display(),
        billing = digest(BILLING_KEY),
        kyc = digest(KYC_KEY),
    );
    let server = start(dir.path(), &config);
    let mut admin = server.client().await;
    let items = (0..8).map(|n| item(&card(n), "card")).collect();
    let tokens = tokenize(&mut admin, SUBJECT, items).await;

    // alice signed in with a one-time password: full reveal, 5 a minute.
    let alice_jwt = jwt(&signing, claims("alice@example.com", &["pwd", "otp"]));
    let mut alice = actor_client(&server, BILLING_KEY, Some(&alice_jwt)).await;
    let results = detokenize_as(&mut alice, &tokens[..5], "support-case")
        .await
        .expect("alice reads 5");
    assert_eq!(results[0].value, card(0));
    assert_eq!(results[0].reveal, pb::Reveal::Full as i32);
    let status = detokenize_as(&mut alice, &tokens[5..6], "support-case")
        .await
        .expect_err("alice's 6th");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    // bob, same service, still reads; with a password only, masked.
    let bob_jwt = jwt(&signing, claims("bob@example.com", &["pwd"]));
    let mut bob = actor_client(&server, BILLING_KEY, Some(&bob_jwt)).await;
    let results = detokenize_as(&mut bob, &tokens[5..6], "support-case")
        .await
        .expect("bob reads");
    assert_eq!(results[0].reveal, pb::Reveal::Masked as i32);
    assert_eq!(results[0].value, mask("card", &card(5)));

    // A policy that refuses instead of masking.
    let mut strict_bob = actor_client(&server, KYC_KEY, Some(&bob_jwt)).await;
    let status = detokenize_as(&mut strict_bob, &tokens[..1], "support-case")
        .await
        .expect_err("no 2nd factor");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let mut strict_alice = actor_client(&server, KYC_KEY, Some(&alice_jwt)).await;
    assert!(
        detokenize_as(&mut strict_alice, &tokens[..1], "support-case")
            .await
            .is_ok()
    );

    // Bad signature, expired, wrong audience: UNAUTHENTICATED.
    let bad = [
        jwt(&impostor, claims("mallory", &["otp"])),
        jwt(
            &signing,
            serde_json::json!({"sub": "alice@example.com", "aud": AUDIENCE, "iss": ISSUER, "iat": unix_now() - 700, "exp": unix_now() - 120, "amr": ["otp"]}),
        ),
        jwt(
            &signing,
            serde_json::json!({"sub": "alice@example.com", "aud": "other-service", "iss": ISSUER, "iat": unix_now(), "exp": unix_now() + 600, "amr": ["otp"]}),
        ),
        "not-a-jwt".to_string(),
    ];
    for token in &bad {
        let mut client = actor_client(&server, BILLING_KEY, Some(token)).await;
        let status = detokenize_as(&mut client, &tokens[7..8], "support-case")
            .await
            .expect_err("bad actor token");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }

    server.wait_for_log("scope=\"actor\"", 1).await;
    let log = std::fs::read_to_string(server.log_path()).expect("log");
    assert!(
        log.contains("actor=\"alice@example.com\""),
        "the alert names the actor"
    );
    let cards: Vec<String> = (0..8).map(card).collect();
    let mut secrets: Vec<&str> = cards.iter().map(String::as_str).collect();
    secrets.extend([alice_jwt.as_str(), bob_jwt.as_str()]);
    assert_log_is_clean(&server, &secrets);
}

/// `[actor_tokens] max_age_seconds` and a principal's `actor_client_id`:
/// a token issued too long ago (whatever its `exp`), or issued to another
/// client, is UNAUTHENTICATED; the audit record of each refusal names the
/// principal that presented it.
#[tokio::test]
async fn old_or_foreign_actor_tokens_are_refused_and_audited_under_the_principal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (signing, public) = es256_key(dir.path(), "idp");
    let config = format!(
        r#"
[[principals]]
name = "bound-billing"
api_key_sha256 = "{billing}"
allow = ["detokenize"]
reveal = {{ default = "full" }}
actor_client_id = "billing-svc"

[actor_tokens]
audience = "{AUDIENCE}"
issuer = "{ISSUER}"
max_age_seconds = 600
keys = [{{ kid = "k1", alg = "ES256", public_key_pem = "{public}" }}]
"#,
        public = public.display(),
        billing = digest(BILLING_KEY),
    );
    let server = start(dir.path(), &config);
    let mut admin = server.client().await;
    let tokens = tokenize(&mut admin, SUBJECT, vec![item(&card(0), "card")]).await;

    let token = |claims: serde_json::Value| jwt(&signing, claims);
    let now = unix_now();
    let good = token(
        serde_json::json!({"sub": "alice", "aud": AUDIENCE, "iss": ISSUER, "iat": now, "exp": now + 600, "azp": "billing-svc"}),
    );
    let mut alice = actor_client(&server, BILLING_KEY, Some(&good)).await;
    assert_eq!(
        detokenize_as(&mut alice, &tokens, "support-case")
            .await
            .expect("bound token")[0]
            .value,
        card(0)
    );
    let refused = [
        // Issued an hour ago, still far from its exp.
        token(
            serde_json::json!({"sub": "alice", "aud": AUDIENCE, "iss": ISSUER, "iat": now - 3600, "exp": now + 86400, "azp": "billing-svc"}),
        ),
        // Issued to another service.
        token(
            serde_json::json!({"sub": "alice", "aud": AUDIENCE, "iss": ISSUER, "iat": now, "exp": now + 600, "azp": "support-svc"}),
        ),
        // No client named, but the principal is bound to one.
        token(
            serde_json::json!({"sub": "alice", "aud": AUDIENCE, "iss": ISSUER, "iat": now, "exp": now + 600}),
        ),
    ];
    for bad in &refused {
        let mut client = actor_client(&server, BILLING_KEY, Some(bad)).await;
        let status = detokenize_as(&mut client, &tokens, "support-case")
            .await
            .expect_err("refused actor token");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }

    // The refusals are audited at the end of their second: wait for them.
    let audit_file = server.data_dir().join("audit.jsonl");
    let denials = || {
        std::fs::read_to_string(&audit_file)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("record"))
            .filter(|r| {
                r["outcome"]["result"] == "denied" && r["outcome"]["code"] == "unauthenticated"
            })
            .collect::<Vec<_>>()
    };
    // Refusals are counted per source, principal and reason a second
    // (`api::denials`): each record carries its calls in `count`.
    let calls = |records: &[serde_json::Value]| {
        records
            .iter()
            .map(|r| r["count"].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while calls(&denials()) < refused.len() as u64 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let denials = denials();
    assert_eq!(calls(&denials), refused.len() as u64, "{denials:?}");
    for denial in &denials {
        assert_eq!(denial["principal"], "bound-billing", "{denial}");
    }
    let reasons: Vec<&str> = denials
        .iter()
        .filter_map(|d| d["outcome"]["reason"].as_str())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("max_age_seconds")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("another client")),
        "{reasons:?}"
    );
}

#[test]
fn a_bad_actor_key_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let not_a_key = dir.path().join("not-a-key.pem");
    std::fs::write(&not_a_key, "hello").expect("file");
    let config = format!(
        "{}{}[actor_tokens]\naudience = \"{AUDIENCE}\"\nkeys = [{{ kid = \"k1\", alg = \"ES256\", public_key_pem = \"{}\" }}]\n",
        kek(dir.path()),
        admin_principal_toml(),
        not_a_key.display()
    );
    let mut server = Server::prepared_with_config(dir.path(), &config, &[]);
    let (status, log) = server.run_to_exit();
    assert!(!status.success());
    assert!(log.contains("actor_tokens.keys[0] (k1)"), "{log}");
}

// ---- SIGHUP ----

#[tokio::test]
async fn sighup_reloads_policies_and_keeps_them_when_the_file_is_broken() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chat = |allow: &str| {
        format!(
            "[[principals]]\nname = \"chat-backend\"\napi_key_sha256 = \"{}\"\nallow = [{allow}]\n",
            digest(CHAT_KEY)
        )
    };
    let base = format!("{}{}", kek(dir.path()), admin_principal_toml());
    let server = start(dir.path(), &chat("\"tokenize\""));
    let mut client = server.client_with_key(CHAT_KEY).await;
    let token = tokenize(&mut client, SUBJECT, vec![item("ivan@mail.ru", "email")])
        .await
        .remove(0);
    let denied = call(&mut client, "detokenize", &token)
        .await
        .expect_err("not yet");
    assert_eq!(denied.code(), Code::PermissionDenied);

    std::fs::write(
        server.config_path(),
        format!("{base}{}", chat("\"tokenize\", \"detokenize\"")),
    )
    .expect("new config");
    server.sighup();
    server.wait_for_log("SIGHUP: policies reloaded", 1).await;
    call(&mut client, "detokenize", &token)
        .await
        .expect("allowed after reload");

    // A broken file: an unknown rpc. Rejected, the policy in force stays.
    std::fs::write(
        server.config_path(),
        format!("{base}{}", chat("\"detokenise\"")),
    )
    .expect("broken config");
    server.sighup();
    server.wait_for_log("SIGHUP: config rejected", 1).await;
    call(&mut client, "detokenize", &token)
        .await
        .expect("old policy stays");
    let log = std::fs::read_to_string(server.log_path()).expect("log");
    assert!(log.contains("detokenise"), "the log line names the problem");
    assert_log_is_clean(&server, &["ivan@mail.ru"]);
}

/// No value, subject id or API key in the server log.
fn assert_log_is_clean(server: &Server, values: &[&str]) {
    let log = std::fs::read_to_string(server.log_path()).expect("server log");
    for secret in
        values
            .iter()
            .copied()
            .chain([SUBJECT, CHAT_KEY, BILLING_KEY, KYC_KEY, ERASURE_KEY])
    {
        assert!(!log.contains(secret), "the server log holds {secret:?}");
    }
}
