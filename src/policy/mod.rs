//! Access policy: which RPCs a principal may call, how each format is
//! revealed to it (full or masked), whether it must give a purpose, its
//! detokenize rate limits and alerts (`rate`), and the actor tokens that
//! name the operator behind a service (`actor`).
//!
//! It decides, and logs denials and alerts with names and counts only; it
//! never sees a request body, and never logs a value, token, subject id or
//! purpose. Audit records for its decisions are appended by the caller
//! (see the `// AUDIT:` comments).

pub mod actor;
pub mod mask;
pub mod quota;
pub mod rate;

use std::collections::HashMap;
use std::sync::Arc;

use zeroize::Zeroizing;

pub use actor::{check_client, Actor, ActorError, ActorVerifier, ACTOR_HEADER};
pub use mask::mask;
pub use rate::{Alert, AlertKind, RateLimiter, Scope, ALERTS, ALERT_TARGET};

use crate::config::{PrincipalConfig, RevealConfig, SecondFactorFallback};
use crate::rpc::Rpc;
use crate::token::template::Templates;

/// Longest purpose accepted, in bytes.
pub const MAX_PURPOSE_BYTES: usize = 256;
/// `amr` values that count as a second factor unless the policy names its
/// own (RFC 8176: multi-factor, one-time password, hardware key, SMS).
pub const DEFAULT_SECOND_FACTOR_AMR: [&str; 4] = ["mfa", "otp", "hwk", "sms"];

/// How a caller sees a detokenized value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reveal {
    Full,
    Masked,
}

impl From<RevealConfig> for Reveal {
    fn from(config: RevealConfig) -> Self {
        match config {
            RevealConfig::Full => Reveal::Full,
            RevealConfig::Masked => Reveal::Masked,
        }
    }
}

/// What a policy demands of the actor before a full reveal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecondFactor {
    /// `amr` values of which the actor token must carry one.
    pub amr: Vec<String>,
    /// Without one: masked reveal, or the call is refused.
    pub otherwise: SecondFactorFallback,
}

/// One principal's policy, from its `[[principals]]` entry.
#[derive(Debug, Clone)]
pub struct Policy {
    pub name: Arc<str>,
    allowed: u8,
    reveal: HashMap<String, Reveal>,
    default_reveal: Reveal,
    pub require_purpose: bool,
    /// Detokenized values a minute, over every actor.
    pub max_detokenize_per_minute: Option<u32>,
    /// Detokenized values a minute for each actor behind the principal.
    pub max_detokenize_per_minute_per_actor: Option<u32>,
    /// Share of a limit used at which a warning alert is raised.
    pub alert_at_percent: u8,
    /// Reveal calls must carry an actor token.
    pub require_actor: bool,
    pub second_factor: Option<SecondFactor>,
    /// The identity provider's client id its actor tokens must name
    /// (`azp` / `client_id`); None: not checked.
    pub actor_client_id: Option<String>,
}

impl Policy {
    /// Every RPC, full reveal of every format, no purpose, no limit: the
    /// dev admin key.
    pub fn allow_all(name: &str) -> Self {
        Policy::new(name, Rpc::ALL, Reveal::Full)
    }

    fn new(name: &str, allow: impl IntoIterator<Item = Rpc>, default_reveal: Reveal) -> Self {
        Policy {
            name: name.into(),
            allowed: allow.into_iter().fold(0, |bits, rpc| bits | rpc.bit()),
            reveal: HashMap::new(),
            default_reveal,
            require_purpose: false,
            max_detokenize_per_minute: None,
            max_detokenize_per_minute_per_actor: None,
            alert_at_percent: 80,
            require_actor: false,
            second_factor: None,
            actor_client_id: None,
        }
    }

