//! Actor tokens: the signed JWT a privileged service sends in
//! `x-tokenvault-actor` to name the human operator a call is made for.
//! Verified against the public keys of `[actor_tokens]`, with expiry,
//! audience, age (`iat` within `max_age_seconds`) and (when configured)
//! issuer checked; the token's `azp` / `client_id` is kept so the caller
//! can bind it to the principal that presents it.
//!
//! It owns the verifying keys and the claims it accepts; it never logs a
//! token (only the reason it was refused), and it holds no signing key.

use std::collections::HashMap;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::{ActorKeyConfig, ActorTokensConfig};

/// The request metadata key of the actor token.
pub const ACTOR_HEADER: &str = "x-tokenvault-actor";
/// Longest actor token accepted, in bytes; longer is refused before any
/// parsing.
const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Longest `sub` accepted; it is logged and audited as the actor name.
const MAX_SUBJECT_BYTES: usize = 256;

/// The operator a call is made for, from a verified actor token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The token's `sub`.
    pub name: Arc<str>,
    /// The token's `amr` (authentication methods: `pwd`, `otp`, `hwk`, ...).
    pub amr: Vec<String>,
    /// The client the token was issued to: its `azp`, else its
    /// `client_id`.
    pub client: Option<String>,
}

/// Why an actor token was refused. Every variant is UNAUTHENTICATED; the
/// message names the check, never the token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ActorError {
    #[error("actor tokens are not accepted: no [actor_tokens] in the config")]
    NotConfigured,
    #[error("actor token is not a JWT")]
    Malformed,
    #[error("actor token names an unknown key")]
    UnknownKey,
    #[error("actor token signature does not verify")]
    BadSignature,
    #[error("actor token has expired")]
    Expired,
    #[error("actor token is not yet valid")]
    NotYetValid,
    #[error("actor token is for another audience")]
    WrongAudience,
    #[error("actor token is from another issuer")]
    WrongIssuer,
    #[error("actor token lacks a valid {0} claim")]
    MissingClaim(&'static str),
    #[error("actor token is older than max_age_seconds")]
    TooOld,
    #[error("actor token was issued to another client than this principal's")]
    WrongClient,
}

/// Why `[actor_tokens]` cannot be used; stops start-up.
#[derive(Debug, thiserror::Error)]
pub enum ActorConfigError {
    #[error("actor_tokens.keys[{index}] ({kid}): cannot read {path}: {source}")]
    Read {
        index: usize,
        kid: String,
        path: String,
        source: std::io::Error,
    },
    #[error("actor_tokens.keys[{index}] ({kid}): {message}")]
    Key {
        index: usize,
        kid: String,
        message: String,
    },
    #[error("actor_tokens: {0}")]
    Invalid(String),
}

/// The claims read from a token; the registered ones (exp, nbf, aud, iss)
/// are checked by `jsonwebtoken`.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: Option<String>,
    #[serde(default)]
    amr: Vec<String>,
    iat: Option<i64>,
    azp: Option<String>,
    client_id: Option<String>,
}

struct VerifyingKey {
    key: DecodingKey,
    validation: Validation,
}

/// Verifies actor tokens against the configured keys.
pub struct ActorVerifier {
    keys: HashMap<String, VerifyingKey>,
    /// `[actor_tokens] max_age_seconds` and `leeway_seconds`.
    max_age_seconds: i64,
    leeway_seconds: i64,
}

