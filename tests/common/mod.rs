//! Shared harness of the integration tests: starts the real `tokenvault`
//! binary on a free loopback port (it binds port 0 and prints the address)
//! and gives a gRPC client with the dev admin key.

#![allow(dead_code)]

pub mod actor;
pub mod bao;
pub mod postgres;
pub mod rawh2;
pub mod tmpfs;

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokenvault::cli::client::{BearerAuth, Client};
use tokenvault::pb;
use tokenvault::pb::token_vault_client::TokenVaultClient;
use tonic::transport::Channel;

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `tokenvault serve --dev` with its own data directory. Stdout
/// and stderr go to files in `root`, appended across restarts, so a test
/// can search the whole server log.
pub struct Server {
    root: PathBuf,
    child: Option<Child>,
    /// `serve` arguments after the listen/data-dir overrides.
    mode: Vec<String>,
    /// Extra environment of the server process.
    env: Vec<(String, String)>,
    pub addr: String,
    /// The API key to call with: the dev admin key, or [`TEST_API_KEY`].
    api_key: Option<String>,
}

/// The API key of the `admin` principal that [`admin_principal_toml`]
/// configures.
pub const TEST_API_KEY: &str = "tvk_test_admin_0123456789";

/// A `[[principals]]` block for [`TEST_API_KEY`] with every RPC allowed and
/// full reveal.
pub fn admin_principal_toml() -> String {
    use sha2::Digest;
    format!(
        "[[principals]]\nname = \"admin\"\napi_key_sha256 = \"{}\"\nallow = [\"tokenize\", \"detokenize\", \"redact_text\", \"restore_text\", \"forget_subject\", \"export_subject\"]\nreveal = {{ default = \"full\" }}\n",
        hex::encode(sha2::Sha256::digest(TEST_API_KEY.as_bytes()))
    )
}

/// A config outside `--dev` must name its erasure ledger outside the data
/// directory: a RocksDB config that names none gets one under `root` (not
/// in `root/data`), as an operator's would be on its own volume.
fn with_ledger(root: &Path, toml: &str) -> String {
    if toml.contains("[erasure") || toml.contains("backend = \"postgres\"") {
        return toml.to_string();
    }
    format!(
        "{toml}\n[erasure]\nledger = \"{}\"\n",
        root.join("ledger").join("erasure-ledger.jsonl").display()
    )
}

impl Server {
    /// Starts a dev server whose files live under `root`.
    pub fn start(root: &Path) -> Server {
        Self::start_with(root, vec!["--dev".into()])
    }

    /// Starts `serve --config FILE` with the given TOML written to `root`.
    pub fn start_with_config(root: &Path, toml: &str) -> Server {
        Self::start_with_config_env(root, toml, &[])
    }

    /// As [`Server::start_with_config`], with extra environment variables;
    /// calls use [`TEST_API_KEY`] (see [`admin_principal_toml`]).
    pub fn start_with_config_env(root: &Path, toml: &str, env: &[(&str, &str)]) -> Server {
        let mut server = Self::prepared_with_config(root, toml, env);
        server.spawn();
        server
    }

    /// A config server that is not started yet (for start-up failures).
    pub fn prepared_with_config(root: &Path, toml: &str, env: &[(&str, &str)]) -> Server {
        fs::create_dir_all(root).expect("server dir");
        let path = Self::config_path_in(root);
        fs::write(&path, with_ledger(root, toml)).expect("write config");
        let mut server = Self::prepared(root, vec!["--config".into(), path.display().to_string()]);
        server.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        server.api_key = Some(TEST_API_KEY.into());
        server
    }

    fn config_path_in(root: &Path) -> PathBuf {
        root.join("tokenvault.toml")
    }

    pub fn config_path(&self) -> PathBuf {
        Self::config_path_in(&self.root)
    }

    fn start_with(root: &Path, mode: Vec<String>) -> Server {
        let mut server = Self::prepared(root, mode);
        server.spawn();
        server
    }

    fn prepared(root: &Path, mode: Vec<String>) -> Server {
        Server {
            root: root.to_path_buf(),
            child: None,
            mode,
            env: Vec::new(),
            addr: String::new(),
            api_key: None,
        }
    }

