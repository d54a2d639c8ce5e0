//! The command line: `serve` runs the server; `tokenize`, `detokenize`,
//! `redact` and `restore` make the same binary a client; `bench` is the end-to-end load tool;
//! `keys` and `audit` are operator commands on a vault's data directory;
//! `alerts` and `anomaly` are the anomaly detection's.
//! Each command exits non-zero on failure with one clear line.

pub mod anomaly;
pub mod audit;
pub mod bench;
mod bench_forget;
mod bench_http;
mod bench_kek;
mod bench_redact;
pub mod client;
pub mod config_check;
pub mod erasure;
pub mod keys;
mod keys_retire;
pub mod serve;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "tokenvault",
    version,
    about = "Format-preserving tokenization vault for chat systems"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gRPC server.
    Serve(serve::ServeArgs),
    /// Tokenize values for a subject and print one token per line.
    Tokenize(TokenizeArgs),
    /// Detokenize tokens; prints `token<TAB>STATUS<TAB>value` per token.
    Detokenize(DetokenizeArgs),
    /// Replace the PII in a text by tokens of a subject; prints the
    /// redacted text.
    Redact(RedactArgs),
    /// Replace the tokens in a text by their values; prints the text.
    Restore(RestoreArgs),
    /// Load-test a running server (and, optionally, OpenBao transit as the
    /// peer baseline) and print values/s and latency percentiles.
    Bench(Box<bench::BenchArgs>),
    /// Key management: KEK rotation and status.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Forget a data subject (crypto-shredding); prints the erasure
    /// receipt.
    Forget(erasure::ForgetArgs),
    /// Export every token of a subject with its value; prints
    /// `token<TAB>format<TAB>value<TAB>created_at_unix` per token.
    Export(erasure::ExportArgs),
    /// Backups that a restore cannot use to bring a forgotten subject back.
    #[command(subcommand)]
    Backup(erasure::BackupCommand),
    /// Erasure receipts.
    #[command(subcommand)]
    Receipt(erasure::ReceiptCommand),
    /// Retention of expired tokens.
    #[command(subcommand)]
    Retention(erasure::RetentionCommand),
    /// Erasure: `erasure status` shows the forgets whose data the scheduled
    /// full purge still has to remove, and the deadline.
    #[command(subcommand)]
    Erasure(erasure::ErasureCommand),
    /// The audit log: verify its hash chain, or follow new records.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Config files: `config check FILE` lists every problem of one.
    #[command(subcommand)]
    Config(config_check::ConfigCommand),
    /// Anomaly alerts of the running server: `list`, `ack ID`, `clear
    /// ACTOR`.
    #[command(subcommand)]
    Alerts(anomaly::AlertsCommand),
    /// Behavioural anomaly detection offline: `anomaly replay FILE`.
    #[command(subcommand)]
    Anomaly(anomaly::AnomalyCommand),
}

/// Every file, directory and socket this process creates (the data
/// directory, RocksDB's files, the ledger, the audit file, the admin
/// socket, backups) is created owner-only: umask 077, set before any
/// thread starts. The modes passed to `open` (0600) and `mkdir` (0700)
/// say the same where the code names them.
fn owner_only_umask() {
    // SAFETY: umask(2) only sets the process's file mode creation mask;
    // it takes no pointer and cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

/// Where the client finds the server and its credential. The API key is
/// never an argument (`ps` shows arguments to every user): it comes from
/// `--api-key-file` / `TOKENVAULT_API_KEY_FILE` or `TOKENVAULT_API_KEY`.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Server address: `http://` (loopback) or `https://` (TLS).
    #[arg(
        long,
        env = "TOKENVAULT_ADDR",
        default_value = "http://127.0.0.1:50051"
    )]
    pub addr: String,
    /// Refused: a key on the command line shows in `ps`. Use
    /// TOKENVAULT_API_KEY_FILE, --api-key-file or TOKENVAULT_API_KEY.
    #[arg(long, hide = true)]
    pub api_key: Option<String>,
    /// File holding the API key (else TOKENVAULT_API_KEY; without
    /// either, the dev admin key file of --data-dir, unless a client
    /// certificate is given).
    #[arg(long, env = "TOKENVAULT_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
    /// PEM CA bundle that the server's certificate must chain to
    /// (`https://`; default: the public web roots).
    #[arg(long, env = "TOKENVAULT_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for mTLS; needs --client-key.
    #[arg(long, env = "TOKENVAULT_CLIENT_CERT")]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(long, env = "TOKENVAULT_CLIENT_KEY")]
    pub client_key: Option<PathBuf>,
    /// Data directory of a `serve --dev` vault, for its dev-admin.key.
    #[arg(long, default_value = crate::config::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModeArg {
    Deterministic,
    Random,
}

#[derive(Debug, Args)]
pub struct TokenizeArgs {
    /// The data subject the values belong to.
    #[arg(long)]
    pub subject: String,
    /// Token format: card, phone, email, iban, ru_passport, ru_snils, ru_inn,
    /// ru_ogrn, ru_bank_account, us_ssn, text, opaque.
    #[arg(long)]
    pub format: String,
    #[arg(long, value_enum, default_value = "deterministic")]
    pub mode: ModeArg,
    /// Seconds until the tokens expire (0 = never).
    #[arg(long, default_value_t = 0)]
    pub ttl: u64,
    /// Values to tokenize.
    #[arg(required = true)]
    pub values: Vec<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct DetokenizeArgs {
    /// Why the values are needed (recorded in the audit log).
    #[arg(long, default_value = "")]
    pub purpose: String,
    /// Tokens to look up.
    #[arg(required = true)]
    pub tokens: Vec<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct RedactArgs {
    /// The data subject the values belong to.
    #[arg(long)]
    pub subject: String,
    /// Kinds to detect (repeatable, or comma-separated); none = all.
    #[arg(long, value_delimiter = ',')]
    pub kinds: Vec<String>,
    /// The text to redact.
    pub text: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Why the values are needed (recorded in the audit log).
    #[arg(long, default_value = "")]
    pub purpose: String,
    /// Restore only tokens of this data subject (others are left as they
    /// are); without it, tokens of any subject.
    #[arg(long)]
    pub subject: Option<String>,
    /// The text whose tokens to restore.
    pub text: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    owner_only_umask();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Tokenize(args) => client::tokenize(args).await,
            Command::Detokenize(args) => client::detokenize(args).await,
            Command::Redact(args) => client::redact(args).await,
            Command::Restore(args) => client::restore(args).await,
            Command::Bench(args) => bench::run(*args).await,
            Command::Keys(command) => keys::run(command).await,
            Command::Forget(args) => erasure::forget(args).await,
            Command::Export(args) => erasure::export(args).await,
            Command::Backup(command) => erasure::backup(command).await,
            Command::Receipt(command) => erasure::receipt(command).await,
            Command::Retention(command) => erasure::retention(command).await,
            Command::Erasure(command) => erasure::erasure(command).await,
            Command::Audit(command) => audit::run(command).await,
            Command::Config(command) => config_check::run(command).await,
            Command::Alerts(command) => anomaly::alerts(command).await,
            Command::Anomaly(command) => anomaly::anomaly(command).await,
        }
    })
}
