//! `tokenvault config check FILE [--connect]`: everything wrong with a
//! config, one line per problem with the key named, before a deploy.
//!
//! It reports every problem it can find, not the first: unknown keys and
//! bad values (each offending line is set aside and the file parsed
//! again), the checks `serve` runs (each section checked on its own), key
//! and certificate files that cannot be read, plaintext connections off
//! loopback and a missing `[kek]` (`crate::exposure`), audit and ledger
//! locations that cannot be written (and a ledger file left under the data
//! directory, or none named), and with `--connect` a Vault that cannot be
//! reached. It changes nothing (a write probe is removed at once) and
//! prints no secret: files are named by path, never shown.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::{Args, Subcommand};

use crate::config::{Config, KekConfig, PrincipalConfig};

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a config file: unknown keys, bad values, unreadable key and
    /// certificate files, unwritable audit/ledger locations; exits
    /// non-zero with one line per problem.
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The TOML config file.
    pub file: PathBuf,
    /// Also log in to the key provider (Vault / OpenBao) and read the key.
    #[arg(long)]
    pub connect: bool,
}

/// How many parse problems are collected before giving up on the file.
const MAX_PARSE_PROBLEMS: usize = 50;

pub async fn run(command: ConfigCommand) -> anyhow::Result<()> {
    let ConfigCommand::Check(args) = command;
    let (problems, warnings) = check_file(&args.file, args.connect).await;
    let file = args.file.display();
    for warning in &warnings {
        println!("{file}: warning: {warning}");
    }
    if problems.is_empty() {
        println!("{file}: ok");
        return Ok(());
    }
    for problem in &problems {
        println!("{file}: {problem}");
    }
    bail!("config {file}: {} problem(s)", problems.len())
}

/// Every problem of the config file, in file order for parse problems,
/// then the checks, then what it exposes off loopback, then the files,
/// then the connection; and the warnings (plaintext off loopback that the
/// config allows).
pub async fn check_file(path: &Path, connect: bool) -> (Vec<String>, Vec<String>) {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) => return (vec![format!("cannot read the file: {error}")], Vec::new()),
    };
    let (config, mut problems) = parse_all(&text);
    let Some(config) = config else {
        return (problems, Vec::new());
    };
    for problem in semantic_problems(&config) {
        if !problems.contains(&problem) {
            problems.push(problem);
        }
    }
    // As `serve --config` would run it (not --dev).
    let exposure = crate::exposure::check(&config, false);
    problems.extend(exposure.refused);
    problems.extend(file_problems(&config));
    if connect {
        problems.extend(connect_problems(&config).await);
    }
    (problems, exposure.warnings)
}

/// Parses the config, setting aside each line the parser rejects (and
/// the whole table for a rejected table header) to find the next problem.
/// Returns the config parsed without those lines, if it ever parsed.
fn parse_all(text: &str) -> (Option<Config>, Vec<String>) {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    // (line, problem): serde finds them in its own order; shown in the
    // file's.
    let mut problems: Vec<(usize, String)> = Vec::new();
    let config = loop {
        let current = lines.join("\n");
        let error = match toml::from_str::<Config>(&current) {
            Ok(config) => break Some(config),
            Err(error) => error,
        };
        let message = crate::config::redact_secrets(error.message().trim()).replace('\n', " ");
        let Some(line) = error.span().map(|span| line_of(&current, span.start)) else {
            problems.push((usize::MAX, message));
            break None;
        };
        problems.push(match lines.get(line).and_then(|text| key_of(text)) {
            Some(key) => (line, format!("line {} ({key}): {message}", line + 1)),
            None => (line, format!("line {}: {message}", line + 1)),
        });
        if problems.len() >= MAX_PARSE_PROBLEMS || !set_aside(&mut lines, line) {
            break None;
        }
    };
    problems.sort_by_key(|(line, _)| *line);
    (config, problems.into_iter().map(|(_, p)| p).collect())
}

/// The 0-based line of byte `offset`.
fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .unwrap_or(text)
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
}

/// The key or table a line sets, for the message.
fn key_of(line: &str) -> Option<String> {
    let line = line.trim();
    if line.starts_with('[') {
        return Some(line.trim_matches(['[', ']']).trim().to_string());
    }
    let (key, _) = line.split_once('=')?;
    Some(key.trim().to_string()).filter(|k| !k.is_empty())
}

