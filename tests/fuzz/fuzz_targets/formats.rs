//! Fuzzes format validation and token generation: for any input and every
//! format (the built-in ones and an operator-defined template), no panic; a
//! token is produced exactly when the value validates; and a token never
//! equals its value (opaque excepted, see below). A template's token is
//! itself a valid value of the template, with the value's length in
//! characters.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rand::rngs::StdRng;
use rand::SeedableRng;

// The modules are compiled straight from the main crate's sources, at the
// crate root so that `format`'s `super::super::checks` resolves.
#[allow(dead_code)]
#[path = "../../../src/token/checks.rs"]
mod checks;
#[allow(dead_code)]
#[path = "../../../src/token/format/mod.rs"]
mod format;
#[allow(dead_code)]
#[path = "../../../src/token/template/mod.rs"]
mod template;

use std::collections::BTreeMap;
use std::sync::LazyLock;

use format::{generate_token, validate, Format};
use template::{Template, TemplateSpec};

/// A template with fixed parts, a kept group, an optional group and a
/// multi-byte alphabet.
static TEMPLATE: LazyLock<Template> = LazyLock::new(|| {
    let spec = TemplateSpec {
        name: "fuzz_fmt".into(),
        pattern: r"ID-(\d{2,4})(?:/([A-Z]{2}))?-([а-я]{1,3})".into(),
        alphabets: vec!["numeric".into(), "alpha_upper".into(), "cyrillic_lower".into()],
        keep: vec![1],
    };
    Template::new(&spec, &BTreeMap::new()).expect("a valid template")
});

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(data.len() as u64);
    for format in Format::ALL {
        let valid = validate(format, value).is_ok();
        match generate_token(format, value, &mut rng) {
            Ok(token) => {
                assert!(valid, "{format:?}: token for a value that does not validate");
                // Opaque tokens are 130 fresh random bits with no rule against
                // equality (SPEC); with this seeded RNG the fuzzer can feed a
                // token back as a value, which a CSPRNG makes a 2^-130 event.
                if format != Format::Opaque {
                    assert_ne!(token, value, "{format:?}: token equals its value");
                }
            }
            Err(_) => assert!(!valid, "{format:?}: valid value without a token"),
        }
    }
    let valid = TEMPLATE.validate(value).is_ok();
    match TEMPLATE.generate_token(value, &mut rng) {
        Ok(token) => {
            assert!(valid, "template: token for a value that does not validate");
            assert_ne!(token, value, "template: token equals its value");
            assert_eq!(token.chars().count(), value.chars().count());
            assert!(TEMPLATE.validate(&token).is_ok(), "template: token is no value");
        }
        Err(_) => assert!(!valid, "template: valid value without a token"),
    }
    if let Some(masked) = TEMPLATE.mask(value) {
        assert_eq!(masked.chars().count(), value.chars().count());
    }
});
