//! Anomaly detection against the real binary: an actor whose breadth
//! jumps tenfold is stepped down to masked reveals under `response =
//! "mask"` while another actor of the same principal still reads in full;
//! `tokenvault alerts list` shows the alert and the step-down, `alerts
//! clear` lifts it. A webhook receiver in the test, down (503) for its
//! first seconds, gets each alert (the anomaly and a rate warning) exactly
//! once after the retries, with a valid HMAC, and no value, token or
//! subject id in any body. Time is compressed: 1-second windows and a warm-up of
//! three learned windows (docs/anomaly.md).

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::actor::{actor_client, detokenize_as};
use common::{admin_principal_toml, card, item, tokenize, Server};

use sha2::{Digest, Sha256};
use tokenvault::pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WEBHOOK_SECRET: &str = "webhook-test-secret-24";

/// What the receiver got: per delivery id, the bodies it answered 200 to,
/// and every attempt (id, signature valid).
#[derive(Default)]
struct Received {
    delivered: HashMap<String, Vec<String>>,
    attempts: Vec<(String, bool)>,
}

/// A small HTTP/1.1 receiver on a free port: 503 for `outage` after its
/// first request, then 200. Checks each request's HMAC.
async fn receiver(outage: Duration) -> (String, Arc<Mutex<Received>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/alerts", listener.local_addr().expect("addr"));
    let received = Arc::new(Mutex::new(Received::default()));
    let state = Arc::clone(&received);
    tokio::spawn(async move {
        let mut first: Option<Instant> = None;
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Headers, then the body by content-length.
            let (head, body) = loop {
                let n = socket.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break (String::new(), Vec::new());
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buf.len() < end + 4 + length {
                        let n = socket.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    break (head, buf[end + 4..].to_vec());
                }
            };
            let header = |name: &str| {
                head.lines()
                    .find_map(|l| l.strip_prefix(&format!("{name}:")))
                    .map(|v| v.trim().to_string())
                    .unwrap_or_default()
            };
            let timestamp: i64 = header("x-tokenvault-timestamp").parse().unwrap_or(0);
            let valid = header("x-tokenvault-signature")
                == tokenvault::notify::webhook::signature(
                    WEBHOOK_SECRET.as_bytes(),
                    timestamp,
                    &body,
                );
            let id = header("x-tokenvault-delivery");
            let started = *first.get_or_insert_with(Instant::now);
            let up = started.elapsed() >= outage;
            {
                let mut state = state.lock().expect("state");
                state.attempts.push((id.clone(), valid));
                if up {
                    state
                        .delivered
                        .entry(id)
                        .or_default()
                        .push(String::from_utf8_lossy(&body).into_owned());
                }
            }
            let answer: &[u8] = if up {
                b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            } else {
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            };
            let _ = socket.write_all(answer).await;
        }
    });
    (url, received)
}

const SUPPORT_KEY: &str = "tvk_support_console_key_0024";
const AUDIENCE: &str = "tokenvault-test";
const ISSUER: &str = "test-idp";

/// An actor token for `sub`, valid for ten minutes.
fn actor_jwt(private_pem: &[u8], sub: &str) -> String {
    let now = tokenvault::clock::unix_now();
    common::actor::jwt(
        private_pem,
        serde_json::json!({"sub": sub, "aud": AUDIENCE, "iss": ISSUER, "iat": now, "exp": now + 600}),
    )
}

