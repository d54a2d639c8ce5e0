//! mTLS against the real binary: a client certificate from `[tls]
//! client_ca` is accepted and mapped to its principal by `mtls_subject`;
//! one from another CA, an expired one, or none at all is refused. Uses
//! the certificates of `keys/dev-certs.sh`. The HTTP/JSON port under
//! `[tls]` takes the same certificates and maps them the same way.

mod common;

use std::path::{Path, PathBuf};

use common::{admin_principal_toml, dev_certs, item, Server};
use tokenvault::pb;
use tokenvault::pb::token_vault_client::TokenVaultClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::Code;

const SUBJECT: &str = "subject-mtls-51d2aa";

fn start(root: &Path, certs: &Path) -> Server {
    start_with(root, certs, "")
}

/// [`start`] with more config (e.g. an `[http]` section).
fn start_with(root: &Path, certs: &Path, extra: &str) -> Server {
    std::fs::create_dir_all(root).expect("root");
    let kek = root.join("kek.key");
    std::fs::write(&kek, [5u8; 32]).expect("kek");
    let config = format!(
        r#"
[kek]
provider = "local"
path = "{kek}"

[tls]
cert = "{certs}/server-chain.pem"
key = "{certs}/server.key"
client_ca = "{certs}/ca.pem"

[[principals]]
name = "billing"
mtls_subject = "urn:tokenvault:principal:billing"
allow = ["tokenize", "detokenize"]
reveal = {{ default = "full" }}

[[principals]]
name = "chat-backend"
mtls_subject = "chat-backend"
allow = ["tokenize"]

# The stranger's certificate has SANs: its CN must not be matched.
[[principals]]
name = "by-common-name"
mtls_subject = "CN=stranger"
allow = ["tokenize"]
{extra}
{admin}"#,
        kek = kek.display(),
        certs = certs.display(),
        admin = admin_principal_toml(),
    );
    Server::start_with_config(root, &config)
}

/// An https channel to the server with `client` (a `client-NAME` file
/// stem) as the client certificate, or none.
async fn connect(
    server: &Server,
    certs: &Path,
    client: Option<&str>,
) -> Result<Channel, tonic::transport::Error> {
    let read = |name: String| std::fs::read(certs.join(name)).expect("cert file");
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.pem".into())))
        .domain_name("localhost");
    if let Some(client) = client {
        tls = tls.identity(Identity::from_pem(
            read(format!("{client}.pem")),
            read(format!("{client}.key")),
        ));
    }
    Channel::from_shared(server.addr.replace("http://", "https://"))
        .expect("address")
        .tls_config(tls)?
        .connect()
        .await
}

async fn tokenize_over(channel: Channel) -> Result<Vec<String>, tonic::Status> {
    TokenVaultClient::new(channel)
        .tokenize(pb::TokenizeRequest {
            subject_id: SUBJECT.into(),
            items: vec![item("4111 1111 1111 1111", "card")],
        })
        .await
        .map(|r| r.into_inner().tokens)
}

#[tokio::test]
async fn a_client_certificate_from_the_ca_names_its_principal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    dev_certs(&certs, &["billing", "chat-backend", "stranger"]);
    let server = start(&dir.path().join("server"), &certs);

    // billing by its URI SAN: tokenize and detokenize, nothing else.
    let channel = connect(&server, &certs, Some("client-billing"))
        .await
        .expect("connect");
    let tokens = tokenize_over(channel.clone())
        .await
        .expect("billing tokenizes");
    let mut billing = TokenVaultClient::new(channel);
    let results = billing
        .detokenize(pb::DetokenizeRequest {
            tokens: tokens.clone(),
            purpose: String::new(),
        })
        .await
        .expect("billing detokenizes")
        .into_inner()
        .results;
    assert_eq!(results[0].value, "4111 1111 1111 1111");
    let denied = billing
        .redact_text(pb::RedactTextRequest {
            subject_id: SUBJECT.into(),
            text: "x".into(),
            kinds: vec![],
        })
        .await
        .expect_err("not allowed");
    assert_eq!(denied.code(), Code::PermissionDenied);

    // chat-backend by its DNS SAN: tokenize only.
    let channel = connect(&server, &certs, Some("client-chat-backend"))
        .await
        .expect("connect");
    tokenize_over(channel.clone())
        .await
        .expect("chat tokenizes");
    let denied = TokenVaultClient::new(channel)
        .detokenize(pb::DetokenizeRequest {
            tokens,
            purpose: String::new(),
        })
        .await
        .expect_err("chat may not detokenize");
    assert_eq!(denied.code(), Code::PermissionDenied);

    // A good certificate that names no principal by a SAN (its CN names
    // one, but a certificate with SANs is matched by them only), and no
    // API key.
    let channel = connect(&server, &certs, Some("client-stranger"))
        .await
        .expect("connect");
    let status = tokenize_over(channel).await.expect_err("no principal");
    assert_eq!(status.code(), Code::Unauthenticated);

    let log = std::fs::read_to_string(server.log_path()).expect("log");
    assert!(log.contains("mTLS on"));
    assert!(
        log.contains("principal=billing"),
        "denial names the principal"
    );
    assert!(!log.contains(SUBJECT) && !log.contains("4111 1111 1111 1111"));
}

