//! KEK rotation and key status: the operator's view of the key hierarchy.
//!
//! `rotate_kek` makes the KEK provider start a new version and moves every
//! stored wrapped key (the system key and each subject's DEK) to it with
//! the provider's `rewrap`, which never shows this process a plaintext key.
//! The vault keeps serving meanwhile: a DEK's plaintext does not change, so
//! cached keys stay valid, and each stored key is replaced only if it is
//! still the one that was read (a key created or deleted meanwhile is left
//! alone). The target version is recorded before the first rewrap, so a
//! rotation cut short by a crash resumes where it stood instead of
//! rotating again.

use std::collections::BTreeMap;

use super::{Vault, VaultError};
use crate::crypto::SubjectHash;
use crate::kek::{KekError, WrappedKey};

/// A refused key operation is the operator's to read in full (KEK errors
/// carry no key material); an outage stays UNAVAILABLE.
fn refused(error: KekError) -> VaultError {
    match error {
        KekError::Unavailable(_) => error.into(),
        other => VaultError::KeyManagement(other.to_string()),
    }
}

/// Keys rewrapped per provider call and per store page.
const PAGE: usize = 256;

/// How far a rotation has come; sent after each page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationProgress {
    /// The KEK version keys move to.
    pub target_version: u32,
    /// Subject keys looked at so far, of `total`.
    pub done: u64,
    pub total: u64,
    /// Of those, the ones that were rewrapped (the rest were on the target
    /// version already).
    pub rewrapped: u64,
    /// True when this run continued a rotation that was cut short.
    pub resumed: bool,
}

/// Where the stored keys stand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStatus {
    pub provider: &'static str,
    pub latest_version: u32,
    pub min_decryption_version: u32,
    /// KEK version of the system key.
    pub system_key_version: Option<u32>,
    /// How many subject DEKs are wrapped under each KEK version.
    pub subject_keys_by_version: BTreeMap<u32, u64>,
    /// The target of a rotation in progress (or cut short).
    pub rotation_in_progress: Option<u32>,
}

impl Vault {
    /// Rotates the KEK and rewraps every stored key; resumes a rotation cut
    /// short. `progress` is called after each page.
    pub async fn rotate_kek(
        &self,
        mut progress: impl FnMut(RotationProgress) + Send,
    ) -> Result<RotationProgress, VaultError> {
        let (target_version, resumed) = match self.store.kek_rotation().await? {
            Some(target) => (target, true),
            None => {
                let target = self.kek.rotate().await.map_err(refused)?;
                self.store.set_kek_rotation(Some(target)).await?;
                tracing::info!(
                    target_version = target,
                    "KEK rotated; rewrapping stored keys"
                );
                (target, false)
            }
        };
        self.rewrap_system_key(target_version).await?;
        let total = self.count_subject_keys().await?;
        let mut state = RotationProgress {
            target_version,
            done: 0,
            total,
            rewrapped: 0,
            resumed,
        };
        let mut after: Option<SubjectHash> = None;
        loop {
            let page = self.store.subject_keys_after(after, PAGE).await?;
            let Some((last, _)) = page.last() else { break };
            after = Some(*last);
            state.done += page.len() as u64;
            state.rewrapped += self.rewrap_page(&page, target_version).await?;
            progress(state);
        }
        self.store.set_kek_rotation(None).await?;
        tracing::info!(
            target_version,
            rewrapped = state.rewrapped,
            "KEK rotation finished"
        );
        Ok(state)
    }

    /// Counts stored subject keys by KEK version, and reads the provider's
    /// versions.
    pub async fn key_status(&self) -> Result<KeyStatus, VaultError> {
        let kek = self.kek.status().await?;
        let mut by_version = BTreeMap::new();
        let mut after = None;
        loop {
            let page = self.store.subject_keys_after(after, PAGE * 4).await?;
            let Some((last, _)) = page.last() else { break };
            after = Some(*last);
            for (_, wrapped) in &page {
                *by_version.entry(wrapped.kek_version).or_insert(0) += 1;
            }
        }
        Ok(KeyStatus {
            provider: self.kek.kind().name(),
            latest_version: kek.latest_version,
            min_decryption_version: kek.min_decryption_version,
            system_key_version: self.store.system_key().await?.map(|key| key.kek_version),
            subject_keys_by_version: by_version,
            rotation_in_progress: self.store.kek_rotation().await?,
        })
    }

    async fn count_subject_keys(&self) -> Result<u64, VaultError> {
        let mut count = 0;
        let mut after = None;
        loop {
            let page = self.store.subject_keys_after(after, PAGE * 4).await?;
            let Some((last, _)) = page.last() else { break };
            after = Some(*last);
            count += page.len() as u64;
        }
        Ok(count)
    }

    async fn rewrap_system_key(&self, target: u32) -> Result<(), VaultError> {
        let Some(current) = self.store.system_key().await? else {
            return Ok(());
        };
        if current.kek_version >= target {
            return Ok(());
        }
        let new = self
            .kek
            .rewrap(&[&current])
            .await
            .map_err(refused)?
            .remove(0);
        self.store.replace_system_key(&current, new).await?;
        Ok(())
    }

    /// Rewraps the keys of a page below the target; returns how many were
    /// replaced.
    async fn rewrap_page(
        &self,
        page: &[(SubjectHash, WrappedKey)],
        target: u32,
    ) -> Result<u64, VaultError> {
        let stale: Vec<&(SubjectHash, WrappedKey)> = page
            .iter()
            .filter(|(_, wrapped)| wrapped.kek_version < target)
            .collect();
        if stale.is_empty() {
            return Ok(0);
        }
        let keys: Vec<&WrappedKey> = stale.iter().map(|(_, wrapped)| wrapped).collect();
        let rewrapped = self.kek.rewrap(&keys).await.map_err(refused)?;
        let mut replaced = 0;
        for ((subject, old), new) in stale.into_iter().zip(rewrapped) {
            // False when the subject's key changed meanwhile (forgotten, or
            // rewrapped by another run): then there is nothing to do.
            if self.store.replace_subject_key(*subject, old, new).await? {
                replaced += 1;
            }
        }
        Ok(replaced)
    }
}
