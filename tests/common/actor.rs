//! Actor tokens for the tests: an ES256 key pair made by openssl (the
//! identity provider's), and JWTs signed with it, as a platform's identity
//! provider would issue them for `x-tokenvault-actor`.

use std::path::{Path, PathBuf};
use std::process::Command;

use jsonwebtoken::{Algorithm, EncodingKey, Header};

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
