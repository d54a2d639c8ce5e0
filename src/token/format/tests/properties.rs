//! Property tests: every format is total, and its tokens keep the
//! format's invariants.

use super::*;

// -- properties ----------------------------------------------------------

fn generated(format: Format, value: &str, seed: u64) -> Result<String, TestCaseError> {
    generate_token(format, value, &mut seeded(seed))
        .map_err(|e| TestCaseError::fail(format!("{format} {value:?} rejected: {e}")))
}

fn any_digit_run(len: impl Into<proptest::collection::SizeRange>) -> BoxedStrategy<Vec<u8>> {
    vec(0u8..10, len).boxed()
}

fn card_value() -> impl Strategy<Value = String> {
    let separator = prop_oneof![Just(' '), Just('-'), Just('\u{a0}')];
    (12usize..=19)
        .prop_flat_map(move |n| {
            (
                any_digit_run(n - 1),
                vec(weighted(0.25, separator.clone()), n),
            )
        })
        .prop_map(|(payload, seps)| join(&complete(&payload, 1, luhn_valid), &seps))
}

fn phone_value() -> impl Strategy<Value = String> {
    let separator = prop_oneof![Just(' '), Just('-'), Just('.')];
    let country = select(vec![
        "1", "7", "20", "44", "49", "86", "98", "212", "354", "380", "677", "998",
    ]);
    let international = (
        country,
        any_digit_run(5..=12),
        vec(weighted(0.3, separator.clone()), 12),
        any::<bool>(),
    )
        .prop_filter("E.164 has 8 to 15 digits", |(cc, national, _, _)| {
            (8..=15).contains(&(cc.len() + national.len()))
        })
        .prop_map(|(cc, national, seps, brackets)| {
            format!("+{cc} {}", national_layout(&national, &seps, brackets))
        });
    let national = (
        any_digit_run(10),
        vec(weighted(0.3, separator.clone()), 12),
        any::<bool>(),
    )
        .prop_map(|(national, seps, brackets)| {
            format!("8 {}", national_layout(&national, &seps, brackets))
        });
    // Without a country code, as written in most countries: a trunk `0`,
    // `00` or none, 7 to 15 digits, and an optional extension.
    let trunk = select(vec!["", "0", "00"]);
    let no_country = (
        trunk,
        any_digit_run(7..=13),
        vec(weighted(0.3, separator), 12),
        any::<bool>(),
        prop::option::of(any_digit_run(1..=6)),
    )
        .prop_map(|(trunk, national, seps, brackets, extension)| {
            let mut value = format!("{trunk}{}", national_layout(&national, &seps, brackets));
            if let Some(extension) = extension {
                value.push('x');
                value.push_str(&digit_string(&extension));
            }
            value
        });
    prop_oneof![international, national, no_country]
}

/// `(916) 123-45-67` style when `brackets`, else digits with `seps`.
fn national_layout(national: &[u8], seps: &[Option<char>], brackets: bool) -> String {
    if brackets {
        let (area, rest) = national.split_at(3);
        format!("({}) {}", digit_string(area), join(rest, seps))
    } else {
        join(national, seps)
    }
}

fn email_value() -> impl Strategy<Value = String> {
    let local = r"[a-zA-Z0-9а-яА-ЯёЁ!#$%&'*+/=?^_`{|}~-]{1,15}(\.[a-zA-Z0-9а-яё]{1,8}){0,2}";
    let domain = r"[a-zа-я0-9]([a-zа-я0-9-]{0,8}[a-zа-я0-9])?(\.[a-zа-я0-9]{1,8}){1,2}";
    (local, domain).prop_map(|(local, domain)| format!("{local}@{domain}"))
}

