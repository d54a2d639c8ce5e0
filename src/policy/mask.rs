//! Masked reveal: what a caller whose policy says `masked` sees instead of a
//! value. Each mask keeps at most the few characters named per format below
//! (docs/access-control.md lists the same table) and replaces the rest by `•`.
//!
//! It must never keep more than its format's documented characters, and it
//! never logs: the input is a value. A copy it makes of a value's digits is
//! held in `Zeroizing` and wiped when dropped.
//!
//! | format | mask keeps | example |
//! |---|---|---|
//! | `card` | last 4 digits, in a fixed 16-digit layout (hides the length) | `•••• •••• •••• 4242` |
//! | `email` | first character of the local part, the domain | `j•••@example.com` |
//! | `phone` | last 2 digits, `+` and separators | `+• (•••) •••-••-89` |
//! | `iban` | country code (2 letters), last 4 characters, spaces | `DE•• •••• •••• •••• ••30 00` |
//! | `ru_passport` | last 3 digits, separators | `•••• •••456` |
//! | `ru_snils` | last 3 digits, separators | `•••-•••-••5 95` |
//! | `ru_inn`, `ru_ogrn` | last 4 digits | `••••••1234` |
//! | `ru_bank_account` | first 5 digits (account class, which the token keeps too), last 4 | `40817•••••••••••1234` |
//! | `us_ssn` | last 4 digits, separators | `•••-••-6789` |
//! | `text` | characters that are not letters or digits | `•••• ••••!` |
//! | a `[[formats]]` template | its fixed parts (outside the groups) and its `keep` groups, which the token shows too | `LC-1234-••••-••` |
//! | `opaque` and any other format | nothing | `••••••••` |

use zeroize::Zeroizing;

use crate::token::format::Format;
use crate::token::template::Templates;

/// The character a masked position shows.
pub const MASK: char = '•';
/// What a value of a format with nothing to keep shows (fixed length, so it
/// tells nothing about the value's length either).
pub const FULLY_MASKED: &str = "••••••••";

/// `value` masked as its format's policy says. `format` is the stored
/// format name; an operator-defined one is masked by its template among
/// `templates` (the ones the server runs); an unknown one, or a value its
/// template no longer matches, keeps nothing.
pub fn mask(templates: &Templates, format: &str, value: &str) -> String {
    match Format::from_name(format) {
        Some(Format::Card) => card(value),
        Some(Format::Email) => email(value),
        Some(Format::Phone) => keep_last_digits(value, 2),
        Some(Format::Iban) => iban(value),
        Some(Format::RuPassport | Format::RuSnils) => keep_last_digits(value, 3),
        Some(Format::RuInn | Format::RuOgrn | Format::UsSsn) => keep_last_digits(value, 4),
        Some(Format::RuBankAccount) => bank_account(value),
        Some(Format::Text) => text(value),
        Some(Format::Opaque) => FULLY_MASKED.to_string(),
        None => templates
            .get(format)
            .and_then(|t| t.mask(value))
            .unwrap_or_else(|| FULLY_MASKED.to_string()),
    }
}

/// `•••• •••• •••• 4242`: the layout is fixed, so the mask does not tell a
/// 15-digit card from a 19-digit one.
fn card(value: &str) -> String {
    // The whole PAN: wiped when dropped.
    let digits: Zeroizing<Vec<char>> =
        Zeroizing::new(value.chars().filter(char::is_ascii_digit).collect());
    let kept: String = digits[digits.len().saturating_sub(4)..].iter().collect();
    format!("{MASK}{MASK}{MASK}{MASK} {MASK}{MASK}{MASK}{MASK} {MASK}{MASK}{MASK}{MASK} {kept}")
}

/// `j•••@example.com`: the local part's first character and the domain. A
/// value without `@` keeps nothing.
fn email(value: &str) -> String {
    let Some((local, domain)) = value.rsplit_once('@') else {
        return FULLY_MASKED.to_string();
    };
    match local.chars().next() {
        Some(first) => format!("{first}{MASK}{MASK}{MASK}@{domain}"),
        None => format!("{MASK}{MASK}{MASK}@{domain}"),
    }
}

/// Every digit but the last `keep` becomes `•`; anything else (`+`,
/// spaces, dashes, brackets) stays, as the token keeps the layout too.
/// Letters, which these formats do not have, are masked as well.
fn keep_last_digits(value: &str, keep: usize) -> String {
    let total = value.chars().filter(char::is_ascii_digit).count();
    let mut seen = 0;
    value
        .chars()
        .map(|c| {
            if c.is_ascii_digit() {
                seen += 1;
                if seen > total.saturating_sub(keep) {
                    c
                } else {
                    MASK
                }
            } else if c.is_alphanumeric() {
                MASK
            } else {
                c
            }
        })
        .collect()
}

/// Country code and the last 4 characters; spaces stay.
fn iban(value: &str) -> String {
    let total = value.chars().filter(char::is_ascii_alphanumeric).count();
    let mut seen = 0;
    value
        .chars()
        .map(|c| {
            if !c.is_ascii_alphanumeric() {
                return if c == ' ' { c } else { MASK };
            }
            seen += 1;
            let country = seen <= 2 && c.is_ascii_alphabetic();
            if country || seen > total.saturating_sub(4).max(2) {
                c
            } else {
                MASK
            }
        })
        .collect()
}

