//! New-value quotas: how many values that get a NEW token (a deterministic
//! value not stored before for the subject, or any random-mode item) a
//! caller may create per window, so that Tokenize and RedactText cannot be
//! used as a dictionary oracle (try every candidate of a known token's
//! shape for one subject) nor to fill the token space of one shape.
//!
//! Limits, per window of `window_seconds`:
//! - per subject and principal, and per subject over all principals (the
//!   oracle: every candidate is a new value of the one subject);
//! - per principal over all subjects;
//! - per principal and shape (a format with the characters its tokens
//!   keep: a card's first six and last four, a phone's prefix): a share of
//!   the shape's token space, with a floor, so filling one shape takes
//!   hundreds of windows, alerting in each.
//!
//! It owns the limits' resolution and the alerts; the counting is the
//! vault's (`vault::quota`). It never sees a value or a subject id: an
//! alert holds names, counts and the subject's keyed hash (for the audit
//! record, which hashes it again).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::rate::ALERT_TARGET;
use crate::config::{NewValueLimits, NewValueOverride};
use crate::crypto::SubjectHash;
use crate::rpc::Rpc;

/// Which new-value limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaScope {
    /// One subject's new values created by one principal.
    SubjectPerPrincipal,
    /// One subject's new values, all principals together.
    Subject,
    /// One principal's new values over all subjects.
    Principal,
    /// One principal's new tokens of one shape.
    Shape,
}

impl QuotaScope {
    pub fn name(self) -> &'static str {
        match self {
            QuotaScope::SubjectPerPrincipal => "subject_per_principal",
            QuotaScope::Subject => "subject",
            QuotaScope::Principal => "principal",
            QuotaScope::Shape => "shape_per_principal",
        }
    }
}

/// A quota warning (use passed `alert_at_percent`, the call was served) or
/// refusal (RESOURCE_EXHAUSTED, nothing stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaAlert {
    pub exceeded: bool,
    pub scope: QuotaScope,
    pub principal: Arc<str>,
    pub actor: Option<Arc<str>>,
    pub rpc: Rpc,
    /// The subject whose new values were counted (keyed hash).
    pub subject: SubjectHash,
    /// New values the call asked for in this scope.
    pub values: u64,
    /// Used in this window before the call.
    pub used: u64,
    pub limit: u64,
    pub window_seconds: u64,
}

impl QuotaAlert {
    pub fn kind_name(&self) -> &'static str {
        if self.exceeded {
            "new_value_limit_exceeded"
        } else {
            "new_value_limit_warning"
        }
    }

    /// Logs the alert at WARN on [`ALERT_TARGET`] and counts it.
    pub fn raise(&self) {
        let counter = if self.exceeded {
            &QUOTA_ALERTS.exceeded
        } else {
            &QUOTA_ALERTS.warning
        };
        counter.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            target: ALERT_TARGET,
            alert = self.kind_name(),
            scope = self.scope.name(),
            principal = %self.principal,
            actor = self.actor.as_deref().unwrap_or("-"),
            rpc = self.rpc.name(),
            values = self.values,
            used = self.used,
            limit = self.limit,
            window_seconds = self.window_seconds,
            "new value limit alert"
        );
    }

    /// The audit record's detail line.
    pub fn detail(&self) -> String {
        format!(
            "{} limit {} new values per {} s, {} used, {} asked",
            self.scope.name(),
            self.limit,
            self.window_seconds,
            self.used,
            self.values
        )
    }
}

/// Quota alerts raised since start.
#[derive(Debug, Default)]
pub struct QuotaAlertCounters {
    pub warning: AtomicU64,
    pub exceeded: AtomicU64,
}

pub static QUOTA_ALERTS: QuotaAlertCounters = QuotaAlertCounters {
    warning: AtomicU64::new(0),
    exceeded: AtomicU64::new(0),
};

/// Who creates the new values: the names an alert and the counters use.
#[derive(Debug, Clone)]
pub struct NewValueCaller {
    pub principal: Arc<str>,
    pub actor: Option<Arc<str>>,
    pub rpc: Rpc,
}

/// A principal's limits after its override.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResolvedLimits {
    pub window_seconds: u64,
    pub per_subject_per_principal: u64,
    pub per_subject: u64,
    pub per_principal: u64,
    pub per_shape_per_principal_permille: f64,
    pub per_shape_per_principal_min: u64,
    pub alert_at_percent: u8,
}

impl ResolvedLimits {
    pub fn of(config: &NewValueLimits, principal: &str) -> Self {
        let over = config
            .principals
            .get(principal)
            .cloned()
            .unwrap_or_else(NewValueOverride::default);
        ResolvedLimits {
            window_seconds: config.window_seconds,
            per_subject_per_principal: over
                .per_subject_per_principal
                .unwrap_or(config.per_subject_per_principal),
            // The subject's total is shared by every principal: an
            // override raises it only for this principal's calls.
            per_subject: over.per_subject.unwrap_or(config.per_subject),
            per_principal: over.per_principal.unwrap_or(config.per_principal),
            per_shape_per_principal_permille: over
                .per_shape_per_principal_permille
                .unwrap_or(config.per_shape_per_principal_permille),
            per_shape_per_principal_min: over
                .per_shape_per_principal_min
                .unwrap_or(config.per_shape_per_principal_min),
            alert_at_percent: config.alert_at_percent,
        }
    }

    /// The quota of one shape whose token space holds `space` tokens.
    pub fn shape_quota(&self, space: f64) -> u64 {
        let share = space * self.per_shape_per_principal_permille / 1000.0;
        // Saturating float-to-int conversion.
        (share as u64).max(self.per_shape_per_principal_min)
    }

    /// Whether going from `before` to `after` crosses the warning line of
    /// `limit`.
    pub fn crosses_warning(&self, before: u64, after: u64, limit: u64) -> bool {
        let line = (limit as f64) * f64::from(self.alert_at_percent.min(100)) / 100.0;
        (before as f64) < line && (after as f64) >= line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_override_raises_one_principals_limits_only() {
        let mut config = NewValueLimits::default();
        config.principals.insert(
            "importer".into(),
            NewValueOverride {
                per_subject_per_principal: Some(50_000),
                ..NewValueOverride::default()
            },
        );
        let importer = ResolvedLimits::of(&config, "importer");
        let chat = ResolvedLimits::of(&config, "chat");
        assert_eq!(importer.per_subject_per_principal, 50_000);
        assert_eq!(
            chat.per_subject_per_principal,
            config.per_subject_per_principal
        );
        assert_eq!(importer.per_subject, config.per_subject);
    }

    #[test]
    fn a_shape_quota_is_a_share_of_its_space_with_a_floor() {
        let limits = ResolvedLimits::of(&NewValueLimits::default(), "chat");
        // A 16-digit card's shape: six random middle digits, ~900,000
        // tokens; 0.2 % of them.
        assert_eq!(limits.shape_quota(900_000.0), 1_800);
        assert_eq!(limits.shape_quota(676.0), 20);
        assert_eq!(limits.shape_quota(1e40), u64::MAX);
    }
}
