//! The vault's side of the erasure ledger: opening it against the store
//! before anything is served, replaying what the store lacks, and
//! recording each forget's entry as applied.
//!
//! The store keeps, beside the data, the sequence number and MAC of every
//! ledger entry it has applied (`Store::ledger_applied`); a backup or a
//! dump carries them with the data. At every start:
//!
//! - the store's marks must all be in the ledger, with the same MACs: a
//!   ledger that is missing, cut at the tail, or another one, is refused,
//!   naming it (after `backup restore --danger-restore-without-ledger`
//!   the marks are dropped instead and the ledger is taken as it is);
//! - every entry the store has not applied is replayed (a restored
//!   backup or dump, or a forget cut short by a crash after its entry was
//!   written), then marked. A subject forgotten and later seen again is
//!   not erased again: that forget's mark is in the data.
//!
//! `backup restore` leaves a marker in the data directory until this ran,
//! so a restore cut short is finished before the next start serves.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::{Vault, VaultError};
use crate::clock::unix_now;
use crate::config::Config;
use crate::erasure::ledger::{Entry, IfMissing, Record};
use crate::erasure::{ErasureLedger, LedgerError};

/// The marker a restore leaves in the data directory: until the erasure
/// ledger has been replayed over the restored database, it must not serve.
pub const RESTORE_MARKER: &str = "restore-pending";
/// The marker's content after `backup restore --danger-restore-without-ledger`.
pub const DANGER_WITHOUT_LEDGER: &str = "danger-restore-without-ledger";

/// The flag that lets a restore through without the ledger it expects.
pub const DANGER_FLAG: &str = "--danger-restore-without-ledger";

fn unavailable(error: LedgerError) -> VaultError {
    VaultError::LedgerUnavailable(error.to_string())
}

fn refused(error: LedgerError) -> VaultError {
    VaultError::LedgerRefused(error.to_string())
}

