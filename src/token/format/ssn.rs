//! The `us_ssn` format: US Social Security numbers.

use rand::Rng;

use super::super::checks::ssn_issuable;
use super::layout::{fill_random_digits, parse_groups, render_digits};
use super::FormatError;

/// Area (3 digits), group (2) and serial (4) of a valid SSN.
pub(super) fn parse_ssn(value: &str) -> Result<Vec<u8>, FormatError> {
    const WHAT: &str = "ssn";
    let grouped = parse_groups(value, WHAT, |c| c == '-', 1)?;
    if grouped.digits.len() != 9 {
        return Err(FormatError::InvalidLength {
            expected: "9 digits",
        });
    }
    if !matches!(grouped.groups.as_slice(), [9] | [3, 2, 4]) {
        return Err(FormatError::InvalidLayout { what: WHAT });
    }
    let number = |range: std::ops::Range<usize>| {
        grouped.digits[range]
            .iter()
            .fold(0u16, |n, &d| n * 10 + u16::from(d))
    };
    let group = u8::try_from(number(3..5)).unwrap_or(u8::MAX);
    if !ssn_issuable(number(0..3), group, number(5..9)) {
        return Err(FormatError::SsnNotIssued);
    }
    Ok(grouped.digits)
}

pub(super) fn ssn_token<R: Rng + ?Sized>(value: &str, ssn: &[u8], rng: &mut R) -> String {
    let mut token = ssn.to_vec();
    fill_random_digits(&mut token, rng);
    // Area 9xx is never issued: the token can't be a real SSN, and it
    // differs from the value, whose area is at most 899.
    token[0] = 9;
    render_digits(value, &token)
}
