//! The offline replay: runs the detectors over a timestamped JSON-lines
//! event file (docs/anomaly.md gives the format) and, when events carry
//! incident labels, measures detection per scenario type and the false
//! alerts per 100 operator-days. It owns the file format and the scoring;
//! it reads only the file it is given and writes nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::{digest_u64, purpose_key, Detector, Engine, Event, Finding};
use crate::config::AnomalyConfig;

/// An alert later than this after its incident's last event is not its.
const ATTRIBUTION_SECONDS: i64 = 3_600;
const DAY: i64 = 86_400;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Line {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// One line of an event file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    ts: i64,
    principal: String,
    #[serde(default)]
    actor: Option<String>,
    #[serde(default)]
    rpc: Option<String>,
    #[serde(default)]
    purpose: String,
    #[serde(default)]
    formats: Vec<String>,
    /// Keyed hashes of the subjects (any string; hashed again here).
    #[serde(default)]
    subjects: Vec<String>,
    values: u64,
    #[serde(default)]
    full: Option<u64>,
    /// `type/number` of an injected incident this event belongs to.
    #[serde(default)]
    incident: Option<String>,
}

/// An event and its incident label.
pub struct Labelled {
    pub event: Event,
    pub incident: Option<Arc<str>>,
}

/// Reads an event file, in time order (a stable sort).
pub fn read(path: &Path) -> Result<Vec<Labelled>, ReplayError> {
    let file = std::fs::File::open(path).map_err(|source| ReplayError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut events = Vec::new();
    let mut names: HashMap<String, Arc<str>> = HashMap::new();
    let mut intern =
        |s: String| -> Arc<str> { Arc::clone(names.entry(s.clone()).or_insert_with(|| s.into())) };
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| ReplayError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: Line = serde_json::from_str(&line).map_err(|e| ReplayError::Line {
            path: path.to_path_buf(),
            line: i + 1,
            message: e.to_string(),
        })?;
        if let Some(rpc) = &parsed.rpc {
            if !["detokenize", "restore_text", "export_subject"].contains(&rpc.as_str()) {
                return Err(ReplayError::Line {
                    path: path.to_path_buf(),
                    line: i + 1,
                    message: format!("rpc {rpc:?} is not a reveal"),
                });
            }
        }
        events.push(Labelled {
            event: Event {
                ts: parsed.ts,
                principal: intern(parsed.principal),
                actor: parsed.actor.map(&mut intern),
                purpose: purpose_key(&parsed.purpose),
                formats: parsed.formats,
                subjects: parsed
                    .subjects
                    .iter()
                    .map(|s| digest_u64(&[s.as_bytes()]))
                    .collect(),
                values: parsed.values,
                full: parsed.full.unwrap_or(parsed.values),
            },
            incident: parsed.incident.map(&mut intern),
        });
    }
    events.sort_by_key(|e| e.event.ts);
    Ok(events)
}

/// Detection of one scenario type.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ScenarioRow {
    pub incidents: u64,
    pub detected: u64,
    pub within: u64,
    /// Seconds from each detected incident's start to its first alert.
    pub latencies: Vec<i64>,
    pub detectors: BTreeSet<&'static str>,
}

/// What a replay found.
#[derive(Debug, Default)]
pub struct Report {
    pub events: u64,
    pub findings: Vec<Finding>,
    /// The incident each finding was attributed to (None: a false alert).
    pub attributed: Vec<Option<Arc<str>>>,
    pub by_type: BTreeMap<String, ScenarioRow>,
    pub false_alerts: u64,
    pub false_by_detector: BTreeMap<&'static str, u64>,
    pub operator_days: u64,
    /// The deadline for "within": seconds after an incident's start.
    pub within_seconds: i64,
}

struct Incident {
    principal: Arc<str>,
    actor: Option<Arc<str>>,
    start: i64,
    end: i64,
    first_alert: Option<i64>,
}

/// Runs the detectors over `events` and scores them against the labels.
pub fn run(config: AnomalyConfig, events: &[Labelled], within_seconds: i64) -> Report {
    let mut engine = Engine::new(config);
    let mut report = Report {
        within_seconds,
        ..Report::default()
    };
    let mut incidents: BTreeMap<Arc<str>, Incident> = BTreeMap::new();
    let mut days = BTreeSet::new();
    for labelled in events {
        let e = &labelled.event;
        report.events += 1;
        days.insert((
            Arc::clone(&e.principal),
            e.actor.clone(),
            e.ts.div_euclid(DAY),
        ));
        if let Some(label) = &labelled.incident {
            let incident = incidents.entry(Arc::clone(label)).or_insert(Incident {
                principal: Arc::clone(&e.principal),
                actor: e.actor.clone(),
                start: e.ts,
                end: e.ts,
                first_alert: None,
            });
            incident.end = e.ts;
        }
        report.findings.extend(engine.observe(e));
    }
    report.operator_days = days.len() as u64;
    for finding in &report.findings {
        let mine = incidents.iter_mut().find(|(_, i)| {
            i.principal == finding.principal
                && i.actor == finding.actor
                && finding.at >= i.start
                && finding.at <= i.end + ATTRIBUTION_SECONDS
        });
        report
            .attributed
            .push(mine.as_ref().map(|(label, _)| Arc::clone(label)));
        match mine {
            Some((label, incident)) => {
                incident.first_alert = Some(
                    incident
                        .first_alert
                        .map_or(finding.at, |a| a.min(finding.at)),
                );
                let kind = label.split('/').next().unwrap_or(label).to_string();
                report
                    .by_type
                    .entry(kind)
                    .or_default()
                    .detectors
                    .insert(finding.detector.name());
            }
            None => {
                report.false_alerts += 1;
                *report
                    .false_by_detector
                    .entry(finding.detector.name())
                    .or_default() += 1;
            }
        }
    }
    for (label, incident) in &incidents {
        let kind = label.split('/').next().unwrap_or(label).to_string();
        let row = report.by_type.entry(kind).or_default();
        row.incidents += 1;
        if let Some(at) = incident.first_alert {
            row.detected += 1;
            let latency = at - incident.start;
            if latency <= within_seconds {
                row.within += 1;
            }
            row.latencies.push(latency);
        }
    }
    report
}