impl Vault {
    /// Opens the configured ledger, checks it against the store, replays
    /// what the store lacks and clears a restore's marker.
    pub async fn open_ledger(&mut self, config: &Config) -> Result<(), VaultError> {
        let location = config
            .ledger_location()
            .map_err(|e| VaultError::InvalidArgument(e.to_string()))?;
        let marker = config.data_dir.join(RESTORE_MARKER);
        let restoring = match std::fs::read_to_string(&marker) {
            Ok(text) => Some(text.trim() == DANGER_WITHOUT_LEDGER),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(VaultError::Internal(format!(
                    "cannot read {}: {e}",
                    marker.display()
                )))
            }
        };
        let danger = restoring == Some(true);
        let applied = self.store.ledger_applied().await?;
        // A store that applied entries, or a restore, needs the ledger it
        // expects: a missing one is never read as empty.
        let if_missing = if (!applied.is_empty() || restoring.is_some()) && !danger {
            IfMissing::Refuse
        } else {
            IfMissing::Create
        };
        let (ledger, contents) =
            ErasureLedger::open(&location, self.system.ledger_mac_key().clone(), if_missing)
                .await
                .map_err(|e| match e {
                    LedgerError::Missing { .. } => VaultError::LedgerRefused(format!(
                        "{e}, {}; put the ledger back from where it is kept (without it every subject forgotten since the backup is back: `backup restore {DANGER_FLAG}` accepts that)",
                        if applied.is_empty() {
                            "and a restore is pending".to_string()
                        } else {
                            format!("but the store applied {} of its entries", applied.len())
                        }
                    )),
                    other => refused(other),
                })?;
        self.destroyed_keys.read_on(&contents.entries);
        let mut applied: HashMap<u64, [u8; 32]> = applied.into_iter().collect();
        let by_seq: HashMap<u64, &Entry> = contents.entries.iter().map(|e| (e.seq, e)).collect();
        let last = contents.entries.last().map_or(0, |e| e.seq);
        let missing = applied
            .iter()
            .filter(|(seq, mac)| by_seq.get(seq).is_none_or(|e| e.mac != **mac))
            .map(|(seq, _)| *seq)
            .max();
        if let Some(seq) = missing {
            if !danger {
                let why = if seq > last {
                    format!("it ends at entry {last} but the store applied entry {seq}: its tail was cut, or it is an older copy")
                } else {
                    format!(
                        "its entry {seq} is not the one the store applied: it is another ledger"
                    )
                };
                return Err(VaultError::LedgerRefused(format!(
                    "erasure ledger {}: {why}; restore the ledger from where it is kept",
                    ledger.name()
                )));
            }
            tracing::warn!(
                ledger = ledger.name(),
                "restore accepted without the ledger it expects ({DANGER_FLAG}): subjects forgotten since the backup may be back"
            );
            self.store.mark_ledger_applied(Vec::new(), true).await?;
            applied.clear();
        }
        let pending: Vec<&Entry> = contents
            .entries
            .iter()
            .filter(|e| !applied.contains_key(&e.seq))
            .collect();
        // The seal of an earlier version's lines, written just now on an
        // upgrade (not a restore), stands for what this store has done.
        let upgrade_seal = restoring.is_none()
            && applied.is_empty()
            && contents.entries.len() == 1
            && matches!(contents.entries[0].record, Record::LegacyPrefix { .. });
        let mut revived = 0;
        if !upgrade_seal {
            let now = unix_now();
            let mut seen = HashSet::new();
            for entry in &pending {
                let subjects = match &entry.record {
                    Record::Forget { subject, .. } => vec![*subject],
                    Record::LegacyPrefix { .. } => contents.legacy.clone(),
                };
                for subject in subjects {
                    if seen.insert(subject) && self.erase_hash(subject, now).await? {
                        revived += 1;
                    }
                }
            }
            if revived > 0 {
                self.store.purge().await?;
            }
        }
        if !pending.is_empty() {
            self.store
                .mark_ledger_applied(pending.iter().map(|e| (e.seq, e.mac)).collect(), false)
                .await?;
        }
        if !pending.is_empty() || restoring.is_some() {
            tracing::info!(
                ledger = ledger.name(),
                entries_replayed = if upgrade_seal { 0 } else { pending.len() },
                subjects_erased_again = revived,
                "erasure ledger replayed over the store"
            );
        }
        self.ledger = Some(ledger);
        if restoring.is_some() {
            std::fs::remove_file(&marker).map_err(|e| {
                VaultError::Internal(format!("cannot remove {}: {e}", marker.display()))
            })?;
        }
        Ok(())
    }

    /// Writes a forget's ledger entry (before the store erases anything),
    /// with the fingerprint of the DEK it destroys (None: the subject has
    /// no key). None for vaults assembled without a ledger (tests).
    pub(super) async fn ledger_forget(
        &self,
        subject: crate::crypto::SubjectHash,
        erased_at_unix: i64,
        destroyed_key: Option<[u8; 32]>,
    ) -> Result<Option<Entry>, VaultError> {
        let entry = match &self.ledger {
            None => None,
            Some(ledger) => Some(
                ledger
                    .append(Record::Forget {
                        subject,
                        erased_at_unix,
                        destroyed_key,
                    })
                    .await
                    .map_err(unavailable)?,
            ),
        };
        // Only once the entry is written: a forget refused here destroys
        // nothing, and its key stays usable.
        if let Some(fingerprint) = destroyed_key {
            self.destroyed_keys.record(fingerprint);
        }
        Ok(entry)
    }

    /// Marks a forget's entry applied, once the store erased the subject.
    pub(super) async fn ledger_applied(&self, entry: Option<Entry>) -> Result<(), VaultError> {
        if let Some(entry) = entry {
            self.store
                .mark_ledger_applied(vec![(entry.seq, entry.mac)], false)
                .await?;
        }
        Ok(())
    }
}

