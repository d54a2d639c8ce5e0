//! Detokenize rate limits and the alerts they raise: a token bucket per
//! principal and one per (principal, actor), counting revealed values, not
//! calls. Calls without an actor under a per-actor limit share one "no
//! actor" bucket of the principal, so omitting the actor token does not
//! escape that limit.
//!
//! Buckets live in this process. With [`RateLimiter::with_shared`] each
//! limit is also a fixed one-minute window counter in the store (shared by
//! the replicas on PostgreSQL, persisted on RocksDB), so replicas together
//! and a restarted process stay within it: in each clock minute (from the
//! epoch) at most the limit is revealed, whatever the number of replicas;
//! a burst across a minute boundary can reveal up to twice the limit in a
//! few seconds. A call refused by the shared window may already have
//! taken from this process's bucket (it counts against the caller).
//!
//! It owns the buckets and the alert counters; it never sees a value, a
//! token or a subject id, so an [`Alert`] (and its log line) cannot hold one.
//! Shared counter keys hold the principal's name and a keyed hash of the
//! actor, never the actor's name.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use super::Principal;
use crate::crypto::SecretKey;
use crate::rpc::Rpc;
use crate::store::counters::{window_start, Charge, Charged, WindowCounters};
use crate::store::StoreError;

/// The window of the shared counters, in seconds: the limits are per
/// minute.
const SHARED_WINDOW_SECONDS: i64 = 60;

/// Above this many actor buckets, full ones (which are the same as a new
/// bucket) are dropped, so a stream of made-up actor names cannot grow the
/// map without bound.
const MAX_ACTOR_BUCKETS: usize = 100_000;

/// The log target of alerts, for routing them to an alerting pipeline.
pub const ALERT_TARGET: &str = "tokenvault::alert";

/// What went over which limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertKind {
    /// Use passed `alert_at_percent` of a limit; the call was served.
    RateWarning,
    /// The call would have gone over a limit and was refused
    /// (RESOURCE_EXHAUSTED).
    RateExceeded,
}

impl AlertKind {
    pub fn name(self) -> &'static str {
        match self {
            AlertKind::RateWarning => "rate_warning",
            AlertKind::RateExceeded => "rate_exceeded",
        }
    }
}

/// Whose limit: the principal's own, or one actor's behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Principal,
    Actor,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::Principal => "principal",
            Scope::Actor => "actor",
        }
    }
}

/// An anomaly to log, count and audit. Holds names and counts only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub kind: AlertKind,
    pub scope: Scope,
    pub principal: Arc<str>,
    /// The actor (JWT `sub`) the call was made for, if any.
    pub actor: Option<Arc<str>>,
    pub rpc: Rpc,
    /// Values the call asked to reveal.
    pub values: u64,
    /// The limit in values per minute.
    pub limit: u32,
}

impl Alert {
    /// Logs the alert at WARN on [`ALERT_TARGET`] and counts it.
    pub fn raise(&self) {
        let counter = match self.kind {
            AlertKind::RateWarning => &ALERTS.rate_warning,
            AlertKind::RateExceeded => &ALERTS.rate_exceeded,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            target: ALERT_TARGET,
            alert = self.kind.name(),
            scope = self.scope.name(),
            principal = %self.principal,
            actor = self.actor.as_deref().unwrap_or("-"),
            rpc = self.rpc.name(),
            values = self.values,
            limit_per_minute = self.limit,
            "detokenize rate alert"
        );
    }
}

/// Alerts raised since start, for the metrics endpoint (another issue) and
/// the admin stats.
#[derive(Debug, Default)]
pub struct AlertCounters {
    pub rate_warning: AtomicU64,
    pub rate_exceeded: AtomicU64,
}

/// The process's alert counters.
pub static ALERTS: AlertCounters = AlertCounters {
    rate_warning: AtomicU64::new(0),
    rate_exceeded: AtomicU64::new(0),
};

/// A token bucket of `capacity` values that refills at `capacity` a
/// minute: a burst of a minute's allowance, then a steady rate.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: u32,
    level: f64,
    updated: Instant,
}

