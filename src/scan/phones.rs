//! Phone numbers in chat text: which runs of digit groups are phones.
//!
//! Three ways a run is a phone:
//! - international, after a `+`: the digit count fits the national plan
//!   of its calling code where [`NATIONAL_LENGTHS`] knows it (a `(0)`
//!   trunk prefix in brackets, `+41 (0)38 …`, is not counted), else
//!   E.164's 8 to 15 digits;
//! - Russian national, `8` and 10 digits in a Russian layout: no word
//!   needed, the layout says it;
//! - national without a country code (`905-674-3793`, `(415) 555-0648`,
//!   `07700 063 966`, `0490 75 40 81`, `699 956 915`): only with a phone
//!   word, before it (`phone:`, `call me at`, `messages to`, on the line
//!   before as a label) or right after it (`… office`, `…-Fax`), in a
//!   phone layout ([`national_layout_ok`]) that is not a date.
//!
//! Any of them may end in an extension, `x` and up to 6 digits.
//!
//! Why no numbering-plan check for national numbers (libphonenumber's
//! metadata, the `phonenumber` crate): without a country, "valid in some
//! country" is no filter. On presidio-research's synth_dataset_v2.json,
//! 83 of its 92 labelled phones (random digits in each locale's layout)
//! are valid national numbers in at least one of 38 common regions and
//! all 92 are possible ones, and so would be most order numbers of 7 to 13
//! digits. The phone word and the layout tell a phone from another number;
//! libphonenumber cannot, and would cost a 15 MB metadata build step.
//!
//! Nothing here logs or keeps text.

use super::context::Cue;
use super::detectors::{char_after, char_before, Candidate, Run, PRIORITY_PHONE};
use crate::token::format::{lowest_leading_digit, validate, Format};

/// National significant number lengths of calling codes often met in RU/EN
/// chats. Codes not listed get only E.164's 8 to 15 digits in all.
const NATIONAL_LENGTHS: &[(&str, u8, u8)] = &[
    ("1", 10, 10),
    ("7", 10, 10),
    ("20", 9, 10),
    ("27", 9, 9),
    ("30", 10, 10),
    ("31", 9, 9),
    ("32", 8, 9),
    ("33", 9, 9),
    ("34", 9, 9),
    ("36", 8, 9),
    ("39", 6, 11),
    ("40", 9, 9),
    ("41", 9, 9),
    ("43", 4, 13),
    ("44", 9, 10),
    ("45", 8, 8),
    ("46", 7, 9),
    ("47", 8, 8),
    ("48", 9, 9),
    ("49", 6, 11),
    ("55", 10, 11),
    ("61", 9, 9),
    ("81", 9, 10),
    ("82", 8, 10),
    ("86", 8, 11),
    ("90", 10, 10),
    ("91", 10, 10),
    ("351", 9, 9),
    ("353", 7, 9),
    ("358", 5, 12),
    ("370", 8, 8),
    ("371", 8, 8),
    ("372", 7, 8),
    ("374", 8, 8),
    ("375", 9, 9),
    ("380", 9, 9),
    ("420", 9, 9),
    ("971", 8, 9),
    ("972", 8, 9),
    ("992", 9, 9),
    ("993", 8, 8),
    ("994", 9, 9),
    ("995", 9, 9),
    ("996", 9, 9),
    ("998", 9, 9),
];

/// Digits of a national number without a country code: 7 (`451 5986`) to
/// 13 (`21 284 698 2548`), or 15 with the `00` international prefix.
const NATIONAL_DIGITS: std::ops::RangeInclusive<usize> = 7..=13;
/// Digits after `00`, the international prefix written instead of `+`.
const AFTER_00_DIGITS: std::ops::RangeInclusive<usize> = 8..=13;
/// The longest extension after `x`.
const MAX_EXTENSION_DIGITS: usize = 6;

/// Words that, right after a number, say it is a phone (`416 60 039
/// office`, `3660170548-Fax`), lowercase.
const WORDS_AFTER: &[&str] = &[
    "office", "fax", "mobile", "cell", "home", "work", "desk", "phone", "tel", "моб", "раб", "дом",
    "факс",
];

/// Layouts (group lengths) of Russian numbers, `8`/`+7` included.
fn russian_layout_ok(lens: &[usize]) -> bool {
    matches!(
        lens,
        [11] | [1, 10]
            | [1, 3, 7]
            | [1, 3, 3, 4]
            | [1, 3, 3, 2, 2]
            | [4, 3, 2, 2]
            | [4, 7]
            | [4, 3, 4]
            | [1, 4, 2, 2, 2]
            | [1, 4, 6]
            | [1, 5, 1, 2, 2]
            | [1, 3, 2, 2, 3]
    )
}

/// The end of an extension (`x` and 1 to 6 digits, then no letter or
/// digit) starting at byte `end`, if one does.
pub(super) fn extension_end(text: &str, end: usize) -> Option<usize> {
    let rest = text.get(end..)?.strip_prefix('x')?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let after = end + 1 + digits;
    let ok = (1..=MAX_EXTENSION_DIGITS).contains(&digits)
        && !char_after(text, after).is_some_and(|c| c.is_alphanumeric() || c == '_');
    ok.then_some(after)
}