/// Whether the ledger `config` names exists (before a restore touches
/// anything).
pub async fn ledger_exists(config: &Config) -> Result<(bool, String), VaultError> {
    let location = config
        .ledger_location()
        .map_err(|e| VaultError::InvalidArgument(e.to_string()))?;
    let exists = ErasureLedger::exists(&location).await.map_err(refused)?;
    Ok((exists, location.name()))
}

/// Writes the restore marker (before the database is replaced).
pub fn write_restore_marker(data_dir: &Path, danger: bool) -> std::io::Result<()> {
    std::fs::write(
        data_dir.join(RESTORE_MARKER),
        if danger { DANGER_WITHOUT_LEDGER } else { "" },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::test_support::{status, text_item as item};
    use crate::vault::TokenStatus;

    fn config(dir: &Path) -> Config {
        let mut config = Config::dev();
        config.data_dir = dir.to_path_buf();
        config
    }

    async fn open(dir: &Path) -> Result<Vault, VaultError> {
        crate::app::open_vault(&config(dir), true).await
    }

    #[tokio::test]
    async fn a_ledger_cut_behind_the_store_or_gone_is_refused_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vault = open(dir.path()).await.expect("open");
        let a = vault.tokenize("a", &[item("one")]).await.expect("tokenize");
        let b = vault.tokenize("b", &[item("two")]).await.expect("tokenize");
        vault.forget("a").await.expect("forget");
        vault.forget("b").await.expect("forget");
        vault.shutdown();
        drop(vault);

        let path = dir.path().join(crate::config::DEV_LEDGER_FILE);
        let full = std::fs::read_to_string(&path).expect("ledger");
        let first = format!("{}\n", full.lines().next().expect("a line"));
        std::fs::write(&path, &first).expect("cut the last line");
        let detail = match open(dir.path()).await {
            Err(VaultError::LedgerRefused(detail)) => detail,
            other => panic!("expected the ledger refused, got {:?}", other.err()),
        };
        assert!(detail.contains(&path.display().to_string()), "{detail}");
        assert!(detail.contains("ends at entry 1"), "{detail}");

        std::fs::remove_file(&path).expect("remove");
        let detail = match open(dir.path()).await {
            Err(VaultError::LedgerRefused(detail)) => detail,
            other => panic!("expected the ledger refused, got {:?}", other.err()),
        };
        assert!(detail.contains("is missing"), "{detail}");
        assert!(!path.exists(), "a refused ledger is not made anew");

        std::fs::write(&path, &full).expect("put it back");
        let vault = open(dir.path()).await.expect("open");
        assert_eq!(status(&vault, &a[0]).await, TokenStatus::Erased);
        assert_eq!(status(&vault, &b[0]).await, TokenStatus::Erased);
        vault.shutdown();
    }

    /// The store's marks travel with the data: entries it has not applied
    /// are replayed at start (a forget whose store erasure never ran),
    /// and a subject forgotten, then seen again, is not erased again.
    #[tokio::test]
    async fn unapplied_entries_are_replayed_and_applied_ones_are_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vault = open(dir.path()).await.expect("open");
        vault.forget("back").await.expect("forget");
        let back = vault
            .tokenize("back", &[item("new")])
            .await
            .expect("tokenize");
        let lost = vault
            .tokenize("lost", &[item("x")])
            .await
            .expect("tokenize");
        // A forget cut short after its entry was written.
        let subject = vault.system.subject_hash("lost");
        vault
            .ledger_forget(subject, unix_now(), None)
            .await
            .expect("entry");
        vault.shutdown();
        drop(vault);

        let vault = open(dir.path()).await.expect("reopen");
        assert_eq!(status(&vault, &lost[0]).await, TokenStatus::Erased);
        assert_eq!(status(&vault, &back[0]).await, TokenStatus::Found);
        assert_eq!(vault.store.ledger_applied().await.expect("marks").len(), 2);
        vault.shutdown();
    }
}
