//! Examples and property tests of the scanner.

use super::*;

fn found(text: &str) -> Vec<(Format, &str)> {
    Scanner::all()
        .scan(text)
        .into_iter()
        .map(|f| {
            let kind = f
                .kind
                .builtin()
                .expect("built-in detectors find built-in kinds");
            (kind, &text[f.start..f.end])
        })
        .collect()
}

#[test]
fn finds_examples() {
    assert_eq!(
        found("карта 4111 1111 1111 1111, срок 12/27"),
        [(Format::Card, "4111 1111 1111 1111")]
    );
    assert_eq!(
        found("тел. +7 (916) 123-45-67 доб. 123"),
        [(Format::Phone, "+7 (916) 123-45-67")]
    );
    assert_eq!(
        found("пишите на иван@почта.рф."),
        [(Format::Email, "иван@почта.рф")]
    );
    assert_eq!(
        found("серия 4506 номер 123456"),
        [(Format::RuPassport, "4506 номер 123456")]
    );
    assert_eq!(found("ИНН 7707083893"), [(Format::RuInn, "7707083893")]);
    assert_eq!(
        found("IBAN DE89 3704 0044 0532 0130 00 please"),
        [(Format::Iban, "DE89 3704 0044 0532 0130 00")]
    );
}

#[test]
fn skips_look_alikes() {
    for text in [
        "Заказ № 4111111111111111 от 02.10.2025",
        "Сумма 22 800 руб., 14:30",
        "see https://john.do/help or john.do",
        "ftp://anna@files.example.com/report.pdf",
        "ivan@mail.ru.invalid",
        "7707083893",
        "4111 1111 1111 1112",
    ] {
        assert_eq!(found(text), [], "{text}");
    }
}

#[test]
fn cards_of_any_network_after_a_card_word() {
    for (text, card) in [
        (
            "card number 3598 8993 2305 3410 is lost",
            "3598 8993 2305 3410",
        ),
        (
            "Can I withdraw cash using my card 213176828496175 at aTM center",
            "213176828496175",
        ),
        (
            "I have lost my card 180016070420458. Could you help",
            "180016070420458",
        ),
        (
            "Please charge my credit card. Number is 30288610434735",
            "30288610434735",
        ),
        (
            "send me the last billed amount for cc 4047737215142 on my e-mail",
            "4047737215142",
        ),
        ("card number 630427373398 is lost", "630427373398"),
        ("What is the limit for card 501864667909?", "501864667909"),
        (
            "points won on credit card 060426070011 transactions",
            "060426070011",
        ),
        (
            "Моя карта 3598 8993 2305 3410, заблокируйте",
            "3598 8993 2305 3410",
        ),
        ("номер карты 630427373398", "630427373398"),
        ("карта 6304 2737 3398", "6304 2737 3398"),
    ] {
        assert_eq!(found(text), [(Format::Card, card)], "{text}");
    }
}

#[test]
fn card_numbers_need_their_word_outside_the_known_networks() {
    for text in [
        // the same numbers with no card word, or a word that is not one
        "3598 8993 2305 3410",
        "my id 213176828496175",
        "order 630427373398 for my card",
        "501864667909",
        "card 4111 1111 1111 1112",
        // the head of a card token (which fails Luhn) passes Luhn alone
        "card 4107 0434 1925 4122",
        "карта 6304 2737 3398 1",
        "gift card balance 630427373398 руб",
    ] {
        assert_eq!(found(text), [], "{text}");
    }
}

#[test]
fn national_phones_after_a_phone_word() {
    for (text, phones) in [
        (
            "didn't get any message on my registered 905-674-3793. Could you",
            &["905-674-3793"][..],
        ),
        (
            "Can someone call me on (415) 555-0648? I have",
            &["(415) 555-0648"],
        ),
        ("please call me at 07700 063 966", &["07700 063 966"]),
        (
            "Name: Toshimi Arata\nPhone: 0490 75 40 81",
            &["0490 75 40 81"],
        ),
        ("stop receiving messages to 699 956 915", &["699 956 915"]),
        (
            "Personal Info:\nPhone:\n(08) 8747 6301\n\nE-mail:",
            &["(08) 8747 6301"],
        ),
        ("They're not answering at 374 780 163", &["374 780 163"]),
        ("Phone: 451 5986", &["451 5986"]),
        (
            "Mobile: 03.93.92.16.85\nDesk: 5403926876",
            &["03.93.92.16.85", "5403926876"],
        ),
        (
            "Desk: +1-903-140-4508x769\nFax: 259.735.7502x459",
            &["+1-903-140-4508x769", "259.735.7502x459"],
        ),
        (
            "Box 9168\n416 60 039 office\n+46 (0)179 459 33 fax\n",
            &["416 60 039", "+46 (0)179 459 33"],
        ),
        (
            "(37) 788-063-Office\\,07700 063 966-Fax",
            &["(37) 788-063", "07700 063 966"],
        ),
        ("Fax: 001-253-366-9781", &["001-253-366-9781"]),
        ("тел. 495 123-45-67, спасибо", &["495 123-45-67"]),
        ("позвоните мне (812) 123-45-67", &["(812) 123-45-67"]),
    ] {
        let expected: Vec<(Format, &str)> = phones.iter().map(|p| (Format::Phone, *p)).collect();
        assert_eq!(found(text), expected, "{text}");
    }
}

