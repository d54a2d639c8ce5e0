//! The Russian document formats: `ru_passport`, `ru_snils`, `ru_inn`,
//! `ru_ogrn` and `ru_bank_account`.

use rand::Rng;

use super::super::checks::{
    bank_account_key_valid, inn_valid, ogrn_valid, snils_valid, SNILS_LAST_UNCHECKED,
};
use super::layout::{
    draw_digits, draw_until, next_digit, parse_groups, parse_plain_digits, render_digits,
};
use super::FormatError;

// ---------------------------------------------------------------------------
// ru_passport

/// The word that may stand between a passport's series and number, as in
/// `серия 4506 номер 123456`, with one space either side; it is read as `№`.
const PASSPORT_NUMBER_WORD: &str = " номер ";

pub(super) fn parse_passport(value: &str) -> Result<Vec<u8>, FormatError> {
    const WHAT: &str = "passport number";
    // `4506 номер 123456` is `4506 № 123456` written out. The token copies
    // the value's layout, word included, so only parsing needs to know.
    let worded;
    let value = match value.split_once(PASSPORT_NUMBER_WORD) {
        Some((series, number)) => {
            worded = format!("{series} № {number}");
            worded.as_str()
        }
        None => value,
    };
    // Up to three separators, for `4506 № 123456`.
    let grouped = parse_groups(value, WHAT, |c| matches!(c, ' ' | '-' | '№'), 3)?;
    if grouped.digits.len() != 10 {
        return Err(FormatError::InvalidLength {
            expected: "10 digits: a 4-digit series and a 6-digit number",
        });
    }
    // Separators only between the series halves and before the number.
    if !matches!(grouped.groups.as_slice(), [10] | [4, 6] | [2, 2, 6]) {
        return Err(FormatError::InvalidLayout { what: WHAT });
    }
    Ok(grouped.digits)
}

pub(super) fn passport_token<R: Rng + ?Sized>(value: &str, passport: &[u8], rng: &mut R) -> String {
    let mut token = passport.to_vec();
    let len = token.len();
    draw_digits(&mut token, 0..len, len - 1, |t| t != passport, rng);
    render_digits(value, &token)
}

// ---------------------------------------------------------------------------
// ru_snils

pub(super) fn parse_snils(value: &str) -> Result<Vec<u8>, FormatError> {
    const WHAT: &str = "snils";
    let grouped = parse_groups(value, WHAT, |c| matches!(c, ' ' | '-'), 1)?;
    if grouped.digits.len() != 11 {
        return Err(FormatError::InvalidLength {
            expected: "11 digits",
        });
    }
    if !matches!(grouped.groups.as_slice(), [11] | [3, 3, 3, 2]) {
        return Err(FormatError::InvalidLayout { what: WHAT });
    }
    if !snils_valid(&grouped.digits) {
        return Err(FormatError::ChecksumMismatch {
            what: WHAT,
            check: "its checksum",
        });
    }
    Ok(grouped.digits)
}

/// Any failing SNILS differs from the valid value, so no comparison is needed.
pub(super) fn snils_token<R: Rng + ?Sized>(value: &str, rng: &mut R) -> String {
    let mut token = [0u8; 11];
    let draw = |t: &mut [u8; 11]| {
        // Numbers up to 001-001-998 pass any control digits, so the token's
        // number is drawn above them.
        let number: u32 = rng.random_range(SNILS_LAST_UNCHECKED + 1..=999_999_999);
        let control: u32 = rng.random_range(0..100);
        write_decimal(&mut t[..9], number);
        write_decimal(&mut t[9..], control);
    };
    if !draw_until(&mut token, draw, |t| !snils_valid(t)) {
        next_digit(&mut token[10]);
    }
    render_digits(value, &token)
}

/// Writes `n` into `digits` as zero-padded decimal (low digits kept).
pub(super) fn write_decimal(digits: &mut [u8], mut n: u32) {
    for digit in digits.iter_mut().rev() {
        *digit = (n % 10) as u8;
        n /= 10;
    }
}

// ---------------------------------------------------------------------------
// ru_inn

pub(super) fn parse_inn(value: &str) -> Result<Vec<u8>, FormatError> {
    let digits = parse_plain_digits(value, "inn")?;
    if !matches!(digits.len(), 10 | 12) {
        return Err(FormatError::InvalidLength {
            expected: "10 or 12 digits",
        });
    }
    if !inn_valid(&digits) {
        return Err(FormatError::ChecksumMismatch {
            what: "inn",
            check: "its checksum",
        });
    }
    Ok(digits)
}

pub(super) fn inn_token<R: Rng + ?Sized>(value: &str, inn: &[u8], rng: &mut R) -> String {
    let mut token = inn.to_vec();
    let len = token.len();
    // The last digit is a control digit of both INN kinds.
    draw_digits(&mut token, 0..len, len - 1, |t| !inn_valid(t), rng);
    render_digits(value, &token)
}

