//! Token formats: what a value of each format must look like, and how a
//! format-preserving token is drawn for it.
//!
//! This module owns the twelve formats of `SPEC.md` ("Token formats"), with
//! the validation rules of `PII-RULES.md`: [`validate`] says whether a value
//! is acceptable, [`generate_token`] draws one random candidate token for it.
//! A token has the value's shape (same characters at the same byte positions
//! wherever the format keeps the layout, a digit where the value has a
//! digit, a letter of the same case and script where it has a letter) and
//! copies only the parts the spec names as kept (card first/last digits,
//! phone country code, IBAN country, ...), which are not secret on their own.
//!
//! It must never:
//! - put any part of a value into an error: every field of [`FormatError`] is
//!   a `&'static str`, so a message cannot carry one;
//! - compute a token from a value: what the format does not keep (layout,
//!   the named kept parts, an email domain, text's non-letters) is drawn
//!   from the caller's CSPRNG;
//! - return a token that passes the format's check (Luhn, mod-97, SNILS,
//!   INN, OGRN, BIK key, SSN issuance) or that equals the value;
//! - panic, whatever the input; or look at the vault (uniqueness among
//!   stored tokens is the caller's retry loop).
//!
//! Email tokens keep a valid address shape but never reach a mailbox: the
//! local part is replaced character by character and the domain is kept
//! with `.invalid` appended. `.invalid` is reserved by RFC 2606 and RFC 6761
//! §6.4 and never resolves, so mail to a token bounces at the sender.
//!
//! Drawing is rejection sampling: a candidate that passes the check or
//! equals the value is thrown away and redrawn, which keeps tokens uniform
//! over the acceptable ones. At most `MAX_DRAWS` (32) draws are made; should a
//! broken generator exhaust them, one character is stepped to the next of its
//! class, which fixes the candidate deterministically instead of looping.

mod card;
mod classes;
mod email;
mod iban;
mod layout;
mod phone;
mod ru;
mod ssn;
#[cfg(test)]
mod tests;
mod text;

use std::fmt;

use rand::Rng;

use card::{card_token, parse_card};
use classes::replace_by_class;
use email::{email_token, parse_email};
use iban::{iban_token, parse_iban};
pub(crate) use phone::lowest_leading_digit;
use phone::{parse_phone, phone_token};
use ru::{
    bank_account_token, inn_token, ogrn_token, parse_bank_account, parse_inn, parse_ogrn,
    parse_passport, parse_snils, passport_token, snils_token,
};
use ssn::{parse_ssn, ssn_token};
use text::{opaque_token, parse_text};

/// A token format, as named in `TokenizeItem.format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// Payment card number (PAN).
    Card,
    /// Phone number: E.164, or national without a country code.
    Phone,
    /// Email address.
    Email,
    /// International bank account number.
    Iban,
    /// Russian internal passport: series and number.
    RuPassport,
    /// Russian individual insurance account number (СНИЛС).
    RuSnils,
    /// Russian taxpayer number (ИНН), company or person.
    RuInn,
    /// Russian state registration number (ОГРН / ОГРНИП).
    RuOgrn,
    /// Russian bank account, optionally with its bank's BIK.
    RuBankAccount,
    /// US Social Security number.
    UsSsn,
    /// Free text: every letter and digit replaced, the rest kept.
    Text,
    /// Anything: the token has no relation to the value's shape.
    Opaque,
}

impl Format {
    /// Every format, in the order of the spec's table.
    pub const ALL: [Format; 12] = [
        Format::Card,
        Format::Phone,
        Format::Email,
        Format::Iban,
        Format::RuPassport,
        Format::RuSnils,
        Format::RuInn,
        Format::RuOgrn,
        Format::RuBankAccount,
        Format::UsSsn,
        Format::Text,
        Format::Opaque,
    ];

    /// The name used on the wire and in configuration.
    pub fn name(self) -> &'static str {
        match self {
            Format::Card => "card",
            Format::Phone => "phone",
            Format::Email => "email",
            Format::Iban => "iban",
            Format::RuPassport => "ru_passport",
            Format::RuSnils => "ru_snils",
            Format::RuInn => "ru_inn",
            Format::RuOgrn => "ru_ogrn",
            Format::RuBankAccount => "ru_bank_account",
            Format::UsSsn => "us_ssn",
            Format::Text => "text",
            Format::Opaque => "opaque",
        }
    }

    /// The format with this exact (lowercase) name.
    pub fn from_name(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|format| format.name() == name)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a value is not acceptable for its format.
