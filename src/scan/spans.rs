//! Where tokens and replacements sit in chat text (pure, like the rest of
//! `scan`): the token-shaped candidate spans RestoreText looks up, and the
//! splice that puts replacements into a text and reports where they went.
//! RedactText and RestoreText (`vault::text`) build on these; the fuzz
//! target `redact` runs them on arbitrary input.
//!
//! It must never panic, whatever the text, and never split a character:
//! every span it returns starts and ends on a char boundary.

use std::sync::OnceLock;

use regex::Regex;

/// Most digit groups in one number-shaped token candidate (a phone written
/// `+7 (916) 123-45-67` has 5).
pub const MAX_GROUPS: usize = 12;
/// Most bytes of one number-shaped token candidate (a bank account with its
/// BIK is 30 digits and separators).
pub const MAX_NUMBER_TOKEN_BYTES: usize = 64;
/// Digits of the shortest (a national phone, `451 5986`) and longest (a
/// bank account with its BIK) number-shaped token.
pub const NUMBER_TOKEN_DIGITS: std::ops::RangeInclusive<usize> = 7..=29;
/// Longest phone extension glued to a number-shaped token (`…4508x769`).
const MAX_EXTENSION_DIGITS: usize = 6;
/// Characters of a compact IBAN.
pub const IBAN_CHARS: std::ops::RangeInclusive<usize> = 15..=34;
/// Longest email local part (RFC 5321).
pub const MAX_LOCAL_PART_BYTES: usize = 64;
/// Email token domains end with this.
pub const EMAIL_TOKEN_SUFFIX: &str = ".invalid";

/// `text` with each span (sorted, non-overlapping) replaced by its
/// replacement, and the byte spans of the replacements in the result.
pub fn splice<S: AsRef<str>>(
    text: &str,
    spans: &[(usize, usize)],
    replacements: &[S],
) -> (String, Vec<(usize, usize)>) {
    let grown: usize = replacements.iter().map(|r| r.as_ref().len()).sum();
    let mut out = String::with_capacity(text.len() + grown);
    let mut offsets = Vec::with_capacity(spans.len());
    let mut at = 0;
    for (&(start, end), replacement) in spans.iter().zip(replacements) {
        out.push_str(&text[at..start]);
        let new_start = out.len();
        out.push_str(replacement.as_ref());
        offsets.push((new_start, out.len()));
        at = end;
    }
    out.push_str(&text[at..]);
    (out, offsets)
}

fn number_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        // The scanner's number chunk: digit groups with the separators the
        // formats allow between them.
        Regex::new(r"\+?[0-9]+(?:(?:[ \u{a0}\-./:()]{1,3}| ?№ ?| [нН]омер )[0-9]+)*")
            .expect("a constant pattern that compiles")
    })
}

fn opaque_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"tok_[a-z2-7]{26}").expect("a constant pattern that compiles"))
}

/// Byte spans of `text` shaped like tokens of the built-in formats,
/// checksums ignored (see the module doc). May overlap and repeat.
pub fn token_candidates(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    number_candidates(text, &mut out);
    iban_candidates(text, &mut out);
    email_candidates(text, &mut out);
    out.extend(opaque_regex().find_iter(text).map(|m| (m.start(), m.end())));
    out
}

fn number_candidates(text: &str, out: &mut Vec<(usize, usize)>) {
    for m in number_regex().find_iter(text) {
        let chunk = &text.as_bytes()[m.start()..m.end()];
        // Digit groups: (start, end, digits) in text offsets.
        let mut groups: Vec<(usize, usize)> = Vec::new();
        let mut i = 0;
        while i < chunk.len() {
            if chunk[i].is_ascii_digit() {
                let start = i;
                while i < chunk.len() && chunk[i].is_ascii_digit() {
                    i += 1;
                }
                groups.push((m.start() + start, m.start() + i));
            } else {
                i += 1;
            }
        }
        let plus = chunk.first() == Some(&b'+');
        for first in 0..groups.len() {
            let mut starts = vec![groups[first].0];
            if first == 0 && plus {
                starts.push(m.start());
            }
            // A national phone's bracketed area code: `(415) 555-0648`.
            if first == 0 && !plus && m.start() > 0 && text.as_bytes()[m.start() - 1] == b'(' {
                starts.push(m.start() - 1);
            }
            let mut digits = 0;
            for last in first..groups.len().min(first + MAX_GROUPS) {
                digits += groups[last].1 - groups[last].0;
                let end = groups[last].1;
                if end - groups[first].0 > MAX_NUMBER_TOKEN_BYTES
                    || digits > *NUMBER_TOKEN_DIGITS.end()
                {
                    break;
                }
                if NUMBER_TOKEN_DIGITS.contains(&digits) {
                    out.extend(starts.iter().map(|&start| (start, end)));
                    if let Some(extended) = extension_end(text.as_bytes(), end) {
                        out.extend(starts.iter().map(|&start| (start, extended)));
                    }
                }
            }
        }
    }
}

