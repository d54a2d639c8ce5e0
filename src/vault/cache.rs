//! The bounded cache of unwrapped subject keys, so the KEK provider is off
//! the hot path for known subjects. Entries are `Arc<CachedKeys>`; the
//! keys zeroize when the last reference drops, i.e. on eviction (once no
//! call in flight still uses them) and on [`DekCache::clear`] at shutdown.
//!
//! A key enters the cache only if no forget of its subject began since its
//! wrapped key was read: a caller takes a [`Ticket`] before reading the
//! wrapped key from the store and hands it to [`DekCache::insert`], and
//! [`DekCache::remove`] (a forget, before and after it erases; an
//! invalidation; a key that no longer opens) moves the subject's epoch on,
//! so an insert with an older ticket hands the key to its caller without
//! caching it. Without this, a read that fetched the wrapped key before a
//! forget and unwrapped it after would put the destroyed key back, and a
//! later Tokenize would seal under it. Epochs are striped by subject hash:
//! a forget of another subject on the same stripe only costs a read its
//! cache entry, never correctness.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use lru::LruCache;
use parking_lot::Mutex;

use crate::crypto::{SubjectHash, SubjectKeys};
use crate::kek::WrappedKey;

/// A subject's unwrapped keys and the wrapped key they were opened from.
/// Tokens sealed under them are stored only while that wrapped key is
/// still the subject's: on a store shared by replicas, a forget and a new
/// key for the subject elsewhere may not have reached this cache yet.
pub struct CachedKeys {
    pub keys: SubjectKeys,
    pub wrapped: WrappedKey,
    /// The DEK's keyed fingerprint (what a forget of the subject records,
    /// see `destroyed`).
    pub fingerprint: [u8; 32],
}

/// Stripes of the per-subject epochs (see the module doc).
const EPOCH_STRIPES: usize = 1024;

/// What the cache looked like before a caller read a subject's wrapped key
/// from the store: [`DekCache::insert`] caches the key only if it is still
/// current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    generation: u64,
    epoch: u64,
}

pub struct DekCache {
    entries: Mutex<LruCache<SubjectHash, Arc<CachedKeys>>>,
    /// Moved on (under the `entries` lock) by every removal of a subject
    /// on its stripe.
    epochs: Box<[AtomicU64]>,
    /// Moved on (under the `entries` lock) by [`DekCache::clear`].
    generation: AtomicU64,
    stats: CacheStats,
    /// Off while a shared store cannot deliver invalidations (its LISTEN
    /// connection is down): then every call fetches and unwraps the key.
    suspended: AtomicBool,
}

/// Counters for metrics and benchmarks.
#[derive(Default, Debug)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub evictions: AtomicU64,
}

impl DekCache {
    pub fn new(capacity: NonZeroUsize) -> Self {
        DekCache {
            entries: Mutex::new(LruCache::new(capacity)),
            epochs: (0..EPOCH_STRIPES).map(|_| AtomicU64::new(0)).collect(),
            generation: AtomicU64::new(0),
            stats: CacheStats::default(),
            suspended: AtomicBool::new(false),
        }
    }

    /// Applies an invalidation from a store shared with other processes.
    pub fn invalidate(&self, invalidation: crate::store::Invalidation) {
        use crate::store::Invalidation;
        match invalidation {
            Invalidation::Subject(subject) => self.remove(&subject),
            Invalidation::Suspend => {
                self.suspended.store(true, Ordering::SeqCst);
                self.clear();
            }
            Invalidation::Resume => {
                self.clear();
                self.suspended.store(false, Ordering::SeqCst);
            }
        }
    }

