//! Examples and property tests of the scanner.

use super::*;

fn found(text: &str) -> Vec<(Format, &str)> {
    Scanner::all()
        .scan(text)
        .into_iter()
        .map(|f| (f.kind, &text[f.start..f.end]))
        .collect()
}

#[test]
fn finds_examples() {
    assert_eq!(found("карта 4111 1111 1111 1111, срок 12/27"), [(Format::Card, "4111 1111 1111 1111")]);
    assert_eq!(found("тел. +7 (916) 123-45-67 доб. 123"), [(Format::Phone, "+7 (916) 123-45-67")]);
    assert_eq!(found("пишите на иван@почта.рф."), [(Format::Email, "иван@почта.рф")]);
    assert_eq!(found("серия 4506 номер 123456"), [(Format::RuPassport, "4506 номер 123456")]);
    assert_eq!(found("ИНН 7707083893"), [(Format::RuInn, "7707083893")]);
    assert_eq!(found("IBAN DE89 3704 0044 0532 0130 00 please"), [(Format::Iban, "DE89 3704 0044 0532 0130 00")]);
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
fn custom_detectors() {
    let custom = CustomDetector {
        name: "employee".into(),
        pattern: r"EMP-\d{6}".into(),
        validator: Validator::None,
        context: vec!["сотрудник".into()],
        format: Format::Opaque,
    };
    let scanner = Scanner::with_custom(&[], &[custom.clone()]).expect("valid pattern");
    assert_eq!(scanner.scan("сотрудник EMP-123456").len(), 1);
    assert_eq!(scanner.scan("EMP-123456").len(), 0);
    let bad = CustomDetector {
        pattern: "(".into(),
        ..custom
    };
    let err = Scanner::with_custom(&[], &[bad]).err().map(|e| e.to_string());
    assert!(err.is_some_and(|e| e.contains("employee")));
}

