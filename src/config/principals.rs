//! `[[principals]]` and `[actor_tokens]`: the callers, the RPCs each may
//! call and how its reveals are shown, limited and tied to an actor; and
//! the keys actor tokens are verified with, with the checks of each
//! principal. It keeps an API key as its SHA-256 only, and an actor key
//! as the path of its public key.

use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;
use crate::rpc::Rpc;

/// A caller and its policy. Only the SHA-256 of its API key is kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalConfig {
    pub name: String,
    /// Hex SHA-256 of the API key the principal sends as
    /// `authorization: Bearer <key>`.
    #[serde(default)]
    pub api_key_sha256: Option<String>,
    /// The name in its client certificate: a URI or DNS SAN, or `CN=...`
    /// for the subject's common name, matched only in a certificate with
    /// no URI or DNS SAN (needs `[tls] client_ca`).
    #[serde(default)]
    pub mtls_subject: Option<String>,
    /// RPCs it may call, in snake_case (`tokenize`, `detokenize`, ...).
    pub allow: Vec<String>,
    /// Format name (or `default`) → how Detokenize / RestoreText /
    /// ExportSubject show its values. The default's default is masked.
    #[serde(default)]
    pub reveal: std::collections::BTreeMap<String, RevealConfig>,
    /// Reveal calls must give a non-empty purpose.
    #[serde(default)]
    pub require_purpose: bool,
    /// Revealed values a minute (token bucket), over all its actors.
    #[serde(default)]
    pub max_detokenize_per_minute: Option<u32>,
    /// Revealed values a minute for each actor (`x-tokenvault-actor`).
    #[serde(default)]
    pub max_detokenize_per_minute_per_actor: Option<u32>,
    /// Share of a limit (1-100) at which a warning alert is raised.
    #[serde(default = "default_alert_at_percent")]
    pub alert_at_percent: u8,
    /// Reveal calls must carry an actor token.
    #[serde(default)]
    pub require_actor: bool,
    /// A full reveal needs an actor token whose `amr` shows a second
    /// factor.
    #[serde(default)]
    pub full_reveal_needs_second_factor: bool,
    /// The `amr` values that count as a second factor.
    #[serde(default)]
    pub second_factor_amr: Option<Vec<String>>,
    /// What happens to a full reveal without one.
    #[serde(default)]
    pub without_second_factor: SecondFactorFallback,
    /// The identity provider's client id of this principal: an actor token
    /// it presents must carry it as `azp` (or `client_id`), so a token
    /// issued to another service is refused.
    #[serde(default)]
    pub actor_client_id: Option<String>,
}

/// `reveal` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RevealConfig {
    Full,
    Masked,
}

/// `without_second_factor` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecondFactorFallback {
    /// Values the policy reveals in full are masked instead.
    #[default]
    Masked,
    /// The call is refused (PERMISSION_DENIED).
    Deny,
}

/// `[actor_tokens]`: how actor JWTs are verified.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActorTokensConfig {
    /// The `aud` a token must carry.
    pub audience: String,
    /// The `iss` a token must carry, if set.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Clock skew allowed on `exp` / `nbf` / `iat`, in seconds; at most
    /// [`MAX_ACTOR_LEEWAY_SECONDS`].
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    /// Oldest token accepted, by its `iat` (required), in seconds: a token
    /// with a far `exp` is still refused this long after it was issued.
    #[serde(default = "default_actor_max_age")]
    pub max_age_seconds: u64,
    pub keys: Vec<ActorKeyConfig>,
}

/// The most clock skew `[actor_tokens] leeway_seconds` may allow: more
/// would keep an expired token usable.
pub const MAX_ACTOR_LEEWAY_SECONDS: u64 = 300;

/// The longest `[actor_tokens] max_age_seconds` (a day).
pub const MAX_ACTOR_MAX_AGE_SECONDS: u64 = 24 * 3600;

/// One verifying key of `[actor_tokens]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActorKeyConfig {
    /// The JWT header's `kid` that selects this key.
    pub kid: String,
    /// `ES256`, `ES384`, `EdDSA` or `RS256`.
    pub alg: String,
    /// Path of the PEM public key (SPKI `PUBLIC KEY`; `RSA PUBLIC KEY` too
    /// for RS256).
    pub public_key_pem: PathBuf,
}

fn default_alert_at_percent() -> u8 {
    80
}

fn default_leeway() -> u64 {
    30
}

fn default_actor_max_age() -> u64 {
    3600
}

/// A principal's `reveal` keys name formats (built-in or `[[formats]]`) or
/// `default`.
pub(super) fn check_reveal_formats(
    i: usize,
    principal: &PrincipalConfig,
    templates: &crate::token::template::Templates,
) -> Result<(), ConfigError> {
    match principal
        .reveal
        .keys()
        .find(|format| *format != "default" && templates.format(format).is_none())
    {
        Some(unknown) => Err(ConfigError::Invalid(format!(
            "principals[{i}] ({}): reveal: unknown format {unknown:?} (a format name or \"default\")",
            principal.name
        ))),
        None => Ok(()),
    }
}

pub(super) fn check_principal(
    i: usize,
    principal: &PrincipalConfig,
    mtls: bool,
) -> Result<(), ConfigError> {
    let invalid = |what: String| {
        ConfigError::Invalid(format!("principals[{i}] ({}): {what}", principal.name))
    };
    match (&principal.api_key_sha256, &principal.mtls_subject) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(invalid(
                "give exactly one of api_key_sha256 or mtls_subject".into(),
            ))
        }
        (Some(digest), None) => {
            if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid("api_key_sha256 must be 64 hex digits".into()));
            }
        }
        (None, Some(subject)) => {
            if subject.is_empty() {
                return Err(invalid("mtls_subject must not be empty".into()));
            }
            if !mtls {
                return Err(invalid(
                    "mtls_subject needs [tls] client_ca (mTLS is off)".into(),
                ));
            }
        }
    }
    if let Some(unknown) = principal
        .allow
        .iter()
        .find(|rpc| Rpc::from_name(rpc).is_none())
    {
        return Err(invalid(format!(
            "unknown rpc {unknown:?} in allow (known: {})",
            Rpc::ALL.map(Rpc::name).join(", ")
        )));
    }
    if !(1..=100).contains(&principal.alert_at_percent) {
        return Err(invalid("alert_at_percent must be 1 to 100".into()));
    }
    if principal.max_detokenize_per_minute == Some(0)
        || principal.max_detokenize_per_minute_per_actor == Some(0)
    {
        return Err(invalid(
            "a max_detokenize_per_minute limit must be above 0 (leave it out for none)".into(),
        ));
    }
    if principal
        .second_factor_amr
        .as_ref()
        .is_some_and(|amr| amr.is_empty())
    {
        return Err(invalid("second_factor_amr must not be empty".into()));
    }
    Ok(())
}