/// Comments out `line` (a table header with its keys). False when there
/// is nothing to set aside (the error is not on a line of its own).
fn set_aside(lines: &mut [String], line: usize) -> bool {
    let Some(first) = lines.get(line) else {
        return false;
    };
    let trimmed = first.trim_start();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return false;
    }
    let end = if trimmed.starts_with('[') {
        (line + 1..lines.len())
            .find(|&i| lines[i].trim_start().starts_with('['))
            .unwrap_or(lines.len())
    } else {
        line + 1
    };
    for text in &mut lines[line..end] {
        text.insert(0, '#');
    }
    true
}

/// What `serve`'s check finds, section by section so that one problem
/// does not hide the next. The whole config is checked last for what
/// spans sections (e.g. a principal's name used twice).
fn semantic_problems(config: &Config) -> Vec<String> {
    let base = Config::dev();
    let mut slices = vec![
        // With [erasure]: the PostgreSQL store needs its ledger there.
        Config {
            storage: config.storage.clone(),
            erasure: config.erasure.clone(),
            ..base.clone()
        },
        Config {
            limits: config.limits.clone(),
            ..base.clone()
        },
        Config {
            kek: config.kek.clone(),
            ..base.clone()
        },
        Config {
            cache: config.cache.clone(),
            ..base.clone()
        },
        Config {
            actor_tokens: config.actor_tokens.clone(),
            ..base.clone()
        },
    ];
    // Each principal at its own index, after valid stand-ins, so the
    // message names the right `principals[i]`.
    for i in 0..config.principals.len() {
        let mut principals: Vec<PrincipalConfig> = (0..i).map(stand_in).collect();
        principals.push(config.principals[i].clone());
        slices.push(Config {
            tls: config.tls.clone(),
            principals,
            ..base.clone()
        });
    }
    for detector in &config.detectors {
        slices.push(Config {
            detectors: vec![detector.clone()],
            ..base.clone()
        });
    }
    slices.push(config.clone());
    let mut problems: Vec<String> = Vec::new();
    for slice in slices {
        if let Err(error) = slice.check() {
            let message = error.to_string();
            let message = message.strip_prefix("config: ").unwrap_or(&message);
            if !problems.iter().any(|p| p == message) {
                problems.push(message.to_string());
            }
        }
    }
    problems
}

/// A principal that passes every check.
fn stand_in(i: usize) -> PrincipalConfig {
    let text = format!(
        "[[principals]]\nname = \"config-check-stand-in-{i}\"\napi_key_sha256 = \"{}\"\nallow = []",
        "0".repeat(64)
    );
    Config::parse(&text)
        .expect("the stand-in principal parses")
        .principals
        .remove(0)
}

/// `path` if it cannot be read, as a problem of `key`.
fn unreadable(key: &str, path: &Path) -> Option<String> {
    fs::read(path)
        .err()
        .map(|error| format!("{key}: cannot read {}: {error}", path.display()))
}

/// Files the server reads or writes at start-up.
fn file_problems(config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    match &config.kek {
        // Without a path, `crate::exposure` reports the missing [kek].
        KekConfig::Local { path: None } => {}
        KekConfig::Local { path: Some(path) } => {
            let problem = unreadable("kek.path", path).or_else(|| {
                crate::kek::local::LocalKek::open(path, false)
                    .err()
                    .map(|error| format!("kek.path: {error}"))
            });
            problems.extend(problem);
        }
        KekConfig::Vault {
            ca_cert, approle, ..
        } => {
            if let Some(ca_cert) = ca_cert {
                problems.extend(unreadable("kek.ca_cert", ca_cert));
            }
            if let Some(approle) = approle {
                problems.extend(unreadable(
                    "kek.approle.secret_id_file",
                    &approle.secret_id_file,
                ));
            }
        }
    }
    if let Some(tls) = &config.tls {
        problems.extend(unreadable("tls.cert", &tls.cert));
        problems.extend(unreadable("tls.key", &tls.key));
        if let Some(ca) = &tls.client_ca {
            problems.extend(unreadable("tls.client_ca", ca));
        }
    }
    if let Some(actor_tokens) = &config.actor_tokens {
        let before = problems.len();
        for (i, key) in actor_tokens.keys.iter().enumerate() {
            problems.extend(unreadable(
                &format!("actor_tokens.keys[{i}].public_key_pem"),
                &key.public_key_pem,
            ));
        }
        // The keys themselves, once every file could be read.
        if problems.len() == before && !actor_tokens.keys.is_empty() {
            if let Err(error) = crate::policy::ActorVerifier::from_config(actor_tokens) {
                problems.push(format!("actor_tokens: {error}"));
            }
        }
    }
    if let Some(metrics) = &config.metrics {
        if metrics.listen == config.listen && metrics.listen.port() != 0 {
            problems.push(format!(
                "metrics.listen: {} is also the gRPC listen address",
                metrics.listen
            ));
        }
    }
    problems.extend(directory_problem("data_dir", &config.data_dir, true));
    // The server creates the data directory (so an audit file directly in
    // it is fine) and the ledger's directories, not the audit file's.
    let audit = config.audit_file();
    let in_data_dir = audit.parent() == Some(config.data_dir.as_path());
    problems.extend(file_writable_problem("audit.file", &audit, in_data_dir));
    // Outside --dev (a config file never is --dev): a ledger file named,
    // outside the data directory; a PostgreSQL ledger's CA file readable.
    problems.extend(config.ledger_problem(false));
    match config.ledger_location() {
        Ok(crate::erasure::LedgerLocation::File(path)) => {
            problems.extend(file_writable_problem("erasure.ledger", &path, true));
        }
        Ok(crate::erasure::LedgerLocation::Postgres(options)) => {
            if let Some(ca) = &options.ca_file {
                problems.extend(unreadable("erasure.postgres.ca_file", ca));
            }
        }
        // Reported with the checks.
        Err(_) => {}
    }
    problems
}

