//! Decoding a JSON request body into its request message: UTF-8, one
//! JSON document, pbjson's serde impls (unknown fields refused, both field
//! spellings accepted). A refusal names the field (its JSON path, e.g.
//! `items[0].ttlSeconds`) and what was wrong, and never the value that
//! was sent: a value a caller put in the wrong place may be the very data
//! the vault keeps out of logs and messages.
//!
//! It depends on serde alone, so that the fuzz harness compiles it as it
//! is (`tests/fuzz/fuzz_targets/json.rs`); `json` turns a refusal into
//! INVALID_ARGUMENT.

use serde::de::DeserializeOwned;

/// Why a body was refused: a message for the caller, without any value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// The request message of a JSON body.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, Refused> {
    let text = std::str::from_utf8(body).map_err(|error| {
        Refused(format!(
            "request body is not UTF-8 (at byte {})",
            error.valid_up_to()
        ))
    })?;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let message = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        Refused(describe(&path, error.inner()))
    })?;
    deserializer
        .end()
        .map_err(|error| Refused(describe(".", &error)))?;
    Ok(message)
}

/// A JSON error as a message: where, and what, without the value.
fn describe(path: &str, error: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let at = format!("at line {} column {}", error.line(), error.column());
    match error.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            format!(
                "request body is not valid JSON: {} {at}",
                without_value(error)
            )
        }
        Category::Data if path == "." => format!("request body: {} {at}", without_value(error)),
        Category::Data => format!("{path}: {} {at}", without_value(error)),
    }
}

/// serde's message without the offending value: `invalid type: string
/// "4111…", expected …` keeps the kind (`string`) and what was expected.
/// Field names (`unknown field `subjectid``) are kept: they name the
/// problem and are the caller's schema, not its data.
fn without_value(error: &serde_json::Error) -> String {
    let full = error.to_string();
    // Display appends " at line L column C"; it is said separately.
    let message = full
        .rsplit_once(" at line ")
        .map_or(full.as_str(), |(message, _)| message);
    for prefix in ["invalid type: ", "invalid value: ", "invalid length "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            let (unexpected, expected) = rest.split_once(", expected").unwrap_or((rest, ""));
            // `string "…"`, `integer `…``, `floating point `…``, `map`.
            let kind = unexpected
                .split(['"', '`'])
                .next()
                .unwrap_or_default()
                .trim_end();
            let expected = if expected.is_empty() {
                String::new()
            } else {
                format!(", expected{expected}")
            };
            return format!("{prefix}{kind}{expected}");
        }
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        let expected = rest
            .split_once(", expected")
            .map_or(String::new(), |(_, e)| format!(", expected{e}"));
        return format!("unknown enum value{expected}");
    }
    if message.starts_with("unknown field ")
        || message.starts_with("missing field ")
        || message.starts_with("duplicate field ")
    {
        return message.to_string();
    }
    // pbjson's own messages (an integer that does not parse, an enum
    // number out of range) name no value; anything else is said by kind.
    if message.contains('"') || message.contains('`') {
        return "invalid value".to_string();
    }
    message.to_string()
}
