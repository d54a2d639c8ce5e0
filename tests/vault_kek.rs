//! The Vault KEK provider against a real OpenBao server: round trips,
//! cold starts that unwrap through Vault, outages (hung and down), online
//! KEK rotation, a deleted transit key, and TLS with a custom CA.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::bao::{Bao, KEY_NAME};
use common::{admin_principal_toml, card, detokenize, item, tokenize, Server};
use tokenvault::pb;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const TOKEN_ENV: &str = "TV_TEST_VAULT_TOKEN";
/// The provider's deadline in these tests (kek.timeout_ms).
const TIMEOUT_MS: u64 = 1_000;

fn vault_config(bao: &Bao, extra_kek: &str, extra: &str) -> String {
    format!(
        "[kek]\nprovider = \"vault\"\naddress = \"{}\"\nkey_name = \"{KEY_NAME}\"\ntoken_env = \"{TOKEN_ENV}\"\ntimeout_ms = {TIMEOUT_MS}\n{extra_kek}\n{extra}\n{}",
        bao.addr(),
        admin_principal_toml()
    )
}

fn start(root: &Path, bao: &Bao, extra_kek: &str, extra: &str) -> Server {
    Server::start_with_config_env(
        root,
        &vault_config(bao, extra_kek, extra),
        &[(TOKEN_ENV, bao.root_token.as_str())],
    )
}

/// Tokenizes one card per subject; returns (subject, value, token).
async fn tokenize_subjects(server: &Server, subjects: usize) -> Vec<(String, String, String)> {
    let mut client = server.client().await;
    let mut out = Vec::new();
    for n in 0..subjects {
        let subject = format!("vault-subject-{n}");
        let value = card(n);
        let token = tokenize(&mut client, &subject, vec![item(&value, "card")]).await;
        out.push((subject, value, token[0].clone()));
    }
    out
}

async fn assert_all_detokenize(server: &Server, expected: &[(String, String, String)]) {
    let mut client = server.client().await;
    for chunk in expected.chunks(100) {
        let tokens: Vec<String> = chunk.iter().map(|(_, _, token)| token.clone()).collect();
        let results = detokenize(&mut client, &tokens).await;
        for ((_, value, _), result) in chunk.iter().zip(results) {
            assert_eq!(result.status, pb::TokenStatus::Found as i32);
            assert_eq!(&result.value, value);
        }
    }
}

async fn kek_health(server: &Server) -> ServingStatus {
    let mut health = HealthClient::new(server.channel().await);
    let response = health
        .check(HealthCheckRequest {
            service: "tokenvault.kek".into(),
        })
        .await
        .expect("health check");
    ServingStatus::try_from(response.into_inner().status).expect("status")
}

