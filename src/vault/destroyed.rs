//! Destroyed keys: the fingerprints of the DEKs that forgets destroyed,
//! read from the erasure ledger, and what the vault does when one of them
//! is back in the store.
//!
//! A forget records in its ledger entry the keyed fingerprint of the DEK
//! it destroys (`SystemKeys::key_fingerprint`: of the plaintext DEK, so a
//! copy wrapped under any KEK version matches). A key row the vault reads
//! from the store whose DEK has such a fingerprint is a copy from before
//! the forget written back: a table restored from a dump under a running
//! vault, rows copied back by hand. It is never used: the subject's tokens
//! answer ERASED, the subject is erased again, and a `destroyed_key_back`
//! alert is raised. A subject seen again after its forget has a new DEK,
//! so it is not affected.
//!
//! A restart is covered by the ledger's replay; this covers the running
//! vault. On a shared ledger (PostgreSQL) the entries other replicas
//! appended are read before a key loaded from the store is trusted, so
//! every replica refuses a copy, not only the one that did the forget.
//!
//! It holds fingerprints only: never a key, a subject id or a value, and
//! its alert names no subject.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::{Vault, VaultError};
use crate::clock::unix_now;
use crate::crypto::{SecretKey, SubjectHash};
use crate::erasure::ledger::{Entry, Record};
use crate::erasure::LedgerError;
use crate::policy::ALERT_TARGET;

/// The alert's kind in `tokenvault_alerts_total` and the alert log.
pub const DESTROYED_KEY_BACK_ALERT: &str = "destroyed_key_back";

/// `destroyed_key_back` alerts raised since start.
pub static DESTROYED_KEY_BACK_ALERTS: AtomicU64 = AtomicU64::new(0);

/// The fingerprints, and how far into the ledger they are read.
#[derive(Default)]
pub(crate) struct DestroyedKeys {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    fingerprints: HashSet<[u8; 32]>,
    /// The last ledger entry read in order, and its MAC (the chain's
    /// link for reading on).
    seq: u64,
    mac: [u8; 32],
}

impl DestroyedKeys {
    /// Takes in the entries after the ones read so far, in ledger order
    /// (entries already read are skipped).
    pub(crate) fn read_on(&self, entries: &[Entry]) {
        let mut state = self.state.lock();
        for entry in entries {
            if entry.seq != state.seq + 1 {
                continue;
            }
            state.seq = entry.seq;
            state.mac = entry.mac;
            if let Record::Forget {
                destroyed_key: Some(fingerprint),
                ..
            } = &entry.record
            {
                state.fingerprints.insert(*fingerprint);
            }
        }
    }

    /// Takes in this vault's own forget (other writers' entries before it
    /// may still be unread: they are read on later, this one again with
    /// them).
    pub(crate) fn record(&self, fingerprint: [u8; 32]) {
        self.state.lock().fingerprints.insert(fingerprint);
    }

    fn position(&self) -> (u64, [u8; 32]) {
        let state = self.state.lock();
        (state.seq, state.mac)
    }

    fn contains(&self, fingerprint: &[u8; 32]) -> bool {
        self.state.lock().fingerprints.contains(fingerprint)
    }
}

fn ledger_failure(error: LedgerError) -> VaultError {
    match error {
        LedgerError::Corrupt { .. } | LedgerError::Missing { .. } => {
            VaultError::LedgerRefused(error.to_string())
        }
        LedgerError::Io { .. } | LedgerError::Postgres { .. } => {
            VaultError::LedgerUnavailable(error.to_string())
        }
    }
}

impl Vault {
    /// For each DEK just unwrapped from a key row of the store: whether a
    /// forget destroyed it (after reading the ledger's new entries).
    pub(super) async fn destroyed(&self, deks: &[SecretKey]) -> Result<Vec<bool>, VaultError> {
        if let Some(ledger) = &self.ledger {
            let (seq, mac) = self.destroyed_keys.position();
            let newer = ledger
                .entries_after(seq, mac)
                .await
                .map_err(ledger_failure)?;
            self.destroyed_keys.read_on(&newer);
        }
        Ok(deks
            .iter()
            .map(|dek| {
                self.destroyed_keys
                    .contains(&self.system.key_fingerprint(dek))
            })
            .collect())
    }

