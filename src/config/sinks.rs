//! `[[alert_sinks]]`: where alerts (rate limits, new-value limits' rate
//! alerts and anomalies) are sent besides the log: the schema and its
//! range checks. It holds the name of the variable with the signing
//! secret, never the secret.

use serde::Deserialize;

use super::ConfigError;

/// One sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSinkConfig {
    /// `"webhook"`: a JSON POST, HMAC-signed.
    pub kind: String,
    /// `http://` or `https://` URL of the receiver.
    pub url: String,
    /// The environment variable holding the HMAC-SHA256 key of the
    /// `x-tokenvault-signature` header (required).
    pub secret_env: String,
    /// Alerts waiting to be sent; beyond it new ones are dropped (and
    /// counted), so a slow receiver never holds up a call.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Attempts per alert before it is given up (and counted).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// The first retry's delay; each next one doubles, up to 30 s.
    #[serde(default = "default_backoff")]
    pub backoff_ms: u64,
    /// Deadline of one attempt.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
}

fn default_queue() -> usize {
    1000
}
fn default_attempts() -> u32 {
    8
}
fn default_backoff() -> u64 {
    500
}
fn default_timeout() -> u64 {
    2000
}

impl AlertSinkConfig {
    pub fn check(&self, index: usize) -> Result<(), ConfigError> {
        let invalid = |what: &str| {
            Err(ConfigError::Invalid(format!(
                "alert_sinks[{index}]: {what}"
            )))
        };
        if self.kind != "webhook" {
            return invalid("kind must be \"webhook\"");
        }
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return invalid("url must be http:// or https://");
        }
        if self.secret_env.is_empty() {
            return invalid("secret_env must name an environment variable");
        }
        if self.queue == 0 || self.queue > 1_000_000 {
            return invalid("queue must be 1 to 1000000");
        }
        if self.max_attempts == 0 || self.max_attempts > 100 {
            return invalid("max_attempts must be 1 to 100");
        }
        if self.timeout_ms == 0 || self.timeout_ms > 60_000 {
            return invalid("timeout_ms must be 1 to 60000");
        }
        Ok(())
    }
}