///
/// Messages are lowercase and say what is wrong, never with what: every
/// field is a `&'static str` chosen here, so no part of a value can reach a
/// client or a log through an error.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormatError {
    /// The value is the empty string.
    #[error("value is empty")]
    Empty,
    /// A character the format allows nowhere.
    #[error("{what} contains a character that is not allowed")]
    InvalidCharacter {
        /// The kind of value, e.g. "card number".
        what: &'static str,
    },
    /// Separators at the start or end, too many in a row, or between the
    /// wrong digit groups; unbalanced brackets; misplaced dots or hyphens.
    #[error("{what} has separators in the wrong places")]
    InvalidLayout {
        /// The kind of value, e.g. "card number".
        what: &'static str,
    },
    /// Wrong number of digits or characters.
    #[error("expected {expected}")]
    InvalidLength {
        /// What the format accepts, e.g. "12 to 19 digits".
        expected: &'static str,
    },
    /// A part with a fixed set of values (a prefix, a kind digit, a country
    /// code, the `@`) is missing or not one of them.
    #[error("expected {expected}")]
    InvalidPart {
        /// What the format accepts, e.g. "a bik starting with 04".
        expected: &'static str,
    },
    /// The value's check digits do not match.
    #[error("{what} fails {check}")]
    ChecksumMismatch {
        /// The kind of value, e.g. "card number".
        what: &'static str,
        /// The check that failed, e.g. "the Luhn check".
        check: &'static str,
    },
    /// An SSN in a range the SSA never issues (area 000, 666, 900–999,
    /// group 00 or serial 0000).
    #[error("ssn is in a range that is never issued")]
    SsnNotIssued,
    /// A text with no letter or digit: its token would equal it.
    #[error("text has no letter or digit to tokenize")]
    NothingToTokenize,
}

/// Checks that `value` is a valid value of `format`.
///
/// # Errors
///
/// A [`FormatError`] saying what is wrong, without any part of the value.
pub fn validate(format: Format, value: &str) -> Result<(), FormatError> {
    if value.is_empty() {
        return Err(FormatError::Empty);
    }
    match format {
        Format::Card => parse_card(value).map(drop),
        Format::Phone => parse_phone(value).map(drop),
        Format::Email => parse_email(value).map(drop),
        Format::Iban => parse_iban(value).map(drop),
        Format::RuPassport => parse_passport(value).map(drop),
        Format::RuSnils => parse_snils(value).map(drop),
        Format::RuInn => parse_inn(value).map(drop),
        Format::RuOgrn => parse_ogrn(value).map(drop),
        Format::RuBankAccount => parse_bank_account(value).map(drop),
        Format::UsSsn => parse_ssn(value).map(drop),
        Format::Text => parse_text(value),
        Format::Opaque => Ok(()),
    }
}

/// A fresh random token for a valid value: same shape, never equal to the
/// value, and failing the format's checksum. Validates first.
///
/// `rng` must be a CSPRNG (the server passes `rand::rng()`); the caller
/// retries when the token collides with a stored one.
///
/// # Errors
///
/// The same [`FormatError`] as [`validate`] when the value is not valid.
pub fn generate_token<R: Rng + ?Sized>(
    format: Format,
    value: &str,
    rng: &mut R,
) -> Result<String, FormatError> {
    if value.is_empty() {
        return Err(FormatError::Empty);
    }
    match format {
        Format::Card => Ok(card_token(value, &parse_card(value)?, rng)),
        Format::Phone => Ok(phone_token(value, &parse_phone(value)?, rng)),
        Format::Email => Ok(email_token(parse_email(value)?, rng)),
        Format::Iban => Ok(iban_token(value, &parse_iban(value)?, rng)),
        Format::RuPassport => Ok(passport_token(value, &parse_passport(value)?, rng)),
        Format::RuSnils => {
            parse_snils(value)?;
            Ok(snils_token(value, rng))
        }
        Format::RuInn => Ok(inn_token(value, &parse_inn(value)?, rng)),
        Format::RuOgrn => Ok(ogrn_token(value, &parse_ogrn(value)?, rng)),
        Format::RuBankAccount => Ok(bank_account_token(value, &parse_bank_account(value)?, rng)),
        Format::UsSsn => Ok(ssn_token(value, &parse_ssn(value)?, rng)),
        Format::Text => {
            parse_text(value)?;
            Ok(replace_by_class(value, rng))
        }
        Format::Opaque => Ok(opaque_token(rng)),
    }
}
