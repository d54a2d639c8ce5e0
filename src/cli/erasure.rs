//! Erasure and data-lifecycle commands: `forget` and `export` (clients of
//! the gRPC API, like `tokenize`), and the operator commands `backup
//! create|restore`, `receipt verify`, `retention purge` and `erasure
//! status`, which talk to
//! the running server's admin socket or, with no server running, open the
//! vault in this process.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use super::client::{call_error, connect};
use super::keys::{connect_admin, VaultArgs};
use super::ClientArgs;
use crate::app::open_vault;
use crate::erasure::SignedReceipt;
use crate::pb;
use crate::pb::admin::{
    CreateBackupRequest, ErasureStatusRequest, PurgeRequest, VerifyReceiptRequest,
};
use crate::store::rocks::RocksStore;
use crate::vault::{ledger, Vault};

#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// The data subject to forget.
    pub subject: String,
    /// Why (a request or ticket reference; recorded in the audit log).
    #[arg(long)]
    pub reason: String,
    /// Write the erasure receipt here (default: print it on stdout).
    #[arg(long)]
    pub receipt: Option<PathBuf>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The data subject whose tokens to export.
    pub subject: String,
    /// Why the values are needed (recorded in the audit log).
    #[arg(long, default_value = "")]
    pub purpose: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Back the database up into DIR while the server runs (RocksDB
    /// backup engine: incremental, consistent).
    Create(BackupArgs),
    /// Replace the database with the latest backup in DIR (the server
    /// must be stopped), then replay the erasure ledger over it; refused
    /// when the ledger is missing.
    Restore(BackupArgs),
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The backup directory.
    pub dir: PathBuf,
    #[command(flatten)]
    pub vault: VaultArgs,
    /// Restore although the erasure ledger the restored database expects
    /// is missing or shorter: every subject forgotten since the backup
    /// comes back.
    #[arg(long)]
    pub danger_restore_without_ledger: bool,
}

#[derive(Debug, Subcommand)]
pub enum ReceiptCommand {
    /// Check an erasure receipt file against this vault's receipt key.
    Verify(ReceiptArgs),
}

#[derive(Debug, Args)]
pub struct ReceiptArgs {
    /// The receipt file (as written by `tokenvault forget --receipt`).
    pub file: PathBuf,
    #[command(flatten)]
    pub vault: VaultArgs,
}

#[derive(Debug, Subcommand)]
pub enum RetentionCommand {
    /// Make expired and erased records physically gone now.
    Purge(VaultArgs),
}

#[derive(Debug, Subcommand)]
pub enum ErasureCommand {
    /// Forgets whose ciphertexts and index entries await the scheduled
    /// full purge, and the oldest one's deadline; exits non-zero when a
    /// deadline has passed.
    Status(VaultArgs),
}

pub async fn forget(args: ForgetArgs) -> anyhow::Result<()> {
    let mut client = connect(&args.client).await?;
    let response = client
        .forget_subject(pb::ForgetSubjectRequest {
            subject_id: args.subject,
            reason: args.reason,
        })
        .await
        .map_err(call_error)?
        .into_inner();
    let receipt = response
        .receipt
        .context("the server sent no erasure receipt")?;
    let json = receipt_from_message(&receipt)?.to_json();
    match &args.receipt {
        Some(path) => std::fs::write(path, format!("{json}\n"))
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => println!("{json}"),
    }
    eprintln!("forget: {} tokens erased", response.tokens_erased);
    Ok(())
}

/// The receipt file form of the API's receipt message.
pub fn receipt_from_message(message: &pb::ErasureReceipt) -> anyhow::Result<SignedReceipt> {
    SignedReceipt::from_fields(
        &message.subject_hash,
        message.erased_at_unix,
        message.tokens_erased,
        message.audit_sequence,
        (&message.at_return, message.purged_by_unix),
        &message.mac,
    )
    .context("the server sent a malformed receipt")
}