fn iban_value() -> impl Strategy<Value = String> {
    let known = select(IBAN_LENGTHS.to_vec()).prop_map(|(c, len)| (c.to_owned(), len));
    let unknown = ("[A-Z]{2}", 15usize..=34)
        .prop_filter("not in the table", |(c, _)| iban_length(c).is_none());
    (
        prop_oneof![known, unknown],
        vec((weighted(0.2, 0u8..26), 0u8..10), 30),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|((country, len), picks, spaced, lower)| {
            let bban: String = picks[..len - 4]
                .iter()
                .map(|&(letter, digit)| match letter {
                    Some(l) => char::from(b'A' + l),
                    None => digit_char(digit),
                })
                .collect();
            let compact = (0..100)
                .map(|check| format!("{country}{check:02}{bban}"))
                .find(|iban| iban_valid(iban))
                .unwrap_or_default();
            let mut value = if spaced {
                let chars: Vec<char> = compact.chars().collect();
                let groups: Vec<String> = chars.chunks(4).map(|g| g.iter().collect()).collect();
                groups.join(" ")
            } else {
                compact
            };
            if lower {
                value.make_ascii_lowercase();
            }
            value
        })
}

fn passport_value() -> impl Strategy<Value = String> {
    let layouts = select(vec![
        (&[10][..], ""),
        (&[4, 6], " "),
        (&[2, 2, 6], " "),
        (&[4, 6], "-"),
        (&[4, 6], " № "),
        (&[4, 6], "№"),
        (&[4, 6], " номер "),
    ]);
    (any_digit_run(10), layouts).prop_map(|(digits, (groups, sep))| grouped(&digits, groups, sep))
}

fn snils_value() -> impl Strategy<Value = String> {
    let number = prop_oneof![
        SNILS_LAST_UNCHECKED + 1..=SNILS_LAST_UNCHECKED + 100_000,
        SNILS_LAST_UNCHECKED + 1..=999_999_999,
    ];
    let layouts = select(vec![
        ("-", "-", " "),
        ("-", "-", "-"),
        (" ", " ", " "),
        ("", "", ""),
    ]);
    (number, layouts).prop_map(|(number, (a, b, c))| {
        let mut payload = [0u8; 9];
        write_decimal(&mut payload, number);
        let d = digit_string(&complete(&payload, 2, snils_valid));
        format!("{}{a}{}{b}{}{c}{}", &d[..3], &d[3..6], &d[6..9], &d[9..])
    })
}

fn inn_value() -> impl Strategy<Value = String> {
    prop_oneof![any_digit_run(9), any_digit_run(10)].prop_map(|payload| {
        let width = if payload.len() == 9 { 1 } else { 2 };
        digit_string(&complete(&payload, width, inn_valid))
    })
}

fn ogrn_value() -> impl Strategy<Value = String> {
    let ogrn = (select(vec![1u8, 5]), any_digit_run(11));
    let ogrnip = (Just(3u8), any_digit_run(13));
    prop_oneof![ogrn, ogrnip].prop_map(|(kind, rest)| {
        let mut payload = vec![kind];
        payload.extend(rest);
        digit_string(&complete(&payload, 1, ogrn_valid))
    })
}

fn bank_account_value() -> impl Strategy<Value = String> {
    let bank = prop_oneof![
        any_digit_run(3),
        (0u8..=2).prop_map(|last| vec![0, 0, last]),
    ];
    // 04, region and branch (4 digits), bank: sometimes a cash centre.
    let bik = (any_digit_run(4), bank).prop_map(|(branch, bank)| {
        let mut bik = vec![0, 4];
        bik.extend(branch);
        bik.extend(bank);
        bik
    });
    (
        weighted(0.6, (bik, select(vec![' ', '/', ':']))),
        any_digit_run(20),
        vec(weighted(0.2, Just(' ')), 20),
    )
        .prop_map(|(bik, mut account, seps)| match bik {
            None => join(&account, &seps),
            Some((bik, sep)) => {
                // The key weight 3 is prime to 10: exactly one key fits.
                for key in 0..10 {
                    account[ACCOUNT_KEY_AT] = key;
                    if bank_account_key_valid(&bik, &account) {
                        break;
                    }
                }
                format!("{}{sep}{}", digit_string(&bik), join(&account, &seps))
            }
        })
}

fn ssn_value() -> impl Strategy<Value = String> {
    (
        (1u16..900).prop_filter("666 is never issued", |&a| a != 666),
        1u8..100,
        1u16..10_000,
        any::<bool>(),
    )
        .prop_map(|(area, group, serial, dashed)| {
            if dashed {
                format!("{area:03}-{group:02}-{serial:04}")
            } else {
                format!("{area:03}{group:02}{serial:04}")
            }
        })
}

