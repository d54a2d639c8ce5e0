//! Fixed-window counters for rate limits and quotas: how much of a limit
//! a key has used in the current window, kept where every replica and a
//! restarted process see it (the RocksDB store's own column, or a
//! PostgreSQL table shared by the replicas).
//!
//! It owns the counting only: callers decide the keys, windows and limits.
//! Keys are built by the caller from principal names and keyed hashes
//! (never a subject id, actor name or value): they are stored as given.

use std::collections::HashMap;

use async_trait::async_trait;
use parking_lot::Mutex;

use super::StoreError;

/// One counter to charge: `amount` more in the window that starts at
/// `window_start` (unix seconds), refused if that would pass `limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub key: String,
    pub window_start: i64,
    /// How long the window lasts, in seconds (old windows are dropped
    /// once they are over).
    pub window_seconds: i64,
    pub amount: u64,
    pub limit: u64,
}

/// What a charge found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Charged {
    /// Every counter had room and was charged; each one's use after the
    /// charge, in the order given.
    Admitted(Vec<u64>),
    /// Nothing was charged: the charge at this position would have gone
    /// over its limit; its use before the charge.
    Refused { index: usize, used: u64 },
}

/// Counters of the current windows. A charge is atomic over its keys:
/// all are charged, or none.
#[async_trait]
pub trait WindowCounters: Send + Sync + 'static {
    async fn charge(&self, charges: &[Charge], now: i64) -> Result<Charged, StoreError>;
}

/// Charges `charges` against `used` (the counters' current values, same
/// order): the shared decision of every implementation.
pub fn decide(charges: &[Charge], used: &[u64]) -> Charged {
    for (index, (charge, &used)) in charges.iter().zip(used).enumerate() {
        if used.saturating_add(charge.amount) > charge.limit {
            return Charged::Refused { index, used };
        }
    }
    Charged::Admitted(
        charges
            .iter()
            .zip(used)
            .map(|(charge, used)| used.saturating_add(charge.amount))
            .collect(),
    )
}

/// Counters in this process only: for vaults assembled by tests. A
/// restart forgets them.
#[derive(Debug, Default)]
pub struct MemoryCounters {
    windows: Mutex<HashMap<(String, i64), (u64, i64)>>,
}

impl MemoryCounters {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl WindowCounters for MemoryCounters {
    async fn charge(&self, charges: &[Charge], now: i64) -> Result<Charged, StoreError> {
        let mut windows = self.windows.lock();
        windows.retain(|_, (_, ends)| *ends > now);
        let used: Vec<u64> = charges
            .iter()
            .map(|c| {
                windows
                    .get(&(c.key.clone(), c.window_start))
                    .map_or(0, |(used, _)| *used)
            })
            .collect();
        let decided = decide(charges, &used);
        if let Charged::Admitted(after) = &decided {
            for (charge, &after) in charges.iter().zip(after) {
                windows.insert(
                    (charge.key.clone(), charge.window_start),
                    (after, charge.window_start + charge.window_seconds),
                );
            }
        }
        Ok(decided)
    }
}

/// The start of the window of `window_seconds` that `now` is in.
pub fn window_start(now: i64, window_seconds: i64) -> i64 {
    let window = window_seconds.max(1);
    now - now.rem_euclid(window)
}

/// What every implementation must do, run by each one's tests: a charge
/// over any of its limits charges none of its counters, and a window that
/// is over starts again from zero.
#[cfg(test)]
pub(crate) async fn a_charge_over_any_limit_charges_none_in(counters: &dyn WindowCounters) {
    let charge = |key: &str, amount: u64, limit: u64| Charge {
        key: key.into(),
        window_start: 0,
        window_seconds: 60,
        amount,
        limit,
    };
    let both = [charge("a", 60, 100), charge("b", 60, 70)];
    assert_eq!(
        counters.charge(&both, 1).await.expect("charge"),
        Charged::Admitted(vec![60, 60])
    );
    assert_eq!(
        counters.charge(&both, 2).await.expect("charge"),
        Charged::Refused { index: 0, used: 60 }
    );
    assert_eq!(
        counters
            .charge(&[charge("a", 40, 100)], 3)
            .await
            .expect("charge"),
        Charged::Admitted(vec![100])
    );
    // The window is over: a new one starts empty.
    let next = Charge {
        window_start: 60,
        ..charge("a", 100, 100)
    };
    assert_eq!(
        counters.charge(&[next], 61).await.expect("charge"),
        Charged::Admitted(vec![100])
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_charge_over_any_limit_charges_none() {
        a_charge_over_any_limit_charges_none_in(&MemoryCounters::new()).await;
    }

    #[test]
    fn windows_start_on_multiples_of_their_length() {
        assert_eq!(window_start(119, 60), 60);
        assert_eq!(window_start(120, 60), 120);
        assert_eq!(window_start(5, 86_400), 0);
    }
}