pub async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let mut client = connect(&args.client).await?;
    let mut stream = client
        .export_subject(pb::ExportSubjectRequest {
            subject_id: args.subject,
            purpose: args.purpose,
        })
        .await
        .map_err(call_error)?
        .into_inner();
    let mut out = std::io::stdout().lock();
    let mut count = 0u64;
    while let Some(item) = stream.message().await.map_err(call_error)? {
        writeln!(
            out,
            "{}\t{}\t{}\t{}",
            item.token, item.format, item.value, item.created_at_unix
        )?;
        count += 1;
    }
    eprintln!("export: {count} tokens");
    Ok(())
}

pub async fn backup(command: BackupCommand) -> anyhow::Result<()> {
    match command {
        BackupCommand::Create(args) => create_backup(&args).await,
        BackupCommand::Restore(args) => restore_backup(&args).await,
    }
}

async fn create_backup(args: &BackupArgs) -> anyhow::Result<()> {
    let config = args.vault.load()?;
    let dir = absolute(&args.dir)?;
    let (id, size) = match connect_admin(&config.data_dir).await? {
        Some(mut admin) => {
            eprintln!("backup: backing up through the running server");
            let info = admin
                .create_backup(CreateBackupRequest {
                    dir: dir.to_string_lossy().into_owned(),
                })
                .await
                .map_err(call_error)?
                .into_inner();
            (info.backup_id, info.size_bytes)
        }
        None => {
            let vault = open_offline(&config).await?;
            let info = vault.create_backup(&dir).await?;
            vault.shutdown();
            (info.id, info.size_bytes)
        }
    };
    println!("backup {id} created in {} ({size} bytes)", dir.display());
    Ok(())
}

async fn restore_backup(args: &BackupArgs) -> anyhow::Result<()> {
    let config = args.vault.load()?;
    if connect_admin(&config.data_dir).await?.is_some() {
        bail!("a server is running on this data directory; stop it before restoring");
    }
    // Before anything is touched: the ledger must be there (a missing one
    // would replay nothing and bring forgotten subjects back).
    let (exists, ledger) = ledger::ledger_exists(&config).await?;
    let danger = args.danger_restore_without_ledger;
    if !exists && !danger {
        bail!(
            "erasure ledger {ledger} is missing: a restore without it brings back every subject forgotten since the backup; put the ledger back (from where it is kept), or pass {} to restore anyway",
            ledger::DANGER_FLAG
        );
    }
    let db_dir = config.rocksdb_dir();
    std::fs::create_dir_all(&config.data_dir)?;
    // The marker goes first: if this command dies half-way, the next start
    // replays the ledger before it serves.
    ledger::write_restore_marker(&config.data_dir, danger)
        .context("cannot write the restore marker in the data directory")?;
    let info = RocksStore::restore_latest_backup(&absolute(&args.dir)?, &db_dir)
        .context("restore failed")?;
    eprintln!(
        "backup: restored backup {} into {}; replaying the erasure ledger {ledger}",
        info.id,
        db_dir.display(),
    );
    // Opening the vault replays the ledger because the marker is there.
    let vault = open_offline(&config).await?;
    vault.shutdown();
    println!("backup {} restored; erasure ledger replayed", info.id);
    Ok(())
}

pub async fn receipt(command: ReceiptCommand) -> anyhow::Result<()> {
    let ReceiptCommand::Verify(args) = command;
    let config = args.vault.load()?;
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let (valid, reason) = match connect_admin(&config.data_dir).await? {
        Some(mut admin) => {
            let verdict = admin
                .verify_receipt(VerifyReceiptRequest {
                    receipt: text.clone(),
                })
                .await
                .map_err(call_error)?
                .into_inner();
            (verdict.valid, verdict.reason)
        }
        None => {
            let vault = open_offline(&config).await?;
            let verdict =
                SignedReceipt::parse(&text).and_then(|receipt| vault.verify_receipt(&receipt));
            vault.shutdown();
            (
                verdict.is_ok(),
                verdict.err().map(|e| e.to_string()).unwrap_or_default(),
            )
        }
    };
    if !valid {
        bail!("receipt {} does not verify: {reason}", args.file.display());
    }
    println!("receipt {} verifies", args.file.display());
    // It verified, so it parses; what it states is under the MAC.
    if let Ok(signed) = SignedReceipt::parse(&text) {
        println!("{}", receipt_statement(&signed.receipt));
    }
    Ok(())
}