async fn wait_for_kek_health(server: &Server, wanted: ServingStatus) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while kek_health(server).await != wanted {
        assert!(
            Instant::now() < deadline,
            "tokenvault.kek health never became {wanted:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `key provider calls since start` counters from the server log's
/// last shutdown line: (wrap, unwrap).
fn provider_calls(server: &Server) -> (u64, u64) {
    let log = std::fs::read_to_string(server.log_path()).expect("log");
    let line = log
        .lines()
        .rev()
        .find(|line| line.contains("key provider calls since start"))
        .expect("shutdown line");
    let field = |name: &str| -> u64 {
        let start = line.find(&format!("{name}=")).expect("field") + name.len() + 1;
        line[start..]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect::<String>()
            .parse()
            .expect("number")
    };
    (field("wrap"), field("unwrap"))
}

/// `tokenvault keys <command> --config F --data-dir D` for this server.
fn keys(server: &Server, command: &str) -> std::process::Output {
    keys_with_env(server, command, &[])
}

fn keys_with_env(server: &Server, command: &str, env: &[(&str, &str)]) -> std::process::Output {
    let config = server.config_path();
    let data_dir = server.data_dir();
    server.run_cli_with_env(
        &[
            "keys",
            command,
            "--config",
            config.to_str().expect("utf8"),
            "--data-dir",
            data_dir.to_str().expect("utf8"),
        ],
        env,
    )
}

fn keys_status(server: &Server) -> String {
    let out = keys(server, "status");
    assert!(
        out.status.success(),
        "keys status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

fn status_line<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {name} in {status}"))
}

#[tokio::test]
async fn many_subjects_round_trip_and_a_cold_start_unwraps_through_vault_in_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bao = Bao::dev(&dir.path().join("bao"));
    let mut server = start(&dir.path().join("tv"), &bao, "", "");
    let subjects = tokenize_subjects(&server, 60).await;
    assert_all_detokenize(&server, &subjects).await;

    let status = keys_status(&server);
    assert_eq!(status_line(&status, "provider"), "vault");
    assert_eq!(status_line(&status, "subject_keys"), "v1=60");
    server.stop().await;
    let (wrap, _) = provider_calls(&server);
    assert_eq!(wrap, 61, "one wrap per new subject, plus the system key");

    server.restart();
    // 60 subjects in one Detokenize: one batched unwrap for all of them.
    let tokens: Vec<String> = subjects.iter().map(|(_, _, t)| t.clone()).collect();
    let results = detokenize(&mut server.client().await, &tokens).await;
    for ((_, value, _), result) in subjects.iter().zip(results) {
        assert_eq!(&result.value, value);
    }
    server.stop().await;
    let (wrap, unwrap) = provider_calls(&server);
    assert_eq!(wrap, 0, "nothing new was wrapped after the restart");
    assert_eq!(
        unwrap, 2,
        "the system key, then all 60 subject keys in one call"
    );
}

#[tokio::test]
async fn vault_hung_or_down_serves_cached_subjects_refuses_new_ones_and_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut bao = Bao::on_files(&dir.path().join("bao"));
    let server = start(&dir.path().join("tv"), &bao, "", "");
    let mut client = server.client().await;
    let cached = tokenize(
        &mut client,
        "cached-subject",
        vec![item("4111 1111 1111 1111", "card")],
    )
    .await;
    wait_for_kek_health(&server, ServingStatus::Serving).await;

    for outage in ["hung", "down"] {
        match outage {
            "hung" => bao.pause(),
            _ => bao.kill(),
        }
        // A cached subject keeps working both ways.
        let again = tokenize(
            &mut client,
            "cached-subject",
            vec![item("4111 1111 1111 1111", "card")],
        )
        .await;
        assert_eq!(again, cached, "{outage}: deterministic hit");
        let more = tokenize(
            &mut client,
            "cached-subject",
            vec![item("5500 0000 0000 0004", "card")],
        )
        .await;
        let found = detokenize(&mut client, &[cached[0].clone(), more[0].clone()]).await;
        assert_eq!(found[0].value, "4111 1111 1111 1111", "{outage}");
        assert_eq!(found[1].value, "5500 0000 0000 0004", "{outage}");

        // A new subject needs Vault: UNAVAILABLE within the deadline, and
        // its key is not stored.
        let started = Instant::now();
        let error = client
            .tokenize(pb::TokenizeRequest {
                subject_id: format!("new-subject-{outage}"),
                items: vec![item("4111 1111 1111 1111", "card")],
            })
            .await
            .expect_err("a new subject needs Vault");
        assert_eq!(error.code(), Code::Unavailable, "{outage}: {error:?}");
        // Generous: the bound under test is kek.timeout_ms (1 s) plus
        // scheduling on a loaded 2-core machine, not a speed.
        assert!(
            started.elapsed() < Duration::from_millis(TIMEOUT_MS + 4_000),
            "{outage}: took {:?}",
            started.elapsed()
        );
        wait_for_kek_health(&server, ServingStatus::NotServing).await;

        match outage {
            "hung" => bao.resume(),
            _ => bao.restart(),
        }
        wait_for_kek_health(&server, ServingStatus::Serving).await;
        let fresh = tokenize(
            &mut client,
            &format!("new-subject-{outage}"),
            vec![item("4111 1111 1111 1111", "card")],
        )
        .await;
        let back = detokenize(&mut client, &fresh).await;
        assert_eq!(back[0].value, "4111 1111 1111 1111", "{outage}: recovered");
    }
    // Only the subjects that were tokenized after recovery have keys: the
    // refused calls stored none.
    let status = keys_status(&server);
    assert_eq!(status_line(&status, "subject_keys"), "v1=3");
}

#[tokio::test]
async fn rotation_rewraps_every_key_while_serving_and_old_versions_can_be_retired() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bao = Bao::dev(&dir.path().join("bao"));
    let mut server = start(&dir.path().join("tv"), &bao, "", "");
    // More subjects than one rewrap page (256).
    let subjects = tokenize_subjects(&server, 300).await;

    let rotate = keys(&server, "rotate");
    assert!(
        rotate.status.success(),
        "keys rotate: {}",
        String::from_utf8_lossy(&rotate.stderr)
    );
    let said = String::from_utf8_lossy(&rotate.stdout);
    assert!(said.contains("KEK at version 2: 300 of 300"), "{said}");
    let progress = String::from_utf8_lossy(&rotate.stderr);
    assert!(
        progress.contains("through the running server"),
        "{progress}"
    );
    assert!(
        progress.contains("256/300") && progress.contains("300/300"),
        "{progress}"
    );
    assert_eq!(bao.latest_version(), 2);

    // Serving went on: the warm cache still answers, and new subjects work.
    assert_all_detokenize(&server, &subjects[..20]).await;
    let status = keys_status(&server);
    assert_eq!(status_line(&status, "subject_keys"), "v2=300");
    assert_eq!(status_line(&status, "system_key"), "v2");
    assert_eq!(status_line(&status, "rotation"), "none");

    // Retire version 1 in Vault, restart cold: everything unwraps on v2.
    bao.cli_ok(&[
        "write",
        &format!("transit/keys/{KEY_NAME}/config"),
        "min_decryption_version=2",
    ]);
    server.stop().await;
    server.restart();
    assert_all_detokenize(&server, &subjects).await;
    let status = keys_status(&server);
    assert_eq!(status_line(&status, "min_decryption"), "v2");
}