#[test]
fn numbers_near_phone_words_that_are_not_phones() {
    for text in [
        // no phone word
        "Delivery slot 905-674-3793 confirmed",
        "see 0490 75 40 81 in the list",
        // a nearer word says what the number is
        "call me about order 90567437",
        "call me, tracking 905-674-3793",
        "phone me about invoice 0490 75 40 81",
        "позвоните по заказу 495 123-45-67",
        // dates, amounts, times, too short
        "call me on 12.03.2024 please",
        "my phone was ordered on 2024-03-12",
        "позвоните мне 03.04.1987",
        "call me, the total is 1 250 000 руб",
        "call me at 14:30 or 15:45",
        "phone 12345",
        "Phone: 2 x 1200 units",
        // glued to letters
        "phone AB905674379",
    ] {
        assert_eq!(found(text), [], "{text}");
    }
}

#[test]
fn custom_detectors() {
    let custom = CustomDetector {
        name: "employee".into(),
        pattern: r"EMP-\d{6}".into(),
        validator: Validator::None,
        context: vec!["сотрудник".into()],
        format: Format::Opaque.into(),
    };
    let scanner = Scanner::with_custom(&[], std::slice::from_ref(&custom)).expect("valid pattern");
    assert_eq!(scanner.scan("сотрудник EMP-123456").len(), 1);
    assert_eq!(scanner.scan("EMP-123456").len(), 0);
    let bad = CustomDetector {
        pattern: "(".into(),
        ..custom
    };
    let err = Scanner::with_custom(&[], &[bad])
        .err()
        .map(|e| e.to_string());
    assert!(err.is_some_and(|e| e.contains("employee")));
}

#[test]
fn scanner_is_shareable() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Scanner>();
}

#[test]
fn large_inputs_stay_linear() {
    // Many accounts next to many BIKs, many cards, one huge number chunk
    // and an IBAN-shaped run: each used to be a quadratic path candidate.
    let accounts = "БИК 044525225 р/с 40702810938000000001 ".repeat(3_000);
    let cards = "4111 1111 1111 1111 ".repeat(5_000);
    let chunk = "1 ".repeat(50_000);
    let ibans = "AB12CD34EF56GH78 ".repeat(5_000);
    for text in [accounts, cards, chunk, ibans] {
        let started = std::time::Instant::now();
        let findings = Scanner::all().scan(&text);
        assert!(findings.len() <= text.len());
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
    }
}

// ---------------------------------------------------------------------------
// property tests

mod props {
    use std::sync::LazyLock;

    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    static SCANNER: LazyLock<Scanner> = LazyLock::new(Scanner::all);

    /// Words that are no keyword of any kind, Latin and Cyrillic.
    const WORDS: &[&str] = &[
        "hello",
        "the",
        "and",
        "please",
        "thanks",
        "привет",
        "мой",
        "вот",
        "данные",
        "спасибо",
        "это",
        "ok",
        "—",
        ",",
        "вам",
    ];

