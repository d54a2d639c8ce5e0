//! `[[detectors]]`, `[[formats]]` and `[alphabets]`: the operator's own PII
//! detectors for RedactText and token formats (templates), turned into
//! the scanner and the templates (`crate::scan`, `token::template`) or
//! refused with the detector or format named.

use serde::Deserialize;

use super::{Config, ConfigError};

/// `[[detectors]]`: a regex, an optional check, context words and the
/// format its matches are tokenized with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorConfig {
    pub name: String,
    pub pattern: String,
    /// `"luhn"`, `"mod97"` or `"none"`.
    #[serde(default = "default_validator")]
    pub validator: String,
    /// Words of which one must stand shortly before a match (none: no
    /// context needed).
    #[serde(default)]
    pub context: Vec<String>,
    /// A format name (`card`, `text`, ...); each match must be valid in it.
    pub format: String,
}

/// `[[formats]]`: an operator-defined token format, a regex whose capture
/// groups are replaced character by character from their alphabets
/// (`token::template`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormatConfig {
    pub name: String,
    pub pattern: String,
    /// One alphabet name for every group, or one per group.
    pub alphabets: Vec<String>,
    /// 1-based numbers of the groups the token copies unchanged.
    #[serde(default)]
    pub keep: Vec<usize>,
}

impl DetectorConfig {
    /// The detector for the scanner, or the reason it is not one. Its
    /// format is a built-in one or one of `templates`.
    pub fn to_custom(
        &self,
        templates: &crate::token::template::Templates,
    ) -> Result<crate::scan::CustomDetector, String> {
        use crate::scan::Validator;
        let validator = match self.validator.as_str() {
            "luhn" => Validator::Luhn,
            "mod97" => Validator::Mod97,
            "none" => Validator::None,
            other => {
                return Err(format!(
                    "detector {:?}: validator {other:?} is not luhn, mod97 or none",
                    self.name
                ))
            }
        };
        let format = templates
            .format(&self.format)
            .ok_or_else(|| format!("detector {:?}: unknown format {:?}", self.name, self.format))?;
        Ok(crate::scan::CustomDetector {
            name: self.name.clone(),
            pattern: self.pattern.clone(),
            validator,
            context: self.context.clone(),
            format,
        })
    }
}

fn default_validator() -> String {
    "none".to_string()
}

impl Config {
    /// The operator-defined formats of `[[formats]]` and `[alphabets]`.
    pub fn templates(&self) -> Result<crate::token::template::Templates, ConfigError> {
        let specs: Vec<crate::token::template::TemplateSpec> = self
            .formats
            .iter()
            .map(|f| crate::token::template::TemplateSpec {
                name: f.name.clone(),
                pattern: f.pattern.clone(),
                alphabets: f.alphabets.clone(),
                keep: f.keep.clone(),
            })
            .collect();
        crate::token::template::Templates::new(&specs, &self.alphabets)
            .map_err(|e| ConfigError::Invalid(e.to_string()))
    }

    /// The RedactText scanner: every built-in detector plus `[[detectors]]`,
    /// whose formats may be `templates`.
    pub fn scanner_with(
        &self,
        templates: &crate::token::template::Templates,
    ) -> Result<crate::scan::Scanner, ConfigError> {
        let custom = self
            .detectors
            .iter()
            .map(|d| d.to_custom(templates))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ConfigError::Invalid)?;
        crate::scan::Scanner::with_custom(&crate::token::format::Format::ALL, &custom)
            .map_err(|e| ConfigError::Invalid(e.to_string()))
    }

    /// The RedactText scanner, with this config's `[[formats]]`.
    pub fn scanner(&self) -> Result<crate::scan::Scanner, ConfigError> {
        self.scanner_with(&self.templates()?)
    }
}