#[tokio::test]
async fn a_rotation_cut_short_resumes_without_rotating_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bao = Bao::dev(&dir.path().join("bao"));
    let mut server = start(&dir.path().join("tv"), &bao, "", "");
    let subjects = tokenize_subjects(&server, 40).await;
    server.stop().await;

    // An operator token that may rotate the key but not rewrap: the run
    // rotates, records its target, then fails at the first rewrap.
    let policy = format!(
        "path \"transit/keys/{KEY_NAME}/rotate\" {{ capabilities = [\"update\"] }}\npath \"transit/keys/{KEY_NAME}\" {{ capabilities = [\"read\"] }}\npath \"transit/decrypt/{KEY_NAME}\" {{ capabilities = [\"update\"] }}\n"
    );
    let policy_file = dir.path().join("rotate-only.hcl");
    std::fs::write(&policy_file, policy).expect("policy");
    bao.cli_ok(&[
        "policy",
        "write",
        "rotate-only",
        policy_file.to_str().expect("utf8"),
    ]);
    let token = bao.cli_ok(&["token", "create", "-policy=rotate-only", "-field=token"]);
    let token = String::from_utf8(token.stdout).expect("utf8");
    let cut_short = keys_with_env(&server, "rotate", &[(TOKEN_ENV, token.trim())]);
    assert!(
        !cut_short.status.success(),
        "the rewrap must have been refused"
    );
    let said = String::from_utf8_lossy(&cut_short.stderr);
    assert!(said.contains("run keys rotate again to resume"), "{said}");
    assert_eq!(bao.latest_version(), 2);
    let status = keys_status(&server);
    assert!(
        status_line(&status, "rotation").contains("in progress to v2"),
        "{status}"
    );
    assert_eq!(status_line(&status, "subject_keys"), "v1=40");

    // Run again with full rights: it resumes, and does not rotate a second time.
    let resumed = keys(&server, "rotate");
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let said = String::from_utf8_lossy(&resumed.stdout);
    assert!(
        said.contains("KEK at version 2: 40 of 40") && said.contains("resumed"),
        "{said}"
    );
    assert_eq!(bao.latest_version(), 2);
    let status = keys_status(&server);
    assert_eq!(status_line(&status, "subject_keys"), "v2=40");
    assert_eq!(status_line(&status, "rotation"), "none");

    server.restart();
    assert_all_detokenize(&server, &subjects).await;
}

#[tokio::test]
async fn a_deleted_transit_key_fails_cold_reads_closed_and_never_gives_a_wrong_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bao = Bao::dev(&dir.path().join("bao"));
    // A one-subject cache, so nearly every subject is cold.
    let mut server = start(
        &dir.path().join("tv"),
        &bao,
        "",
        "[cache]\nmax_subjects = 1",
    );
    let subjects = tokenize_subjects(&server, 8).await;

    bao.cli_ok(&[
        "write",
        &format!("transit/keys/{KEY_NAME}/config"),
        "deletion_allowed=true",
    ]);
    bao.cli_ok(&["delete", &format!("transit/keys/{KEY_NAME}")]);

    let mut client = server.client().await;
    let mut refused = 0;
    for (_, value, token) in &subjects {
        match client
            .detokenize(pb::DetokenizeRequest {
                tokens: vec![token.clone()],
                purpose: "test".into(),
            })
            .await
        {
            Ok(response) => {
                let result = &response.into_inner().results[0];
                assert_eq!(
                    &result.value, value,
                    "a revealed value must be the right one"
                );
            }
            Err(status) => {
                assert!(
                    matches!(status.code(), Code::Unavailable | Code::FailedPrecondition),
                    "{status:?}"
                );
                assert!(status.message().contains("key"), "{status:?}");
                refused += 1;
            }
        }
    }
    assert!(refused >= 7, "only the one cached subject may still read");

    // Restarted, the vault cannot open its system key and says so.
    server.stop().await;
    let mut again = Server::prepared_with_config(
        &dir.path().join("tv"),
        &vault_config(&bao, "", "[cache]\nmax_subjects = 1"),
        &[(TOKEN_ENV, bao.root_token.as_str())],
    );
    let (status, log) = again.run_to_exit();
    assert!(!status.success());
    assert!(
        log.contains("transit key") || log.contains("unwrap"),
        "{log}"
    );
}

