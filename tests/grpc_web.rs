//! gRPC-Web on the gRPC port (`[grpc_web]`), as a browser's client sends
//! it (HTTP/1.1, `application/grpc-web+proto`), here with curl: the same
//! service and gate as gRPC, CORS only for the configured origins, and
//! off by default.

mod common;

use std::path::Path;
use std::process::Command;

use common::{admin_principal_toml, card, item, tokenize, Server, TEST_API_KEY};
use prost::Message;
use tokenvault::pb;

const ORIGIN: &str = "https://console.example.com";

fn config(root: &Path) -> String {
    std::fs::create_dir_all(root).expect("root");
    let kek = root.join("kek.key");
    std::fs::write(&kek, [5u8; 32]).expect("kek");
    format!(
        "{}\n[grpc_web]\ncors_allowed_origins = [\"{ORIGIN}\"]\n\n[kek]\nprovider = \"local\"\npath = \"{}\"\n",
        admin_principal_toml(),
        kek.display()
    )
}

/// A gRPC-Web call's answer: its HTTP status line and headers, and its
/// body.
struct Answer {
    headers: String,
    body: Vec<u8>,
}

/// POSTs one gRPC-Web message (`key`: the API key, if any) over HTTP/1.1;
/// None when the server does not answer it as HTTP.
fn grpc_web(dir: &Path, url: &str, key: Option<&str>, message: &[u8]) -> Option<Answer> {
    let mut framed = vec![0u8];
    framed.extend_from_slice(&u32::try_from(message.len()).expect("len").to_be_bytes());
    framed.extend_from_slice(message);
    let request = dir.join("request.bin");
    std::fs::write(&request, framed).expect("request");
    let (headers, body) = (dir.join("headers.txt"), dir.join("body.bin"));
    let mut command = Command::new("curl");
    command
        .args(["-sS", "--http1.1", "-m", "20", "-X", "POST"])
        .args(["-H", "content-type: application/grpc-web+proto"])
        .args(["-H", "x-grpc-web: 1"])
        .arg("--data-binary")
        .arg(format!("@{}", request.display()))
        .arg("-D")
        .arg(&headers)
        .arg("-o")
        .arg(&body)
        .arg(format!("{url}/tokenvault.v1.TokenVault/Tokenize"));
    if let Some(key) = key {
        command.args(["-H", &format!("authorization: Bearer {key}")]);
    }
    let output = command.output().expect("run curl");
    if !output.status.success() {
        return None;
    }
    Some(Answer {
        headers: std::fs::read_to_string(&headers).expect("headers"),
        body: std::fs::read(&body).expect("body"),
    })
}

/// The frames of a gRPC-Web body: (messages, trailers text).
fn frames(mut body: &[u8]) -> (Vec<Vec<u8>>, String) {
    let (mut messages, mut trailers) = (Vec::new(), String::new());
    while body.len() >= 5 {
        let flag = body[0];
        let len = u32::from_be_bytes(body[1..5].try_into().expect("4 bytes")) as usize;
        let data = &body[5..5 + len];
        if flag & 0x80 != 0 {
            trailers.push_str(std::str::from_utf8(data).expect("trailers are text"));
        } else {
            messages.push(data.to_vec());
        }
        body = &body[5 + len..];
    }
    (messages, trailers)
}

#[tokio::test]
async fn grpc_web_serves_the_same_service_behind_the_same_gate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("tv");
    let mut server = Server::start_with_config(&root, &config(&root));
    let value = card(7);
    let request = pb::TokenizeRequest {
        subject_id: "cust-web".into(),
        items: vec![item(&value, "card")],
    }
    .encode_to_vec();

    let answer = grpc_web(dir.path(), &server.addr, Some(TEST_API_KEY), &request)
        .expect("gRPC-Web is answered over HTTP/1.1");
    assert!(
        answer.headers.starts_with("HTTP/1.1 200"),
        "{}",
        answer.headers
    );
    assert!(
        answer
            .headers
            .to_ascii_lowercase()
            .contains("content-type: application/grpc-web+proto"),
        "{}",
        answer.headers
    );
    let (messages, trailers) = frames(&answer.body);
    assert!(trailers.contains("grpc-status:0"), "{trailers:?}");
    let response = pb::TokenizeResponse::decode(&messages[0][..]).expect("a TokenizeResponse");
    let mut client = server.client().await;
    let over_grpc = tokenize(&mut client, "cust-web", vec![item(&value, "card")]).await;
    assert_eq!(response.tokens, over_grpc, "one service: the same token");

    // No API key: refused by the same gate.
    let refused = grpc_web(dir.path(), &server.addr, None, &request).expect("answered");
    let (_, trailers) = frames(&refused.body);
    let all = format!("{}{trailers}", refused.headers.to_ascii_lowercase());
    assert!(
        all.contains("grpc-status: 16") || all.contains("grpc-status:16"),
        "{all}"
    );
    server.stop().await;
}

/// A CORS preflight from `origin`: the response headers, lowercased.
fn preflight(url: &str, origin: &str) -> String {
    let output = Command::new("curl")
        .args([
            "-sS",
            "-m",
            "20",
            "-X",
            "OPTIONS",
            "-o",
            "/dev/null",
            "-D",
            "-",
        ])
        .args(["-H", &format!("origin: {origin}")])
        .args(["-H", "access-control-request-method: POST"])
        .args([
            "-H",
            "access-control-request-headers: authorization,content-type,x-grpc-web",
        ])
        .arg(format!("{url}/tokenvault.v1.TokenVault/Tokenize"))
        .output()
        .expect("run curl");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).to_ascii_lowercase()
}

#[tokio::test]
async fn cors_answers_only_the_configured_origins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("tv");
    let mut server = Server::start_with_config(&root, &config(&root));
    let allowed = preflight(&server.addr, ORIGIN);
    assert!(
        allowed.contains(&format!("access-control-allow-origin: {ORIGIN}")),
        "{allowed}"
    );
    assert!(allowed.contains("authorization"), "{allowed}");
    let other = preflight(&server.addr, "https://evil.example");
    assert!(!other.contains("access-control-allow-origin"), "{other}");
    server.stop().await;
}

#[tokio::test]
async fn grpc_web_is_off_by_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(dir.path());
    let request = pb::TokenizeRequest {
        subject_id: "cust-web".into(),
        items: vec![item(&card(1), "card")],
    }
    .encode_to_vec();
    let answer = grpc_web(dir.path(), &server.addr, Some(&server.api_key()), &request);
    assert!(
        answer
            .as_ref()
            .is_none_or(|a| !a.headers.starts_with("HTTP/1.1 200")),
        "an HTTP/1.1 gRPC-Web call is not served without [grpc_web]: {:?}",
        answer.map(|a| a.headers)
    );
    server.stop().await;
}
