//! Examples per format: accepted layouts, what each token keeps, rejected
//! inputs, and error messages.

use super::*;

// -- format names ----------------------------------------------------

#[test]
fn names_round_trip() {
    for format in Format::ALL {
        assert_eq!(Format::from_name(format.name()), Some(format));
        assert_eq!(format.to_string(), format.name());
    }
    let mut names: Vec<_> = Format::ALL.iter().map(|f| f.name()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), Format::ALL.len());
    assert_eq!(Format::from_name("Card"), None);
    assert_eq!(Format::from_name(""), None);
    assert_eq!(Format::from_name("ru-inn"), None);
}

#[test]
fn empty_value_is_rejected_by_every_format() {
    for format in Format::ALL {
        assert_rejected(format, &[("", FormatError::Empty)]);
    }
}

// -- card --------------------------------------------------------------

#[test]
fn card_accepts_common_layouts() {
    for value in [
        "4111111111111111",
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "4111\u{a0}1111\u{a0}1111\u{a0}1111",
        "4111 1111-1111\u{a0}1111",
        "3782 822463 10005",
        "2200 0000 0000 0004",
        "4000 0000 0000 0002",
    ] {
        assert_accepted(Format::Card, value);
    }
    for len in 12..=19 {
        let card = digit_string(&complete(&vec![4; len - 1], 1, luhn_valid));
        assert_accepted(Format::Card, &card);
    }
}

#[test]
fn card_token_keeps_iin_and_last_four() {
    let token = token_for(Format::Card, "4111 1111 1111 1111");
    assert!(token.starts_with("4111 11"), "{token}");
    assert!(token.ends_with(" 1111"), "{token}");
}

#[test]
fn short_cards_keep_fewer_leading_digits() {
    let kept: Vec<usize> = (12..=19).map(card_kept_prefix).collect();
    assert_eq!(kept, [2, 3, 4, 5, 6, 6, 6, 6]);
}

#[test]
fn card_rejects() {
    assert_rejected(Format::Card, CARD_REJECTED);
}

// -- phone -------------------------------------------------------------

#[test]
fn phone_accepts_common_layouts() {
    for value in [
        "+7 (916) 123-45-67",
        "+79161234567",
        "8 (916) 123-45-67",
        "8 916 123 45 67",
        "8-916-123-45-67",
        "89161234567",
        "+44 20 7946 0958",
        "+1 (202) 555-0143",
        "+380 44 123 4567",
        "+49.30.1234567",
        "+354 555 1234",
        "+677 12345",
        "+86 10 1234 5678 123",
        "+41 (0)38 549 02 90",
        "+1-903-140-4508x769",
    ] {
        assert_accepted(Format::Phone, value);
    }
}

#[test]
fn phone_accepts_national_numbers_without_a_country_code() {
    for value in [
        "905-674-3793",
        "(415) 555-0648",
        "07700 063 966",
        "0490 75 40 81",
        "699 956 915",
        "451 5986",
        "01.84.17.61.18",
        "001-253-366-9781",
        "(898)666-3621x0135",
        "5403926876",
    ] {
        assert_accepted(Format::Phone, value);
    }
}

#[test]
fn phone_token_keeps_country_code_and_trunk_prefix() {
    for (value, prefix) in [
        ("+7 (916) 123-45-67", "+7 ("),
        ("+44 20 7946 0958", "+44 "),
        ("+380 44 123 4567", "+380 "),
        ("8 (916) 123-45-67", "8 ("),
        ("89161234567", "8"),
        ("07700 063 966", "0"),
        ("001-253-366-9781", "00"),
        ("(898)666-3621x0135", "("),
    ] {
        let token = token_for(Format::Phone, value);
        assert!(token.starts_with(prefix), "{value} -> {token}");
    }
    let token = token_for(Format::Phone, "(898)666-3621x0135");
    assert_eq!(
        token.find('x'),
        Some(13),
        "the extension's x is kept: {token}"
    );
}

#[test]
fn country_code_lengths_follow_itu() {
    for (digits, len) in [
        (&[1, 2, 0, 2][..], 1),
        (&[7, 9, 1, 6], 1),
        (&[2, 0, 1, 2], 2),
        (&[2, 1, 2, 5], 3),
        (&[2, 7, 1, 1], 2),
        (&[3, 5, 4, 5], 3),
        (&[3, 8, 0, 4], 3),
        (&[4, 2, 0, 6], 3),
        (&[4, 4, 2, 0], 2),
        (&[5, 9, 8, 1], 3),
        (&[6, 6, 8, 1], 2),
        (&[6, 7, 7, 1], 3),
        (&[8, 6, 1, 0], 2),
        (&[8, 5, 2, 1], 3),
        (&[9, 8, 2, 1], 2),
        (&[9, 9, 8, 7], 3),
    ] {
        assert_eq!(country_code_len(digits), len, "{digits:?}");
    }
}

