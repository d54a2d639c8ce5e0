//! `tokenvault serve`: config (file or the embedded dev default), logging,
//! the dev admin key, then the server.

use std::fs;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Args;

use crate::api::auth::Access;
use crate::api::{server, Authenticator, Principal, Rpc};
use crate::app::open_vault;
use crate::config::{Config, LogFormat};
use crate::policy::ActorVerifier;

/// The dev admin key's file name inside the data directory.
pub const DEV_ADMIN_KEY_FILE: &str = "dev-admin.key";

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Run the embedded default: loopback only, local KEK, a dev admin key
    /// in the data directory.
    #[arg(long, conflicts_with = "config")]
    pub dev: bool,
    /// TOML config file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override the listen address (port 0 picks a free port).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Override the data directory.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Serve the HTTP/JSON API on this address (`[http] listen`; port 0
    /// picks a free port). In --dev it is on by default, on the gRPC
    /// address's port + 1 (127.0.0.1:50052).
    #[arg(long)]
    pub http_listen: Option<SocketAddr>,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = match (&args.config, args.dev) {
        (Some(path), false) => Config::load(path)?,
        (None, true) => Config::dev(),
        _ => bail!("serve needs --dev or --config FILE"),
    };
    // After the config, which chooses the log format; a config that does
    // not load is reported on stderr by main.
    init_logging(config.log.format);
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(data_dir) = args.data_dir {
        config.data_dir = data_dir;
    }
    if let Some(listen) = args.http_listen {
        config.http = Some(crate::config::HttpConfig { listen });
    } else if args.dev && config.http.is_none() {
        config.http = Some(crate::config::HttpConfig {
            listen: dev_http_listen(config.listen),
        });
    }
    // Before anything is opened: plaintext off loopback and a key file
    // picked by default are refused (see `crate::exposure`).
    let exposure = crate::exposure::check(&config, args.dev);
    if !exposure.refused.is_empty() {
        bail!("refusing to start: {}", exposure.refused.join("; "));
    }
    for warning in &exposure.warnings {
        tracing::warn!("plaintext off loopback: {warning}");
    }
    // After the override: outside --dev the ledger must not be under the
    // data directory.
    if let Some(problem) = config.ledger_problem(args.dev) {
        bail!("config: {problem}");
    }

    // Actor keys are read before the vault opens: a bad key file stops
    // start-up without touching the store or the key provider.
    let actors = config
        .actor_tokens
        .as_ref()
        .map(ActorVerifier::from_config)
        .transpose()?;
    // The alert sinks start before the vault opens: a missing webhook
    // secret stops start-up first.
    let notifier = crate::notify::Notifier::start(&config.alert_sinks)?;
    let mut vault = open_vault(&config, args.dev)
        .await
        .context("cannot open the vault")?;
    if !notifier.is_empty() {
        vault.set_notifier(Arc::new(notifier));
    }
    let vault = Arc::new(vault);
    let mut auth = Authenticator::from_config(&config.principals).map_err(anyhow::Error::msg)?;
    if args.dev {
        let key_path = config.data_dir.join(DEV_ADMIN_KEY_FILE);
        let key = load_or_create_dev_key(&key_path)?;
        auth.add_key(
            &key,
            Principal::new(crate::vault::DEV_ADMIN_PRINCIPAL, Rpc::ALL),
        );
        tracing::warn!(path = %key_path.display(), "dev mode: admin API key (every RPC, full reveal) is in this file");
    }
    if auth.is_empty() {
        bail!("no principals configured: add [[principals]] to the config, or run serve --dev");
    }
    let reload = args
        .config
        .clone()
        .map(|config_path| server::Reload { config_path });
    server::serve(&config, vault, Arc::new(Access::new(auth, actors)), reload).await?;
    Ok(())
}

/// The HTTP/JSON address of `serve --dev`: the gRPC address with the
/// next port (127.0.0.1:50052 by default), or port 0 (a free one) when
/// the gRPC port is 0 or the last.
pub fn dev_http_listen(grpc: SocketAddr) -> SocketAddr {
    let port = match grpc.port() {
        0 | u16::MAX => 0,
        port => port + 1,
    };
    SocketAddr::new(grpc.ip(), port)
}

/// Logging to stderr in the `[log] format`, filtered by `TOKENVAULT_LOG`.
fn init_logging(format: LogFormat) {
    // vaultrs and rustify log every failed Vault call at ERROR with their
    // own wording; the KEK provider logs what matters once, classified.
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOKENVAULT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,vaultrs=off,rustify=off"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        // One object a line with the event's fields at the top level, for
        // log shippers; no spans (the server opens none that matter).
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
}

/// Reads the dev admin key, or writes a new random one (mode 0600).
fn load_or_create_dev_key(path: &Path) -> anyhow::Result<String> {
    if path.exists() {
        let key =
            fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        return Ok(key.trim().to_string());
    }
    let secret = crate::crypto::random_bytes::<32>()?;
    let key = format!("tvk_dev_{}", hex::encode(secret));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(key.as_bytes())?;
    file.sync_all()?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_http_is_on_the_next_port_or_a_free_one() {
        let at = |addr: &str| dev_http_listen(addr.parse().expect("addr")).to_string();
        assert_eq!(at("127.0.0.1:50051"), "127.0.0.1:50052");
        assert_eq!(at("[::1]:9000"), "[::1]:9001");
        assert_eq!(at("127.0.0.1:0"), "127.0.0.1:0");
        assert_eq!(at("127.0.0.1:65535"), "127.0.0.1:0");
    }
}
