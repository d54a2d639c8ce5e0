//! Who is calling: a client certificate verified by mTLS (its URI or DNS
//! SAN names the principal; its subject CN only when it has neither), or an API key sent as
//! `authorization: Bearer <key>`, looked up by its SHA-256 (the config never
//! holds a key itself); then, if sent, the actor token naming the operator
//! behind the service. Every call to `TokenVault` passes here; there is no
//! anonymous principal.
//!
//! It owns the credential → policy maps and their replacement on reload;
//! it never logs a key, a certificate or a token.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use sha2::{Digest, Sha256};
use tonic::metadata::MetadataMap;
use tonic::transport::CertificateDer;
use tonic::{Request, Status};

use super::status::actor_status;
use crate::config::PrincipalConfig;
use crate::policy::{check_client, ActorError, ActorVerifier, Policy, Principal, ACTOR_HEADER};

/// Maps API-key digests and certificate names to principals' policies.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    by_key_digest: HashMap<[u8; 32], Arc<Policy>>,
    by_mtls_subject: HashMap<String, Arc<Policy>>,
}

impl Authenticator {
    pub fn from_config(principals: &[PrincipalConfig]) -> Result<Self, String> {
        let mut auth = Authenticator::default();
        for config in principals {
            let policy = Arc::new(Policy::from_config(config)?);
            if let Some(digest) = &config.api_key_sha256 {
                let digest: [u8; 32] = hex::decode(digest)
                    .ok()
                    .and_then(|bytes| bytes.try_into().ok())
                    .ok_or_else(|| {
                        format!(
                            "principal {}: api_key_sha256 is not 64 hex digits",
                            config.name
                        )
                    })?;
                if auth.by_key_digest.insert(digest, policy).is_some() {
                    return Err(format!(
                        "principal {}: its API key is used by another principal",
                        config.name
                    ));
                }
            } else if let Some(subject) = &config.mtls_subject {
                if auth
                    .by_mtls_subject
                    .insert(subject.clone(), policy)
                    .is_some()
                {
                    return Err(format!(
                        "principal {}: its mtls_subject is used by another principal",
                        config.name
                    ));
                }
            }
        }
        Ok(auth)
    }

    /// Adds a principal for a plain API key (the dev admin key).
    pub fn add_key(&mut self, api_key: &str, principal: Principal) {
        let policy = Arc::new(principal.policy().clone());
        self.by_key_digest.insert(key_digest(api_key), policy);
    }

    pub fn is_empty(&self) -> bool {
        self.by_key_digest.is_empty() && self.by_mtls_subject.is_empty()
    }

    /// The caller of a request from its API key, or UNAUTHENTICATED. The
    /// map is keyed by SHA-256 digests, so lookup timing tells nothing
    /// about the key.
    pub fn authenticate(&self, metadata: &MetadataMap) -> Result<Principal, Status> {
        let header = metadata
            .get("authorization")
            .ok_or_else(|| Status::unauthenticated("missing authorization: Bearer <api key>"))?;
        let key =
            header.to_str().ok().and_then(bearer_token).ok_or_else(|| {
                Status::unauthenticated("authorization must be \"Bearer <api key>\"")
            })?;
        self.by_key_digest
            .get(&key_digest(key))
            .map(|policy| Principal::with_policy(Arc::clone(policy)))
            .ok_or_else(|| Status::unauthenticated("unknown API key"))
    }

    /// The principal a verified client certificate names, if any; two
    /// principals named by one certificate is an error, not a choice.
    pub fn authenticate_certificate(
        &self,
        leaf: &CertificateDer<'_>,
    ) -> Result<Option<Principal>, Status> {
        if self.by_mtls_subject.is_empty() {
            return Ok(None);
        }
        let names = certificate_names(leaf).map_err(|e| Status::unauthenticated(e.to_string()))?;
        let mut found: Option<&Arc<Policy>> = None;
        for policy in names.iter().filter_map(|n| self.by_mtls_subject.get(n)) {
            match found {
                Some(other) if !Arc::ptr_eq(other, policy) => {
                    return Err(Status::unauthenticated(
                        "client certificate names more than one principal",
                    ))
                }
                _ => found = Some(policy),
            }
        }
        Ok(found.map(|policy| Principal::with_policy(Arc::clone(policy))))
    }
}

