use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::*;

fn spec(name: &str, pattern: &str, alphabets: &[&str], keep: &[usize]) -> TemplateSpec {
    TemplateSpec {
        name: name.into(),
        pattern: pattern.into(),
        alphabets: alphabets.iter().map(|a| a.to_string()).collect(),
        keep: keep.to_vec(),
    }
}

fn loyalty() -> Template {
    Template::new(
        &spec(
            "loyalty_card",
            r"LC-(\d{4})-(\d{4})-([A-Z]{2})",
            &["numeric", "numeric", "alpha_upper"],
            &[1],
        ),
        &BTreeMap::new(),
    )
    .expect("valid")
}

fn error(spec: &TemplateSpec, alphabets: &BTreeMap<String, String>) -> String {
    Templates::new(std::slice::from_ref(spec), alphabets)
        .expect_err("invalid")
        .to_string()
}

#[test]
fn bad_templates_are_refused_with_the_format_named() {
    let none = BTreeMap::new();
    for (spec, expected) in [
        (spec("f", r"(\d{4", &["numeric"], &[]), "invalid pattern"),
        (spec("f", "", &["numeric"], &[]), "pattern is empty"),
        (spec("f", r"(\d*)", &["numeric"], &[]), "empty string"),
        (
            spec("f", r"ID-\d{4}", &["numeric"], &[]),
            "no capture group",
        ),
        (
            spec("f", r"(\d{4})", &["digits"], &[]),
            "unknown alphabet \"digits\"",
        ),
        (
            spec("card", r"(\d{4})", &["numeric"], &[]),
            "built-in format",
        ),
        (spec("", r"(\d{4})", &["numeric"], &[]), "the name must be"),
        (spec("f", r"(\d{4})", &["numeric"], &[1]), "every group"),
        (
            spec("f", r"(\d{4})", &["numeric"], &[2]),
            "keep names group 2",
        ),
        (
            spec("f", r"(\d)-(\d)", &["numeric", "numeric", "alpha"], &[]),
            "alphabets has 3 entries",
        ),
        (spec("f", r"(\d(\d))", &["numeric"], &[]), "inside another"),
        (
            spec("f", r"(\d)+", &["numeric"], &[]),
            "repeated capture group",
        ),
        (
            spec("f", r"(?:(\d)-){3}", &["numeric"], &[]),
            "repeated capture group",
        ),
        (
            spec("f", r"(\d){1,}", &["numeric"], &[]),
            "repeated capture group",
        ),
    ] {
        let message = error(&spec, &none);
        let named = format!("format {:?}", spec.name);
        assert!(message.contains(expected), "{message}");
        assert!(message.starts_with(&named), "{message}");
    }
    let twice = spec("f", r"(\d{4})", &["numeric"], &[]);
    let message = Templates::new(&[twice.clone(), twice], &none)
        .expect_err("a name twice")
        .to_string();
    assert!(
        message.contains("\"f\"") && message.contains("twice"),
        "{message}"
    );
    let tiny = BTreeMap::from([("one".to_string(), "xx".to_string())]);
    let message = error(&spec("f", r"(x{4})", &["one"], &[]), &tiny);
    assert!(
        message.contains("\"one\"") && message.contains("2 different"),
        "{message}"
    );
    let shadow = BTreeMap::from([("numeric".to_string(), "ab".to_string())]);
    assert!(
        error(&spec("f", r"([ab]{4})", &["numeric"], &[]), &shadow).contains("built-in alphabet")
    );
}

#[test]
fn classes_and_escaped_parens_are_not_groups() {
    let none = BTreeMap::new();
    // `(` inside a class and `\(` are literals; the one group is fine.
    Template::new(&spec("f", r"[(]\((\d{3})\)[)\]]", &["numeric"], &[]), &none).expect("one group");
    Template::new(&spec("f", r"(?i:x)-(?P<n>\d{3})", &["numeric"], &[]), &none)
        .expect("a flag group and a named group");
    // Optional groups capture at most once.
    let t = Template::new(
        &spec(
            "f",
            r"(\d{2})(?:/([A-Z]{2}))?-(\d){0,1}x",
            &["numeric", "alpha_upper", "numeric"],
            &[],
        ),
        &none,
    )
    .expect("optional groups");
    let mut rng = StdRng::seed_from_u64(3);
    let token = t.generate_token("12-x", &mut rng).expect("token");
    assert!(token.len() == 4 && token.ends_with("-x") && token != "12-x");
}

#[test]
fn values_are_checked_against_pattern_and_alphabets() {
    let t = loyalty();
    t.validate("LC-1234-5678-AB").expect("valid");
    for (value, expected) in [
        ("", "value is empty"),
        (
            "LC-1234-5678-A",
            "does not match the pattern of format \"loyalty_card\"",
        ),
        ("XLC-1234-5678-AB", "does not match"),
        ("LC-1234-5678-ABC", "does not match"),
    ] {
        let message = t.validate(value).expect_err(value).to_string();
        assert!(message.contains(expected), "{message}");
    }
    // The pattern allows it but the group's alphabet does not.
    let t =
        Template::new(&spec("f", r"(\w{4})", &["numeric"], &[]), &BTreeMap::new()).expect("valid");
    let message = t.validate("12a4").expect_err("letter").to_string();
    assert!(
        message.contains("outside the alphabet of group 1"),
        "{message}"
    );
    assert!(!message.contains("12a4"));
}