impl std::fmt::Debug for ActorVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorVerifier")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ActorVerifier {
    /// Reads and parses every configured public key.
    pub fn from_config(config: &ActorTokensConfig) -> Result<Self, ActorConfigError> {
        if config.audience.is_empty() {
            return Err(ActorConfigError::Invalid(
                "audience must not be empty".into(),
            ));
        }
        if config.keys.is_empty() {
            return Err(ActorConfigError::Invalid("give at least one key".into()));
        }
        let mut keys = Vec::new();
        for (index, key) in config.keys.iter().enumerate() {
            let pem =
                std::fs::read(&key.public_key_pem).map_err(|source| ActorConfigError::Read {
                    index,
                    kid: key.kid.clone(),
                    path: key.public_key_pem.display().to_string(),
                    source,
                })?;
            let (algorithm, decoding) =
                decoding_key(key, &pem).map_err(|message| ActorConfigError::Key {
                    index,
                    kid: key.kid.clone(),
                    message,
                })?;
            keys.push((key.kid.clone(), algorithm, decoding));
        }
        Self::new(config, keys)
    }

    /// A verifier of already parsed keys `(kid, algorithm, key)`.
    pub fn new(
        config: &ActorTokensConfig,
        keys: Vec<(String, Algorithm, DecodingKey)>,
    ) -> Result<Self, ActorConfigError> {
        let mut by_kid = HashMap::new();
        for (kid, algorithm, key) in keys {
            let mut validation = Validation::new(algorithm);
            validation.set_audience(&[&config.audience]);
            if let Some(issuer) = &config.issuer {
                validation.set_issuer(&[issuer]);
            }
            validation.set_required_spec_claims(&["exp", "aud"]);
            validation.validate_nbf = true;
            validation.leeway = config.leeway_seconds;
            if by_kid
                .insert(kid.clone(), VerifyingKey { key, validation })
                .is_some()
            {
                return Err(ActorConfigError::Invalid(format!(
                    "kid {kid:?} is given twice"
                )));
            }
        }
        Ok(ActorVerifier {
            keys: by_kid,
            max_age_seconds: i64::try_from(config.max_age_seconds).unwrap_or(i64::MAX),
            leeway_seconds: i64::try_from(config.leeway_seconds).unwrap_or(i64::MAX),
        })
    }

    /// The actor a token names, or why it is refused.
    pub fn verify(&self, token: &str) -> Result<Actor, ActorError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(ActorError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| ActorError::Malformed)?;
        let key = match &header.kid {
            Some(kid) => self.keys.get(kid),
            // Without a kid, only an unambiguous key will do.
            None if self.keys.len() == 1 => self.keys.values().next(),
            None => None,
        }
        .ok_or(ActorError::UnknownKey)?;
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &key.validation)
            .map_err(|e| refusal(e.kind()))?;
        let name = data
            .claims
            .sub
            .filter(|sub| !sub.is_empty() && sub.len() <= MAX_SUBJECT_BYTES)
            .filter(|sub| !sub.chars().any(char::is_control))
            .ok_or(ActorError::MissingClaim("sub"))?;
        let iat = data.claims.iat.ok_or(ActorError::MissingClaim("iat"))?;
        self.check_age(iat, crate::clock::unix_now())?;
        let client = data.claims.azp.or(data.claims.client_id);
        Ok(Actor {
            name: name.into(),
            amr: data.claims.amr,
            client,
        })
    }

    /// A token issued (`iat`) more than `max_age_seconds` ago, or in the
    /// future, is refused (each with the leeway).
    fn check_age(&self, iat: i64, now: i64) -> Result<(), ActorError> {
        if iat > now.saturating_add(self.leeway_seconds) {
            return Err(ActorError::NotYetValid);
        }
        let age = now.saturating_sub(iat);
        if age > self.max_age_seconds.saturating_add(self.leeway_seconds) {
            return Err(ActorError::TooOld);
        }
        Ok(())
    }
}

/// Whether `actor`'s token may be presented by a principal whose
/// configured client id is `expected` (None: no binding configured).
pub fn check_client(actor: &Actor, expected: Option<&str>) -> Result<(), ActorError> {
    match expected {
        Some(expected) if actor.client.as_deref() != Some(expected) => Err(ActorError::WrongClient),
        _ => Ok(()),
    }
}

fn refusal(kind: &jsonwebtoken::errors::ErrorKind) -> ActorError {
    use jsonwebtoken::errors::ErrorKind;
    match kind {
        ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => ActorError::BadSignature,
        ErrorKind::ExpiredSignature => ActorError::Expired,
        ErrorKind::ImmatureSignature => ActorError::NotYetValid,
        ErrorKind::InvalidAudience => ActorError::WrongAudience,
        ErrorKind::InvalidIssuer => ActorError::WrongIssuer,
        ErrorKind::MissingRequiredClaim(claim) => ActorError::MissingClaim(match claim.as_str() {
            "exp" => "exp",
            "aud" => "aud",
            "iss" => "iss",
            _ => "registered",
        }),
        _ => ActorError::Malformed,
    }
}

