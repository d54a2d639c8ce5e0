//! `tokenvault keys rotate|status|retire`: the operator's key commands. They talk
//! to a running server through its admin socket (`<data_dir>/admin.sock`)
//! so that rotation happens while it serves; with no server running they
//! open the vault themselves and do the same work in this process.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::api::admin::{self, progress_message, status_message};
use crate::app::open_vault;
use crate::config::Config;
use crate::pb::admin::admin_client::AdminClient;
use crate::pb::admin::{KeyStatusRequest, KeyStatusResponse, RotateKekProgress, RotateKekRequest};
use crate::vault::Vault;

use super::keys_retire;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Rotate the KEK (a new Vault transit version, or a new version in
    /// the local key file) and rewrap every stored DEK to it (with Vault,
    /// transit rewrap: no key is unwrapped here). Resumes a rotation that
    /// was cut short. Works while the server runs.
    Rotate(VaultArgs),
    /// Show the KEK versions and how many DEKs sit on each.
    Status(VaultArgs),
    /// Retire the KEK versions below one: raise the decryption floor to
    /// it (reversible), and with --trim-irreversibly delete the older
    /// versions from Vault or from the local key file. Refused while any
    /// stored key is still under an older version. With Vault it needs a
    /// token with the tokenvault-key-retire policy.
    Retire(keys_retire::RetireArgs),
}

/// Which vault: its config file, and/or its data directory (a dev vault
/// needs only that; it overrides the config's `data_dir` as in `serve`).
#[derive(Debug, Clone, Args)]
pub struct VaultArgs {
    /// The server's TOML config.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The data directory (default: the config's, or ./data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

impl VaultArgs {
    pub fn load(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::dev(),
        };
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        // A vault named by its config is not a dev vault: its ledger must
        // be outside the data directory, as `serve` requires.
        if let Some(problem) = config.ledger_problem(self.config.is_none()) {
            anyhow::bail!("config: {problem}");
        }
        Ok(config)
    }
}

pub async fn run(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Rotate(args) => rotate(&args.load()?).await,
        KeysCommand::Status(args) => status(&args.load()?).await,
        KeysCommand::Retire(args) => keys_retire::retire(&args).await,
    }
}

async fn rotate(config: &Config) -> anyhow::Result<()> {
    let last = match connect_admin(&config.data_dir).await? {
        Some(mut client) => {
            eprintln!("keys: rotating through the running server");
            let mut stream = client
                .rotate_kek(RotateKekRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            let mut last = None;
            while let Some(progress) = stream.message().await.map_err(status_error)? {
                print_progress(&progress);
                last = Some(progress);
            }
            last.filter(|progress| progress.finished)
                .context("the server closed the rotation before it finished; run keys rotate again to resume")?
        }
        None => {
            let vault = open_offline(config).await?;
            let finished = vault
                .rotate_kek(|progress| print_progress(&progress_message(progress, false)))
                .await
                .context("rotation failed; run keys rotate again to resume")?;
            vault.shutdown();
            progress_message(finished, true)
        }
    };
    println!(
        "KEK at version {}: {} of {} subject keys rewrapped{}",
        last.target_version,
        last.rewrapped,
        last.total,
        if last.resumed {
            " (resumed a rotation cut short)"
        } else {
            ""
        }
    );
    Ok(())
}

async fn status(config: &Config) -> anyhow::Result<()> {
    print!("{}", format_status(&fetch_status(config).await?));
    Ok(())
}

/// The key status, from the running server or, with none, read here.
pub async fn fetch_status(config: &Config) -> anyhow::Result<KeyStatusResponse> {
    Ok(match connect_admin(&config.data_dir).await? {
        Some(mut client) => client
            .key_status(KeyStatusRequest {})
            .await
            .map_err(status_error)?
            .into_inner(),
        None => {
            let vault = open_offline(config).await?;
            let status = vault.key_status().await?;
            vault.shutdown();
            status_message(&status)
        }
    })
}

/// The status as `name value` lines, for people and scripts.
pub fn format_status(status: &KeyStatusResponse) -> String {
    let version = |v: u32| {
        if v == 0 {
            "none".to_string()
        } else {
            format!("v{v}")
        }
    };
    let subject_keys = if status.subject_keys.is_empty() {
        "none".to_string()
    } else {
        status
            .subject_keys
            .iter()
            .map(|count| format!("v{}={}", count.kek_version, count.subject_keys))
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "provider            {}\nlatest_version      v{}\nmin_decryption      v{}\nsystem_key          {}\nsubject_keys        {}\nrotation            {}\n",
        status.provider,
        status.latest_version,
        status.min_decryption_version,
        version(status.system_key_version),
        subject_keys,
        match status.rotation_in_progress {
            0 => "none".to_string(),
            target => format!("in progress to v{target} (run keys rotate to finish)"),
        }
    )
}

fn print_progress(progress: &RotateKekProgress) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "keys: {}/{} subject keys checked, {} rewrapped to v{}",
        progress.done, progress.total, progress.rewrapped, progress.target_version
    );
}

fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", status.code(), status.message())
}

async fn open_offline(config: &Config) -> anyhow::Result<Vault> {
    open_vault(config, false).await.with_context(|| {
        format!(
            "no server answers on {} and the vault could not be opened here",
            admin::socket_path(&config.data_dir).display()
        )
    })
}

/// A client on the running server's admin socket; None when no server
/// listens there.
pub async fn connect_admin(data_dir: &Path) -> anyhow::Result<Option<AdminClient<Channel>>> {
    let path = admin::socket_path(data_dir);
    if !path.exists() {
        return Ok(None);
    }
    // The URI is required by the API but unused: the connector dials the
    // socket.
    let endpoint = Endpoint::try_from("http://admin.sock")?;
    let socket = path.clone();
    let connected = endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await;
    match connected {
        Ok(channel) => Ok(Some(AdminClient::new(channel))),
        Err(_) if !socket_is_live(&path) => Ok(None),
        Err(error) => bail!("cannot connect to {}: {error}", path.display()),
    }
}

/// A socket file left by a server that died holds no listener.
fn socket_is_live(path: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(path).is_ok()
}
