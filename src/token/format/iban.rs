//! The `iban` format: international bank account numbers (mod-97), with
//! the registered length per country.

use rand::Rng;

use super::super::checks::iban_mod97;
use super::classes::Class;
use super::layout::{draw_until, render};
use super::FormatError;

/// IBAN lengths of the SEPA countries and of some others met in RU/EN chats
/// (SWIFT IBAN registry). Other countries get only the 15–34 range.
pub(super) const IBAN_LENGTHS: &[(&str, usize)] = &[
    ("AD", 24),
    ("AE", 23),
    ("AL", 28),
    ("AT", 20),
    ("AZ", 28),
    ("BA", 20),
    ("BE", 16),
    ("BG", 22),
    ("BR", 29),
    ("BY", 28),
    ("CH", 21),
    ("CY", 28),
    ("CZ", 24),
    ("DE", 22),
    ("DK", 18),
    ("EE", 20),
    ("ES", 24),
    ("FI", 18),
    ("FR", 27),
    ("GB", 22),
    ("GE", 22),
    ("GI", 23),
    ("GR", 27),
    ("HR", 21),
    ("HU", 28),
    ("IE", 22),
    ("IL", 23),
    ("IS", 26),
    ("IT", 27),
    ("KZ", 20),
    ("LI", 21),
    ("LT", 20),
    ("LU", 20),
    ("LV", 21),
    ("MC", 27),
    ("MD", 24),
    ("ME", 22),
    ("MK", 19),
    ("MT", 31),
    ("NL", 18),
    ("NO", 15),
    ("PL", 28),
    ("PT", 25),
    ("RO", 24),
    ("RS", 22),
    ("RU", 33),
    ("SA", 24),
    ("SE", 24),
    ("SI", 19),
    ("SK", 24),
    ("SM", 27),
    ("TR", 26),
    ("UA", 29),
    ("VA", 22),
    ("XK", 20),
];

pub(super) fn iban_length(country: &str) -> Option<usize> {
    IBAN_LENGTHS
        .iter()
        .find(|(code, _)| *code == country)
        .map(|&(_, len)| len)
}

/// A valid IBAN in compact uppercase form. Spaces may separate groups,
/// one at a time; input case does not matter.
pub(super) fn parse_iban(value: &str) -> Result<String, FormatError> {
    const WHAT: &str = "iban";
    let length_error = FormatError::InvalidLength {
        expected: "15 to 34 iban characters",
    };
    let mut compact = String::with_capacity(34);
    let mut after_space = true;
    for c in value.chars() {
        if c == ' ' {
            if after_space {
                return Err(FormatError::InvalidLayout { what: WHAT });
            }
            after_space = true;
        } else if c.is_ascii_alphanumeric() {
            if compact.len() == 34 {
                return Err(length_error);
            }
            compact.push(c.to_ascii_uppercase());
            after_space = false;
        } else {
            return Err(FormatError::InvalidCharacter { what: WHAT });
        }
    }
    if after_space {
        return Err(FormatError::InvalidLayout { what: WHAT });
    }
    if compact.len() < 15 {
        return Err(length_error);
    }
    check_iban_parts(&compact)?;
    Ok(compact)
}

/// Country code, check digits, country length and mod-97 of a compact,
/// uppercase, alphanumeric IBAN of 15 to 34 characters.
fn check_iban_parts(compact: &str) -> Result<(), FormatError> {
    let bytes = compact.as_bytes();
    if !bytes[..2].iter().all(u8::is_ascii_uppercase) {
        return Err(FormatError::InvalidPart {
            expected: "a two-letter country code at the start of the iban",
        });
    }
    if !bytes[2..4].iter().all(u8::is_ascii_digit) {
        return Err(FormatError::InvalidPart {
            expected: "two check digits after the iban country code",
        });
    }
    // Bytes 0..2 are ASCII letters, so this slice is on char boundaries.
    if iban_length(&compact[..2]).is_some_and(|len| len != compact.len()) {
        return Err(FormatError::InvalidLength {
            expected: "the iban length registered for its country",
        });
    }
    if iban_mod97(compact) != Some(1) {
        return Err(FormatError::ChecksumMismatch {
            what: "iban",
            check: "the mod-97 check",
        });
    }
    Ok(())
}

pub(super) fn iban_token<R: Rng + ?Sized>(value: &str, compact: &str, rng: &mut R) -> String {
    let mut token = String::with_capacity(compact.len());
    let draw = |t: &mut String| {
        t.clear();
        t.extend(compact.chars().enumerate().map(|(i, c)| match i {
            // The country code is kept; everything after it is drawn with
            // a digit where the value has a digit and a letter otherwise.
            0 | 1 => c,
            _ if c.is_ascii_digit() => Class::Digit.random(rng),
            _ => Class::LatinUpper.random(rng),
        }));
    };
    if !draw_until(&mut token, draw, |t| iban_mod97(t) != Some(1)) {
        // One changed check digit always moves the remainder mod 97.
        token = token
            .chars()
            .enumerate()
            .map(|(i, c)| if i == 3 { Class::Digit.next(c) } else { c })
            .collect();
    }
    render(value, |c| c.is_ascii_alphanumeric(), token.chars())
}
