//! A small histogram of counts (values or distinct subjects per window,
//! per hour, per day) with a high-quantile estimate: exact buckets up to
//! 31, then buckets 5% wider each. It owns counts only.

use serde::{Deserialize, Serialize};

const EXACT: u64 = 32;
const GROWTH: f64 = 1.05;

/// Counts of observations by bucket.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    buckets: Vec<u64>,
    total: u64,
}

fn bucket_of(value: u64) -> usize {
    if value < EXACT {
        return value as usize;
    }
    let steps = ((value as f64) / (EXACT as f64)).ln() / GROWTH.ln();
    EXACT as usize + steps.floor() as usize
}

/// The largest value bucket `index` holds.
fn upper_of(index: usize) -> u64 {
    if (index as u64) < EXACT {
        return index as u64;
    }
    let steps = (index - EXACT as usize + 1) as i32;
    ((EXACT as f64) * GROWTH.powi(steps)).ceil() as u64
}

impl Histogram {
    pub fn add(&mut self, value: u64) {
        let index = bucket_of(value);
        if self.buckets.len() <= index {
            self.buckets.resize(index + 1, 0);
        }
        self.buckets[index] += 1;
        self.total += 1;
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// The smallest bucket bound at or under which a share `q` of the
    /// observations lie; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let wanted = ((self.total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (index, count) in self.buckets.iter().enumerate() {
            seen += count;
            if seen >= wanted {
                return upper_of(index);
            }
        }
        upper_of(self.buckets.len().saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_exact_for_small_counts_and_bounded_above() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile(0.99), 0);
        for v in 1..=100 {
            h.add(v % 5);
        }
        assert_eq!(h.quantile(0.995), 4);
        assert_eq!(h.quantile(0.5), 2);
        h.add(1000);
        let top = h.quantile(1.0);
        assert!((1000..=1050).contains(&top), "{top}");
        for v in [32, 33, 39, 40, 50, 64, 100, 5000] {
            assert!(upper_of(bucket_of(v)) >= v, "{v}");
        }
    }
}
