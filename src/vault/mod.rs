//! The vault's service logic: tokenize and detokenize over the key
//! hierarchy and the store. It knows nothing of gRPC (see `api`) nor of
//! which store and key provider it runs on (`app` builds them); it
//! validates input, derives and caches keys, seals values and resolves
//! token collisions.
//!
//! It must never put a value, subject id or key into an error, a log line
//! or a stored record other than sealed.

pub mod cache;
pub mod destroyed;
pub mod erasure;
pub mod error;
pub mod ledger;
pub mod purge_schedule;
pub mod quota;
pub mod rotation;
pub mod text;

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::RwLockReadGuard;
use zeroize::Zeroizing;

pub use cache::{CachedKeys, DekCache};
pub use erasure::{ExportPage, Exported, Forgotten};
pub use error::VaultError;
pub use rotation::{KeyStatus, RotationProgress};
pub use text::{Redacted, RedactedFinding, Restored};

use crate::clock::unix_now;
use crate::config::Limits;
use crate::crypto::{
    token_aad, CryptoError, IndexKey, SecretKey, SubjectHash, SubjectKeys, SystemKeys,
};
use crate::erasure::ErasureLedger;
use crate::kek::{KekProvider, WrappedKey};
use crate::policy::quota::{NewValueCaller, QuotaAlert};
use crate::scan::Scanner;
use crate::store::counters::MemoryCounters;
use crate::store::{
    Conflict, InsertOutcome, NewToken, Store, StoreError, TokenRecord, TombstoneHasher,
};
use crate::token::template::{Templates, TokenFormat};
use erasure::SubjectLocks;
pub use quota::DEV_ADMIN_PRINCIPAL;

/// How many times a batch is retried when its random tokens collide with
/// existing ones before the value is declared too short to tokenize.
const MAX_TOKEN_ATTEMPTS: usize = 16;
/// A ttl longer than this (100 years) is rejected as a mistake.
const MAX_TTL_SECONDS: u64 = 100 * 365 * 24 * 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenMode {
    Deterministic,
    Random,
}

/// One value to tokenize.
#[derive(Clone)]
pub struct TokenizeItem {
    pub value: String,
    pub format: String,
    pub mode: TokenMode,
    pub ttl_seconds: u64,
}

impl std::fmt::Debug for TokenizeItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenizeItem")
            .field("value", &"<redacted>")
            .field("format", &self.format)
            .field("mode", &self.mode)
            .field("ttl_seconds", &self.ttl_seconds)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenStatus {
    Found,
    NotFound,
    Erased,
    Expired,
}

/// The outcome of one token of a Detokenize call.
pub struct Detokenized {
    pub status: TokenStatus,
    /// Set only when found.
    pub value: Option<Zeroizing<String>>,
    /// Set when the token's record exists (found or expired).
    pub format: Option<String>,
    /// The token's subject when its record exists, for the audit record.
    pub subject: Option<SubjectHash>,
}

/// Counters of key-provider use, for metrics and the load tool: calls,
/// and the keys they carried (a batched call carries several).
#[derive(Default, Debug)]
pub struct KekStats {
    pub wrap_calls: AtomicU64,
    pub unwrap_calls: AtomicU64,
    pub keys_wrapped: AtomicU64,
    pub keys_unwrapped: AtomicU64,
}

pub struct Vault {
    store: Arc<dyn Store>,
    kek: Arc<dyn KekProvider>,
    system: SystemKeys,
    /// Shared with the store's invalidation listener (a shared store).
    cache: Arc<DekCache>,
    limits: Limits,
    kek_stats: KekStats,
    /// Every built-in detector, built once: RedactText filters its
    /// findings by the requested kinds.
    scanner: Scanner,
    /// The operator-defined formats (`[[formats]]`): Tokenize takes their
    /// names, RestoreText looks for their tokens.
    templates: Arc<Templates>,
    /// Keyed hash of an erased token (the store's tombstone key).
    tombstone_hasher: TombstoneHasher,
    subject_locks: SubjectLocks,
    /// Where forgets are recorded so they outlive a restore (None only for
    /// vaults assembled by tests).
    ledger: Option<ErasureLedger>,
    /// New-value limits and the window counters (see `quota`).
    quotas: quota::Quotas,
    /// When forgotten data leaves the store's files.
    physical_purge: erasure::PhysicalPurge,
    /// The DEKs forgets destroyed, by fingerprint (see `destroyed`).
    destroyed_keys: destroyed::DestroyedKeys,
    /// Behavioural anomaly detection (`[anomaly]`); None when off.
    anomaly: Option<Arc<crate::anomaly::Monitor>>,
    /// Where alerts are sent besides the log (`[[alert_sinks]]`).
    notifier: Option<Arc<crate::notify::Notifier>>,
}

impl Vault {
    /// Feeds the reveals to `monitor` (from `[anomaly]`).
    pub fn set_anomaly(&mut self, monitor: Arc<crate::anomaly::Monitor>) {
        self.anomaly = Some(monitor);
    }

    /// Sends alerts to `notifier`'s sinks.
    pub fn set_notifier(&mut self, notifier: Arc<crate::notify::Notifier>) {
        self.notifier = Some(notifier);
    }