impl Report {
    /// The table docs/anomaly.md shows, as Markdown.
    pub fn table(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "| scenario | incidents | detected | within {} min | median latency (s) | detectors |\n|---|---|---|---|---|---|\n",
            self.within_seconds / 60
        ));
        for (kind, row) in &self.by_type {
            let mut latencies = row.latencies.clone();
            latencies.sort_unstable();
            let median = latencies
                .get(latencies.len() / 2)
                .map_or("-".to_string(), |l| l.to_string());
            let pct = |n: u64| 100.0 * n as f64 / row.incidents.max(1) as f64;
            out.push_str(&format!(
                "| {kind} | {} | {} ({:.0}%) | {} ({:.0}%) | {median} | {} |\n",
                row.incidents,
                row.detected,
                pct(row.detected),
                row.within,
                pct(row.within),
                row.detectors.iter().copied().collect::<Vec<_>>().join(", ")
            ));
        }
        let per_100 = 100.0 * self.false_alerts as f64 / self.operator_days.max(1) as f64;
        out.push_str(&format!(
            "\nfalse alerts: {} over {} actor-days = {per_100:.2} per 100 actor-days ({})\n",
            self.false_alerts,
            self.operator_days,
            self.false_by_detector
                .iter()
                .map(|(d, n)| format!("{d} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        out.push_str(&format!(
            "events: {}, alerts: {}\n",
            self.events,
            self.findings.len()
        ));
        out
    }

    /// Every alert as one line (for `--alerts`): its incident (or
    /// `false`), time, principal, actor, detector, score, reason.
    pub fn alert_lines(&self) -> Vec<String> {
        self.findings
            .iter()
            .zip(&self.attributed)
            .map(|(f, label)| {
                format!(
                    "{}\t{}\t{}\t{}\t{}\t{:.1}\t{}",
                    label.as_deref().unwrap_or("false"),
                    f.at,
                    f.principal,
                    f.actor.as_deref().unwrap_or("-"),
                    f.detector.name(),
                    f.score,
                    f.reason
                )
            })
            .collect()
    }
}

/// Detector names, for `--help` texts.
pub fn detector_names() -> String {
    Detector::ALL.map(Detector::name).join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_labelled_file_is_scored_per_scenario_and_false_alerts_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.jsonl");
        let mut lines = Vec::new();
        // Six days of one operator, 09-17, 2 values every 10 minutes.
        for day in 0..6i64 {
            for minute in (0..480).step_by(10) {
                let ts = day * DAY + 9 * 3600 + minute * 60;
                lines.push(format!(
                    r#"{{"ts":{ts},"principal":"support","actor":"op1","rpc":"detokenize","purpose":"ticket","formats":["phone"],"subjects":["c{}"],"values":2}}"#,
                    minute / 30
                ));
            }
        }
        let start = 6 * DAY + 10 * 3600;
        let subjects: Vec<String> = (0..80).map(|i| format!("\"x{i}\"")).collect();
        lines.push(format!(
            r#"{{"ts":{start},"principal":"support","actor":"op1","purpose":"ticket","formats":["phone"],"subjects":[{}],"values":80,"incident":"bulk_export/1"}}"#,
            subjects.join(",")
        ));
        std::fs::write(&path, lines.join("\n")).expect("write");
        let events = read(&path).expect("reads");
        let config: AnomalyConfig =
            toml::from_str("warmup_windows = 50\nwarmup_days = 3").expect("config");
        let report = run(config, &events, 300);
        let row = &report.by_type["bulk_export"];
        assert_eq!((row.incidents, row.detected, row.within), (1, 1, 1));
        assert_eq!(report.false_alerts, 0);
        assert_eq!(report.operator_days, 7);
        assert!(
            report
                .table()
                .contains("| bulk_export | 1 | 1 (100%) | 1 (100%) | 0 |"),
            "{}",
            report.table()
        );

        std::fs::write(&path, "{\"ts\": 1}\n").expect("write");
        let error = read(&path).err().expect("refused").to_string();
        assert!(error.contains(":1:"), "{error}");
    }
}
