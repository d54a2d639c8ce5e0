//! The `phone` format: E.164 numbers, and national numbers as people
//! write them without a country code (Russian `8 ...`, `(415) 555-0648`,
//! `07700 063 966`, `0490 75 40 81`), with an optional extension `x123`.
//!
//! A national number carries no country, so no numbering plan can be
//! checked here: it is 7 to 15 digits in a phone layout. Which numbers in
//! chat text are phones is the scanner's call (it wants a phone word).

use rand::Rng;

use super::layout::{ascii_digit, draw_until, fill_random_digits, next_digit, render_digits};
use super::FormatError;

/// The longest run of separators a phone number may have between digits, as
/// in `) - ` (`8 (916) - 123`).
const MAX_PHONE_SEPARATOR_RUN: usize = 3;
/// E.164 allows at most 15 digits including the country code; fewer than 8
/// is shorter than the shortest national plan in use with its country code.
const PHONE_DIGITS: std::ops::RangeInclusive<usize> = 8..=15;
/// A national number: the shortest plans in use have 7 digits with their
/// area code (`451 5986`); with the `00` international prefix it may be as
/// long as an E.164 number plus the two zeros.
const NATIONAL_DIGITS: std::ops::RangeInclusive<usize> = 7..=17;
/// The longest extension after `x` (`+1-903-140-4508x769`).
const MAX_EXTENSION_DIGITS: usize = 6;

/// A phone number's digits and how many leading ones the token keeps.
pub(super) struct Phone {
    digits: Vec<u8>,
    kept: usize,
}

pub(super) fn parse_phone(value: &str) -> Result<Phone, FormatError> {
    const WHAT: &str = "phone number";
    let (international, body) = match value.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let (body, extension) = split_extension(body);
    let mut digits = phone_digits(body)?;
    // A national number may open with its bracketed area code.
    let digit_at_both_ends = body
        .strip_prefix('(')
        .unwrap_or(body)
        .starts_with(|c: char| c.is_ascii_digit())
        && body.ends_with(|c: char| c.is_ascii_digit());
    if !digit_at_both_ends {
        return Err(FormatError::InvalidLayout { what: WHAT });
    }
    let kept = if international {
        if !PHONE_DIGITS.contains(&digits.len()) {
            return Err(FormatError::InvalidLength {
                expected: "8 to 15 digits after the +",
            });
        }
        if digits.first() == Some(&0) {
            return Err(FormatError::InvalidPart {
                expected: "a country code that does not start with 0",
            });
        }
        country_code_len(&digits)
    } else {
        if !NATIONAL_DIGITS.contains(&digits.len()) {
            return Err(FormatError::InvalidLength {
                expected: "7 to 17 digits in a national number",
            });
        }
        national_kept_len(&digits)
    };
    // Extension digits are drawn like the number's own: they follow the
    // kept prefix, so the token keeps the `x` and redraws them.
    digits.extend(extension.bytes().map(|b| b - b'0'));
    Ok(Phone { digits, kept })
}

/// `body` without a trailing extension (`x` and 1 to 6 digits right after
/// the last digit of the number), and the extension's digits ("" if none).
fn split_extension(body: &str) -> (&str, &str) {
    match body.rsplit_once('x') {
        Some((number, extension))
            if (1..=MAX_EXTENSION_DIGITS).contains(&extension.len())
                && extension.bytes().all(|b| b.is_ascii_digit())
                && number.ends_with(|c: char| c.is_ascii_digit()) =>
        {
            (number, extension)
        }
        _ => (body, ""),
    }
}

/// Leading digits of a national number that its token keeps: the trunk
/// `8` of a Russian number, the trunk `0` of most of Europe's and
/// Australia's, or the `00` international prefix. They say how the number
/// is dialled, not whose it is.
pub(super) fn national_kept_len(digits: &[u8]) -> usize {
    match digits {
        [8, ..] if digits.len() == 11 => 1,
        [0, 0, ..] => 2,
        [0, ..] => 1,
        _ => 0,
    }
}

/// The digits of a phone number after its optional `+`, checking that the
/// rest are separators: space, `-`, `.`, and balanced, non-nested, non-empty
/// brackets.
fn phone_digits(body: &str) -> Result<Vec<u8>, FormatError> {
    const WHAT: &str = "phone number";
    let layout_error = FormatError::InvalidLayout { what: WHAT };
    let mut digits = Vec::with_capacity(*PHONE_DIGITS.end());
    let mut open_bracket_at = None;
    let mut run = 0;
    for c in body.chars() {
        if let Some(digit) = ascii_digit(c) {
            digits.push(digit);
            run = 0;
            continue;
        }
        match c {
            '(' if open_bracket_at.is_none() => open_bracket_at = Some(digits.len()),
            ')' if open_bracket_at.is_some_and(|at| at < digits.len()) => open_bracket_at = None,
            '(' | ')' => return Err(layout_error),
            ' ' | '-' | '.' => {}
            _ => return Err(FormatError::InvalidCharacter { what: WHAT }),
        }
        run += 1;
        if run > MAX_PHONE_SEPARATOR_RUN {
            return Err(layout_error);
        }
    }
    if open_bracket_at.is_some() {
        return Err(layout_error);
    }
    Ok(digits)
}

/// Length of the ITU-T E.164 country calling code at the start of `digits`.
pub(super) fn country_code_len(digits: &[u8]) -> usize {
    match digits {
        [1 | 7, ..] => 1,
        [a, b, ..] if is_two_digit_country_code(a * 10 + b) => 2,
        _ => 3,
    }
}

/// The two-digit calling codes ITU-T has assigned; every other code that is
/// not 1 or 7 has three digits.
fn is_two_digit_country_code(code: u8) -> bool {
    matches!(
        code,
        20 | 27
            | 30..=34
            | 36
            | 39
            | 40
            | 41
            | 43..=49
            | 51..=58
            | 60..=66
            | 81
            | 82
            | 84
            | 86
            | 90..=95
            | 98
    )
}

/// The lowest digit a national number may start with after `prefix` (its
/// country code or trunk prefix, as a token keeps it) in the plans the
/// scanner checks: Russian numbers (`+7`, trunk `8`) start with 3 to 9,
/// North American area codes with 2 to 9; 0 for other plans (a stray
/// trunk 0 after `+44` is still a phone in text). The scanner takes only
/// such numbers for phones, and tokens are drawn among them, so that a
/// token is a number someone could have and is found again in text.
pub(crate) fn lowest_leading_digit(prefix: &[u8]) -> u8 {
    match prefix {
        [7] | [8] => 3,
        [1] => 2,
        _ => 0,
    }
}

pub(super) fn phone_token<R: Rng + ?Sized>(value: &str, phone: &Phone, rng: &mut R) -> String {
    let mut token = phone.digits.clone();
    let len = token.len();
    let kept = phone.kept;
    // No national number starts with 0 after its country code or trunk
    // prefix, whatever its plan.
    let lowest = lowest_leading_digit(&phone.digits[..kept.min(len)]).max(1);
    let draw = |t: &mut Vec<u8>| {
        if let Some(rest) = t.get_mut(kept..) {
            fill_random_digits(rest, rng);
            // Keep the token a dialable number of its plan.
            if let Some(first) = rest.first_mut() {
                *first = rng.random_range(lowest..10);
            }
        }
    };
    if !draw_until(&mut token, draw, |t| t != &phone.digits) {
        // At least 5 digits follow the country code or trunk prefix, so
        // the last one is never the nonzero first digit.
        if let Some(last) = token.get_mut(len.saturating_sub(1)) {
            next_digit(last);
        }
    }
    render_digits(value, &token)
}
