//! The checks a custom format's definition must pass: its name, its
//! alphabets, and the group structure of its pattern. They only refuse;
//! they never build or change a template.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{builtin_alphabet_names, BUILTIN_ALPHABETS, MAX_NAME_CHARS};

pub(super) fn check_name(name: &str) -> Result<(), &'static str> {
    let ok = !name.is_empty()
        && name.chars().count() <= MAX_NAME_CHARS
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err("the name must be 1 to 64 characters of a-z, 0-9, '_' and '-'")
    }
}

pub(super) fn check_alphabet(name: &str, chars: &str) -> Result<(), String> {
    if builtin_alphabet_names().any(|b| b == name) {
        return Err(format!("alphabet {name:?} is a built-in alphabet's name"));
    }
    check_name(name).map_err(|r| format!("alphabet {name:?}: {r}"))?;
    let mut seen: Vec<char> = chars.chars().collect();
    seen.sort_unstable();
    seen.dedup();
    if seen.len() < 2 {
        return Err(format!(
            "alphabet {name:?} needs at least 2 different characters"
        ));
    }
    Ok(())
}

/// The characters of the alphabet named `name`, sorted and distinct.
pub(super) fn resolve_alphabet(
    name: &str,
    alphabets: &BTreeMap<String, String>,
) -> Result<Arc<[char]>, String> {
    let chars = BUILTIN_ALPHABETS
        .iter()
        .find(|(builtin, _)| *builtin == name)
        .map(|(_, chars)| *chars)
        .or_else(|| alphabets.get(name).map(String::as_str))
        .ok_or_else(|| {
            format!(
                "unknown alphabet {name:?} (built-in: {}; or define it under [alphabets])",
                builtin_alphabet_names().collect::<Vec<_>>().join(", ")
            )
        })?;
    let mut set: Vec<char> = chars.chars().collect();
    set.sort_unstable();
    set.dedup();
    if set.len() < 2 {
        return Err(format!(
            "alphabet {name:?} needs at least 2 different characters"
        ));
    }
    Ok(set.into())
}

/// Refuses nested capture groups and repeated groups (a capture group, or
/// a group holding one, followed by `*`, `+` or `{n,m}` with m above 1):
/// the regex reports only a repeated group's last repetition, so the
/// others would be copied into the token. An optional group (`?`,
/// `{0,1}`) captures at most once and is fine. `pattern` already compiles.
pub(super) fn check_group_structure(pattern: &str) -> Result<(), &'static str> {
    struct Frame {
        capture: bool,
        holds_capture: bool,
    }
    let chars: Vec<char> = pattern.chars().collect();
    let mut stack: Vec<Frame> = Vec::new();
    let mut class_depth = 0usize;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' {
            i += 2;
            continue;
        }
        if class_depth > 0 {
            match c {
                '[' => class_depth += 1,
                ']' => class_depth -= 1,
                _ => {}
            }
            i += 1;
            continue;
        }
        match c {
            '[' => {
                class_depth = 1;
                // A `]` first in a class (after an optional `^`) is literal.
                i += 1;
                if chars.get(i) == Some(&'^') {
                    i += 1;
                }
                if chars.get(i) == Some(&']') {
                    i += 1;
                }
                continue;
            }
            '(' => {
                let capture = chars.get(i + 1) != Some(&'?')
                    || matches!(
                        (chars.get(i + 2), chars.get(i + 3)),
                        (Some('P'), Some('<')) | (Some('<'), _)
                    );
                if capture && stack.iter().any(|f| f.capture) {
                    return Err("a capture group inside another is not allowed; use (?:...) for the inner one");
                }
                stack.push(Frame {
                    capture,
                    holds_capture: false,
                });
            }
            ')' => {
                let Some(frame) = stack.pop() else {
                    return Ok(());
                };
                let holds = frame.capture || frame.holds_capture;
                if let Some(parent) = stack.last_mut() {
                    parent.holds_capture |= holds;
                }
                if holds && repeats(&chars[i + 1..]) {
                    return Err("a repeated capture group captures only its last repetition; put the repetition inside the group, as in (\\d{4})");
                }
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// Whether the quantifier at the start of `rest` (if any) allows more
/// than one repetition.
fn repeats(rest: &[char]) -> bool {
    match rest.first() {
        Some('*' | '+') => true,
        Some('{') => {
            let body: String = rest[1..].iter().take_while(|&&c| c != '}').collect();
            let max = body.rsplit(',').next().unwrap_or("").trim();
            // `{n,}` is unbounded; `{n}` and `{n,m}` repeat up to their last
            // number.
            max.is_empty() || max.parse::<u32>().map_or(true, |m| m > 1)
        }
        _ => false,
    }
}
