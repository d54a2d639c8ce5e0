//! Nothing sensitive at rest: after tokenizing 10,000 known values for 100
//! subjects, no file under the data directory (WAL, SST, manifest, logs)
//! and no line of the server's log holds any value or subject id.

mod common;

use aho_corasick::AhoCorasick;
use common::{detokenize, item, luhn_complete, tokenize, Server};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SUBJECTS: usize = 100;
const VALUES_PER_SUBJECT: usize = 100;

/// Distinct, recognisable values of several formats.
fn value(rng: &mut StdRng, subject: usize, n: usize) -> (String, &'static str) {
    match n % 5 {
        0 => (
            luhn_complete(&format!("4{:014}", rng.random_range(0..10u64.pow(14)))),
            "card",
        ),
        1 => (
            format!(
                "client{subject:03}x{n:03}.{}@mail-example.ru",
                rng.random_range(1000..9999)
            ),
            "email",
        ),
        2 => (
            format!(
                "+7 9{:02} {:03}-{:02}-{:02}",
                rng.random_range(0..100),
                rng.random_range(0..1000),
                rng.random_range(0..100),
                rng.random_range(0..100)
            ),
            "phone",
        ),
        3 => (
            format!(
                "{:04} {:06}",
                rng.random_range(1000..9999),
                rng.random_range(100000..999999)
            ),
            "ru_passport",
        ),
        _ => (
            format!(
                "Customer Name {subject:03}-{n:03} Zqx{}",
                rng.random_range(100000..999999)
            ),
            "text",
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_value_or_subject_id_is_stored_or_logged_in_the_clear() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(dir.path());
    let mut client = server.client().await;
    let mut rng = StdRng::seed_from_u64(20261125);
    let mut needles: Vec<String> = Vec::new();
    let mut sample = Vec::new();

    for s in 0..SUBJECTS {
        let subject = format!("subject-{s:03}-{:08x}", rng.random::<u32>());
        let values: Vec<(String, &str)> = (0..VALUES_PER_SUBJECT)
            .map(|n| value(&mut rng, s, n))
            .collect();
        let items = values.iter().map(|(v, f)| item(v, f)).collect();
        let tokens = tokenize(&mut client, &subject, items).await;
        sample.push((
            tokens[s % VALUES_PER_SUBJECT].clone(),
            values[s % VALUES_PER_SUBJECT].0.clone(),
        ));
        needles.push(subject);
        needles.extend(values.into_iter().map(|(v, _)| v));
    }
    assert_eq!(needles.len(), SUBJECTS * (VALUES_PER_SUBJECT + 1));

    // The data is really there: a sample round-trips.
    let tokens: Vec<String> = sample.iter().map(|(t, _)| t.clone()).collect();
    for (result, (_, value)) in detokenize(&mut client, &tokens)
        .await
        .into_iter()
        .zip(&sample)
    {
        assert_eq!(&result.value, value);
    }
    server.stop().await;

    let matcher = AhoCorasick::new(&needles).expect("automaton");
    let mut files = common::files_under(&server.data_dir());
    assert!(
        files.iter().any(|f| f.to_string_lossy().ends_with(".log")),
        "the WAL is searched"
    );
    files.push(server.log_path());
    let mut bytes_searched = 0;
    for file in files {
        let bytes = std::fs::read(&file).expect("read");
        bytes_searched += bytes.len();
        if let Some(found) = matcher.find(&bytes) {
            panic!(
                "{} holds needle #{} in the clear at byte {}",
                file.display(),
                found.pattern().as_usize(),
                found.start()
            );
        }
    }
    assert!(
        bytes_searched > 500_000,
        "only {bytes_searched} bytes searched: was anything stored?"
    );
}
