//! Operator-defined token formats (`[[formats]]`) end to end, against the
//! real binary with a config file that defines a format and a detector
//! using it:
//! - Tokenize with the format gives a token of its shape, Detokenize the
//!   value; deterministic mode gives the same token again;
//! - RedactText finds values with the custom detector and replaces them by
//!   tokens of the format; redacting the result changes nothing;
//! - RestoreText gives the original back in full, and masked (fixed parts
//!   and kept groups only) to a principal whose policy says masked;
//! - an unknown format name, or a value that does not match, is
//!   INVALID_ARGUMENT naming it.
//!
//! Run: `cargo test --release --test custom_formats`

mod common;

use std::path::Path;

use common::{admin_principal_toml, detokenize, item, random_item, tokenize, Server};
use sha2::{Digest, Sha256};
use tokenvault::pb;
use tonic::Code;

const MASKED_KEY: &str = "tvk_masked_support_key_0001";
const SUBJECT: &str = "subject-formats-51a0";

/// A loyalty card `LC-1234-5678-AB`: the first group kept (like a card's
/// first six), the second group digits, the third two base32 letters.
fn config(root: &Path) -> String {
    std::fs::create_dir_all(root).expect("root");
    let kek = root.join("kek.key");
    std::fs::write(&kek, [7u8; 32]).expect("kek");
    format!(
        r#"
[kek]
provider = "local"
path = "{kek}"

[alphabets]
base32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"

[[formats]]
name = "loyalty_card"
pattern = 'LC-(\d{{4}})-(\d{{4}})-([A-Z2-7]{{2}})'
alphabets = ["numeric", "numeric", "base32"]
keep = [1]

[[detectors]]
name = "loyalty"
pattern = '\bLC-\d{{4}}-\d{{4}}-[A-Z2-7]{{2}}\b'
context = ["карт", "card"]
format = "loyalty_card"

{admin}
[[principals]]
name = "support"
api_key_sha256 = "{masked}"
allow = ["detokenize", "restore_text"]
reveal = {{ loyalty_card = "masked", default = "full" }}
"#,
        kek = kek.display(),
        admin = admin_principal_toml(),
        masked = hex::encode(Sha256::digest(MASKED_KEY.as_bytes())),
    )
}

