//! PII detection in chat text: finds card numbers, phones, emails, IBANs,
//! Russian passports, SNILS, INN, OGRN, bank accounts and US SSNs in free
//! Russian or English text, and says where they are.
//!
//! This module owns *where* the values are, not what happens to them: a
//! [`Finding`] is a kind and a byte span. Every span it returns is a value
//! that its kind accepts ([`TokenFormat::validate`]), so the caller can
//! tokenize it with that format and the
//! token keeps the text's layout. Findings are sorted and never overlap.
//!
//! How: one pass of one combined regex over the text yields candidate
//! spans (email-shaped, IBAN-shaped, and runs of digit groups); each is
//! then checked by the kind-specific rules of `PII-RULES.md` in
//! `detectors` — checksums, IIN prefixes, layouts, and the context word
//! before it (`context`) — and overlaps between kinds are resolved by a
//! fixed priority (a checksum-valid kind with its context word beats a
//! generic phone), then by length, then by position. Operator-defined
//! [`CustomDetector`]s run behind a [`RegexSet`] prefilter.
//!
//! Values already replaced by tokens are not found again where the token
//! fails its format's check (card, IBAN, SNILS, INN, OGRN, a bank account
//! next to its BIK, SSN area 9xx) or carries an `.invalid` email domain.
//! Phone and passport tokens look like real values: telling them apart is
//! the vault's job, not this module's.
//!
//! It must never: log, print or keep any of the text it scans; put text
//! into an error ([`ScanError`] names a custom detector and what is wrong
//! with its pattern, both from configuration); panic, whatever the input;
//! or look at anything but the text (no I/O, no vault).

mod context;
mod detectors;
mod phones;
pub mod spans;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use regex::{Regex, RegexSet};

use crate::token::checks::{iban_mod97, luhn_valid};
use crate::token::format::Format;
use crate::token::template::TokenFormat;

use self::context::Context;

/// Size limit of a custom detector's compiled regex, so a pathological
/// pattern is refused at start-up instead of eating memory.
const CUSTOM_REGEX_SIZE_LIMIT: usize = 1 << 20;

/// One detected value: its kind and its UTF-8 byte span in the scanned text.
///
/// `&text[start..end]` is on char boundaries and validates as `kind`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Finding {
    /// The format the value is tokenized with: a built-in one, or an
    /// operator-defined one a custom detector names.
    pub kind: TokenFormat,
    /// Byte offset of the first byte of the value.
    pub start: usize,
    /// Byte offset just past the value.
    pub end: usize,
}

/// A check a custom detector's match must pass besides its regex.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validator {
    /// The match's ASCII digits pass the Luhn check.
    Luhn,
    /// The match, spaces removed and uppercased, has ISO 13616 mod-97 = 1.
    Mod97,
    /// No check beyond the regex and the format.
    None,
}

/// An operator-defined detector: a regex, an optional check, context words
/// that must precede a match (any of them, case-insensitive; none means no
/// context is needed) and the format its matches are tokenized with. A
/// match that does not validate as `format` is dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomDetector {
    /// Name, used in errors.
    pub name: String,
    /// A `regex` crate pattern.
    pub pattern: String,
    /// Check the match must pass.
    pub validator: Validator,
    /// Words of which one must stand shortly before a match.
    pub context: Vec<String>,
    /// The format matches are tokenized with (built-in or `[[formats]]`).
    pub format: TokenFormat,
}

/// Why a scanner could not be built. Names the detector and the problem,
/// never any scanned text (a scanner is built before it sees any).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScanError {
    /// A custom detector's pattern does not compile.
    #[error("custom detector {name:?}: invalid pattern: {reason}")]
    InvalidPattern {
        /// The detector's name.
        name: String,
        /// What the regex compiler said.
        reason: String,
    },
    /// A custom detector's pattern matches the empty string, so it would
    /// find something everywhere.
    #[error("custom detector {name:?}: pattern matches the empty string")]
    EmptyMatch {
        /// The detector's name.
        name: String,
    },
}

/// A compiled custom detector.
struct Custom {
    regex: Regex,
    validator: Validator,
    /// Context words, normalized like the scanned window.
    context: Vec<String>,
    format: TokenFormat,
}

/// A PII scanner for a fixed set of kinds. Build once, share freely: it is
/// `Send + Sync` and [`Scanner::scan`] takes `&self`.
pub struct Scanner {
    /// Enabled built-in kinds, indexed like `Format::ALL`.
    kinds: [bool; Format::ALL.len()],
    candidates: Regex,
    context: Context,
    custom: Vec<Custom>,
    custom_set: Option<RegexSet>,
}

impl Scanner {
    /// A scanner with the built-in detectors of `kinds`. `text` and
    /// `opaque` have no detector and are ignored.
    pub fn new(kinds: &[Format]) -> Scanner {
        let mut enabled = [false; Format::ALL.len()];
        for kind in kinds {
            if let Some(i) = Format::ALL.iter().position(|k| k == kind) {
                enabled[i] = true;
            }
        }
        Scanner {
            kinds: enabled,
            candidates: detectors::candidate_regex(),
            context: Context::new(),
            custom: Vec::new(),
            custom_set: None,
        }
    }

