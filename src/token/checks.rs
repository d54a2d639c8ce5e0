//! Check-digit algorithms for the identifiers the vault tokenizes.
//!
//! This module owns the arithmetic only: Luhn, ISO 13616 mod-97, SNILS, INN,
//! OGRN/OGRNIP, the Bank of Russia account key, and the SSN issuance ranges,
//! as written down in `PII-RULES.md`. The token formats use it to reject
//! invalid input and to make sure no token passes a check; the text PII
//! detectors use it to tell real numbers from look-alikes.
//!
//! It must never parse layouts, allocate, log, or panic: every function takes
//! already separated digit values (`0..=9`, not ASCII) or a compact string,
//! and answers `false` (or `None`) for a wrong length or an out-of-range
//! element instead of failing.

/// Weights of the 10-digit (company) INN control digit, over d1..d9.
const INN10_WEIGHTS: [u32; 9] = [2, 4, 10, 3, 5, 9, 4, 6, 8];
/// Weights of the first control digit of a 12-digit INN, over d1..d10.
const INN12_WEIGHTS_1: [u32; 10] = [7, 2, 4, 10, 3, 5, 9, 4, 6, 8];
/// Weights of the second control digit of a 12-digit INN, over d1..d11.
const INN12_WEIGHTS_2: [u32; 11] = [3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8];

/// SNILS numbers up to this one (001-001-998) were issued before the
/// checksum existed, so their control digits carry no information.
pub const SNILS_LAST_UNCHECKED: u32 = 1_001_998;

/// True when every element is a digit value `0..=9`.
fn all_digits(digits: &[u8]) -> bool {
    digits.iter().all(|&d| d <= 9)
}

/// The digits read as a decimal number, reduced modulo `modulus` as it goes
/// so that any length fits in a `u64`.
fn decimal_mod(digits: &[u8], modulus: u64) -> u64 {
    digits
        .iter()
        .fold(0, |acc, &d| (acc * 10 + u64::from(d)) % modulus)
}

/// Σ wᵢ·dᵢ over the shorter of the two slices.
fn weighted_sum(digits: &[u8], weights: &[u32]) -> u32 {
    digits
        .iter()
        .zip(weights)
        .map(|(&d, &w)| u32::from(d) * w)
        .sum()
}

/// Luhn (ISO/IEC 7812) check over the whole number, check digit last.
///
/// Returns `false` for an empty slice or any element above 9.
pub fn luhn_valid(digits: &[u8]) -> bool {
    if digits.is_empty() || !all_digits(digits) {
        return false;
    }
    luhn_sum(digits, 1).is_multiple_of(10)
}

/// The Luhn check digit to append to `body` (digits 0..=9), for generating
/// valid numbers in tests and benchmarks.
pub fn luhn_check_digit(body: &[u8]) -> u8 {
    // The appended digit takes position 0 from the right, so the body's
    // last digit is the first doubled one.
    ((10 - luhn_sum(body, 0) % 10) % 10) as u8
}

/// Luhn's weighted sum with every second digit from the right doubled,
/// starting at position `first_doubled` (0 = the last digit).
fn luhn_sum(digits: &[u8], first_doubled: usize) -> u32 {
    digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            // Subtracting 9 from a two-digit double is adding its digits.
            if i % 2 == first_doubled {
                let doubled = d * 2;
                if doubled > 9 {
                    doubled - 9
                } else {
                    doubled
                }
            } else {
                d
            }
        })
        .sum()
}

/// The ISO 13616 remainder of a compact IBAN: the first four characters moved
/// to the end, letters read as 10..=35, the whole number modulo 97.
///
/// A valid IBAN gives 1. Returns `None` when the string is shorter than four
/// characters or holds anything but `A-Z` and `0-9`.
pub fn iban_mod97(iban: &str) -> Option<u32> {
    let bytes = iban.as_bytes();
    if bytes.len() < 4 {
        return None;
    }
    let (head, tail) = bytes.split_at(4);
    tail.iter().chain(head).try_fold(0u32, |acc, &b| match b {
        b'0'..=b'9' => Some((acc * 10 + u32::from(b - b'0')) % 97),
        // A letter stands for two decimal digits.
        b'A'..=b'Z' => Some((acc * 100 + u32::from(b - b'A') + 10) % 97),
        _ => None,
    })
}