/// A client certificate that passed the TLS handshake but does not parse
/// here.
#[derive(Debug, thiserror::Error)]
#[error("client certificate does not parse")]
pub struct CertificateUnreadable;

/// The names a certificate can be matched by: its URI and DNS SANs, or,
/// only when it has none (RFC 6125: the CN is a fallback, not a second
/// name), `CN=<common name>` for each common name of its subject.
pub fn certificate_names(der: &CertificateDer<'_>) -> Result<Vec<String>, CertificateUnreadable> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) =
        x509_parser::parse_x509_certificate(der.as_ref()).map_err(|_| CertificateUnreadable)?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(uri) => names.push(uri.to_string()),
                GeneralName::DNSName(dns) => names.push(dns.to_string()),
                _ => {}
            }
        }
    }
    if !names.is_empty() {
        return Ok(names);
    }
    for cn in cert.subject().iter_common_name() {
        if let Ok(cn) = cn.as_str() {
            names.push(format!("CN={cn}"));
        }
    }
    Ok(names)
}

/// A call refused at the gate: its status, and its principal when the
/// credentials named one but the actor token was refused (the audit
/// record names it).
#[derive(Debug)]
pub struct Denied {
    pub status: Status,
    pub principal: Option<Arc<str>>,
}

impl From<Denied> for Status {
    fn from(denied: Denied) -> Status {
        denied.status
    }
}

/// The gate of every `TokenVault` call: the current principals (replaced
/// whole on a policy reload) and the actor token verifier.
#[derive(Debug)]
pub struct Access {
    principals: RwLock<Arc<Authenticator>>,
    actors: Option<ActorVerifier>,
}

impl Access {
    pub fn new(principals: Authenticator, actors: Option<ActorVerifier>) -> Self {
        Access {
            principals: RwLock::new(Arc::new(principals)),
            actors,
        }
    }

    /// Puts new principals in force; calls already admitted keep the
    /// policy they started with.
    pub fn replace(&self, principals: Authenticator) {
        *self.principals.write() = Arc::new(principals);
    }

    /// The principal of a request, with its actor: a client certificate
    /// that names a principal wins, then the API key. A bad actor token
    /// is UNAUTHENTICATED even when the principal is known (and then the
    /// refusal names it).
    pub fn check<T>(&self, request: &Request<T>) -> Result<Principal, Denied> {
        let unknown = |status: Status| Denied {
            status,
            principal: None,
        };
        let principals = Arc::clone(&self.principals.read());
        let by_certificate = match request.peer_certs() {
            Some(chain) => match chain.first() {
                Some(leaf) => principals.authenticate_certificate(leaf).map_err(unknown)?,
                None => None,
            },
            None => None,
        };
        let principal = match by_certificate {
            Some(principal) => principal,
            None => principals
                .authenticate(request.metadata())
                .inspect_err(|status| {
                    // Logged and audited per window of refusals, not per
                    // call (`api::denials`): a flood of bad keys is not a
                    // flood of lines.
                    tracing::debug!(reason = status.message(), "call refused: not authenticated");
                })
                .map_err(unknown)?,
        };
        self.with_actor(principal, request.metadata())
    }

    fn with_actor(
        &self,
        principal: Principal,
        metadata: &MetadataMap,
    ) -> Result<Principal, Denied> {
        let Some(header) = metadata.get(ACTOR_HEADER) else {
            return Ok(principal);
        };
        let verified = match (&self.actors, header.to_str()) {
            (None, _) => Err(ActorError::NotConfigured),
            (Some(_), Err(_)) => Err(ActorError::Malformed),
            (Some(verifier), Ok(token)) => verifier.verify(token.trim()),
        }
        .and_then(|actor| {
            check_client(&actor, principal.policy().actor_client_id.as_deref()).map(|()| actor)
        });
        match verified {
            Ok(actor) => Ok(principal.with_actor(actor)),
            Err(error) => {
                // Counted per window with the other refusals, under the
                // principal (`api::denials`).
                tracing::debug!(principal = %principal.name, reason = %error, "actor token refused");
                Err(Denied {
                    status: actor_status(&error),
                    principal: Some(Arc::clone(&principal.name)),
                })
            }
        }
    }
}

fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

pub fn key_digest(api_key: &str) -> [u8; 32] {
    Sha256::digest(api_key.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::Rpc;
    use tonic::Code;

    fn metadata(value: &str) -> MetadataMap {
        let mut map = MetadataMap::new();
        map.insert("authorization", value.parse().expect("ascii"));
        map
    }

    fn authenticator() -> Authenticator {
        let config = crate::config::Config::parse(&format!(
            "[[principals]]\nname = \"chat\"\napi_key_sha256 = \"{}\"\nallow = [\"tokenize\"]",
            hex::encode(key_digest("chat-key"))
        ))
        .expect("parses");
        Authenticator::from_config(&config.principals).expect("valid")
    }

    #[test]
    fn known_key_authenticates_with_its_policy() {
        let principal = authenticator()
            .authenticate(&metadata("Bearer chat-key"))
            .expect("known");
        assert_eq!(&*principal.name, "chat");
        assert!(principal.may_call(Rpc::Tokenize));
        assert!(principal.require(Rpc::Detokenize).is_err());
    }

    #[test]
    fn missing_malformed_or_unknown_keys_are_unauthenticated() {
        let auth = authenticator();
        assert_eq!(
            auth.authenticate(&MetadataMap::new()).unwrap_err().code(),
            Code::Unauthenticated
        );
        for header in ["chat-key", "Basic chat-key", "Bearer ", "Bearer other-key"] {
            let status = auth.authenticate(&metadata(header)).unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated, "{header}");
            assert!(
                !status.message().contains("chat-key"),
                "the key must not echo back"
            );
        }
    }

    #[test]
    fn an_actor_token_without_a_verifier_is_unauthenticated() {
        let access = Access::new(authenticator(), None);
        let mut request = Request::new(());
        *request.metadata_mut() = metadata("Bearer chat-key");
        request
            .metadata_mut()
            .insert(ACTOR_HEADER, "a.b.c".parse().expect("ascii"));
        let denied = access.check(&request).unwrap_err();
        assert_eq!(denied.status.code(), Code::Unauthenticated);
        assert_eq!(
            denied.principal.as_deref(),
            Some("chat"),
            "an actor refusal names the principal that presented the token"
        );
        request.metadata_mut().remove(ACTOR_HEADER);
        *request.metadata_mut() = metadata("Bearer other-key");
        assert_eq!(access.check(&request).unwrap_err().principal, None);
    }

    /// A self-signed certificate (DER) for `CN=chat-backend`, with the
    /// given `subjectAltName` or none; made by the `openssl` CLI.
    fn certificate(san: Option<&str>) -> CertificateDer<'static> {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut command = std::process::Command::new("openssl");
        command
            .current_dir(dir.path())
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
            .args(["-subj", "/CN=chat-backend", "-keyout", "k.pem"])
            .args(["-outform", "DER", "-out", "c.der"]);
        if let Some(san) = san {
            command.args(["-addext", &format!("subjectAltName={san}")]);
        }
        let output = command.output().expect("openssl on PATH");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        CertificateDer::from(std::fs::read(dir.path().join("c.der")).expect("cert"))
    }

    #[test]
    fn the_common_name_counts_only_in_a_certificate_without_sans() {
        let names = certificate_names(&certificate(None)).expect("parses");
        assert_eq!(names, ["CN=chat-backend"]);
        let names = certificate_names(&certificate(Some(
            "URI:urn:tokenvault:principal:billing,DNS:billing.internal",
        )))
        .expect("parses");
        assert_eq!(
            names,
            ["urn:tokenvault:principal:billing", "billing.internal"]
        );
    }

    #[test]
    fn replace_puts_new_principals_in_force() {
        let access = Access::new(Authenticator::default(), None);
        let mut request = Request::new(());
        *request.metadata_mut() = metadata("Bearer chat-key");
        assert!(access.check(&request).is_err());
        access.replace(authenticator());
        assert_eq!(&*access.check(&request).expect("known").name, "chat");
    }
}