#[tokio::test]
async fn foreign_expired_and_missing_client_certificates_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs: PathBuf = dir.path().join("certs");
    // The expired and untrusted certificates carry the first name.
    dev_certs(&certs, &["billing"]);
    let server = start(&dir.path().join("server"), &certs);

    for client in [Some("client-untrusted"), Some("client-expired"), None] {
        // TLS 1.3: the server checks the client certificate after the
        // client's side of the handshake, so the refusal may come at
        // connect or at the first call.
        let refused = match connect(&server, &certs, client).await {
            Err(_) => true,
            Ok(channel) => tokenize_over(channel).await.is_err(),
        };
        assert!(refused, "{client:?} must be refused");
    }
    // The good one still works on the same server.
    let channel = connect(&server, &certs, Some("client-billing"))
        .await
        .expect("connect");
    tokenize_over(channel).await.expect("billing tokenizes");
}

/// A server with `[tls]` but no `client_ca`: TLS, callers by API key.
fn start_tls_only(root: &Path, certs: &Path) -> Server {
    std::fs::create_dir_all(root).expect("root");
    let kek = root.join("kek.key");
    std::fs::write(&kek, [5u8; 32]).expect("kek");
    let config = format!(
        "[kek]\nprovider = \"local\"\npath = \"{kek}\"\n[tls]\ncert = \"{certs}/server-chain.pem\"\nkey = \"{certs}/server.key\"\n{admin}",
        kek = kek.display(),
        certs = certs.display(),
        admin = admin_principal_toml(),
    );
    Server::start_with_config(root, &config)
}

