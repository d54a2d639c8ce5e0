//! Forgetting and exporting a subject and retention purges (the erasure
//! ledger's replay after a restore is in `vault::ledger`).
//!
//! Forget order, and why: (1) the ledger entry is synced, so a restore or a
//! crash can only erase more, never less, than callers asked; (2) the store
//! deletes the subject's key, records and index entries in one batch, under
//! the subject's write lock so no Tokenize of the subject is between
//! fetching its key and storing tokens sealed with it, then the entry is
//! marked applied in the store (see `vault::ledger`); (3) the cached DEK is
//! dropped (and zeroized once unused), before (2) as well, and no read that
//! fetched the wrapped key before can cache it afterwards (see `cache`);
//! (4) unless (2) found neither a key nor a token of the subject, the
//! store purges the subject's wrapped key from its files
//! ([`Store::purge_erased_keys`]: on RocksDB no file holds it at return),
//! or everything under `erasure.full_purge_at_return`. The call returns
//! only after (4). Without the wrapped DEK the ciphertexts are noise; they
//! and the index entries leave the files by the next full purge, which
//! the server schedules within `erasure.purge_within_seconds` (see
//! [`Vault::purge_due`]). The receipt states both (see `erasure::receipt`).
//!
//! [`Store::purge_erased_keys`]: crate::store::Store::purge_erased_keys

use std::path::Path;
use std::sync::Arc;

use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use zeroize::Zeroizing;

use super::{Vault, VaultError};
use crate::clock::unix_now;
use crate::crypto::{token_aad, CryptoError, SubjectHash};
use crate::erasure::{AtReturn, Guarantees, Receipt, ReceiptError, SignedReceipt};
use crate::store::{BackupInfo, PendingPurges};

/// Tokens read per store page while exporting.
pub const EXPORT_PAGE: usize = 256;

/// What a forget did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forgotten {
    pub subject: SubjectHash,
    pub tokens_erased: u64,
    pub erased_at_unix: i64,
    /// What held at return, and by when the rest is physically gone.
    pub guarantees: Guarantees,
}

/// When a forgotten subject's data leaves the store's files
/// (`[erasure] purge_within_seconds`, `full_purge_at_return`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhysicalPurge {
    pub within_seconds: i64,
    pub full_at_return: bool,
}

impl Default for PhysicalPurge {
    fn default() -> Self {
        PhysicalPurge {
            within_seconds: 86_400,
            full_at_return: false,
        }
    }
}

/// The forgets a full purge still owes, against their deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgeStatus {
    pub pending: PendingPurges,
    /// The oldest pending forget's deadline (unix seconds).
    pub deadline_unix: Option<i64>,
    pub within_seconds: i64,
}

impl PurgeStatus {
    /// The oldest pending forget is past its deadline.
    pub fn missed(&self, now: i64) -> bool {
        self.deadline_unix.is_some_and(|deadline| deadline < now)
    }
}

/// One exported token with its value.
pub struct Exported {
    pub token: String,
    pub format: String,
    pub value: Zeroizing<String>,
    pub created_at_unix: i64,
}

/// A page of an export, and where the next one starts.
pub struct ExportPage {
    /// The subject's keyed hash (for the audit record).
    pub subject: SubjectHash,
    pub tokens: Vec<Exported>,
    pub next: Option<Vec<u8>>,
}

/// Striped per-subject locks: Tokenize holds a read lock from fetching the
/// subject's key to storing its tokens; Forget holds the write lock while
/// it erases. A subject's stripe is fixed by its hash.
pub(crate) struct SubjectLocks {
    stripes: Vec<RwLock<()>>,
}

const LOCK_STRIPES: usize = 64;

impl SubjectLocks {
    pub(crate) fn new() -> Self {
        SubjectLocks {
            stripes: (0..LOCK_STRIPES).map(|_| RwLock::new(())).collect(),
        }
    }

    fn stripe(&self, subject: &SubjectHash) -> &RwLock<()> {
        &self.stripes[subject.0[0] as usize % LOCK_STRIPES]
    }