#[test]
fn phone_rejects() {
    assert_rejected(Format::Phone, PHONE_REJECTED);
}

// -- email -------------------------------------------------------------

#[test]
fn email_accepts_addresses() {
    for value in [
        "john.doe@example.com",
        "Иван.Петров@почта.рф",
        "user+tag@sub.example.co.uk",
        "a@b.cd",
        "Zoë_42@example.org",
        "+++@example.org",
        "x@xn--80a1acny.xn--p1ai",
    ] {
        assert_accepted(Format::Email, value);
    }
    let longest_local = format!("{}@example.com", "a".repeat(64));
    assert_accepted(Format::Email, &longest_local);
}

#[test]
fn email_token_cannot_be_delivered() {
    let token = token_for(Format::Email, "Иван.Петров@почта.рф");
    assert!(token.ends_with("@почта.рф.invalid"), "{token}");
    let token = token_for(Format::Email, "+++@example.org");
    assert_eq!(token, "+++@example.org.invalid");
}

#[test]
fn email_rejects() {
    assert_rejected(Format::Email, EMAIL_REJECTED);
    let long_local = format!("{}@example.com", "a".repeat(65));
    let long_label = format!("john@{}.com", "a".repeat(64));
    let long_address = format!("john@{}.com", vec!["a".repeat(60); 5].join("."));
    assert_rejected(
        Format::Email,
        &[
            (&long_local, bad_length("a local part of 1 to 64 bytes")),
            (&long_label, bad_length("domain labels of at most 63 bytes")),
            (&long_address, bad_length("an address of at most 254 bytes")),
        ],
    );
}

// -- iban --------------------------------------------------------------

#[test]
fn iban_accepts_spaced_compact_and_lowercase() {
    for value in [
        "GB82 WEST 1234 5698 7654 32",
        "GB82WEST12345698765432",
        "gb82 west 1234 5698 7654 32",
        "DE89 3704 0044 0532 0130 00",
        "FR14 2004 1010 0505 0001 3M02 606",
        "NO93 8601 1117 947",
        "MT84 MALT 0110 0001 2345 MTLC AST0 01S",
        // Qatar is not in the length table: only 15..=34 applies.
        "QA58 DOHB 0000 1234 5678 90AB CDEF G",
    ] {
        assert_accepted(Format::Iban, value);
    }
}

#[test]
fn iban_token_keeps_country_and_spaces() {
    let token = token_for(Format::Iban, "gb82 west 1234 5698 7654 32");
    assert!(token.starts_with("GB"), "{token}");
    assert_eq!(shape(&token), "AA99 AAAA 9999 9999 9999 99");
}

#[test]
fn iban_length_table_matches_known_examples() {
    assert_eq!(iban_length("DE"), Some(22));
    assert_eq!(iban_length("GB"), Some(22));
    assert_eq!(iban_length("FR"), Some(27));
    assert_eq!(iban_length("NL"), Some(18));
    assert_eq!(iban_length("RU"), Some(33));
    assert_eq!(iban_length("QA"), None);
    let mut countries: Vec<_> = IBAN_LENGTHS.iter().map(|(c, _)| *c).collect();
    countries.dedup();
    assert_eq!(countries.len(), IBAN_LENGTHS.len(), "sorted, no duplicates");
    assert!(IBAN_LENGTHS.iter().all(|(_, len)| (15..=34).contains(len)));
}

#[test]
fn iban_rejects() {
    assert_rejected(Format::Iban, IBAN_REJECTED);
}

// -- ru_passport -------------------------------------------------------

#[test]
fn passport_accepts_common_layouts() {
    for value in [
        "4506 123456",
        "45 06 123456",
        "4506-123456",
        "4506 № 123456",
        "4506№123456",
        "4506123456",
        "0000 000000",
        // `серия 4506 номер 123456` in a chat: the span from the series.
        "4506 номер 123456",
        "45 06 номер 123456",
    ] {
        assert_accepted(Format::RuPassport, value);
    }
}

#[test]
fn passport_rejects() {
    assert_rejected(Format::RuPassport, PASSPORT_REJECTED);
}

// -- ru_snils ----------------------------------------------------------

#[test]
fn snils_accepts_common_layouts() {
    for value in [
        "112-233-445 95",
        "112-233-445-95",
        "112 233 445 95",
        "11223344595",
        "987-654-321 83",
        // Issued before the checksum: any control digits.
        "001-001-998 12",
    ] {
        assert_accepted(Format::RuSnils, value);
    }
}

#[test]
fn snils_rejects() {
    assert_rejected(Format::RuSnils, SNILS_REJECTED);
}

// -- ru_inn ------------------------------------------------------------

#[test]
fn inn_accepts_both_kinds() {
    for value in ["7707083893", "7830002293", "500100732259"] {
        assert_accepted(Format::RuInn, value);
    }
}

#[test]
fn inn_rejects() {
    assert_rejected(Format::RuInn, INN_REJECTED);
}

// -- ru_ogrn -----------------------------------------------------------