/// A structurally sound IBAN whose mod-97 remainder is 1: 15 to 34
/// characters, two uppercase letters, two digits, then `A-Z`/`0-9` only.
///
/// The input must already be compact and uppercase (no spaces); per-country
/// lengths are the caller's business.
pub fn iban_valid(iban: &str) -> bool {
    let bytes = iban.as_bytes();
    (15..=34).contains(&bytes.len())
        && bytes[..2].iter().all(u8::is_ascii_uppercase)
        && bytes[2..4].iter().all(u8::is_ascii_digit)
        && iban_mod97(iban) == Some(1)
}

/// SNILS checksum over 11 digit values (9-digit number, 2 control digits).
///
/// For numbers up to [`SNILS_LAST_UNCHECKED`] (001-001-998) the checksum does
/// not apply, so this returns `true` whatever their control digits are: such
/// a number is a possible real SNILS. Token generators must therefore never
/// produce one. Returns `false` for a wrong length or an element above 9.
pub fn snils_valid(digits: &[u8]) -> bool {
    if digits.len() != 11 || !all_digits(digits) {
        return false;
    }
    let (number, control) = digits.split_at(9);
    if decimal_mod(number, u64::MAX) <= u64::from(SNILS_LAST_UNCHECKED) {
        return true;
    }
    let sum: u32 = number
        .iter()
        .zip((1..=9).rev())
        .map(|(&d, w)| u32::from(d) * w)
        .sum();
    // The published rule (S < 100 → S; 100 or 101 → 0; else S mod 101 with
    // 100 → 0) is exactly "S mod 101, then 100 → 0", i.e. two remainders.
    let expected = sum % 101 % 100;
    expected == u32::from(control[0]) * 10 + u32::from(control[1])
}

/// INN checksum: 10 digits (company, one control digit) or 12 digits
/// (person, two control digits). Any other length is `false`.
pub fn inn_valid(digits: &[u8]) -> bool {
    if !all_digits(digits) {
        return false;
    }
    let control = |n: usize, weights: &[u32]| (weighted_sum(&digits[..n], weights) % 11 % 10) as u8;
    match digits.len() {
        10 => control(9, &INN10_WEIGHTS) == digits[9],
        12 => {
            control(10, &INN12_WEIGHTS_1) == digits[10]
                && control(11, &INN12_WEIGHTS_2) == digits[11]
        }
        _ => false,
    }
}

/// OGRN (13 digits: d13 = d1..d12 mod 11, mod 10) or OGRNIP (15 digits:
/// d15 = d1..d14 mod 13, mod 10) checksum. Any other length is `false`.
///
/// The final `mod 10` matters: a remainder of 10 (or 11, 12 for OGRNIP) has
/// the control digit of its last decimal digit.
pub fn ogrn_valid(digits: &[u8]) -> bool {
    if !all_digits(digits) {
        return false;
    }
    let modulus = match digits.len() {
        13 => 11,
        15 => 13,
        _ => return false,
    };
    let Some((&control, number)) = digits.split_last() else {
        return false;
    };
    decimal_mod(number, modulus) % 10 == u64::from(control)
}

/// Bank of Russia key check of a 20-digit account against its 9-digit BIK.
///
/// The 23 checked digits are the BIK's last three followed by the account;
/// for a Bank of Russia cash centre (BIK digits 7–9 are 000–002) they are
/// "0", BIK digits 5–6, then the account. Weights 7, 1, 3 repeat; the sum of
/// the last digits of the products must end in 0.
pub fn bank_account_key_valid(bik: &[u8], account: &[u8]) -> bool {
    if bik.len() != 9 || account.len() != 20 || !all_digits(bik) || !all_digits(account) {
        return false;
    }
    let cash_centre = bik[6] == 0 && bik[7] == 0 && bik[8] <= 2;
    let prefix = if cash_centre {
        [0, bik[4], bik[5]]
    } else {
        [bik[6], bik[7], bik[8]]
    };
    let sum: u32 = prefix
        .iter()
        .chain(account)
        .zip([7u32, 1, 3].iter().cycle())
        .map(|(&d, &w)| u32::from(d) * w % 10)
        .sum();
    sum.is_multiple_of(10)
}