fn alerts_cli(server: &Server, args: &[&str]) -> String {
    let config = server.config_path().display().to_string();
    let data_dir = server.data_dir().display().to_string();
    let mut all = vec!["alerts"];
    all.extend_from_slice(args);
    all.extend(["--config", &config, "--data-dir", &data_dir]);
    let out = server.run_cli(&all);
    assert!(
        out.status.success(),
        "alerts {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn a_breadth_jump_masks_that_actor_only_until_cleared_and_every_alert_reaches_the_webhook() {
    let (url, received) = receiver(Duration::from_secs(4)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (signing, public) = common::actor::es256_key(dir.path(), "idp");
    let kek = dir.path().join("kek.key");
    std::fs::write(&kek, [7u8; 32]).expect("kek");
    let config = format!(
        r#"[kek]
provider = "local"
path = "{kek}"

{admin}
[actor_tokens]
audience = "{AUDIENCE}"
issuer = "{ISSUER}"
keys = [{{ kid = "k1", alg = "ES256", public_key_pem = "{public}" }}]

[[principals]]
name = "support"
api_key_sha256 = "{support}"
allow = ["detokenize"]
reveal = {{ default = "full" }}
max_detokenize_per_minute_per_actor = 30
alert_at_percent = 50

[[alert_sinks]]
kind = "webhook"
url = "{url}"
secret_env = "TV_WEBHOOK_SECRET"
backoff_ms = 300

[anomaly]
enabled = true
window_seconds = 1
warmup_windows = 3
min_breadth = 5
min_volume = 1000
min_drip = 1000000

[anomaly.principals.support]
response = "mask"
"#,
        kek = kek.display(),
        admin = admin_principal_toml(),
        public = public.display(),
        support = hex::encode(Sha256::digest(SUPPORT_KEY.as_bytes())),
    );
    let server = Server::start_with_config_env(
        dir.path(),
        &config,
        &[("TV_WEBHOOK_SECRET", WEBHOOK_SECRET)],
    );
    let mut admin = server.client().await;
    let mut tokens = Vec::new();
    for n in 0..12 {
        let subject = format!("customer-anomaly-{n}");
        tokens.extend(tokenize(&mut admin, &subject, vec![item(&card(n), "card")]).await);
    }
    let alice_jwt = actor_jwt(&signing, "alice@example.com");
    let bob_jwt = actor_jwt(&signing, "bob@example.com");
    let mut alice = actor_client(&server, SUPPORT_KEY, Some(&alice_jwt)).await;
    let mut bob = actor_client(&server, SUPPORT_KEY, Some(&bob_jwt)).await;

    // Warm-up: one customer a window, for both; a window is learned 12
    // windows after it ends, and 3 are needed.
    for _ in 0..16 {
        for client in [&mut alice, &mut bob] {
            let results = detokenize_as(client, &tokens[..1], "ticket")
                .await
                .expect("usual read");
            assert_eq!(results[0].reveal, pb::Reveal::Full as i32);
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    // Tenfold breadth: served (the step-down applies from the next call).
    let wide = detokenize_as(&mut alice, &tokens[1..11], "ticket")
        .await
        .expect("wide read");
    assert!(wide.iter().all(|r| r.reveal == pb::Reveal::Full as i32));

    let masked = detokenize_as(&mut alice, &tokens[..1], "ticket")
        .await
        .expect("alice reads");
    assert_eq!(
        masked[0].reveal,
        pb::Reveal::Masked as i32,
        "alice is stepped down"
    );
    assert_ne!(masked[0].value, card(0));
    let full = detokenize_as(&mut bob, &tokens[..1], "ticket")
        .await
        .expect("bob reads");
    assert_eq!(full[0].reveal, pb::Reveal::Full as i32, "bob is not");
    assert_eq!(full[0].value, card(0));

    let listed = alerts_cli(&server, &["list"]);
    assert!(
        listed.contains("\tsupport\talice@example.com\tbreadth\t"),
        "{listed}"
    );
    assert!(
        listed.contains("step-down\tsupport\talice@example.com\tmask"),
        "{listed}"
    );
    assert!(!listed.contains("bob@example.com"), "{listed}");
    let id = listed.split('\t').next().expect("an id").to_string();
    assert!(alerts_cli(&server, &["ack", &id]).contains("acked"));
    assert!(alerts_cli(&server, &["clear", "alice@example.com"]).starts_with("1 step-downs"));

    let restored = detokenize_as(&mut alice, &tokens[..1], "ticket")
        .await
        .expect("alice reads");
    assert_eq!(restored[0].reveal, pb::Reveal::Full as i32, "cleared");
    assert_eq!(restored[0].value, card(0));

    // The alert's log line names counts, never a value, token or subject.
    let log = std::fs::read_to_string(server.log_path()).expect("log");
    assert!(log.contains("anomaly alert"), "logged");
    for n in 0..12 {
        assert!(!log.contains(&card(n)), "a value in the log");
        assert!(
            !log.contains(&format!("customer-anomaly-{n}")),
            "a subject id in the log"
        );
    }
    for token in &tokens {
        assert!(!log.contains(token.as_str()), "a token in the log");
    }

    // The webhook: the rate warning and the breadth alert, each delivered
    // once after the outage, every attempt signed.
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.lock().expect("state").delivered.len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let state = received.lock().expect("state");
    assert!(
        state.attempts.iter().all(|(_, valid)| *valid),
        "every attempt is signed"
    );
    let retried = state.attempts.len() > state.delivered.len();
    assert!(
        retried,
        "the outage made the sink retry: {} attempts",
        state.attempts.len()
    );
    assert_eq!(
        state.delivered.len(),
        2,
        "two alerts: {:?}",
        state.delivered
    );
    assert!(
        state.delivered.values().all(|bodies| bodies.len() == 1),
        "each exactly once"
    );
    let bodies: Vec<&String> = state.delivered.values().flatten().collect();
    assert!(
        bodies
            .iter()
            .any(|b| b.contains("\"alert\":\"breadth\"") && b.contains("alice@example.com")),
        "{bodies:?}"
    );
    assert!(
        bodies
            .iter()
            .any(|b| b.contains("\"alert\":\"rate_warning\"")),
        "{bodies:?}"
    );
    for body in bodies {
        for n in 0..12 {
            assert!(!body.contains(&card(n)), "a value in a webhook body");
            assert!(
                !body.contains(&format!("customer-anomaly-{n}")),
                "a subject id in a webhook body"
            );
        }
        assert!(
            tokens.iter().all(|t| !body.contains(t.as_str())),
            "a token in a webhook body"
        );
        assert!(!body.contains(WEBHOOK_SECRET));
    }
}
