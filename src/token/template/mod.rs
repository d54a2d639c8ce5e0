//! Operator-defined token formats (`[[formats]]` in the config), like
//! Vault Transform templates: a regex whose capture groups are the secret
//! parts, and an alphabet per group.
//!
//! This module owns [`Template`] (one compiled format), [`Templates`] (the
//! configured set, looked up by name) and [`TokenFormat`], the format a
//! value is tokenized with: a built-in [`Format`] or a template.
//!
//! A value of a template matches its whole `pattern`, and every character
//! inside a capture group belongs to that group's alphabet. Its token
//! replaces each character of each group by a character drawn from the
//! group's alphabet with the caller's CSPRNG; groups named in `keep` and
//! everything outside the groups (the fixed parts: prefixes, separators)
//! are copied. So the token has the value's length in characters, the same
//! fixed parts at the same places and the same alphabet at each position.
//! A draw that equals the value or no longer matches the pattern is thrown
//! away and redrawn (rejection sampling, as in `format`).
//!
//! Patterns are checked when the config is loaded: they compile, have at
//! least one group, match no empty string, and have no nested or repeated
//! group (a repeated group captures only its last repetition, so the other
//! repetitions would be copied into the token as if they were fixed parts).
//! Whatever the pattern matches outside the groups IS copied: operators
//! must put every secret character inside a group (docs/formats.md, `[[formats]]`).
//!
//! It must never: put any part of a value into an error ([`TemplateError`]
//! carries only names and indices from the configuration); compute a token
//! from a value; panic, whatever the input; or look at the vault.
//!
//! Masked reveal of a template value ([`Template::mask`]) shows the fixed
//! parts and the kept groups, and `•` for every other group character. The
//! policy module finds the template by the stored format name among the
//! templates the vault runs with, which the caller passes in
//! ([`Templates::get`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use rand::Rng;
use regex::{Regex, RegexBuilder};

use super::format::{self, Format, FormatError};

mod rules;

use rules::{check_alphabet, check_group_structure, check_name, resolve_alphabet};

/// Draws before a template gives up (see [`TemplateError::NoToken`]). A
/// draw is rejected when it equals the value (at most 1/2 for the smallest
/// allowed space) or fails the pattern.
const MAX_DRAWS: usize = 64;
/// Size limit of a template's compiled regex.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Longest format or alphabet name.
const MAX_NAME_CHARS: usize = 64;
/// What a masked group character shows (as `policy::mask::MASK`).
const MASK: char = '•';

/// The built-in alphabets, by name.
const BUILTIN_ALPHABETS: [(&str, &str); 11] = [
    ("numeric", "0123456789"),
    ("alpha_upper", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
    ("alpha_lower", "abcdefghijklmnopqrstuvwxyz"),
    (
        "alpha",
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
    ),
    (
        "alphanumeric",
        "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
    ),
    ("alphanumeric_upper", "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
    ("alphanumeric_lower", "0123456789abcdefghijklmnopqrstuvwxyz"),
    ("hex_upper", "0123456789ABCDEF"),
    ("hex_lower", "0123456789abcdef"),
    ("cyrillic_upper", "АБВГДЕЁЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯ"),
    ("cyrillic_lower", "абвгдеёжзийклмнопрстуфхцчшщъыьэюя"),
];

/// The names of the built-in alphabets, for docs/formats.md and errors.
pub fn builtin_alphabet_names() -> impl Iterator<Item = &'static str> {
    BUILTIN_ALPHABETS.iter().map(|(name, _)| *name)
}

/// One `[[formats]]` entry as configured, before compiling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateSpec {
    pub name: String,
    /// A `regex` crate pattern; the whole value must match it.
    pub pattern: String,
    /// Alphabet names: one for every group, or one per group in order.
    pub alphabets: Vec<String>,
    /// 1-based numbers of the groups copied into the token unchanged.
    pub keep: Vec<usize>,
}

