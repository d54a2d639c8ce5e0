//! The `card` format: payment card numbers (Luhn).

use rand::Rng;

use super::super::checks::luhn_valid;
use super::layout::{draw_digits, parse_groups, render_digits};
use super::FormatError;

fn is_card_separator(c: char) -> bool {
    matches!(c, ' ' | '-' | '\u{a0}')
}

pub(super) fn parse_card(value: &str) -> Result<Vec<u8>, FormatError> {
    const WHAT: &str = "card number";
    let digits = parse_groups(value, WHAT, is_card_separator, 1)?.digits;
    if !(12..=19).contains(&digits.len()) {
        return Err(FormatError::InvalidLength {
            expected: "12 to 19 digits",
        });
    }
    if !luhn_valid(&digits) {
        return Err(FormatError::ChecksumMismatch {
            what: WHAT,
            check: "the Luhn check",
        });
    }
    Ok(digits)
}

/// Leading digits a card token keeps: the 6-digit IIN, or fewer so that a
/// short card still has at least 6 random digits between them and the last 4.
pub(super) fn card_kept_prefix(len: usize) -> usize {
    len.saturating_sub(4 + 6).min(6)
}

pub(super) fn card_token<R: Rng + ?Sized>(value: &str, card: &[u8], rng: &mut R) -> String {
    let mut token = card.to_vec();
    let random = card_kept_prefix(card.len())..card.len().saturating_sub(4);
    // The check digit is among the kept last 4, so the repair steps the first
    // random digit instead: any single-digit change moves the Luhn sum.
    let repair_at = random.start;
    draw_digits(&mut token, random, repair_at, |t| !luhn_valid(t), rng);
    render_digits(value, &token)
}