/// The algorithm and key of one `[[actor_tokens.keys]]` entry.
fn decoding_key(config: &ActorKeyConfig, pem: &[u8]) -> Result<(Algorithm, DecodingKey), String> {
    let parsed = match config.alg.as_str() {
        "ES256" => (Algorithm::ES256, DecodingKey::from_ec_pem(pem)),
        "ES384" => (Algorithm::ES384, DecodingKey::from_ec_pem(pem)),
        "EdDSA" => (Algorithm::EdDSA, DecodingKey::from_ed_pem(pem)),
        "RS256" => (Algorithm::RS256, DecodingKey::from_rsa_pem(pem)),
        other => return Err(format!("alg {other:?} is not ES256, ES384, EdDSA or RS256")),
    };
    match parsed {
        (algorithm, Ok(key)) => Ok((algorithm, key)),
        (_, Err(error)) => Err(format!(
            "public_key_pem is not a {} public key in PEM: {error}",
            config.alg
        )),
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header};
    use ring::signature::{Ed25519KeyPair, KeyPair};
    use serde_json::json;

    use super::*;

    const AUDIENCE: &str = "tokenvault";
    const ISSUER: &str = "https://idp.example";

    struct Signer {
        kid: String,
        encoding: EncodingKey,
        decoding: DecodingKey,
    }

    fn signer(kid: &str) -> Signer {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("keygen");
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("parse");
        Signer {
            kid: kid.into(),
            encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
            decoding: DecodingKey::from_ed_der(pair.public_key().as_ref()),
        }
    }

    fn config() -> ActorTokensConfig {
        ActorTokensConfig {
            audience: AUDIENCE.into(),
            issuer: Some(ISSUER.into()),
            leeway_seconds: 0,
            max_age_seconds: 600,
            keys: Vec::new(),
        }
    }

    fn verifier(signer: &Signer) -> ActorVerifier {
        ActorVerifier::new(
            &config(),
            vec![(
                signer.kid.clone(),
                Algorithm::EdDSA,
                signer.decoding.clone(),
            )],
        )
        .expect("verifier")
    }

    fn now() -> i64 {
        crate::clock::unix_now()
    }

    fn sign(signer: &Signer, claims: serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(signer.kid.clone());
        jsonwebtoken::encode(&header, &claims, &signer.encoding).expect("sign")
    }

    fn claims() -> serde_json::Value {
        json!({"sub": "alice", "aud": AUDIENCE, "iss": ISSUER, "iat": now(), "exp": now() + 300, "amr": ["pwd", "otp"]})
    }

    fn with(claim: &str, value: serde_json::Value) -> serde_json::Value {
        let mut claims = claims();
        claims
            .as_object_mut()
            .expect("object")
            .insert(claim.into(), value);
        claims
    }

    fn without(claim: &str) -> serde_json::Value {
        let mut claims = claims();
        claims.as_object_mut().expect("object").remove(claim);
        claims
    }

    /// `iat` is required; a token issued longer ago than max_age_seconds
    /// (600 here, no leeway) is refused even when its `exp` is far off,
    /// and one issued in the future is not yet valid.
    #[test]
    fn old_tokens_and_tokens_without_iat_are_refused() {
        let key = signer("k1");
        let verifier = verifier(&key);
        let far_exp = json!(now() + 86_400);
        let old = json!({"sub": "alice", "aud": AUDIENCE, "iss": ISSUER, "iat": now() - 601, "exp": far_exp});
        assert_eq!(
            verifier.verify(&sign(&key, old)).unwrap_err(),
            ActorError::TooOld
        );
        let recent = with("iat", json!(now() - 590));
        assert!(verifier.verify(&sign(&key, recent)).is_ok());
        assert_eq!(
            verifier.verify(&sign(&key, without("iat"))).unwrap_err(),
            ActorError::MissingClaim("iat")
        );
        assert_eq!(
            verifier
                .verify(&sign(&key, with("iat", json!(now() + 120))))
                .unwrap_err(),
            ActorError::NotYetValid
        );
    }

    /// A token names the client it was issued to (`azp`, else
    /// `client_id`); a principal with a configured client id accepts only
    /// tokens of that client.
    #[test]
    fn a_token_is_bound_to_its_client_when_the_principal_names_one() {
        let key = signer("k1");
        let verifier = verifier(&key);
        let azp = verifier
            .verify(&sign(&key, with("azp", json!("billing-svc"))))
            .expect("valid");
        assert_eq!(azp.client.as_deref(), Some("billing-svc"));
        let client_id = verifier
            .verify(&sign(&key, with("client_id", json!("billing-svc"))))
            .expect("valid");
        assert_eq!(client_id.client.as_deref(), Some("billing-svc"));
        let unbound = verifier.verify(&sign(&key, claims())).expect("valid");

        assert_eq!(check_client(&azp, Some("billing-svc")), Ok(()));
        assert_eq!(check_client(&client_id, Some("billing-svc")), Ok(()));
        assert_eq!(
            check_client(&azp, Some("support-svc")),
            Err(ActorError::WrongClient)
        );
        assert_eq!(
            check_client(&unbound, Some("billing-svc")),
            Err(ActorError::WrongClient)
        );
        assert_eq!(check_client(&unbound, None), Ok(()));
    }

    #[test]
    fn a_good_token_names_its_actor_and_methods() {
        let key = signer("k1");
        let actor = verifier(&key).verify(&sign(&key, claims())).expect("valid");
        assert_eq!(&*actor.name, "alice");
        assert_eq!(actor.amr, ["pwd", "otp"]);
    }

    #[test]
    fn a_token_without_amr_has_no_methods() {
        let key = signer("k1");
        let mut claims = claims();
        claims.as_object_mut().expect("object").remove("amr");
        let actor = verifier(&key).verify(&sign(&key, claims)).expect("valid");
        assert!(actor.amr.is_empty());
    }

    #[test]
    fn bad_signature_expired_and_wrong_audience_are_refused() {
        let key = signer("k1");
        let verifier = verifier(&key);
        let impostor = Signer {
            kid: "k1".into(),
            ..signer("other")
        };
        let cases = [
            (sign(&impostor, claims()), ActorError::BadSignature),
            (
                sign(
                    &key,
                    json!({"sub": "alice", "aud": AUDIENCE, "iss": ISSUER, "iat": now() - 20, "exp": now() - 10}),
                ),
                ActorError::Expired,
            ),
            (
                sign(
                    &key,
                    json!({"sub": "alice", "aud": "billing", "iss": ISSUER, "iat": now(), "exp": now() + 300}),
                ),
                ActorError::WrongAudience,
            ),
            (
                sign(
                    &key,
                    json!({"sub": "alice", "aud": AUDIENCE, "iss": "https://evil", "iat": now(), "exp": now() + 300}),
                ),
                ActorError::WrongIssuer,
            ),
            (
                sign(
                    &key,
                    json!({"sub": "alice", "aud": AUDIENCE, "iss": ISSUER}),
                ),
                ActorError::MissingClaim("exp"),
            ),
            (
                sign(
                    &key,
                    json!({"aud": AUDIENCE, "iss": ISSUER, "iat": now(), "exp": now() + 300}),
                ),
                ActorError::MissingClaim("sub"),
            ),
            ("not a jwt".to_string(), ActorError::Malformed),
        ];
        for (token, expected) in cases {
            assert_eq!(verifier.verify(&token).unwrap_err(), expected);
        }
    }

    #[test]
    fn an_unknown_kid_is_refused() {
        let key = signer("k1");
        let other = signer("k2");
        assert_eq!(
            verifier(&key).verify(&sign(&other, claims())).unwrap_err(),
            ActorError::UnknownKey
        );
    }

    #[test]
    fn refusals_never_echo_the_token() {
        let key = signer("k1");
        let token = sign(&signer("k1"), claims());
        let error = verifier(&key).verify(&token).unwrap_err().to_string();
        assert!(!error.contains(&token[..20]));
    }
}
