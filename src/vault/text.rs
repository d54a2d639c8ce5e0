//! RedactText and RestoreText: PII in free chat text replaced by tokens in
//! place, and tokens in text replaced by their values.
//!
//! Redacting scans the text once with the vault's [`Scanner`](crate::scan::Scanner) (every
//! built-in detector; findings of kinds the caller did not ask for are
//! dropped), looks up in ONE store call which findings and which
//! token-shaped strings of the text are already tokens of the request's
//! subject, drops findings that overlap one (so redacting a redacted text
//! changes nothing: phone and passport tokens look like real values and the
//! scanner finds them again; a value that equals another subject's token is
//! redacted like any value),
//! rescans a preview of the text with every email grown to its token's
//! length (the scanner's context window counts characters, so a longer
//! token can change what a later number is taken for; without this the
//! second redaction could find a new value), tokenizes the rest for the
//! subject in ONE deterministic Tokenize batch
//! (the message is atomic: all of it is stored or none), and splices the
//! tokens in. Finding offsets are UTF-8 byte offsets of each token in the
//! returned text, computed while splicing (an email token is longer than its
//! value: `.invalid` is appended).
//!
//! Restoring finds candidate token strings (below), looks them all up in ONE
//! store call, opens the found ones (only the given subject's, when the
//! request names one) as Detokenize does and replaces only those;
//! everything else is left byte for byte. Each value is shown as the
//! caller's `reveal` function says (full, or masked by its policy).
//!
//! Candidates: tokens fail their format's checksum, so the scanner does not
//! find most of them. [`token_candidates`] lists, besides the scanner's
//! spans, every span shaped like a token of a built-in format, checksums
//! ignored:
//! - in each run of digit groups joined by the separators the formats allow
//!   (`+` at the start; space, no-break space, `-./:()` in runs of up to 3;
//!   `№`; ` номер `), every sub-run that starts and ends on a digit group
//!   (or the leading `+`), of 8 to 29 digits, at most
//!   [`MAX_GROUPS`](crate::scan::spans::MAX_GROUPS) groups and
//!   [`MAX_NUMBER_TOKEN_BYTES`](crate::scan::spans::MAX_NUMBER_TOKEN_BYTES) bytes;
//! - IBAN-shaped strings: two capital letters, two digits, then letters or
//!   digits with single spaces, 15 to 34 characters;
//! - email-shaped strings whose domain ends with `.invalid`, each possible
//!   start of the local part;
//! - `tok_` followed by 26 base32 characters (opaque tokens);
//! - every match of each `[[formats]]` template's pattern (leftmost,
//!   non-overlapping), so operator-defined tokens are restored, and left
//!   alone by redaction, also where no detector finds them.
//!
//! Limits: found tokens that overlap keep the longest (then the first);
//! tokens of formats without a shape here (`text`, a built-in format named
//! by a `[[detectors]]` entry that the scanner does not find again, or a
//! template token that the pattern's leftmost match runs into from the
//! text before it) are not restored; without a subject, a
//! string of the text that happens to equal a stored token of any subject is
//! taken for that token and restored to that subject's value (so a
//! conversation's RestoreText should name its subject); a token written with other separators
//! than it was issued with is not found. The number of candidates grows with
//! the text, bounded by `limits.max_text_bytes`: the worst case, 64 KiB of
//! single digits between spaces, is ~100k lookups in one call (about 0.3 s
//! on the 2-core dev machine), against microseconds for a chat message.
//!
//! Like the rest of the vault it never logs or puts into an error any of
//! the text, a value or a token.

use std::collections::HashMap;

use zeroize::Zeroizing;

use super::{TokenMode, TokenStatus, TokenizeItem, Vault, VaultError};
use crate::crypto::SubjectHash;
use crate::policy::quota::{NewValueCaller, QuotaAlert};
use crate::scan::spans::{splice, token_candidates, EMAIL_TOKEN_SUFFIX};
use crate::scan::Finding;
use crate::store::TokenRecord;
use crate::token::format::Format;
use crate::token::template::{Templates, TokenFormat};

/// Rescans of a preview with grown email tokens (see
/// `Vault::found_after_growth`); one is enough unless a new finding is
/// itself an email.
const MAX_PREVIEW_PASSES: usize = 3;

