//! What is learned of one actor (and, pooled, of one principal): values
//! and distinct subjects per window, values per trailing hour and per day,
//! the hours and weekdays it is active, the purposes (as hashes) and
//! formats it uses, full versus masked reveals; and the window in
//! progress. It holds counts and hashes only: never a value, a token, a
//! subject id or a purpose string.
//!
//! A window is learned a horizon (12 windows: an hour at the default
//! window) after it ends, and a day when it ends; a
//! window (or a day) that raised an alert is not learned, nor are the
//! windows of the horizon before an alert, so an incident, or a drip that
//! grows slowly, does not become the actor's normal.

use std::collections::{BTreeMap, HashSet, VecDeque};

use serde::{Deserialize, Serialize};

use super::hist::Histogram;

/// At most this many distinct subjects are held for the window in progress.
const MAX_WINDOW_SUBJECTS: usize = 100_000;
/// At most this many purposes and formats are remembered per actor.
const MAX_NAMES: usize = 256;
const DAY: i64 = 86_400;
const HOUR: i64 = 3_600;
/// The drip horizon and the learning delay, in windows: an hour of the
/// default 300-second windows.
pub const HORIZON_WINDOWS: i64 = 12;

/// The learned part (persisted).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub active_windows: u64,
    pub days: u64,
    pub hours: [u64; 24],
    pub weekdays: [u64; 7],
    pub volume: Histogram,
    pub breadth: Histogram,
    pub hourly: Histogram,
    pub daily: Histogram,
    pub purposes: BTreeMap<u64, u64>,
    pub formats: BTreeMap<String, u64>,
    pub full: u64,
    pub masked: u64,
}

impl Baseline {
    pub fn knows_purpose(&self, purpose: u64) -> bool {
        self.purposes.contains_key(&purpose)
    }

    pub fn knows_format(&self, format: &str) -> bool {
        self.formats.contains_key(format)
    }

    pub fn learn_purpose(&mut self, purpose: u64) {
        if self.purposes.len() < MAX_NAMES || self.purposes.contains_key(&purpose) {
            *self.purposes.entry(purpose).or_default() += 1;
        }
    }

    pub fn learn_format(&mut self, format: &str) {
        if self.formats.len() < MAX_NAMES || self.formats.contains_key(format) {
            *self.formats.entry(format.to_string()).or_default() += 1;
        }
    }

    /// Whether the actor was active at `hour` or the hours either side.
    pub fn worked_near(&self, hour: usize) -> bool {
        [hour + 23, hour, hour + 1]
            .iter()
            .any(|h| self.hours[h % 24] > 0)
    }

    /// The hours it has worked, as `09-17`-style ranges, for a reason line.
    pub fn hours_worked(&self) -> String {
        let mut ranges = Vec::new();
        let mut h = 0;
        while h < 24 {
            if self.hours[h] == 0 {
                h += 1;
                continue;
            }
            let start = h;
            while h < 24 && self.hours[h] > 0 {
                h += 1;
            }
            ranges.push(format!("{start:02}-{h:02}"));
        }
        if ranges.is_empty() {
            "none".into()
        } else {
            ranges.join(",")
        }
    }
}

/// One actor: its baseline and the window, hour and day in progress.
#[derive(Debug, Clone, Default)]
pub struct ActorState {
    pub base: Baseline,
    pub window: i64,
    pub values: u64,
    pub subjects: HashSet<u64>,
    pub full: u64,
    pub flagged: bool,
    /// Values of the horizon's windows, `(window start, values)`.
    pub recent: VecDeque<(i64, u64)>,
    pub day: i64,
    pub day_values: u64,
    pub day_flagged: bool,
    /// When each detector last fired for this actor.
    pub fired: BTreeMap<&'static str, i64>,
    /// Windows that ended within the horizon, not learned yet.
    pending: VecDeque<Pending>,
}

/// A window that ended, waiting to be learned.
#[derive(Debug, Clone)]
struct Pending {
    window: i64,
    values: u64,
    subjects: u64,
    full: u64,
    hour_sum: u64,
}

/// What a folded window gives the principal's pooled (peer) baseline.
pub struct Folded {
    pub values: u64,
    pub subjects: u64,
}