    /// A destroyed key was back in the store: erases the subject again
    /// (the copy's key row and whatever tokens came back with it) and
    /// raises the alert. The caller holds no lock of the subject.
    pub(super) async fn erase_destroyed_copy(
        &self,
        subject: SubjectHash,
    ) -> Result<(), VaultError> {
        let tokens = self.erase(subject, unix_now()).await?.unwrap_or(0);
        DESTROYED_KEY_BACK_ALERTS.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            target: ALERT_TARGET,
            alert = DESTROYED_KEY_BACK_ALERT,
            tokens_erased_again = tokens,
            "a key that a forget destroyed was back in the store (rows from before the forget written back): it was refused and the subject erased again"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::vault::test_support::{status, text_item as item};
    use crate::vault::TokenStatus;

    /// Gives the store back a subject's key row and token records.
    async fn write_back(
        vault: &Vault,
        subject: SubjectHash,
        key: &crate::kek::WrappedKey,
        tokens: &[String],
        records: &[Option<crate::store::TokenRecord>],
    ) {
        let in_force = vault
            .store
            .insert_subject_key(subject, key.clone())
            .await
            .expect("key written back");
        assert_eq!(&in_force, key);
        let batch = tokens
            .iter()
            .zip(records)
            .map(|(token, record)| crate::store::NewToken {
                token: token.clone(),
                record: record.clone().expect("a record"),
                index_key: None,
            })
            .collect();
        let outcome = vault
            .store
            .insert_tokens(batch, &[(subject, key)], unix_now())
            .await
            .expect("records written back");
        assert_eq!(outcome, crate::store::InsertOutcome::Committed);
    }

    /// The store is given back the key row a forget deleted (what a table
    /// restored under a running vault does): the key is refused, deleted
    /// again, and the alert counted; the subject seen again gets a new key.
    #[tokio::test]
    async fn a_key_row_written_back_after_its_forget_is_refused_and_erased_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::dev();
        config.data_dir = dir.path().to_path_buf();
        let vault = crate::app::open_vault(&config, true).await.expect("open");
        let kept = vault
            .tokenize("kept", &[item("other")])
            .await
            .expect("tokenize");
        let token = vault
            .tokenize("gone", &[item("value")])
            .await
            .expect("tokenize");
        let subject = vault.system.subject_hash("gone");
        let copy = vault.store.subject_keys(&[subject]).await.expect("keys")[0]
            .clone()
            .expect("a key row");
        let records = vault.store.token_records(&token).await.expect("records");
        vault.forget("gone").await.expect("forget");

        let alerts = DESTROYED_KEY_BACK_ALERTS.load(Ordering::Relaxed);
        write_back(&vault, subject, &copy, &token, &records).await;
        assert_eq!(status(&vault, &token[0]).await, TokenStatus::Erased);
        assert!(DESTROYED_KEY_BACK_ALERTS.load(Ordering::Relaxed) > alerts);
        assert!(
            vault.store.subject_keys(&[subject]).await.expect("keys")[0].is_none(),
            "the copy is erased again"
        );
        assert_eq!(status(&vault, &kept[0]).await, TokenStatus::Found);

        // Written back again, then the subject tokenizes: a new key, not the copy.
        write_back(&vault, subject, &copy, &token, &records).await;
        let again = vault
            .tokenize("gone", &[item("anew")])
            .await
            .expect("tokenize");
        let now = vault.store.subject_keys(&[subject]).await.expect("keys")[0]
            .clone()
            .expect("a key row");
        assert_ne!(now, copy, "the destroyed key is not used again");
        assert_eq!(status(&vault, &again[0]).await, TokenStatus::Found);
        vault.shutdown();
    }
}