/// A redacted text and where its new tokens are.
#[derive(Debug)]
pub struct Redacted {
    pub text: String,
    /// The values tokenized by this call, in text order. Tokens already in
    /// the text are left alone and not listed.
    pub findings: Vec<RedactedFinding>,
}

/// One value replaced by a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedactedFinding {
    pub kind: TokenFormat,
    /// UTF-8 byte offsets of the token in the redacted text.
    pub start: usize,
    pub end: usize,
    pub token: String,
}

/// A restored text. It holds values: zeroized on drop.
pub struct Restored {
    pub text: Zeroizing<String>,
    /// Tokens replaced by their values.
    pub restored: usize,
    /// Those tokens and their subjects (keyed hashes), for the audit record.
    pub tokens: Vec<String>,
    pub subjects: Vec<SubjectHash>,
}

/// A token found in a text, with its record.
struct FoundToken {
    start: usize,
    end: usize,
    record: TokenRecord,
}

impl Vault {
    /// Replaces the PII of `kinds` (empty = all) in `text` by deterministic
    /// tokens of `subject_id`, atomically.
    pub async fn redact_text(
        &self,
        subject_id: &str,
        text: &str,
        kinds: &[String],
    ) -> Result<Redacted, VaultError> {
        self.redact_text_for(None, &mut Vec::new(), subject_id, text, kinds)
            .await
    }

    /// [`Vault::redact_text`] for `caller`: its findings that get a new
    /// token are charged to its new-value limits as Tokenize's items are
    /// (see [`Vault::tokenize_as`]).
    pub async fn redact_text_as(
        &self,
        caller: &NewValueCaller,
        subject_id: &str,
        text: &str,
        kinds: &[String],
    ) -> Result<(Redacted, Vec<QuotaAlert>), VaultError> {
        let mut warnings = Vec::new();
        let redacted = self
            .redact_text_for(Some(caller), &mut warnings, subject_id, text, kinds)
            .await?;
        Ok((redacted, warnings))
    }

    async fn redact_text_for(
        &self,
        caller: Option<&NewValueCaller>,
        warnings: &mut Vec<QuotaAlert>,
        subject_id: &str,
        text: &str,
        kinds: &[String],
    ) -> Result<Redacted, VaultError> {
        self.check_subject(subject_id)?;
        self.check_text(text)?;
        let kinds = parse_kinds(kinds, &self.templates)?;
        let findings: Vec<Finding> = self
            .scanner
            .scan(text)
            .into_iter()
            .filter(|f| kinds.is_empty() || kinds.contains(&f.kind))
            .collect();
        if findings.is_empty() {
            return Ok(Redacted {
                text: text.to_string(),
                findings: Vec::new(),
            });
        }
        let spans: Vec<(usize, usize)> = findings.iter().map(|f| (f.start, f.end)).collect();
        // Only the subject's own tokens count as redacted already: a real
        // value that equals another subject's token is this subject's
        // value (phone, passport, SSN and `text` tokens are drawn from the
        // space of real values).
        let subject = self.system.subject_hash(subject_id);
        let existing = self.find_tokens(text, &spans, Some(&subject)).await?;
        let overlaps_existing =
            |f: &Finding| existing.iter().any(|t| t.start < f.end && f.start < t.end);
        let mut fresh: Vec<Finding> = findings
            .into_iter()
            .filter(|f| !overlaps_existing(f))
            .collect();
        for _ in 0..MAX_PREVIEW_PASSES {
            let more: Vec<Finding> = self
                .found_after_growth(text, &fresh, &kinds)
                .into_iter()
                .filter(|f| !overlaps_existing(f))
                .collect();
            if more.is_empty() {
                break;
            }
            fresh.extend(more);
            fresh.sort_by_key(|f| f.start);
        }
        if fresh.is_empty() {
            return Ok(Redacted {
                text: text.to_string(),
                findings: Vec::new(),
            });
        }
        let items: Vec<TokenizeItem> = fresh
            .iter()
            .map(|f| TokenizeItem {
                value: text[f.start..f.end].to_string(),
                format: f.kind.name().to_string(),
                mode: TokenMode::Deterministic,
                ttl_seconds: 0,
            })
            .collect();
        let tokens = self
            .tokenize_items(subject_id, &items, caller, warnings)
            .await?;
        let spans: Vec<(usize, usize)> = fresh.iter().map(|f| (f.start, f.end)).collect();
        let (redacted, offsets) = splice(text, &spans, &tokens);
        let findings = fresh
            .iter()
            .zip(offsets)
            .zip(tokens)
            .map(|((f, (start, end)), token)| RedactedFinding {
                kind: f.kind.clone(),
                start,
                end,
                token,
            })
            .collect();
        Ok(Redacted {
            text: redacted,
            findings,
        })
    }

