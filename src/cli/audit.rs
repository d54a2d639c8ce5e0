//! `tokenvault audit verify|tail`: the operator's audit commands. Both read
//! the stored log directly. `tail` needs no key; `verify` needs the
//! vault's: the chain is MACed under a key derived from the system key,
//! so it reads the wrapped system key from the store and has the
//! configured key provider unwrap it, as the server does.
//!
//! `verify` opens RocksDB read-only (it takes no lock then), so it runs
//! beside a live server too; it then compares the records as of opening
//! the store and says so. On PostgreSQL it checks every replica's chain in
//! `tv_audit`, and this replica's against its file. Both compare the
//! chain with the newest checkpoint (`[audit] checkpoint_file`).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use super::keys::VaultArgs;
use crate::api::admin;
use crate::audit::checkpoint::{self, Checkpoint, CheckpointKey};
use crate::audit::verify::{against_checkpoint, walk_file, walk_store};
use crate::audit::ChainKey;
use crate::crypto::SystemKeys;
use crate::kek::WrappedKey;
use crate::store::postgres::PostgresStore;
use crate::store::rocks::AuditReader;
use crate::store::Store;

/// Records read from the store per page.
const STORE_PAGE: usize = 4096;
/// How often `tail --follow` looks for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the whole chain, in the database (every replica's, on
    /// PostgreSQL) and in the JSON-lines file, that both hold the same
    /// records and that none is missing before the newest checkpoint.
    /// Needs the key provider. Names the first bad record and exits
    /// non-zero.
    Verify(AuditArgs),
    /// Print the audit records (JSON lines); with --follow, keep printing
    /// records as they are appended.
    Tail(TailArgs),
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub vault: VaultArgs,
    /// The JSON-lines audit file (default: the config's `[audit] file`,
    /// or `<data_dir>/audit.jsonl`).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// The checkpoint file (default: the config's `[audit]
    /// checkpoint_file`, or `audit.checkpoint` beside the audit file).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
}

impl AuditArgs {
    fn file(&self, config: &crate::config::Config) -> PathBuf {
        self.file.clone().unwrap_or_else(|| config.audit_file())
    }
}

#[derive(Debug, Args)]
pub struct TailArgs {
    #[command(flatten)]
    pub audit: AuditArgs,
    /// Keep running and print new records as they are appended.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Print only the last N records before following (default: all).
    #[arg(long, short = 'n')]
    pub lines: Option<usize>,
}

pub async fn run(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Verify(args) => verify(&args).await,
        AuditCommand::Tail(args) => tail(&args).await,
    }
}

async fn verify(args: &AuditArgs) -> anyhow::Result<()> {
    let config = args.vault.load()?;
    let file = args.file(&config);
    let checkpoint_path = args
        .checkpoint
        .clone()
        .unwrap_or_else(|| config.audit_checkpoint_file());
    let live = server_is_running(&config.data_dir);
    match config.storage.postgres_options()? {
        Some(options) => verify_postgres(&config, &options, &file, &checkpoint_path, live).await,
        None => verify_rocks(&config, &file, &checkpoint_path, live).await,
    }
}

fn progress(sink: &str, records: u64) {
    eprintln!("audit verify: {sink}: {records} records checked");
}

/// The chain's and the checkpoints' keys: the system key, read from the
/// store and unwrapped by the configured key provider.
async fn audit_keys(
    config: &crate::config::Config,
    wrapped: Option<WrappedKey>,
) -> anyhow::Result<(ChainKey, CheckpointKey)> {
    let wrapped = wrapped.context("the database holds no system key: no vault was opened on it")?;
    let kek = crate::kek::open_provider(&config.kek, &config.data_dir, false)
        .await
        .context(
            "cannot open the key provider: the audit chain's key derives from the system key",
        )?;
    let system = kek
        .unwrap(&[&wrapped])
        .await
        .context("the key provider cannot unwrap the system key")?
        .into_iter()
        .next()
        .context("the key provider returned no key")?;
    let hash_key = SystemKeys::from_system_key(&system)
        .audit_hash_key()
        .clone();
    Ok((
        ChainKey::from_audit_hash_key(&hash_key),
        CheckpointKey::from_audit_hash_key(&hash_key),
    ))
}

