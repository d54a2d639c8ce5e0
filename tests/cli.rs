//! The binary as operators and scripts use it: `serve --config`, the
//! client commands, and one clear line with a non-zero exit on failure.

mod common;

use std::process::{Command, Output};

use common::{item, tokenize, Server};
use sha2::{Digest, Sha256};
use tonic::Code;

fn tokenvault(args: &[&str], envs: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tokenvault"))
        .args(args)
        .env_remove("TOKENVAULT_API_KEY")
        .env_remove("TOKENVAULT_ADDR")
        .envs(envs.iter().copied())
        .output()
        .expect("run tokenvault")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn client_commands_round_trip_with_the_dev_key_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let data_dir = server.data_dir().display().to_string();
    let envs = [("TOKENVAULT_ADDR", server.addr.as_str())];

    let out = tokenvault(
        &[
            "tokenize",
            "--subject",
            "cust-42",
            "--format",
            "card",
            "--data-dir",
            &data_dir,
            "4111 1111 1111 1111",
            "5500-0000-0000-0004",
        ],
        &envs,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let tokens: Vec<String> = stdout(&out).lines().map(String::from).collect();
    assert_eq!(tokens.len(), 2);
    assert!(tokens[0].starts_with("4111 11") && tokens[0].ends_with(" 1111"));

    let mut args = vec!["detokenize", "--data-dir", &data_dir];
    args.extend(tokens.iter().map(String::as_str));
    args.push("tok_aaaaaaaaaaaaaaaaaaaaaaaaaa");
    let out = tokenvault(&args, &envs);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<String> = stdout(&out).lines().map(String::from).collect();
    assert_eq!(
        lines[0],
        format!("{}\tFOUND\t4111 1111 1111 1111", tokens[0])
    );
    assert_eq!(
        lines[1],
        format!("{}\tFOUND\t5500-0000-0000-0004", tokens[1])
    );
    assert_eq!(lines[2], "tok_aaaaaaaaaaaaaaaaaaaaaaaaaa\tNOT_FOUND\t");
}

#[tokio::test]
async fn client_failures_exit_non_zero_with_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let data_dir = server.data_dir().display().to_string();
    let envs = [("TOKENVAULT_ADDR", server.addr.as_str())];

    let out = tokenvault(
        &[
            "tokenize",
            "--subject",
            "s",
            "--format",
            "card",
            "--data-dir",
            &data_dir,
            "4111 1111 1111 1112",
        ],
        &envs,
    );
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out).trim(),
        "tokenvault: InvalidArgument: items[0]: card number fails the Luhn check"
    );

    let bad_key = [
        ("TOKENVAULT_ADDR", server.addr.as_str()),
        ("TOKENVAULT_API_KEY", "nope"),
    ];
    let out = tokenvault(&["detokenize", "x"], &bad_key);
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out).trim(),
        "tokenvault: Unauthenticated: unknown API key"
    );

    let out = tokenvault(&["serve"], &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("serve needs --dev or --config FILE"));
}

#[tokio::test]
async fn serve_config_applies_principals_and_their_allow_lists() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("kek.key");
    std::fs::write(&key_file, [7u8; 32]).expect("kek");
    let chat_key = "chat-backend-secret-key";
    let config = format!(
        r#"
        [kek]
        provider = "local"
        path = "{}"
        [[principals]]
        name = "chat-backend"
        api_key_sha256 = "{}"
        allow = ["tokenize"]
        "#,
        key_file.display(),
        hex::encode(Sha256::digest(chat_key))
    );
    let server = Server::start_with_config(dir.path(), &config);
    assert!(
        !server.data_dir().join("dev-admin.key").exists(),
        "no dev key outside --dev"
    );
    let mut chat = server.client_with_key(chat_key).await;
    let tokens = tokenize(&mut chat, "s", vec![item("Ivan", "text")]).await;
    let status = chat
        .detokenize(tokenvault::pb::DetokenizeRequest {
            tokens,
            purpose: String::new(),
        })
        .await
        .expect_err("chat may not detokenize");
    assert_eq!(status.code(), Code::PermissionDenied);
}

#[test]
fn serve_rejects_unknown_config_keys_naming_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:0\"\n[storage]\nsync_write = false\n",
    )
    .expect("write");
    let out = tokenvault(&["serve", "--config", &path.display().to_string()], &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("sync_write"), "{}", stderr(&out));
}

#[tokio::test]
async fn redact_and_restore_commands_round_trip_a_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let data_dir = server.data_dir().display().to_string();
    let envs = [("TOKENVAULT_ADDR", server.addr.as_str())];
    let message = "Карта 4111 1111 1111 1111, тел. +7 916 123-45-67, почта ivan@example.com";

    let out = tokenvault(
        &[
            "redact",
            "--subject",
            "cust-42",
            "--data-dir",
            &data_dir,
            message,
        ],
        &envs,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let redacted = stdout(&out).trim_end_matches('\n').to_string();
    assert!(!redacted.contains("4111 1111 1111 1111"), "{redacted}");
    assert!(!redacted.contains("+7 916 123-45-67"), "{redacted}");
    assert!(redacted.contains(".invalid"), "{redacted}");

    let out = tokenvault(&["restore", "--data-dir", &data_dir, &redacted], &envs);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim_end_matches('\n'), message);

    // --subject restores only that subject's tokens.
    for (subject, expected) in [("cust-42", message), ("cust-43", redacted.as_str())] {
        let out = tokenvault(
            &[
                "restore",
                "--subject",
                subject,
                "--data-dir",
                &data_dir,
                &redacted,
            ],
            &envs,
        );
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stdout(&out).trim_end_matches('\n'), expected, "{subject}");
    }

    let out = tokenvault(
        &[
            "redact",
            "--subject",
            "cust-42",
            "--kinds",
            "cardz",
            "--data-dir",
            &data_dir,
            message,
        ],
        &envs,
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("cardz"), "{}", stderr(&out));
}