    /// Replaces the tokens in `text` that are live tokens of this vault by
    /// their values; everything else is kept as is.
    pub async fn restore_text(&self, text: &str) -> Result<Restored, VaultError> {
        self.restore_text_with(text, None, |_, value| value).await
    }

    /// As [`Vault::restore_text`], only tokens of `subject_id` when given
    /// (other strings, another subject's tokens among them, are left as
    /// they are), with each value shown as `reveal(format, value)` says
    /// (the caller's policy: full or masked).
    pub async fn restore_text_with(
        &self,
        text: &str,
        subject_id: Option<&str>,
        reveal: impl Fn(&str, Zeroizing<String>) -> Zeroizing<String>,
    ) -> Result<Restored, VaultError> {
        self.check_text(text)?;
        let subject = match subject_id {
            Some(subject_id) => {
                self.check_subject(subject_id)?;
                Some(self.system.subject_hash(subject_id))
            }
            None => None,
        };
        let scanned: Vec<(usize, usize)> = self
            .scanner
            .scan(text)
            .iter()
            .map(|f| (f.start, f.end))
            .collect();
        let found = self.find_tokens(text, &scanned, subject.as_ref()).await?;
        if found.is_empty() {
            return Ok(Restored {
                text: Zeroizing::new(text.to_string()),
                restored: 0,
                tokens: Vec::new(),
                subjects: Vec::new(),
            });
        }
        let tokens: Vec<String> = found
            .iter()
            .map(|t| text[t.start..t.end].to_string())
            .collect();
        let spans: Vec<(usize, usize)> = found.iter().map(|t| (t.start, t.end)).collect();
        let records = found.into_iter().map(|t| Some(t.record)).collect();
        let opened = self.open_records(&tokens, records).await?;

        let mut kept_spans = Vec::new();
        let mut values: Vec<Zeroizing<String>> = Vec::new();
        let mut restored_tokens = Vec::new();
        let mut subjects = Vec::new();
        for ((span, token), outcome) in spans.into_iter().zip(tokens).zip(opened) {
            if outcome.status != TokenStatus::Found {
                continue;
            }
            if let (Some(value), Some(format)) = (outcome.value, outcome.format) {
                kept_spans.push(span);
                values.push(reveal(&format, value));
                restored_tokens.push(token);
                subjects.extend(outcome.subject);
            }
        }
        let (restored, _) = splice(text, &kept_spans, &values);
        Ok(Restored {
            text: Zeroizing::new(restored),
            restored: kept_spans.len(),
            tokens: restored_tokens,
            subjects,
        })
    }

    /// Findings that appear only once the email values of `findings` have
    /// grown by `.invalid`, in `text`'s offsets. The scanner reads context
    /// words in a window of characters before a value, so a longer email
    /// token can push a keyword out of (or into) the window of a number
    /// after it, and redacting the redacted text would find it then.
    /// Scanning a preview with every email as long as its token finds those
    /// now, so redaction is idempotent.
    fn found_after_growth(
        &self,
        text: &str,
        findings: &[Finding],
        kinds: &[TokenFormat],
    ) -> Vec<Finding> {
        if !findings.iter().any(|f| f.kind == Format::Email) {
            return Vec::new();
        }
        let spans: Vec<(usize, usize)> = findings.iter().map(|f| (f.start, f.end)).collect();
        let grown: Vec<String> = findings
            .iter()
            .map(|f| {
                let value = &text[f.start..f.end];
                if f.kind == Format::Email {
                    format!("{value}{EMAIL_TOKEN_SUFFIX}")
                } else {
                    value.to_string()
                }
            })
            .collect();
        let (preview, placed) = splice(text, &spans, &grown);
        self.scanner
            .scan(&preview)
            .into_iter()
            .filter(|f| kinds.is_empty() || kinds.contains(&f.kind))
            .filter(|f| !placed.iter().any(|&(s, e)| s < f.end && f.start < e))
            .map(|f| {
                // Only the spans before it grew.
                let shift: usize = placed
                    .iter()
                    .zip(&spans)
                    .filter(|((_, e), _)| *e <= f.start)
                    .map(|((s, e), (os, oe))| (e - s) - (oe - os))
                    .sum();
                Finding {
                    kind: f.kind.clone(),
                    start: f.start - shift,
                    end: f.end - shift,
                }
            })
            .collect()
    }