#[tokio::test]
async fn tls_to_vault_needs_its_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bao = Bao::dev_tls(&dir.path().join("bao"));
    let ca = bao.ca_cert();
    let with_ca = format!("ca_cert = \"{}\"", ca.display());
    let server = start(&dir.path().join("tv"), &bao, &with_ca, "");
    let subjects = tokenize_subjects(&server, 3).await;
    assert_all_detokenize(&server, &subjects).await;
    drop(server);

    let mut without_ca = Server::prepared_with_config(
        &dir.path().join("tv2"),
        &vault_config(&bao, "", ""),
        &[(TOKEN_ENV, bao.root_token.as_str())],
    );
    let (status, log) = without_ca.run_to_exit();
    assert!(!status.success(), "an unknown CA must not be trusted");
    assert!(log.contains("transit key"), "{log}");
}

#[tokio::test]
async fn a_bad_vault_configuration_is_refused_at_start_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bao = Bao::dev(&dir.path().join("bao"));
    let cases = [
        ("", vec![], "TV_TEST_VAULT_TOKEN"),
        ("", vec![(TOKEN_ENV, "not-a-real-token")], "403"),
    ];
    for (i, (extra, env, expected)) in cases.into_iter().enumerate() {
        let mut server = Server::prepared_with_config(
            &dir.path().join(format!("tv{i}")),
            &vault_config(&bao, extra, ""),
            &env,
        );
        let (status, log) = server.run_to_exit();
        assert!(!status.success());
        assert!(log.contains(expected), "case {i}: {log}");
        assert!(
            !log.contains("not-a-real-token"),
            "the token must not be logged"
        );
    }
}