// ---------------------------------------------------------------------------
// ru_ogrn

pub(super) fn parse_ogrn(value: &str) -> Result<Vec<u8>, FormatError> {
    let digits = parse_plain_digits(value, "ogrn")?;
    // The first digit is the record kind: 1 or 5 for a company's OGRN,
    // 3 for a sole trader's OGRNIP.
    match (digits.len(), digits.first()) {
        (13, Some(1 | 5)) | (15, Some(3)) => {}
        (13, _) => {
            return Err(FormatError::InvalidPart {
                expected: "an ogrn starting with 1 or 5",
            })
        }
        (15, _) => {
            return Err(FormatError::InvalidPart {
                expected: "an ogrnip starting with 3",
            })
        }
        _ => {
            return Err(FormatError::InvalidLength {
                expected: "13 (ogrn) or 15 (ogrnip) digits",
            })
        }
    }
    if !ogrn_valid(&digits) {
        return Err(FormatError::ChecksumMismatch {
            what: "ogrn",
            check: "its checksum",
        });
    }
    Ok(digits)
}

pub(super) fn ogrn_token<R: Rng + ?Sized>(value: &str, ogrn: &[u8], rng: &mut R) -> String {
    let mut token = ogrn.to_vec();
    let len = token.len();
    draw_digits(&mut token, 1..len, len - 1, |t| !ogrn_valid(t), rng);
    render_digits(value, &token)
}

// ---------------------------------------------------------------------------
// ru_bank_account

/// Digits of a bank account value: the BIK's 9 (if given) then the
/// account's 20.
pub(super) struct BankAccount {
    digits: Vec<u8>,
    has_bik: bool,
}

/// Leading account digits a token keeps: the 5-digit account class and the
/// 3-digit currency, which say what kind of account it is but not whose.
const ACCOUNT_KEPT_PREFIX: usize = 8;
/// Position of the key digit in an account.
pub(super) const ACCOUNT_KEY_AT: usize = 8;

pub(super) fn parse_bank_account(value: &str) -> Result<BankAccount, FormatError> {
    const WHAT: &str = "bank account";
    if !value
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '/' | ':'))
    {
        return Err(FormatError::InvalidCharacter { what: WHAT });
    }
    match value.bytes().filter(u8::is_ascii_digit).count() {
        20 => {
            let account = parse_groups(value, WHAT, |c| c == ' ', 1)?.digits;
            Ok(BankAccount {
                digits: account,
                has_bik: false,
            })
        }
        29 => parse_bik_and_account(value),
        _ => Err(FormatError::InvalidLength {
            expected: "a 20-digit account, optionally after a 9-digit bik",
        }),
    }
}

/// `BIK<sep>ACCOUNT`, where the BIK is 9 digits starting `04`, `<sep>` is
/// one space, `/` or `:`, and the account has 20 digits.
fn parse_bik_and_account(value: &str) -> Result<BankAccount, FormatError> {
    const WHAT: &str = "bank account";
    let bytes = value.as_bytes();
    let bik_then_separator = bytes.len() > 10
        && bytes[..9].iter().all(u8::is_ascii_digit)
        && matches!(bytes[9], b' ' | b'/' | b':');
    if !bik_then_separator {
        return Err(FormatError::InvalidLayout { what: WHAT });
    }
    // Bytes 0..10 are ASCII, so both slices are on char boundaries.
    let mut digits = parse_plain_digits(&value[..9], "bik")?;
    if !digits.starts_with(&[0, 4]) {
        return Err(FormatError::InvalidPart {
            expected: "a bik starting with 04",
        });
    }
    let account = parse_groups(&value[10..], WHAT, |c| c == ' ', 1)?.digits;
    if !bank_account_key_valid(&digits, &account) {
        return Err(FormatError::ChecksumMismatch {
            what: WHAT,
            check: "the key check against its bik",
        });
    }
    digits.extend_from_slice(&account);
    Ok(BankAccount {
        digits,
        has_bik: true,
    })
}

pub(super) fn bank_account_token<R: Rng + ?Sized>(
    value: &str,
    input: &BankAccount,
    rng: &mut R,
) -> String {
    let has_bik = input.has_bik;
    let start = if has_bik { 9 } else { 0 };
    let mut token = input.digits.clone();
    let random = start + ACCOUNT_KEPT_PREFIX..token.len();
    let accept = |t: &[u8]| {
        if has_bik {
            let (bik, account) = t.split_at(9);
            !bank_account_key_valid(bik, account)
        } else {
            t != input.digits.as_slice()
        }
    };
    // Every key weight (7, 1, 3) is prime to 10, so stepping the key digit
    // breaks a passing key, and it is a drawn digit either way.
    draw_digits(&mut token, random, start + ACCOUNT_KEY_AT, accept, rng);
    render_digits(value, &token)
}