/// The end of a phone extension, `x` and 1 to 6 digits, at byte `end`.
fn extension_end(bytes: &[u8], end: usize) -> Option<usize> {
    if bytes.get(end) != Some(&b'x') {
        return None;
    }
    let digits = bytes[end + 1..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    (1..=MAX_EXTENSION_DIGITS)
        .contains(&digits)
        .then_some(end + 1 + digits)
}

fn iban_candidates(text: &str, out: &mut Vec<(usize, usize)>) {
    let bytes = text.as_bytes();
    if bytes.len() < 4 {
        return;
    }
    for p in 0..bytes.len() - 3 {
        let head = &bytes[p..p + 4];
        if !(head[0].is_ascii_uppercase()
            && head[1].is_ascii_uppercase()
            && head[2].is_ascii_digit()
            && head[3].is_ascii_digit())
        {
            continue;
        }
        let mut chars = 4;
        let mut at = p + 4;
        loop {
            let next = match bytes.get(at) {
                Some(b' ') => at + 1,
                Some(_) => at,
                None => break,
            };
            match bytes.get(next) {
                Some(b) if b.is_ascii_uppercase() || b.is_ascii_digit() => {
                    chars += 1;
                    at = next + 1;
                    if chars > *IBAN_CHARS.end() {
                        break;
                    }
                    if IBAN_CHARS.contains(&chars) {
                        out.push((p, at));
                    }
                }
                _ => break,
            }
        }
    }
}

fn is_domain_char(c: char) -> bool {
    c.is_alphanumeric() || c == '-' || c == '.'
}

fn is_local_char(c: char) -> bool {
    c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c)
}

fn email_candidates(text: &str, out: &mut Vec<(usize, usize)>) {
    for (suffix_at, _) in text.match_indices(EMAIL_TOKEN_SUFFIX) {
        let end = suffix_at + EMAIL_TOKEN_SUFFIX.len();
        let before = &text[..suffix_at];
        let domain_start = before
            .char_indices()
            .rev()
            .take_while(|&(_, c)| is_domain_char(c))
            .last()
            .map_or(suffix_at, |(i, _)| i);
        if domain_start == suffix_at || !before[..domain_start].ends_with('@') {
            continue;
        }
        let at_sign = domain_start - 1;
        for (i, c) in before[..at_sign].char_indices().rev() {
            if !is_local_char(c) || at_sign - i > MAX_LOCAL_PART_BYTES {
                break;
            }
            out.push((i, end));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings<'a>(text: &'a str, spans: &[(usize, usize)]) -> Vec<&'a str> {
        spans.iter().map(|&(s, e)| &text[s..e]).collect()
    }

    #[test]
    fn splice_reports_offsets_in_the_new_text() {
        let text = "пишите на a@b.ru или 4111 1111 1111 1111!";
        let email = text.find("a@b.ru").unwrap();
        let card = text.find("4111").unwrap();
        let spans = [(email, email + 6), (card, card + 19)];
        let tokens = ["x@b.ru.invalid", "4111 1198 7654 1111"];
        let (out, offsets) = splice(text, &spans, &tokens);
        assert_eq!(out, "пишите на x@b.ru.invalid или 4111 1198 7654 1111!");
        assert_eq!(strings(&out, &offsets), tokens);
        // The card moved by the 8 bytes `.invalid` added before it.
        assert_eq!(offsets[1].0, card + 8);
    }

    #[test]
    fn splice_without_spans_copies() {
        let (out, offsets) = splice::<&str>("abc", &[], &[]);
        assert_eq!(out, "abc");
        assert!(offsets.is_empty());
    }

    #[test]
    fn number_candidates_cover_every_group_aligned_run() {
        let text = "звоните +7 (916) 123-45-67, заказ 12.05";
        let found = strings(text, &token_candidates(text));
        assert!(found.contains(&"+7 (916) 123-45-67"));
        assert!(found.contains(&"7 (916) 123-45-67"));
        assert!(found.contains(&"916) 123-45-67"));
        // Too few digits to be a token.
        assert!(!found.contains(&"12.05"));
    }

    #[test]
    fn number_candidates_cover_national_phone_tokens() {
        let text = "call (415) 555-0648, 451 5986, +1-903-140-4508x769 or (898)666-3621x0135";
        let found = strings(text, &token_candidates(text));
        for token in [
            "(415) 555-0648",
            "451 5986",
            "+1-903-140-4508x769",
            "(898)666-3621x0135",
        ] {
            assert!(found.contains(&token), "{token} not among {found:?}");
        }
    }

    #[test]
    fn candidates_include_worded_passport_and_card_inside_longer_run() {
        let text = "паспорт 4506 номер 123456; 2024 4111 1198 7654 1111 1";
        let found = strings(text, &token_candidates(text));
        assert!(found.contains(&"4506 номер 123456"));
        assert!(found.contains(&"4111 1198 7654 1111"));
    }

    #[test]
    fn email_candidates_need_the_invalid_suffix() {
        let text = "mail: ivan.petrov@почта.рф.invalid, real a@b.ru";
        let found = strings(text, &token_candidates(text));
        assert!(found.contains(&"ivan.petrov@почта.рф.invalid"));
        assert!(found.contains(&"petrov@почта.рф.invalid"));
        assert!(!found.iter().any(|s| s.contains("a@b.ru")));
        assert!(!found.iter().any(|s| s.starts_with(' ')));
    }

    #[test]
    fn iban_and_opaque_candidates() {
        let text = "IBAN DE89 3704 0044 0532 0130 00 and tok_abcdefghijklmnopqrstuvwxyz.";
        let found = strings(text, &token_candidates(text));
        assert!(found.contains(&"DE89 3704 0044 0532 0130 00"));
        assert!(found.contains(&"tok_abcdefghijklmnopqrstuvwxyz"));
    }

    #[test]
    fn candidates_never_split_a_char_nor_panic() {
        for text in [
            "",
            "+",
            "@.invalid",
            "é@.invalid",
            "x@y.invalid",
            "AB12",
            "№ 1 номер",
        ] {
            for (s, e) in token_candidates(text) {
                assert!(text.is_char_boundary(s) && text.is_char_boundary(e));
            }
        }
    }
}
