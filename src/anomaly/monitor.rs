//! The live side: the engine behind a lock, fed by the service's reveal
//! events with times from a [`Clock`]; the alerts raised (listed, acked)
//! and the step-downs in force (an actor's reveals masked or refused until
//! an operator clears it). Alerts are logged on the alert target with
//! names, counts and the reason only, and counted.
//!
//! It never holds a value, a token, a subject id or a purpose string.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::detectors::ActorKey;
use super::{purpose_key, Clock, Detector, Engine, Event, Finding};
use crate::config::{AnomalyConfig, AnomalyResponse};
use crate::policy::ALERT_TARGET;

/// Alerts kept for `alerts list`; older ones are dropped.
const MAX_ALERTS: usize = 10_000;

/// Anomaly alerts raised since start, by detector (in [`Detector::ALL`]
/// order), for the metrics endpoint.
pub static ANOMALY_ALERTS: [AtomicU64; 6] = [
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
];

/// A raised anomaly alert.
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalyAlert {
    pub id: u64,
    pub finding: Finding,
    pub acked: bool,
}

/// What is in force against one actor, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct StepDown {
    pub response: AnomalyResponse,
    pub alert_id: u64,
    pub detector: Detector,
    pub reason: String,
}

#[derive(Debug)]
struct Inner {
    engine: Engine,
    alerts: VecDeque<AnomalyAlert>,
    next_id: u64,
    step_downs: HashMap<ActorKey, StepDown>,
}

/// The detectors, alerts and step-downs of a running server.
#[derive(Debug)]
pub struct Monitor {
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
}

fn key(principal: &str, actor: Option<&str>) -> ActorKey {
    (principal.into(), actor.map(Arc::from))
}

impl Monitor {
    pub fn new(config: AnomalyConfig, clock: Arc<dyn Clock>) -> Self {
        Monitor {
            clock,
            inner: Mutex::new(Inner {
                engine: Engine::new(config),
                alerts: VecDeque::new(),
                next_id: 1,
                step_downs: HashMap::new(),
            }),
        }
    }

    /// The step-down in force against `actor` of `principal`, if any.
    pub fn step_down(&self, principal: &str, actor: Option<&str>) -> Option<StepDown> {
        let inner = self.inner.lock();
        if inner.step_downs.is_empty() {
            return None;
        }
        inner.step_downs.get(&key(principal, actor)).cloned()
    }

    /// Counts a reveal in (now, by the clock) and raises what it sets off.
    #[allow(clippy::too_many_arguments)]
    pub fn reveal(
        &self,
        principal: &Arc<str>,
        actor: Option<&Arc<str>>,
        purpose: &str,
        formats: Vec<String>,
        subjects: Vec<u64>,
        values: u64,
        full: u64,
    ) -> Vec<AnomalyAlert> {
        self.observe(&Event {
            ts: self.clock.now(),
            principal: Arc::clone(principal),
            actor: actor.cloned(),
            purpose: purpose_key(purpose),
            formats,
            subjects,
            values,
            full,
        })
    }

    /// Counts `event` in; each finding becomes an alert (logged and
    /// counted), and a `mask` or `deny` one a step-down of its actor.
    pub fn observe(&self, event: &Event) -> Vec<AnomalyAlert> {
        let mut inner = self.inner.lock();
        let findings = inner.engine.observe(event);
        let mut raised = Vec::new();
        for finding in findings {
            let id = inner.next_id;
            inner.next_id += 1;
            if let Some(i) = Detector::ALL.iter().position(|d| *d == finding.detector) {
                ANOMALY_ALERTS[i].fetch_add(1, Ordering::Relaxed);
            }
            tracing::warn!(
                target: ALERT_TARGET,
                alert = "anomaly",
                id,
                detector = finding.detector.name(),
                principal = %finding.principal,
                actor = finding.actor.as_deref().unwrap_or("-"),
                score = format!("{:.1}", finding.score),
                response = finding.response.name(),
                values = finding.values,
                subjects = finding.subjects,
                window_seconds = finding.window_seconds,
                reason = %finding.reason,
                "anomaly alert"
            );
            if finding.response != AnomalyResponse::Alert {
                let k = (Arc::clone(&finding.principal), finding.actor.clone());
                inner.step_downs.entry(k).or_insert_with(|| StepDown {
                    response: finding.response,
                    alert_id: id,
                    detector: finding.detector,
                    reason: finding.reason.clone(),
                });
            }
            let alert = AnomalyAlert {
                id,
                finding,
                acked: false,
            };
            if inner.alerts.len() >= MAX_ALERTS {
                inner.alerts.pop_front();
            }
            inner.alerts.push_back(alert.clone());
            raised.push(alert);
        }
        raised
    }