    pub(crate) async fn read(&self, subject: &SubjectHash) -> RwLockReadGuard<'_, ()> {
        self.stripe(subject).read().await
    }

    async fn write(&self, subject: &SubjectHash) -> RwLockWriteGuard<'_, ()> {
        self.stripe(subject).write().await
    }
}

impl Vault {
    /// Forgets a subject: see the module doc for the order. Idempotent: a
    /// second call erases 0 tokens.
    pub async fn forget(&self, subject_id: &str) -> Result<Forgotten, VaultError> {
        self.check_subject(subject_id)?;
        let subject = self.system.subject_hash(subject_id);
        let erased_at_unix = unix_now();
        // Held from the key's fingerprint to its deletion, so the entry
        // names the key the forget destroys (no Tokenize creates one in
        // between).
        let exclusive = self.subject_locks.write(&subject).await;
        let destroyed_key = self.fingerprint_of_stored_key(subject).await?;
        let entry = self
            .ledger_forget(subject, erased_at_unix, destroyed_key)
            .await?;
        let erased = self.erase_locked(subject, erased_at_unix).await;
        drop(exclusive);
        let erased = erased?;
        self.ledger_applied(entry).await?;
        let guarantees = self
            .purge_forgotten(subject, erased.is_some(), erased_at_unix)
            .await?;
        Ok(Forgotten {
            subject,
            tokens_erased: erased.unwrap_or(0),
            erased_at_unix,
            guarantees,
        })
    }

    /// Step (4) of a forget: the purge, and what it guarantees.
    async fn purge_forgotten(
        &self,
        subject: SubjectHash,
        erased_something: bool,
        erased_at_unix: i64,
    ) -> Result<Guarantees, VaultError> {
        let everything_now = Guarantees {
            at_return: AtReturn::EverythingGone,
            purged_by_unix: erased_at_unix,
        };
        // A forget that erased nothing (the subject was never here, or was
        // forgotten before) promises what holds for the earlier forget: if
        // a full purge still owes its data, the key purge is repeated (an
        // earlier one may have failed) and the bound is the earlier one's.
        // Otherwise nothing of the subject is in any file: no purge, which
        // would cost every other forget waiting on the store's purger.
        let erased_at_unix = if erased_something {
            erased_at_unix
        } else {
            match self.store.purge_owed(subject).await? {
                Some(earlier) => earlier,
                None => return Ok(everything_now),
            }
        };
        if self.physical_purge.full_at_return {
            self.store.purge().await?;
            return Ok(everything_now);
        }
        self.store.purge_erased_keys(subject).await?;
        Ok(Guarantees {
            at_return: if self.store.erased_keys_leave_no_file() {
                AtReturn::KeyGone
            } else {
                AtReturn::KeyDeleted
            },
            purged_by_unix: erased_at_unix.saturating_add(self.physical_purge.within_seconds),
        })
    }

    pub fn physical_purge(&self) -> PhysicalPurge {
        self.physical_purge
    }

    /// Sets when forgotten data leaves the files (from `[erasure]`).
    pub fn set_physical_purge(&mut self, purge: PhysicalPurge) {
        self.physical_purge = purge;
    }

    /// The forgets a full purge still owes, and the oldest's deadline.
    pub async fn purge_status(&self) -> Result<PurgeStatus, VaultError> {
        let pending = self.store.pending_purges().await?;
        let within_seconds = self.physical_purge.within_seconds;
        Ok(PurgeStatus {
            pending,
            deadline_unix: pending
                .oldest_erased_at
                .map(|erased_at| erased_at.saturating_add(within_seconds)),
            within_seconds,
        })
    }

    /// Whether the scheduled full purge should run now for the erasure
    /// bound: once the oldest pending forget has used half of it, so the
    /// purge (whose length grows with the store) has the other half.
    pub fn purge_due(&self, status: &PurgeStatus, now: i64) -> bool {
        status
            .pending
            .oldest_erased_at
            .is_some_and(|erased_at| erased_at.saturating_add(status.within_seconds / 2) <= now)
    }

