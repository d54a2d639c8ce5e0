//! The detectors over the baselines: each reveal event is counted into its
//! actor's window and checked against what that actor (or, in warm-up,
//! its principal's other actors) usually does. A finding names its
//! detector, a score (how far over the usual; 1 is the line) and a
//! one-line reason with counts only. It decides nothing about the
//! response; that is the caller's.

use std::collections::HashMap;
use std::sync::Arc;

use super::baseline::{ActorState, Baseline, HORIZON_WINDOWS};
use super::hist::Histogram;
use super::{Detector, Event, Finding};
use crate::config::{AnomalyConfig, AnomalyThresholds};

const HOUR: i64 = 3_600;
const DAY: i64 = 86_400;
/// A principal's pooled windows needed before warm-up actors are compared
/// with it.
const MIN_PEER_WINDOWS: u64 = 100;
/// The usual high: this share of an actor's windows are at or under it.
const USUAL: f64 = 0.995;
/// `off_hours` fires at most once in this many seconds per actor.
const OFF_HOURS_COOLDOWN: i64 = 12 * HOUR;
const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// What a principal's actors do, pooled.
#[derive(Debug, Clone, Default)]
pub struct PrincipalState {
    pub volume: Histogram,
    pub breadth: Histogram,
    pub known: Baseline,
}

/// The key of an actor: (principal, actor or None for calls without one).
pub type ActorKey = (Arc<str>, Option<Arc<str>>);

/// Every actor's and principal's state, and the thresholds.
#[derive(Debug)]
pub struct Engine {
    config: AnomalyConfig,
    window: i64,
    thresholds: HashMap<Arc<str>, AnomalyThresholds>,
    actors: HashMap<ActorKey, ActorState>,
    principals: HashMap<Arc<str>, PrincipalState>,
}

impl Engine {
    pub fn new(config: AnomalyConfig) -> Self {
        Engine {
            window: i64::try_from(config.window_seconds.max(1)).unwrap_or(300),
            config,
            thresholds: HashMap::new(),
            actors: HashMap::new(),
            principals: HashMap::new(),
        }
    }

    pub fn config(&self) -> &AnomalyConfig {
        &self.config
    }

    /// The thresholds (and response) of `principal`.
    pub fn thresholds(&mut self, principal: &Arc<str>) -> AnomalyThresholds {
        self.thresholds
            .entry(Arc::clone(principal))
            .or_insert_with(|| self.config.thresholds_of(principal))
            .clone()
    }

