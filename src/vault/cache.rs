//! The bounded cache of unwrapped subject keys, so the KEK provider is off
//! the hot path for known subjects. Entries are `Arc<CachedKeys>`; the
//! keys zeroize when the last reference drops, i.e. on eviction (once no
//! call in flight still uses them) and on [`DekCache::clear`] at shutdown.

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
}

pub struct DekCache {
    entries: Mutex<LruCache<SubjectHash, Arc<CachedKeys>>>,
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

    pub fn insert(
        &self,
        subject: SubjectHash,
        keys: SubjectKeys,
        wrapped: WrappedKey,
    ) -> Arc<CachedKeys> {
        let keys = Arc::new(CachedKeys { keys, wrapped });
        if self.suspended.load(Ordering::SeqCst) {
            return keys;
        }
        let evicted = self.entries.lock().push(subject, Arc::clone(&keys));
        if matches!(evicted, Some((old, _)) if old != subject) {
            self.stats.evictions.fetch_add(1, Ordering::Relaxed);
        }
        keys
    }

    pub fn remove(&self, subject: &SubjectHash) {
        self.entries.lock().pop(subject);
    }

    /// Drops every entry (their keys zeroize once no call uses them).
    pub fn clear(&self) {
        self.entries.lock().clear();
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

    fn keys() -> SubjectKeys {
        SubjectKeys::from_dek(&SecretKey::generate().expect("random"))
    }

    fn wrapped() -> WrappedKey {
        WrappedKey {
            kind: crate::kek::KekKind::Local,
            kek_version: 1,
            ciphertext: vec![7; 60],
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
        cache.insert(a, keys(), wrapped());
        cache.insert(b, keys(), wrapped());
        assert!(cache.get(&a).is_some());
        cache.insert(c, keys(), wrapped());
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
        cache.insert(a, keys(), wrapped());
        cache.insert(b, keys(), wrapped());
        cache.invalidate(Invalidation::Subject(a));
        assert!(cache.get(&a).is_none() && cache.get(&b).is_some());
        cache.invalidate(Invalidation::Suspend);
        assert!(cache.is_empty());
        cache.insert(a, keys(), wrapped());
        assert!(cache.get(&a).is_none(), "nothing is cached while suspended");
        cache.invalidate(Invalidation::Resume);
        cache.insert(a, keys(), wrapped());
        assert!(cache.get(&a).is_some());
    }

    #[test]
    fn evicted_keys_are_dropped_when_unused() {
        let cache = DekCache::new(NonZeroUsize::new(1).expect("non-zero"));
        let held = cache.insert(SubjectHash([1; 32]), keys(), wrapped());
        let weak = Arc::downgrade(&held);
        drop(held);
        cache.insert(SubjectHash([2; 32]), keys(), wrapped());
        // No strong reference is left, so SubjectKeys ran its zeroizing drop.
        assert!(weak.upgrade().is_none());
    }
}