fn text_value() -> impl Strategy<Value = String> {
    r"[a-zA-Zа-яА-ЯёЁ0-9 ,.!?😀中\-]{1,30}"
        .prop_filter("needs a letter or digit", |s| s.chars().any(is_replaceable))
}

proptest! {
    #[test]
    fn card_tokens(value in card_value(), seed: u64) {
        let token = generated(Format::Card, &value, seed)?;
        check_token(Format::Card, &value, &token)?;
    }

    #[test]
    fn phone_tokens(value in phone_value(), seed: u64) {
        let token = generated(Format::Phone, &value, seed)?;
        check_token(Format::Phone, &value, &token)?;
    }

    #[test]
    fn email_tokens(value in email_value(), seed: u64) {
        let token = generated(Format::Email, &value, seed)?;
        check_token(Format::Email, &value, &token)?;
    }

    #[test]
    fn iban_tokens(value in iban_value(), seed: u64) {
        let token = generated(Format::Iban, &value, seed)?;
        check_token(Format::Iban, &value, &token)?;
    }

    #[test]
    fn passport_tokens(value in passport_value(), seed: u64) {
        let token = generated(Format::RuPassport, &value, seed)?;
        check_token(Format::RuPassport, &value, &token)?;
    }

    #[test]
    fn snils_tokens(value in snils_value(), seed: u64) {
        let token = generated(Format::RuSnils, &value, seed)?;
        check_token(Format::RuSnils, &value, &token)?;
    }

    #[test]
    fn inn_tokens(value in inn_value(), seed: u64) {
        let token = generated(Format::RuInn, &value, seed)?;
        check_token(Format::RuInn, &value, &token)?;
    }

    #[test]
    fn ogrn_tokens(value in ogrn_value(), seed: u64) {
        let token = generated(Format::RuOgrn, &value, seed)?;
        check_token(Format::RuOgrn, &value, &token)?;
    }

    #[test]
    fn bank_account_tokens(value in bank_account_value(), seed: u64) {
        let token = generated(Format::RuBankAccount, &value, seed)?;
        check_token(Format::RuBankAccount, &value, &token)?;
    }

    #[test]
    fn ssn_tokens(value in ssn_value(), seed: u64) {
        let token = generated(Format::UsSsn, &value, seed)?;
        check_token(Format::UsSsn, &value, &token)?;
    }

    #[test]
    fn text_tokens(value in text_value(), seed: u64) {
        let token = generated(Format::Text, &value, seed)?;
        check_token(Format::Text, &value, &token)?;
    }

    #[test]
    fn opaque_tokens(value in any::<String>().prop_filter("non-empty", |s| !s.is_empty()), seed: u64) {
        let token = generated(Format::Opaque, &value, seed)?;
        check_token(Format::Opaque, &value, &token)?;
    }

    #[test]
    fn never_panics_on_arbitrary_strings(value in any::<String>(), seed: u64) {
        check_total(&value, seed)?;
    }

    #[test]
    fn never_panics_on_digits_and_separators(
        value in r"\+?[0-9 \-().№/:@a-zA-Zа-я\u{a0}]{0,40}",
        seed: u64,
    ) {
        check_total(&value, seed)?;
    }
}

/// Every format answers (no panic), `generate_token` fails exactly when
/// `validate` does and with the same error, and a token holds its
/// format's invariants.
fn check_total(value: &str, seed: u64) -> Result<(), TestCaseError> {
    for format in Format::ALL {
        let validated = validate(format, value);
        let token = generate_token(format, value, &mut seeded(seed));
        match (validated, token) {
            (Ok(()), Ok(token)) => check_token(format, value, &token)?,
            (Err(a), Err(b)) => prop_assert_eq!(a, b),
            (validated, token) => {
                return Err(TestCaseError::fail(format!(
                    "{format}: validate {validated:?} but generate {token:?}"
                )))
            }
        }
    }
    Ok(())
}
