//! Start-up recovery of the two copies: each sink's head, and the records
//! one copy lacks copied from the other (a start after a crash finds the
//! store behind the file, or a cut file), so both end at the same record
//! before the first append. It never changes a record: what it copies is
//! checked on the chain first.

use super::*;

/// (sequence number, hash) of a sink's last record; (0, genesis) if empty.
pub(super) fn head_of(
    key: &ChainKey,
    sink: &str,
    last: Option<&[u8]>,
) -> Result<(u64, String), AuditError> {
    match last {
        None => Ok((0, GENESIS_PREV.to_string())),
        Some(line) => {
            let record = AuditRecord::open(line, key).map_err(|problem| {
                AuditError::Inconsistent(format!(
                    "the last record of the {sink} is not valid ({problem:?}); run tokenvault audit verify"
                ))
            })?;
            let hash = record.hash().to_string();
            Ok((record.seq, hash))
        }
    }
}

/// Appends the store's records after the file's last one to the file.
pub(super) async fn file_catch_up(
    key: &ChainKey,
    store: &dyn Store,
    sink: &mut FileSink,
    file_head: &(u64, String),
    until: u64,
) -> Result<(), AuditError> {
    let mut next = file_head.0 + 1;
    let mut prev = file_head.1.clone();
    while next <= until {
        let page = store.audit_records(next, CATCH_UP_PAGE).await?;
        if page.is_empty() {
            return Err(AuditError::Inconsistent(format!(
                "missing record {next} in the database"
            )));
        }
        let mut lines = Vec::new();
        for (seq, line) in page.into_iter().take_while(|(seq, _)| *seq <= until) {
            let record = AuditRecord::open(&line, key)
                .ok()
                .filter(|r| r.seq == seq && seq == next && r.prev == prev)
                .ok_or_else(|| {
                    AuditError::Inconsistent(format!(
                        "record {next}: the database's copy does not continue the file (run tokenvault audit verify)"
                    ))
                })?;
            prev = record.hash().to_string();
            lines.extend_from_slice(&line);
            lines.push(b'\n');
            next += 1;
        }
        sink.append(&lines)
            .map_err(|e| AuditError::Unavailable(format!("audit file: {e}")))?;
    }
    tracing::warn!(
        from = file_head.0 + 1,
        to = until,
        "audit file was behind the database (a crash between the two writes); copied the missing records"
    );
    Ok(())
}

/// Stores the file's records after the store's last one: after a crash,
/// those the store's deferred copy (or a write cut short) did not get.
pub(super) async fn store_catch_up(
    key: &ChainKey,
    store: &dyn Store,
    path: &Path,
    store_head: &(u64, String),
) -> Result<(), AuditError> {
    let seq_of = |line: &[u8]| AuditRecord::open(line, key).ok().map(|record| record.seq);
    let lines = file::lines_after(path, store_head.0, seq_of)
        .map_err(|e| AuditError::Unavailable(format!("{}: {e}", path.display())))?;
    let mut prev = store_head.1.clone();
    let mut missing = Vec::new();
    for line in lines {
        let record = AuditRecord::open(&line, key)
            .ok()
            .filter(|r| r.seq == store_head.0 + 1 + missing.len() as u64 && r.prev == prev)
            .ok_or_else(|| {
                AuditError::Inconsistent(format!(
                    "record {}: the file's copy does not continue the database (run tokenvault audit verify)",
                    store_head.0 + 1 + missing.len() as u64
                ))
            })?;
        prev = record.hash().to_string();
        missing.push((record.seq, line));
    }
    tracing::warn!(
        records = missing.len(),
        "audit database was behind the file (the process stopped before it stored them); stored the missing records"
    );
    for page in missing.chunks(CATCH_UP_PAGE) {
        store.append_audit(page.to_vec()).await?;
    }
    Ok(())
}