/// The newest checkpoint of `chain`, read before either copy (so that it
/// is never ahead of what they held when read).
fn newest_checkpoint(
    path: &Path,
    key: &CheckpointKey,
    chain: &str,
) -> anyhow::Result<Option<Checkpoint>> {
    Ok(checkpoint::read(path, key, chain)?)
}

/// The store's chain against the checkpoint.
fn store_against(hashes: &[[u8; 32]], checkpoint: Option<&Checkpoint>) -> anyhow::Result<()> {
    if let Some(checkpoint) = checkpoint.filter(|c| c.seq > 0) {
        let at = hashes
            .get((checkpoint.seq - 1) as usize)
            .map(crate::audit::verify::hash_hex);
        against_checkpoint("database", hashes.len() as u64, at.as_deref(), checkpoint)?;
    }
    Ok(())
}

/// What the checkpoint vouches for, after a sound chain of `count`. No
/// checkpoint for a chain with records is a failure, unless a server is
/// running (its first one is written within a sync interval).
fn report_checkpoint(
    checkpoint: Option<&Checkpoint>,
    count: u64,
    path: &Path,
    live: bool,
) -> anyhow::Result<()> {
    match checkpoint {
        Some(checkpoint) => {
            println!(
                "checkpoint {}: record {} of {} matches; a cut of the {} records after it would not show",
                path.display(),
                checkpoint.seq,
                checkpoint.time_unix_ms,
                count.saturating_sub(checkpoint.seq)
            );
            Ok(())
        }
        None if count == 0 => Ok(()),
        None if live => {
            println!(
                "no audit checkpoint at {} yet: the running server writes its first within a second of its first records",
                path.display()
            );
            Ok(())
        }
        None => bail!(
            "no audit checkpoint at {}: a cut tail cannot be ruled out (pass --checkpoint with the server's [audit] checkpoint_file)",
            path.display()
        ),
    }
}

async fn verify_rocks(
    config: &crate::config::Config,
    file: &Path,
    checkpoint_path: &Path,
    live: bool,
) -> anyhow::Result<()> {
    let store_path = config.data_dir.join("rocksdb");
    let reader = AuditReader::open(&store_path)
        .with_context(|| format!("cannot read the database at {}", store_path.display()))?;
    let (chain_key, checkpoint_key) = audit_keys(config, reader.system_key()?).await?;
    let newest = newest_checkpoint(checkpoint_path, &checkpoint_key, "")?;
    let hashes = walk_store(
        &chain_key,
        |from| reader.records(from, STORE_PAGE).map_err(|e| e.to_string()),
        &mut progress,
    )?;
    store_against(&hashes, newest.as_ref())?;
    let lines = BufReader::new(
        File::open(file).with_context(|| format!("cannot open {}", file.display()))?,
    );
    let count = walk_file(
        &chain_key,
        lines,
        Some(&hashes),
        live,
        newest.as_ref(),
        &mut progress,
    )?;
    let scope = if live {
        "database and file agree; server running: records appended during the check were not compared"
    } else {
        "database and file agree"
    };
    println!("audit chain ok: {count} records; {scope}");
    report_checkpoint(newest.as_ref(), count, checkpoint_path, live)?;
    let stored = hashes.len() as u64;
    if stored < count {
        // Written durability stores records after the file has them.
        println!(
            "the database's copy ends at record {stored}; the server stores the other {} when it syncs or starts",
            count - stored
        );
    }
    Ok(())
}

