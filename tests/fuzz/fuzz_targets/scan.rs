//! Fuzzes PII detection: for any UTF-8 input, `Scanner::scan` does not
//! panic and its findings are in bounds, on char boundaries, sorted,
//! non-overlapping and valid values of their format. The text with every
//! finding replaced by its token is scanned again under the same checks
//! (whether a token is found again depends on its neighbours in arbitrary
//! text, so that property is left to the property tests in src/scan).

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

use scan::{Finding, Scanner};

static SCANNER: LazyLock<Scanner> = LazyLock::new(Scanner::all);

fn check(text: &str, findings: &[Finding]) {
    let mut last_end = 0;
    for f in findings {
        assert!(f.start < f.end && f.end <= text.len(), "out of bounds");
        assert!(text.is_char_boundary(f.start) && text.is_char_boundary(f.end));
        assert!(f.start >= last_end, "unsorted or overlapping");
        last_end = f.end;
        assert!(
            f.kind.validate(&text[f.start..f.end]).is_ok(),
            "{:?} does not validate",
            f.kind
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let findings = SCANNER.scan(text);
    check(text, &findings);
    let mut rng = StdRng::seed_from_u64(data.len() as u64);
    let mut redacted = text.to_owned();
    for f in findings.iter().rev() {
        let token = f
            .kind
            .generate_token(&text[f.start..f.end], &mut rng)
            .expect("a finding validates, so it has a token");
        redacted.replace_range(f.start..f.end, &token);
    }
    check(&redacted, &SCANNER.scan(&redacted));
});