    /// The store erasure and cache eviction of a forget, without the
    /// ledger line or the purge: how many tokens were erased, None if the
    /// subject had neither a key nor a token.
    ///
    /// The cached key is removed before the store erases and again after:
    /// a read of the subject that fetched the wrapped key before (Detokenize,
    /// RestoreText and ExportSubject hold no subject lock) cannot cache it
    /// once the first removal is done, and whatever it cached before is
    /// gone with the second (see `cache`). Tokenize holds the subject's
    /// read lock, so none runs in between.
    pub(super) async fn erase(
        &self,
        subject: SubjectHash,
        now: i64,
    ) -> Result<Option<u64>, VaultError> {
        let _exclusive = self.subject_locks.write(&subject).await;
        self.erase_locked(subject, now).await
    }

    /// [`Vault::erase`] with the subject's write lock held by the caller.
    async fn erase_locked(
        &self,
        subject: SubjectHash,
        now: i64,
    ) -> Result<Option<u64>, VaultError> {
        self.cache.remove(&subject);
        let had_key = self.store.subject_keys(&[subject]).await?[0].is_some();
        let erased = self
            .store
            .forget_subject(subject, Arc::clone(&self.tombstone_hasher), now)
            .await;
        self.cache.remove(&subject);
        let erased = erased?;
        Ok((had_key || erased > 0).then_some(erased))
    }

    /// The fingerprint of the subject's stored DEK (None: it has no key),
    /// from the cache or unwrapped: a forget cannot name the key it
    /// destroys while the key provider is down, and refuses (UNAVAILABLE).
    async fn fingerprint_of_stored_key(
        &self,
        subject: SubjectHash,
    ) -> Result<Option<[u8; 32]>, VaultError> {
        let Some(wrapped) = self.store.subject_keys(&[subject]).await?.pop().flatten() else {
            return Ok(None);
        };
        if let Some(cached) = self.cache.get(&subject) {
            if cached.wrapped == wrapped {
                return Ok(Some(cached.fingerprint));
            }
        }
        let dek = self.unwrap_keys(&[&wrapped]).await?.remove(0);
        Ok(Some(self.system.key_fingerprint(&dek)))
    }

    /// Signs a receipt for a forget, naming the audit record of it.
    pub fn receipt(&self, forgotten: &Forgotten, audit_sequence: u64) -> SignedReceipt {
        Receipt {
            subject_hash: forgotten.subject.0,
            erased_at_unix: forgotten.erased_at_unix,
            tokens_erased: forgotten.tokens_erased,
            audit_sequence,
            guarantees: Some(forgotten.guarantees),
        }
        .sign(self.system.receipt_mac_key())
    }

    /// Checks a receipt this vault issued.
    pub fn verify_receipt(&self, receipt: &SignedReceipt) -> Result<(), ReceiptError> {
        receipt.verify(self.system.receipt_mac_key())
    }

    /// One page of a subject's tokens with their values. A subject with no
    /// key (never seen, or forgotten) has none.
    pub async fn export_page(
        &self,
        subject_id: &str,
        cursor: Option<Vec<u8>>,
    ) -> Result<ExportPage, VaultError> {
        self.check_subject(subject_id)?;
        let subject = self.system.subject_hash(subject_id);
        if let Some(page) = self.export_page_with_key(subject, cursor.clone()).await? {
            return Ok(page);
        }
        // The cached key did not open a value: a stale key, as in
        // `Vault::open_records`. Read the page and the key again, once.
        self.cache.remove(&subject);
        self.export_page_with_key(subject, cursor)
            .await?
            .ok_or_else(|| {
                VaultError::Internal("a sealed value does not open under its subject's key".into())
            })
    }