/// keys/dev-vault-setup.sh against this server: AppRole credentials in
/// `dir`, and the `[kek]` block it prints.
fn dev_vault_setup(bao: &Bao, dir: &Path, extra: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("keys/dev-vault-setup.sh");
    let out = std::process::Command::new("bash")
        .arg(script)
        .arg("--out")
        .arg(dir)
        .args(extra)
        .env("BAO_ADDR", bao.addr())
        .env("BAO_TOKEN", &bao.root_token)
        .env_remove("VAULT_ADDR")
        .env_remove("VAULT_TOKEN")
        .output()
        .expect("run dev-vault-setup.sh");
    assert!(
        out.status.success(),
        "dev-vault-setup.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

#[tokio::test]
async fn approle_with_the_least_privilege_policy_serves_renews_and_cannot_rotate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bao = Bao::dev(&dir.path().join("bao"));
    // Short token lifetimes, so renewal and a fresh login happen in the test.
    let kek = dev_vault_setup(
        &bao,
        &dir.path().join("approle"),
        &["--token-ttl", "4s", "--token-max-ttl", "8s"],
    );
    let config = format!("{kek}\n{}", admin_principal_toml());
    let server = Server::start_with_config_env(&dir.path().join("tv"), &config, &[]);

    // New subjects need Vault at every call: across 12 s the first token has
    // been renewed and has reached its max TTL, so a new login was needed.
    let mut client = server.client().await;
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(12) {
        let subject = format!("approle-subject-{n}");
        let value = card(n);
        let tokens = tokenize(&mut client, &subject, vec![item(&value, "card")]).await;
        assert_eq!(detokenize(&mut client, &tokens).await[0].value, value);
        n += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let log = std::fs::read_to_string(server.log_path()).expect("log");
    assert!(log.contains("logged in with AppRole"), "no re-login seen");

    // The service policy cannot rotate the key.
    let rotate = keys(&server, "rotate");
    assert!(!rotate.status.success());
    let said = String::from_utf8_lossy(&rotate.stderr);
    assert!(said.contains("403") && said.contains("rotate"), "{said}");
    assert_eq!(bao.latest_version(), 1);
    let secret_id =
        std::fs::read_to_string(dir.path().join("approle/secret-id")).expect("secret id");
    assert!(
        !log.contains(secret_id.trim()),
        "the secret id must not be logged"
    );
}

/// The key rows of a PostgreSQL vault, as a dump or the raw row bytes hold
/// them: each wrapped key's transit ciphertext (`vault:vN:...`).
async fn stored_ciphertexts(url: &str) -> Vec<String> {
    common::postgres::key_rows(url)
        .await
        .into_iter()
        .map(|wrapped| String::from_utf8(wrapped.ciphertext).expect("a transit ciphertext"))
        .collect()
}

/// Whether anyone holding the transit key (here the root token) can
/// still open a copied ciphertext.
fn opens(bao: &Bao, ciphertext: &str) -> bool {
    bao.cli(&[
        "write",
        &format!("transit/decrypt/{KEY_NAME}"),
        &format!("ciphertext={ciphertext}"),
    ])
    .status
    .success()
}

fn retire(server: &Server, args: &[&str]) -> std::process::Output {
    let config = server.config_path();
    let mut all = vec!["keys", "retire", "--config", config.to_str().expect("utf8")];
    all.extend_from_slice(args);
    server.run_cli(&all)
}

/// Issue 20, must-show 4 by the key hierarchy: a copy of a forgotten
/// subject's key row taken before the forget (what a dump, a base backup
/// or a dead tuple holds) opens with the KEK until its version is retired;
/// `keys retire` refuses while any stored key is still under that version,
/// and after a rotation and a trim nobody can open the copy, while every
/// surviving subject still detokenizes after a cold restart.
#[tokio::test]
async fn retiring_old_kek_versions_kills_every_copy_of_a_forgotten_subjects_key_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bao = Bao::dev(&dir.path().join("bao"));
    let url = common::postgres::fresh_database().await;
    let kek = format!(
        "[kek]\nprovider = \"vault\"\naddress = \"{}\"\nkey_name = \"{KEY_NAME}\"\ntoken_env = \"{TOKEN_ENV}\"\n",
        bao.addr()
    );
    let mut server = Server::start_with_config_env(
        &dir.path().join("tv"),
        &common::postgres::replica_config_with_kek(&url, &kek, "r0"),
        &[(TOKEN_ENV, bao.root_token.as_str())],
    );
    let subjects = tokenize_subjects(&server, 5).await;
    let copies = stored_ciphertexts(&url).await;
    assert_eq!(copies.len(), 5);
    let mut client = server.client().await;
    client
        .forget_subject(pb::ForgetSubjectRequest {
            subject_id: subjects[0].0.clone(),
            reason: "GDPR art. 17".into(),
        })
        .await
        .expect("forget");

    // Nothing to retire on a key with one version; after a rotation in
    // Vault alone, the store's keys are all still under v1: refused.
    let refused = retire(&server, &["--below", "2"]);
    assert!(!refused.status.success());
    bao.cli_ok(&["write", "-f", &format!("transit/keys/{KEY_NAME}/rotate")]);
    let refused = retire(&server, &["--below", "2", "--trim-irreversibly"]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{said}");
    assert!(
        said.contains("subject keys under older versions (v1=4)")
            && said.contains("the system key is under v1"),
        "{said}"
    );
    // The copy of the forgotten subject's row still opens for anyone with
    // the KEK: the vault refuses it, but the key hierarchy does not yet.
    assert!(copies.iter().all(|copy| opens(&bao, copy)));

    let rotate = keys(&server, "rotate");
    assert!(
        rotate.status.success(),
        "{}",
        String::from_utf8_lossy(&rotate.stderr)
    );
    let retired = retire(&server, &["--below", "3", "--trim-irreversibly"]);
    assert!(
        retired.status.success(),
        "keys retire: {}",
        String::from_utf8_lossy(&retired.stderr)
    );
    assert!(
        String::from_utf8_lossy(&retired.stdout).contains("below v3 trimmed"),
        "{}",
        String::from_utf8_lossy(&retired.stdout)
    );
    assert!(copies.iter().all(|copy| !opens(&bao, copy)));
    let key = bao.cli_ok(&["read", "-format=json", &format!("transit/keys/{KEY_NAME}")]);
    let key: serde_json::Value = serde_json::from_slice(&key.stdout).expect("json");
    assert_eq!(key["data"]["min_available_version"], 3, "trimmed: {key}");

    drop(client);
    server.stop().await;
    server.restart();
    assert_all_detokenize(&server, &subjects[1..]).await;
    let status = keys_status(&server);
    assert_eq!(status_line(&status, "min_decryption"), "v3");
}
