//! The `phone` format: E.164 and Russian national `8 ...` numbers.

use rand::Rng;

use super::layout::{ascii_digit, draw_until, fill_random_digits, next_digit, render_digits};
use super::FormatError;

/// The longest run of separators a phone number may have between digits, as
/// in `) - ` (`8 (916) - 123`).
const MAX_PHONE_SEPARATOR_RUN: usize = 3;
/// E.164 allows at most 15 digits including the country code; fewer than 8
/// is shorter than the shortest national plan in use with its country code.
const PHONE_DIGITS: std::ops::RangeInclusive<usize> = 8..=15;

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
    let digits = phone_digits(body)?;
    let digit_at_both_ends = body.starts_with(|c: char| c.is_ascii_digit())
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
        if digits.first() != Some(&8) {
            return Err(FormatError::InvalidPart {
                expected: "a + with the country code, or a national number starting with 8",
            });
        }
        if digits.len() != 11 {
            return Err(FormatError::InvalidLength {
                expected: "11 digits in a national number starting with 8",
            });
        }
        1
    };
    Ok(Phone { digits, kept })
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

pub(super) fn phone_token<R: Rng + ?Sized>(value: &str, phone: &Phone, rng: &mut R) -> String {
    let mut token = phone.digits.clone();
    let len = token.len();
    let kept = phone.kept;
    let draw = |t: &mut Vec<u8>| {
        if let Some(rest) = t.get_mut(kept..) {
            fill_random_digits(rest, rng);
            // A national number never starts with 0 after the country code
            // or trunk 8; keep the token looking like a dialable number.
            if let Some(first) = rest.first_mut() {
                *first = rng.random_range(1..10);
            }
        }
    };
    if !draw_until(&mut token, draw, |t| t != &phone.digits) {
        // At least 5 digits follow the country code, so the last one is
        // never the nonzero first digit.
        if let Some(last) = token.get_mut(len.saturating_sub(1)) {
            next_digit(last);
        }
    }
    render_digits(value, &token)
}
