//! Unit tests of the built-in formats: shared helpers and each format's
//! rejected inputs; the examples and the properties are in `tests/`.

mod examples;
mod properties;

use proptest::collection::vec;
use proptest::option::weighted;
use proptest::prelude::*;
use proptest::sample::select;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use super::super::checks::{
    bank_account_key_valid, iban_mod97, iban_valid, inn_valid, luhn_valid, ogrn_valid, snils_valid,
    SNILS_LAST_UNCHECKED,
};
use super::card::card_kept_prefix;
use super::classes::{is_replaceable, Class};
use super::iban::{iban_length, IBAN_LENGTHS};
use super::layout::{ascii_digit, digit_char};
use super::phone::{country_code_len, national_kept_len};
use super::ru::{write_decimal, ACCOUNT_KEY_AT};
use super::text::BASE32_LOWER;
use super::*;

// -- helpers -----------------------------------------------------------

fn seeded(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// A broken generator that always yields the same bits: it makes
/// rejection sampling fail every draw, so the repair paths run.
struct StuckRng(u64);

impl RngCore for StuckRng {
    fn next_u32(&mut self) -> u32 {
        self.0 as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.0
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        dest.fill(self.0 as u8);
    }
}

/// Each character mapped to its class; anything else stands for itself.
fn shape(s: &str) -> String {
    s.chars()
        .map(|c| match Class::of(c) {
            Some(Class::Digit) => '9',
            Some(Class::LatinUpper) => 'A',
            Some(Class::LatinLower) => 'a',
            Some(Class::CyrillicUpper) => 'Я',
            Some(Class::CyrillicLower) => 'я',
            None => c,
        })
        .collect()
}

fn digits_of(s: &str) -> Vec<u8> {
    s.chars().filter_map(ascii_digit).collect()
}

fn digit_string(digits: &[u8]) -> String {
    digits.iter().map(|&d| digit_char(d)).collect()
}

fn decimal(digits: &[u8]) -> u64 {
    digits.iter().fold(0, |n, &d| n * 10 + u64::from(d))
}

/// `payload` followed by the `width` check digits that make `valid`
/// hold, found by trying each in turn.
fn complete(payload: &[u8], width: u32, valid: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    (0..10u32.pow(width))
        .map(|check| {
            let mut digits = payload.to_vec();
            digits.extend((0..width).rev().map(|i| (check / 10u32.pow(i) % 10) as u8));
            digits
        })
        .find(|digits| valid(digits))
        .unwrap_or_else(|| panic!("no check digits make the payload valid"))
}

/// Digits joined with `seps[i]` after digit `i` (None: nothing).
fn join(digits: &[u8], seps: &[Option<char>]) -> String {
    let mut s = String::new();
    for (i, &d) in digits.iter().enumerate() {
        s.push(digit_char(d));
        if let (true, Some(Some(sep))) = (i + 1 < digits.len(), seps.get(i)) {
            s.push(*sep);
        }
    }
    s
}

/// Digits split into groups of the given lengths, joined by `sep`.
fn grouped(digits: &[u8], groups: &[usize], sep: &str) -> String {
    let mut parts = Vec::new();
    let mut at = 0;
    for &len in groups {
        parts.push(digit_string(&digits[at..at + len]));
        at += len;
    }
    parts.join(sep)
}

/// Every invariant a token of `format` for `value` must hold.
fn check_token(format: Format, value: &str, token: &str) -> Result<(), TestCaseError> {
    prop_assert_ne!(token, value, "token equals the value");
    let (v, t) = (digits_of(value), digits_of(token));
    let same_layout = || -> Result<(), TestCaseError> {
        prop_assert_eq!(shape(token), shape(value));
        prop_assert_eq!(token.len(), value.len());
        Ok(())
    };
    match format {
        Format::Card => {
            same_layout()?;
            let n = v.len();
            let keep = 6.min(n - 10);
            prop_assert_eq!(&t[..keep], &v[..keep], "first digits kept");
            prop_assert_eq!(&t[n - 4..], &v[n - 4..], "last 4 kept");
            prop_assert!(!luhn_valid(&t), "card token passes Luhn");
        }
        Format::Phone => {
            same_layout()?;
            // The kept prefix depends on the number, not its extension.
            let number = value.rsplit_once('x').map_or(value, |(number, _)| number);
            let kept = if value.starts_with('+') {
                country_code_len(&v)
            } else {
                national_kept_len(&digits_of(number))
            };
            prop_assert_eq!(&t[..kept], &v[..kept], "country code kept");
            prop_assert_ne!(t[kept], 0, "national number starts with 0");
        }
        Format::Email => check_email_token(value, token)?,
        Format::Iban => {
            let upper = value.to_ascii_uppercase();
            prop_assert_eq!(shape(token), shape(&upper));
            prop_assert_eq!(&token[..2], &upper[..2], "country kept");
            let compact: String = token.chars().filter(|&c| c != ' ').collect();
            prop_assert_ne!(iban_mod97(&compact), Some(1), "iban token passes mod-97");
        }
        Format::RuPassport | Format::Text => same_layout()?,
        Format::RuSnils => {
            same_layout()?;
            prop_assert!(!snils_valid(&t), "snils token passes");
            prop_assert!(decimal(&t[..9]) > u64::from(SNILS_LAST_UNCHECKED));
        }
        Format::RuInn => {
            same_layout()?;
            prop_assert!(!inn_valid(&t), "inn token passes");
        }
        Format::RuOgrn => {
            same_layout()?;
            prop_assert_eq!(t[0], v[0], "kind digit kept");
            prop_assert!(!ogrn_valid(&t), "ogrn token passes");
        }
        Format::RuBankAccount => {
            same_layout()?;
            let start = v.len() - 20;
            prop_assert_eq!(&t[..start + 8], &v[..start + 8], "bik and class kept");
            if start == 9 {
                prop_assert!(!bank_account_key_valid(&t[..9], &t[9..]));
            }
        }
        Format::UsSsn => {
            same_layout()?;
            let area = decimal(&t[..3]);
            prop_assert!((900..=999).contains(&area), "area {} is issuable", area);
        }
        Format::Opaque => {
            let body = token.strip_prefix("tok_").unwrap_or_default();
            prop_assert_eq!(body.len(), 26, "{}", token);
            prop_assert!(body.bytes().all(|b| BASE32_LOWER.contains(&b)), "{}", token);
        }
    }
    Ok(())
}

fn check_email_token(value: &str, token: &str) -> Result<(), TestCaseError> {
    let Some((local, domain)) = value.split_once('@') else {
        return Err(TestCaseError::fail("value has no @"));
    };
    let Some((token_local, token_domain)) = token.split_once('@') else {
        return Err(TestCaseError::fail("token has no @"));
    };
    prop_assert_eq!(shape(token_local), shape(local));
    prop_assert_eq!(token_local.len(), local.len());
    if local.chars().any(is_replaceable) {
        prop_assert_ne!(token_local, local, "local part unchanged");
    }
    prop_assert_eq!(token_domain, format!("{domain}.invalid"));
    Ok(())
}

/// Validates, then checks tokens drawn with a seeded and a stuck rng.
fn assert_accepted(format: Format, value: &str) {
    assert_eq!(validate(format, value), Ok(()), "{format} {value:?}");
    for stuck in [0, u64::MAX] {
        let tokens = [
            generate_token(format, value, &mut seeded(stuck)),
            generate_token(format, value, &mut StuckRng(stuck)),
        ];
        for token in tokens {
            let token = token.unwrap_or_else(|e| panic!("{format} {value:?}: {e}"));
            if let Err(e) = check_token(format, value, &token) {
                panic!("{format} {value:?} -> {token:?}: {e}");
            }
        }
    }
}

fn assert_rejected(format: Format, cases: &[(&str, FormatError)]) {
    for (value, expected) in cases {
        assert_eq!(
            validate(format, value).as_ref(),
            Err(expected),
            "{format} {value:?}"
        );
        assert_eq!(
            generate_token(format, value, &mut seeded(1)).as_ref(),
            Err(expected),
            "{format} {value:?}"
        );
    }
}

fn token_for(format: Format, value: &str) -> String {
    generate_token(format, value, &mut seeded(3))
        .unwrap_or_else(|e| panic!("{format} {value:?}: {e}"))
}

const fn bad_char(what: &'static str) -> FormatError {
    FormatError::InvalidCharacter { what }
}

const fn bad_layout(what: &'static str) -> FormatError {
    FormatError::InvalidLayout { what }
}

const fn bad_length(expected: &'static str) -> FormatError {
    FormatError::InvalidLength { expected }
}

const fn bad_part(expected: &'static str) -> FormatError {
    FormatError::InvalidPart { expected }
}

const fn bad_check(what: &'static str, check: &'static str) -> FormatError {
    FormatError::ChecksumMismatch { what, check }
}

// -- rejected inputs, per format -----------------------------------------

const CARD_REJECTED: &[(&str, FormatError)] = &[
    (
        "4111111111111112",
        bad_check("card number", "the Luhn check"),
    ),
    ("4111  1111 1111 1111", bad_layout("card number")),
    (" 4111111111111111", bad_layout("card number")),
    ("4111111111111111-", bad_layout("card number")),
    ("4111 -1111 1111 1111", bad_layout("card number")),
    ("4111_1111_1111_1111", bad_char("card number")),
    ("4111 1111 1111 111x", bad_char("card number")),
    ("41111111113", bad_length("12 to 19 digits")),
    ("41111111111111111113", bad_length("12 to 19 digits")),
];

const PHONE_REJECTED: &[(&str, FormatError)] = &[
    ("123456", bad_length("7 to 17 digits in a national number")),
    (
        "123456789012345678",
        bad_length("7 to 17 digits in a national number"),
    ),
    (
        "+0 916 123 45 67",
        bad_part("a country code that does not start with 0"),
    ),
    ("+1-903-140-4508x", bad_char("phone number")),
    ("+1-903-140-4508x1234567", bad_char("phone number")),
    ("+1-903-140-4508 x769", bad_char("phone number")),
    ("+7 (916 123-45-67", bad_layout("phone number")),
    ("+7 916) 123-45-67", bad_layout("phone number")),
    ("+7 ((916)) 123-45-67", bad_layout("phone number")),
    ("+7 () 916 123-45-67", bad_layout("phone number")),
    ("+7 916    1234567", bad_layout("phone number")),
    ("+7 916 123 45 67-", bad_layout("phone number")),
    ("+ 7 916 123 45 67", bad_layout("phone number")),
    ("+", bad_layout("phone number")),
    ("+7 (495) 123-45-67 доб. 123", bad_char("phone number")),
    ("+7 916 123 45 67+", bad_char("phone number")),
    ("+7/916/1234567", bad_char("phone number")),
    ("+1234567", bad_length("8 to 15 digits after the +")),
    (
        "+1234567890123456",
        bad_length("8 to 15 digits after the +"),
    ),
];

const EMAIL_REJECTED: &[(&str, FormatError)] = &[
    ("john@localhost", bad_part("a domain with at least one dot")),
    (
        "john.example.com",
        bad_part("an address of the form local@domain"),
    ),
    (".john@example.com", bad_layout("email local part")),
    ("john.@example.com", bad_layout("email local part")),
    ("jo..hn@example.com", bad_layout("email local part")),
    ("john doe@example.com", bad_char("email local part")),
    ("jo\"hn@example.com", bad_char("email local part")),
    ("jo(hn)@example.com", bad_char("email local part")),
    ("john@exa mple.com", bad_char("email domain")),
    ("john@@example.com", bad_char("email domain")),
    ("john@ex_ample.com", bad_char("email domain")),
    ("john@example..com", bad_layout("email domain")),
    ("john@example.com.", bad_layout("email domain")),
    ("john@-example.com", bad_layout("email domain")),
    ("john@example-.com", bad_layout("email domain")),
    ("@example.com", bad_length("a local part of 1 to 64 bytes")),
];

const IBAN_REJECTED: &[(&str, FormatError)] = &[
    (
        "GB82WEST12345698765433",
        bad_check("iban", "the mod-97 check"),
    ),
    (
        "GB28 WEST 1234 5698 7654 32",
        bad_check("iban", "the mod-97 check"),
    ),
    (
        "DE89 3704 0044 0532 0130 0",
        bad_length("the iban length registered for its country"),
    ),
    ("GB82  WEST 1234 5698 7654 32", bad_layout("iban")),
    (" GB82WEST12345698765432", bad_layout("iban")),
    ("GB82WEST12345698765432 ", bad_layout("iban")),
    ("GB82-WEST-1234-5698-7654-32", bad_char("iban")),
    ("GB82WEST1234569876543Ä", bad_char("iban")),
    (
        "1282WEST12345698765432",
        bad_part("a two-letter country code at the start of the iban"),
    ),
    (
        "GBX2WEST12345698765432",
        bad_part("two check digits after the iban country code"),
    ),
    ("GB82WEST1234", bad_length("15 to 34 iban characters")),
    (
        "GB82WEST123456987654321234567890123",
        bad_length("15 to 34 iban characters"),
    ),
];

const PASSPORT_REJECTED: &[(&str, FormatError)] = &[
    (
        "4506 12345",
        bad_length("10 digits: a 4-digit series and a 6-digit number"),
    ),
    (
        "4506 1234567",
        bad_length("10 digits: a 4-digit series and a 6-digit number"),
    ),
    ("450 6123456", bad_layout("passport number")),
    ("4506 123 456", bad_layout("passport number")),
    ("4506    123456", bad_layout("passport number")),
    ("№ 4506 123456", bad_layout("passport number")),
    ("4506 123456 ", bad_layout("passport number")),
    ("4506/123456", bad_char("passport number")),
    ("серия 4506 номер 123456", bad_char("passport number")),
    ("4506 номер номер 123456", bad_char("passport number")),
    ("4506 номер 12 3456", bad_layout("passport number")),
    ("4506  номер 123456", bad_layout("passport number")),
];

const SNILS_REJECTED: &[(&str, FormatError)] = &[
    ("112-233-445 96", bad_check("snils", "its checksum")),
    ("11223344596", bad_check("snils", "its checksum")),
    ("112-233-44595", bad_layout("snils")),
    ("112233-445 95", bad_layout("snils")),
    ("112--233-445 95", bad_layout("snils")),
    ("112-233-445 9", bad_length("11 digits")),
    ("112_233_445_95", bad_char("snils")),
];

const INN_REJECTED: &[(&str, FormatError)] = &[
    ("7707083894", bad_check("inn", "its checksum")),
    ("500100732258", bad_check("inn", "its checksum")),
    ("500100732269", bad_check("inn", "its checksum")),
    ("77070838", bad_length("10 or 12 digits")),
    ("77070838931", bad_length("10 or 12 digits")),
    ("7707 083893", bad_char("inn")),
    ("ИНН7707083893", bad_char("inn")),
];

const OGRN_REJECTED: &[(&str, FormatError)] = &[
    ("1027700132196", bad_check("ogrn", "its checksum")),
    ("304500116000158", bad_check("ogrn", "its checksum")),
    ("3027700132195", bad_part("an ogrn starting with 1 or 5")),
    ("104500116000157", bad_part("an ogrnip starting with 3")),
    ("10277001321", bad_length("13 (ogrn) or 15 (ogrnip) digits")),
    ("1027700132 195", bad_char("ogrn")),
];

const BANK_ACCOUNT_REJECTED: &[(&str, FormatError)] = &[
    (
        "044525225 40817810099910004312",
        bad_check("bank account", "the key check against its bik"),
    ),
    (
        "144525225 40817810899910004312",
        bad_part("a bik starting with 04"),
    ),
    (
        "4081781009991000431",
        bad_length("a 20-digit account, optionally after a 9-digit bik"),
    ),
    (
        "044525225 408178100999100043",
        bad_length("a 20-digit account, optionally after a 9-digit bik"),
    ),
    (
        "044525225  40817810899910004312",
        bad_layout("bank account"),
    ),
    ("04452522 540817810899910004312", bad_layout("bank account")),
    ("40817810099910004312 ", bad_layout("bank account")),
    ("40817 810  0999 1000 4312", bad_layout("bank account")),
    ("40817/810099910004312", bad_char("bank account")),
    ("044525225-40817810899910004312", bad_char("bank account")),
    ("р/с 40817810099910004312", bad_char("bank account")),
];

const SSN_REJECTED: &[(&str, FormatError)] = &[
    ("000-12-3456", FormatError::SsnNotIssued),
    ("666-12-3456", FormatError::SsnNotIssued),
    ("900-12-3456", FormatError::SsnNotIssued),
    ("999-12-3456", FormatError::SsnNotIssued),
    ("123-00-4567", FormatError::SsnNotIssued),
    ("123-45-0000", FormatError::SsnNotIssued),
    ("123-456-789", bad_layout("ssn")),
    ("12345-6789", bad_layout("ssn")),
    ("123--45-6789", bad_layout("ssn")),
    ("123 45 6789", bad_char("ssn")),
    ("123-45-678", bad_length("9 digits")),
];

const TEXT_REJECTED: &[(&str, FormatError)] = &[
    ("!!! ---", FormatError::NothingToTokenize),
    ("中文", FormatError::NothingToTokenize),
    ("😀 ☺", FormatError::NothingToTokenize),
    (" ", FormatError::NothingToTokenize),
];
