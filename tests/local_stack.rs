//! `deploy/local/run.sh`, the production-shaped stack on one machine
//! (OpenBao with transit and AppRole, tokenvault on the vault KEK, TLS on
//! its gRPC port), runs to a working `tokenvault tokenize` / `detokenize`
//! over TLS and stops cleanly.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

#[test]
fn the_local_stack_script_serves_tokenize_and_detokenize_through_vault() {
    let bin = env!("CARGO_BIN_EXE_tokenvault");
    let dir = tempfile::tempdir().expect("tempdir");
    let workdir = dir.path().join("stack");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/local/run.sh");
    let mut stack = Command::new("bash")
        .arg(&script)
        .arg("--workdir")
        .arg(&workdir)
        .env("TOKENVAULT_BIN", bin)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run deploy/local/run.sh");

    let (lines, ready) = mpsc::channel();
    let stdout = stack.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let line = ready
        .recv_timeout(Duration::from_secs(120))
        .expect("the stack printed no ready line in time");
    let fields: std::collections::HashMap<&str, &str> = line
        .strip_prefix("stack ready: ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .split_whitespace()
        .filter_map(|field| field.split_once('='))
        .collect();
    let addr = fields["TOKENVAULT_ADDR"];
    assert!(addr.starts_with("https://"), "the stack speaks TLS: {addr}");
    let api_key = std::fs::read_to_string(fields["TOKENVAULT_API_KEY_FILE"])
        .expect("api key file")
        .trim()
        .to_string();

    let client = |args: &[&str]| {
        let out = Command::new(bin)
            .args(args)
            .env("TOKENVAULT_ADDR", addr)
            .env("TOKENVAULT_CA_FILE", fields["TOKENVAULT_CA_FILE"])
            .env("TOKENVAULT_API_KEY", &api_key)
            .output()
            .expect("run client");
        assert!(
            out.status.success(),
            "tokenvault {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf8")
    };
    let token = client(&[
        "tokenize",
        "--subject",
        "stack-subject",
        "--format",
        "card",
        "4111 1111 1111 1111",
    ]);
    let token = token.trim();
    assert_ne!(token, "4111 1111 1111 1111");
    let shown = client(&["detokenize", token]);
    assert_eq!(shown.trim(), format!("{token}\tFOUND\t4111 1111 1111 1111"));

    // The stored DEK is a transit ciphertext: the stack really uses Vault.
    let config = std::fs::read_to_string(workdir.join("tokenvault.toml")).expect("config");
    assert!(config.contains("provider = \"vault\""), "{config}");

    Command::new("kill")
        .args(["-TERM", &stack.id().to_string()])
        .status()
        .expect("kill");
    let status = stack.wait().expect("wait");
    assert!(status.success(), "the stack script exited with {status}");
}