    /// The alerts kept, oldest first, and the step-downs in force.
    pub fn list(&self) -> (Vec<AnomalyAlert>, Vec<(ActorKey, StepDown)>) {
        let inner = self.inner.lock();
        let mut step_downs: Vec<_> = inner
            .step_downs
            .iter()
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect();
        step_downs.sort_by_key(|(_, s)| s.alert_id);
        (inner.alerts.iter().cloned().collect(), step_downs)
    }

    /// Marks alert `id` seen; false if there is no such alert.
    pub fn ack(&self, id: u64) -> bool {
        let mut inner = self.inner.lock();
        match inner.alerts.iter_mut().find(|a| a.id == id) {
            Some(alert) => {
                alert.acked = true;
                true
            }
            None => false,
        }
    }

    /// Lifts every step-down of `actor` (`-`: calls without an actor),
    /// under every principal; how many were lifted.
    pub fn clear(&self, actor: &str) -> usize {
        let mut inner = self.inner.lock();
        let before = inner.step_downs.len();
        inner
            .step_downs
            .retain(|(_, a), _| a.as_deref().unwrap_or("-") != actor);
        before - inner.step_downs.len()
    }

    /// Step-downs in force, for the metrics endpoint.
    pub fn step_downs(&self) -> usize {
        self.inner.lock().step_downs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anomaly::ManualClock;

    /// An actor that usually reads at 40% of a 60-a-minute limit, then at
    /// 90% of it for an hour (the clock injected): every window stays
    /// within 3x its usual high, the hour does not.
    #[test]
    fn reading_at_ninety_percent_of_the_limit_for_an_hour_raises_drip() {
        let config: AnomalyConfig = toml::from_str("enabled = true").expect("config");
        let day0 = 1_793_577_600; // a Monday, 00:00 UTC
        let clock = Arc::new(ManualClock::new(day0));
        let monitor = Monitor::new(config, clock.clone());
        let service: Arc<str> = "billing".into();
        let mut customer = 0u64;
        let mut read = |values| {
            customer += 1;
            monitor.reveal(
                &service,
                None,
                "invoice",
                vec!["card".into()],
                vec![customer],
                values,
                0,
            )
        };
        for day in 0..3 {
            for minute in 0..480 {
                clock.set(day0 + day * 86_400 + 9 * 3600 + minute * 60);
                assert!(read(24).is_empty(), "usual reads raise nothing");
            }
        }
        let start = day0 + 3 * 86_400 + 10 * 3600;
        let mut raised = Vec::new();
        for minute in 0..60 {
            clock.set(start + minute * 60);
            raised.extend(read(54));
        }
        let detectors: Vec<Detector> = raised.iter().map(|a| a.finding.detector).collect();
        assert_eq!(detectors, [Detector::Drip], "{raised:?}");
        assert!(raised[0].finding.at < start + 3600);
    }

    #[test]
    fn a_mask_finding_steps_down_its_actor_only_until_cleared() {
        let config: AnomalyConfig = toml::from_str(
            "enabled = true\nwindow_seconds = 10\nwarmup_windows = 3\nmin_breadth = 5\nresponse = \"mask\"",
        )
        .expect("config");
        let clock = Arc::new(ManualClock::new(1_000_000));
        let monitor = Monitor::new(config, clock.clone());
        let support: Arc<str> = "support".into();
        let (alice, bob): (Arc<str>, Arc<str>) = ("alice".into(), "bob".into());
        // Windows are learned 12 windows after they end: 16 windows of
        // one customer each.
        for i in 0..16 {
            for who in [&alice, &bob] {
                let raised = monitor.reveal(
                    &support,
                    Some(who),
                    "ticket",
                    vec!["phone".into()],
                    vec![i],
                    1,
                    1,
                );
                assert!(raised.is_empty());
            }
            clock.advance(10);
        }
        let wide: Vec<u64> = (100..110).collect();
        let raised = monitor.reveal(
            &support,
            Some(&alice),
            "ticket",
            vec!["phone".into()],
            wide,
            10,
            10,
        );
        assert!(
            raised
                .iter()
                .any(|a| a.finding.detector == Detector::Breadth),
            "{raised:?}"
        );
        let step = monitor
            .step_down("support", Some("alice"))
            .expect("stepped down");
        assert_eq!(step.response, AnomalyResponse::Mask);
        assert!(monitor.step_down("support", Some("bob")).is_none());
        assert!(monitor.ack(raised[0].id));
        assert!(!monitor.ack(999));
        assert!(monitor.list().0[0].acked);
        assert_eq!(monitor.clear("alice"), 1);
        assert!(monitor.step_down("support", Some("alice")).is_none());
    }
}
