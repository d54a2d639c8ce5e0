//! Fuzzes RedactText's text handling on arbitrary input, as the vault runs
//! it: scan, mint a token per finding, splice the tokens in, then list the
//! token-shaped candidates RestoreText would look up in the result. None of
//! it may panic; the spliced text must hold each token exactly at the
//! offsets `splice` reports (they are the `Finding.start/end` of the
//! response), with the text between findings unchanged; and every
//! candidate span must be in bounds and on char boundaries.

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

use scan::spans::{splice, token_candidates};
use scan::Scanner;
use token::formats::generate_token;

static SCANNER: LazyLock<Scanner> = LazyLock::new(Scanner::all);

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
            generate_token(f.kind, &text[f.start..f.end], &mut rng)
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
    for (start, end) in token_candidates(&redacted) {
        assert!(start < end && end <= redacted.len(), "candidate out of bounds");
        assert!(redacted.is_char_boundary(start) && redacted.is_char_boundary(end));
    }
});