/// A phone after a `+` (`start` is the `+`) or a Russian `8 …` number
/// (`start` is the run's start), ending at `end` (the run's end, or its
/// extension's).
pub(super) fn phone(run: &Run<'_>, start: usize, end: usize, out: &mut Vec<Candidate>) {
    let international = start < run.start;
    let digits = run.digit_values();
    if international {
        if !(8..=15).contains(&digits.len()) {
            return;
        }
        let code = NATIONAL_LENGTHS
            .iter()
            .find(|(code, _, _)| code.bytes().zip(&digits).all(|(c, &d)| c - b'0' == d));
        if let Some((code, min, max)) = code {
            // `+41 (0)38 549 02 90`: the bracketed trunk 0 is not dialled
            // from abroad and is not part of the national number.
            let trunk = usize::from(run.value().contains("(0)"));
            let national = digits.len() - code.len() - trunk;
            if !(usize::from(*min)..=usize::from(*max)).contains(&national) {
                return;
            }
            let first = digits[code.len() + trunk];
            if first < lowest_leading_digit(&digits[..code.len()]) {
                return;
            }
            if *code == "7" && !russian_layout_ok(run.lens) {
                return;
            }
        }
    } else if digits.len() != 11
        || digits[0] != 8
        || digits[1] < lowest_leading_digit(&digits[..1])
        || !russian_layout_ok(run.lens)
    {
        return;
    }
    push_valid(run.text, start, end, out);
}

/// A national number without a country code: needs a phone word before
/// (`cue`) or right after it, a phone layout, and not to be a date.
pub(super) fn national(run: &Run<'_>, cue: Option<Cue>, end: usize, out: &mut Vec<Candidate>) {
    // Most runs have no phone word: the cheap test first.
    if cue != Some(Cue::Kind(Format::Phone)) && !word_after(run.text, end) {
        return;
    }
    let digits = run.digit_values();
    let after_00 = digits.starts_with(&[0, 0]);
    let count_ok = if after_00 {
        AFTER_00_DIGITS.contains(&(digits.len() - 2))
    } else {
        NATIONAL_DIGITS.contains(&digits.len())
    };
    if !count_ok || looks_like_date(run, &digits) {
        return;
    }
    let Some(start) = national_layout_ok(run) else {
        return;
    };
    push_valid(run.text, start, end, out);
}

fn push_valid(text: &str, start: usize, end: usize, out: &mut Vec<Candidate>) {
    if validate(Format::Phone, &text[start..end]).is_ok() {
        out.push(Candidate {
            kind: Format::Phone.into(),
            start,
            end,
            priority: PRIORITY_PHONE,
        });
    }
}

/// Where the number starts if the run is in a national phone layout:
/// - one group of digits;
/// - or groups of at least 2 digits joined by one and the same separator
///   (space, `-`, `.`, no-break space): `905-674-3793`, `0490 75 40 81`;
/// - or an area code, in brackets or followed by a space, then such
///   groups: `(415) 555-0648`, `(898)666-3621`, `495 123-45-67`; with
///   brackets the number starts at the `(`.
fn national_layout_ok(run: &Run<'_>) -> Option<usize> {
    let separators: Vec<&str> = run.separators().collect();
    let Some((&first, rest)) = separators.split_first() else {
        return Some(run.start);
    };
    let bracketed = char_before(run.text, run.start) == Some('(') && first.starts_with(')');
    let area_code = bracketed || first == " " || first == "\u{a0}";
    let (start, uniform) = if bracketed {
        let after = first.trim_start_matches(')');
        if !matches!(after, "" | " " | "-") || run.lens[0] > 5 {
            return None;
        }
        (run.start - 1, rest)
    } else if area_code && !rest.is_empty() {
        (run.start, rest)
    } else {
        (run.start, &separators[..])
    };
    let same = uniform
        .first()
        .is_none_or(|s| matches!(*s, " " | "-" | "." | "\u{a0}") && uniform.iter().all(|t| t == s));
    let groups_ok = run.lens.len() <= 5 && run.lens.iter().all(|&n| (2..=8).contains(&n));
    (same && groups_ok).then_some(start)
}

/// `12.03.2024`, `2024-03-12`, `03/12/24` and the like: a date, whatever
/// word stands before it.
fn looks_like_date(run: &Run<'_>, digits: &[u8]) -> bool {
    let number = |d: &[u8]| d.iter().fold(0u32, |n, &d| n * 10 + u32::from(d));
    let day_month = |a: u32, b: u32| {
        ((1..=31).contains(&a) && (1..=12).contains(&b))
            || ((1..=12).contains(&a) && (1..=31).contains(&b))
    };
    match run.lens {
        [2, 2, 4] | [2, 2, 2] | [1, 2, 4] | [2, 1, 4] | [1, 1, 4] => {
            let (a, rest) = digits.split_at(run.lens[0]);
            let (b, _) = rest.split_at(run.lens[1]);
            day_month(number(a), number(b))
        }
        [4, 2, 2] => {
            let year = number(&digits[..4]);
            (1900..=2100).contains(&year) && day_month(number(&digits[6..8]), number(&digits[4..6]))
        }
        _ => false,
    }
}

/// Whether a phone word follows the number ending at `end`, after at most
/// two spaces or dashes or an opening bracket: `416 60 039 office`,
/// `3660170548-Fax`, `8 916 123-45-67 (моб.)`.
fn word_after(text: &str, end: usize) -> bool {
    let Some(rest) = text.get(end..) else {
        return false;
    };
    let skipped = rest
        .char_indices()
        .take(2)
        .take_while(|(_, c)| matches!(c, ' ' | '-' | '\u{a0}' | '('))
        .last()
        .map_or(0, |(at, c)| at + c.len_utf8());
    let head = &rest[skipped..];
    WORDS_AFTER.iter().any(|word| starts_with_word(head, word))
}

/// Whether `text` starts with the lowercase `word`, in any case, and no
/// letter follows it.
fn starts_with_word(text: &str, word: &str) -> bool {
    let mut chars = text.chars().flat_map(char::to_lowercase);
    word.chars().all(|w| chars.next() == Some(w)) && !chars.next().is_some_and(char::is_alphabetic)
}