    /// [`Vault::export_page`] with the subject's key as found (cached or
    /// stored); None if that key does not open one of the page's values.
    async fn export_page_with_key(
        &self,
        subject: SubjectHash,
        cursor: Option<Vec<u8>>,
    ) -> Result<Option<ExportPage>, VaultError> {
        let page = self
            .store
            .subject_tokens(subject, cursor, EXPORT_PAGE)
            .await?;
        let now = unix_now();
        let live: Vec<_> = page
            .tokens
            .into_iter()
            .filter(|(_, record)| !record.is_expired(now))
            .collect();
        if live.is_empty() {
            return Ok(Some(ExportPage {
                subject,
                tokens: Vec::new(),
                next: page.next,
            }));
        }
        let keys = self.keys_for_read(&[subject]).await?;
        let Some(keys) = keys.get(&subject) else {
            // Forgotten between the page read and the key read.
            return Ok(Some(ExportPage {
                subject,
                tokens: Vec::new(),
                next: None,
            }));
        };
        let mut tokens = Vec::with_capacity(live.len());
        for (token, record) in live {
            let aad = token_aad(&token, &record.format, &record.subject);
            let plain = match keys.keys.seal_key().open(&aad, record.sealed) {
                Ok(plain) => plain,
                Err(CryptoError::OpenFailed) => return Ok(None),
                Err(other) => return Err(other.into()),
            };
            tokens.push(Exported {
                token,
                format: record.format,
                value: super::utf8_value(plain)?,
                created_at_unix: record.created_at,
            });
        }
        Ok(Some(ExportPage {
            subject,
            tokens,
            next: page.next,
        }))
    }

    /// Which of the given (not found) tokens belonged to forgotten subjects.
    pub(crate) async fn erased(&self, tokens: &[&str]) -> Result<Vec<bool>, VaultError> {
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        let hashes: Vec<[u8; 32]> = tokens
            .iter()
            .map(|token| (self.tombstone_hasher)(token))
            .collect();
        Ok(self.store.tombstones(&hashes).await?)
    }

    /// Makes expired records physically gone now (the periodic purge and
    /// `tokenvault retention purge`).
    pub async fn purge(&self) -> Result<(), VaultError> {
        Ok(self.store.purge().await?)
    }

    /// A consistent backup of the store into `dir` while serving.
    pub async fn create_backup(&self, dir: &Path) -> Result<BackupInfo, VaultError> {
        Ok(self.store.create_backup(dir).await?)
    }