/// Whether the SSA could have issued this SSN: area not 000, 666 or
/// 900–999, group not 00, serial not 0000 (and each part in its range).
pub fn ssn_issuable(area: u16, group: u8, serial: u16) -> bool {
    (1..=899).contains(&area)
        && area != 666
        && (1..=99).contains(&group)
        && (1..=9999).contains(&serial)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ASCII digits to digit values; test inputs are literals, so a stray
    /// character is a bug in the test itself.
    fn d(s: &str) -> Vec<u8> {
        s.bytes()
            .map(|b| {
                assert!(b.is_ascii_digit(), "test literal holds a non-digit");
                b - b'0'
            })
            .collect()
    }

    /// Every single-digit change of `digits` must make `valid` false.
    fn every_digit_change_breaks(digits: &[u8], valid: impl Fn(&[u8]) -> bool) {
        assert!(valid(digits), "known answer should be valid");
        for i in 0..digits.len() {
            for delta in 1..10 {
                let mut changed = digits.to_vec();
                changed[i] = (changed[i] + delta) % 10;
                assert!(
                    !valid(&changed),
                    "changing digit {i} by {delta} still passes"
                );
            }
        }
    }

    #[test]
    fn luhn_known_answers() {
        assert!(luhn_valid(&d("4111111111111111")));
        assert!(luhn_valid(&d("79927398713")));
        assert!(luhn_valid(&d("378282246310005")));
        assert!(!luhn_valid(&d("4111111111111112")));
        assert!(!luhn_valid(&[]));
        assert!(!luhn_valid(&[4, 1, 10, 1]));
    }

    #[test]
    fn luhn_check_digit_completes_known_numbers() {
        assert_eq!(luhn_check_digit(&d("411111111111111")), 1);
        assert_eq!(luhn_check_digit(&d("7992739871")), 3);
        assert_eq!(luhn_check_digit(&d("37828224631000")), 5);
        for body in ["4", "22000000000000", "123456789"] {
            let mut full = d(body);
            full.push(luhn_check_digit(&full));
            assert!(luhn_valid(&full), "{body}");
        }
    }

    #[test]
    fn luhn_single_digit_change_fails() {
        every_digit_change_breaks(&d("4111111111111111"), luhn_valid);
        every_digit_change_breaks(&d("2200000000000004"), luhn_valid);
    }

    #[test]
    fn iban_known_answers() {
        for iban in [
            "GB82WEST12345698765432",
            "DE89370400440532013000",
            "NL91ABNA0417164300",
            "FR1420041010050500013M02606",
            "BE68539007547034",
            "NO9386011117947",
            "MT84MALT011000012345MTLCAST001S",
        ] {
            assert!(iban_valid(iban), "{iban} should be valid");
            assert_eq!(iban_mod97(iban), Some(1));
        }
        assert!(!iban_valid("GB82WEST12345698765433"));
        assert!(
            !iban_valid("GB82 WEST 1234 5698 7654 32"),
            "spaces are not compact"
        );
        assert!(
            !iban_valid("gb82west12345698765432"),
            "lowercase is not compact"
        );
        assert!(!iban_valid("GB82WEST1234"), "too short");
        assert!(
            !iban_valid("12GBWEST12345698765432"),
            "country must be letters"
        );
        assert_eq!(iban_mod97("GB8"), None);
        assert_eq!(iban_mod97("GB82WEST-2345698765432"), None);
    }

    #[test]
    fn iban_single_character_change_fails() {
        // A digit for a digit or a letter for a letter, as in tokens: the
        // number moves by δ·10^k with 0 < |δ| < 97, never a multiple of 97.
        let iban = "GB82WEST12345698765432";
        for (i, original) in iban.char_indices().skip(2) {
            let replacements = if original.is_ascii_digit() {
                '0'..='9'
            } else {
                'A'..='Z'
            };
            for replacement in replacements.filter(|&r| r != original) {
                let mut changed: Vec<char> = iban.chars().collect();
                changed[i] = replacement;
                let changed: String = changed.into_iter().collect();
                assert_ne!(iban_mod97(&changed), Some(1), "{changed} still passes");
            }
        }
    }

    #[test]
    fn snils_known_answers() {
        // S = 95 < 100: the control number is S itself.
        assert!(snils_valid(&d("11223344595")));
        // S = 285: 285 mod 101 = 83.
        assert!(snils_valid(&d("98765432183")));
        // S = 100 and S = 101 both give 00.
        assert!(snils_valid(&d("00101998900")));
        assert!(snils_valid(&d("00101999800")));
        // S = 201: 201 mod 101 = 100, which becomes 00.
        assert!(snils_valid(&d("00299998900")));
        assert!(!snils_valid(&d("11223344596")));
        assert!(!snils_valid(&d("1122334459")));
    }

    #[test]
    fn snils_below_threshold_is_unchecked() {
        assert!(snils_valid(&d("00100199800")));
        assert!(snils_valid(&d("00100199899")));
        assert!(snils_valid(&d("00000000012")));
        // The first checked number: S = 9·0+8·0+7·1+6·0+5·0+4·1+3·9+2·9+9 = 65.
        assert!(snils_valid(&d("00100199965")));
        assert!(!snils_valid(&d("00100199966")));
    }

    #[test]
    fn snils_single_digit_change_fails() {
        // Changes that land at or below 001-001-998 are unchecked by design,
        // so use numbers far above it.
        every_digit_change_breaks(&d("11223344595"), snils_valid);
        every_digit_change_breaks(&d("98765432183"), snils_valid);
    }

    #[test]
    fn inn_known_answers() {
        // Sberbank.
        assert!(inn_valid(&d("7707083893")));
        assert!(inn_valid(&d("7830002293")));
        // A person's INN: both control digits.
        assert!(inn_valid(&d("500100732259")));
        assert!(!inn_valid(&d("7707083894")));
        assert!(!inn_valid(&d("500100732258")), "second control digit wrong");
        assert!(!inn_valid(&d("500100732269")), "first control digit wrong");
        assert!(!inn_valid(&d("77070838931")));
    }

    #[test]
    fn inn_single_digit_change_fails() {
        every_digit_change_breaks(&d("7707083893"), inn_valid);
        every_digit_change_breaks(&d("500100732259"), inn_valid);
    }

    #[test]
    fn ogrn_known_answers() {
        // Sberbank.
        assert!(ogrn_valid(&d("1027700132195")));
        assert!(ogrn_valid(&d("1027739609391")));
        // An OGRNIP.
        assert!(ogrn_valid(&d("304500116000157")));
        assert!(!ogrn_valid(&d("1027700132196")));
        assert!(!ogrn_valid(&d("304500116000158")));
        assert!(!ogrn_valid(&d("10277001321950")));
    }

    #[test]
    fn ogrn_keeps_the_final_mod_10() {
        // 000000000010 mod 11 = 10, so the control digit is 0, not "10".
        assert!(ogrn_valid(&d("0000000000100")));
        // 00000000000012 mod 13 = 12, so the control digit is 2.
        assert!(ogrn_valid(&d("000000000000122")));
    }

    #[test]
    fn ogrn_single_digit_change_fails() {
        // A change of δ·10^k moves the remainder (11 and 13 are prime and
        // δ < 10); only control digits 0 (and 1, 2 for mod 13) stand for two
        // remainders, and these examples have neither.
        every_digit_change_breaks(&d("1027700132195"), ogrn_valid);
        every_digit_change_breaks(&d("304500116000157"), ogrn_valid);
    }

    #[test]
    fn bank_account_known_answers() {
        let bik = d("044525225");
        assert!(bank_account_key_valid(&bik, &d("40817810899910004312")));
        assert!(bank_account_key_valid(&bik, &d("40702810938000000001")));
        assert!(!bank_account_key_valid(&bik, &d("40817810099910004312")));
        assert!(!bank_account_key_valid(&bik, &d("4081781089991000431")));
        assert!(!bank_account_key_valid(
            &d("04452522"),
            &d("40817810899910004312")
        ));
    }

    #[test]
    fn bank_account_cash_centre_rule() {
        // BIK ending 000..=002: "0" + BIK digits 5-6 replace the last three.
        assert!(bank_account_key_valid(
            &d("044525000"),
            &d("40101810100000010000")
        ));
        assert!(bank_account_key_valid(
            &d("044525001"),
            &d("40817810500000000001")
        ));
        // The same account checked with the ordinary rule fails.
        assert!(!bank_account_key_valid(
            &d("044525003"),
            &d("40817810500000000001")
        ));
    }

    #[test]
    fn bank_account_single_digit_change_fails() {
        let bik = d("044525225");
        every_digit_change_breaks(&d("40817810899910004312"), |a| {
            bank_account_key_valid(&bik, a)
        });
    }

    #[test]
    fn ssn_issuance_ranges() {
        assert!(ssn_issuable(123, 45, 6789));
        assert!(ssn_issuable(1, 1, 1));
        assert!(ssn_issuable(899, 99, 9999));
        assert!(!ssn_issuable(0, 45, 6789));
        assert!(!ssn_issuable(666, 45, 6789));
        assert!(!ssn_issuable(900, 45, 6789));
        assert!(!ssn_issuable(999, 45, 6789));
        assert!(!ssn_issuable(123, 0, 6789));
        assert!(!ssn_issuable(123, 100, 6789));
        assert!(!ssn_issuable(123, 45, 0));
        assert!(!ssn_issuable(123, 45, 10000));
    }
}