/// Every replica's chain in `tv_audit`; this replica's also against its
/// file and checkpoint (the others' are on their own hosts: run verify
/// there too).
async fn verify_postgres(
    config: &crate::config::Config,
    options: &crate::store::postgres::PostgresOptions,
    file: &Path,
    checkpoint_path: &Path,
    live: bool,
) -> anyhow::Result<()> {
    let store = PostgresStore::open(options)
        .await
        .context("cannot open the PostgreSQL store")?;
    let (chain_key, checkpoint_key) = audit_keys(config, store.system_key().await?).await?;
    let own = store.replica().to_string();
    let newest = newest_checkpoint(checkpoint_path, &checkpoint_key, &own)?;
    let mut chains = store.audit_chains().await?;
    if !chains.contains(&own) && newest.as_ref().is_some_and(|c| c.seq > 0) {
        // Every row of this chain deleted: the checkpoint still names it.
        chains.push(own.clone());
    }
    let store = std::sync::Arc::new(store);
    let mut own_hashes = None;
    for chain in chains {
        let pages = std::sync::Arc::clone(&store);
        let name = chain.clone();
        let key = chain_key.clone();
        let runtime = tokio::runtime::Handle::current();
        let walked = tokio::task::spawn_blocking(move || {
            walk_store(
                &key,
                |from| {
                    runtime
                        .block_on(pages.chain_records(&name, from, STORE_PAGE))
                        .map_err(|e| e.to_string())
                },
                &mut |_, records| progress(&format!("replica {name}"), records),
            )
        })
        .await?;
        let hashes = walked.map_err(|error| anyhow::anyhow!("replica {chain}: {error}"))?;
        if chain == own {
            store_against(&hashes, newest.as_ref())
                .map_err(|error| anyhow::anyhow!("replica {chain}: {error}"))?;
            own_hashes = Some(hashes.clone());
        }
        println!("replica {chain}: {} records, chain sound", hashes.len());
    }
    let own_hashes = own_hashes.unwrap_or_default();
    let count = match File::open(file) {
        Ok(opened) => {
            let count = walk_file(
                &chain_key,
                BufReader::new(opened),
                Some(&own_hashes),
                live,
                newest.as_ref(),
                &mut progress,
            )
            .map_err(|error| anyhow::anyhow!("replica {own}: {error}"))?;
            println!("audit chain ok: replica {own}: {count} records; database and file agree");
            count
        }
        Err(error) => {
            println!(
                "audit chains ok; replica {own}: the file {} was not compared ({error}): run verify on its host",
                file.display()
            );
            own_hashes.len() as u64
        }
    };
    report_checkpoint(newest.as_ref(), count, checkpoint_path, live)
        .map_err(|error| anyhow::anyhow!("replica {own}: {error}"))
}

fn server_is_running(data_dir: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(admin::socket_path(data_dir)).is_ok()
}

async fn tail(args: &TailArgs) -> anyhow::Result<()> {
    let config = args.audit.vault.load()?;
    let path = args.audit.file(&config);
    let mut file = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut out = std::io::stdout().lock();
    let start = match args.lines {
        Some(n) => offset_of_last_lines(&mut file, n)?,
        None => 0,
    };
    file.seek(SeekFrom::Start(start))?;
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    loop {
        let read = reader.read_until(b'\n', &mut line)?;
        if read > 0 && line.last() == Some(&b'\n') {
            out.write_all(&line)?;
            out.flush()?;
            line.clear();
            continue;
        }
        // At the end, or in the middle of a line being written.
        if !args.follow {
            return Ok(());
        }
        if replaced(&path, reader.get_ref())? {
            bail!("{} was moved or replaced; run tail again", path.display());
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
}

/// Whether the path no longer names the open file.
fn replaced(path: &Path, file: &File) -> anyhow::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let open = file.metadata()?;
    Ok(match std::fs::metadata(path) {
        Ok(now) => (now.dev(), now.ino()) != (open.dev(), open.ino()),
        Err(_) => true,
    })
}

/// The offset where the last `n` lines start.
fn offset_of_last_lines(file: &mut File, n: usize) -> anyhow::Result<u64> {
    let mut text = Vec::new();
    file.read_to_end(&mut text)?;
    let body = text.strip_suffix(b"\n").unwrap_or(&text);
    let start = body
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, &b)| b == b'\n')
        .nth(n.saturating_sub(1))
        .map_or(0, |(at, _)| at + 1);
    Ok(if n == 0 {
        text.len() as u64
    } else {
        start as u64
    })
}