    /// The policy a `[[principals]]` entry describes, or what is wrong
    /// with it. Format names are checked by `Config::check`.
    pub fn from_config(config: &PrincipalConfig) -> Result<Self, String> {
        let allow = config
            .allow
            .iter()
            .map(|name| {
                Rpc::from_name(name)
                    .ok_or_else(|| format!("principal {}: unknown rpc {name:?}", config.name))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut reveal: HashMap<String, Reveal> = config
            .reveal
            .iter()
            .map(|(format, how)| (format.clone(), Reveal::from(*how)))
            .collect();
        let default_reveal = reveal.remove("default").unwrap_or(Reveal::Masked);
        let mut policy = Policy::new(&config.name, allow, default_reveal);
        policy.reveal = reveal;
        policy.require_purpose = config.require_purpose;
        policy.max_detokenize_per_minute = config.max_detokenize_per_minute;
        policy.max_detokenize_per_minute_per_actor = config.max_detokenize_per_minute_per_actor;
        policy.alert_at_percent = config.alert_at_percent;
        policy.require_actor = config.require_actor;
        policy.actor_client_id = config.actor_client_id.clone();
        policy.second_factor = config
            .full_reveal_needs_second_factor
            .then(|| SecondFactor {
                amr: config
                    .second_factor_amr
                    .clone()
                    .unwrap_or_else(|| DEFAULT_SECOND_FACTOR_AMR.map(str::to_string).to_vec()),
                otherwise: config.without_second_factor,
            });
        Ok(policy)
    }

    pub fn may_call(&self, rpc: Rpc) -> bool {
        self.allowed & rpc.bit() != 0
    }

    /// The reveal the policy names for `format`, before any second-factor
    /// rule.
    pub fn configured_reveal(&self, format: &str) -> Reveal {
        self.reveal
            .get(format)
            .copied()
            .unwrap_or(self.default_reveal)
    }

    fn reveals_anything_in_full(&self) -> bool {
        self.default_reveal == Reveal::Full || self.reveal.values().any(|r| *r == Reveal::Full)
    }
}

/// Why a call is refused by policy. The messages are safe to send: names
/// and limits, never a value or a purpose.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    #[error("principal {principal} may not call {rpc}")]
    NotAllowed {
        principal: Arc<str>,
        rpc: &'static str,
    },
    #[error("principal {principal} must give a purpose for {rpc}")]
    PurposeRequired {
        principal: Arc<str>,
        rpc: &'static str,
    },
    #[error("purpose: at most {MAX_PURPOSE_BYTES} bytes")]
    PurposeTooLong,
    #[error("principal {principal} must send an actor token ({ACTOR_HEADER}) for {rpc}")]
    ActorRequired {
        principal: Arc<str>,
        rpc: &'static str,
    },
    #[error("full reveal needs an actor token whose amr shows a second factor")]
    SecondFactorRequired,
    #[error("detokenize rate limit of {} values a minute reached for this {}; retry later", .0.limit, .0.scope.name())]
    RateLimited(Alert),
    /// An anomaly alert stepped this actor down to `deny`; the message
    /// names the alert, its detector and its reason (counts only).
    #[error("reveals refused for this actor after anomaly alert {alert_id} ({detector}: {reason}) until an operator clears it")]
    SteppedDown {
        alert_id: u64,
        detector: &'static str,
        reason: String,
    },
}

impl PolicyError {
    /// A short name for logs and the audit record.
    pub fn reason(&self) -> &'static str {
        match self {
            PolicyError::NotAllowed { .. } => "rpc_not_allowed",
            PolicyError::PurposeRequired { .. } => "purpose_required",
            PolicyError::PurposeTooLong => "purpose_too_long",
            PolicyError::ActorRequired { .. } => "actor_required",
            PolicyError::SecondFactorRequired => "second_factor_required",
            PolicyError::RateLimited(_) => "rate_limited",
            PolicyError::SteppedDown { .. } => "anomaly_step_down",
        }
    }
}

/// An authenticated caller: its name, its policy as of the call's start
/// (a reload does not change a call in flight), and the actor it acts
/// for. The auth interceptor puts one on every request's extensions.
#[derive(Debug, Clone)]
pub struct Principal {
    pub name: Arc<str>,
    policy: Arc<Policy>,
    /// The operator named by a verified `x-tokenvault-actor` token.
    pub actor: Option<Actor>,
    /// An anomaly step-down (`mask`) in force: every reveal is masked.
    masked_by_anomaly: bool,
}

impl Principal {
    /// A principal allowed `allow`, with full reveal and no limits.
    pub fn new(name: &str, allow: impl IntoIterator<Item = Rpc>) -> Self {
        Principal::with_policy(Arc::new(Policy::new(name, allow, Reveal::Full)))
    }

    pub fn with_policy(policy: Arc<Policy>) -> Self {
        Principal {
            name: Arc::clone(&policy.name),
            policy,
            actor: None,
            masked_by_anomaly: false,
        }
    }

    /// This caller with every reveal masked (an anomaly step-down).
    pub fn masked_by_anomaly(mut self) -> Self {
        self.masked_by_anomaly = true;
        self
    }