    fn check_text(&self, text: &str) -> Result<(), VaultError> {
        let max = self.limits.max_text_bytes;
        if text.len() > max {
            return Err(VaultError::InvalidArgument(format!(
                "text: is over {max} bytes"
            )));
        }
        Ok(())
    }

    /// The tokens of this vault in `text` (of `only` this subject, when
    /// given), among `extra` spans and the token-shaped candidates, in one
    /// store call: sorted, non-overlapping (longest wins), any status.
    async fn find_tokens(
        &self,
        text: &str,
        extra: &[(usize, usize)],
        only: Option<&SubjectHash>,
    ) -> Result<Vec<FoundToken>, VaultError> {
        let mut spans = token_candidates(text);
        spans.extend(self.templates.candidates(text));
        spans.extend_from_slice(extra);
        spans.sort_unstable();
        spans.dedup();
        // One lookup per distinct string.
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut strings: Vec<String> = Vec::new();
        let span_keys: Vec<usize> = spans
            .iter()
            .map(|&(start, end)| {
                let s = &text[start..end];
                *index.entry(s).or_insert_with(|| {
                    strings.push(s.to_string());
                    strings.len() - 1
                })
            })
            .collect();
        if strings.is_empty() {
            return Ok(Vec::new());
        }
        let records = self.store.token_records(&strings).await?;
        let mut found: Vec<((usize, usize), &TokenRecord)> = spans
            .iter()
            .zip(span_keys)
            .filter_map(|(&span, key)| records.get(key)?.as_ref().map(|r| (span, r)))
            .filter(|(_, record)| only.is_none_or(|subject| record.subject == *subject))
            .collect();
        let kept = non_overlapping(found.iter().map(|(span, _)| *span).collect());
        found.retain(|(span, _)| kept.binary_search(span).is_ok());
        Ok(found
            .into_iter()
            .map(|((start, end), record)| FoundToken {
                start,
                end,
                record: record.clone(),
            })
            .collect())
    }
}

/// The formats named by `kinds` (built-in or operator-defined, whose
/// findings come from `[[detectors]]`); an unknown name, or a built-in one
/// without a detector, is `InvalidArgument` naming it.
fn parse_kinds(kinds: &[String], templates: &Templates) -> Result<Vec<TokenFormat>, VaultError> {
    kinds
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let shown: String = name.chars().take(32).collect();
            match templates.format(name) {
                Some(TokenFormat::Builtin(Format::Text | Format::Opaque)) => Err(
                    VaultError::InvalidArgument(format!("kinds[{i}]: {shown:?} has no detector")),
                ),
                Some(format) => Ok(format),
                None => Err(VaultError::InvalidArgument(format!(
                    "kinds[{i}]: unknown kind {shown:?}"
                ))),
            }
        })
        .collect()
}

/// The longest of overlapping spans (then the first), sorted by start.
fn non_overlapping(mut spans: Vec<(usize, usize)>) -> Vec<(usize, usize)> {
    spans.sort_unstable_by(|a, b| (b.1 - b.0).cmp(&(a.1 - a.0)).then(a.0.cmp(&b.0)));
    let mut kept: Vec<(usize, usize)> = Vec::new();
    for span in spans {
        if !kept.iter().any(|k| k.0 < span.1 && span.0 < k.1) {
            kept.push(span);
        }
    }
    kept.sort_unstable();
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn overlapping_found_tokens_keep_the_longest() {
        assert_eq!(
            non_overlapping(vec![(0, 5), (2, 12), (12, 14), (20, 22)]),
            vec![(2, 12), (12, 14), (20, 22)]
        );
    }

    #[test]
    fn kinds_are_checked_by_name() {
        assert_eq!(
            parse_kinds(&["card".into(), "phone".into()], &Templates::default()).unwrap(),
            vec![TokenFormat::from(Format::Card), Format::Phone.into()]
        );
        let error =
            parse_kinds(&["card".into(), "cardz".into()], &Templates::default()).unwrap_err();
        assert!(error.to_string().contains("kinds[1]") && error.to_string().contains("cardz"));
        assert!(parse_kinds(&["opaque".into()], &Templates::default()).is_err());
    }
}
