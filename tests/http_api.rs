//! The HTTP/JSON API of the real binary, driven by clients that are not
//! ours: Python `requests` (`tests/http/scenario.py`: the round trip, bad
//! input, refusals, audit records), Node.js `fetch`
//! (`tests/http/scenario.mjs`) and `curl` (`tests/http/scenario.sh`);
//! and, from here, that gRPC and HTTP are one service: the same tokens,
//! one rate limit, the same refusals, counted apart by protocol.

mod common;

use std::path::Path;
use std::process::Command;

use common::{admin_principal_toml, card, item, Server, TEST_API_KEY};
use sha2::{Digest, Sha256};
use tonic::Code;

const CHAT_KEY: &str = "tvk_http_chat_backend_0001";
const LIMITED_KEY: &str = "tvk_http_limited_service_0002";

fn config(root: &Path) -> String {
    std::fs::create_dir_all(root).expect("root");
    let kek = root.join("kek.key");
    std::fs::write(&kek, [7u8; 32]).expect("kek");
    let digest = |key: &str| hex::encode(Sha256::digest(key.as_bytes()));
    format!(
        r#"{admin}
[[principals]]
name = "chat"
api_key_sha256 = "{chat}"
allow = ["tokenize", "redact_text"]

[[principals]]
name = "limited"
api_key_sha256 = "{limited}"
allow = ["detokenize"]
reveal = {{ default = "full" }}
max_detokenize_per_minute = 5

[limits]
max_message_bytes = 65536

[http]
listen = "127.0.0.1:0"

[metrics]
listen = "127.0.0.1:0"

[kek]
provider = "local"
path = "{kek}"
"#,
        admin = admin_principal_toml(),
        chat = digest(CHAT_KEY),
        limited = digest(LIMITED_KEY),
        kek = kek.display(),
    )
}

fn start(root: &Path) -> (Server, String) {
    let server = Server::start_with_config(root, &config(root));
    let url = server
        .http_url()
        .expect("the server prints its HTTP address");
    (server, url)
}

fn run(command: &mut Command, what: &str) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("run {what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn script(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/http")
        .join(name)
}

#[tokio::test]
async fn python_requests_drives_the_whole_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut server, url) = start(dir.path());
    let audit = server.data_dir().join("audit.jsonl");
    run(
        Command::new("python3")
            .arg(script("scenario.py"))
            .args([&url, TEST_API_KEY, CHAT_KEY])
            .arg(&audit),
        "tests/http/scenario.py (needs python3 -m pip install requests: tests/setup-machine.sh)",
    );
    server.stop().await;
}

#[tokio::test]
async fn node_fetch_drives_the_round_trip_bad_input_and_refusals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut server, url) = start(dir.path());
    run(
        Command::new("node")
            .arg(script("scenario.mjs"))
            .args([&url, TEST_API_KEY, CHAT_KEY]),
        "tests/http/scenario.mjs (needs Node.js 18 or later: tests/setup-machine.sh)",
    );
    server.stop().await;
}

/// The OpenAPI document: served without credentials, equal to the copy in
/// docs/ (so the copy is what the proto makes), valid for a validator that
/// is not ours, and good enough for a generator that is not ours to make a
/// client that tokenizes and detokenizes.
#[tokio::test]
async fn the_openapi_document_is_served_validates_and_a_client_generated_from_it_tokenizes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut server, url) = start(&dir.path().join("tv"));
    let (status, served) = get(&format!("{url}/v1/openapi.json"));
    assert_eq!(status, 200, "{served}");
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json");
    let checked_in = std::fs::read_to_string(&docs).expect("docs/openapi.json");
    assert!(
        served == checked_in,
        "docs/openapi.json is not the document the proto makes: run `curl -s {url}/v1/openapi.json > docs/openapi.json` against a server built from this tree"
    );
    run(
        Command::new("openapi-spec-validator").arg(&docs),
        "openapi-spec-validator (python3 -m pip install openapi-spec-validator: tests/setup-machine.sh)",
    );
    run(
        Command::new("python3")
            .arg(script("generated_client.py"))
            .arg(&docs)
            .arg(dir.path())
            .args([&url, TEST_API_KEY]),
        "tests/http/generated_client.py (needs openapi-python-client: tests/setup-machine.sh)",
    );
    server.stop().await;
}

#[tokio::test]
async fn curl_drives_the_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut server, url) = start(dir.path());
    run(
        Command::new("bash")
            .arg(script("scenario.sh"))
            .args([&url, TEST_API_KEY]),
        "tests/http/scenario.sh",
    );
    server.stop().await;
}