/// Why a template could not be built. Names the format and the problem,
/// from configuration only.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TemplateError {
    /// A `[[formats]]` entry, by name.
    #[error("format {name:?}: {reason}")]
    Invalid { name: String, reason: String },
    /// An `[alphabets]` entry (the reason names it).
    #[error("alphabets: {reason}")]
    Alphabet { reason: String },
}

/// Why a value is not acceptable for its format, or has no token.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ValueError {
    /// A built-in format's rule.
    #[error(transparent)]
    Builtin(#[from] FormatError),
    /// The value does not match the template's pattern.
    #[error("value does not match the pattern of format {format:?}")]
    NoMatch { format: String },
    /// A character of a group is not in the group's alphabet.
    #[error("value has a character outside the alphabet of group {group} of format {format:?}")]
    OutsideAlphabet { format: String, group: usize },
    /// No draw gave a token that matches the pattern and differs from the
    /// value: the pattern constrains a group more than its alphabet does,
    /// or every group is too small.
    #[error("format {format:?} draws no token for this value that differs from it and matches its pattern (the value's replaced groups are absent or too small, or the pattern accepts less than their alphabets)")]
    NoToken { format: String },
}

/// A compiled `[[formats]]` entry.
pub struct Template {
    name: String,
    /// `^(?:pattern)$`: what a value must match.
    whole: Regex,
    /// The pattern as written, to find tokens in text.
    search: Regex,
    /// Per capture group (index 0 is group 1).
    groups: Vec<Group>,
}

struct Group {
    alphabet: Arc<[char]>,
    kept: bool,
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Template")
            .field("name", &self.name)
            .field("pattern", &self.search.as_str())
            .finish()
    }
}

