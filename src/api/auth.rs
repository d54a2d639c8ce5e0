//! Who is calling: API keys sent as `authorization: Bearer <key>`, looked
//! up by their SHA-256 (the config never holds a key itself). Every call
//! to `TokenVault` passes here; there is no anonymous principal.

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use tonic::metadata::MetadataMap;
use tonic::Status;

use crate::config::PrincipalConfig;
use crate::policy::{Principal, Rpc};

/// Maps API-key digests to principals.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    by_key_digest: HashMap<[u8; 32], Principal>,
}

impl Authenticator {
    pub fn from_config(principals: &[PrincipalConfig]) -> Result<Self, String> {
        let mut auth = Authenticator::default();
        for config in principals {
            let digest: [u8; 32] = hex::decode(&config.api_key_sha256)
                .ok()
                .and_then(|bytes| bytes.try_into().ok())
                .ok_or_else(|| {
                    format!(
                        "principal {}: api_key_sha256 is not 64 hex digits",
                        config.name
                    )
                })?;
            let allow = config
                .allow
                .iter()
                .map(|name| {
                    Rpc::from_name(name)
                        .ok_or_else(|| format!("principal {}: unknown rpc {name:?}", config.name))
                })
                .collect::<Result<Vec<_>, _>>()?;
            if auth
                .by_key_digest
                .insert(digest, Principal::new(&config.name, allow))
                .is_some()
            {
                return Err(format!(
                    "principal {}: its API key is used by another principal",
                    config.name
                ));
            }
        }
        Ok(auth)
    }

    /// Adds a principal for a plain API key (the dev admin key).
    pub fn add_key(&mut self, api_key: &str, principal: Principal) {
        self.by_key_digest.insert(key_digest(api_key), principal);
    }

    pub fn is_empty(&self) -> bool {
        self.by_key_digest.is_empty()
    }

    /// The caller of a request, or UNAUTHENTICATED. The map is keyed by
    /// SHA-256 digests, so lookup timing tells nothing about the key.
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
            .cloned()
            .ok_or_else(|| Status::unauthenticated("unknown API key"))
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
    use tonic::Code;

    fn metadata(value: &str) -> MetadataMap {
        let mut map = MetadataMap::new();
        map.insert("authorization", value.parse().expect("ascii"));
        map
    }

    fn authenticator() -> Authenticator {
        Authenticator::from_config(&[PrincipalConfig {
            name: "chat".into(),
            api_key_sha256: hex::encode(key_digest("chat-key")),
            allow: vec!["tokenize".into()],
        }])
        .expect("valid")
    }

    #[test]
    fn known_key_authenticates_with_its_policy() {
        let principal = authenticator()
            .authenticate(&metadata("Bearer chat-key"))
            .expect("known");
        assert_eq!(&*principal.name, "chat");
        assert!(principal.may_call(Rpc::Tokenize));
        assert_eq!(
            principal.require(Rpc::Detokenize).unwrap_err().code(),
            Code::PermissionDenied
        );
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
}
