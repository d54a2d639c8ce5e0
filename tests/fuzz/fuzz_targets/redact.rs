//! Fuzzes RedactText's text handling on arbitrary input, as the vault runs
//! it: scan, mint a token per finding, splice the tokens in, then list the
//! token-shaped candidates RestoreText would look up in the result. None of
//! it may panic; the spliced text must hold each token exactly at the
//! offsets `splice` reports (they are the `Finding.start/end` of the
//! response), with the text between findings unchanged; and every
//! candidate span (of the built-in formats and of the operator-defined
//! template a custom detector uses) must be in bounds and on char
//! boundaries.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use rand::rngs::StdRng;
use rand::SeedableRng;

// The modules are compiled straight from the main crate's sources, at the
// crate root so that `crate::token::…` in `scan` resolves.
#[allow(dead_code)]
#[path = "../../../src/scan/mod.rs"]
mod scan;
#[allow(dead_code)]
#[path = "../../../src/token/mod.rs"]
mod token;

use std::collections::BTreeMap;

use scan::spans::{splice, token_candidates};
use scan::{CustomDetector, Scanner, Validator};
use token::format::Format;
use token::template::{TemplateSpec, Templates, TokenFormat};

/// One operator-defined format, as `[[formats]]` would give it.
static TEMPLATES: LazyLock<Templates> = LazyLock::new(|| {
    let spec = TemplateSpec {
        name: "fuzz_fmt".into(),
        pattern: r"LC-(\d{4})-([A-Z]{2})".into(),
        alphabets: vec!["numeric".into(), "alpha_upper".into()],
        keep: vec![],
    };
    Templates::new(&[spec], &BTreeMap::new()).expect("a valid template")
});

/// Every built-in detector and a `[[detectors]]` entry for the template.
static SCANNER: LazyLock<Scanner> = LazyLock::new(|| {
    let format = TEMPLATES.format("fuzz_fmt").expect("configured");
    assert!(matches!(format, TokenFormat::Template(_)));
    let detector = CustomDetector {
        name: "fuzz".into(),
        pattern: r"\bLC-\d{4}-[A-Z]{2}\b".into(),
        validator: Validator::None,
        context: Vec::new(),
        format,
    };
    Scanner::with_custom(&Format::ALL, &[detector]).expect("a valid detector")
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let findings = SCANNER.scan(text);
    let mut rng = StdRng::seed_from_u64(data.len() as u64);
    let spans: Vec<(usize, usize)> = findings.iter().map(|f| (f.start, f.end)).collect();
    let tokens: Vec<String> = findings
        .iter()
        .map(|f| {
            f.kind
                .generate_token(&text[f.start..f.end], &mut rng)
                .expect("a finding validates, so it has a token")
        })
        .collect();
    let (redacted, offsets) = splice(text, &spans, &tokens);
    assert_eq!(offsets.len(), tokens.len());
    let mut kept = String::new();
    let mut at = 0;
    for ((start, end), token) in offsets.iter().zip(&tokens) {
        assert_eq!(&redacted[*start..*end], token, "a token is not where splice says");
        kept.push_str(&redacted[at..*start]);
        at = *end;
    }
    kept.push_str(&redacted[at..]);
    let mut original_kept = String::new();
    let mut at = 0;
    for (start, end) in &spans {
        original_kept.push_str(&text[at..*start]);
        at = *end;
    }
    original_kept.push_str(&text[at..]);
    assert_eq!(kept, original_kept, "text outside the findings changed");
    let mut candidates = token_candidates(&redacted);
    candidates.extend(TEMPLATES.candidates(&redacted));
    for (start, end) in candidates {
        assert!(start < end && end <= redacted.len(), "candidate out of bounds");
        assert!(redacted.is_char_boundary(start) && redacted.is_char_boundary(end));
    }
});