/// Runs the binary as a client with only `envs` of the TOKENVAULT_
/// variables set.
fn cli(args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tokenvault"));
    for var in [
        "TOKENVAULT_ADDR",
        "TOKENVAULT_API_KEY",
        "TOKENVAULT_API_KEY_FILE",
        "TOKENVAULT_CA_FILE",
        "TOKENVAULT_CLIENT_CERT",
        "TOKENVAULT_CLIENT_KEY",
    ] {
        command.env_remove(var);
    }
    command
        .args(args)
        .envs(envs.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run tokenvault")
}

/// Tokenizes a card with the CLI, then detokenizes its token; returns the
/// detokenize line.
fn cli_round_trip(extra: &[&str], envs: &[(&str, &str)]) -> String {
    const CARD: &str = "4111 1111 1111 1111";
    let mut args = vec!["tokenize", "--subject", SUBJECT, "--format", "card"];
    args.extend_from_slice(extra);
    args.push(CARD);
    let out = cli(&args, envs);
    assert!(
        out.status.success(),
        "tokenize: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).expect("utf8");
    let token = token.trim();
    assert_ne!(token, CARD);
    let mut args = vec!["detokenize"];
    args.extend_from_slice(extra);
    args.push(token);
    let out = cli(&args, envs);
    assert!(
        out.status.success(),
        "detokenize: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout).expect("utf8");
    assert_eq!(line.trim(), format!("{token}\tFOUND\t{CARD}"));
    line
}

#[tokio::test]
async fn the_cli_tokenizes_and_detokenizes_over_tls_and_mtls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    dev_certs(&certs, &["billing", "chat-backend"]);
    let cert = |name: &str| certs.join(name).display().to_string();
    let no_dev_key = dir.path().join("no-data-dir").display().to_string();

    // TLS, the API key from a file, the CA as options.
    let server = start_tls_only(&dir.path().join("tls"), &certs);
    let addr = server.addr.replace("http://", "https://");
    let key_file = dir.path().join("api.key");
    std::fs::write(&key_file, common::TEST_API_KEY).expect("key file");
    let key_file = key_file.display().to_string();
    let ca = cert("ca.pem");
    cli_round_trip(
        &[
            "--ca-file",
            &ca,
            "--api-key-file",
            &key_file,
            "--data-dir",
            &no_dev_key,
        ],
        &[("TOKENVAULT_ADDR", &addr)],
    );
    // The same server without its CA: one line naming the address.
    let out = cli(
        &["detokenize", "--api-key-file", &key_file, "tok_x"],
        &[("TOKENVAULT_ADDR", &addr)],
    );
    assert!(!out.status.success());
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(error.contains(&addr), "{error}");
    drop(server);

    // mTLS, everything from the environment, no API key at all.
    let server = start(&dir.path().join("mtls"), &certs);
    let addr = server.addr.replace("http://", "https://");
    let (client_cert, client_key) = (cert("client-billing.pem"), cert("client-billing.key"));
    cli_round_trip(
        &["--data-dir", &no_dev_key],
        &[
            ("TOKENVAULT_ADDR", &addr),
            ("TOKENVAULT_CA_FILE", &ca),
            ("TOKENVAULT_CLIENT_CERT", &client_cert),
            ("TOKENVAULT_CLIENT_KEY", &client_key),
        ],
    );
    // A client certificate needs its key.
    let out = cli(
        &["detokenize", "--client-cert", &client_cert, "tok_x"],
        &[("TOKENVAULT_ADDR", &addr), ("TOKENVAULT_CA_FILE", &ca)],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--client-key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One HTTPS call with curl to the HTTP/JSON port, with `client` (a
/// `client-NAME` file stem) as the client certificate or none: its status
/// and body, or None when no HTTP answer came (a refused handshake).
fn https(
    server: &Server,
    certs: &Path,
    client: Option<&str>,
    path: &str,
    body: &str,
) -> Option<(u16, serde_json::Value)> {
    let url = server.http_url().expect("the HTTP port's address");
    let port = url.rsplit(':').next().expect("port");
    let mut curl = std::process::Command::new("curl");
    // A bound below the handshake deadline (10 s): a call held up behind
    // a silent client fails instead of passing late.
    curl.args([
        "-sS",
        "--max-time",
        "5",
        "-w",
        "\n%{http_code}",
        "-X",
        "POST",
    ])
    .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
    .arg("--cacert")
    .arg(certs.join("ca.pem"))
    .args([
        "-H",
        "content-type: application/json",
        "--data-binary",
        body,
    ]);
    if let Some(client) = client {
        curl.arg("--cert")
            .arg(certs.join(format!("{client}.pem")))
            .arg("--key")
            .arg(certs.join(format!("{client}.key")));
    }
    let output = curl
        .arg(format!("https://localhost:{port}{path}"))
        .output()
        .expect("run curl");
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).expect("utf-8");
    let (body, status) = text.rsplit_once('\n').expect("status line");
    Some((
        status.parse().expect("status"),
        serde_json::from_str(body).expect("json body"),
    ))
}

#[tokio::test]
async fn the_http_port_under_tls_maps_client_certificates_to_principals_as_grpc_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    dev_certs(&certs, &["billing", "chat-backend"]);
    let server = start_with(
        &dir.path().join("server"),
        &certs,
        "[http]\nlisten = \"127.0.0.1:0\"",
    );
    // A client that connects and never starts its handshake holds up no
    // one: the calls below are answered while it hangs on.
    let http_addr = server.http_url().expect("url").replace("http://", "");
    let _silent = std::net::TcpStream::connect(&http_addr).expect("connect");
    let value = common::card(7);
    let body =
        serde_json::json!({"subjectId": SUBJECT, "items": [{"value": value, "format": "card"}]})
            .to_string();
    let (status, tokenized) = https(
        &server,
        &certs,
        Some("client-billing"),
        "/v1/tokenize",
        &body,
    )
    .expect("an answer");
    assert_eq!(status, 200, "{tokenized}");
    let token = tokenized["tokens"][0]
        .as_str()
        .expect("a token")
        .to_string();
    let body = serde_json::json!({"tokens": [token], "purpose": "support"}).to_string();
    let (status, revealed) = https(
        &server,
        &certs,
        Some("client-billing"),
        "/v1/detokenize",
        &body,
    )
    .expect("an answer");
    assert_eq!(status, 200, "{revealed}");
    assert_eq!(revealed["results"][0]["value"], value.as_str());

    // Another certificate is another principal, with its own policy.
    let (status, refused) = https(
        &server,
        &certs,
        Some("client-chat-backend"),
        "/v1/detokenize",
        &body,
    )
    .expect("an answer");
    assert_eq!(status, 403, "{refused}");
    assert_eq!(refused["code"], Code::PermissionDenied as i32);

    // No certificate, or one from another CA: no HTTP answer at all.
    assert!(https(&server, &certs, None, "/v1/detokenize", &body).is_none());
    assert!(https(
        &server,
        &certs,
        Some("client-untrusted"),
        "/v1/detokenize",
        &body
    )
    .is_none());
    // Plaintext to the TLS port gets no answer either.
    let plain = std::process::Command::new("curl")
        .args(["-sS", "-X", "POST", "--data-binary", &body])
        .arg(format!("{}/v1/detokenize", server.http_url().expect("url")))
        .output()
        .expect("run curl");
    assert!(!plain.status.success(), "{plain:?}");
}
