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

/// What a server run ended with: its exit status (None: still running
/// after the wait, then killed), stdout and stderr.
struct Run {
    status: Option<std::process::ExitStatus>,
    stdout: String,
    stderr: String,
}

/// Runs the binary until it exits, or kills it after `seconds`.
fn run_for(args: &[&str], envs: &[(&str, &str)], seconds: u64) -> Run {
    use std::process::Stdio;
    let dir = tempfile::tempdir().expect("tempdir");
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_tokenvault"))
        .args(args)
        .env_remove("TOKENVAULT_API_KEY")
        .env_remove("TOKENVAULT_ADDR")
        .env("TOKENVAULT_LOG", "warn")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("out"))
        .stderr(std::fs::File::create(&err_path).expect("err"))
        .spawn()
        .expect("spawn tokenvault");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let read = |path| String::from_utf8_lossy(&std::fs::read(path).expect("output")).into_owned();
    Run {
        status,
        stdout: read(&out_path),
        stderr: read(&err_path),
    }
}

/// Writes a config to `dir`: the `top` keys, the data directory, `tables`,
/// a `[kek]` (a local key file unless `tables` has one), an erasure ledger
/// file (unless `tables` has `[erasure.postgres]`) and the test admin
/// principal. Returns its path.
fn config_file(dir: &std::path::Path, top: &str, tables: &str) -> String {
    std::fs::create_dir_all(dir).expect("dir");
    let kek = if tables.contains("[kek]") {
        String::new()
    } else {
        let path = dir.join("kek.key");
        std::fs::write(&path, [7u8; 32]).expect("kek");
        format!(
            "[kek]\nprovider = \"local\"\npath = \"{}\"\n",
            path.display()
        )
    };
    // A PostgreSQL ledger in `tables` replaces the ledger file.
    let ledger = if tables.contains("[erasure.postgres]") {
        String::new()
    } else {
        format!(
            "[erasure]\nledger = \"{}\"\n",
            dir.join("ledger").join("erasure-ledger.jsonl").display()
        )
    };
    let path = dir.join("tokenvault.toml");
    std::fs::write(
        &path,
        format!(
            "{top}\ndata_dir = \"{}\"\n{ledger}{tables}\n{kek}{}",
            dir.join("data").display(),
            common::admin_principal_toml()
        ),
    )
    .expect("config");
    path.display().to_string()
}

#[test]
fn serve_and_config_check_refuse_plaintext_off_loopback_naming_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();

    // A non-loopback listen address (here from --listen) without [tls].
    let config = config_file(&root.join("flag"), "", "");
    let run = run_for(
        &["serve", "--config", &config, "--listen", "0.0.0.0:0"],
        &[],
        20,
    );
    assert!(
        run.status.is_some_and(|s| !s.success()),
        "serve must refuse 0.0.0.0 without TLS: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains("TLS") && run.stderr.contains("0.0.0.0"),
        "{}",
        run.stderr
    );

    // --dev is loopback only.
    let data_dir = root.join("dev-data").display().to_string();
    let run = run_for(
        &[
            "serve",
            "--dev",
            "--listen",
            "0.0.0.0:0",
            "--data-dir",
            &data_dir,
        ],
        &[],
        20,
    );
    assert!(
        run.status.is_some_and(|s| !s.success()),
        "serve --dev must refuse 0.0.0.0: {}",
        run.stderr
    );
    assert!(run.stderr.contains("loopback"), "{}", run.stderr);

    // The listen key, a Vault http:// address and a PostgreSQL connection
    // without TLS, to other machines: refused at start-up and by config
    // check; passed with a warning under allow_plaintext_on_non_loopback.
    for (name, top, tables, named) in [
        ("listen", "listen = \"0.0.0.0:50051\"", "", "0.0.0.0:50051"),
        (
            "vault",
            "",
            "[kek]\nprovider = \"vault\"\naddress = \"http://vault.example:8200\"\nkey_name = \"k\"\ntoken_env = \"TV_TOKEN\"\n",
            "vault.example",
        ),
        (
            "postgres",
            "",
            "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"postgres://tv@db.example:5432/tv\"\n[erasure.postgres]\nurl = \"postgres://tv@db.example:5432/tv_ledger\"\ntls = true\n",
            "db.example",
        ),
    ] {
        let case = root.join(name);
        let config = config_file(&case, top, tables);
        let envs = [("TV_TOKEN", "t")];
        let run = run_for(&["serve", "--config", &config], &envs, 20);
        assert!(
            run.status.is_some_and(|s| !s.success()),
            "{name}: serve must refuse: {}",
            run.stderr
        );
        assert!(
            run.stderr.contains("TLS") && run.stderr.contains(named),
            "{name}: {}",
            run.stderr
        );
        let out = tokenvault(&["config", "check", &config], &envs);
        assert!(!out.status.success(), "{name}: {}", stdout(&out));
        assert!(
            stdout(&out).contains("TLS") && stdout(&out).contains(named),
            "{name}: {}",
            stdout(&out)
        );

        let config = config_file(&case, &format!("allow_plaintext_on_non_loopback = true\n{top}"), tables);
        let out = tokenvault(&["config", "check", &config], &envs);
        assert!(
            stdout(&out).contains("warning") && stdout(&out).contains(named),
            "{name}: {}",
            stdout(&out)
        );
        assert!(out.status.success(), "{name}: {}", stdout(&out));
    }

    // Loopback stays allowed without TLS: 127.0.0.0/8, ::1, localhost.
    for (name, top, tables) in [
        ("lo4", "listen = \"127.0.0.2:0\"", ""),
        ("lo6", "listen = \"[::1]:0\"", ""),
        (
            "lo-vault",
            "",
            "[kek]\nprovider = \"vault\"\naddress = \"http://localhost:8200\"\nkey_name = \"k\"\ntoken_env = \"TV_TOKEN\"\n",
        ),
    ] {
        let config = config_file(&root.join(name), top, tables);
        let out = tokenvault(&["config", "check", &config], &[("TV_TOKEN", "t")]);
        assert!(
            !stdout(&out).contains("TLS"),
            "{name}: {}",
            stdout(&out)
        );
    }
}