    /// A scanner with every built-in detector.
    pub fn all() -> Scanner {
        Scanner::new(&Format::ALL)
    }

    /// A scanner with the built-in detectors of `kinds` and the
    /// operator-defined `custom` ones.
    ///
    /// # Errors
    ///
    /// [`ScanError`] naming the first detector whose pattern does not
    /// compile or matches the empty string.
    pub fn with_custom(kinds: &[Format], custom: &[CustomDetector]) -> Result<Scanner, ScanError> {
        let mut scanner = Scanner::new(kinds);
        for detector in custom {
            let regex = regex::RegexBuilder::new(&detector.pattern)
                .size_limit(CUSTOM_REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| ScanError::InvalidPattern {
                    name: detector.name.clone(),
                    reason: e.to_string(),
                })?;
            if regex.is_match("") {
                return Err(ScanError::EmptyMatch {
                    name: detector.name.clone(),
                });
            }
            scanner.custom.push(Custom {
                regex,
                validator: detector.validator,
                context: detector
                    .context
                    .iter()
                    .map(|w| context::normalize(w))
                    .collect(),
                format: detector.format.clone(),
            });
        }
        if !custom.is_empty() {
            let set = RegexSet::new(custom.iter().map(|d| d.pattern.as_str())).map_err(|e| {
                ScanError::InvalidPattern {
                    name: custom.first().map(|d| d.name.clone()).unwrap_or_default(),
                    reason: e.to_string(),
                }
            })?;
            scanner.custom_set = Some(set);
        }
        Ok(scanner)
    }

    /// The PII in `text`: sorted by start, non-overlapping, each span
    /// validating as its kind.
    pub fn scan(&self, text: &str) -> Vec<Finding> {
        let mut candidates = Vec::new();
        detectors::builtin_candidates(self, text, &mut candidates);
        self.custom_candidates(text, &mut candidates);
        resolve(candidates)
    }

    fn enabled(&self, kind: Format) -> bool {
        Format::ALL
            .iter()
            .position(|&k| k == kind)
            .is_some_and(|i| self.kinds[i])
    }

    fn custom_candidates(&self, text: &str, out: &mut Vec<detectors::Candidate>) {
        let Some(set) = &self.custom_set else {
            return;
        };
        for index in set.matches(text).iter() {
            let Some(custom) = self.custom.get(index) else {
                continue;
            };
            for m in custom.regex.find_iter(text) {
                let value = m.as_str();
                if value.is_empty() || !custom_valid(custom.validator, value) {
                    continue;
                }
                if !custom.context.is_empty() {
                    let window = context::window_lowercase(text, m.start());
                    if !custom.context.iter().any(|w| window.contains(w.as_str())) {
                        continue;
                    }
                }
                if custom.format.validate(value).is_ok() {
                    out.push(detectors::Candidate {
                        kind: custom.format.clone(),
                        start: m.start(),
                        end: m.end(),
                        priority: detectors::PRIORITY_CUSTOM,
                    });
                }
            }
        }
    }
}

fn custom_valid(validator: Validator, value: &str) -> bool {
    match validator {
        Validator::None => true,
        Validator::Luhn => {
            let digits: Vec<u8> = value
                .bytes()
                .filter(u8::is_ascii_digit)
                .map(|b| b - b'0')
                .collect();
            luhn_valid(&digits)
        }
        Validator::Mod97 => {
            let compact: String = value
                .chars()
                .filter(|c| !c.is_whitespace())
                .map(|c| c.to_ascii_uppercase())
                .collect();
            iban_mod97(&compact) == Some(1)
        }
    }
}

/// The order of kinds among equal candidates: built-ins as in
/// `Format::ALL`, then operator-defined formats.
fn kind_index(kind: &TokenFormat) -> usize {
    kind.builtin()
        .and_then(|kind| Format::ALL.iter().position(|&k| k == kind))
        .unwrap_or(Format::ALL.len())
}

/// Keeps the best of overlapping candidates: highest priority, then
/// longest, then first, then by kind order; returns them sorted by start.
fn resolve(mut candidates: Vec<detectors::Candidate>) -> Vec<Finding> {
    candidates.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then((b.end - b.start).cmp(&(a.end - a.start)))
            .then(a.start.cmp(&b.start))
            .then(kind_index(&a.kind).cmp(&kind_index(&b.kind)))
    });
    // Kept findings by start. They never overlap, so the only ones that
    // can overlap a new span are the last starting before its end and,
    // through it, nothing else: O(log n) per candidate.
    let mut kept: BTreeMap<usize, Finding> = BTreeMap::new();
    for c in candidates {
        let overlaps = kept
            .range(..c.end)
            .next_back()
            .is_some_and(|(_, f)| f.end > c.start);
        if !overlaps {
            let finding = Finding {
                kind: c.kind,
                start: c.start,
                end: c.end,
            };
            kept.insert(c.start, finding);
        }
    }
    kept.into_values().collect()
}