impl TokenBucket {
    pub fn new(capacity: u32, now: Instant) -> Self {
        TokenBucket {
            capacity,
            level: f64::from(capacity),
            updated: now,
        }
    }

    /// Brings the level up to `now`; a changed capacity (a policy reload)
    /// applies from here on.
    fn refill(&mut self, capacity: u32, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.capacity = capacity;
        self.level = (self.level + elapsed * f64::from(capacity) / 60.0).min(f64::from(capacity));
        self.updated = now;
    }

    fn has(&self, values: u64) -> bool {
        self.level + 1e-9 >= values as f64
    }

    /// Takes `values` (the caller checked [`Self::has`]) and says whether
    /// the level crossed the warning line of `alert_at_percent` used.
    fn take(&mut self, values: u64, alert_at_percent: u8) -> bool {
        let line = f64::from(self.capacity) * f64::from(100 - alert_at_percent.min(100)) / 100.0;
        let before = self.level;
        self.level -= values as f64;
        before > line && self.level <= line
    }

    fn is_full(&self) -> bool {
        self.level >= f64::from(self.capacity)
    }

    /// The values left now (for tests and diagnostics).
    pub fn level(&self) -> f64 {
        self.level
    }
}

/// A bucket of one actor behind one principal: (principal, actor); None
/// is the principal's one bucket of calls without an actor.
type ActorKey = (Arc<str>, Option<Arc<str>>);

/// The store's window counters and the key actor names are hashed with.
struct Shared {
    counters: Arc<dyn WindowCounters>,
    key: SecretKey,
}

/// Why the shared windows refused a call.
#[derive(Debug)]
pub enum SharedRefusal {
    /// Over a limit: the alert (raised) to audit.
    Limited(Alert),
    /// The counters could not be read: nothing is revealed.
    Unavailable(StoreError),
}

/// The buckets of every principal and actor, shared by all calls. A policy
/// reload keeps them: a principal's use in the last minute still counts
/// under its new limit.
#[derive(Default)]
pub struct RateLimiter {
    principals: Mutex<HashMap<Arc<str>, TokenBucket>>,
    actors: Mutex<HashMap<ActorKey, TokenBucket>>,
    shared: Option<Shared>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("shared", &self.shared.is_some())
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    pub fn new() -> Self {
        RateLimiter::default()
    }

    /// Buckets in this process, and every limit also kept as a one-minute
    /// window in `counters` (see the module doc); `key` hashes actor names.
    pub fn with_shared(counters: Arc<dyn WindowCounters>, key: SecretKey) -> Self {
        RateLimiter {
            shared: Some(Shared { counters, key }),
            ..RateLimiter::default()
        }
    }