    pub fn get(&self, subject: &SubjectHash) -> Option<Arc<CachedKeys>> {
        let found = if self.suspended.load(Ordering::SeqCst) {
            None
        } else {
            self.entries.lock().get(subject).cloned()
        };
        let counter = if found.is_some() {
            &self.stats.hits
        } else {
            &self.stats.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    fn epoch(&self, subject: &SubjectHash) -> &AtomicU64 {
        let stripe = u16::from_le_bytes([subject.0[0], subject.0[1]]) as usize % EPOCH_STRIPES;
        &self.epochs[stripe]
    }

    /// Taken before the subject's wrapped key is read from the store.
    pub fn ticket(&self, subject: &SubjectHash) -> Ticket {
        Ticket {
            generation: self.generation.load(Ordering::SeqCst),
            epoch: self.epoch(subject).load(Ordering::SeqCst),
        }
    }

    /// The keys, cached unless the subject was removed (a forget began)
    /// or the cache cleared since `ticket` was taken, or the cache is
    /// suspended: then only the caller uses them.
    pub fn insert(
        &self,
        subject: SubjectHash,
        keys: CachedKeys,
        ticket: Ticket,
    ) -> Arc<CachedKeys> {
        let keys = Arc::new(keys);
        if self.suspended.load(Ordering::SeqCst) {
            return keys;
        }
        let mut entries = self.entries.lock();
        if self.ticket(&subject) != ticket {
            return keys;
        }
        let evicted = entries.push(subject, Arc::clone(&keys));
        drop(entries);
        if matches!(evicted, Some((old, _)) if old != subject) {
            self.stats.evictions.fetch_add(1, Ordering::Relaxed);
        }
        keys
    }

    /// Drops the subject's entry, and refuses every insert of a key read
    /// before this call.
    pub fn remove(&self, subject: &SubjectHash) {
        let mut entries = self.entries.lock();
        self.epoch(subject).fetch_add(1, Ordering::SeqCst);
        entries.pop(subject);
    }

    /// Drops every entry (their keys zeroize once no call uses them), and
    /// refuses every insert of a key read before this call.
    pub fn clear(&self) {
        let mut entries = self.entries.lock();
        self.generation.fetch_add(1, Ordering::SeqCst);
        entries.clear();
    }

    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretKey;

    fn keys() -> CachedKeys {
        CachedKeys {
            keys: SubjectKeys::from_dek(&SecretKey::generate().expect("random")),
            wrapped: WrappedKey {
                kind: crate::kek::KekKind::Local,
                kek_version: 1,
                ciphertext: vec![7; 60],
            },
            fingerprint: [0; 32],
        }
    }

    #[test]
    fn evicts_least_recently_used_and_counts() {
        let cache = DekCache::new(NonZeroUsize::new(2).expect("non-zero"));
        let (a, b, c) = (
            SubjectHash([1; 32]),
            SubjectHash([2; 32]),
            SubjectHash([3; 32]),
        );
        cache.insert(a, keys(), cache.ticket(&a));
        cache.insert(b, keys(), cache.ticket(&b));
        assert!(cache.get(&a).is_some());
        cache.insert(c, keys(), cache.ticket(&c));
        assert!(cache.get(&b).is_none(), "b was least recently used");
        assert!(cache.get(&a).is_some() && cache.get(&c).is_some());
        assert_eq!(cache.stats().evictions.load(Ordering::Relaxed), 1);
        assert_eq!(cache.stats().misses.load(Ordering::Relaxed), 1);
        cache.clear();
        assert!(cache.is_empty());
    }

    #[test]
    fn a_suspended_cache_holds_nothing_until_resumed() {
        use crate::store::Invalidation;
        let cache = DekCache::new(NonZeroUsize::new(4).expect("non-zero"));
        let (a, b) = (SubjectHash([1; 32]), SubjectHash([2; 32]));
        cache.insert(a, keys(), cache.ticket(&a));
        cache.insert(b, keys(), cache.ticket(&b));
        cache.invalidate(Invalidation::Subject(a));
        assert!(cache.get(&a).is_none() && cache.get(&b).is_some());
        cache.invalidate(Invalidation::Suspend);
        assert!(cache.is_empty());
        cache.insert(a, keys(), cache.ticket(&a));
        assert!(cache.get(&a).is_none(), "nothing is cached while suspended");
        cache.invalidate(Invalidation::Resume);
        cache.insert(a, keys(), cache.ticket(&a));
        assert!(cache.get(&a).is_some());
    }

    #[test]
    fn evicted_keys_are_dropped_when_unused() {
        let cache = DekCache::new(NonZeroUsize::new(1).expect("non-zero"));
        let (a, b) = (SubjectHash([1; 32]), SubjectHash([2; 32]));
        let held = cache.insert(a, keys(), cache.ticket(&a));
        let weak = Arc::downgrade(&held);
        drop(held);
        cache.insert(b, keys(), cache.ticket(&b));
        // No strong reference is left, so SubjectKeys ran its zeroizing drop.
        assert!(weak.upgrade().is_none());
    }

    /// A key read before its subject was removed (a forget began) or the
    /// cache was cleared is handed to its caller but never cached; one
    /// read after is cached.
    #[test]
    fn a_key_read_before_a_removal_is_not_cached() {
        let cache = DekCache::new(NonZeroUsize::new(4).expect("non-zero"));
        let (a, b) = (SubjectHash([1; 32]), SubjectHash([2; 32]));
        let before_forget = cache.ticket(&a);
        let other_subject = cache.ticket(&b);
        cache.remove(&a);
        let handed = cache.insert(a, keys(), before_forget);
        assert!(cache.get(&a).is_none(), "a key read before the forget");
        drop(handed);
        cache.insert(b, keys(), other_subject);
        assert!(cache.get(&b).is_some(), "another stripe is not affected");
        cache.insert(a, keys(), cache.ticket(&a));
        assert!(cache.get(&a).is_some(), "a key read after the forget");

        let before_clear = cache.ticket(&b);
        cache.clear();
        cache.insert(b, keys(), before_clear);
        assert!(cache.is_empty(), "a key read before the cache was cleared");
    }
}