    fn words() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(WORDS), 0..6).prop_map(|w| w.join(" "))
    }

    /// Text that looks like chat around numbers: digits, separators,
    /// letters of both scripts, `@`, `+`, brackets, `№`, and any char.
    fn chatty_text() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            "[0-9]{1,20}",
            "[ \u{a0}+()\\-./:№@]{1,3}",
            "[a-zA-Zа-яА-ЯёЁ]{1,8}",
            "(ИНН|паспорт|серия|номер|р/с|СНИЛС|ОГРН|SSN|БИК|\\.invalid|https://) ?",
            any::<char>().prop_map(String::from),
        ];
        prop::collection::vec(piece, 0..40).prop_map(|p| p.concat())
    }

    fn check_invariants(text: &str, findings: &[Finding]) -> Result<(), TestCaseError> {
        let mut last_end = 0;
        for f in findings {
            prop_assert!(f.start < f.end && f.end <= text.len());
            prop_assert!(text.is_char_boundary(f.start) && text.is_char_boundary(f.end));
            prop_assert!(f.start >= last_end, "unsorted or overlapping: {findings:?}");
            last_end = f.end;
            prop_assert!(f.kind.validate(&text[f.start..f.end]).is_ok());
        }
        Ok(())
    }

    fn luhn_complete(mut digits: String) -> String {
        for check in 0..10u8 {
            let candidate = format!("{digits}{check}");
            let values: Vec<u8> = candidate.bytes().map(|b| b - b'0').collect();
            if crate::token::checks::luhn_valid(&values) {
                return candidate;
            }
        }
        digits.push('0');
        digits
    }

    fn card() -> impl Strategy<Value = String> {
        let prefix = prop::sample::select(vec!["4", "51", "55", "2200", "2221", "62", "67"]);
        let sep = prop::sample::select(vec!["", " ", "-", "\u{a0}"]);
        (prefix, "[0-9]{14}", sep).prop_map(|(prefix, rest, sep)| {
            let digits = luhn_complete(format!("{prefix}{}", &rest[..15 - prefix.len()]));
            let groups: Vec<&str> = (0..4).map(|i| &digits[i * 4..i * 4 + 4]).collect();
            groups.join(sep)
        })
    }

    fn phone() -> impl Strategy<Value = String> {
        let area = prop::sample::select(vec!["916", "495", "812", "999", "383"]);
        (area, "[0-9]{7}", 0..7usize, "[2-9][0-9]{2}").prop_map(|(area, sub, form, us)| {
            let (a, b, c) = (&sub[..3], &sub[3..5], &sub[5..]);
            match form {
                0 => format!("+7 ({area}) {a}-{b}-{c}"),
                1 => format!("8 ({area}) {a}-{b}-{c}"),
                2 => format!("8 {area} {a} {b} {c}"),
                3 => format!("8-{area}-{a}-{b}-{c}"),
                4 => format!("8{area}{sub}"),
                5 => format!("+7{area}{sub}"),
                _ => format!("+1 ({us}) {a}-{}", &sub[3..]),
            }
        })
    }

    fn email() -> impl Strategy<Value = String> {
        let domain = prop::sample::select(vec![
            "mail.ru",
            "gmail.com",
            "почта.рф",
            "пример.рф",
            "corp-mail.co.uk",
        ]);
        ("[a-zа-я]{1,8}", prop::option::of("[a-z0-9]{1,6}"), domain).prop_map(|(a, b, d)| match b {
            Some(b) => format!("{a}.{b}@{d}"),
            None => format!("{a}@{d}"),
        })
    }

    /// A value of a checksum kind (or email), with the words that
    /// introduce it, as (prefix, kind, value).
    fn checksum_value() -> impl Strategy<Value = (&'static str, Format, String)> {
        let digits = "[0-9]{30}";
        (0..8usize, digits, card(), email()).prop_map(|(which, d, card, email)| {
            let n = |i: usize, len: usize| d[i..i + len].to_owned();
            match which {
                0 => ("карта", Format::Card, card),
                1 => ("почта", Format::Email, email),
                2 => ("IBAN", Format::Iban, iban_complete("DE", &n(0, 18))),
                3 => ("СНИЛС", Format::RuSnils, snils_complete(&n(0, 9))),
                4 => ("ИНН", Format::RuInn, inn10_complete(&n(0, 9))),
                5 => (
                    "ОГРН",
                    Format::RuOgrn,
                    ogrn_complete(&format!("1{}", n(0, 11))),
                ),
                6 => (
                    "SSN",
                    Format::UsSsn,
                    format!(
                        "{:03}-{}-{}",
                        1 + d[..3].parse::<u32>().unwrap_or(0) % 665,
                        "12",
                        "3456"
                    ),
                ),
                _ => (
                    "реквизиты:",
                    Format::RuBankAccount,
                    account_complete("044525225", &format!("40817810{}", n(0, 11))),
                ),
            }
        })
    }

    fn iban_complete(country: &str, bban: &str) -> String {
        for check in 2..=98u32 {
            let candidate = format!("{country}{check:02}{bban}");
            if crate::token::checks::iban_mod97(&candidate) == Some(1) {
                return candidate;
            }
        }
        String::new()
    }

    fn values(s: &str) -> Vec<u8> {
        s.bytes().map(|b| b - b'0').collect()
    }

    fn snils_complete(number: &str) -> String {
        let number = if number < "001001999" {
            "112233445"
        } else {
            number
        };
        let sum: u32 = values(number)
            .iter()
            .zip((1..=9).rev())
            .map(|(&d, w)| u32::from(d) * w)
            .sum();
        let c = sum % 101 % 100;
        format!("{}-{}-{} {c:02}", &number[..3], &number[3..6], &number[6..])
    }

    fn inn10_complete(head: &str) -> String {
        let w = [2u32, 4, 10, 3, 5, 9, 4, 6, 8];
        let sum: u32 = values(head)
            .iter()
            .zip(w)
            .map(|(&d, w)| u32::from(d) * w)
            .sum();
        format!("{head}{}", sum % 11 % 10)
    }

    fn ogrn_complete(head: &str) -> String {
        let rem = values(head)
            .iter()
            .fold(0u64, |acc, &d| (acc * 10 + u64::from(d)) % 11);
        format!("{head}{}", rem % 10)
    }

    fn account_complete(bik: &str, prefix8_rest11: &str) -> String {
        for key in 0..10u8 {
            let account = format!("{}{key}{}", &prefix8_rest11[..8], &prefix8_rest11[8..]);
            if crate::token::checks::bank_account_key_valid(&values(bik), &values(&account)) {
                return format!("{bik}/{account}");
            }
        }
        String::new()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn random_text_keeps_invariants(text in chatty_text()) {
            let findings = SCANNER.scan(&text);
            check_invariants(&text, &findings)?;
        }

        #[test]
        fn any_string_keeps_invariants(text in any::<String>()) {
            let findings = SCANNER.scan(&text);
            check_invariants(&text, &findings)?;
        }

        #[test]
        fn embedded_values_are_found_exactly(
            before in words(),
            after in words(),
            which in 0..3usize,
            card in card(),
            phone in phone(),
            email in email(),
        ) {
            let (kind, value) = match which {
                0 => (Format::Card, card),
                1 => (Format::Phone, phone),
                _ => (Format::Email, email),
            };
            let text = format!("{before} {value} {after}");
            let start = before.len() + 1;
            let expected = Finding { kind: kind.into(), start, end: start + value.len() };
            prop_assert_eq!(SCANNER.scan(&text), vec![expected], "{}", text);
        }

        #[test]
        fn tokens_are_not_found_again(
            items in prop::collection::vec((words(), checksum_value()), 1..5),
            seed: u64,
        ) {
            let mut text = String::new();
            for (words, (intro, _, value)) in &items {
                text.push_str(&format!("{words} {intro} {value}. "));
            }
            let findings = SCANNER.scan(&text);
            for (_, (_, kind, value)) in &items {
                prop_assert!(
                    findings.iter().any(|f| f.kind == *kind && &text[f.start..f.end] == value),
                    "{kind:?} {value:?} not found in {text:?}"
                );
            }
            let mut rng = StdRng::seed_from_u64(seed);
            let mut redacted = text.clone();
            for f in findings.iter().rev() {
                let token = f.kind.generate_token(&text[f.start..f.end], &mut rng)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                redacted.replace_range(f.start..f.end, &token);
            }
            let again = SCANNER.scan(&redacted);
            prop_assert!(again.is_empty(), "found again in {redacted:?}: {again:?}");
        }
    }
}

/// A phone token is a number someone could have: the scanner finds every
/// token drawn for a phone of a plan it checks (a customer whose real
/// number equals another's token is redacted too, and a redacted text
/// scanned again finds its tokens where the numbers were).
#[test]
fn every_phone_token_is_found_again_as_a_phone() {
    let mut rng = rand::rng();
    for value in [
        "+7 916 123-45-67",
        "8 (916) 123-45-67",
        "+1 415 555 0648",
        "+44 7700 900123",
    ] {
        for _ in 0..300 {
            let token = crate::token::format::generate_token(Format::Phone, value, &mut rng)
                .expect("a valid phone");
            let text = format!("мой номер {token}, звоните");
            assert_eq!(
                found(&text),
                [(Format::Phone, token.as_str())],
                "token {token:?} of {value:?}"
            );
        }
    }
}