    /// Charges `values` to the shared windows of the caller's limits
    /// (after [`RateLimiter::admit`] let the call through); all or none.
    pub async fn admit_shared(
        &self,
        principal: &Principal,
        rpc: Rpc,
        values: u64,
    ) -> Result<(), SharedRefusal> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        let policy = principal.policy();
        let now = crate::clock::unix_now();
        let window = window_start(now, SHARED_WINDOW_SECONDS);
        let actor = principal.actor.as_ref().map(|a| Arc::clone(&a.name));
        let mut charges = Vec::new();
        let mut scopes = Vec::new();
        if let Some(limit) = policy.max_detokenize_per_minute {
            charges.push(Charge {
                key: format!("dt/p/{}", principal.name),
                window_start: window,
                window_seconds: SHARED_WINDOW_SECONDS,
                amount: values,
                limit: u64::from(limit),
            });
            scopes.push((Scope::Principal, limit));
        }
        if let Some(limit) = policy.max_detokenize_per_minute_per_actor {
            let hashed = match &actor {
                Some(name) => hex::encode(&shared.key.mac(&[b"actor", name.as_bytes()])[..16]),
                None => "-".to_string(),
            };
            charges.push(Charge {
                key: format!("dt/a/{hashed}/{}", principal.name),
                window_start: window,
                window_seconds: SHARED_WINDOW_SECONDS,
                amount: values,
                limit: u64::from(limit),
            });
            scopes.push((Scope::Actor, limit));
        }
        if values == 0 || charges.is_empty() {
            return Ok(());
        }
        match shared.counters.charge(&charges, now).await {
            Ok(Charged::Admitted(_)) => Ok(()),
            Ok(Charged::Refused { index, .. }) => {
                let (scope, limit) = scopes[index];
                let refused = Alert {
                    kind: AlertKind::RateExceeded,
                    scope,
                    principal: Arc::clone(&principal.name),
                    actor,
                    rpc,
                    values,
                    limit,
                };
                refused.raise();
                Err(SharedRefusal::Limited(refused))
            }
            Err(error) => Err(SharedRefusal::Unavailable(error)),
        }
    }

    /// Charges `values` revealed values of `rpc` to the principal and to
    /// its actor. Either every applicable bucket has room and all are
    /// charged, or none is and the call is refused with a `RateExceeded`
    /// alert. Alerts are raised (logged, counted) here; the caller audits
    /// them. Ok holds the warnings of a served call.
    pub fn admit(&self, principal: &Principal, rpc: Rpc, values: u64) -> Result<Vec<Alert>, Alert> {
        self.admit_at(principal, rpc, values, Instant::now())
    }

    pub fn admit_at(
        &self,
        principal: &Principal,
        rpc: Rpc,
        values: u64,
        now: Instant,
    ) -> Result<Vec<Alert>, Alert> {
        let policy = principal.policy();
        let actor = principal.actor.as_ref().map(|a| Arc::clone(&a.name));
        let alert = |kind, scope, limit| Alert {
            kind,
            scope,
            principal: Arc::clone(&principal.name),
            actor: actor.clone(),
            rpc,
            values,
            limit,
        };
        let principal_limit = policy.max_detokenize_per_minute;
        let actor_limit = policy
            .max_detokenize_per_minute_per_actor
            .map(|limit| (limit, actor.clone()));
        if values == 0 || (principal_limit.is_none() && actor_limit.is_none()) {
            return Ok(Vec::new());
        }

        // One lock order (principals, then actors) everywhere.
        let mut principals = self.principals.lock();
        let mut actors = self.actors.lock();
        let mut principal_bucket = principal_limit.map(|limit| {
            let bucket = principals
                .entry(Arc::clone(&principal.name))
                .or_insert_with(|| TokenBucket::new(limit, now));
            bucket.refill(limit, now);
            (bucket, limit)
        });
        if actors.len() > MAX_ACTOR_BUCKETS {
            actors.retain(|_, bucket| !bucket.is_full());
        }
        let mut actor_bucket = actor_limit.map(|(limit, actor)| {
            let bucket = actors
                .entry((Arc::clone(&principal.name), actor))
                .or_insert_with(|| TokenBucket::new(limit, now));
            bucket.refill(limit, now);
            (bucket, limit)
        });

        for (bucket, limit, scope) in [
            (principal_bucket.as_ref(), Scope::Principal),
            (actor_bucket.as_ref(), Scope::Actor),
        ]
        .into_iter()
        .filter_map(|(b, scope)| b.map(|(bucket, limit)| (bucket, *limit, scope)))
        {
            if !bucket.has(values) {
                let refused = alert(AlertKind::RateExceeded, scope, limit);
                refused.raise();
                return Err(refused);
            }
        }

        let alert_at = policy.alert_at_percent;
        let mut warnings = Vec::new();
        for (taken, scope) in [
            (principal_bucket.as_mut(), Scope::Principal),
            (actor_bucket.as_mut(), Scope::Actor),
        ] {
            if let Some((bucket, limit)) = taken {
                if bucket.take(values, alert_at) {
                    let warning = alert(AlertKind::RateWarning, scope, *limit);
                    warning.raise();
                    warnings.push(warning);
                }
            }
        }
        Ok(warnings)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::policy::{Actor, Policy};

    fn limited(per_minute: Option<u32>, per_actor: Option<u32>) -> Principal {
        let mut policy = Policy::allow_all("billing");
        policy.max_detokenize_per_minute = per_minute;
        policy.max_detokenize_per_minute_per_actor = per_actor;
        Principal::with_policy(Arc::new(policy))
    }

    fn as_actor(principal: &Principal, name: &str) -> Principal {
        principal.clone().with_actor(Actor {
            name: name.into(),
            amr: Vec::new(),
            client: None,
        })
    }

    #[test]
    fn bucket_refuses_the_value_over_the_limit_and_refills() {
        let limiter = RateLimiter::new();
        let billing = limited(Some(100), None);
        let start = Instant::now();
        assert!(limiter
            .admit_at(&billing, Rpc::Detokenize, 60, start)
            .is_ok());
        assert!(limiter
            .admit_at(&billing, Rpc::RestoreText, 40, start)
            .is_ok());
        let refused = limiter
            .admit_at(&billing, Rpc::Detokenize, 1, start)
            .unwrap_err();
        assert_eq!(refused.kind, AlertKind::RateExceeded);
        assert_eq!((refused.limit, refused.values), (100, 1));
        // 100 a minute: 6 seconds bring back 10 values.
        let later = start + Duration::from_secs(6);
        assert!(limiter
            .admit_at(&billing, Rpc::Detokenize, 10, later)
            .is_ok());
        assert!(limiter
            .admit_at(&billing, Rpc::Detokenize, 1, later)
            .is_err());
    }

    #[test]
    fn a_refused_call_charges_nothing_and_is_counted() {
        let limiter = RateLimiter::new();
        let billing = limited(Some(10), None);
        let now = Instant::now();
        let before = ALERTS.rate_exceeded.load(Ordering::Relaxed);
        assert!(limiter
            .admit_at(&billing, Rpc::Detokenize, 11, now)
            .is_err());
        assert!(ALERTS.rate_exceeded.load(Ordering::Relaxed) > before);
        assert!(limiter.admit_at(&billing, Rpc::Detokenize, 10, now).is_ok());
    }

    #[test]
    fn warning_once_when_crossing_alert_at_percent() {
        let limiter = RateLimiter::new();
        let billing = limited(Some(100), None);
        let now = Instant::now();
        let quiet = limiter.admit_at(&billing, Rpc::Detokenize, 79, now);
        assert_eq!(quiet, Ok(Vec::new()));
        let warned = limiter
            .admit_at(&billing, Rpc::Detokenize, 1, now)
            .expect("served");
        assert_eq!(warned.len(), 1);
        assert_eq!(warned[0].kind, AlertKind::RateWarning);
        let after = limiter.admit_at(&billing, Rpc::Detokenize, 1, now);
        assert_eq!(after, Ok(Vec::new()), "warned once per crossing");
    }

    #[test]
    fn per_actor_limit_stops_one_actor_only() {
        let limiter = RateLimiter::new();
        let billing = limited(Some(1000), Some(5));
        let (alice, bob) = (as_actor(&billing, "alice"), as_actor(&billing, "bob"));
        let now = Instant::now();
        assert!(limiter.admit_at(&alice, Rpc::Detokenize, 5, now).is_ok());
        let refused = limiter
            .admit_at(&alice, Rpc::Detokenize, 1, now)
            .unwrap_err();
        assert_eq!(
            (refused.scope, refused.actor.as_deref()),
            (Scope::Actor, Some("alice"))
        );
        assert!(limiter.admit_at(&bob, Rpc::Detokenize, 5, now).is_ok());
        // Calls without an actor share one "no actor" bucket.
        assert!(limiter.admit_at(&billing, Rpc::Detokenize, 5, now).is_ok());
        let refused = limiter
            .admit_at(&billing, Rpc::Detokenize, 1, now)
            .unwrap_err();
        assert_eq!((refused.scope, refused.actor), (Scope::Actor, None));
        assert!(limiter.admit_at(&bob, Rpc::Detokenize, 0, now).is_ok());
    }

    #[test]
    fn unlimited_principals_are_always_admitted() {
        let limiter = RateLimiter::new();
        let admin = limited(None, None);
        assert!(limiter
            .admit_at(&admin, Rpc::Detokenize, 1_000_000, Instant::now())
            .is_ok());
    }
}