#[test]
fn operator_alphabets_and_unicode_keep_character_length() {
    let alphabets = BTreeMap::from([("vowels".to_string(), "аеиоуэюя".to_string())]);
    let t = Template::new(
        &spec("f", r"№([аеиоуэюя]{3})", &["vowels"], &[]),
        &alphabets,
    )
    .expect("valid");
    let mut rng = StdRng::seed_from_u64(7);
    let token = t.generate_token("№ааа", &mut rng).expect("token");
    assert_eq!(token.chars().count(), 4);
    assert!(token.starts_with('№'));
    assert!(token.chars().skip(1).all(|c| "аеиоуэюя".contains(c)));
}

#[test]
fn a_pattern_stricter_than_its_alphabet_gets_tokens_that_match_or_none() {
    let none = BTreeMap::new();
    // Tokens must start with 9 like the values: drawn until they do.
    let t = Template::new(&spec("f", r"(9\d{5})", &["numeric"], &[]), &none).expect("ok");
    let mut rng = StdRng::seed_from_u64(1);
    for _ in 0..50 {
        let token = t.generate_token("912345", &mut rng).expect("token");
        assert!(token.starts_with('9') && token != "912345");
    }
    // No digit string but this one matches: refused, not looped.
    let t = Template::new(&spec("f", r"(12345678)", &["numeric"], &[]), &none).expect("ok");
    let message = t
        .generate_token("12345678", &mut rng)
        .unwrap_err()
        .to_string();
    assert!(message.contains("draws no token"), "{message}");
}

#[test]
fn masks_show_fixed_parts_and_kept_groups_only() {
    let t = loyalty();
    assert_eq!(
        t.mask("LC-1234-5678-AB").as_deref(),
        Some("LC-1234-••••-••")
    );
    assert_eq!(t.mask("not a value"), None);
}

#[test]
fn candidates_find_values_in_text_and_formats_resolve_by_name() {
    let templates = Templates::new(
        &[spec(
            "loyalty_card",
            r"LC-(\d{4})-(\d{4})-([A-Z]{2})",
            &["alphanumeric_upper"],
            &[],
        )],
        &BTreeMap::new(),
    )
    .expect("valid");
    let text = "карта LC-1234-5678-AB и LC-0000-1111-ZZ.";
    let found: Vec<&str> = templates
        .candidates(text)
        .into_iter()
        .map(|(s, e)| &text[s..e])
        .collect();
    assert_eq!(found, ["LC-1234-5678-AB", "LC-0000-1111-ZZ"]);
    assert_eq!(
        templates.format("card"),
        Some(TokenFormat::Builtin(Format::Card))
    );
    assert_eq!(
        templates
            .format("loyalty_card")
            .map(|f| f.name().to_string()),
        Some("loyalty_card".into())
    );
    assert_eq!(templates.format("loyalty"), None);
}

proptest! {
    #[test]
    fn tokens_keep_fixed_parts_kept_groups_and_alphabets(
        a in "[0-9]{4}", b in "[0-9]{4}", c in "[A-Z]{2}", seed in any::<u64>(),
    ) {
        let t = loyalty();
        let value = format!("LC-{a}-{b}-{c}");
        let mut rng = StdRng::seed_from_u64(seed);
        let token = t.generate_token(&value, &mut rng).expect("token");
        prop_assert_ne!(&token, &value);
        prop_assert_eq!(token.len(), value.len());
        t.validate(&token).expect("a token is a value of its format");
        // Fixed parts and the kept group 1 are copied.
        prop_assert_eq!(&token[..8], &value[..8]);
        prop_assert_eq!(&token[12..13], "-");
        prop_assert!(token[8..12].bytes().all(|x| x.is_ascii_digit()));
        prop_assert!(token[13..].bytes().all(|x| x.is_ascii_uppercase()));
    }

    #[test]
    fn tokens_never_equal_even_tiny_values(v in "[01]", seed in any::<u64>()) {
        let alphabets = BTreeMap::from([("bit".to_string(), "01".to_string())]);
        let t = Template::new(&spec("bit", r"b([01])", &["bit"], &[]), &alphabets)
            .expect("valid");
        let value = format!("b{v}");
        let mut rng = StdRng::seed_from_u64(seed);
        let token = t.generate_token(&value, &mut rng).expect("token");
        prop_assert_ne!(&token, &value);
        prop_assert!(token.starts_with('b') && token.len() == 2);
    }

    #[test]
    fn non_matching_input_is_refused_never_panics(value in "\\PC{0,24}") {
        let t = loyalty();
        let mut rng = StdRng::seed_from_u64(0);
        let valid = t.validate(&value).is_ok();
        prop_assert_eq!(valid, t.generate_token(&value, &mut rng).is_ok());
        if !valid {
            // A fixed message: no part of the value in it.
            let message = t.validate(&value).unwrap_err().to_string();
            prop_assert!(
                message == "value is empty"
                    || message == "value does not match the pattern of format \"loyalty_card\""
                    || message.starts_with("value has a character outside the alphabet"),
                "{}", message
            );
        }
    }
}