    /// Erases a subject known only by its hash; true if anything was there.
    pub(super) async fn erase_hash(
        &self,
        subject: SubjectHash,
        now: i64,
    ) -> Result<bool, VaultError> {
        Ok(self.erase(subject, now).await?.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Limits;
    use crate::crypto::SecretKey;
    use crate::kek::local::LocalKek;
    use crate::kek::{KekError, KekKind, KekProvider, KekStatus, WrappedKey};
    use crate::store::rocks::{RocksOptions, RocksStore};
    use crate::vault::{TokenMode, TokenStatus, TokenizeItem};
    use std::collections::HashMap;

    async fn vault(dir: &Path) -> Arc<Vault> {
        let kek = LocalKek::from_key(&SecretKey::from_slice(&[9; 32]).expect("key"));
        vault_with_kek(dir, Arc::new(kek)).await
    }

    async fn vault_with_kek(dir: &Path, kek: Arc<dyn KekProvider>) -> Arc<Vault> {
        let store = RocksStore::open(dir, &RocksOptions::for_tests()).expect("store");
        Arc::new(
            Vault::with_parts(Arc::new(store), kek, 16, Limits::default())
                .await
                .expect("vault"),
        )
    }

    fn text(value: String) -> TokenizeItem {
        TokenizeItem {
            value,
            format: "text".into(),
            mode: TokenMode::Random,
            ttl_seconds: 0,
        }
    }

    /// Tokenize calls racing a forget of the same subject: every token a
    /// call returned either opens (stored after the forget, under a new
    /// key) or is erased; none is left sealed under a destroyed key.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tokenize_racing_a_forget_never_leaves_an_unopenable_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vault = vault(dir.path()).await;
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let vault = Arc::clone(&vault);
                tokio::spawn(async move {
                    let mut tokens = Vec::new();
                    for i in 0..200 {
                        let items = [text(format!("value {w} {i}"))];
                        tokens.extend(vault.tokenize("racer", &items).await.expect("tokenize"));
                    }
                    tokens
                })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        vault.forget("racer").await.expect("forget");
        let mut tokens = Vec::new();
        for writer in writers {
            tokens.extend(writer.await.expect("writer"));
        }
        let mut seen = (0, 0);
        for chunk in tokens.chunks(100) {
            for result in vault.detokenize(chunk).await.expect("detokenize") {
                match result.status {
                    TokenStatus::Found => seen.0 += 1,
                    TokenStatus::Erased => seen.1 += 1,
                    other => panic!("a raced token is {other:?}"),
                }
            }
        }
        assert_eq!(seen.0 + seen.1, 800);
        assert!(seen.1 > 0, "the forget erased some tokens: {seen:?}");
    }

    /// The local KEK, whose unwrap of a chosen wrapped key can be held at a
    /// gate: it says when it has started and waits to be let through.
    struct GatedKek {
        inner: LocalKek,
        gates: parking_lot::Mutex<HashMap<Vec<u8>, Gate>>,
    }

    struct Gate {
        entered: tokio::sync::oneshot::Sender<()>,
        release: tokio::sync::oneshot::Receiver<()>,
    }

    impl GatedKek {
        /// Holds the next unwrap of `wrapped`: the receiver fires when it
        /// has started, and it goes on when the sender is used (or dropped).
        fn hold_unwrap_of(
            &self,
            wrapped: &WrappedKey,
        ) -> (
            tokio::sync::oneshot::Receiver<()>,
            tokio::sync::oneshot::Sender<()>,
        ) {
            let (entered, started) = tokio::sync::oneshot::channel();
            let (go, release) = tokio::sync::oneshot::channel();
            self.gates
                .lock()
                .insert(wrapped.ciphertext.clone(), Gate { entered, release });
            (started, go)
        }
    }

    #[async_trait::async_trait]
    impl KekProvider for GatedKek {
        fn kind(&self) -> KekKind {
            self.inner.kind()
        }

        fn is_secure(&self) -> bool {
            false
        }

        async fn wrap(&self, keys: &[&SecretKey]) -> Result<Vec<WrappedKey>, KekError> {
            self.inner.wrap(keys).await
        }

        async fn unwrap(&self, keys: &[&WrappedKey]) -> Result<Vec<SecretKey>, KekError> {
            let gates: Vec<Gate> = {
                let mut gates = self.gates.lock();
                keys.iter()
                    .filter_map(|key| gates.remove(&key.ciphertext))
                    .collect()
            };
            for gate in gates {
                let _ = gate.entered.send(());
                let _ = gate.release.await;
            }
            self.inner.unwrap(keys).await
        }

        async fn status(&self) -> Result<KekStatus, KekError> {
            self.inner.status().await
        }
    }

    fn opaque(value: &str) -> TokenizeItem {
        TokenizeItem {
            value: value.into(),
            format: "opaque".into(),
            mode: TokenMode::Random,
            ttl_seconds: 0,
        }
    }

    /// One round of the race below for a fresh subject; `read` picks the
    /// reader: Detokenize, ExportSubject or RestoreText.
    async fn race_a_read_against_a_forget(vault: &Arc<Vault>, kek: &GatedKek, round: usize) {
        let subject_id = format!("raced-{round}");
        let subject = vault.system.subject_hash(&subject_id);
        let token = vault
            .tokenize(&subject_id, &[opaque("before the forget")])
            .await
            .expect("tokenize")
            .remove(0);
        // The read below must fetch and unwrap the key.
        vault.cache.remove(&subject);
        let wrapped = vault.store.subject_keys(&[subject]).await.expect("key")[0]
            .clone()
            .expect("the subject's key");
        let (started, go) = kek.hold_unwrap_of(&wrapped);
        let reader = {
            let (vault, subject_id) = (Arc::clone(vault), subject_id.clone());
            tokio::spawn(async move {
                match round % 3 {
                    0 => vault.detokenize(&[token]).await.map(drop),
                    1 => vault.export_page(&subject_id, None).await.map(drop),
                    _ => vault.restore_text(&format!("see {token}")).await.map(drop),
                }
            })
        };
        started.await.expect("the read unwraps the subject's key");
        vault.forget(&subject_id).await.expect("forget");
        let _ = go.send(());
        reader.await.expect("reader").expect("read");
        let destroyed_key_cached = vault.cache.get(&subject).is_some();

        let after = vault
            .tokenize(&subject_id, &[opaque("after the forget")])
            .await
            .expect("tokenize after the forget");
        // As after a restart: the key comes from the store.
        vault.cache.remove(&subject);
        let opened = vault.detokenize(&after).await.expect("detokenize");
        assert_eq!(
            (
                opened[0].status,
                opened[0].value.as_deref().map(String::as_str)
            ),
            (TokenStatus::Found, Some("after the forget")),
            "round {round}: a token sealed under the destroyed key"
        );
        assert!(
            !destroyed_key_cached,
            "round {round}: the destroyed key was cached"
        );
    }

    /// A read (Detokenize, ExportSubject, RestoreText; they take no
    /// subject lock) fetches the subject's wrapped key, and a forget of the
    /// subject runs to its end while the KEK unwraps it. The destroyed key
    /// must not be cached afterwards, and the next Tokenize must seal under
    /// a new key: read with the key from the store (as after a restart),
    /// its tokens open. 1,000 rounds, 8 at a time (their forgets share
    /// purges).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_unwrapping_during_a_forget_never_brings_the_destroyed_key_back() {
        const LANES: usize = 8;
        const ROUNDS: usize = 1000;
        let dir = tempfile::tempdir().expect("tempdir");
        let kek = Arc::new(GatedKek {
            inner: LocalKek::from_key(&SecretKey::from_slice(&[9; 32]).expect("key")),
            gates: parking_lot::Mutex::new(HashMap::new()),
        });
        let vault = vault_with_kek(dir.path(), Arc::clone(&kek) as Arc<dyn KekProvider>).await;
        let lanes: Vec<_> = (0..LANES)
            .map(|lane| {
                let (vault, kek) = (Arc::clone(&vault), Arc::clone(&kek));
                tokio::spawn(async move {
                    for round in (lane..ROUNDS).step_by(LANES) {
                        race_a_read_against_a_forget(&vault, &kek, round).await;
                    }
                })
            })
            .collect();
        for lane in lanes {
            lane.await.expect("every round holds");
        }
    }