/// The value's shape: `LC-`, the kept group, digits, base32 letters.
fn assert_shape(token: &str, value: &str) {
    assert_ne!(token, value);
    assert_eq!(token.len(), value.len(), "{token}");
    assert_eq!(&token[..8], &value[..8], "fixed part and kept group");
    assert_eq!(&token[12..13], "-");
    assert!(token[8..12].bytes().all(|b| b.is_ascii_digit()), "{token}");
    assert!(
        token[13..]
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)),
        "{token}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tokenize_detokenize_and_deterministic_mode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with_config(dir.path(), &config(dir.path()));
    let mut client = server.client().await;

    let value = "LC-1234-5678-AB";
    let random = tokenize(
        &mut client,
        SUBJECT,
        vec![random_item(value, "loyalty_card")],
    )
    .await;
    assert_shape(&random[0], value);
    let results = detokenize(&mut client, &random).await;
    assert_eq!(results[0].status, pb::TokenStatus::Found as i32);
    assert_eq!(results[0].value, value);
    assert_eq!(results[0].format, "loyalty_card");

    // Deterministic (the default mode): the same token every time, and not
    // the random one.
    let first = tokenize(&mut client, SUBJECT, vec![item(value, "loyalty_card")]).await;
    let again = tokenize(&mut client, SUBJECT, vec![item(value, "loyalty_card")]).await;
    assert_eq!(first, again);
    assert_shape(&first[0], value);
    assert_ne!(first, random);

    for (format, value, expected) in [
        ("loyalty", value, "unknown format \"loyalty\""),
        (
            "loyalty_card",
            "LC-1234-5678",
            "does not match the pattern of format \"loyalty_card\"",
        ),
    ] {
        let status = client
            .tokenize(pb::TokenizeRequest {
                subject_id: SUBJECT.into(),
                items: vec![item(value, format)],
            })
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(expected), "{}", status.message());
        assert!(!status.message().contains("1234"), "no value in errors");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redact_is_idempotent_and_restore_reveals_full_or_masked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with_config(dir.path(), &config(dir.path()));
    let mut client = server.client().await;

    let value = "LC-1234-5678-AB";
    let text = format!("моя карта лояльности {value}, звоните +7 916 123-45-67");
    let once = client
        .redact_text(pb::RedactTextRequest {
            subject_id: SUBJECT.into(),
            text: text.clone(),
            kinds: Vec::new(),
        })
        .await
        .expect("redact")
        .into_inner();
    let loyalty: Vec<&pb::Finding> = once
        .findings
        .iter()
        .filter(|f| f.kind == "loyalty_card")
        .collect();
    assert_eq!(loyalty.len(), 1, "{:?}", once.findings);
    let token = loyalty[0].token.clone();
    assert_shape(&token, value);
    assert_eq!(
        &once.text[loyalty[0].start as usize..loyalty[0].end as usize],
        token
    );
    assert!(!once.text.contains(value));

    // Redacting the redacted text changes nothing: the token is found as
    // a token of this vault, not as a new loyalty card.
    let twice = client
        .redact_text(pb::RedactTextRequest {
            subject_id: SUBJECT.into(),
            text: once.text.clone(),
            kinds: Vec::new(),
        })
        .await
        .expect("redact again")
        .into_inner();
    assert_eq!(twice.text, once.text);
    assert!(twice.findings.is_empty(), "{:?}", twice.findings);

    // Asking for the custom kind only works too (and finds nothing new).
    let only = client
        .redact_text(pb::RedactTextRequest {
            subject_id: SUBJECT.into(),
            text: format!("card LC-9999-0000-ZZ and {}", once.text),
            kinds: vec!["loyalty_card".into()],
        })
        .await
        .expect("redact by kind")
        .into_inner();
    assert_eq!(only.findings.len(), 1, "{:?}", only.findings);
    assert_eq!(only.findings[0].kind, "loyalty_card");

    // Full reveal gives the original text back.
    let full = client
        .restore_text(pb::RestoreTextRequest {
            text: once.text.clone(),
            purpose: "test".into(),
            ..Default::default()
        })
        .await
        .expect("restore")
        .into_inner();
    assert_eq!(full.text, text);
    assert_eq!(full.restored, 2);

    // A token with no context word before it, which the detector does not
    // find, is still restored: RestoreText looks for every string of the
    // format's shape.
    let bare = client
        .restore_text(pb::RestoreTextRequest {
            text: format!("({token})"),
            purpose: "test".into(),
            ..Default::default()
        })
        .await
        .expect("restore bare")
        .into_inner();
    assert_eq!(bare.text, format!("({value})"));

    // Masked: the fixed parts and the kept group, nothing else.
    let mut support = server.client_with_key(MASKED_KEY).await;
    let masked = support
        .restore_text(pb::RestoreTextRequest {
            text: once.text.clone(),
            purpose: "test".into(),
            ..Default::default()
        })
        .await
        .expect("restore masked")
        .into_inner();
    assert_eq!(masked.restored, 2);
    assert!(masked.text.contains("LC-1234-••••-••"), "{}", masked.text);
    assert!(masked.text.contains("+7 916 123-45-67"), "phones in full");
    let results = support
        .detokenize(pb::DetokenizeRequest {
            tokens: vec![token],
            purpose: "test".into(),
        })
        .await
        .expect("detokenize masked")
        .into_inner()
        .results;
    assert_eq!(results[0].reveal, pb::Reveal::Masked as i32);
    assert_eq!(results[0].value, "LC-1234-••••-••");
}

#[test]
fn a_bad_format_stops_the_server_with_the_format_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = config(dir.path()).replace(r#"["numeric", "numeric", "base32"]"#, r#"["digits"]"#);
    let mut server = Server::prepared_with_config(dir.path(), &bad, &[]);
    let (status, log) = server.run_to_exit();
    assert!(!status.success());
    assert!(
        log.contains("format \"loyalty_card\"") && log.contains("unknown alphabet \"digits\""),
        "{log}"
    );
}
