//! The file backend: a JSON-lines file, appended and synced one entry at a
//! time, with an earlier version's unchained lines read as a prefix and
//! sealed. A failed append is cut back, so no half line stays.

use super::*;

pub(super) struct FileState {
    pub(super) file: File,
    /// The file's length after the last whole entry: a failed append is
    /// cut back to it, so a half-written line never stays.
    pub(super) len: u64,
    pub(super) last_seq: u64,
    pub(super) last_mac: [u8; 32],
}

pub(super) fn open_file(
    path: &Path,
    name: String,
    key: SecretKey,
    if_missing: IfMissing,
) -> Result<(ErasureLedger, Contents), LedgerError> {
    let io = |error| LedgerError::Io {
        name: name.clone(),
        error,
    };
    let existed = path.exists();
    if !existed {
        if if_missing == IfMissing::Refuse {
            return Err(LedgerError::Missing { name });
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(io)?;
        }
    }
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    if !existed {
        // The new file's name is durable before anything relies on it.
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(parent)
                .and_then(|dir| dir.sync_all())
                .map_err(io)?;
        }
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io)?;
    let mut contents = read_lines(&bytes, &name, &key)?;
    let (last_seq, last_mac) = contents
        .entries
        .last()
        .map(|e| (e.seq, e.mac))
        .unwrap_or((0, [0; 32]));
    let ledger = ErasureLedger {
        name,
        key,
        backend: Backend::File(Mutex::new(FileState {
            file,
            len: bytes.len() as u64,
            last_seq,
            last_mac,
        })),
    };
    if contents.entries.is_empty() && !contents.legacy.is_empty() {
        let seal = ledger.next_entry(
            0,
            &[0; 32],
            Record::LegacyPrefix {
                lines: contents.legacy.len() as u64,
                digest: contents.legacy_digest,
            },
        );
        if let Backend::File(state) = &ledger.backend {
            append_line(&mut state.lock(), &seal).map_err(|error| LedgerError::Io {
                name: ledger.name.clone(),
                error,
            })?;
        }
        contents.entries.push(seal);
    }
    Ok((ledger, contents))
}

/// Writes and syncs one entry's line; on failure the file is cut back to
/// its last whole entry.
pub(super) fn append_line(state: &mut FileState, entry: &Entry) -> std::io::Result<()> {
    let mut line = to_line(entry);
    line.push('\n');
    let written = state
        .file
        .write_all(line.as_bytes())
        .and_then(|()| state.file.sync_data());
    if let Err(error) = written {
        let _ = state.file.set_len(state.len);
        return Err(error);
    }
    state.len += line.len() as u64;
    state.last_seq = entry.seq;
    state.last_mac = entry.mac;
    Ok(())
}

/// Parses and verifies a ledger file's bytes.
pub(super) fn read_lines(
    bytes: &[u8],
    name: &str,
    key: &SecretKey,
) -> Result<Contents, LedgerError> {
    let corrupt = |line: usize, why| LedgerError::Corrupt {
        name: name.to_string(),
        line,
        why,
    };
    let text = std::str::from_utf8(bytes).map_err(|_| corrupt(0, "not UTF-8 text"))?;
    let mut contents = Contents {
        legacy_digest: Sha256::digest(b"").into(),
        ..Contents::default()
    };
    let mut legacy_end = 0;
    let mut check: Option<ChainCheck> = None;
    let mut offset = 0;
    for (i, raw) in text.split_inclusive('\n').enumerate() {
        let line_no = i + 1;
        let start = offset;
        offset += raw.len();
        let Some(line) = raw.strip_suffix('\n') else {
            return Err(corrupt(line_no, "cut short: the last line has no end"));
        };
        if line.is_empty() {
            continue;
        }
        if check.is_none() {
            if let Ok(legacy) = serde_json::from_str::<LegacyLine>(line) {
                let subject =
                    hex32(&legacy.subject_hash).ok_or(corrupt(line_no, "not a ledger entry"))?;
                contents.legacy.push(SubjectHash(subject));
                legacy_end = start + raw.len();
                continue;
            }
            contents.legacy_digest = Sha256::digest(&bytes[..legacy_end]).into();
            check = Some(ChainCheck {
                key,
                name,
                legacy: contents.legacy.len() as u64,
                legacy_digest: contents.legacy_digest,
                prev: [0; 32],
                next_seq: 1,
            });
        }
        let entry = parse_line(line).map_err(|why| {
            if serde_json::from_str::<LegacyLine>(line).is_ok() {
                corrupt(line_no, "an unchained line after chained ones")
            } else {
                corrupt(line_no, why)
            }
        })?;
        if let Some(check) = check.as_mut() {
            check.push(line_no, &entry)?;
        }
        contents.entries.push(entry);
    }
    if check.is_none() {
        contents.legacy_digest = Sha256::digest(&bytes[..legacy_end]).into();
    }
    Ok(contents)
}