pub async fn retention(command: RetentionCommand) -> anyhow::Result<()> {
    let RetentionCommand::Purge(args) = command;
    let config = args.load()?;
    match connect_admin(&config.data_dir).await? {
        Some(mut admin) => {
            admin.purge(PurgeRequest {}).await.map_err(call_error)?;
        }
        None => {
            let vault = open_offline(&config).await?;
            vault.purge().await?;
            vault.shutdown();
        }
    }
    println!("purge done: expired and erased records are off the disk");
    Ok(())
}

pub async fn erasure(command: ErasureCommand) -> anyhow::Result<()> {
    let ErasureCommand::Status(args) = command;
    let config = args.load()?;
    let status = match connect_admin(&config.data_dir).await? {
        Some(mut admin) => admin
            .erasure_status(ErasureStatusRequest {})
            .await
            .map_err(call_error)?
            .into_inner(),
        None => {
            let vault = open_offline(&config).await?;
            let status = vault.purge_status().await;
            let full_at_return = vault.physical_purge().full_at_return;
            vault.shutdown();
            crate::api::admin::erasure_status_message(&status?, full_at_return)
        }
    };
    let mode = if status.full_purge_at_return {
        "every forget purges every file before it returns (erasure.full_purge_at_return)"
            .to_string()
    } else {
        format!(
            "a forget's wrapped key leaves the files before it returns; its ciphertexts and index entries within {} s",
            status.purge_within_seconds
        )
    };
    println!("erasure: {mode}");
    if status.pending == 0 {
        println!("pending physical purges: none");
        return Ok(());
    }
    println!(
        "pending physical purges: {} forgets, the oldest erased at {}, deadline {}{}",
        status.pending,
        status.oldest_erased_at_unix,
        status.deadline_unix,
        if status.missed { " (MISSED)" } else { "" }
    );
    if status.missed {
        bail!(
            "a purge deadline has passed: run `tokenvault retention purge` and see the server log"
        );
    }
    Ok(())
}

async fn open_offline(config: &crate::config::Config) -> anyhow::Result<Vault> {
    open_vault(config, false)
        .await
        .context("no server is running and the vault could not be opened here")
}

/// The server resolves the backup path itself, so a relative one is made
/// absolute against this command's directory.
fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    Ok(std::path::absolute(path)?)
}

/// What a verified receipt guarantees, in a line.
fn receipt_statement(receipt: &crate::erasure::Receipt) -> String {
    use crate::erasure::AtReturn;
    let head = format!(
        "erased at {} ({} tokens, audit record {})",
        receipt.erased_at_unix, receipt.tokens_erased, receipt.audit_sequence
    );
    let Some(guarantees) = receipt.guarantees else {
        return format!(
            "{head}; a version 1 receipt: every file was purged before the forget returned"
        );
    };
    let at_return = match guarantees.at_return {
        AtReturn::EverythingGone => "no file of the store held any of the subject's data",
        AtReturn::KeyGone => "no file of the store held the subject's wrapped key",
        AtReturn::KeyDeleted => {
            "the subject's key row was deleted and vacuumed (copies in WAL and backups die with the KEK version)"
        }
    };
    format!(
        "{head}; at return ({}): {at_return}; ciphertexts and index entries physically gone by {}",
        guarantees.at_return.name(),
        guarantees.purged_by_unix
    )
}