#[test]
fn ogrn_accepts_both_kinds() {
    for value in ["1027700132195", "1027739609391", "304500116000157"] {
        assert_accepted(Format::RuOgrn, value);
    }
}

#[test]
fn ogrn_rejects() {
    assert_rejected(Format::RuOgrn, OGRN_REJECTED);
}

// -- ru_bank_account ---------------------------------------------------

#[test]
fn bank_account_accepts_with_and_without_bik() {
    for value in [
        "40817810099910004312",
        "40817 810 0 9991 0004312",
        "00000000000000000000",
        "044525225 40817810899910004312",
        "044525225/40817810899910004312",
        "044525225:40817810899910004312",
        "044525225 40817 810 8 9991 0004312",
        "044525000 40101810100000010000",
        "044525001 40817810500000000001",
    ] {
        assert_accepted(Format::RuBankAccount, value);
    }
}

#[test]
fn bank_account_token_keeps_bik_class_and_currency() {
    let token = token_for(Format::RuBankAccount, "044525225 40817810899910004312");
    assert!(token.starts_with("044525225 40817810"), "{token}");
}

#[test]
fn bank_account_rejects() {
    assert_rejected(Format::RuBankAccount, BANK_ACCOUNT_REJECTED);
}

// -- us_ssn ------------------------------------------------------------

#[test]
fn ssn_accepts_dashed_and_plain() {
    for value in ["123-45-6789", "123456789", "001-01-0001", "899-99-9999"] {
        assert_accepted(Format::UsSsn, value);
    }
}

#[test]
fn ssn_rejects() {
    assert_rejected(Format::UsSsn, SSN_REJECTED);
}

// -- text and opaque -----------------------------------------------------

#[test]
fn text_accepts_anything_with_a_letter_or_digit() {
    for value in [
        "Hello, мир! 42 ☺ Ёлка",
        "5",
        "a",
        "Ё",
        "ё",
        "Карта 4111 1111 1111 1111, срок 12/27",
        "中文 x 😀",
    ] {
        assert_accepted(Format::Text, value);
    }
}

#[test]
fn text_token_draws_cyrillic_from_the_basic_alphabet() {
    let token = token_for(Format::Text, "ЁёЁё");
    assert!(
        token.chars().all(|c| matches!(c, 'А'..='Я' | 'а'..='я')),
        "{token}"
    );
    assert_eq!(shape(&token), "ЯяЯя");
}

#[test]
fn text_rejects() {
    assert_rejected(Format::Text, TEXT_REJECTED);
}

#[test]
fn a_stuck_generator_is_repaired_not_looped() {
    // All-zero bits draw the first of every alphabet, so these values
    // redraw themselves until MAX_DRAWS and then take the repair step.
    let token = |format, value| generate_token(format, value, &mut StuckRng(0));
    assert_eq!(token(Format::Text, "a0"), Ok("b0".to_owned()));
    assert_eq!(
        token(Format::Email, "a@b.cd"),
        Ok("b@b.cd.invalid".to_owned())
    );
    assert_eq!(
        token(Format::RuPassport, "0000 000000"),
        Ok("0000 000001".to_owned())
    );
    assert_eq!(
        token(Format::Card, "4000 0000 0000 0002"),
        Ok("4000 0010 0000 0002".to_owned())
    );
    assert_eq!(
        token(Format::RuBankAccount, "40817810000000000000"),
        Ok("40817810100000000000".to_owned())
    );
}

#[test]
fn opaque_accepts_any_non_empty_value() {
    for value in ["x", "中文", "4111 1111 1111 1111", "\u{0}"] {
        assert_accepted(Format::Opaque, value);
    }
}

// -- errors ------------------------------------------------------------

#[test]
fn error_messages_never_contain_the_value() {
    let tables = [
        (Format::Card, CARD_REJECTED),
        (Format::Phone, PHONE_REJECTED),
        (Format::Email, EMAIL_REJECTED),
        (Format::Iban, IBAN_REJECTED),
        (Format::RuPassport, PASSPORT_REJECTED),
        (Format::RuSnils, SNILS_REJECTED),
        (Format::RuInn, INN_REJECTED),
        (Format::RuOgrn, OGRN_REJECTED),
        (Format::RuBankAccount, BANK_ACCOUNT_REJECTED),
        (Format::UsSsn, SSN_REJECTED),
        (Format::Text, TEXT_REJECTED),
    ];
    for (format, cases) in tables {
        for (value, _) in cases {
            let Err(error) = validate(format, value) else {
                panic!("{format} {value:?} accepted");
            };
            let message = error.to_string();
            assert!(message.starts_with(char::is_lowercase), "{message}");
            // No four consecutive characters of the value appear.
            let chars: Vec<char> = value.chars().collect();
            for window in chars.windows(4) {
                let part: String = window.iter().collect();
                assert!(!message.contains(&part), "{message:?} leaks {part:?}");
            }
        }
    }
}