/// The first 5 digits (account class, kept by the token as well) and the
/// last 4 of the 20-digit account; a BIK given with it is masked whole.
fn bank_account(value: &str) -> String {
    let digits: Zeroizing<Vec<char>> =
        Zeroizing::new(value.chars().filter(char::is_ascii_digit).collect());
    if digits.len() < 20 {
        return keep_last_digits(value, 4);
    }
    // The account is the last 20 digits when a BIK comes first.
    let account = &digits[digits.len() - 20..];
    let mut out: String = account[..5].iter().collect();
    out.extend(std::iter::repeat_n(MASK, 11));
    out.extend(&account[16..]);
    out
}

/// Letters and digits become `•`; punctuation and spaces stay.
fn text(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_alphanumeric() { MASK } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn each_format_masks_as_documented() {
        let cases = [
            ("card", "4242 4242 4242 4242", "•••• •••• •••• 4242"),
            ("card", "378282246310005", "•••• •••• •••• 0005"),
            ("email", "jane.doe@example.com", "j•••@example.com"),
            ("phone", "+7 (912) 345-67-89", "+• (•••) •••-••-89"),
            ("phone", "+14155552671", "+•••••••••71"),
            (
                "iban",
                "DE89 3704 0044 0532 0130 00",
                "DE•• •••• •••• •••• ••30 00",
            ),
            ("iban", "GB82WEST12345698765432", "GB••••••••••••••••5432"),
            ("ru_passport", "4510 123456", "•••• •••456"),
            ("ru_snils", "112-233-445 95", "•••-•••-••5 95"),
            ("ru_inn", "7707083893", "••••••3893"),
            ("ru_ogrn", "1027700132195", "•••••••••2195"),
            (
                "ru_bank_account",
                "40817810099910004312",
                "40817•••••••••••4312",
            ),
            ("us_ssn", "123-45-6789", "•••-••-6789"),
            ("text", "Иван Petrov, 42!", "•••• ••••••, ••!"),
            ("opaque", "anything at all", "••••••••"),
            ("my_custom_format", "EMP-123456", "••••••••"),
        ];
        for (format, value, masked) in cases {
            assert_eq!(
                mask(&Templates::default(), format, value),
                masked,
                "{format}"
            );
        }
    }

    #[test]
    fn a_template_format_masks_all_but_fixed_parts_and_kept_groups() {
        use crate::token::template::TemplateSpec;
        let spec = TemplateSpec {
            name: "mask_test_loyalty".into(),
            pattern: r"LC-(\d{4})-(\d{4})-([A-Z]{2})".into(),
            alphabets: vec!["numeric".into(), "numeric".into(), "alpha_upper".into()],
            keep: vec![1],
        };
        let templates = Templates::new(&[spec], &Default::default()).expect("valid");
        assert_eq!(
            mask(&templates, "mask_test_loyalty", "LC-1234-5678-AB"),
            "LC-1234-••••-••"
        );
        // A stored value the template no longer matches shows nothing.
        assert_eq!(
            mask(&templates, "mask_test_loyalty", "LC-1234"),
            FULLY_MASKED
        );
        // Without the template (another server's format) it keeps nothing.
        assert_eq!(
            mask(
                &Templates::default(),
                "mask_test_loyalty",
                "LC-1234-5678-AB"
            ),
            FULLY_MASKED
        );
    }

    /// The characters of `masked` that are not `•`, spaces or punctuation:
    /// what the mask lets through of the value.
    fn shown(masked: &str) -> usize {
        masked.chars().filter(|c| c.is_alphanumeric()).count()
    }

    proptest! {
        #[test]
        fn card_mask_shows_at_most_the_last_four(digits in "[0-9]{12,19}") {
            let masked = mask(&Templates::default(), "card", &digits);
            prop_assert!(shown(&masked) <= 4);
            prop_assert!(masked.ends_with(&digits[digits.len() - 4..]));
        }

        #[test]
        fn digit_masks_show_at_most_their_kept_digits(value in "[0-9 +()-]{0,40}") {
            for (format, keep) in [("phone", 2), ("ru_passport", 3), ("ru_snils", 3), ("ru_inn", 4), ("ru_ogrn", 4), ("us_ssn", 4)] {
                let masked = mask(&Templates::default(), format, &value);
                prop_assert!(shown(&masked) <= keep, "{} {}", format, masked);
                prop_assert_eq!(masked.chars().count(), value.chars().count());
            }
        }

        #[test]
        fn email_mask_shows_one_local_character(local in "[a-z0-9.]{1,30}", domain in "[a-z]{1,10}\\.[a-z]{2,4}") {
            let masked = mask(&Templates::default(), "email", &format!("{local}@{domain}"));
            let (masked_local, masked_domain) = masked.rsplit_once('@').expect("has @");
            prop_assert!(shown(masked_local) <= 1);
            prop_assert_eq!(masked_domain, domain);
        }

        #[test]
        fn iban_mask_shows_at_most_country_and_last_four(value in "[A-Z]{2}[0-9]{2}[A-Z0-9 ]{10,30}") {
            prop_assert!(shown(&mask(&Templates::default(), "iban", &value)) <= 6);
        }

        #[test]
        fn text_and_opaque_masks_show_nothing(value in "\\PC{0,60}") {
            prop_assert_eq!(shown(&mask(&Templates::default(), "text", &value)), 0);
            prop_assert_eq!(mask(&Templates::default(), "opaque", &value), FULLY_MASKED);
            prop_assert!(shown(&mask(&Templates::default(), "ru_bank_account", &value)) <= 9);
        }
    }
}