    /// A vault over a RocksDB store the test keeps a handle on.
    async fn vault_and_store(dir: &Path, purge: PhysicalPurge) -> (Arc<Vault>, Arc<RocksStore>) {
        let store = Arc::new(RocksStore::open(dir, &RocksOptions::for_tests()).expect("store"));
        let kek = LocalKek::from_key(&SecretKey::from_slice(&[9; 32]).expect("key"));
        let mut vault = Vault::with_parts(
            Arc::clone(&store) as Arc<dyn crate::store::Store>,
            Arc::new(kek),
            16,
            Limits::default(),
        )
        .await
        .expect("vault");
        vault.set_physical_purge(purge);
        (Arc::new(vault), store)
    }

    /// Fills the store with many subjects' tokens, compacted into table
    /// files; returns the tokens family's files.
    async fn filled(vault: &Vault, store: &RocksStore) -> std::collections::HashSet<String> {
        for subject in 0..40 {
            let values = (0..50)
                .map(|n| text(format!("value {subject} {n}")))
                .collect::<Vec<_>>();
            vault
                .tokenize(&format!("subject {subject}"), &values)
                .await
                .expect("tokenize");
        }
        vault.purge().await.expect("purge");
        store.live_table_files("tokens").expect("files")
    }

    /// The forget's purge costs the subject's data, not the store's: it
    /// rewrites none of the tokens family's files (the full purge it
    /// replaced rewrote every one), lists the forget as owed to the
    /// scheduled full purge, and says so in the receipt's guarantees;
    /// that full purge then rewrites them and owes nothing.
    #[tokio::test]
    async fn a_forget_rewrites_no_tokens_file_and_is_owed_to_the_full_purge() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (vault, store) = vault_and_store(dir.path(), PhysicalPurge::default()).await;
        let before = filled(&vault, &store).await;
        assert!(!before.is_empty());
        assert_eq!(vault.purge_status().await.expect("status").pending.count, 0);

