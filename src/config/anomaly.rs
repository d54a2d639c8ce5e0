//! `[anomaly]`: the schema of the behavioural anomaly detection (see
//! `crate::anomaly` and docs/anomaly.md): the window, the warm-up, the
//! detectors' thresholds and what an anomaly does, with per-principal
//! overrides in `[anomaly.principals.NAME]`. Pure schema and range checks;
//! it never holds a value, a token or a subject id.

use std::collections::HashMap;

use serde::Deserialize;

use super::{ConfigError, PrincipalConfig};

/// What an anomaly does to the actor it names, until an operator clears it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnomalyResponse {
    /// Raise the alert only.
    #[default]
    Alert,
    /// The actor's full reveals become masked.
    Mask,
    /// The actor's reveals are refused (PERMISSION_DENIED naming the reason).
    Deny,
}

impl AnomalyResponse {
    pub fn name(self) -> &'static str {
        match self {
            AnomalyResponse::Alert => "alert",
            AnomalyResponse::Mask => "mask",
            AnomalyResponse::Deny => "deny",
        }
    }
}

/// `[anomaly]`. Off unless `enabled = true`. The keys after
/// `window_seconds` are every principal's defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalyConfig {
    #[serde(default)]
    pub enabled: bool,
    /// Length of a window (values and distinct subjects are counted per
    /// window), in seconds.
    #[serde(default = "default_window")]
    pub window_seconds: u64,
    /// Active windows an actor needs before its own baseline is used
    /// (until then it is compared with its principal's other actors).
    #[serde(default = "default_warmup_windows")]
    pub warmup_windows: u64,
    /// Distinct days an actor needs before hours, purposes and formats
    /// new to it are reported.
    #[serde(default = "default_warmup_days")]
    pub warmup_days: u64,
    /// A window's values above this many times the actor's usual high
    /// (99.5th percentile of its windows) is an anomaly.
    #[serde(default = "default_factor")]
    pub volume_factor: f64,
    /// The same for distinct subjects in a window.
    #[serde(default = "default_factor")]
    pub breadth_factor: f64,
    /// The trailing hour's (or the day's) values above this many times
    /// the actor's usual high hour (day) is a slow drip.
    #[serde(default = "default_drip_factor")]
    pub drip_factor: f64,
    /// During warm-up: a window above this many times the principal's
    /// other actors' usual high.
    #[serde(default = "default_factor")]
    pub peer_factor: f64,
    /// Floors under which volume, breadth and drip never fire.
    #[serde(default = "default_min_volume")]
    pub min_volume: u64,
    #[serde(default = "default_min_breadth")]
    pub min_breadth: u64,
    #[serde(default = "default_min_drip")]
    pub min_drip: u64,
    /// The same detector does not fire again for the same actor within
    /// this many seconds (one incident, one alert).
    #[serde(default = "default_cooldown")]
    pub cooldown_seconds: u64,
    #[serde(default)]
    pub response: AnomalyResponse,
    /// Per-principal overrides, by principal name.
    #[serde(default)]
    pub principals: HashMap<String, AnomalyOverride>,
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        toml::from_str("").unwrap_or_else(|_| unreachable!("every key has a default"))
    }
}

/// The thresholds and response of one principal (see [`AnomalyConfig`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalyThresholds {
    pub warmup_windows: u64,
    pub warmup_days: u64,
    pub volume_factor: f64,
    pub breadth_factor: f64,
    pub drip_factor: f64,
    pub peer_factor: f64,
    pub min_volume: u64,
    pub min_breadth: u64,
    pub min_drip: u64,
    pub cooldown_seconds: u64,
    pub response: AnomalyResponse,
}

impl Default for AnomalyThresholds {
    fn default() -> Self {
        AnomalyConfig::default().thresholds_of("")
    }
}

/// `[anomaly.principals.NAME]`: unset keys keep the section's.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalyOverride {
    pub warmup_windows: Option<u64>,
    pub warmup_days: Option<u64>,
    pub volume_factor: Option<f64>,
    pub breadth_factor: Option<f64>,
    pub drip_factor: Option<f64>,
    pub peer_factor: Option<f64>,
    pub min_volume: Option<u64>,
    pub min_breadth: Option<u64>,
    pub min_drip: Option<u64>,
    pub cooldown_seconds: Option<u64>,
    pub response: Option<AnomalyResponse>,
}

