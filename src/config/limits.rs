//! `[limits]` and `[new_value_limits]`: the input limits of one call
//! (going over one is `INVALID_ARGUMENT`), and how many values that get a
//! new token a caller may create per window, with per-principal overrides
//! (enforced by `policy::quota`).

use serde::Deserialize;

use super::{ConfigError, PrincipalConfig};

/// Input limits; going over one is `INVALID_ARGUMENT`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Items in one Tokenize or tokens in one Detokenize.
    #[serde(default = "default_max_batch")]
    pub max_batch_items: usize,
    /// Bytes of one value to tokenize.
    #[serde(default = "default_max_value_bytes")]
    pub max_value_bytes: usize,
    /// Bytes of a subject id.
    #[serde(default = "default_max_subject_bytes")]
    pub max_subject_bytes: usize,
    /// Bytes of one gRPC request message.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Bytes of the text of one RedactText or RestoreText call.
    #[serde(default = "default_max_text_bytes")]
    pub max_text_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_batch_items: default_max_batch(),
            max_value_bytes: default_max_value_bytes(),
            max_subject_bytes: default_max_subject_bytes(),
            max_message_bytes: default_max_message_bytes(),
            max_text_bytes: default_max_text_bytes(),
        }
    }
}

fn default_max_batch() -> usize {
    1_000
}

fn default_max_value_bytes() -> usize {
    4_096
}

fn default_max_subject_bytes() -> usize {
    256
}

fn default_max_message_bytes() -> usize {
    4 * 1024 * 1024
}

fn default_max_text_bytes() -> usize {
    64 * 1024
}

/// `[new_value_limits]`: how many values that get a NEW token a caller may
/// create per window (see `policy::quota`). Defaults no real customer
/// reaches; a bulk import of history raises them for its principal under
/// `[new_value_limits.principals.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewValueLimits {
    /// Length of a window, in seconds (fixed windows from the epoch).
    #[serde(default = "default_new_value_window")]
    pub window_seconds: u64,
    /// New values of one subject by one principal per window.
    #[serde(default = "default_new_per_subject_per_principal")]
    pub per_subject_per_principal: u64,
    /// New values of one subject by all principals per window.
    #[serde(default = "default_new_per_subject")]
    pub per_subject: u64,
    /// New values by one principal over all subjects per window.
    #[serde(default = "default_new_per_principal")]
    pub per_principal: u64,
    /// New tokens of one shape by one principal per window, in thousandths
    /// of the shape's token space.
    #[serde(default = "default_new_per_shape_permille")]
    pub per_shape_per_principal_permille: f64,
    /// The shape quota's floor, for small spaces.
    #[serde(default = "default_new_per_shape_min")]
    pub per_shape_per_principal_min: u64,
    /// A warning alert when a call takes a counter past this share.
    #[serde(default = "default_new_alert_at")]
    pub alert_at_percent: u8,
    /// Per-principal overrides, by principal name.
    #[serde(default)]
    pub principals: std::collections::HashMap<String, NewValueOverride>,
}

/// `[new_value_limits.principals.NAME]`: a principal's own limits (a bulk
/// importer's); unset keys keep the section's.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewValueOverride {
    pub per_subject_per_principal: Option<u64>,
    pub per_subject: Option<u64>,
    pub per_principal: Option<u64>,
    pub per_shape_per_principal_permille: Option<f64>,
    pub per_shape_per_principal_min: Option<u64>,
}

impl NewValueOverride {
    /// Limits no import reaches (the dev admin key's).
    pub fn bulk() -> Self {
        NewValueOverride {
            per_subject_per_principal: Some(u64::MAX),
            per_subject: Some(u64::MAX),
            per_principal: Some(u64::MAX),
            per_shape_per_principal_permille: Some(1000.0),
            per_shape_per_principal_min: Some(u64::MAX),
        }
    }
}

impl Default for NewValueLimits {
    fn default() -> Self {
        toml::from_str("").expect("an empty [new_value_limits] takes every default")
    }
}

fn default_new_value_window() -> u64 {
    86_400
}

fn default_new_per_subject_per_principal() -> u64 {
    100
}

fn default_new_per_subject() -> u64 {
    300
}

fn default_new_per_principal() -> u64 {
    1_000_000
}

fn default_new_per_shape_permille() -> f64 {
    2.0
}

fn default_new_per_shape_min() -> u64 {
    20
}

fn default_new_alert_at() -> u8 {
    80
}

impl NewValueLimits {
    /// Values in range, and overrides naming configured principals.
    pub fn check(&self, principals: &[PrincipalConfig]) -> Result<(), ConfigError> {
        let invalid = |what: String| Err(ConfigError::Invalid(format!("new_value_limits: {what}")));
        if self.window_seconds == 0 || self.window_seconds > 366 * 86_400 {
            return invalid("window_seconds must be 1 to 31622400".into());
        }
        if self.alert_at_percent > 100 {
            return invalid("alert_at_percent must be 0 to 100".into());
        }
        let limits = |name: &str, over: &NewValueOverride| {
            let counts = [
                self.per_subject_per_principal,
                self.per_subject,
                self.per_principal,
                self.per_shape_per_principal_min,
            ]
            .into_iter()
            .chain(over.per_subject_per_principal)
            .chain(over.per_subject)
            .chain(over.per_principal)
            .chain(over.per_shape_per_principal_min);
            let permille = over
                .per_shape_per_principal_permille
                .unwrap_or(self.per_shape_per_principal_permille);
            if counts.into_iter().any(|n| n == 0) {
                return Err(format!("{name}: a limit must be above 0"));
            }
            if !(permille > 0.0 && permille <= 1000.0) {
                return Err(format!(
                    "{name}: per_shape_per_principal_permille must be above 0 and at most 1000"
                ));
            }
            Ok(())
        };
        if let Err(what) = limits("defaults", &NewValueOverride::default()) {
            return invalid(what);
        }
        for (name, over) in &self.principals {
            if !principals.iter().any(|p| &p.name == name) {
                return invalid(format!("principals.{name}: no such principal"));
            }
            if let Err(what) = limits(&format!("principals.{name}"), over) {
                return invalid(what);
            }
        }
        Ok(())
    }
}
