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