// Names are unique among the configured templates: a template is its name.
impl PartialEq for Template {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
impl Eq for Template {}
impl Hash for Template {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl Template {
    /// Compiles `spec` with the built-in alphabets and the operator's
    /// `alphabets` (name → characters).
    ///
    /// # Errors
    ///
    /// [`TemplateError`] naming the format and what is wrong.
    pub fn new(
        spec: &TemplateSpec,
        alphabets: &BTreeMap<String, String>,
    ) -> Result<Template, TemplateError> {
        let invalid = |reason: String| TemplateError::Invalid {
            name: spec.name.clone(),
            reason,
        };
        check_name(&spec.name).map_err(|r| invalid(r.to_string()))?;
        if Format::from_name(&spec.name).is_some() {
            return Err(invalid("the name is a built-in format's".into()));
        }
        if spec.pattern.is_empty() {
            return Err(invalid("pattern is empty".into()));
        }
        let compile = |pattern: &str| {
            RegexBuilder::new(pattern)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| invalid(format!("invalid pattern: {e}")))
        };
        let search = compile(&spec.pattern)?;
        let whole = compile(&format!("^(?:{})$", spec.pattern))?;
        if search.is_match("") {
            return Err(invalid("pattern matches the empty string".into()));
        }
        check_group_structure(&spec.pattern).map_err(|r| invalid(r.to_string()))?;
        let count = search.captures_len() - 1;
        if count == 0 {
            return Err(invalid(
                "pattern has no capture group: nothing would be replaced".into(),
            ));
        }
        let names: Vec<&String> = match spec.alphabets.len() {
            1 => vec![&spec.alphabets[0]; count],
            n if n == count => spec.alphabets.iter().collect(),
            n => {
                return Err(invalid(format!(
                    "alphabets has {n} entries; give one, or one per group ({count})"
                )))
            }
        };
        if let Some(bad) = spec.keep.iter().find(|&&k| k == 0 || k > count) {
            return Err(invalid(format!(
                "keep names group {bad}; groups are numbered 1 to {count}"
            )));
        }
        let mut groups = Vec::with_capacity(count);
        for (i, name) in names.into_iter().enumerate() {
            groups.push(Group {
                alphabet: resolve_alphabet(name, alphabets).map_err(invalid)?,
                kept: spec.keep.contains(&(i + 1)),
            });
        }
        if groups.iter().all(|g| g.kept) {
            return Err(invalid(
                "keep names every group: tokens would equal their values".into(),
            ));
        }
        Ok(Template {
            name: spec.name.clone(),
            whole,
            search,
            groups,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Checks that `value` is a value of this template.
    ///
    /// # Errors
    ///
    /// [`ValueError`] naming the format (and group), never the value.
    pub fn validate(&self, value: &str) -> Result<(), ValueError> {
        self.spans(value).map(drop)
    }

    /// A fresh random token for a valid value (validates first).
    ///
    /// # Errors
    ///
    /// As [`Template::validate`]; [`ValueError::NoToken`] when no draw
    /// matches the pattern.
    pub fn generate_token<R: Rng + ?Sized>(
        &self,
        value: &str,
        rng: &mut R,
    ) -> Result<String, ValueError> {
        let spans = self.spans(value)?;
        for _ in 0..MAX_DRAWS {
            let token = self.draw(value, &spans, rng);
            if token != value && self.whole.is_match(&token) {
                return Ok(token);
            }
        }
        Err(ValueError::NoToken {
            format: self.name.clone(),
        })
    }

    /// `value` masked: fixed parts and kept groups shown, every other group
    /// character `•`. A value that no longer matches (the template was
    /// changed since it was stored) shows nothing.
    pub fn mask(&self, value: &str) -> Option<String> {
        let spans = self.spans(value).ok()?;
        Some(self.rebuild(value, &spans, |_| MASK))
    }

    /// Byte spans in `text` shaped like this template's values (and so its
    /// tokens): the pattern's leftmost non-overlapping matches.
    pub fn candidates(&self, text: &str, out: &mut Vec<(usize, usize)>) {
        out.extend(
            self.search
                .find_iter(text)
                .filter(|m| !m.is_empty())
                .map(|m| (m.start(), m.end())),
        );
    }

    /// The byte spans of the participating groups (with their group
    /// index), sorted, after checking the value's characters.
    fn spans(&self, value: &str) -> Result<Vec<(usize, usize, usize)>, ValueError> {
        if value.is_empty() {
            return Err(FormatError::Empty.into());
        }
        let captures = self
            .whole
            .captures(value)
            .ok_or_else(|| ValueError::NoMatch {
                format: self.name.clone(),
            })?;
        let mut spans = Vec::with_capacity(self.groups.len());
        for (i, group) in self.groups.iter().enumerate() {
            let Some(m) = captures.get(i + 1) else {
                continue;
            };
            if !m.as_str().chars().all(|c| group.alphabet.contains(&c)) {
                return Err(ValueError::OutsideAlphabet {
                    format: self.name.clone(),
                    group: i + 1,
                });
            }
            spans.push((m.start(), m.end(), i));
        }
        spans.sort_unstable();
        // Nested groups are refused at load time; this keeps a pattern
        // the check missed from splicing overlapping spans.
        if spans.windows(2).any(|w| w[0].1 > w[1].0) {
            return Err(ValueError::NoMatch {
                format: self.name.clone(),
            });
        }
        Ok(spans)
    }

    fn draw<R: Rng + ?Sized>(
        &self,
        value: &str,
        spans: &[(usize, usize, usize)],
        rng: &mut R,
    ) -> String {
        self.rebuild(value, spans, |alphabet| {
            alphabet[rng.random_range(0..alphabet.len())]
        })
    }

    /// `value` with every character of every unkept group in `spans`
    /// replaced by `replace(group's alphabet)`.
    fn rebuild(
        &self,
        value: &str,
        spans: &[(usize, usize, usize)],
        mut replace: impl FnMut(&[char]) -> char,
    ) -> String {
        let mut out = String::with_capacity(value.len() + 8);
        let mut at = 0;
        for &(start, end, group) in spans {
            let Some(group) = self.groups.get(group) else {
                continue;
            };
            out.push_str(&value[at..start]);
            let part = &value[start..end];
            if group.kept {
                out.push_str(part);
            } else {
                out.extend(part.chars().map(|_| replace(&group.alphabet)));
            }
            at = end;
        }
        out.push_str(&value[at..]);
        out
    }
}

/// The configured templates, by name.
#[derive(Debug, Default)]
pub struct Templates {
    list: Vec<Arc<Template>>,
    by_name: HashMap<String, Arc<Template>>,
}

impl Templates {
    /// Compiles every spec.
    ///
    /// # Errors
    ///
    /// The first bad spec's [`TemplateError`], or a name given twice, or an
    /// operator alphabet that is bad or shadows a built-in one.
    pub fn new(
        specs: &[TemplateSpec],
        alphabets: &BTreeMap<String, String>,
    ) -> Result<Templates, TemplateError> {
        for (name, chars) in alphabets {
            check_alphabet(name, chars).map_err(|reason| TemplateError::Alphabet { reason })?;
        }
        let mut templates = Templates::default();
        for spec in specs {
            let template = Arc::new(Template::new(spec, alphabets)?);
            if templates.by_name.contains_key(&spec.name) {
                return Err(TemplateError::Invalid {
                    name: spec.name.clone(),
                    reason: "the name is used twice".into(),
                });
            }
            templates
                .by_name
                .insert(spec.name.clone(), Arc::clone(&template));
            templates.list.push(template);
        }
        Ok(templates)
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Template>> {
        self.by_name.get(name)
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The format named `name`: a built-in one, else a template.
    pub fn format(&self, name: &str) -> Option<TokenFormat> {
        match Format::from_name(name) {
            Some(format) => Some(TokenFormat::Builtin(format)),
            None => self.get(name).cloned().map(TokenFormat::Template),
        }
    }

    /// Spans of `text` shaped like a value of any template (see
    /// [`Template::candidates`]). May overlap.
    pub fn candidates(&self, text: &str) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for template in &self.list {
            template.candidates(text, &mut out);
        }
        out
    }
}

/// A format a value is tokenized with.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TokenFormat {
    Builtin(Format),
    Template(Arc<Template>),
}

impl From<Format> for TokenFormat {
    fn from(format: Format) -> Self {
        TokenFormat::Builtin(format)
    }
}

impl PartialEq<Format> for TokenFormat {
    fn eq(&self, other: &Format) -> bool {
        *self == TokenFormat::Builtin(*other)
    }
}

impl fmt::Display for TokenFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl TokenFormat {
    /// The name used on the wire, in configuration and in stored records.
    pub fn name(&self) -> &str {
        match self {
            TokenFormat::Builtin(format) => format.name(),
            TokenFormat::Template(template) => template.name(),
        }
    }

    /// The built-in format, if it is one.
    pub fn builtin(&self) -> Option<Format> {
        match self {
            TokenFormat::Builtin(format) => Some(*format),
            TokenFormat::Template(_) => None,
        }
    }

    /// See [`format::validate`] and [`Template::validate`].
    ///
    /// # Errors
    ///
    /// [`ValueError`] without any part of the value.
    pub fn validate(&self, value: &str) -> Result<(), ValueError> {
        match self {
            TokenFormat::Builtin(format) => Ok(format::validate(*format, value)?),
            TokenFormat::Template(template) => template.validate(value),
        }
    }

    /// See [`format::generate_token`] and [`Template::generate_token`].
    ///
    /// # Errors
    ///
    /// As [`TokenFormat::validate`], and [`ValueError::NoToken`].
    pub fn generate_token<R: Rng + ?Sized>(
        &self,
        value: &str,
        rng: &mut R,
    ) -> Result<String, ValueError> {
        match self {
            TokenFormat::Builtin(format) => Ok(format::generate_token(*format, value, rng)?),
            TokenFormat::Template(template) => template.generate_token(value, rng),
        }
    }
}

#[cfg(test)]
mod tests;