/// One HTTP call with curl: its status and body.
fn curl(url: &str, key: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let output = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}", "-X", "POST"])
        .args(["-H", &format!("authorization: Bearer {key}")])
        .args([
            "-H",
            "content-type: application/json",
            "--data-binary",
            body,
        ])
        .arg(format!("{url}{path}"))
        .output()
        .expect("run curl");
    assert!(output.status.success(), "curl: {output:?}");
    let text = String::from_utf8(output.stdout).expect("utf-8");
    let (body, status) = text.rsplit_once('\n').expect("status line");
    (
        status.parse().expect("status"),
        serde_json::from_str(body).expect("json body"),
    )
}

#[tokio::test]
async fn grpc_and_http_are_one_service() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut server, url) = start(dir.path());
    let mut admin = server.client().await;
    let values: Vec<String> = (0..6).map(card).collect();

    // The same deterministic tokens by either protocol.
    let grpc_tokens = admin
        .tokenize(tokenvault::pb::TokenizeRequest {
            subject_id: "cust-parity".into(),
            items: values.iter().map(|v| item(v, "card")).collect(),
        })
        .await
        .expect("tokenize")
        .into_inner()
        .tokens;
    let items: Vec<_> = values
        .iter()
        .map(|v| serde_json::json!({"value": v, "format": "card"}))
        .collect();
    let body = serde_json::json!({"subjectId": "cust-parity", "items": items}).to_string();
    let (status, http) = curl(&url, TEST_API_KEY, "/v1/tokenize", &body);
    assert_eq!(status, 200, "{http}");
    assert_eq!(http["tokens"], serde_json::json!(grpc_tokens));

    // One rate limit: 3 values over gRPC, then 3 over HTTP go over 5 a
    // minute, refused as RESOURCE_EXHAUSTED / 429.
    let mut limited = server.client_with_key(LIMITED_KEY).await;
    limited
        .detokenize(tokenvault::pb::DetokenizeRequest {
            tokens: grpc_tokens[..3].to_vec(),
            purpose: "parity".into(),
        })
        .await
        .expect("3 of 5 a minute");
    let body = serde_json::json!({"tokens": grpc_tokens[3..], "purpose": "parity"}).to_string();
    let (status, refused) = curl(&url, LIMITED_KEY, "/v1/detokenize", &body);
    assert_eq!(status, 429, "{refused}");
    assert_eq!(refused["code"], Code::ResourceExhausted as i32);

    // The same refusal, by code, for a call the policy denies.
    let mut chat = server.client_with_key(CHAT_KEY).await;
    let denied = chat
        .detokenize(tokenvault::pb::DetokenizeRequest {
            tokens: grpc_tokens[..1].to_vec(),
            purpose: String::new(),
        })
        .await
        .expect_err("chat may not detokenize");
    let body = serde_json::json!({"tokens": grpc_tokens[..1]}).to_string();
    let (status, refused) = curl(&url, CHAT_KEY, "/v1/detokenize", &body);
    assert_eq!(status, 403);
    assert_eq!(refused["code"], denied.code() as i32);
    assert_eq!(refused["message"], denied.message());

    // Counted apart: the same series, by protocol.
    let (_, scraped) = get(&format!("{}/metrics", metrics_url(dir.path())));
    for (series, count) in [
        (r#"{code="ok",protocol="grpc",rpc="tokenize"}"#, 1),
        (r#"{code="ok",protocol="http",rpc="tokenize"}"#, 1),
        (r#"{code="ok",protocol="grpc",rpc="detokenize"}"#, 1),
        (
            r#"{code="resource_exhausted",protocol="http",rpc="detokenize"}"#,
            1,
        ),
        (
            r#"{code="permission_denied",protocol="grpc",rpc="detokenize"}"#,
            1,
        ),
        (
            r#"{code="permission_denied",protocol="http",rpc="detokenize"}"#,
            1,
        ),
    ] {
        let line = format!("tokenvault_requests_total{series} {count}");
        assert!(
            scraped.lines().any(|l| l == line),
            "no `{line}` in\n{scraped}"
        );
    }
    assert!(
        scraped.contains(
            r#"tokenvault_request_duration_seconds_count{protocol="http",rpc="tokenize"} 1"#
        ),
        "{scraped}"
    );
    server.stop().await;
}

/// The metrics endpoint's address, as the server printed it.
fn metrics_url(root: &Path) -> String {
    let stdout = std::fs::read_to_string(root.join("stdout.log")).expect("stdout");
    stdout
        .lines()
        .find_map(|line| line.strip_prefix("tokenvault metrics on "))
        .map(|addr| format!("http://{}", addr.trim()))
        .expect("metrics address")
}

#[tokio::test]
async fn dev_mode_serves_http_beside_grpc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(dir.path());
    let url = server.http_url().expect("serve --dev serves HTTP/JSON");
    assert_ne!(
        url.replace("http://", ""),
        server.addr.replace("http://", "")
    );
    let body = r#"{"subjectId":"dev","items":[{"value":"a","format":"opaque"}]}"#;
    let (status, tokens) = curl(&url, &server.api_key(), "/v1/tokenize", body);
    assert_eq!(status, 200, "{tokens}");
    server.stop().await;
}

/// `GET` with curl: status and body.
fn get(url: &str) -> (u16, String) {
    let output = Command::new("curl")
        .args(["-sS", "-m", "10", "-w", "\n%{http_code}"])
        .arg(url)
        .output()
        .expect("run curl");
    assert!(output.status.success(), "curl {url}: {output:?}");
    let text = String::from_utf8(output.stdout).expect("utf-8");
    let (body, status) = text.rsplit_once('\n').expect("status line");
    (status.parse().expect("status"), body.to_string())
}

/// Polls `url` until it answers `status`; the bound is generous, the
/// assertion is the answer, not a speed.
async fn wait_for(url: &str, status: u16) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (got, body) = get(url);
        if got == status {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{url} still answers {got} {body:?}, not {status}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn readyz_is_ready_only_while_the_key_provider_is_reachable() {
    use common::bao::{Bao, KEY_NAME};
    const TOKEN_ENV: &str = "TV_TEST_VAULT_TOKEN";
    let dir = tempfile::tempdir().expect("tempdir");
    let bao = Bao::dev(&dir.path().join("bao"));
    let root = dir.path().join("tv");
    let config = format!(
        "[kek]\nprovider = \"vault\"\naddress = \"{}\"\nkey_name = \"{KEY_NAME}\"\ntoken_env = \"{TOKEN_ENV}\"\ntimeout_ms = 1000\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n{}",
        bao.addr(),
        admin_principal_toml()
    );
    let mut server =
        Server::start_with_config_env(&root, &config, &[(TOKEN_ENV, bao.root_token.as_str())]);
    let http = server.http_url().expect("http address");
    let metrics = metrics_url(&root);

    for base in [&http, &metrics] {
        assert_eq!(wait_for(&format!("{base}/readyz"), 200).await, "ok\n");
    }
    bao.pause();
    for base in [&http, &metrics] {
        let body = wait_for(&format!("{base}/readyz"), 503).await;
        assert_eq!(body, "not ready: key provider unreachable\n");
        // Alive all the same: subjects with cached keys are still served.
        assert_eq!(get(&format!("{base}/healthz")), (200, "ok\n".to_string()));
    }
    bao.resume();
    for base in [&http, &metrics] {
        assert_eq!(wait_for(&format!("{base}/readyz"), 200).await, "ok\n");
    }
    server.stop().await;
}

/// The parity table: one call of each RPC by one caller, over either
/// protocol. `subject` is the subject of the call (forget gets one per
/// protocol, so that each has the same tokens to erase).
#[derive(Clone, Copy, Debug)]
enum ParityCall {
    Tokenize,
    Detokenize,
    Redact,
    Restore,
    Export,
    Forget,
}

const PARITY_SUBJECT: &str = "cust-parity-table";
const PARITY_TEXT: &str = "card 5500 0000 0000 0004, mail to olga.k@example.ru";

fn parity_values() -> Vec<(String, &'static str)> {
    vec![(card(3), "card"), ("olga.k@example.ru".into(), "email")]
}

/// What a call answered, in canonical JSON: the message (the export's
/// messages as an array), or the gRPC code and message of its refusal.
/// Forget receipts differ by their time, sequence and MAC: only the
/// count and the receipt's fields are kept.
type Answer = Result<serde_json::Value, (i32, String)>;

fn comparable(call: ParityCall, mut answer: serde_json::Value) -> serde_json::Value {
    if let ParityCall::Forget = call {
        let fields: Vec<String> = answer["receipt"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        answer = serde_json::json!({"tokensErased": answer["tokensErased"], "receipt": fields});
    }
    answer
}

async fn parity_grpc(
    client: &mut tokenvault::cli::client::Client,
    call: ParityCall,
    forget_subject: &str,
    tokens: &[String],
    redacted: &str,
) -> Answer {
    use tokenvault::pb;
    let json = |m: &dyn erased::Json| m.to_json();
    let refused = |s: tonic::Status| (s.code() as i32, s.message().to_string());
    match call {
        ParityCall::Tokenize => client
            .tokenize(pb::TokenizeRequest {
                subject_id: PARITY_SUBJECT.into(),
                items: parity_values().iter().map(|(v, f)| item(v, f)).collect(),
            })
            .await
            .map(|r| json(&r.into_inner()))
            .map_err(refused),
        ParityCall::Detokenize => client
            .detokenize(pb::DetokenizeRequest {
                tokens: tokens.to_vec(),
                purpose: "parity".into(),
            })
            .await
            .map(|r| json(&r.into_inner()))
            .map_err(refused),
        ParityCall::Redact => client
            .redact_text(pb::RedactTextRequest {
                subject_id: PARITY_SUBJECT.into(),
                text: PARITY_TEXT.into(),
                kinds: vec![],
            })
            .await
            .map(|r| json(&r.into_inner()))
            .map_err(refused),
        ParityCall::Restore => client
            .restore_text(pb::RestoreTextRequest {
                text: redacted.into(),
                purpose: "parity".into(),
                subject_id: String::new(),
            })
            .await
            .map(|r| json(&r.into_inner()))
            .map_err(refused),
        ParityCall::Export => {
            let mut stream = client
                .export_subject(pb::ExportSubjectRequest {
                    subject_id: PARITY_SUBJECT.into(),
                    purpose: "parity".into(),
                })
                .await
                .map_err(refused)?
                .into_inner();
            let mut lines = Vec::new();
            while let Some(message) = stream.message().await.map_err(refused)? {
                lines.push(json(&message));
            }
            Ok(serde_json::Value::Array(lines))
        }
        ParityCall::Forget => client
            .forget_subject(pb::ForgetSubjectRequest {
                subject_id: forget_subject.into(),
                reason: "parity".into(),
            })
            .await
            .map(|r| comparable(call, json(&r.into_inner())))
            .map_err(refused),
    }
}

fn parity_http(
    url: &str,
    key: &str,
    call: ParityCall,
    forget_subject: &str,
    tokens: &[String],
    redacted: &str,
) -> Answer {
    use serde_json::json;
    let answer = |(status, body): (u16, serde_json::Value)| {
        if status == 200 {
            Ok(comparable(call, body))
        } else {
            let message = body["message"].as_str().unwrap_or_default().to_string();
            Err((body["code"].as_i64().unwrap_or(-1) as i32, message))
        }
    };
    let items: Vec<_> = parity_values()
        .iter()
        .map(|(v, f)| json!({"value": v, "format": f}))
        .collect();
    match call {
        ParityCall::Tokenize => answer(curl(
            url,
            key,
            "/v1/tokenize",
            &json!({"subjectId": PARITY_SUBJECT, "items": items}).to_string(),
        )),
        ParityCall::Detokenize => answer(curl(
            url,
            key,
            "/v1/detokenize",
            &json!({"tokens": tokens, "purpose": "parity"}).to_string(),
        )),
        ParityCall::Redact => answer(curl(
            url,
            key,
            "/v1/redact",
            &json!({"subjectId": PARITY_SUBJECT, "text": PARITY_TEXT}).to_string(),
        )),
        ParityCall::Restore => answer(curl(
            url,
            key,
            "/v1/restore",
            &json!({"text": redacted, "purpose": "parity"}).to_string(),
        )),
        ParityCall::Export => {
            let output = Command::new("curl")
                .args(["-sS", "-w", "\n%{http_code}"])
                .args(["-H", &format!("authorization: Bearer {key}")])
                .arg(format!(
                    "{url}/v1/subjects/{PARITY_SUBJECT}/export?purpose=parity"
                ))
                .output()
                .expect("run curl");
            let text = String::from_utf8(output.stdout).expect("utf-8");
            let (body, status) = text.rsplit_once('\n').expect("status line");
            let lines: Vec<serde_json::Value> = body
                .lines()
                .map(|line| serde_json::from_str(line).expect("a JSON line"))
                .collect();
            if status == "200" {
                Ok(serde_json::Value::Array(
                    lines.iter().map(|line| line["result"].clone()).collect(),
                ))
            } else {
                answer((status.parse().expect("status"), lines[0].clone()))
            }
        }
        ParityCall::Forget => answer(curl(
            url,
            key,
            &format!("/v1/subjects/{forget_subject}:forget"),
            &json!({"reason": "parity"}).to_string(),
        )),
    }
}

mod erased {
    /// A generated message in its canonical JSON (its pbjson serde impl).
    pub trait Json {
        fn to_json(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> serde_json::Value {
            serde_json::to_value(self).expect("canonical JSON")
        }
    }
}

/// The audit records written since `from`, without what differs between
/// two calls of the same thing (sequence, time, chain, request id).
fn audit_since(path: &Path, from: usize) -> (Vec<String>, usize) {
    let text = std::fs::read_to_string(path).expect("audit log");
    let records: Vec<serde_json::Value> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).expect("an audit record"))
        .collect();
    let mut kept: Vec<String> = records[from..]
        .iter()
        .map(|record| {
            let mut record = record.clone();
            if let Some(fields) = record.as_object_mut() {
                fields.retain(|name, _| {
                    [
                        "principal",
                        "rpc",
                        "outcome",
                        "count",
                        "purpose",
                        "actor",
                        "formats",
                    ]
                    .contains(&name.as_str())
                });
            }
            record.to_string()
        })
        .collect();
    kept.sort();
    (kept, records.len())
}

/// Issue 23 must-show 2: every RPC, by a caller it allows and one it
/// denies, over gRPC and then over HTTP: the same answers (values, tokens,
/// texts, counts; refusals by the same code and message) and the same
/// audit records.
#[tokio::test]
async fn every_rpc_allowed_and_denied_answers_alike_over_grpc_and_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut server, url) = start(dir.path());
    let audit = server.data_dir().join("audit.jsonl");
    let mut admin = server.client().await;
    for subject in ["cust-parity-forget-grpc", "cust-parity-forget-http"] {
        common::tokenize(&mut admin, subject, vec![item(&card(4), "card")]).await;
    }
    let tokens = common::tokenize(
        &mut admin,
        PARITY_SUBJECT,
        parity_values().iter().map(|(v, f)| item(v, f)).collect(),
    )
    .await;
    let redacted = admin
        .redact_text(tokenvault::pb::RedactTextRequest {
            subject_id: PARITY_SUBJECT.into(),
            text: PARITY_TEXT.into(),
            kinds: vec![],
        })
        .await
        .expect("redact")
        .into_inner()
        .text;
    let (_, mut seen) = audit_since(&audit, 0);
    let calls = [
        ParityCall::Tokenize,
        ParityCall::Detokenize,
        ParityCall::Redact,
        ParityCall::Restore,
        ParityCall::Export,
        ParityCall::Forget,
    ];
    let mut chat = server.client_with_key(CHAT_KEY).await;
    let mut grpc_answers = Vec::new();
    for call in calls {
        for (who, client) in [("admin", &mut admin), ("chat", &mut chat)] {
            let answer =
                parity_grpc(client, call, "cust-parity-forget-grpc", &tokens, &redacted).await;
            grpc_answers.push((call, who, answer));
        }
    }
    let (grpc_audit, after_grpc) = audit_since(&audit, seen);
    seen = after_grpc;
    let mut refusals = 0;
    for (call, who, grpc) in &grpc_answers {
        let key = if *who == "admin" {
            TEST_API_KEY
        } else {
            CHAT_KEY
        };
        let http = parity_http(
            &url,
            key,
            *call,
            "cust-parity-forget-http",
            &tokens,
            &redacted,
        );
        assert_eq!(&http, grpc, "{call:?} by {who}: HTTP and gRPC differ");
        refusals += usize::from(grpc.is_err());
    }
    // The chat backend may tokenize and redact only; what the admin got
    // back is the real thing, not two empty answers.
    assert_eq!(refusals, 4, "{grpc_answers:?}");
    let admin_got = |wanted: &str| {
        grpc_answers
            .iter()
            .find(|(call, who, _)| format!("{call:?}") == wanted && *who == "admin")
            .and_then(|(_, _, answer)| answer.clone().ok())
            .expect("an admin answer")
    };
    assert_eq!(admin_got("Detokenize")["results"][0]["value"], card(3));
    // Its two values and the card RedactText found in the text.
    assert_eq!(admin_got("Export").as_array().map(Vec::len), Some(3));
    assert_eq!(admin_got("Restore")["text"], PARITY_TEXT);
    assert_eq!(admin_got("Forget")["tokensErased"], "1");
    assert!(
        grpc_audit
            .iter()
            .any(|r| r.contains(r#""principal":"chat""#) && r.contains("denied")),
        "{grpc_audit:?}"
    );
    let (http_audit, _) = audit_since(&audit, seen);
    assert!(!grpc_audit.is_empty());
    assert_eq!(
        http_audit, grpc_audit,
        "the same audit records for either protocol"
    );
    server.stop().await;
}