    /// Queues `notice` on every alert sink; never waits.
    pub fn notify(&self, notice: crate::notify::Notice) {
        if let Some(notifier) = &self.notifier {
            notifier.send(notice);
        }
    }

    /// Anomaly alerts raised since start, by detector, and the step-downs
    /// in force (for `/metrics`).
    pub fn anomaly_counts(&self) -> (Vec<(&'static str, u64)>, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let alerts = crate::anomaly::Detector::ALL
            .iter()
            .zip(&crate::anomaly::monitor::ANOMALY_ALERTS)
            .map(|(detector, count)| (detector.name(), count.load(Relaxed)))
            .collect();
        let step_downs = self.anomaly.as_ref().map_or(0, |m| m.step_downs() as u64);
        (alerts, step_downs)
    }

    /// The anomaly monitor, when `[anomaly]` is enabled.
    pub fn anomaly(&self) -> Option<&Arc<crate::anomaly::Monitor>> {
        self.anomaly.as_ref()
    }

    /// The text rules: token templates and the scanner RedactText runs.
    pub fn set_text_rules(&mut self, templates: Arc<Templates>, scanner: Scanner) {
        self.templates = templates;
        self.scanner = scanner;
    }

    /// The operator-defined formats this vault runs (a masked reveal finds
    /// a template by the stored format name).
    pub fn templates(&self) -> &Templates {
        &self.templates
    }

    /// Assembles a vault from parts (tests use this with other stores).
    pub async fn with_parts(
        store: Arc<dyn Store>,
        kek: Arc<dyn KekProvider>,
        cache_subjects: usize,
        limits: Limits,
    ) -> Result<Self, VaultError> {
        let kek_stats = KekStats::default();
        let system_key =
            load_or_create_system_key(store.as_ref(), kek.as_ref(), &kek_stats).await?;
        let capacity = NonZeroUsize::new(cache_subjects).ok_or_else(|| {
            VaultError::InvalidArgument("cache.max_subjects must be above 0".into())
        })?;
        let system = SystemKeys::from_system_key(&system_key);
        let tombstone_key = system.tombstone_key().clone();
        let cache = Arc::new(DekCache::new(capacity));
        let listener_cache = Arc::clone(&cache);
        store.watch_invalidations(Arc::new(move |invalidation| {
            listener_cache.invalidate(invalidation)
        }));
        Ok(Vault {
            store,
            kek,
            system,
            cache,
            limits,
            kek_stats,
            scanner: Scanner::all(),
            templates: Arc::new(Templates::default()),
            tombstone_hasher: Arc::new(move |token: &str| tombstone_key.mac(&[token.as_bytes()])),
            subject_locks: SubjectLocks::new(),
            ledger: None,
            quotas: quota::Quotas::new(Arc::new(MemoryCounters::new()), &system_key),
            physical_purge: erasure::PhysicalPurge::default(),
            destroyed_keys: destroyed::DestroyedKeys::default(),
            anomaly: None,
            notifier: None,
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn kek_stats(&self) -> &KekStats {
        &self.kek_stats
    }

    pub fn cache(&self) -> &DekCache {
        &self.cache
    }

    /// The store, for the audit log (which keeps its records beside the
    /// vault's).
    pub fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.store)
    }

    /// The key the audit log hashes subjects and tokens with.
    pub fn audit_hash_key(&self) -> &SecretKey {
        self.system.audit_hash_key()
    }

    /// The KEK provider, for the health probe.
    pub fn kek(&self) -> &Arc<dyn KekProvider> {
        &self.kek
    }

    /// Zeroizes every cached key and stops the store's background work.
    /// Called on shutdown; nothing is served afterwards.
    pub fn shutdown(&self) {
        self.cache.clear();
        self.store.stop_background_work();
    }

    /// Tokenizes a batch for one subject, atomically: one bad item fails
    /// the call and stores nothing.
    pub async fn tokenize(
        &self,
        subject_id: &str,
        items: &[TokenizeItem],
    ) -> Result<Vec<String>, VaultError> {
        self.check_subject(subject_id)?;
        self.check_batch(items.len(), "items")?;
        self.tokenize_items(subject_id, items, None, &mut Vec::new())
            .await
    }

    /// [`Vault::tokenize`] for `caller`, whose new values are charged to
    /// its new-value limits (`quota`): a call over one stores nothing and
    /// is refused with its alert ([`VaultError::NewValuesLimited`]). Ok
    /// holds the tokens and the warnings to audit.
    pub async fn tokenize_as(
        &self,
        caller: &NewValueCaller,
        subject_id: &str,
        items: &[TokenizeItem],
    ) -> Result<(Vec<String>, Vec<QuotaAlert>), VaultError> {
        self.check_subject(subject_id)?;
        self.check_batch(items.len(), "items")?;
        let mut warnings = Vec::new();
        let tokens = self
            .tokenize_items(subject_id, items, Some(caller), &mut warnings)
            .await?;
        Ok((tokens, warnings))
    }

    /// [`Vault::tokenize`] after the subject and batch size are checked
    /// (RedactText bounds its batch by the text size instead); with a
    /// caller, its new values are charged first (warnings into `warnings`).
    async fn tokenize_items(
        &self,
        subject_id: &str,
        items: &[TokenizeItem],
        caller: Option<&NewValueCaller>,
        warnings: &mut Vec<QuotaAlert>,
    ) -> Result<Vec<String>, VaultError> {
        let formats = items
            .iter()
            .enumerate()
            .map(|(i, item)| self.check_item(i, item))
            .collect::<Result<Vec<_>, _>>()?;

        let subject = self.system.subject_hash(subject_id);
        let (_shared, keys) = self.lock_and_keys_for_write(subject).await?;
        match self
            .tokenize_under(&keys, subject, items, &formats, caller, warnings)
            .await
        {
            // A shared store found the cached key no longer the subject's
            // (a forget and a new key on another replica whose notice has
            // not arrived, or a KEK rotation's rewrap). Nothing was stored
            // and the entry is dropped: seal again under the stored key.
            Err(VaultError::StorageUnavailable(StoreError::SubjectErased)) => {
                let keys = self
                    .keys_for_write(subject)
                    .await?
                    .ok_or_else(destroyed_key_again)?;
                // Charged already: the retry stores the same new values.
                self.tokenize_under(&keys, subject, items, &formats, None, warnings)
                    .await
            }
            done => done,
        }
    }

    /// One attempt of [`Vault::tokenize_items`] with the subject's keys.
    async fn tokenize_under(
        &self,
        keys: &CachedKeys,
        subject: SubjectHash,
        items: &[TokenizeItem],
        formats: &[TokenFormat],
        caller: Option<&NewValueCaller>,
        warnings: &mut Vec<QuotaAlert>,
    ) -> Result<Vec<String>, VaultError> {
        let now = unix_now();
        let plan = DeterministicPlan::new(items, formats, &keys.keys, &subject);

        let mut tokens: Vec<Option<String>> = vec![None; items.len()];
        self.resolve_index_hits(&plan, now, &mut tokens).await?;
        let pending: Vec<usize> = (0..items.len())
            .filter(|&i| plan.owner[i] == i && tokens[i].is_none())
            .collect();
        if let Some(caller) = caller {
            warnings.extend(
                self.charge_new_values(caller, subject, items, formats, &pending)
                    .await?,
            );
        }
        self.insert_new_tokens(
            pending,
            items,
            formats,
            &plan,
            keys,
            subject,
            now,
            &mut tokens,
        )
        .await?;

        (0..items.len())
            .map(|i| {
                tokens[plan.owner[i]]
                    .clone()
                    .ok_or_else(|| VaultError::Internal("an item was left without a token".into()))
            })
            .collect()
    }

    /// Looks tokens up and opens their values. Unknown tokens are
    /// `NotFound`, not an error.
    pub async fn detokenize(&self, tokens: &[String]) -> Result<Vec<Detokenized>, VaultError> {
        self.check_batch(tokens.len(), "tokens")?;
        let max_token = self.max_token_bytes();
        for (i, token) in tokens.iter().enumerate() {
            if token.is_empty() || token.len() > max_token {
                return Err(VaultError::InvalidArgument(format!(
                    "tokens[{i}]: a token is 1 to {max_token} bytes"
                )));
            }
        }
        let records = self.store.token_records(tokens).await?;
        self.open_records(tokens, records).await
    }

    /// Opens looked-up records of `tokens` (same order), unwrapping the
    /// subjects' keys in one provider call.
    ///
    /// A value its subject's cached key does not open is looked up again,
    /// once, with that key read from the store: on a store shared by
    /// replicas the subject may have been forgotten and given a new key
    /// elsewhere, and the notice not have reached this cache yet. A value
    /// that still does not open is corrupt (INTERNAL).
    async fn open_records(
        &self,
        tokens: &[String],
        records: Vec<Option<TokenRecord>>,
    ) -> Result<Vec<Detokenized>, VaultError> {
        let (mut opened, unopened) = self.open_with_keys(tokens, records).await?;
        if unopened.is_empty() {
            return Ok(opened);
        }
        for (_, subject) in &unopened {
            self.cache.remove(subject);
        }
        let again: Vec<String> = unopened.iter().map(|(i, _)| tokens[*i].clone()).collect();
        let records = self.store.token_records(&again).await?;
        let (reopened, still_unopened) = self.open_with_keys(&again, records).await?;
        if !still_unopened.is_empty() {
            return Err(VaultError::Internal(
                "a sealed value does not open under its subject's key".into(),
            ));
        }
        for ((i, _), result) in unopened.into_iter().zip(reopened) {
            opened[i] = result;
        }
        Ok(opened)
    }

    /// One pass of [`Vault::open_records`]: the results, and the positions
    /// (with subjects) of values the subject's key did not open, whose
    /// results are placeholders.
    async fn open_with_keys(
        &self,
        tokens: &[String],
        records: Vec<Option<TokenRecord>>,
    ) -> Result<(Vec<Detokenized>, Vec<(usize, SubjectHash)>), VaultError> {
        let now = unix_now();
        let subjects: Vec<SubjectHash> = records
            .iter()
            .flatten()
            .filter(|record| !record.is_expired(now))
            .map(|record| record.subject)
            .collect();
        let keys = self.keys_for_read(&subjects).await?;
        let missing: Vec<&str> = tokens
            .iter()
            .zip(&records)
            .filter(|(_, record)| record.is_none())
            .map(|(token, _)| token.as_str())
            .collect();
        let mut erased = self.erased(&missing).await?.into_iter();

        let mut opened = Vec::with_capacity(tokens.len());
        let mut unopened = Vec::new();
        for (i, (token, record)) in tokens.iter().zip(records).enumerate() {
            let result = match record {
                None if erased.next().unwrap_or(false) => Detokenized {
                    status: TokenStatus::Erased,
                    value: None,
                    format: None,
                    subject: None,
                },
                record => match open_record(token, record, &keys, now)? {
                    Opened::Value(result) => result,
                    Opened::KeyMismatch(subject) => {
                        unopened.push((i, subject));
                        Detokenized {
                            status: TokenStatus::NotFound,
                            value: None,
                            format: None,
                            subject: None,
                        }
                    }
                },
            };
            opened.push(result);
        }
        Ok((opened, unopened))
    }

    fn max_token_bytes(&self) -> usize {
        // The longest built-in token is an email's: the value plus
        // ".invalid". A template token has the value's characters, each
        // drawn from an alphabet that may mix 1- and 4-byte characters.
        if self.templates.is_empty() {
            self.limits.max_value_bytes + 16
        } else {
            self.limits.max_value_bytes * 4
        }
    }

    fn check_subject(&self, subject_id: &str) -> Result<(), VaultError> {
        let max = self.limits.max_subject_bytes;
        if subject_id.is_empty() || subject_id.len() > max {
            return Err(VaultError::InvalidArgument(format!(
                "subject_id: must be 1 to {max} bytes"
            )));
        }
        Ok(())
    }

    fn check_batch(&self, len: usize, field: &str) -> Result<(), VaultError> {
        let max = self.limits.max_batch_items;
        if len == 0 || len > max {
            return Err(VaultError::InvalidArgument(format!(
                "{field}: a call takes 1 to {max} entries, got {len}"
            )));
        }
        Ok(())
    }

    fn check_item(&self, i: usize, item: &TokenizeItem) -> Result<TokenFormat, VaultError> {
        let invalid = |reason: String| VaultError::InvalidArgument(format!("items[{i}]: {reason}"));
        let format = self
            .templates
            .format(&item.format)
            .ok_or_else(|| invalid(format!("unknown format {:?}", truncate(&item.format, 32))))?;
        let max = self.limits.max_value_bytes;
        if item.value.len() > max {
            return Err(invalid(format!("value is over {max} bytes")));
        }
        if item.ttl_seconds > MAX_TTL_SECONDS {
            return Err(invalid(format!("ttl_seconds is over {MAX_TTL_SECONDS}")));
        }
        format
            .validate(&item.value)
            .map_err(|e| invalid(e.to_string()))?;
        Ok(format)
    }

    /// Fills `tokens` for deterministic items whose index entry exists and
    /// has not expired.
    async fn resolve_index_hits(
        &self,
        plan: &DeterministicPlan,
        now: i64,
        tokens: &mut [Option<String>],
    ) -> Result<(), VaultError> {
        let lookups: Vec<(usize, IndexKey)> = plan
            .index_keys
            .iter()
            .enumerate()
            .filter(|(i, key)| key.is_some() && plan.owner[*i] == *i)
            .filter_map(|(i, key)| key.clone().map(|key| (i, key)))
            .collect();
        if lookups.is_empty() {
            return Ok(());
        }
        let keys: Vec<IndexKey> = lookups.iter().map(|(_, key)| key.clone()).collect();
        let entries = self.store.index_entries(&keys).await?;
        for ((i, _), entry) in lookups.into_iter().zip(entries) {
            if let Some(entry) = entry.filter(|entry| !entry.is_expired(now)) {
                tokens[i] = Some(entry.token);
            }
        }
        Ok(())
    }

    /// Generates, seals and stores tokens for the pending items, retrying
    /// collisions; a deterministic item that another call stored first
    /// takes that call's token.
    ///
    /// A round that collides stores nothing (the store's insert is
    /// atomic), but only the items whose token was taken draw again: the
    /// others keep their sealed tokens for the next round. Redrawing the
    /// whole batch made a batch of n succeed only in a round where all n
    /// drew free tokens at once, which in a shape already holding k of
    /// its S tokens happens with probability about
    /// exp(-n·k/S - n²/2S): 1,000 cards of one first six and last four
    /// (S ≈ 900,000) were refused once k was a few thousand. Now each item
    /// fails only if its own MAX_TOKEN_ATTEMPTS draws all collide.
    #[allow(clippy::too_many_arguments)]
    async fn insert_new_tokens(
        &self,
        mut pending: Vec<usize>,
        items: &[TokenizeItem],
        formats: &[TokenFormat],
        plan: &DeterministicPlan,
        keys: &CachedKeys,
        subject: SubjectHash,
        now: i64,
        tokens: &mut [Option<String>],
    ) -> Result<(), VaultError> {
        // The token drawn for each pending item (same order); None: draw.
        let mut drawn: Vec<Option<NewToken>> = vec![None; pending.len()];
        for _ in 0..MAX_TOKEN_ATTEMPTS {
            if pending.is_empty() {
                return Ok(());
            }
            for (slot, &i) in drawn.iter_mut().zip(&pending) {
                if slot.is_none() {
                    let token = new_token(
                        &items[i],
                        &formats[i],
                        &keys.keys,
                        subject,
                        now,
                        plan.index_keys[i].clone(),
                    )
                    .map_err(|e| match e {
                        VaultError::InvalidArgument(reason) => {
                            VaultError::InvalidArgument(format!("items[{i}]: {reason}"))
                        }
                        other => other,
                    })?;
                    *slot = Some(token);
                }
            }
            let batch: Vec<NewToken> = drawn.iter().flatten().cloned().collect();
            let outcome = self
                .store
                .insert_tokens(batch, &[(subject, &keys.wrapped)], now)
                .await
                .inspect_err(|error| {
                    if matches!(error, StoreError::SubjectErased) {
                        // The cached key was destroyed by a forget
                        // elsewhere, or rewrapped.
                        self.cache.remove(&subject);
                    }
                })?;
            match outcome {
                InsertOutcome::Committed => {
                    for (&i, new) in pending.iter().zip(drawn) {
                        tokens[i] = new.map(|new| new.token);
                    }
                    return Ok(());
                }
                InsertOutcome::Conflicts(conflicts) => {
                    (pending, drawn) = settle_conflicts(pending, drawn, conflicts, tokens);
                }
            }
        }
        match pending.first() {
            None => Ok(()),
            Some(i) => Err(VaultError::InvalidArgument(format!(
                "items[{i}]: no free token of this shape is left; the value is too short to tokenize in this format (use \"opaque\")"
            ))),
        }
    }

    /// Takes the subject's read lock (held until the tokens are stored: a
    /// forget of the subject waits, so no token is sealed with a key the
    /// forget has destroyed) and its keys. A destroyed key found back in
    /// the store is erased again first (see `destroyed`).
    async fn lock_and_keys_for_write(
        &self,
        subject: SubjectHash,
    ) -> Result<(RwLockReadGuard<'_, ()>, Arc<CachedKeys>), VaultError> {
        let shared = self.subject_locks.read(&subject).await;
        if let Some(keys) = self.keys_for_write(subject).await? {
            return Ok((shared, keys));
        }
        drop(shared);
        self.erase_destroyed_copy(subject).await?;
        let shared = self.subject_locks.read(&subject).await;
        match self.keys_for_write(subject).await? {
            Some(keys) => Ok((shared, keys)),
            None => Err(destroyed_key_again()),
        }
    }

    /// The subject's keys, creating its DEK on first use; None if the
    /// stored key is one a forget destroyed.
    async fn keys_for_write(
        &self,
        subject: SubjectHash,
    ) -> Result<Option<Arc<CachedKeys>>, VaultError> {
        if let Some(keys) = self.cache.get(&subject) {
            return Ok(Some(keys));
        }
        // Before the store read: see `cache` on why.
        let ticket = self.cache.ticket(&subject);
        let stored = self.store.subject_keys(&[subject]).await?.pop().flatten();
        let (dek, wrapped, from_store) = match stored {
            Some(wrapped) => (
                self.unwrap_keys(&[&wrapped]).await?.remove(0),
                wrapped,
                true,
            ),
            None => self.create_subject_key(subject).await?,
        };
        if from_store && self.destroyed(std::slice::from_ref(&dek)).await?[0] {
            return Ok(None);
        }
        Ok(Some(self.cache.insert(
            subject,
            self.cached_keys(&dek, wrapped),
            ticket,
        )))
    }

    fn cached_keys(&self, dek: &SecretKey, wrapped: WrappedKey) -> CachedKeys {
        CachedKeys {
            keys: SubjectKeys::from_dek(dek),
            wrapped,
            fingerprint: self.system.key_fingerprint(dek),
        }
    }

    /// A new DEK for the subject, or the one another call stored first;
    /// with the wrapped key in force, and whether it came from the store.
    async fn create_subject_key(
        &self,
        subject: SubjectHash,
    ) -> Result<(SecretKey, WrappedKey, bool), VaultError> {
        let dek = SecretKey::generate()?;
        self.kek_stats.wrap_calls.fetch_add(1, Ordering::Relaxed);
        self.kek_stats.keys_wrapped.fetch_add(1, Ordering::Relaxed);
        let wrapped = self.kek.wrap(&[&dek]).await?.remove(0);
        let in_force = self
            .store
            .insert_subject_key(subject, wrapped.clone())
            .await?;
        if in_force == wrapped {
            Ok((dek, in_force, false))
        } else {
            // Another call created the subject's key first: use that one.
            let stored = self.unwrap_keys(&[&in_force]).await?.remove(0);
            Ok((stored, in_force, true))
        }
    }

    /// The keys of existing subjects, unwrapping the uncached ones in one
    /// provider call. Subjects without a stored key are absent.
    async fn keys_for_read(
        &self,
        subjects: &[SubjectHash],
    ) -> Result<HashMap<SubjectHash, Arc<CachedKeys>>, VaultError> {
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        for subject in subjects {
            if found.contains_key(subject) || missing.contains(subject) {
                continue;
            }
            match self.cache.get(subject) {
                Some(keys) => {
                    found.insert(*subject, keys);
                }
                None => missing.push(*subject),
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        // Before the store read, so that a forget of one of these subjects
        // while its key is unwrapped keeps the key out of the cache (these
        // reads hold no subject lock).
        let tickets: Vec<_> = missing.iter().map(|s| self.cache.ticket(s)).collect();
        let stored = self.store.subject_keys(&missing).await?;
        let (present, wrapped): (Vec<(SubjectHash, cache::Ticket)>, Vec<_>) = missing
            .into_iter()
            .zip(tickets)
            .zip(stored)
            .filter_map(|(subject, key)| key.map(|key| (subject, key)))
            .unzip();
        if present.is_empty() {
            return Ok(found);
        }
        let deks = self
            .unwrap_keys(&wrapped.iter().collect::<Vec<_>>())
            .await?;
        let destroyed = self.destroyed(&deks).await?;
        let mut copies = Vec::new();
        for ((((subject, ticket), dek), wrapped), destroyed) in
            present.into_iter().zip(deks).zip(wrapped).zip(destroyed)
        {
            if destroyed {
                copies.push(subject);
                continue;
            }
            found.insert(
                subject,
                self.cache
                    .insert(subject, self.cached_keys(&dek, wrapped), ticket),
            );
        }
        // Their tokens answer ERASED (no key), now and once erased again.
        for subject in copies {
            self.erase_destroyed_copy(subject).await?;
        }
        Ok(found)
    }

    async fn unwrap_keys(
        &self,
        wrapped: &[&crate::kek::WrappedKey],
    ) -> Result<Vec<SecretKey>, VaultError> {
        self.kek_stats.unwrap_calls.fetch_add(1, Ordering::Relaxed);
        self.kek_stats
            .keys_unwrapped
            .fetch_add(wrapped.len() as u64, Ordering::Relaxed);
        let keys = self.kek.unwrap(wrapped).await?;
        if keys.len() != wrapped.len() {
            return Err(VaultError::Internal(
                "key provider returned a short batch".into(),
            ));
        }
        Ok(keys)
    }
}

/// A destroyed key back in the store again right after it was erased
/// (rows being written back while the vault erases them): refused, and
/// the caller may retry.
fn destroyed_key_again() -> VaultError {
    VaultError::StorageUnavailable(StoreError::SubjectErased)
}

async fn load_or_create_system_key(
    store: &dyn Store,
    kek: &dyn KekProvider,
    stats: &KekStats,
) -> Result<SecretKey, VaultError> {
    stats.unwrap_calls.fetch_add(1, Ordering::Relaxed);
    stats.keys_unwrapped.fetch_add(1, Ordering::Relaxed);
    let wrapped = match store.system_key().await? {
        Some(wrapped) => wrapped,
        None => {
            let fresh = SecretKey::generate()?;
            stats.wrap_calls.fetch_add(1, Ordering::Relaxed);
            stats.keys_wrapped.fetch_add(1, Ordering::Relaxed);
            let wrapped = kek.wrap(&[&fresh]).await?.remove(0);
            store.init_system_key(wrapped).await?
        }
    };
    Ok(kek.unwrap(&[&wrapped]).await?.remove(0))
}

/// For each item: its deterministic index key (None in random mode) and
/// the first item of the batch with the same key, which speaks for all of
/// them (so a value twice in one batch gets one token).
struct DeterministicPlan {
    index_keys: Vec<Option<IndexKey>>,
    owner: Vec<usize>,
}

impl DeterministicPlan {
    fn new(
        items: &[TokenizeItem],
        formats: &[TokenFormat],
        keys: &SubjectKeys,
        subject: &SubjectHash,
    ) -> Self {
        let index_keys: Vec<Option<IndexKey>> = items
            .iter()
            .zip(formats)
            .map(|(item, format)| {
                (item.mode == TokenMode::Deterministic)
                    .then(|| keys.index_key(subject, format.name(), &item.value))
            })
            .collect();
        let mut first: HashMap<&IndexKey, usize> = HashMap::new();
        let owner = index_keys
            .iter()
            .enumerate()
            .map(|(i, key)| match key {
                Some(key) => *first.entry(key).or_insert(i),
                None => i,
            })
            .collect();
        DeterministicPlan { index_keys, owner }
    }
}

fn new_token(
    item: &TokenizeItem,
    format: &TokenFormat,
    keys: &SubjectKeys,
    subject: SubjectHash,
    now: i64,
    index_key: Option<IndexKey>,
) -> Result<NewToken, VaultError> {
    let token = format
        .generate_token(&item.value, &mut rand::rng())
        .map_err(|e| VaultError::InvalidArgument(e.to_string()))?;
    let aad = token_aad(&token, format.name(), &subject);
    let sealed = keys.seal_key().seal(&aad, item.value.as_bytes())?;
    let expires_at = (item.ttl_seconds > 0).then(|| now.saturating_add(item.ttl_seconds as i64));
    Ok(NewToken {
        token,
        record: TokenRecord {
            subject,
            format: format.name().to_string(),
            created_at: now,
            expires_at,
            sealed,
        },
        index_key,
    })
}

/// Applies an insert's conflicts: items whose value another call stored
/// take its token and are done; items whose token was taken lose it (to
/// draw again); the rest keep theirs. Returns the items still pending with
/// their drawn tokens.
fn settle_conflicts(
    pending: Vec<usize>,
    mut drawn: Vec<Option<NewToken>>,
    conflicts: Vec<Conflict>,
    tokens: &mut [Option<String>],
) -> (Vec<usize>, Vec<Option<NewToken>>) {
    let mut settled = vec![false; pending.len()];
    for conflict in conflicts {
        match conflict {
            Conflict::IndexTaken { item, existing } => {
                if let Some(&i) = pending.get(item) {
                    tokens[i] = Some(existing.token);
                    settled[item] = true;
                }
            }
            Conflict::TokenTaken { item } => {
                if let Some(slot) = drawn.get_mut(item) {
                    *slot = None;
                }
            }
        }
    }
    pending
        .into_iter()
        .zip(drawn)
        .zip(settled)
        .filter(|(_, settled)| !settled)
        .map(|(kept, _)| kept)
        .unzip()
}

/// What opening one looked-up record gave.
enum Opened {
    Value(Detokenized),
    /// The subject's key did not open the value (see
    /// [`Vault::open_records`]).
    KeyMismatch(SubjectHash),
}

fn open_record(
    token: &str,
    record: Option<TokenRecord>,
    keys: &HashMap<SubjectHash, Arc<CachedKeys>>,
    now: i64,
) -> Result<Opened, VaultError> {
    let Some(record) = record else {
        return Ok(Opened::Value(Detokenized {
            status: TokenStatus::NotFound,
            value: None,
            format: None,
            subject: None,
        }));
    };
    if record.is_expired(now) {
        return Ok(Opened::Value(Detokenized {
            status: TokenStatus::Expired,
            value: None,
            format: Some(record.format),
            subject: Some(record.subject),
        }));
    }
    let Some(subject_keys) = keys.get(&record.subject) else {
        // The record was read just before a forget of its subject removed
        // the key: the token is erased.
        return Ok(Opened::Value(Detokenized {
            status: TokenStatus::Erased,
            value: None,
            format: None,
            subject: None,
        }));
    };
    let aad = token_aad(token, &record.format, &record.subject);
    let plain = match subject_keys.keys.seal_key().open(&aad, record.sealed) {
        Ok(plain) => plain,
        Err(CryptoError::OpenFailed) => return Ok(Opened::KeyMismatch(record.subject)),
        Err(other) => return Err(other.into()),
    };
    Ok(Opened::Value(Detokenized {
        status: TokenStatus::Found,
        value: Some(utf8_value(plain)?),
        format: Some(record.format),
        subject: Some(record.subject),
    }))
}

/// An opened value as text, moved (not copied) out of its zeroizing
/// buffer; bytes that are not UTF-8 are zeroized too.
pub(crate) fn utf8_value(mut plain: Zeroizing<Vec<u8>>) -> Result<Zeroizing<String>, VaultError> {
    match String::from_utf8(std::mem::take(&mut *plain)) {
        Ok(value) => Ok(Zeroizing::new(value)),
        Err(error) => {
            drop(Zeroizing::new(error.into_bytes()));
            Err(VaultError::Internal("a sealed value is not UTF-8".into()))
        }
    }
}

/// Cuts caller-supplied names (never values) for error messages.
fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

/// What the service's unit tests share: a text item, a token's status.
#[cfg(test)]
pub(crate) mod test_support {
    use super::{TokenMode, TokenStatus, TokenizeItem, Vault};

    pub(crate) fn text_item(value: &str) -> TokenizeItem {
        TokenizeItem {
            value: value.into(),
            format: "text".into(),
            mode: TokenMode::Random,
            ttl_seconds: 0,
        }
    }

    pub(crate) async fn status(vault: &Vault, token: &str) -> TokenStatus {
        vault
            .detokenize(&[token.to_string()])
            .await
            .expect("detokenize")[0]
            .status
    }

    /// One replica of a vault on a shared PostgreSQL database (the local
    /// KEK every replica of a test shares).
    pub(crate) async fn postgres_replica(
        options: &crate::store::postgres::PostgresOptions,
    ) -> (Vault, std::sync::Arc<crate::store::postgres::PostgresStore>) {
        use crate::crypto::SecretKey;
        use crate::kek::local::LocalKek;
        use crate::store::postgres::PostgresStore;
        let store =
            std::sync::Arc::new(PostgresStore::open(options).await.expect("postgres store"));
        let kek = LocalKek::from_key(&SecretKey::from_slice(&[9; 32]).expect("key"));
        let vault = Vault::with_parts(
            std::sync::Arc::clone(&store) as std::sync::Arc<dyn crate::store::Store>,
            std::sync::Arc::new(kek),
            16,
            super::Limits::default(),
        )
        .await
        .expect("vault");
        (vault, store)
    }
}

#[cfg(test)]
mod group_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kek::local::LocalKek;
    use crate::store::postgres::tests::{fresh_database, options};
    use crate::store::postgres::PostgresStore;
    use crate::store::rocks::{RocksOptions, RocksStore};
    use std::path::Path;

    #[test]
    fn an_opened_value_becomes_text_or_an_internal_error() {
        let text = utf8_value(Zeroizing::new("Иван 4111".as_bytes().to_vec())).expect("UTF-8");
        assert_eq!(text.as_str(), "Иван 4111");
        let broken = utf8_value(Zeroizing::new(vec![b'a', 0xff, b'b']));
        assert!(
            matches!(&broken, Err(VaultError::Internal(message)) if message.contains("not UTF-8")),
            "{broken:?}"
        );
    }

    fn text(value: &str) -> TokenizeItem {
        TokenizeItem {
            value: value.into(),
            format: "text".into(),
            mode: TokenMode::Random,
            ttl_seconds: 0,
        }
    }

    /// A vault on a fresh RocksDB store in `dir`.
    async fn rocks_vault(dir: &Path) -> Vault {
        let store = RocksStore::open(
            dir,
            &RocksOptions {
                sync_writes: false,
                sync_audit: false,
                block_cache_bytes: 8 << 20,
            },
        )
        .expect("store");
        let kek = LocalKek::from_key(&SecretKey::from_slice(&[9; 32]).expect("key"));
        Vault::with_parts(Arc::new(store), Arc::new(kek), 16, Limits::default())
            .await
            .expect("vault")
    }

    /// The Luhn-valid 16-digit cards `427638 ?????? 5671`, in order of
    /// their middle digits, from the `skip`th on.
    fn cards_of_one_shape(skip: usize, count: usize) -> Vec<TokenizeItem> {
        (0..1_000_000u32)
            .map(|middle| format!("427638{middle:06}5671"))
            .filter(|card| {
                let digits: Vec<u8> = card.bytes().map(|b| b - b'0').collect();
                crate::token::checks::luhn_valid(&digits)
            })
            .skip(skip)
            .take(count)
            .map(|value| TokenizeItem {
                value,
                format: "card".into(),
                mode: TokenMode::Deterministic,
                ttl_seconds: 0,
            })
            .collect()
    }

    /// Large batches of one shape (first six and last four shared, ~900,000
    /// free middles) must not give up after a few thousand tokens: a
    /// collision redraws the items that collided, not the whole batch.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_batches_of_one_card_shape_are_not_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vault = rocks_vault(dir.path()).await;
        let mut minted = std::collections::HashSet::new();
        for call in 0..10 {
            let items = cards_of_one_shape(call * 1_000, 1_000);
            let tokens = vault
                .tokenize("one-subject", &items)
                .await
                .unwrap_or_else(|e| panic!("call {call} of 1,000 cards: {e}"));
            assert_eq!(tokens.len(), 1_000);
            minted.extend(tokens);
        }
        assert_eq!(minted.len(), 10_000, "every card has its own token");
        // Other subjects in the same shape, 100 a call.
        for subject in 0..20 {
            let items = cards_of_one_shape(subject * 100, 100);
            vault
                .tokenize(&format!("subject-{subject}"), &items)
                .await
                .unwrap_or_else(|e| panic!("subject {subject}: {e}"));
        }
    }

    /// One replica of a vault on a shared PostgreSQL database.
    async fn replica(url: &str, name: &str) -> (Vault, Arc<PostgresStore>) {
        super::test_support::postgres_replica(&options(url, name)).await
    }

    /// C has three subjects' keys cached and has not heard of A's forgets
    /// yet (its notices are late), and B has made each subject a new key.
    /// C's next Tokenize must seal under the new key: tokens sealed under
    /// the destroyed one would never open again. C's Detokenize and export
    /// of B's new tokens must open them with the new key, not fail on the
    /// old one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replica_with_stale_cached_keys_uses_the_subjects_new_keys() {
        let url = fresh_database().await;
        let ((a, _), (b, _), (c, c_store)) =
            tokio::join!(replica(&url, "a"), replica(&url, "b"), replica(&url, "c"));
        let mut tokens = Vec::new();
        for subject in ["writes-on-c", "reads-on-c", "exports-on-c"] {
            tokens.extend(
                c.tokenize(subject, &[text("before the forget")])
                    .await
                    .expect("tokenize on C"),
            );
        }
        c_store.drop_invalidations();
        for subject in ["writes-on-c", "reads-on-c", "exports-on-c"] {
            a.forget(subject).await.expect("forget on A");
            tokens.extend(
                b.tokenize(subject, &[text("new key on B")])
                    .await
                    .expect("tokenize on B"),
            );
        }
        tokens.extend(
            c.tokenize("writes-on-c", &[text("stale cache on C")])
                .await
                .expect("tokenize on C with a stale cached key"),
        );
        let read_on_c = c
            .detokenize(&tokens[4..5])
            .await
            .expect("detokenize on C with a stale cached key");
        assert_eq!(
            read_on_c[0].value.as_deref().map(String::as_str),
            Some("new key on B")
        );
        let exported_on_c = c
            .export_page("exports-on-c", None)
            .await
            .expect("export on C with a stale cached key");
        let exported: Vec<(&str, &str)> = exported_on_c
            .tokens
            .iter()
            .map(|e| (e.token.as_str(), e.value.as_str()))
            .collect();
        assert_eq!(exported, [(tokens[5].as_str(), "new key on B")]);

        let opened = a.detokenize(&tokens).await.expect("detokenize on A");
        let seen: Vec<(TokenStatus, Option<&str>)> = opened
            .iter()
            .map(|d| (d.status, d.value.as_deref().map(String::as_str)))
            .collect();
        assert_eq!(
            seen,
            [
                (TokenStatus::Erased, None),
                (TokenStatus::Erased, None),
                (TokenStatus::Erased, None),
                (TokenStatus::Found, Some("new key on B")),
                (TokenStatus::Found, Some("new key on B")),
                (TokenStatus::Found, Some("new key on B")),
                (TokenStatus::Found, Some("stale cache on C")),
            ]
        );
    }
}