    /// Refused with [`PolicyError::SteppedDown`] (logged; the caller
    /// audits it).
    pub fn stepped_down(
        &self,
        rpc: Rpc,
        alert_id: u64,
        detector: &'static str,
        reason: String,
    ) -> PolicyError {
        self.denied(
            rpc,
            PolicyError::SteppedDown {
                alert_id,
                detector,
                reason,
            },
        )
    }

    pub fn with_actor(mut self, actor: Actor) -> Self {
        self.actor = Some(actor);
        self
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The actor's name (JWT `sub`), for logs and the audit record.
    pub fn actor_name(&self) -> Option<&str> {
        self.actor.as_ref().map(|a| &*a.name)
    }

    pub fn may_call(&self, rpc: Rpc) -> bool {
        self.policy.may_call(rpc)
    }

    /// Refused unless the policy allows `rpc`.
    pub fn require(&self, rpc: Rpc) -> Result<(), PolicyError> {
        if self.may_call(rpc) {
            Ok(())
        } else {
            Err(self.denied(
                rpc,
                PolicyError::NotAllowed {
                    principal: Arc::clone(&self.name),
                    rpc: rpc.name(),
                },
            ))
        }
    }

    /// The checks of a call that reveals values (Detokenize, RestoreText,
    /// ExportSubject) before anything is read: the purpose, the actor, and
    /// a second factor where the policy refuses without one.
    pub fn check_reveal(&self, rpc: Rpc, purpose: &str) -> Result<(), PolicyError> {
        if purpose.len() > MAX_PURPOSE_BYTES {
            return Err(self.denied(rpc, PolicyError::PurposeTooLong));
        }
        if self.policy.require_purpose && purpose.trim().is_empty() {
            return Err(self.denied(
                rpc,
                PolicyError::PurposeRequired {
                    principal: Arc::clone(&self.name),
                    rpc: rpc.name(),
                },
            ));
        }
        if self.policy.require_actor && self.actor.is_none() {
            return Err(self.denied(
                rpc,
                PolicyError::ActorRequired {
                    principal: Arc::clone(&self.name),
                    rpc: rpc.name(),
                },
            ));
        }
        if let Some(rule) = &self.policy.second_factor {
            let refuse = rule.otherwise == SecondFactorFallback::Deny
                && self.policy.reveals_anything_in_full()
                && !self.has_second_factor(rule);
            if refuse {
                return Err(self.denied(rpc, PolicyError::SecondFactorRequired));
            }
        }
        Ok(())
    }

    /// How a value of `format` is shown to this caller: the policy's
    /// reveal, lowered to masked when a full reveal needs a second factor
    /// the actor did not show, or when an anomaly step-down is in force.
    pub fn reveal_for(&self, format: &str) -> Reveal {
        if self.masked_by_anomaly {
            return Reveal::Masked;
        }
        match (
            self.policy.configured_reveal(format),
            &self.policy.second_factor,
        ) {
            (Reveal::Full, Some(rule)) if !self.has_second_factor(rule) => Reveal::Masked,
            (reveal, _) => reveal,
        }
    }

    /// `value` as this caller may see it, with the reveal applied; an
    /// operator-defined format is masked by its template in `templates`.
    pub fn reveal(
        &self,
        templates: &Templates,
        format: &str,
        value: Zeroizing<String>,
    ) -> (Reveal, Zeroizing<String>) {
        match self.reveal_for(format) {
            Reveal::Full => (Reveal::Full, value),
            Reveal::Masked => (
                Reveal::Masked,
                Zeroizing::new(mask(templates, format, &value)),
            ),
        }
    }

    fn has_second_factor(&self, rule: &SecondFactor) -> bool {
        self.actor
            .as_ref()
            .is_some_and(|actor| actor.amr.iter().any(|m| rule.amr.contains(m)))
    }

    /// Logs a denial (names only) and hands the error back.
    fn denied(&self, rpc: Rpc, error: PolicyError) -> PolicyError {
        tracing::warn!(
            principal = %self.name,
            actor = self.actor_name().unwrap_or("-"),
            rpc = rpc.name(),
            reason = error.reason(),
            "call denied by policy"
        );
        // The audit record is appended by the caller (api::service's
        // `refused`), which holds the audit sink.
        error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_names_round_trip() {
        for rpc in Rpc::ALL {
            assert_eq!(Rpc::from_name(rpc.name()), Some(rpc));
        }
        assert_eq!(Rpc::from_name("detokenise"), None);
    }

    #[test]
    fn principal_may_call_only_what_it_is_allowed() {
        let chat = Principal::new("chat", [Rpc::Tokenize, Rpc::RedactText]);
        assert!(chat.may_call(Rpc::Tokenize) && chat.may_call(Rpc::RedactText));
        assert!(!chat.may_call(Rpc::Detokenize));
        assert!(matches!(
            chat.require(Rpc::ExportSubject),
            Err(PolicyError::NotAllowed { .. })
        ));
    }

    fn billing(extra: &str) -> Principal {
        let config: crate::config::Config = crate::config::Config::parse(&format!(
            "[[principals]]\nname = \"billing\"\napi_key_sha256 = \"{}\"\nallow = [\"detokenize\"]\nreveal = {{ card = \"masked\", email = \"full\" }}\n{extra}",
            "a".repeat(64)
        ))
        .expect("parses");
        config.check().expect("valid");
        let policy = Policy::from_config(&config.principals[0]).expect("policy");
        Principal::with_policy(Arc::new(policy))
    }

    fn actor(amr: &[&str]) -> Actor {
        Actor {
            name: "alice".into(),
            amr: amr.iter().map(|m| m.to_string()).collect(),
            client: None,
        }
    }

    #[test]
    fn reveal_follows_the_format_table_with_a_masked_default() {
        let billing = billing("");
        assert_eq!(billing.reveal_for("card"), Reveal::Masked);
        assert_eq!(billing.reveal_for("email"), Reveal::Full);
        assert_eq!(billing.reveal_for("phone"), Reveal::Masked, "default");
        let (reveal, shown) = billing.reveal(
            &Templates::default(),
            "card",
            Zeroizing::new("4242424242424242".into()),
        );
        assert_eq!(
            (reveal, shown.as_str()),
            (Reveal::Masked, "•••• •••• •••• 4242")
        );
    }

    #[test]
    fn purpose_is_checked_when_required() {
        let kyc = billing("require_purpose = true");
        assert!(matches!(
            kyc.check_reveal(Rpc::Detokenize, " "),
            Err(PolicyError::PurposeRequired { .. })
        ));
        assert!(kyc.check_reveal(Rpc::Detokenize, "kyc-review").is_ok());
        assert!(matches!(
            kyc.check_reveal(Rpc::Detokenize, &"p".repeat(MAX_PURPOSE_BYTES + 1)),
            Err(PolicyError::PurposeTooLong)
        ));
        assert!(billing("").check_reveal(Rpc::Detokenize, "").is_ok());
    }

    #[test]
    fn full_reveal_without_a_second_factor_falls_back_to_masked() {
        let billing = billing("full_reveal_needs_second_factor = true");
        assert_eq!(billing.reveal_for("email"), Reveal::Masked, "no actor");
        let with_password = billing.clone().with_actor(actor(&["pwd"]));
        assert_eq!(with_password.reveal_for("email"), Reveal::Masked);
        assert!(with_password.check_reveal(Rpc::Detokenize, "").is_ok());
        let with_otp = billing.with_actor(actor(&["pwd", "otp"]));
        assert_eq!(with_otp.reveal_for("email"), Reveal::Full);
        assert_eq!(with_otp.reveal_for("card"), Reveal::Masked);
    }

    #[test]
    fn full_reveal_without_a_second_factor_can_be_refused() {
        let billing = billing(
            "full_reveal_needs_second_factor = true\nwithout_second_factor = \"deny\"\nsecond_factor_amr = [\"hwk\"]",
        );
        let with_otp = billing.clone().with_actor(actor(&["otp"]));
        assert!(matches!(
            with_otp.check_reveal(Rpc::Detokenize, ""),
            Err(PolicyError::SecondFactorRequired)
        ));
        let with_key = billing.with_actor(actor(&["hwk"]));
        assert!(with_key.check_reveal(Rpc::Detokenize, "").is_ok());
    }

    #[test]
    fn an_actor_can_be_required() {
        let billing = billing("require_actor = true");
        assert!(matches!(
            billing.check_reveal(Rpc::RestoreText, ""),
            Err(PolicyError::ActorRequired { .. })
        ));
        assert!(billing
            .with_actor(actor(&[]))
            .check_reveal(Rpc::RestoreText, "")
            .is_ok());
    }
}