fn default_window() -> u64 {
    300
}
fn default_warmup_windows() -> u64 {
    150
}
fn default_warmup_days() -> u64 {
    5
}
fn default_factor() -> f64 {
    3.0
}
fn default_drip_factor() -> f64 {
    2.0
}
fn default_min_volume() -> u64 {
    20
}
fn default_min_breadth() -> u64 {
    8
}
fn default_min_drip() -> u64 {
    60
}
fn default_cooldown() -> u64 {
    3600
}

impl AnomalyConfig {
    /// The thresholds of `principal`: its override over the defaults.
    pub fn thresholds_of(&self, principal: &str) -> AnomalyThresholds {
        let mut t = AnomalyThresholds {
            warmup_windows: self.warmup_windows,
            warmup_days: self.warmup_days,
            volume_factor: self.volume_factor,
            breadth_factor: self.breadth_factor,
            drip_factor: self.drip_factor,
            peer_factor: self.peer_factor,
            min_volume: self.min_volume,
            min_breadth: self.min_breadth,
            min_drip: self.min_drip,
            cooldown_seconds: self.cooldown_seconds,
            response: self.response,
        };
        if let Some(o) = self.principals.get(principal) {
            t.warmup_windows = o.warmup_windows.unwrap_or(t.warmup_windows);
            t.warmup_days = o.warmup_days.unwrap_or(t.warmup_days);
            t.volume_factor = o.volume_factor.unwrap_or(t.volume_factor);
            t.breadth_factor = o.breadth_factor.unwrap_or(t.breadth_factor);
            t.drip_factor = o.drip_factor.unwrap_or(t.drip_factor);
            t.peer_factor = o.peer_factor.unwrap_or(t.peer_factor);
            t.min_volume = o.min_volume.unwrap_or(t.min_volume);
            t.min_breadth = o.min_breadth.unwrap_or(t.min_breadth);
            t.min_drip = o.min_drip.unwrap_or(t.min_drip);
            t.cooldown_seconds = o.cooldown_seconds.unwrap_or(t.cooldown_seconds);
            t.response = o.response.unwrap_or(t.response);
        }
        t
    }

    /// Values in range, and overrides naming configured principals
    /// (`principals` None: not checked, for offline replay).
    pub fn check(&self, principals: Option<&[PrincipalConfig]>) -> Result<(), ConfigError> {
        let invalid = |what: String| Err(ConfigError::Invalid(format!("anomaly: {what}")));
        if self.window_seconds == 0 || self.window_seconds > 86_400 {
            return invalid("window_seconds must be 1 to 86400".into());
        }
        let mut names: Vec<&str> = vec![""];
        names.extend(self.principals.keys().map(String::as_str));
        for name in names {
            let t = self.thresholds_of(name);
            let label = if name.is_empty() {
                "defaults".to_string()
            } else {
                format!("principals.{name}")
            };
            if let (false, Some(principals)) = (name.is_empty(), principals) {
                if !principals.iter().any(|p| p.name == name) {
                    return invalid(format!("{label}: no such principal"));
                }
            }
            let factors = [
                t.volume_factor,
                t.breadth_factor,
                t.drip_factor,
                t.peer_factor,
            ];
            if factors.iter().any(|f| !(f.is_finite() && *f >= 1.0)) {
                return invalid(format!("{label}: a factor must be a number of at least 1"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_apply_per_principal_and_unknown_keys_are_refused() {
        let config: AnomalyConfig = toml::from_str(
            "enabled = true\nmin_breadth = 5\n[principals.support]\nresponse = \"mask\"\nbreadth_factor = 4.0\n",
        )
        .expect("parses");
        assert_eq!(
            config.thresholds_of("other").response,
            AnomalyResponse::Alert
        );
        let support = config.thresholds_of("support");
        assert_eq!(support.response, AnomalyResponse::Mask);
        assert_eq!((support.breadth_factor, support.min_breadth), (4.0, 5));
        assert!(toml::from_str::<AnomalyConfig>("volume_factr = 2.0").is_err());
        assert!(toml::from_str::<AnomalyConfig>("[principals.x]\nwindow_seconds = 2").is_err());
        let low: AnomalyConfig = toml::from_str("drip_factor = 0.5").expect("parses");
        assert!(low.check(None).is_err());
        assert!(
            config.check(Some(&[])).is_err(),
            "support is not configured"
        );
    }
}