/// A file the server appends to: writable if it exists, else creatable in
/// its directory (which the server creates when `creates_dirs`).
fn file_writable_problem(key: &str, path: &Path, creates_dirs: bool) -> Option<String> {
    if path.is_dir() {
        return Some(format!("{key}: {} is a directory", path.display()));
    }
    if path.exists() {
        return fs::OpenOptions::new()
            .append(true)
            .open(path)
            .err()
            .map(|error| format!("{key}: cannot write {}: {error}", path.display()));
    }
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    directory_problem(key, parent, creates_dirs)
}

/// A directory the server writes in: it must be a writable directory, or
/// (when the server creates it) have a writable directory as its nearest
/// existing ancestor.
fn directory_problem(key: &str, dir: &Path, created: bool) -> Option<String> {
    let mut existing = dir;
    while !existing.exists() {
        if !created {
            return Some(format!("{key}: directory {} does not exist", dir.display()));
        }
        existing = match existing.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
    }
    if !existing.is_dir() {
        return Some(format!(
            "{key}: {} is not a directory, so {} cannot be written",
            existing.display(),
            dir.display()
        ));
    }
    write_probe(existing)
        .err()
        .map(|error| format!("{key}: cannot write in {}: {error}", existing.display()))
}

/// Creates and removes a file in `dir`.
fn write_probe(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".tokenvault-config-check.{}", std::process::id()));
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    fs::remove_file(&probe)
}

/// With `--connect`: logs in to the key provider and reads the key's
/// status, as the server does at start-up.
async fn connect_problems(config: &Config) -> Vec<String> {
    let KekConfig::Vault { address, .. } = &config.kek else {
        return Vec::new();
    };
    let status = async {
        let provider = crate::kek::open_provider(&config.kek, &config.data_dir, false).await?;
        provider.status().await
    };
    match status.await {
        Ok(_) => Vec::new(),
        Err(error) => vec![format!("kek (vault at {address}): {error}")],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unknown_key_and_bad_value_is_reported_with_its_line_and_key() {
        let (config, problems) = parse_all(
            "lisen = \"127.0.0.1:1\"\nlisten = \"nowhere\"\n[storage]\nsync_write = false\n[bogus]\nx = 1\n[limits]\nmax_items = 3\n",
        );
        assert!(config.is_some(), "parses once the bad lines are set aside");
        assert_eq!(problems.len(), 5, "{problems:?}");
        for (problem, named) in problems.iter().zip([
            "line 1 (lisen)",
            "line 2 (listen)",
            "line 4 (sync_write)",
            "line 5 (bogus)",
            "line 8 (max_items)",
        ]) {
            assert!(problem.starts_with(named), "{problem} should name {named}");
        }
    }

    #[test]
    fn every_section_check_is_reported_not_the_first_only() {
        let config = Config::parse(&format!(
            "[cache]\nmax_subjects = 0\n[[principals]]\nname = \"a\"\napi_key_sha256 = \"{}\"\nallow = []\n[[principals]]\nname = \"b\"\napi_key_sha256 = \"xyz\"\nallow = []\n[[principals]]\nname = \"c\"\napi_key_sha256 = \"{}\"\nallow = [\"detokenise\"]\n",
            "a".repeat(64),
            "b".repeat(64)
        ))
        .expect("parses");
        let problems = semantic_problems(&config);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("cache.max_subjects"));
        assert!(problems[1].contains("principals[1] (b)") && problems[1].contains("64 hex"));
        assert!(problems[2].contains("principals[2] (c)") && problems[2].contains("detokenise"));
    }
}
