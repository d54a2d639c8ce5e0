//! `Config::check`: what serde cannot check, over the whole config: values
//! in range, names known and used once, and what one section needs of
//! another (an `mtls_subject` needs `[tls] client_ca`, a reveal names a
//! known format, the ledger is not the data database). Checks of one
//! section's own keys live beside it and are called from here. It opens
//! no file and connects to nothing.

use super::principals::{check_principal, check_reveal_formats};
use super::server::is_origin;
use super::{
    Config, ConfigError, KekConfig, MAX_ACTOR_LEEWAY_SECONDS, MAX_ACTOR_MAX_AGE_SECONDS,
    MAX_PURGE_WITHIN_SECONDS,
};

impl Config {
    /// Checks what serde cannot: values in range, names known.
    pub fn check(&self) -> Result<(), ConfigError> {
        if !["rocksdb", "postgres"].contains(&self.storage.backend.as_str()) {
            return Err(ConfigError::Invalid(format!(
                "storage.backend {:?} is not supported (\"rocksdb\" or \"postgres\")",
                self.storage.backend
            )));
        }
        self.storage.postgres_options()?;
        if self.limits.max_batch_items == 0 || self.limits.max_value_bytes == 0 {
            return Err(ConfigError::Invalid("limits must be above 0".into()));
        }
        if let Some(web) = &self.grpc_web {
            for origin in &web.cors_allowed_origins {
                if !is_origin(origin) {
                    return Err(ConfigError::Invalid(format!(
                        "grpc_web.cors_allowed_origins: {origin:?} is not an origin (scheme://host[:port], no path)"
                    )));
                }
            }
        }
        if let Some(http) = &self.http {
            if http.listen == self.listen && http.listen.port() != 0 {
                return Err(ConfigError::Invalid(format!(
                    "http.listen {}: the HTTP/JSON API needs a port of its own, not the gRPC listen",
                    http.listen
                )));
            }
        }
        if let KekConfig::Vault {
            token_env,
            approle,
            timeout_ms,
            ..
        } = &self.kek
        {
            if token_env.is_some() == approle.is_some() {
                return Err(ConfigError::Invalid(
                    "kek: give exactly one of token_env or [kek.approle] for provider \"vault\""
                        .into(),
                ));
            }
            if !(50..=60_000).contains(timeout_ms) {
                return Err(ConfigError::Invalid(
                    "kek.timeout_ms must be 50 to 60000".into(),
                ));
            }
        }
        if !(1..=MAX_PURGE_WITHIN_SECONDS).contains(&self.erasure.purge_within_seconds) {
            return Err(ConfigError::Invalid(format!(
                "erasure.purge_within_seconds must be 1 to {MAX_PURGE_WITHIN_SECONDS} (30 days)"
            )));
        }
        if self.cache.max_subjects == 0 {
            return Err(ConfigError::Invalid(
                "cache.max_subjects must be above 0".into(),
            ));
        }
        if !(1..=60_000).contains(&self.audit.sync_interval_ms) {
            return Err(ConfigError::Invalid(
                "audit.sync_interval_ms must be 1 to 60000".into(),
            ));
        }
        if !(1..=3_600_000).contains(&self.audit.checkpoint_interval_ms) {
            return Err(ConfigError::Invalid(
                "audit.checkpoint_interval_ms must be 1 to 3600000".into(),
            ));
        }
        let mtls = self.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        let templates = self.templates()?;
        let mut names = std::collections::HashSet::new();
        for (i, principal) in self.principals.iter().enumerate() {
            check_principal(i, principal, mtls)?;
            check_reveal_formats(i, principal, &templates)?;
            if !names.insert(principal.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "principals[{i}] ({}): the name is used twice",
                    principal.name
                )));
            }
        }
        if let Some(actor_tokens) = &self.actor_tokens {
            if actor_tokens.audience.is_empty() || actor_tokens.keys.is_empty() {
                return Err(ConfigError::Invalid(
                    "actor_tokens: give an audience and at least one key".into(),
                ));
            }
            if actor_tokens.leeway_seconds > MAX_ACTOR_LEEWAY_SECONDS {
                return Err(ConfigError::Invalid(format!(
                    "actor_tokens: leeway_seconds is at most {MAX_ACTOR_LEEWAY_SECONDS} (more keeps expired tokens usable)"
                )));
            }
            if !(1..=MAX_ACTOR_MAX_AGE_SECONDS).contains(&actor_tokens.max_age_seconds) {
                return Err(ConfigError::Invalid(format!(
                    "actor_tokens: max_age_seconds is 1 to {MAX_ACTOR_MAX_AGE_SECONDS}"
                )));
            }
        }
        self.scanner_with(&templates)?;
        self.new_value_limits.check(&self.principals)?;
        self.anomaly.check(Some(&self.principals))?;
        for (index, sink) in self.alert_sinks.iter().enumerate() {
            sink.check(index)?;
        }
        self.ledger_location()?;
        Ok(())
    }
}
