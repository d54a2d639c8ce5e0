//! Precision and recall of `Scanner::all()` on the labelled chat corpus
//! (`tests/data/chat_corpus.jsonl`, written by `gen_chat_corpus.py`).
//!
//! A finding is a true positive when a label has the same kind and exactly
//! the same byte span; every other finding is a false positive and every
//! other label a false negative. The test prints the per-kind table and
//! fails below the thresholds of issue 6. Set `SCAN_CORPUS_VERBOSE=1` to
//! print the misses (the corpus is synthetic, so printing it is fine).
//!
//! Run: `cargo test --test scan_corpus -- --nocapture`

use std::collections::BTreeMap;

use tokenvault::scan::Scanner;
use tokenvault::token::format::Format;

const CORPUS: &str = include_str!("data/chat_corpus.jsonl");

/// (kind, minimum recall, minimum precision) from issue 6.
const THRESHOLDS: &[(&str, f64, f64)] = &[
    ("card", 0.98, 0.97),
    ("email", 0.98, 0.97),
    ("iban", 0.98, 0.97),
    ("ru_snils", 0.98, 0.97),
    ("ru_inn", 0.98, 0.97),
    ("ru_ogrn", 0.98, 0.97),
    ("phone", 0.95, 0.95),
    ("ru_passport", 0.95, 0.95),
    ("ru_bank_account", 0.95, 0.95),
    ("us_ssn", 0.95, 0.95),
];

#[derive(Default)]
struct Counts {
    labels: usize,
    found: usize,
    true_positives: usize,
}

impl Counts {
    fn precision(&self) -> f64 {
        ratio(self.true_positives, self.found)
    }
    fn recall(&self) -> f64 {
        ratio(self.true_positives, self.labels)
    }
}

fn ratio(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        1.0
    } else {
        part as f64 / whole as f64
    }
}

struct Message {
    text: String,
    labels: Vec<(String, usize, usize)>,
}

fn corpus() -> Vec<Message> {
    CORPUS
        .lines()
        .enumerate()
        .map(|(n, line)| {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("corpus line {}: {e}", n + 1));
            let text = v["text"]
                .as_str()
                .expect("every corpus line has a text")
                .to_owned();
            let labels = v["pii"]
                .as_array()
                .expect("every corpus line has a pii array")
                .iter()
                .map(|p| {
                    let offset = |key: &str| {
                        p[key]
                            .as_u64()
                            .and_then(|o| usize::try_from(o).ok())
                            .expect("offsets are numbers")
                    };
                    let kind = p["kind"]
                        .as_str()
                        .expect("every label has a kind")
                        .to_owned();
                    (kind, offset("start"), offset("end"))
                })
                .collect();
            Message { text, labels }
        })
        .collect()
}

#[test]
fn corpus_precision_and_recall() {
    let messages = corpus();
    assert!(
        messages.len() >= 2000,
        "corpus too small: {}",
        messages.len()
    );
    let verbose = std::env::var_os("SCAN_CORPUS_VERBOSE").is_some();
    let scanner = Scanner::all();
    let mut counts: BTreeMap<String, Counts> = BTreeMap::new();
    for (kind, _, _) in THRESHOLDS {
        counts.entry((*kind).to_owned()).or_default();
    }
    for message in &messages {
        let text = &message.text;
        let findings = scanner.scan(text);
        for f in &findings {
            let value = &text[f.start..f.end];
            assert!(
                f.kind.validate(value).is_ok(),
                "finding {:?} at {}..{} does not validate: {value:?}",
                f.kind,
                f.start,
                f.end
            );
            let entry = counts.entry(f.kind.name().to_owned()).or_default();
            entry.found += 1;
            let hit = message
                .labels
                .iter()
                .any(|(k, s, e)| k == f.kind.name() && *s == f.start && *e == f.end);
            if hit {
                entry.true_positives += 1;
            } else if verbose {
                println!("FP {:<16} {value:?} in {text:?}", f.kind.name());
            }
        }
        for (kind, start, end) in &message.labels {
            counts.entry(kind.clone()).or_default().labels += 1;
            let hit = findings
                .iter()
                .any(|f| f.kind.name() == kind && f.start == *start && f.end == *end);
            if !hit && verbose {
                println!("FN {kind:<16} {:?} in {text:?}", &text[*start..*end]);
            }
        }
    }
    println!("{}", table("tokenvault", messages.len(), &counts));
    let mut failures = Vec::new();
    for (kind, min_recall, min_precision) in THRESHOLDS {
        let c = &counts[*kind];
        if c.recall() < *min_recall || c.precision() < *min_precision {
            failures.push(format!(
                "{kind}: recall {:.3} (min {min_recall}), precision {:.3} (min {min_precision})",
                c.recall(),
                c.precision()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "below thresholds:\n{}",
        failures.join("\n")
    );
}

/// The table `benches/presidio.py` prints too, so the two line up.
fn table(engine: &str, messages: usize, counts: &BTreeMap<String, Counts>) -> String {
    let mut out = format!(
        "{engine} on {messages} messages\n{:<16} {:>7} {:>7} {:>7} {:>9} {:>7}\n",
        "kind", "labels", "found", "tp", "precision", "recall"
    );
    for (kind, c) in counts {
        out.push_str(&format!(
            "{kind:<16} {:>7} {:>7} {:>7} {:>9.3} {:>7.3}\n",
            c.labels,
            c.found,
            c.true_positives,
            c.precision(),
            c.recall()
        ));
    }
    out
}

#[test]
fn every_kind_has_labels() {
    let messages = corpus();
    for format in Format::ALL {
        if matches!(format, Format::Text | Format::Opaque) {
            continue;
        }
        let n = messages
            .iter()
            .flat_map(|m| &m.labels)
            .filter(|(k, _, _)| k == format.name())
            .count();
        assert!(n >= 100, "{format}: only {n} labels");
    }
}
