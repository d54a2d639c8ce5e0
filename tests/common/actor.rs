//! Actor tokens for the tests: an ES256 key pair made by openssl (the
//! identity provider's), and JWTs signed with it, as a platform's identity
//! provider would issue them for `x-tokenvault-actor`, and a client that
//! sends one beside its API key.

use std::path::{Path, PathBuf};
use std::process::Command;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tokenvault::pb;
use tokenvault::pb::token_vault_client::TokenVaultClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

use super::Server;

/// An ES256 key pair made by openssl in `dir` under `name`: (PKCS#8
/// private PEM, public PEM path).
pub fn es256_key(dir: &Path, name: &str) -> (Vec<u8>, PathBuf) {
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub.pem"));
    let ok = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(&private)
        .status()
        .expect("openssl")
        .success()
        && Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .arg("-out")
            .arg(&public)
            .status()
            .expect("openssl")
            .success();
    assert!(ok, "openssl made the key");
    (std::fs::read(&private).expect("key"), public)
}

/// A JWT with `claims`, signed ES256 by `private_pem` under key id `k1`.
pub fn jwt(private_pem: &[u8], claims: serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("k1".into());
    let key = EncodingKey::from_ec_pem(private_pem).expect("pkcs8 ec key");
    jsonwebtoken::encode(&header, &claims, &key).expect("sign")
}

/// Sends an API key and, optionally, an actor token.
#[derive(Clone)]
pub struct ActorAuth {
    bearer: MetadataValue<Ascii>,
    actor: Option<MetadataValue<Ascii>>,
}

impl tonic::service::Interceptor for ActorAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let metadata = request.metadata_mut();
        metadata.insert("authorization", self.bearer.clone());
        if let Some(actor) = &self.actor {
            metadata.insert("x-tokenvault-actor", actor.clone());
        }
        Ok(request)
    }
}

pub type ActorClient = TokenVaultClient<InterceptedService<Channel, ActorAuth>>;

/// A client of `server` with API key `key` and actor token `token`.
pub async fn actor_client(server: &Server, key: &str, token: Option<&str>) -> ActorClient {
    let auth = ActorAuth {
        bearer: format!("Bearer {key}").parse().expect("ascii"),
        actor: token.map(|t| t.parse().expect("ascii")),
    };
    TokenVaultClient::with_interceptor(server.channel().await, auth)
}

/// Detokenize of `tokens` for `purpose`, as the client's actor.
pub async fn detokenize_as(
    client: &mut ActorClient,
    tokens: &[String],
    purpose: &str,
) -> Result<Vec<pb::DetokenizeResult>, Status> {
    client
        .detokenize(pb::DetokenizeRequest {
            tokens: tokens.to_vec(),
            purpose: purpose.into(),
        })
        .await
        .map(|r| r.into_inner().results)
}