#[test]
fn allow_plaintext_on_non_loopback_starts_with_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_file(dir.path(), "allow_plaintext_on_non_loopback = true", "");
    let run = run_for(
        &["serve", "--config", &config, "--listen", "0.0.0.0:0"],
        &[],
        8,
    );
    assert!(
        run.status.is_none(),
        "the server must start: {}",
        run.stderr
    );
    assert!(
        run.stdout.contains("tokenvault listening on 0.0.0.0:"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("WARN") && run.stderr.contains("allow_plaintext_on_non_loopback"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_config_without_kek_is_refused_outside_dev() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data");
    // A key file where the default would look: still refused.
    std::fs::write(data.join("kek.key"), [7u8; 32]).expect("kek");
    let path = dir.path().join("tokenvault.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = \"{}\"\n{}",
            data.display(),
            common::admin_principal_toml()
        ),
    )
    .expect("config");
    let config = path.display().to_string();
    let run = run_for(&["serve", "--config", &config], &[], 20);
    assert!(
        run.status.is_some_and(|s| !s.success()),
        "serve must refuse a config without [kek]: {}",
        run.stderr
    );
    assert!(run.stderr.contains("[kek]"), "{}", run.stderr);
    let out = tokenvault(&["config", "check", &config], &[]);
    assert!(!out.status.success());
    assert!(stdout(&out).contains("[kek]"), "{}", stdout(&out));
}

/// The `tokenvault.toml` of a ConfigMap manifest (the block under
/// `tokenvault.toml: |`).
fn embedded_config(manifest: &str) -> String {
    let mut lines = manifest
        .lines()
        .skip_while(|l| l.trim() != "tokenvault.toml: |");
    lines.next();
    let mut out = String::new();
    for line in lines {
        if !line.trim().is_empty() && !line.starts_with("    ") {
            break;
        }
        out.push_str(line.strip_prefix("    ").unwrap_or(""));
        out.push('\n');
    }
    out
}

#[test]
fn config_check_passes_on_every_shipped_config_and_each_uses_tls() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    common::dev_certs(&certs, &["chat-backend"]);
    let mut checked = 0;
    for manifest in [
        "deploy/k8s/rocksdb/configmap.yaml",
        "deploy/k8s/shared-store/configmap.yaml",
    ] {
        let text = std::fs::read_to_string(repo.join(manifest)).expect("manifest");
        let config = embedded_config(&text);
        assert!(!config.is_empty(), "{manifest}: no tokenvault.toml");
        let parsed: toml::Table = toml::from_str(&config).expect("the shipped config parses");
        let tls = parsed
            .get("tls")
            .and_then(|t| t.as_table())
            .unwrap_or_else(|| panic!("{manifest}: no [tls]"));
        assert!(
            tls.contains_key("cert") && tls.contains_key("key"),
            "{manifest}"
        );
        assert!(
            !parsed.contains_key("allow_plaintext_on_non_loopback"),
            "{manifest}: plaintext allowed"
        );
        // Every absolute path moves under a scratch root; the files the
        // server reads are put there; placeholders get values.
        let root = dir.path().join(format!("m{checked}"));
        let config = config
            .replace("= \"/", &format!("= \"{}/", root.display()))
            .replace("REPLACE-WITH-HEX-SHA256-OF-THE-API-KEY", &"ab".repeat(32));
        let parsed: toml::Table = toml::from_str(&config).expect("parses");
        let path_of = |table: &str, key: &str| -> Option<std::path::PathBuf> {
            let mut value = toml::Value::Table(parsed.clone());
            for part in table.split('.').filter(|p| !p.is_empty()) {
                value = value.get(part)?.clone();
            }
            value.get(key)?.as_str().map(std::path::PathBuf::from)
        };
        for (table, key, source) in [
            ("tls", "cert", "server-chain.pem"),
            ("tls", "key", "server.key"),
            ("tls", "client_ca", "ca.pem"),
            ("kek", "ca_cert", "ca.pem"),
            ("kek.approle", "secret_id_file", "ca.pem"),
            ("storage.postgres", "ca_file", "ca.pem"),
            ("erasure.postgres", "ca_file", "ca.pem"),
        ] {
            if let Some(path) = path_of(table, key) {
                std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
                std::fs::copy(certs.join(source), &path).expect("copy");
            }
        }
        let path = root.join("tokenvault.toml");
        std::fs::write(&path, &config).expect("config");
        let out = tokenvault(
            &["config", "check", &path.display().to_string()],
            &[
                (
                    "TOKENVAULT_POSTGRES_URL",
                    "postgres://tokenvault@postgres.tokenvault.svc:5432/tokenvault",
                ),
                (
                    "TOKENVAULT_LEDGER_POSTGRES_URL",
                    "postgres://tokenvault@postgres.tokenvault.svc:5432/tokenvault_ledger",
                ),
            ],
        );
        assert!(
            out.status.success() && stdout(&out).trim().ends_with(": ok"),
            "{manifest}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        checked += 1;
    }
    assert_eq!(checked, 2);
}

#[tokio::test]
async fn the_api_key_is_read_from_a_file_or_the_environment_never_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let key = server.api_key();
    let envs = [("TOKENVAULT_ADDR", server.addr.as_str())];
    let no_dev_key = dir.path().join("elsewhere").display().to_string();

    let out = tokenvault(
        &[
            "detokenize",
            "--api-key",
            &key,
            "--data-dir",
            &no_dev_key,
            "tok_x",
        ],
        &envs,
    );
    assert!(
        !out.status.success(),
        "--api-key on the command line must be refused"
    );
    assert!(
        stderr(&out).contains("TOKENVAULT_API_KEY_FILE") && !stderr(&out).contains(&key),
        "{}",
        stderr(&out)
    );

    let file = dir.path().join("api.key");
    std::fs::write(&file, format!("{key}\n")).expect("key file");
    let file = file.display().to_string();
    for envs in [
        vec![
            ("TOKENVAULT_ADDR", server.addr.as_str()),
            ("TOKENVAULT_API_KEY_FILE", file.as_str()),
        ],
        vec![
            ("TOKENVAULT_ADDR", server.addr.as_str()),
            ("TOKENVAULT_API_KEY", key.as_str()),
        ],
    ] {
        let out = tokenvault(
            &[
                "detokenize",
                "--data-dir",
                &no_dev_key,
                "tok_aaaaaaaaaaaaaaaaaaaaaaaaaa",
            ],
            &envs,
        );
        assert!(out.status.success(), "{envs:?}: {}", stderr(&out));
    }
    let out = tokenvault(
        &[
            "detokenize",
            "--api-key-file",
            &file,
            "--data-dir",
            &no_dev_key,
            "tok_aaaaaaaaaaaaaaaaaaaaaaaaaa",
        ],
        &envs,
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn toml_errors_never_print_a_postgres_password() {
    const PASSWORD: &str = "s3cr3t-pw-7781";
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, line) in [
        // A value of the wrong type: the parser quotes it.
        (
            "type",
            format!("tls = \"postgres://tv:{PASSWORD}@db.internal:5432/tv\""),
        ),
        // A syntax error: the parser shows the line.
        (
            "syntax",
            format!("url = \"postgres://tv:{PASSWORD}@db.internal:5432/tv\" x"),
        ),
        (
            "keyvalue",
            format!("tls = \"host=db.internal password={PASSWORD}\""),
        ),
    ] {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!("[storage]\nbackend = \"postgres\"\n[storage.postgres]\n{line}\n"),
        )
        .expect("config");
        let path = path.display().to_string();
        let run = run_for(&["serve", "--config", &path], &[], 20);
        assert!(run.status.is_some_and(|s| !s.success()), "{name}");
        assert!(run.stderr.contains("line 4"), "{name}: {}", run.stderr);
        let out = tokenvault(&["config", "check", &path], &[]);
        assert!(!out.status.success());
        for text in [&run.stderr, &run.stdout, &stdout(&out), &stderr(&out)] {
            assert!(!text.contains(PASSWORD), "{name}: {text}");
        }
    }
}
