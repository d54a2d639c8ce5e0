//! Running it in production: the `/metrics` endpoint counts exactly the
//! calls made and shows no value or subject; the JSON request log has one
//! line per call with principal, RPC, status and duration and no value;
//! `config check` names every problem of a broken config.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{admin_principal_toml, item, Server};
use sha2::{Digest, Sha256};
use tokenvault::pb;

const READER_KEY: &str = "tvk_test_reader_0123456789";

fn kek(root: &Path) -> String {
    std::fs::create_dir_all(root).expect("root");
    let path = root.join("kek.key");
    std::fs::write(&path, [7u8; 32]).expect("kek");
    format!(
        "[kek]\nprovider = \"local\"\npath = \"{}\"\n",
        path.display()
    )
}

/// GET /metrics over plain HTTP/1.1.
fn scrape(addr: &str) -> String {
    get(addr, "/metrics")
}

/// GET `path` of the metrics endpoint over plain HTTP/1.1: the body of a
/// 200 answer.
fn get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to /metrics");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let (_, body) = response.split_once("\r\n\r\n").expect("body");
    body.to_string()
}

/// Series (name with labels, as printed) → value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn metrics_addr(root: &Path) -> String {
    let stdout = std::fs::read_to_string(root.join("stdout.log")).expect("stdout");
    stdout
        .lines()
        .find_map(|line| line.strip_prefix("tokenvault metrics on "))
        .expect("the server prints its metrics address")
        .trim()
        .to_string()
}

