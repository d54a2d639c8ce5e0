//! `tokenvault audit verify|tail`: the operator's audit commands. Both read
//! the stored log directly and need no key: the chain is plain SHA-256
//! over records that hold only keyed hashes.
//!
//! `verify` opens the store read-only (RocksDB takes no lock then), so it
//! runs beside a live server too; it then compares the records as of
//! opening the store and says so.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use super::keys::VaultArgs;
use crate::api::admin;
use crate::audit::verify::{walk_file, walk_store};
use crate::store::rocks::AuditReader;

/// Records read from the store per page.
const STORE_PAGE: usize = 4096;
/// How often `tail --follow` looks for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the whole hash chain, in the database and in the JSON-lines
    /// file, and that both hold the same records. Names the first bad
    /// record and exits non-zero.
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
        AuditCommand::Verify(args) => verify(&args),
        AuditCommand::Tail(args) => tail(&args).await,
    }
}

fn verify(args: &AuditArgs) -> anyhow::Result<()> {
    let config = args.vault.load()?;
    let file = args.file(&config);
    let live = server_is_running(&config.data_dir);
    let mut progress = |sink: &str, records: u64| {
        eprintln!("audit verify: {sink}: {records} records checked");
    };
    let store_path = config.data_dir.join("rocksdb");
    let store_hashes = match AuditReader::open(&store_path) {
        Ok(reader) => {
            let hashes = walk_store(
                |from| reader.records(from, STORE_PAGE).map_err(|e| e.to_string()),
                &mut progress,
            )?;
            Some(hashes)
        }
        Err(error) => {
            eprintln!(
                "audit verify: cannot read the database at {} ({error}); verifying the file only",
                store_path.display()
            );
            None
        }
    };
    let reader = BufReader::new(
        File::open(&file).with_context(|| format!("cannot open {}", file.display()))?,
    );
    let count = walk_file(reader, store_hashes.as_deref(), live, &mut progress)?;
    let scope = match (&store_hashes, live) {
        (Some(_), false) => "database and file agree",
        (Some(_), true) => {
            "database and file agree; server running: records appended during the check were not compared"
        }
        (None, _) => "file only",
    };
    println!("audit chain ok: {count} records; {scope}");
    if let Some(stored) = store_hashes.as_ref().map(|hashes| hashes.len() as u64) {
        if stored < count {
            // Written durability stores records after the file has them.
            println!(
                "the database's copy ends at record {stored}; the server stores the other {} when it syncs or starts",
                count - stored
            );
        }
    }
    Ok(())
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