    /// Counts `event` in and returns what it set off. Events of one actor
    /// are expected in time order; an older one counts into the window in
    /// progress.
    pub fn observe(&mut self, event: &Event) -> Vec<Finding> {
        let t = self.thresholds(&event.principal);
        let key = (Arc::clone(&event.principal), event.actor.clone());
        let peers = self
            .principals
            .entry(Arc::clone(&event.principal))
            .or_default();
        let actor = self.actors.entry(key).or_default();
        let ts = event.ts.max(actor.window);
        for folded in actor.roll(ts, self.window) {
            peers.volume.add(folded.values);
            peers.breadth.add(folded.subjects);
        }
        let mut found = Vec::new();
        let warm_days = actor.base.days >= t.warmup_days;
        let hour = (ts.rem_euclid(DAY) / HOUR) as usize;
        if warm_days && actor.values == 0 && !actor.base.worked_near(hour) {
            let weekday = WEEKDAYS[((ts.div_euclid(DAY) + 3).rem_euclid(7)) as usize];
            found.push((
                Detector::OffHours,
                actor.base.days as f64 / t.warmup_days.max(1) as f64,
                format!(
                    "first activity at {hour:02}:00 UTC ({weekday}), an hour this actor has not worked in {} active days (works {})",
                    actor.base.days,
                    actor.base.hours_worked()
                ),
            ));
        }
        // A purpose or format new to the principal is learned by it only
        // from actors in warm-up: after that, each actor that brings it
        // raises its own alert once, and learns it.
        if let Some(purpose) = event.purpose {
            if !actor.base.knows_purpose(purpose) && !peers.known.knows_purpose(purpose) {
                if warm_days {
                    found.push((
                        Detector::NewPurpose,
                        1.0,
                        "a purpose neither this actor nor any other actor of its principal has given before".into(),
                    ));
                } else {
                    peers.known.learn_purpose(purpose);
                }
            }
            actor.base.learn_purpose(purpose);
        }
        for format in &event.formats {
            if !actor.base.knows_format(format) && !peers.known.knows_format(format) {
                if warm_days {
                    found.push((
                        Detector::NewFormat,
                        1.0,
                        format!("format {format} revealed for the first time to this actor and its principal"),
                    ));
                } else {
                    peers.known.learn_format(format);
                }
            }
            actor.base.learn_format(format);
        }

        actor.add(event.values, event.full, &event.subjects);
        let (values, breadth) = (actor.values, actor.subjects.len() as u64);
        let window = self.window;
        if actor.base.active_windows >= t.warmup_windows {
            let own = |h: &Histogram| h.quantile(USUAL).max(1);
            let usual = own(&actor.base.volume);
            if over(values, usual, t.volume_factor, t.min_volume) {
                found.push((
                    Detector::Volume,
                    values as f64 / usual as f64,
                    format!("{values} values in a {window} s window, {:.1}x this actor's usual high of {usual}", values as f64 / usual as f64),
                ));
            }
            let usual = own(&actor.base.breadth);
            if over(breadth, usual, t.breadth_factor, t.min_breadth) {
                found.push((
                    Detector::Breadth,
                    breadth as f64 / usual as f64,
                    format!("{breadth} distinct subjects in a {window} s window, {:.1}x this actor's usual high of {usual}", breadth as f64 / usual as f64),
                ));
            }
            let hour_sum = actor.horizon_sum(actor.window, window * HORIZON_WINDOWS);
            let usual = own(&actor.base.hourly);
            if over(hour_sum, usual, t.drip_factor, t.min_drip) {
                found.push((
                    Detector::Drip,
                    hour_sum as f64 / usual as f64,
                    format!("{hour_sum} values in the last {} s, {:.1}x this actor's usual high of {usual}", window * HORIZON_WINDOWS, hour_sum as f64 / usual as f64),
                ));
            } else if warm_days {
                let usual = actor.base.daily.quantile(1.0).max(1);
                if over(actor.day_values, usual, t.drip_factor, t.min_drip) {
                    found.push((
                        Detector::Drip,
                        actor.day_values as f64 / usual as f64,
                        format!(
                            "{} values today, {:.1}x this actor's largest day of {usual}",
                            actor.day_values,
                            actor.day_values as f64 / usual as f64
                        ),
                    ));
                }
            }
        } else if peers.volume.total() >= MIN_PEER_WINDOWS {
            let usual = peers.volume.quantile(USUAL).max(1);
            if over(values, usual, t.peer_factor, t.min_volume) {
                found.push((
                    Detector::Volume,
                    values as f64 / usual as f64,
                    format!("{values} values in a {window} s window by an actor in warm-up, {:.1}x its principal's actors' usual high of {usual}", values as f64 / usual as f64),
                ));
            }
            let usual = peers.breadth.quantile(USUAL).max(1);
            if over(breadth, usual, t.peer_factor, t.min_breadth) {
                found.push((
                    Detector::Breadth,
                    breadth as f64 / usual as f64,
                    format!("{breadth} distinct subjects in a {window} s window by an actor in warm-up, {:.1}x its principal's actors' usual high of {usual}", breadth as f64 / usual as f64),
                ));
            }
        }

        let cooldown = i64::try_from(t.cooldown_seconds).unwrap_or(i64::MAX);
        let today = ts.div_euclid(DAY);
        let mut findings = Vec::new();
        for (detector, score, reason) in found {
            let last = |name: &str| actor.fired.get(name).copied();
            // The day rule of `drip` fires once a day, and not on a day
            // the hour rule fired.
            let day_rule = detector == Detector::Drip && reason.contains(" today,");
            let name = if day_rule {
                "drip_day"
            } else {
                detector.name()
            };
            let cooled = if day_rule {
                ["drip", "drip_day"]
                    .iter()
                    .any(|n| last(n).is_some_and(|at| at.div_euclid(DAY) == today))
            } else {
                // An off-hours episode (a swapped shift, a stolen token's
                // night) is one alert, not one per new hour.
                let cooldown = match detector {
                    Detector::OffHours => cooldown.max(OFF_HOURS_COOLDOWN),
                    _ => cooldown,
                };
                last(name).is_some_and(|at| ts < at.saturating_add(cooldown))
            };
            if cooled {
                continue;
            }
            actor.fired.insert(name, ts);
            findings.push(Finding {
                detector,
                principal: Arc::clone(&event.principal),
                actor: event.actor.clone(),
                at: ts,
                window_start: actor.window,
                window_seconds: self.window as u64,
                score,
                reason,
                values,
                subjects: breadth,
                response: t.response,
            });
        }
        if !findings.is_empty() {
            actor.flag();
        }
        findings
    }

    /// The number of actors with state.
    pub fn actors(&self) -> usize {
        self.actors.len()
    }
}