    /// As [`Server::run_to_exit`], but a server still running after
    /// `timeout` is killed and the test fails (it should have refused).
    pub fn run_to_exit_within(&mut self, timeout: Duration) -> (std::process::ExitStatus, String) {
        let log = self.root.join("refused.log");
        let mut child = self
            .command()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn tokenvault");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return (status, fs::read_to_string(&log).unwrap_or_default());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "tokenvault still runs after {timeout:?} (it should have refused to start); log:\n{}",
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `serve` to its exit and returns its status and log, for
    /// configurations that must refuse to start.
    pub fn run_to_exit(&mut self) -> (std::process::ExitStatus, String) {
        let output = self
            .command()
            .stdin(Stdio::null())
            .output()
            .expect("run tokenvault");
        (
            output.status,
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tokenvault"));
        command
            .arg("serve")
            .args(&self.mode)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(self.data_dir())
            // Not h2's frame lines: a failing wait_for_log prints the whole
            // log, and CI records cut it before the part that matters.
            .env("TOKENVAULT_LOG", "debug,h2=info")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// Runs the binary as a client or operator command with the server's
    /// environment, e.g. `["keys", "status", "--config", ...]`.
    pub fn run_cli(&self, args: &[&str]) -> std::process::Output {
        self.run_cli_with_env(args, &[])
    }

    /// As [`Server::run_cli`], with some of the server's environment
    /// replaced (e.g. another Vault token).
    pub fn run_cli_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_tokenvault"))
            .args(args)
            .env("TOKENVAULT_LOG", "warn")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("run tokenvault")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.root.join("server.log")
    }

    fn stdout_path(&self) -> PathBuf {
        self.root.join("stdout.log")
    }

    fn spawn(&mut self) {
        // Truncate stdout so the address line found is this run's.
        File::create(self.stdout_path()).expect("create stdout file");
        let stdout = OpenOptions::new()
            .append(true)
            .open(self.stdout_path())
            .expect("stdout file");
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        let child = self
            .command()
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("spawn tokenvault");
        self.child = Some(child);
        self.addr = self.wait_for_address();
    }

    fn wait_for_address(&mut self) -> String {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let out = fs::read_to_string(self.stdout_path()).unwrap_or_default();
            if let Some(addr) = out
                .lines()
                .find_map(|line| line.strip_prefix("tokenvault listening on "))
            {
                return format!("http://{}", addr.trim());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "tokenvault exited with {status} before listening; log:\n{}",
                    fs::read_to_string(self.log_path()).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "tokenvault did not start in time"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The HTTP/JSON API's base URL (`http://ADDR`), from the line the
    /// server prints before its gRPC one; None when it serves none.
    pub fn http_url(&self) -> Option<String> {
        let out = fs::read_to_string(self.stdout_path()).unwrap_or_default();
        out.lines()
            .find_map(|line| line.strip_prefix("tokenvault http listening on "))
            .map(|addr| format!("http://{}", addr.trim()))
    }

    pub fn api_key(&self) -> String {
        if let Some(key) = &self.api_key {
            return key.clone();
        }
        fs::read_to_string(self.data_dir().join("dev-admin.key"))
            .expect("dev admin key file")
            .trim()
            .to_string()
    }

    pub async fn client(&self) -> Client {
        self.client_with_key(&self.api_key()).await
    }

    pub async fn client_with_key(&self, key: &str) -> Client {
        TokenVaultClient::with_interceptor(
            self.channel().await,
            BearerAuth::new(key).expect("ascii key"),
        )
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.addr.clone())
            .expect("address")
            .connect()
            .await
            .expect("connect")
    }

    /// SIGTERM, and waits for a clean exit. Async, so the test's own
    /// connections keep being driven (and close) while the server drains.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, "TERM");
            let deadline = Instant::now() + Duration::from_secs(30);
            let status = loop {
                if let Some(status) = child.try_wait().expect("wait") {
                    break status;
                }
                assert!(
                    Instant::now() < deadline,
                    "tokenvault did not stop within 30 s of SIGTERM"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            assert!(
                status.success(),
                "tokenvault exited with {status} on SIGTERM"
            );
        }
    }

    /// SIGHUP: the server re-reads its principals from the config file.
    pub fn sighup(&self) {
        signal(self.child.as_ref().expect("server is running"), "HUP");
    }

    /// Waits until the server log has `needle` at least `count` times.
    pub async fn wait_for_log(&self, needle: &str, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = fs::read_to_string(self.log_path()).unwrap_or_default();
            if log.matches(needle).count() >= count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} (x{count}) in the server log:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: a crash, no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9");
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill the server first");
        self.spawn();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} failed");
}

/// Appends the Luhn check digit to a string of digits.
pub fn luhn_complete(body: &str) -> String {
    let digits: Vec<u8> = body.bytes().map(|b| b - b'0').collect();
    format!(
        "{body}{}",
        tokenvault::token::checks::luhn_check_digit(&digits)
    )
}

/// The n-th of a series of distinct valid 16-digit card numbers.
pub fn card(n: usize) -> String {
    luhn_complete(&format!("400000{n:09}"))
}

pub fn item(value: &str, format: &str) -> pb::TokenizeItem {
    pb::TokenizeItem {
        value: value.into(),
        format: format.into(),
        mode: pb::TokenMode::Unspecified as i32,
        ttl_seconds: 0,
    }
}

pub fn random_item(value: &str, format: &str) -> pb::TokenizeItem {
    pb::TokenizeItem {
        mode: pb::TokenMode::Random as i32,
        ..item(value, format)
    }
}

pub async fn tokenize(
    client: &mut Client,
    subject: &str,
    items: Vec<pb::TokenizeItem>,
) -> Vec<String> {
    client
        .tokenize(pb::TokenizeRequest {
            subject_id: subject.into(),
            items,
        })
        .await
        .expect("tokenize")
        .into_inner()
        .tokens
}

pub async fn detokenize(client: &mut Client, tokens: &[String]) -> Vec<pb::DetokenizeResult> {
    client
        .detokenize(pb::DetokenizeRequest {
            tokens: tokens.to_vec(),
            purpose: "test".into(),
        })
        .await
        .expect("detokenize")
        .into_inner()
        .results
}

/// Every regular file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        for entry in fs::read_dir(&path).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// The service names that server reflection lists (with the admin key).
pub async fn reflection_services(server: &Server) -> Vec<String> {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let auth = BearerAuth::new(&server.api_key()).expect("key");
    let mut client = ServerReflectionClient::with_interceptor(server.channel().await, auth);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection")
        .into_inner();
    let response = stream
        .message()
        .await
        .expect("message")
        .expect("one response");
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection response {other:?}"),
    }
}

/// Runs `keys/dev-certs.sh` into `out` for `principals`.
pub fn dev_certs(out: &Path, principals: &[&str]) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("keys/dev-certs.sh");
    let output = Command::new("bash")
        .arg(script)
        .arg("--out")
        .arg(out)
        .args(principals)
        .output()
        .expect("run dev-certs.sh");
    assert!(
        output.status.success(),
        "dev-certs.sh failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