        let forgotten = vault.forget("subject 7").await.expect("forget");
        assert_eq!(forgotten.tokens_erased, 50);
        let after = store.live_table_files("tokens").expect("files");
        assert!(
            before.is_subset(&after),
            "the forget rewrote tokens files: {before:?} -> {after:?}"
        );
        assert_eq!(forgotten.guarantees.at_return, AtReturn::KeyGone);
        assert_eq!(
            forgotten.guarantees.purged_by_unix,
            forgotten.erased_at_unix + 86_400
        );
        let status = vault.purge_status().await.expect("status");
        assert_eq!(status.pending.count, 1);
        assert_eq!(
            status.deadline_unix,
            Some(forgotten.erased_at_unix + 86_400)
        );
        assert!(!vault.purge_due(&status, forgotten.erased_at_unix));
        assert!(vault.purge_due(&status, forgotten.erased_at_unix + 43_200));

        vault.purge().await.expect("full purge");
        let purged = store.live_table_files("tokens").expect("files");
        assert!(before.is_disjoint(&purged), "the full purge rewrote them");
        assert_eq!(vault.purge_status().await.expect("status").pending.count, 0);
    }

    /// `full_purge_at_return`: the old behaviour, every file rewritten
    /// before the return, and nothing owed.
    #[tokio::test]
    async fn with_full_purge_at_return_a_forget_rewrites_every_tokens_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let purge = PhysicalPurge {
            full_at_return: true,
            ..PhysicalPurge::default()
        };
        let (vault, store) = vault_and_store(dir.path(), purge).await;
        let before = filled(&vault, &store).await;
        let forgotten = vault.forget("subject 7").await.expect("forget");
        assert_eq!(forgotten.guarantees.at_return, AtReturn::EverythingGone);
        let after = store.live_table_files("tokens").expect("files");
        assert!(before.is_disjoint(&after));
        assert_eq!(vault.purge_status().await.expect("status").pending.count, 0);
    }

    /// A forget of a subject the vault never had leaves nothing in any
    /// file, so it runs no purge (which every other forget would wait on):
    /// the RocksDB WALs it would switch are the same files before and
    /// after. A known subject's forget purges the key instance only: the
    /// vault instance is not flushed, so the forget neither pays for its
    /// memtables nor waits on its compactions (see `store::rocks::keys`).
    #[tokio::test]
    async fn a_forget_purges_only_the_key_instance_and_an_unknown_one_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vault = vault(dir.path()).await;
        vault
            .tokenize("known", &[text("a value".into())])
            .await
            .expect("tokenize");
        let wal_files = |dir: &Path| {
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .expect("list")
                .map(|entry| {
                    entry
                        .expect("entry")
                        .file_name()
                        .to_string_lossy()
                        .into_owned()
                })
                .filter(|name| name.ends_with(".log"))
                .collect();
            names.sort();
            names
        };
        let key_dir = dir.path().join("keys");
        let (vault_before, keys_before) = (wal_files(dir.path()), wal_files(&key_dir));
        let unknown = vault.forget("never seen").await.expect("forget");
        assert_eq!(unknown.tokens_erased, 0);
        assert_eq!(
            wal_files(&key_dir),
            keys_before,
            "a purge ran for an unknown subject"
        );
        let known = vault.forget("known").await.expect("forget");
        assert_eq!(known.tokens_erased, 1);
        assert_ne!(
            wal_files(&key_dir),
            keys_before,
            "the forget purges the key instance"
        );
        assert_eq!(
            wal_files(dir.path()),
            vault_before,
            "the forget's purge flushed the vault instance"
        );
        let again = vault.forget("known").await.expect("forget again");
        assert_eq!(again.tokens_erased, 0);
    }

    #[tokio::test]
    async fn export_pages_cover_every_token_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vault = vault(dir.path()).await;
        let items: Vec<TokenizeItem> = (0..EXPORT_PAGE * 2 + 7)
            .map(|i| text(format!("exported value {i}")))
            .collect();
        let mut expected = Vec::new();
        for chunk in items.chunks(100) {
            expected.extend(vault.tokenize("exported", chunk).await.expect("tokenize"));
        }
        let (mut got, mut cursor, mut pages) = (Vec::new(), None, 0);
        loop {
            let page = vault.export_page("exported", cursor).await.expect("page");
            pages += 1;
            got.extend(page.tokens.into_iter().map(|e| e.token));
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(pages, 3);
        expected.sort();
        got.sort();
        assert_eq!(got, expected);
    }
}