/// Whether `observed` is over `factor` times `usual` and over the floor.
fn over(observed: u64, usual: u64, factor: f64, floor: u64) -> bool {
    observed > floor && observed as f64 > factor * usual as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(extra: &str) -> Engine {
        let config: AnomalyConfig = toml::from_str(&format!(
            "enabled = true\nwarmup_windows = 20\nwarmup_days = 3\n{extra}"
        ))
        .expect("config");
        Engine::new(config)
    }

    fn event(ts: i64, actor: &str, values: u64, subjects: &[u64]) -> Event {
        Event {
            ts,
            principal: "support".into(),
            actor: Some(actor.into()),
            purpose: Some(1),
            formats: vec!["phone".into()],
            subjects: subjects.to_vec(),
            values,
            full: values,
        }
    }

    /// Five working days, 09:00-17:00, one call of 2 values of one
    /// customer every 10 minutes.
    fn train(engine: &mut Engine, actor: &str) -> i64 {
        let mut findings = Vec::new();
        for day in 0..5 {
            for minute in (0..480).step_by(10) {
                let ts = day * DAY + 9 * HOUR + minute * 60;
                let customer = (minute / 30) as u64;
                findings.extend(engine.observe(&event(ts, actor, 2, &[customer])));
            }
        }
        assert!(findings.is_empty(), "{findings:?}");
        5 * DAY + 9 * HOUR
    }

    fn detectors(findings: &[Finding]) -> Vec<Detector> {
        findings.iter().map(|f| f.detector).collect()
    }

    #[test]
    fn a_usual_day_raises_nothing_and_a_bulk_read_raises_volume_and_breadth() {
        let mut engine = engine("");
        let start = train(&mut engine, "alice");
        assert!(engine.observe(&event(start, "alice", 2, &[3])).is_empty());
        let subjects: Vec<u64> = (100..160).collect();
        let found = engine.observe(&event(start + 60, "alice", 60, &subjects));
        assert!(detectors(&found).contains(&Detector::Volume), "{found:?}");
        assert!(detectors(&found).contains(&Detector::Breadth), "{found:?}");
        let volume = &found[0];
        assert!(
            volume.score > 3.0 && volume.reason.contains("62 values"),
            "{}",
            volume.reason
        );
        // Cooled down: the same incident does not alert again.
        assert!(engine
            .observe(&event(start + 120, "alice", 60, &subjects))
            .is_empty());
    }

    #[test]
    fn first_activity_at_a_never_worked_hour_and_new_purposes_fire_after_warmup() {
        let mut engine = engine("");
        let start = train(&mut engine, "alice");
        // An hour next to a worked one is not off-hours (overtime).
        assert!(engine
            .observe(&event(start + 8 * HOUR + 1800, "alice", 1, &[1]))
            .is_empty());
        let night = start + 18 * HOUR; // 03:00 the next day
        let found = engine.observe(&event(night, "alice", 1, &[1]));
        assert_eq!(detectors(&found), [Detector::OffHours]);
        assert!(found[0].reason.contains("03:00 UTC"), "{}", found[0].reason);
        assert!(
            found[0].reason.contains("works 09-18"),
            "{}",
            found[0].reason
        );
        let mut odd = event(night + 600, "alice", 1, &[1]);
        odd.purpose = Some(99);
        odd.formats = vec!["card".into()];
        let found = engine.observe(&odd);
        assert_eq!(
            detectors(&found),
            [Detector::NewPurpose, Detector::NewFormat]
        );
        assert!(!found[0].reason.contains("99"));
    }

    #[test]
    fn a_purpose_another_actor_of_the_principal_uses_is_not_new() {
        let mut engine = engine("");
        let start = train(&mut engine, "alice");
        let mut bob = event(start, "bob", 1, &[5]);
        bob.purpose = Some(7);
        engine.observe(&bob);
        let mut alice = event(start + 60, "alice", 1, &[5]);
        alice.purpose = Some(7);
        assert!(engine.observe(&alice).is_empty());
    }

    #[test]
    fn a_slow_drip_under_every_window_high_sums_over_the_usual_hour() {
        let mut engine = engine("min_drip = 20");
        let start = train(&mut engine, "alice");
        // 4 values every 5 minutes: within 3x the usual window high of 2,
        // but 48 an hour against a usual hour of 12.
        let mut seen = Vec::new();
        for i in 0..12 {
            let ts = start + i * 300;
            seen.extend(engine.observe(&event(ts, "alice", 4, &[(i % 2) as u64])));
        }
        assert_eq!(detectors(&seen), [Detector::Drip], "{seen:?}");
        assert!(seen[0].reason.contains("last 3600 s"), "{}", seen[0].reason);
    }

    #[test]
    fn a_new_actor_is_compared_with_its_principals_other_actors() {
        let mut engine = engine("");
        let start = train(&mut engine, "alice");
        assert!(
            engine.observe(&event(start, "mallory", 2, &[1])).is_empty(),
            "a usual start"
        );
        let subjects: Vec<u64> = (0..40).collect();
        let found = engine.observe(&event(start + 30, "mallory", 40, &subjects));
        assert!(detectors(&found).contains(&Detector::Volume), "{found:?}");
        assert!(found[0].reason.contains("warm-up"), "{}", found[0].reason);
        // No off-hours or new-purpose findings in warm-up.
        let mut night = event(start + 15 * HOUR, "mallory", 1, &[1]);
        night.purpose = Some(42);
        assert!(engine.observe(&night).is_empty());
    }

    #[test]
    fn per_principal_thresholds_apply() {
        let mut engine = engine("[principals.support]\nbreadth_factor = 100.0\nvolume_factor = 100.0\nresponse = \"mask\"");
        let start = train(&mut engine, "alice");
        let subjects: Vec<u64> = (100..170).collect();
        let found = engine.observe(&event(start + 60, "alice", 70, &subjects));
        assert!(!found.is_empty());
        assert!(
            found.iter().all(|f| f.detector == Detector::Drip),
            "{found:?}"
        );
        assert!(found
            .iter()
            .all(|f| f.response == crate::config::AnomalyResponse::Mask));
    }
}