impl ActorState {
    /// Moves the state to `ts`: closes the window and the day that ended,
    /// and learns the windows that ended more than a horizon ago.
    pub fn roll(&mut self, ts: i64, window_seconds: i64) -> Vec<Folded> {
        let window = ts - ts.rem_euclid(window_seconds);
        let horizon = window_seconds * HORIZON_WINDOWS;
        if window != self.window {
            if self.values > 0 && !self.flagged {
                self.pending.push_back(Pending {
                    window: self.window,
                    values: self.values,
                    subjects: self.subjects.len() as u64,
                    full: self.full,
                    hour_sum: self.horizon_sum(self.window, horizon),
                });
            }
            self.window = window;
            self.values = 0;
            self.full = 0;
            self.subjects.clear();
            self.flagged = false;
        }
        let mut folded = Vec::new();
        while self
            .pending
            .front()
            .is_some_and(|p| p.window <= ts - horizon)
        {
            let Some(p) = self.pending.pop_front() else {
                break;
            };
            let b = &mut self.base;
            b.active_windows += 1;
            b.volume.add(p.values);
            b.breadth.add(p.subjects);
            b.hourly.add(p.hour_sum);
            let hour = (p.window.rem_euclid(DAY) / HOUR) as usize;
            b.hours[hour] += 1;
            // 1970-01-01 was a Thursday; 0 is Monday.
            b.weekdays[((p.window.div_euclid(DAY) + 3).rem_euclid(7)) as usize] += 1;
            b.full += p.full;
            b.masked += p.values - p.full.min(p.values);
            folded.push(Folded {
                values: p.values,
                subjects: p.subjects,
            });
        }
        let day = ts.div_euclid(DAY);
        if day != self.day {
            if self.day_values > 0 && !self.day_flagged {
                self.base.days += 1;
                self.base.daily.add(self.day_values);
            }
            self.day = day;
            self.day_values = 0;
            self.day_flagged = false;
        }
        while self.recent.front().is_some_and(|(w, _)| *w <= ts - horizon) {
            self.recent.pop_front();
        }
        folded
    }

    /// An alert was raised: the window, the day and the hour before it
    /// are not learned.
    pub fn flag(&mut self) {
        self.flagged = true;
        self.day_flagged = true;
        self.pending.clear();
    }

    /// Counts a reveal of `values` values (`full` of them in full) of
    /// `subjects` into the window in progress.
    pub fn add(&mut self, values: u64, full: u64, subjects: &[u64]) {
        self.values += values;
        self.full += full;
        self.day_values += values;
        for s in subjects {
            if self.subjects.len() >= MAX_WINDOW_SUBJECTS {
                break;
            }
            self.subjects.insert(*s);
        }
        match self.recent.back_mut() {
            Some((w, v)) if *w == self.window => *v += values,
            _ => self.recent.push_back((self.window, values)),
        }
    }

    /// Values in the `horizon` seconds up to the end of `window`.
    pub fn horizon_sum(&self, window: i64, horizon: i64) -> u64 {
        self.recent
            .iter()
            .filter(|(w, _)| *w > window - horizon && *w <= window)
            .map(|(_, v)| v)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_is_learned_an_hour_after_it_ends_unless_flagged() {
        let mut a = ActorState::default();
        let nine = 9 * HOUR;
        a.roll(nine, 300);
        a.add(3, 1, &[1, 2]);
        a.roll(nine + 10, 300);
        a.add(1, 0, &[2]);
        assert!(a.roll(nine + 300, 300).is_empty(), "ended, not learned yet");
        assert_eq!(a.base.active_windows, 0);
        assert_eq!(a.roll(nine + HOUR, 300).len(), 1);
        assert_eq!(a.base.active_windows, 1);
        assert_eq!(a.base.volume.quantile(1.0), 4);
        assert_eq!(a.base.breadth.quantile(1.0), 2);
        assert_eq!(a.base.hours[9], 1);
        assert_eq!((a.base.full, a.base.masked), (1, 3));
        assert!(a.base.worked_near(10) && !a.base.worked_near(11));
        assert_eq!(a.base.hours_worked(), "09-10");
        // A window, then an alert: neither it nor the hour before is learned.
        a.add(2, 0, &[7]);
        a.roll(nine + HOUR + 300, 300);
        a.add(500, 0, &[7]);
        a.flag();
        a.roll(nine + 3 * HOUR, 300);
        assert_eq!(a.base.active_windows, 1);
        a.add(1, 0, &[7]);
        a.roll(nine + DAY, 300);
        assert_eq!(a.base.days, 0, "the flagged day is not learned");
        a.add(1, 0, &[7]);
        a.roll(nine + 2 * DAY, 300);
        assert_eq!(a.base.days, 1);
        assert_eq!(
            a.horizon_sum(nine + 2 * DAY, HOUR),
            0,
            "the old hour is gone"
        );
    }
}