#[tokio::test]
async fn metrics_count_the_calls_and_the_json_log_has_a_line_per_call_without_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let config = format!(
        "{}[metrics]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\n{}[[principals]]\nname = \"reader\"\napi_key_sha256 = \"{}\"\nallow = [\"tokenize\"]\n",
        kek(root),
        admin_principal_toml(),
        hex::encode(Sha256::digest(READER_KEY.as_bytes())),
    );
    let server = Server::start_with_config(root, &config);
    let mut client = server.client().await;

    const N: usize = 5;
    const M: usize = 3;
    let subjects: Vec<String> = (0..N).map(|i| format!("customer-{i}-7f3a9c")).collect();
    let values: Vec<String> = (0..N)
        .map(|i| format!("jane.doe.{i}@example.org"))
        .collect();
    let mut tokens = Vec::new();
    for (subject, value) in subjects.iter().zip(&values) {
        tokens.extend(common::tokenize(&mut client, subject, vec![item(value, "email")]).await);
    }
    for token in tokens.iter().take(M) {
        let results = common::detokenize(&mut client, std::slice::from_ref(token)).await;
        assert_eq!(results[0].status, pb::TokenStatus::Found as i32);
    }
    // One call the policy refuses, one with a bad argument.
    let mut reader = server.client_with_key(READER_KEY).await;
    let denied = reader
        .detokenize(pb::DetokenizeRequest {
            tokens: vec![tokens[0].clone()],
            purpose: "test".into(),
        })
        .await
        .expect_err("reader may not detokenize");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    let invalid = client
        .tokenize(pb::TokenizeRequest {
            subject_id: subjects[0].clone(),
            items: vec![item(&values[0], "no_such_format")],
        })
        .await
        .expect_err("unknown format");
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument);

    let text = scrape(&metrics_addr(root));
    // The probes' paths, for a kubelet that cannot speak TLS to the gRPC
    // port.
    for path in ["/healthz", "/readyz"] {
        assert_eq!(get(&metrics_addr(root), path), "ok\n", "{path}");
    }
    let got = samples(&text);
    let value = |series: &str| got.get(series).copied().unwrap_or(-1.0);
    for (series, expected) in [
        (
            r#"tokenvault_requests_total{code="ok",protocol="grpc",rpc="tokenize"}"#,
            N,
        ),
        (
            r#"tokenvault_requests_total{code="invalid_argument",protocol="grpc",rpc="tokenize"}"#,
            1,
        ),
        (
            r#"tokenvault_requests_total{code="ok",protocol="grpc",rpc="detokenize"}"#,
            M,
        ),
        (
            r#"tokenvault_requests_total{code="permission_denied",protocol="grpc",rpc="detokenize"}"#,
            1,
        ),
        (
            r#"tokenvault_request_duration_seconds_count{protocol="grpc",rpc="tokenize"}"#,
            N + 1,
        ),
        (
            r#"tokenvault_request_duration_seconds_count{protocol="grpc",rpc="detokenize"}"#,
            M + 1,
        ),
        (r#"tokenvault_values_total{rpc="tokenize"}"#, N),
        (r#"tokenvault_values_total{rpc="detokenize"}"#, M),
        // M reveals and the refusal are audited.
        (r#"tokenvault_audit_appends_total{outcome="ok"}"#, M + 1),
        ("tokenvault_rate_limit_refusals_total", 0),
    ] {
        assert_eq!(value(series), expected as f64, "{series} in\n{text}");
    }
    // N subjects: N data keys wrapped (plus the system key at first start).
    assert_eq!(
        value(r#"tokenvault_kek_calls_total{op="wrap"}"#),
        (N + 1) as f64,
        "{text}"
    );
    assert!(
        value("tokenvault_dek_cache_hits_total") >= M as f64,
        "{text}"
    );
    assert!(value("tokenvault_store_estimated_keys") > 0.0, "{text}");
    assert!(
        got.contains_key("tokenvault_store_sst_files_bytes"),
        "{text}"
    );
    assert!(
        got.contains_key("tokenvault_store_pending_compaction_bytes"),
        "{text}"
    );
    assert!(
        !got.keys().any(|series| series.contains("rpc=\"other\"")),
        "{text}"
    );
    let secrets: Vec<&String> = subjects.iter().chain(&values).chain(&tokens).collect();
    for secret in &secrets {
        assert!(!text.contains(secret.as_str()), "{secret} in the metrics");
    }

    // The request log: one JSON object per call, fields at the top level.
    let log = std::fs::read_to_string(server.log_path()).expect("log");
    let requests: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .filter(|event: &serde_json::Value| event["target"] == "tokenvault::request")
        .filter(|event| event["rpc"] != "health")
        .collect();
    let count = |rpc: &str, status: &str, principal: &str| {
        requests
            .iter()
            .filter(|e| e["rpc"] == rpc && e["status"] == status && e["principal"] == principal)
            .count()
    };
    assert_eq!(count("tokenize", "ok", "admin"), N, "{requests:?}");
    assert_eq!(count("tokenize", "invalid_argument", "admin"), 1);
    assert_eq!(count("detokenize", "ok", "admin"), M);
    assert_eq!(count("detokenize", "permission_denied", "reader"), 1);
    assert_eq!(requests.len(), N + M + 2, "{requests:?}");
    for event in &requests {
        assert!(event["duration_ms"].as_f64().is_some(), "{event}");
        assert_eq!(event["message"], "request");
        let expected_values = u64::from(event["status"] == "ok");
        assert_eq!(event["values"].as_u64(), Some(expected_values), "{event}");
    }
    for secret in &secrets {
        assert!(!log.contains(secret.as_str()), "{secret} in the server log");
    }
}

/// `tokenvault config check ARGS...`: exit success and stdout.
fn config_check(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_tokenvault"))
        .args(["config", "check"])
        .args(args)
        .envs(env.iter().copied())
        .env("TOKENVAULT_LOG", "off")
        .stdin(Stdio::null())
        .output()
        .expect("run tokenvault");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

fn write(root: &Path, name: &str, text: &str) -> String {
    let path = root.join(name);
    std::fs::write(&path, text).expect("write config");
    path.display().to_string()
}

/// A free loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

#[test]
fn config_check_names_each_problem_and_passes_a_good_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let data = root.join("data");
    // The ledger outside the data directory, as a config outside --dev
    // must have it.
    let ledger = format!(
        "[erasure]\nledger = \"{}\"\n",
        root.join("ledger").join("erasure-ledger.jsonl").display()
    );
    let good = format!(
        "data_dir = \"{}\"\n{ledger}{}[metrics]\nlisten = \"127.0.0.1:9464\"\n{}",
        data.display(),
        kek(root),
        admin_principal_toml()
    );
    let good_path = write(root, "good.toml", &good);
    let (ok, out) = config_check(&[&good_path], &[]);
    assert!(ok, "a good config passes: {out}");
    assert!(out.contains(": ok"), "{out}");
    assert!(!data.exists(), "config check creates nothing");

    std::fs::write(root.join("a-file"), "not a directory").expect("file");
    std::fs::write(root.join("server.key"), "-----BEGIN PRIVATE KEY-----").expect("key");
    let vault_port = closed_port();
    let principal = |digest: &str| {
        format!("[[principals]]\nname = \"chat\"\napi_key_sha256 = \"{digest}\"\nallow = [\"tokenize\"]\n")
    };
    let good_principal = principal(&"ab".repeat(32));
    let base = format!("data_dir = \"{}\"\n{ledger}", data.display());
    let cases: Vec<(&str, String, Vec<&str>, &str)> = vec![
        (
            "unknown key",
            format!("{good}shutdown_grace = 3\n"),
            vec![],
            "(shutdown_grace): unknown field",
        ),
        (
            "unreadable KEK key file",
            format!(
                "{base}[kek]\nprovider = \"local\"\npath = \"{}\"\n{good_principal}",
                root.join("missing-kek.key").display()
            ),
            vec![],
            "kek.path: cannot read",
        ),
        (
            "missing TLS cert",
            format!(
                "{good}[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
                root.join("missing-cert.pem").display(),
                root.join("server.key").display()
            ),
            vec![],
            "tls.cert: cannot read",
        ),
        (
            "bad listen address",
            format!("listen = \"localhost-ish\"\n{good}"),
            vec![],
            "line 1 (listen): invalid socket address",
        ),
        (
            "unreachable Vault",
            format!(
                "{base}[kek]\nprovider = \"vault\"\naddress = \"http://127.0.0.1:{vault_port}\"\nkey_name = \"tokenvault\"\ntoken_env = \"TV_CHECK_TOKEN\"\ntimeout_ms = 300\n{good_principal}"
            ),
            vec!["--connect"],
            "kek (vault at http://127.0.0.1:",
        ),
        (
            "api_key_sha256 not hex",
            format!("{base}{}{}", kek(root), principal(&"zz".repeat(32))),
            vec![],
            "principals[0] (chat): api_key_sha256 must be 64 hex digits",
        ),
        (
            "ledger in the data directory",
            format!(
                "data_dir = \"{}\"\n[erasure]\nledger = \"{}\"\n{}{good_principal}",
                data.display(),
                data.join("erasure-ledger.jsonl").display(),
                kek(root)
            ),
            vec![],
            "erasure.ledger: ",
        ),
        (
            "no ledger named",
            format!("data_dir = \"{}\"\n{}{good_principal}", data.display(), kek(root)),
            vec![],
            "erasure.ledger is not set",
        ),
        (
            "unwritable audit dir",
            format!(
                "{good}[audit]\nfile = \"{}\"\n",
                root.join("a-file").join("audit.jsonl").display()
            ),
            vec![],
            "audit.file:",
        ),
    ];
    for (name, text, flags, named) in &cases {
        let path = write(root, &format!("{}.toml", name.replace(' ', "-")), text);
        let mut args = vec![path.as_str()];
        args.extend(flags.iter().copied());
        let (ok, out) = config_check(&args, &[("TV_CHECK_TOKEN", "s.not-a-real-token")]);
        assert!(!ok, "{name}: config check must fail: {out}");
        assert!(out.contains(named), "{name}: {named:?} not in:\n{out}");
        assert_eq!(
            out.lines().count(),
            1,
            "{name}: one problem, one line:\n{out}"
        );
    }
    // The Vault is only contacted with --connect.
    let vault_path = root.join("unreachable-Vault.toml");
    let (ok, out) = config_check(
        &[&vault_path.display().to_string()],
        &[("TV_CHECK_TOKEN", "s.not-a-real-token")],
    );
    assert!(ok, "without --connect the Vault config is only read: {out}");

    // Every problem at once, not only the first.
    let all = format!(
        "listen = \"localhost-ish\"\nshutdown_grace = 3\n{base}[kek]\nprovider = \"local\"\npath = \"{}\"\n[cache]\nmax_subjects = 0\n[audit]\nfile = \"{}\"\n{}",
        root.join("missing-kek.key").display(),
        root.join("a-file").join("audit.jsonl").display(),
        principal("xyz"),
    );
    let path = write(root, "all.toml", &all);
    let (ok, out) = config_check(&[&path], &[]);
    assert!(!ok);
    for named in [
        "(listen)",
        "(shutdown_grace)",
        "cache.max_subjects",
        "principals[0] (chat)",
        "kek.path",
        "audit.file",
    ] {
        assert!(out.contains(named), "{named:?} not in:\n{out}");
    }
    assert_eq!(out.lines().count(), 6, "{out}");
}
